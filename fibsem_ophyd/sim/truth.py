"""Ground truth of the simulated microscope, for tests and benchmarks.

Everything here is computed from the true pose and the scene
(:class:`~fibsem_ophyd.sim.state.SimState`), never from the images, so an alignment,
coincidence or detection routine can be scored honestly. Nothing here changes the state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..geometry import ELECTRON, pixel_to_image, rx, rz, stage_axes
from .cuts import BeamCut, lamella_profile
from .erosion import ImagingErosion
from .materials import MATERIALS
from .state import SimState
from .view import BeamView, sample_to_pixel

__all__ = ["Feature", "Truth"]


@dataclass(frozen=True)
class Feature:
    """A feature of the sample, sample frame (m).

    ``(x, y, z)`` is the top of the feature (for holes: the surface at the hole centre);
    ``base_z`` the surface under it; ``size`` its diameter (hole: open width).
    """

    kind: str               # "cell", "particle" or "square"
    id: tuple[int, ...]
    x: float
    y: float
    z: float
    base_z: float
    size: float
    height: float
    material: str

    @property
    def position(self) -> np.ndarray:
        return np.array([self.x, self.y, self.z])


class Truth:
    """Ground-truth queries on a simulator's state (``sim.truth`` of a
    :class:`~fibsem_ophyd.sim.SimulatedMicroscope`).

    Parameters
    ----------
    state : SimState
        The state the answers are computed from (read, never written).
    cuts : list of BeamCut
        The millings' cuts so far (the list the microscope appends to).
    erosion : ImagingErosion
        The ion-imaging erosion record.
    frame_settings : callable
        ``frame_settings(beam, settings) -> frame``: checks a beam name and per-frame
        settings (``ValueError`` naming the bad value) and merges them over the beam's.
    objects : (NeedleModel, LiftoutObjects), optional
        What :meth:`mask` and :meth:`keypoint` draw and locate.
    """

    def __init__(self, state: SimState, cuts: Sequence[BeamCut], erosion: ImagingErosion,
                 frame_settings: Callable[[str, Mapping | None], Mapping], objects=None):
        self._state = state
        self._objects = objects         # (needle, lift-out objects): masks and keypoints
        self._cuts = cuts
        self._erosion = erosion
        self._frame_settings = frame_settings

    # ------------------------------------------------------------------ views
    def view(self, beam: str, settings: dict | None = None) -> BeamView:
        """The current :class:`~fibsem_ophyd.sim.view.BeamView` of ``beam``."""
        return self._state.view(beam, self._frame_settings(beam, settings))

    @property
    def sample_height_offset(self) -> float:
        """True height (m) of the sample surface above its nominal position."""
        return self._state.offset

    def pixel_size(self, beam: str, settings: dict | None = None) -> float:
        """Pixel size (m) of ``beam``'s full frame."""
        return self.view(beam, settings).pixel

    # ------------------------------------------------------------------ projection
    def project(self, sample_xyz, beam: str, settings: dict | None = None):
        """Pixel (col, row) where sample point(s) ``(..., 3)`` (m) appear in ``beam``'s image
        with its current settings (full frame, pixel centres at integers)."""
        col, row = sample_to_pixel(self.view(beam, settings), sample_xyz)
        if np.ndim(col) == 0:
            return float(col), float(row)
        return col, row

    def surface_point(self, beam: str, col: float | None = None, row: float | None = None,
                      settings: dict | None = None) -> np.ndarray | None:
        """Sample point (m) seen at pixel (col, row) (default: the image centre)."""
        v = self.view(beam, settings)
        if col is None or row is None:
            u, w = 0.0, 0.0
        else:
            u, w = pixel_to_image(col, row, (v.height, v.width), v.pixel)
        a1, a2 = v.image_to_qperp(float(u), float(w))
        return self._state.surface_point(v, float(a1), float(a2))

    def focus_working_distance(self, beam: str) -> float:
        """Working distance (m) that focuses ``beam`` on the surface at its image centre."""
        return self._state.focus_working_distance(self.view(beam))

    # ------------------------------------------------------------------ features
    def _footprint(self, beam: str = ELECTRON) -> tuple[float, float, float, float]:
        v = self.view(beam)
        pm = v.plane_map()
        if pm is None:
            return (0.0, 0.0, 0.0, 0.0)
        g, g0, _ = pm
        hw, hh = 0.5 * v.width * v.pixel, 0.5 * v.height * v.pixel
        pts = []
        for u in (-hw, hw):
            for w in (-hh, hh):
                a1, a2 = v.image_to_qperp(u, w)
                pts.append(g @ np.array([float(a1), float(a2)]) + g0)
        p = np.array(pts)
        return (float(p[:, 0].min()), float(p[:, 0].max()),
                float(p[:, 1].min()), float(p[:, 1].max()))

    def features(self, kind: str | None = None, region=None) -> list[Feature]:
        """Features in a sample-frame ``region`` (xmin, xmax, ymin, ymax) (m).

        Parameters
        ----------
        kind : {"cell", "particle", "square"}, optional
            Only this kind.
        region : tuple, optional
            Default: the footprint of the current electron image.
        """
        if kind not in (None, "cell", "particle", "square"):
            raise ValueError(f"unknown feature kind {kind!r}")
        region = tuple(region) if region is not None else self._footprint()
        sc = self._state.scene
        off = self._state.offset
        out: list[Feature] = []

        def inside(x, y):
            return (x >= region[0]) & (x <= region[1]) & (y >= region[2]) & (y <= region[3])

        if kind in (None, "cell"):
            c = sc.cells(region)
            sel = np.nonzero(inside(c.x, c.y))[0]
            if sel.size:
                top = sc.height(c.x[sel], c.y[sel])
                for n, k in enumerate(sel):
                    hgt = float(c.params["height"][k])
                    out.append(Feature("cell", tuple(int(v) for v in c.ids[k]), float(c.x[k]),
                                       float(c.y[k]), off + float(top[n]),
                                       off + float(top[n]) - hgt, float(2 * c.params["a"][k]),
                                       hgt, "organic"))
        if kind in (None, "particle"):
            p = sc.particles(region)
            sel = np.nonzero(inside(p.x, p.y))[0]
            if sel.size:
                top = sc.height(p.x[sel], p.y[sel])
                for n, k in enumerate(sel):
                    r = float(p.params["r_true"][k])
                    hgt = float(p.params["height"][k])
                    out.append(Feature("particle", tuple(int(v) for v in p.ids[k]),
                                       float(p.x[k]), float(p.y[k]), off + float(top[n]),
                                       off + float(top[n]) - hgt, 2 * r, hgt, "Pt"))
        if kind in (None, "square"):
            pitch = sc.params.pitch
            m0, m1 = math.ceil(region[0] / pitch), math.floor(region[1] / pitch)
            n0, n1 = math.ceil(region[2] / pitch), math.floor(region[3] / pitch)
            if (m1 - m0 + 1) * (n1 - n0 + 1) <= 100_000 and m1 >= m0 and n1 >= n0:
                mm, nn = np.meshgrid(np.arange(m0, m1 + 1), np.arange(n0, n1 + 1))
                mm, nn = mm.ravel(), nn.ravel()
                x, y = mm * pitch, nn * pitch
                ok = np.hypot(x, y) < sc.params.mesh_radius - pitch / 2
                mm, nn, x, y = mm[ok], nn[ok], x[ok], y[ok]
                if x.size:
                    hgt, mat = sc.evaluate(x, y)
                    iced, thick = sc.tem_grid.hole_props(mm, nn)
                    for k in range(x.size):
                        out.append(Feature("square", (int(mm[k]), int(nn[k])), float(x[k]),
                                           float(y[k]), off + float(hgt[k]), off,
                                           pitch - sc.params.bar_width, float(thick[k]),
                                           "ice" if iced[k] else "C"))
        return out

    def feature_at_image_centre(self, beam: str) -> Feature | None:
        """The particle, else cell, else hole under the centre of ``beam``'s image (``None``
        on a bar or off the grid)."""
        s = self.surface_point(beam)
        if s is None:
            return None
        sc = self._state.scene
        r = 30e-6
        region = (s[0] - r, s[0] + r, s[1] - r, s[1] + r)
        feats = self.features(None, region)
        parts = [f for f in feats if f.kind == "particle"
                 and math.hypot(f.x - s[0], f.y - s[1]) <= f.size / 2]
        if parts:
            return min(parts, key=lambda f: math.hypot(f.x - s[0], f.y - s[1]))
        cells = sc.cells(region)
        for k in range(len(cells)):
            dx, dy = s[0] - cells.x[k], s[1] - cells.y[k]
            c, sn = cells.params["cos"][k], cells.params["sin"][k]
            xr = (c * dx + sn * dy) / cells.params["a"][k]
            yr = (-sn * dx + c * dy) / cells.params["b"][k]
            if xr * xr + yr * yr < 1:
                ident = tuple(int(v) for v in cells.ids[k])
                for f in feats:
                    if f.kind == "cell" and f.id == ident:
                        return f
        _, mat = sc.evaluate(s[0], s[1])
        if MATERIALS[int(mat)].name in ("Au", "Cu"):
            return None
        m, n = sc.hole_index(s[0], s[1])
        for f in self.features("square", (s[0] - sc.params.pitch, s[0] + sc.params.pitch,
                                          s[1] - sc.params.pitch, s[1] + sc.params.pitch)):
            if f.id == (int(m), int(n)):
                return f
        return None

    # ------------------------------------------------------------------ stage truths
    def eucentric_z(self) -> float:
        """Stage z (m) that puts the surface point on the electron-beam axis at the eucentric
        height (on the tilt axis after the matching y correction): tilting then leaves it fixed.
        """
        st = self._state
        v = st.view(ELECTRON)
        s = st.surface_point(v, 0.0, 0.0)
        if s is None:
            raise ValueError("the electron beam does not reach the sample at this pose")
        q = v.sample_to_chamber(s)
        stage_frame = np.linalg.solve(stage_axes(math.radians(st.stage["t"]), st.geometry), q)
        return st.stage["z"] - float(stage_frame[2])

    def stage_position_for(self, sample_xy) -> dict[str, float]:
        """Stage position (x, y, z m; r, t deg, current r and t) that puts the surface point at
        ``sample_xy`` (m) on the coincidence point: centred in the SEM and in the FIB."""
        st = self._state
        sx, sy = float(sample_xy[0]), float(sample_xy[1])
        s = np.array([sx, sy, st.offset + float(st.scene.height(sx, sy))])
        r = math.radians(st.stage["r"])
        ms = rz(r) @ rx(-st.geometry.shuttle_pre_tilt) @ s
        t = math.radians(st.stage["t"])
        tv = -np.linalg.solve(stage_axes(t, st.geometry), rx(t) @ ms) - st.drift_in_stage()
        return {"x": float(tv[0]), "y": float(tv[1]), "z": float(tv[2] + st.eucentric_z),
                "r": st.stage["r"], "t": st.stage["t"]}

    # ------------------------------------------------------------------ lamellae
    def lamella(self, point=None, depth: float = 0.5e-6, half_range: float = 5e-6) -> dict:
        """The slab the millings so far left at ``point``, measured across it.

        Parameters
        ----------
        point : array-like (3,), optional
            Sample-frame point on the lamella's top surface (m); default: the surface point
            at the ion image centre now.
        depth : float
            How far below the top (m, along the last milling's beam) to measure.
        half_range : float
            Half-length (m) of the probe line, along the last milling's image v axis.

        Returns
        -------
        dict
            ``thickness`` (m) of intact material around the probe, ``centre_offset`` (m, +v
            in the milling image) of the slab's middle from ``point``, ``inside`` (the probe
            is in material), ``bounded`` (material was removed on both sides within the
            range). See :func:`fibsem_ophyd.sim.cuts.lamella_profile`.
        """
        if point is None:
            point = self.surface_point("ion")
            if point is None:
                raise ValueError("the ion beam does not hit the sample at the image centre")
        out = lamella_profile(list(self._cuts), np.asarray(point, dtype=float), float(depth),
                              float(half_range))
        return {k: out[k] for k in ("thickness", "centre_offset", "inside", "bounded")}

    def imaging_erosion(self, point) -> float:
        """How far (m) ion imaging has lowered the surface at sample point (x, y[, z])."""
        return self._erosion.depth_at(float(point[0]), float(point[1]))

    # ------------------------------------------------------------------ detection
    def mask(self, beam: str, settings: dict | None = None) -> np.ndarray:
        """uint8 (H, W) class mask of ``beam``'s frame now (:func:`.masks.class_mask`)."""
        from .masks import class_mask
        needle, liftout = self._objects
        return class_mask(self.view(beam, settings), liftout, needle)

    def keypoint(self, name: str, beam: str, settings: dict | None = None) -> tuple[float, float]:
        """Pixel (column, row) of keypoint ``name`` in ``beam``'s frame
        (:func:`.masks.keypoint`)."""
        from .masks import keypoint
        needle, liftout = self._objects
        return keypoint(self.view(beam, settings), liftout, needle, name)
