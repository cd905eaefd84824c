"""View geometry of one beam: the pose, the pixel <-> sample maps and the first surface hit."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..geometry import (
    SystemGeometry,
    beam_axes,
    image_to_pixel,
    sample_to_chamber_matrix,
    stage_translation,
)
from .scene import Scene

__all__ = ["BeamView", "intersect_surface", "sample_to_pixel"]


def _rot2(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


@dataclass(frozen=True)
class BeamView:
    """Pose and scan of one beam: everything needed to map pixels to sample points.

    Attributes
    ----------
    beam : str
        "electron" or "ion".
    width, height : int
        Full-frame size (px).
    pixel : float
        Pixel size (m) = hfw / width.
    scan_rotation : float
        rad.
    shift : tuple of float
        Beam shift (m), image frame.
    rotation : ndarray
        3x3 sample -> chamber rotation ``A``.
    translation : ndarray
        Chamber position (m) of the sample-frame origin (includes drift).
    offset : float
        Sample height offset (m): the surface is ``s_z = offset + h(s_x, s_y)``.
    """

    beam: str
    width: int
    height: int
    pixel: float
    scan_rotation: float
    shift: tuple[float, float]
    right: np.ndarray
    up: np.ndarray
    source: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    offset: float

    @classmethod
    def build(
        cls, beam: str, stage: dict, eucentric_z: float, geom: SystemGeometry, width: int,
        height: int, hfw: float, scan_rotation_deg: float = 0.0,
        shift: tuple[float, float] = (0.0, 0.0), offset: float = 0.0,
        drift: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> BeamView:
        """View for a stage position (x, y, z in m; r, t in degrees)."""
        r = math.radians(stage["r"])
        t = math.radians(stage["t"])
        a = sample_to_chamber_matrix(r, t, geom.shuttle_pre_tilt)
        tvec = stage_translation(stage["x"], stage["y"], stage["z"], t, eucentric_z, geom)
        c0 = tvec + np.asarray(drift, dtype=float)
        right, up, source = beam_axes(beam, geom)
        return cls(beam, int(width), int(height), hfw / width, math.radians(scan_rotation_deg),
                   (float(shift[0]), float(shift[1])), right, up, source, a, c0, float(offset))

    # ------------------------------------------------------------------ frames
    def sample_to_chamber(self, s) -> np.ndarray:
        """Sample-frame point(s) (..., 3) -> chamber (..., 3), metres."""
        return np.asarray(s, dtype=float) @ self.rotation.T + self.translation

    def chamber_to_sample(self, q) -> np.ndarray:
        return (np.asarray(q, dtype=float) - self.translation) @ self.rotation

    def qperp_to_image(self, a1, a2):
        """Chamber (right, up) components -> image metres (u, v): ``R(-rho) q - b``."""
        c, s = math.cos(self.scan_rotation), math.sin(self.scan_rotation)
        u = c * a1 + s * a2 - self.shift[0]
        v = -s * a1 + c * a2 - self.shift[1]
        return u, v

    def image_to_qperp(self, u, v):
        """Image metres (u, v) -> chamber (right, up) components: ``R(rho) ((u, v) + b)``."""
        c, s = math.cos(self.scan_rotation), math.sin(self.scan_rotation)
        uu = np.asarray(u) + self.shift[0]
        vv = np.asarray(v) + self.shift[1]
        return c * uu - s * vv, s * uu + c * vv

    def project(self, s):
        """Sample point(s) (..., 3) -> image metres (u, v) (orthographic)."""
        q = self.sample_to_chamber(s)
        return self.qperp_to_image(q @ self.right, q @ self.up)

    def sample_axes(self):
        """Beam axes in the sample frame: (right, up, towards the source), each (3,)."""
        a = self.rotation
        return a.T @ self.right, a.T @ self.up, a.T @ self.source

    def parallax(self) -> np.ndarray:
        """Image displacement (u, v) per metre of height above the plane (dimensionless)."""
        r_s, u_s, _ = self.sample_axes()
        a1, a2 = r_s[2], u_s[2]
        c, s = math.cos(self.scan_rotation), math.sin(self.scan_rotation)
        return np.array([c * a1 + s * a2, -s * a1 + c * a2])

    def plane_map(self, h_ref: float = 0.0):
        """Affine map q_perp -> sample (x, y) on the plane ``s_z = offset + h_ref``.

        Returns ``(G, g0, k)`` with ``s_xy = G @ (a1, a2) + g0`` and the point of the ray at
        height ``h`` (above ``offset``) at ``s_xy + k (h - h_ref)``; ``None`` if the beam grazes
        or hits the back side.
        """
        r_s, u_s, d_s = self.sample_axes()
        if d_s[2] < 1e-3:
            return None
        o_s = -self.rotation.T @ self.translation
        dz = d_s[2]
        g = np.column_stack([r_s[:2] - d_s[:2] * r_s[2] / dz, u_s[:2] - d_s[:2] * u_s[2] / dz])
        g0 = o_s[:2] + d_s[:2] * (self.offset + h_ref - o_s[2]) / dz
        return g, g0, d_s[:2] / dz

    def incidence_cos(self) -> float:
        """cos of the angle between the beam and the nominal sample normal."""
        return float(self.sample_axes()[2][2])


def sample_to_pixel(view: BeamView, sample_xyz):
    """Pixel (col, row) of ``view``'s full frame (pixel centres at integers) where sample
    point(s) ``(..., 3)`` (m) appear: the projection the renderer uses, for overlays and masks.
    """
    u, w = view.project(np.asarray(sample_xyz, dtype=float))
    return image_to_pixel(u, w, (view.height, view.width), view.pixel)


def intersect_surface(scene: Scene, view: BeamView, a1: float, a2: float,
                      spacing: float | None = None) -> np.ndarray | None:
    """First surface point (sample frame, m) hit by the ray at chamber (right, up) = (a1, a2).

    Marches the height along the ray downwards from above the highest possible surface and
    refines the first crossing three times (129 samples each, ~10 pm final bracket), so
    occlusion is exact up to the coarse step. ``None`` if the beam cannot reach the sample side.
    """
    pm = view.plane_map()
    if pm is None:
        return None
    g, g0, k = pm
    s0 = g @ np.array([a1, a2]) + g0
    # the ray at relative height h (above the plane s_z = offset) is at s0 + k h
    reach = float(np.hypot(*k)) * 40e-6 + 1e-6
    hi, lo = scene.height_bounds((s0[0] - reach, s0[0] + reach, s0[1] - reach, s0[1] + reach))[::-1]
    h = lo
    for _ in range(3):
        hs = np.linspace(hi, lo, 129)
        surf = scene.height(s0[0] + k[0] * hs, s0[1] + k[1] * hs, spacing)
        gap = hs - surf                      # > 0 while the ray is above the surface
        below = np.nonzero(gap <= 0)[0]
        if below.size == 0:
            h = lo
            break
        b = int(below[0])
        if b == 0:
            h = hi
            break
        hi, lo = float(hs[b - 1]), float(hs[b])
        # linear estimate of the crossing inside the final bracket
        g1, g2 = float(gap[b - 1]), float(gap[b])
        h = hi + (lo - hi) * g1 / (g1 - g2) if g1 != g2 else lo
    return np.array([s0[0] + k[0] * h, s0[1] + k[1] * h, view.offset + h])
