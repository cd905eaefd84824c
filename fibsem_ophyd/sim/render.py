"""Image formation from the true 3-D pose (``shared/reference/physics.md`` sections 1-2).

For one beam the pipeline is:

1. :class:`BeamView` holds the pose: the sample -> chamber map of the stage
   (``q = Rx(t) (x, y, z - z0) + drift + A s`` with ``A = Rx(t) Rz(r) Rx(-pretilt)``), the
   beam's image axes (``geometry.beam_axes``), pixel size, scan rotation and beam shift. A
   pixel's image metres ``(u, v)`` (``geometry.pixel_to_image``) give the chamber ray
   ``q = a1*right + a2*up + lambda*source`` with ``(a1, a2) = R(rho) ((u, v) + b)``;
2. the rays are intersected with a plane ``s_z = offset + h_ref`` (an affine map of the pixel
   grid into the sample; ``h_ref`` is the middle of the heights the footprint can hold), the
   scene is rasterised on those sample points (with margins) and parallax is solved exactly
   along the image direction in which a raised point moves (the projection of the sample
   normal): each raster column is a 1-D height profile whose visible envelope gives occlusion,
   and each output pixel integrates the signal over its extent of that envelope (see
   :func:`_warp`). No stable/vertical-move shortcut is used anywhere;
3. the yield at each surface point: SE ``sec^n`` law of the local incidence angle, detector
   directionality, edge brightening ``tanh((h - G*h)/sigma)``, material (BSE) contrast; for the
   ion beam the ion-induced SE yield (insulators dark);
4. defocus/spot (and astigmatism) blur in image space, then the crop to the frame.

The result is the clean yield image (secondary electrons per primary); noise and the detector
transfer are in :mod:`fibsem_ophyd.sim.detector`.

Steps 2-3 run a block of raster rows at a time (:class:`~fibsem_ophyd.sim.scene.RasterPlan`,
:func:`_raster_and_shade`): each block's temporaries stay in a core's cache and the blocks run
on worker threads (numpy releases the GIL in its loops). With parallax the raster is built
transposed, so a block holds whole raster lines and its warp runs in the block too. Every node
is computed as in a whole-raster pass, and the block layout depends only on the raster size,
so the image does not depend on the number of threads.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from threadpoolctl import ThreadpoolController

from ..geometry import (
    ELECTRON,
    SystemGeometry,
    beam_axes,
    pixel_to_image,
    rx,
    sample_to_chamber_matrix,
)
from ._workers import pool
from .materials import (
    MATERIAL_IDS,
    MATERIALS,
    kanaya_okayama_range,
    material_table,
    universal_yield,
)
from .scene import RasterGrid, RasterPlan, Scene

__all__ = ["BeamView", "Optics", "Shading", "render_clean", "intersect_surface", "gaussian_blur"]

_WORKERS = 2
#: nodes per block of the raster (a block's temporaries stay in a core's cache)
_BLOCK_NODES = 1 << 17


_RENDER_LOCK = threading.RLock()


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


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
        tvec = np.array([stage["x"], stage["y"], stage["z"] - eucentric_z])
        c0 = rx(t) @ tvec + np.asarray(drift, dtype=float)
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


@dataclass(frozen=True)
class Optics:
    """Image-space blur of one frame: Gaussian sigma (px) plus an astigmatic extra sigma (px)
    along ``astig_angle`` (rad, image frame)."""

    sigma: float = 0.0
    astig_sigma: float = 0.0
    astig_angle: float = 0.0

    def covariance(self) -> np.ndarray:
        """2x2 covariance (px^2) in image (col, row) axes."""
        c, s = math.cos(self.astig_angle), -math.sin(self.astig_angle)   # row axis points down
        n = np.array([c, s])
        return self.sigma**2 * np.eye(2) + self.astig_sigma**2 * np.outer(n, n)

    @property
    def max_sigma(self) -> float:
        return math.hypot(self.sigma, self.astig_sigma)


# detector directionality (coefficient of n.d) and chamber direction towards the detector
_DETECTORS = {
    "ETD": (0.35, (-0.6, 0.3, 0.74)),
    "TLD": (0.08, (0.0, 0.0, 1.0)),
    "ICE": (0.15, (0.5, -0.3, 0.81)),
    "CDEM": (0.2, (0.6, 0.3, 0.74)),
}
_BETA_SE = 2.5          # SE2 from backscattered electrons: delta (1 + beta eta)
_ICE = MATERIAL_IDS["ice"]
_AU = MATERIAL_IDS["Au"]


@dataclass(frozen=True)
class Shading:
    """Contrast model of one beam/detector setting (per-material lookup tables)."""

    beam: str
    mode: str               # "SE", "BSE" (electron) or "ISE" (ion-induced SE)
    base: np.ndarray        # yield at normal incidence, per material
    exponent: np.ndarray    # angular exponent per material
    k_det: float
    det_dir: tuple[float, float, float]
    k_edge: float
    edge_sigma: float       # m
    reference: float        # yield that maps to mid-grey at brightness = contrast = 0.5

    @classmethod
    def build(cls, beam: str, detector_type: str, detector_mode: str, voltage: float) -> Shading:
        k_det, det = _DETECTORS.get(detector_type, _DETECTORS["ETD"])
        v = np.array(det) / np.linalg.norm(det)
        z = material_table("z")
        if beam == ELECTRON and detector_mode == "BackscatterElectrons":
            base = np.array([m.eta if m.name != "vacuum" else 0.0 for m in MATERIALS],
                            dtype=np.float32)
            # Arnal: eta(theta) = (1 + cos)^(-9/sqrt Z), written relative to normal incidence
            expo = (9.0 / np.sqrt(np.maximum(z, 1.0))).astype(np.float32)
            return cls(beam, "BSE", base, expo, 0.0, tuple(v), 0.12, 20e-9,
                       reference=5.0 * float(base[_ICE]))
        if beam == ELECTRON:
            eta = np.array([max(m.eta, 0.0) for m in MATERIALS], dtype=np.float32)
            fv = universal_yield(voltage) / universal_yield(2000.0)
            base = material_table("se_yield") * np.float32(fv) * (1 + _BETA_SE * eta)
            expo = material_table("sec_exponent")
            sigma = max(0.3 * kanaya_okayama_range(MATERIALS[_ICE], voltage), 2e-9)
            return cls(beam, "SE", base.astype(np.float32), expo, k_det, tuple(v), 0.6, sigma,
                       reference=2.85 * float(base[_ICE]))
        fv = math.sqrt(max(voltage, 500.0) / 30000.0)
        base = material_table("ion_se_yield") * np.float32(fv)
        expo = material_table("sec_exponent") + np.float32(0.3)
        return cls(beam, "ISE", base.astype(np.float32), expo.astype(np.float32), k_det,
                   tuple(v), 0.8, 10e-9, reference=2.2 * float(base[_AU]))


# ---------------------------------------------------------------------------- blur helpers
def _kernel(sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur_axis(a: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Direct separable Gaussian along one axis with edge replication (small sigma)."""
    k = _kernel(sigma)
    r = len(k) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="edge")
    n = a.shape[axis]
    out = np.empty_like(a)
    sl = [slice(None), slice(None)]
    sl[axis] = slice(0, n)
    np.multiply(p[tuple(sl)], k[0], out=out)
    for t in range(1, len(k)):
        sl[axis] = slice(t, t + n)
        out += k[t] * p[tuple(sl)]
    return out


def gaussian_blur(a: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Gaussian blur of a float32 image with covariance ``cov`` (px^2, (col, row) axes).

    Separable direct convolution for small axis-aligned kernels; otherwise a periodic FFT
    (callers keep a margin of >= 3 sigma so the wrap-around stays outside the frame).
    """
    sc = math.sqrt(max(cov[0, 0], 0.0))
    sr = math.sqrt(max(cov[1, 1], 0.0))
    if abs(cov[0, 1]) < 1e-6 * (cov[0, 0] + cov[1, 1] + 1e-12) and max(sc, sr) <= 2.0:
        out = a
        if sc >= 0.3:
            out = _blur_axis(out, sc, 1)
        if sr >= 0.3:
            out = _blur_axis(out, sr, 0)
        return out if out is not a else a.copy()
    ny, nx = a.shape
    fy = sfft.fftfreq(ny).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(nx).astype(np.float32)[None, :]
    c = np.float32(-2 * math.pi**2)
    tf = np.exp(c * (np.float32(cov[1, 1]) * fy * fy + np.float32(cov[0, 0]) * fx * fx
                     + np.float32(2 * cov[0, 1]) * fx * fy))
    spec = sfft.rfft2(a, workers=_WORKERS)
    spec *= tf
    return sfft.irfft2(spec, s=a.shape, workers=_WORKERS).astype(np.float32, copy=False)


def _bilinear(a: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Bilinear sample of ``a`` at fractional (col i, row j), clamped to the array."""
    nj, ni = a.shape
    i = np.clip(i, 0.0, ni - 1.0001)
    j = np.clip(j, 0.0, nj - 1.0001)
    i0 = i.astype(np.int32)
    j0 = j.astype(np.int32)
    fi = (i - i0).astype(np.float32)
    fj = (j - j0).astype(np.float32)
    flat = j0 * np.int32(ni) + i0
    af = a.reshape(-1)
    top = af[flat] * (1 - fi) + af[flat + 1] * fi
    bot = af[flat + ni] * (1 - fi) + af[flat + ni + 1] * fi
    return top * (1 - fj) + bot * fj


# ---------------------------------------------------------------------------- ray casting
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


# ---------------------------------------------------------------------------- the renderer
@dataclass
class RenderStats:
    """Diagnostics of the last render (sizes, parallax, blur)."""

    raster_shape: tuple[int, int] = (0, 0)
    parallax_px_per_um: float = 0.0
    aligned: bool = True
    blur_sigma_px: float = 0.0


def render_clean(scene: Scene, view: BeamView, shading: Shading, optics: Optics,
                 stats: RenderStats | None = None) -> np.ndarray:
    """Noise-free yield image (float32, (height, width)) of ``view``.

    The raster blocks run on worker threads, so renders take turns (each already uses every
    core), and BLAS is kept to one thread per call meanwhile: its idle threads would otherwise
    spin on the cores the workers need.
    """
    with _RENDER_LOCK, _blas_controller().limit(limits=1, user_api="blas"):
        return _render(scene, view, shading, optics, stats)


def _render(scene: Scene, view: BeamView, shading: Shading, optics: Optics,
            stats: RenderStats | None) -> np.ndarray:
    W, H, p = view.width, view.height, view.pixel
    pm = view.plane_map()
    if pm is None:     # the beam hits the back of the holder: no signal
        return np.zeros((H, W), dtype=np.float32)
    g, g0, _k = pm
    bm = int(math.ceil(3.0 * optics.max_sigma)) + 2 if optics.max_sigma >= 0.5 else 2
    bm = min(bm, 256)
    par = view.parallax()                       # image (u, v) metres per metre of height
    par_norm = float(np.hypot(*par))
    # image frame of the extended (margin) output, as image metres of pixel centres
    u_lo, v_hi = pixel_to_image(-bm, -bm, (H, W), p)
    aligned = par_norm < 1e-9 or abs(par[0]) < 1e-9 * max(par_norm, 1e-300)
    if aligned:
        e_c = np.array([1.0, 0.0])
        e_r = np.array([0.0, -1.0])
        n_ci, n_cj = W + 2 * bm, H + 2 * bm
        o_img = np.array([float(u_lo), float(v_hi)])
    else:
        e_r = par / par_norm
        if e_r[1] > 0:
            e_r = -e_r
        e_c = np.array([-e_r[1], e_r[0]])
        # bounding box of the extended frame in the rotated (e_c, e_r) axes, plus 1 node
        cu, cv = pixel_to_image(np.array([-bm, W + bm - 1, -bm, W + bm - 1]),
                                np.array([-bm, -bm, H + bm - 1, H + bm - 1]), (H, W), p)
        pc = (cu * e_c[0] + cv * e_c[1]) / p
        pr = (cu * e_r[0] + cv * e_r[1]) / p
        c0, r0 = math.floor(pc.min()) - 1, math.floor(pr.min()) - 1
        n_ci = int(math.ceil(pc.max())) + 2 - c0
        n_cj = int(math.ceil(pr.max())) + 2 - r0
        o_img = p * (c0 * e_c + r0 * e_r)
    kappa = float(par @ e_r) / p                 # rows of the raster per metre of height
    if abs(kappa) * 100e-6 < 0.01:               # < 0.01 px even for 100 um of relief
        kappa = 0.0

    # node (i, j) of the output -> sample point on the plane
    rot = _rot2(view.scan_rotation)
    shift = np.array(view.shift)
    lin = g @ rot
    # parallax margins from the heights the footprint can hold; the plane of the raster is
    # moved to the middle of that range so the margins are split on both sides
    h_ref = 0.0
    if abs(kappa) > 0:
        grid0 = RasterGrid(tuple(lin @ (o_img + shift) + g0), tuple(lin @ (p * e_c)),
                           tuple(lin @ (p * e_r)), n_ci, n_cj)
        x0, x1, y0, y1 = grid0.bbox()
        kn = float(np.hypot(*_k))
        reach = kn * 25e-6
        for _ in range(2):
            lo, hi = scene.height_bounds((x0 - reach, x1 + reach, y0 - reach, y1 + reach))
            reach = kn * max(abs(lo), abs(hi))
        # a whole number of raster rows of parallax, so the raster nodes keep their sampling
        # phase when the footprint (and with it the height range) changes
        h_ref = round(0.5 * (lo + hi) * abs(kappa)) / abs(kappa)
        g, g0, _k = view.plane_map(h_ref)
        half = max(hi - h_ref, h_ref - lo)
        top = bot = int(math.ceil(abs(kappa) * half)) + 2
        cap = 4 * (n_cj + n_ci)       # bound the work for absurd margins (edge-on views)
        top, bot = min(top, cap), min(bot, cap)
    else:
        top = bot = 0
    lin = g @ rot
    di = lin @ (p * e_c)
    dj = lin @ (p * e_r)
    origin = lin @ (o_img + shift) + g0
    nj = n_cj + top + bot
    grid = RasterGrid(tuple(origin - top * dj), tuple(di), tuple(dj), n_ci, nj)
    warp = (kappa, top, n_cj, h_ref) if top or bot else None
    blur = optics.max_sigma >= 0.5
    if aligned and not blur:
        # the blocks write the frame itself: nothing needs the margins
        img = _raster_and_shade(scene, grid, view, shading, warp, crop=(bm, H, W))
        if stats is not None:
            stats.raster_shape = (nj, n_ci)
            stats.parallax_px_per_um = kappa * 1e-6
            stats.aligned = aligned
            stats.blur_sigma_px = optics.max_sigma
        return img
    out = _raster_and_shade(scene, grid, view, shading, warp)
    if blur:
        cov = optics.covariance()
        if not aligned:
            # image (col, row) -> raster (i, j): columns of q are e_c, e_r in image (col, row)
            q = np.array([[e_c[0], e_r[0]], [-e_c[1], -e_r[1]]])
            cov = q.T @ cov @ q
        out = gaussian_blur(out, cov)
    if aligned:
        img = out[bm:bm + H, bm:bm + W]
    else:
        cols, rows = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
        uu, vv = pixel_to_image(cols, rows, (H, W), p)
        du = uu - o_img[0]
        dv = vv - o_img[1]
        ii = (du * e_c[0] + dv * e_c[1]) / p
        jj = (du * e_r[0] + dv * e_r[1]) / p
        img = _bilinear(out, ii, jj)
    if stats is not None:
        stats.raster_shape = (nj, n_ci)
        stats.parallax_px_per_um = kappa * 1e-6
        stats.aligned = aligned
        stats.blur_sigma_px = optics.max_sigma
    return np.ascontiguousarray(img, dtype=np.float32)


def _scan(a: np.ndarray, op, reverse: bool = False, span: int | None = None) -> np.ndarray:
    """Inclusive running ``op`` (``np.maximum``, ``np.minimum``) along axis 1, from the end when
    ``reverse``: log2 steps of whole-array operations (Hillis-Steele) instead of a scalar
    loop. With ``span`` each result only covers the ``span`` elements from it (enough for an
    extremum whose influence is bounded). ``a`` is consumed.
    """
    n = a.shape[1]
    lim = n if span is None else min(n, span)
    src, dst = a, np.empty_like(a)
    s = 1
    while s < lim:
        if reverse:
            op(src[:, :-s], src[:, s:], out=dst[:, :-s])
            dst[:, -s:] = src[:, -s:]
        else:
            op(src[:, s:], src[:, :-s], out=dst[:, s:])
            dst[:, :s] = src[:, :s]
        src, dst = dst, src
        s *= 2
    return src


def _warp(hgt: np.ndarray, sig: np.ndarray, kappa: float, top: int, n_out: int,
          h_ref: float = 0.0, out_rows: np.ndarray | None = None,
          rows: tuple[int, int] | None = None) -> np.ndarray:
    """Parallax with exact occlusion and pixel integration along each raster line.

    ``hgt`` and ``sig`` are ``(lines, n)``: line ``l`` holds the nodes ``j = 0 .. n-1`` of one
    raster column. Node ``j`` (a point of the plane at ``h_ref``) with height ``h`` appears
    at image row ``V_j = j + kappa (h_j - h_ref)``. Along a ray the point nearest the source
    has the largest height, so a node is hidden when a node on its far side projects past it:
    the running minimum (``kappa < 0``, from the far end) or maximum (``kappa > 0``) of ``V``
    is the visible envelope ``E``, non-decreasing in ``j`` and flat over hidden nodes.

    Along ``E`` the signal is a density, ``rho_j = (S_j + S_j+1) / 2`` on segment
    ``[E_j, E_j+1]`` (a hidden segment has zero length), and output row ``k`` integrates it
    over its extent ``[B_k, B_k + 1]``, ``B_k = top - 1/2 + k``: a foreshortened stretch of
    surface is averaged, a magnified one interpolated, a hidden one contributes nothing, and a
    thin bright strip (a silhouette at grazing incidence) adds in proportion to its projected
    width instead of flickering with the sampling phase. Written with the density's jumps
    ``d_j = rho_j - rho_j-1`` at the knots ``E_j`` (``rho`` is zero outside the line), the
    integral is ``rho(B_k + 1) - sum over knots in [B_k, B_k + 1) of d_j (E_j - B_k)``, and
    ``rho(B_k + 1)`` is the sum of the jumps before ``B_k + 1``: two histograms of the knots
    over the rows and one running sum, no search. Returns ``(lines, n_out)``, or the output
    rows ``rows = (k0, k1)`` of it; with ``out_rows`` (``(k1 - k0, lines)``, image
    orientation) the result is written there transposed.
    """
    nl, n = hgt.shape
    f32 = np.float32
    # the envelope relative to the first boundary: E_j - B_0 = j + kappa (h_j - h_ref) - B_0
    env = np.multiply(hgt, f32(kappa))
    env += np.arange(n, dtype=np.float64).astype(f32) - f32(kappa * h_ref + top - 0.5)
    # a node can only be hidden by one less than |kappa| (h_max - h_min) nodes beyond it
    reach = int(math.ceil(abs(kappa) * float(hgt.max() - hgt.min()))) + 2
    if kappa < 0:
        env = _scan(env, np.minimum, reverse=True, span=reach)
    else:
        env = _scan(env, np.maximum, span=reach)
    # twice the density's jump at each knot: rho_j - rho_j-1 = (S_j+1 - S_j-1) / 2 inside,
    # rho_0 at the first knot and -rho_n-2 at the last (no signal beyond the line)
    jump = np.empty_like(sig)
    np.subtract(sig[:, 2:], sig[:, :-2], out=jump[:, 1:-1])
    np.add(sig[:, 0], sig[:, 1], out=jump[:, 0])
    np.add(sig[:, -2], sig[:, -1], out=jump[:, -1])
    np.negative(jump[:, -1], out=jump[:, -1])
    # knot j lies in row bin floor(E_j - B_0) (clipped: -1 before the frame, n_out after)
    row = np.floor(env)
    frac = np.subtract(env, row, out=env)
    frac *= jump
    np.clip(row, -1, n_out, out=row)
    row += (np.arange(nl, dtype=f32) * f32(n_out + 2) + f32(1.0))[:, None]
    key = row.astype(np.intp).ravel()
    del row
    dens = np.zeros((nl, n_out + 2), dtype=f32)
    np.add.at(dens.reshape(-1), key, jump.reshape(-1))
    np.cumsum(dens, axis=1, out=dens)                # 2 rho at the bins' right edges
    corr = np.zeros((nl, n_out + 2), dtype=f32)
    np.add.at(corr.reshape(-1), key, frac.reshape(-1))
    dens -= corr
    k0, k1 = (0, n_out) if rows is None else rows
    if out_rows is None:
        return np.multiply(dens[:, k0 + 1:k1 + 1], f32(0.5))
    res = np.ascontiguousarray(dens[:, k0 + 1:k1 + 1].T)    # a cache-friendly transpose
    res *= f32(0.5)
    out_rows[...] = res
    return out_rows


def _facing(vec, hx: np.ndarray, hy: np.ndarray, inv_norm: np.ndarray,
            scratch: np.ndarray | None = None) -> np.ndarray:
    """``|vec|`` times the cos of the angle between the local normal ``(-Hx, -Hy, 1)/|.|``
    and ``vec`` (sample frame); ``scratch`` (the shape of ``hx``) may be overwritten."""
    v = np.asarray(vec, dtype=np.float32)
    out = None
    for comp, grad in ((v[0], hx), (v[1], hy)):
        if abs(comp) > 1e-7:
            if out is None:
                out = np.multiply(grad, -comp)
            else:
                out -= np.multiply(grad, comp, out=scratch)
    if out is None:
        return np.multiply(inv_norm, v[2])
    out += v[2]
    out *= inv_norm
    return out


def _halo(grid: RasterGrid, shading: Shading) -> int:
    """Nodes of neighbourhood the shading of a node reads: the gradient's and the edge
    high-pass's (one node, or ~4 sigma of their Gaussians) and the material smoothing's."""
    sp_i = math.hypot(*grid.di)
    sp_j = math.hypot(*grid.dj)
    sig_m = max(shading.edge_sigma, min(sp_i, sp_j))
    s_edge = max(sig_m / sp_i, sig_m / sp_j, 0.7)
    r = 1 if s_edge <= 1.5 else int(math.ceil(4.0 * s_edge)) + 1
    s_mat = max(shading.edge_sigma / sp_i, shading.edge_sigma / sp_j)
    if s_mat > 1.0:
        r = max(r, int(math.ceil(4.0 * s_mat)) + 1)
    return r


def _raster_and_shade(scene: Scene, grid: RasterGrid, view: BeamView, shading: Shading,
                      warp: tuple | None = None,
                      crop: tuple[int, int, int] | None = None) -> np.ndarray:
    """Yield on ``grid`` (``(nj, ni)``), or with ``warp = (kappa, top, n_out, h_ref)`` the
    yield seen through the parallax along the grid's rows (``(n_out, ni)``, see
    :func:`_warp`), computed a block at a time; with ``crop = (m, H, W)`` only the
    ``[m:m+H, m:m+W]`` part of that result is returned.

    The grid is extended by a halo of ``_halo`` nodes on every side so each block's shading
    sees its neighbours; every node is computed exactly as in a whole-grid pass, so the block
    layout (fixed by the grid size) and the number of worker threads do not change the image.
    With parallax the grid is rasterised transposed: a block is then a range of the grid's
    columns with all its rows, the raster lines along which the parallax acts, so the warp
    runs inside the block too.
    """
    ni, nj = grid.ni, grid.nj
    hal = _halo(grid, shading)
    if warp is None:
        work_grid = grid
    else:
        work_grid = RasterGrid(grid.origin, grid.dj, grid.di, nj, ni)     # transposed
    wi, wj = work_grid.ni, work_grid.nj
    di, dj = np.array(work_grid.di), np.array(work_grid.dj)
    origin = np.array(work_grid.origin) - hal * (di + dj)
    ext = RasterGrid((float(origin[0]), float(origin[1])), work_grid.di, work_grid.dj,
                     wi + 2 * hal, wj + 2 * hal)
    plan = RasterPlan(scene, ext, pool())
    tables = (-shading.exponent, shading.base)
    full = (nj if warp is None else warp[2], ni)
    m, (fh, fw) = (0, full) if crop is None else (crop[0], crop[1:])
    out = np.empty((fh, fw), dtype=np.float32)
    rows = max(8, 4 * hal, _BLOCK_NODES // ext.ni)
    starts = list(range(0, wj, rows))

    def work(a: int) -> None:
        b = min(a + rows, wj)
        h, _, _, (neg_expo, y0) = plan.block(a, b + 2 * hal, tables)
        sig = _shade(h, neg_expo, y0, hal, ext, view, shading)
        if warp is None:                      # block rows a..b of the result
            lo, hi = max(a, m), min(b, m + fh)
            if lo < hi:
                out[lo - m:hi - m] = sig[lo - a:hi - a, m:m + fw]
        else:                                 # block columns a..b of the result
            lo, hi = max(a, m), min(b, m + fw)
            if lo < hi:
                _warp(h[hal + lo - a:hal + hi - a, hal:hal + wi], sig[lo - a:hi - a], *warp,
                      out_rows=out[:, lo - m:hi - m], rows=(m, m + fh))

    if len(starts) == 1:
        work(0)
    else:
        for f in [pool().submit(work, a) for a in starts]:
            f.result()
    return out


def _shade(hgt: np.ndarray, neg_expo: np.ndarray, y0: np.ndarray, hal: int, grid: RasterGrid,
           view: BeamView, shading: Shading) -> np.ndarray:
    """Yield of the interior of a block from the local normal, material and edges.

    ``hgt`` and the material maps (``neg_expo``: minus the angular exponent, ``y0``: the
    yield at normal incidence; anti-aliased blends of the materials, from
    :meth:`RasterPlan.block`) cover the block with a halo of ``hal`` nodes on every side (the
    interior is ``hgt[hal:-hal, hal:-hal]``).
    """
    f32 = np.float32
    nb, ni = hgt.shape[0] - 2 * hal, hgt.shape[1] - 2 * hal
    rows, cols = slice(hal, hal + nb), slice(hal, hal + ni)
    # central differences per node; the 1/2 is folded into the metric below
    hi = np.subtract(hgt[rows, hal + 1:hal + ni + 1], hgt[rows, hal - 1:hal + ni - 1])
    hj = np.subtract(hgt[hal + 1:hal + nb + 1, cols], hgt[hal - 1:hal + nb - 1, cols])
    # sample-frame gradient (Hx, Hy) = J^-T (Hi, Hj)
    m = 0.5 * np.linalg.inv(grid.jacobian()).T
    tiny = 1e-12 * float(np.abs(m).max())
    if abs(m[0, 1]) <= tiny and abs(m[1, 0]) <= tiny:
        hx, hy = hi, hj
        hx *= f32(m[0, 0])
        hy *= f32(m[1, 1])
    elif abs(m[0, 0]) <= tiny and abs(m[1, 1]) <= tiny:
        hx, hy = hj, hi
        hx *= f32(m[0, 1])
        hy *= f32(m[1, 0])
    else:
        hx = f32(m[0, 0]) * hi + f32(m[0, 1]) * hj
        hy = f32(m[1, 0]) * hi + f32(m[1, 1]) * hj
        del hi, hj
    tmp = np.multiply(hy, hy)
    inv_norm = np.multiply(hx, hx)
    inv_norm += tmp
    inv_norm += 1.0
    np.sqrt(inv_norm, out=inv_norm)
    np.divide(1.0, inv_norm, out=inv_norm)          # 1 / |(-Hx, -Hy, 1)|

    _, _, d_s = view.sample_axes()
    cos_b = _facing(d_s, hx, hy, inv_norm, tmp)
    np.clip(cos_b, 0.1, 1.0, out=cos_b)
    if shading.mode == "BSE":
        # (1+cos)/2 raised to -9/sqrt(Z): 1 at normal incidence, rising towards grazing
        cos_b += 1.0
        cos_b *= 0.5
    y = np.log(cos_b, out=cos_b)
    y *= neg_expo[rows, cols]
    np.exp(y, out=y)                               # sec^n (or the Arnal BSE factor)
    y *= _material_map(y0, grid, shading)[rows, cols]
    if shading.k_det:
        det = view.rotation.T @ np.array(shading.det_dir) * shading.k_det
        cos_d = _facing(det, hx, hy, inv_norm, tmp)  # k_det cos(normal, detector)
        cos_d += 1.0
        y *= cos_d
    del hx, hy, inv_norm, tmp
    y *= _edge_factor(hgt, hal, grid, shading)
    return y


def _material_map(y0: np.ndarray, grid: RasterGrid, shading: Shading) -> np.ndarray:
    """Smooth the material yield map over the interaction range when it spans > 1 node.

    Material contrast is generated over the electron (ion) interaction range, so at high
    magnification a boundary is a ramp of that width. Below one node the boundaries are
    already anti-aliased by the scene's coverage layers and nothing is done.
    """
    sp_i = math.hypot(*grid.di)
    sp_j = math.hypot(*grid.dj)
    si = shading.edge_sigma / sp_i
    sj = shading.edge_sigma / sp_j
    if max(si, sj) <= 1.0:
        return y0
    return gaussian_blur(y0, np.diag([max(si, 0.3) ** 2, max(sj, 0.3) ** 2]))


def _edge_factor(hgt: np.ndarray, hal: int, grid: RasterGrid, shading: Shading) -> np.ndarray:
    """``1 + k tanh((h - G*h) / sigma)`` on the interior of a haloed block: bright rims and
    peaks, dark valleys.

    The Gaussian is isotropic in the sample frame (sigma in nodes per axis, at least 0.7 node).
    Up to ~1.5 nodes the high-pass ``h - G*h`` is its second-order expansion
    ``-(sigma_i^2 h_ii + sigma_j^2 h_jj) / 2`` (two slice passes instead of a blur).
    """
    f32 = np.float32
    nb, ni = hgt.shape[0] - 2 * hal, hgt.shape[1] - 2 * hal
    rows, cols = slice(hal, hal + nb), slice(hal, hal + ni)
    sp_i = math.hypot(*grid.di)
    sp_j = math.hypot(*grid.dj)
    sig_m = max(shading.edge_sigma, min(sp_i, sp_j))
    si = max(sig_m / sp_i, 0.7)
    sj = max(sig_m / sp_j, 0.7)
    scale = 1.0 / max(shading.edge_sigma, math.sqrt(sp_i * sp_j))
    c = hgt[rows, cols]
    if max(si, sj) <= 1.5:
        # second-order high-pass a (h_E + h_W - 2 h) + b (h_N + h_S - 2 h)
        a = f32(-0.5 * si * si * scale)
        b = f32(-0.5 * sj * sj * scale)
        hp = np.add(hgt[rows, hal + 1:hal + ni + 1], hgt[rows, hal - 1:hal + ni - 1])
        if a == b:
            hp += hgt[hal + 1:hal + nb + 1, cols]
            hp += hgt[hal - 1:hal + nb - 1, cols]
            hp -= np.multiply(c, f32(4.0))
            hp *= a
        else:
            t = np.add(hgt[hal + 1:hal + nb + 1, cols], hgt[hal - 1:hal + nb - 1, cols])
            t -= np.multiply(c, f32(2.0))
            t *= b / a
            hp -= np.multiply(c, f32(2.0))
            hp += t
            hp *= a
            del t
    else:
        # about a reference level: the high-pass of metres of relief keeps its nanometres
        ref = f32(hgt[hal, hal])
        hp = gaussian_blur(hgt - ref, np.diag([si * si, sj * sj]))[rows, cols]
        hp -= c
        hp += ref
        hp *= f32(-scale)
    np.tanh(hp, out=hp)
    hp *= f32(shading.k_edge)
    hp += 1.0
    return hp
