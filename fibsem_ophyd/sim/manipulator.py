"""The simulated manipulator: a tungsten needle (e.g. an EasyLift) and how the beams see it.

Coordinates (``RAW``): the tip's position in the chamber frame relative to the coincidence
point, metres (x right in both images, y up in the electron image, z towards the electron
source). Saved positions as OpenFIBSEM calibrates them: ``EUCENTRIC`` puts the tip on the
coincidence point, ``PARK`` 180 um above it (shared physics notes, section 6).

The needle is a cone (half-angle :data:`HALF_ANGLE`, tip radius :data:`TIP_RADIUS`) coming in
along :data:`AXIS` (from the tip towards its body: from the right, 35 deg above the
horizontal). It is drawn over each rendered frame by orthographic projection: a pixel sees
the needle where its line of sight passes within ``r(s) = TIP_RADIUS + s tan(HALF_ANGLE)``
of the axis point ``s`` behind the tip; the yield follows the detector's sec law for the
needle's surface (W) at that point, so its silhouette is bright, as in real images; edges are
anti-aliased and blurred like the frame. The needle hides the sample behind it. Not modelled:
its shadow, parallax-dependent occlusion by the sample's relief, its own defocus (it takes
the frame's).

A move that would push the tip more than :data:`MAX_PENETRATION` into the sample is refused
(``BackendError``: on hardware the needle would bend), and so is a stage move that would
drive the sample that far into the inserted needle; within that, the tip touches
(``contact``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .. import validate
from ..backend import MANIPULATOR_AXES, MANIPULATOR_LIMITS, BackendError
from ..geometry import image_to_pixel, pixel_to_image
from .materials import MATERIAL_IDS
from .optics import gaussian_blur
from .state import SimState, check_number

__all__ = ["NeedleModel", "draw_cone", "cone_footprint", "AXIS", "HALF_ANGLE", "TIP_RADIUS",
           "MAX_PENETRATION", "SAVED_POSITIONS", "INSERT_TIME", "SPEED"]

AXIS = np.array([math.cos(math.radians(35.0)), 0.0, math.sin(math.radians(35.0))])
HALF_ANGLE = math.radians(10.0)
TIP_RADIUS = 0.5e-6
#: visible length of the needle behind its tip, m
LENGTH = 3e-3
MAX_PENETRATION = 0.5e-6
SAVED_POSITIONS = {"EUCENTRIC": {"x": 0.0, "y": 0.0, "z": 0.0},
                   "PARK": {"x": 0.0, "y": 0.0, "z": 180e-6}}
#: insertion or retraction, s; speed of the axes, m/s
INSERT_TIME = 10.0
SPEED = 100e-6
_W = MATERIAL_IDS["W"]
_SEC_CAP = 8.0
#: a gap (m) this small is contact
_CONTACT = 1e-9


class NeedleModel:
    """Manipulator state of a :class:`~fibsem_ophyd.sim.SimulatedMicroscope`."""

    def __init__(self, state: SimState, enabled: bool = True):
        self._state = state
        self.enabled = enabled
        self.inserted = False
        self.position = dict(SAVED_POSITIONS["PARK"])
        self.contact = False

    def key(self) -> tuple:
        """What the rendered frames depend on."""
        return (self.inserted, *(self.position[a] for a in MANIPULATOR_AXES))

    def tip(self) -> np.ndarray:
        return np.array([self.position[a] for a in MANIPULATOR_AXES], dtype=float)

    # ------------------------------------------------------------------ motion
    def _require(self, inserted: bool = True) -> None:
        if not self.enabled:
            raise BackendError("this microscope has no manipulator (manipulator.enabled)")
        if inserted and not self.inserted:
            raise BackendError("the manipulator is retracted: insert it first")

    def insert(self, name: str = "PARK") -> None:
        self._require(inserted=False)
        if name not in SAVED_POSITIONS:
            raise ValueError(f"unknown manipulator position {name!r}; saved positions: "
                             f"{sorted(SAVED_POSITIONS)}")
        target = self._checked(SAVED_POSITIONS[name])
        if not self.inserted:
            self._state.clock.advance(INSERT_TIME)
            self.inserted = True
            self.position = dict(SAVED_POSITIONS["PARK"])
        self._go(target)

    def retract(self) -> None:
        self._require(inserted=False)
        if self.inserted:
            self._state.clock.advance(INSERT_TIME)
        self.inserted = False
        self.contact = False
        self.position = dict(SAVED_POSITIONS["PARK"])

    def move_absolute(self, position: Mapping[str, float]) -> None:
        self._require()
        self._go(self._checked({**self.position, **dict(position)}))

    def _checked(self, position: Mapping[str, float]) -> dict[str, float]:
        validate.known_keys("the manipulator position", position, MANIPULATOR_AXES,
                            what="manipulator axis")
        out = {}
        for ax in MANIPULATOR_AXES:
            out[ax] = check_number(f"manipulator.{ax}", position[ax], MANIPULATOR_LIMITS)
        gap = self.gap(np.array([out[a] for a in MANIPULATOR_AXES]))
        if gap < -MAX_PENETRATION:
            raise BackendError(
                f"manipulator move to {out} refused: the tip would be {-gap * 1e6:.2f} um "
                f"inside the sample (at most {MAX_PENETRATION * 1e6:g} um of contact)")
        return out

    def _go(self, target: dict[str, float]) -> None:
        d = float(np.linalg.norm([target[a] - self.position[a] for a in MANIPULATOR_AXES]))
        motion = self._state.motion
        motion.begin("manipulator")

        def apply(pos):
            self.position = pos

        try:
            motion.travel("manipulator", dict(self.position), target, d / SPEED, apply)
        finally:
            self.update_contact()

    def update_contact(self) -> None:
        """Whether the inserted tip touches the sample (after a needle or stage move)."""
        self.contact = self.inserted and self.gap(self.tip()) <= _CONTACT

    def gap(self, tip: np.ndarray) -> float:
        """Distance (m) from the tip's surface to the sample surface under it, along the
        sample normal (negative: inside the sample)."""
        state = self._state
        view = state.view("electron")
        s = view.chamber_to_sample(tip)
        h = float(state.scene.height(np.array([s[0]]), np.array([s[1]]))[0]) + view.offset
        return float(s[2] - h) - TIP_RADIUS

    # ------------------------------------------------------------------ image
    def composite(self, img: np.ndarray, view, shading, optics) -> np.ndarray:
        """``img`` (a clean yield image of ``view``) with the needle drawn over it."""
        if not self.inserted:
            return img
        return draw_cone(img, view, shading, optics, self.tip(), AXIS, HALF_ANGLE, TIP_RADIUS,
                         LENGTH, _W)


def cone_footprint(view, shape: tuple[int, int], tip, axis, half_angle: float,
                   tip_radius: float, length: float, margin: int = 0):
    """Where a cone (see :func:`draw_cone`) projects in ``view``'s frame of ``shape`` (H, W).

    Returns ``(r0, r1, c0, c1, d, r)``: the pixel box it covers (plus ``margin``) and, at
    each pixel centre of the box, the distance ``d`` (m, image plane) of the line of sight
    from the cone's axis point it passes and the cone's radius ``r`` there (the pixel sees
    the cone where ``d < r``); ``None`` if the cone is outside the frame.
    """
    H, W = shape
    p = view.pixel
    tip = np.asarray(tip, dtype=float)
    axis = np.asarray(axis, dtype=float)
    k_vec = np.array([axis @ view.right, axis @ view.up])
    k = float(np.hypot(*k_vec))
    m = math.tan(half_angle)
    t0 = np.array([tip @ view.right, tip @ view.up])
    # pixel box of the projected cone (the segment tip -> tip + length axis, widened)
    ends = np.array([t0, t0 + length * k_vec])
    grow = tip_radius + length * m
    corners = []
    for a1 in (ends[:, 0].min() - grow, ends[:, 0].max() + grow):
        for a2 in (ends[:, 1].min() - grow, ends[:, 1].max() + grow):
            corners.append(image_to_pixel(*view.qperp_to_image(a1, a2), (H, W), p))
    corners = np.array(corners)
    c0 = max(0, int(math.floor(corners[:, 0].min())) - margin)
    c1 = min(W, int(math.ceil(corners[:, 0].max())) + margin + 1)
    r0 = max(0, int(math.floor(corners[:, 1].min())) - margin)
    r1 = min(H, int(math.ceil(corners[:, 1].max())) + margin + 1)
    if c0 >= c1 or r0 >= r1:
        return None
    cols, rows = np.meshgrid(np.arange(c0, c1, dtype=np.float64),
                             np.arange(r0, r1, dtype=np.float64))
    u, v = pixel_to_image(cols, rows, (H, W), p)
    a1, a2 = view.image_to_qperp(u, v)
    k_min = max(m * 1.01, 1e-6)
    if k < k_min:                          # looking (nearly) down the axis
        k_vec = k_vec / k * k_min if k > 0 else np.array([k_min, 0.0])
        k = k_min
    e = k_vec / k
    dx, dy = a1 - t0[0], a2 - t0[1]
    t = dx * e[0] + dy * e[1]
    n = np.abs(-dx * e[1] + dy * e[0])
    q = m / k
    s = np.clip((t + q * n / math.sqrt(1 - q * q)) / k, 0.0, length)
    return r0, r1, c0, c1, np.hypot(t - k * s, n), tip_radius + m * s


def draw_cone(img: np.ndarray, view, shading, optics, tip, axis, half_angle: float,
              tip_radius: float, length: float, material: int) -> np.ndarray:
    """``img`` (a clean yield image of ``view``) with a cone of ``material`` drawn over it:
    apex sphere of ``tip_radius`` at ``tip`` (chamber frame, m), widening by ``half_angle``
    along ``axis`` (unit, from the tip towards the body) for ``length`` (module docstring)."""
    p = view.pixel
    margin = int(math.ceil(3 * optics.max_sigma)) + 2
    fp = cone_footprint(view, img.shape, tip, axis, half_angle, tip_radius, length, margin)
    if fp is None:
        return img
    r0, r1, c0, c1, d, r = fp
    cover = np.clip(0.5 - (d - r) / p, 0.0, 1.0).astype(np.float32)
    if not cover.any():
        return img
    cos_i = np.sqrt(np.clip(1.0 - (d / r) ** 2, 0.0, 1.0))
    sec = np.minimum(1.0 / np.maximum(cos_i, 1.0 / _SEC_CAP), _SEC_CAP)
    yld = (shading.base[material] * sec ** shading.exponent[material]).astype(np.float32)
    layer = cover * yld
    if optics.max_sigma >= 0.5:
        cov = optics.covariance()
        cover = gaussian_blur(cover, cov)
        layer = gaussian_blur(layer, cov)
    out = img.copy()
    box = out[r0:r1, c0:c1]
    out[r0:r1, c0:c1] = box * (1.0 - cover) + layer
    return out
