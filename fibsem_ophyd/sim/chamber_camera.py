"""The simulated chamber camera: an infrared view of the chamber drawn from the state.

The camera looks along the stage's tilt axis (chamber x), so the image shows chamber y to the
right and chamber z up, centred on the coincidence point, :data:`PIXEL` metres per pixel: the
two pole pieces (the electron column vertical, the ion column at its column tilt), the stage
block at its y, z and tilt with the pre-tilted shuttle on top, the manipulator needle (when
inserted: its tip where the manipulator says) and the gas injection nozzle (when inserted).
Deterministic: the same state gives the same image, so a test can find the parts where the
state puts them.
"""

from __future__ import annotations

import math

import numpy as np

from ..geometry import rx

__all__ = ["render_chamber", "chamber_to_pixel", "SHAPE", "PIXEL", "LEVELS"]

#: image (height, width), px
SHAPE = (480, 640)
#: metres per pixel (a 32 mm wide view)
PIXEL = 50e-6
#: grey level of each part
LEVELS = {"background": 20, "column": 90, "stage": 150, "shuttle": 190, "needle": 250,
          "gis": 215}
_STAGE_SIZE = (14e-3, 4e-3)      # block width (y) and thickness (z), m
_SHUTTLE_SIZE = (6e-3, 1.5e-3)   # m
_COLUMN_GAP = 1e-3               # pole piece above the coincidence point, m
_COLUMN_WIDTH = 3e-3             # m
_NEEDLE_WIDTH = 0.15e-3          # drawn width of the needle, m
_NEEDLE_LENGTH = 8e-3            # m


def chamber_to_pixel(y: float, z: float) -> tuple[float, float]:
    """(column, row) of the chamber point (y, z) in m (coincidence point at the centre)."""
    h, w = SHAPE
    return w / 2 + y / PIXEL, h / 2 - z / PIXEL


def _fill(img: np.ndarray, corners: np.ndarray, level: int) -> None:
    """Fill the convex polygon ``corners`` ((n, 2) chamber (y, z), m) with ``level``."""
    px = np.array([chamber_to_pixel(y, z) for y, z in corners])
    c0, r0 = np.floor(px.min(axis=0)).astype(int)
    c1, r1 = np.ceil(px.max(axis=0)).astype(int)
    h, w = img.shape
    c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, w - 1), min(r1, h - 1)
    if c0 > c1 or r0 > r1:
        return
    cc, rr = np.meshgrid(np.arange(c0, c1 + 1) + 0.5, np.arange(r0, r1 + 1) + 0.5)
    inside = np.ones(cc.shape, dtype=bool)
    n = len(px)
    # the sign of the polygon's orientation makes "inside" the same side of every edge
    area = sum(px[i, 0] * px[(i + 1) % n, 1] - px[(i + 1) % n, 0] * px[i, 1] for i in range(n))
    sign = 1.0 if area > 0 else -1.0
    for i in range(n):
        (x0, y0), (x1, y1) = px[i], px[(i + 1) % n]
        inside &= sign * ((x1 - x0) * (rr - y0) - (y1 - y0) * (cc - x0)) >= 0
    img[r0:r1 + 1, c0:c1 + 1][inside] = level


def _box(cy: float, cz: float, width: float, height: float, angle: float,
         anchor_top: bool = False) -> np.ndarray:
    """Corners (y, z) of a ``width`` x ``height`` box rotated by ``angle`` rad about (cy, cz);
    ``anchor_top``: (cy, cz) is the middle of its top edge, else its centre."""
    top = 0.0 if anchor_top else height / 2
    local = np.array([[-width / 2, top], [width / 2, top], [width / 2, top - height],
                      [-width / 2, top - height]])
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return local @ rot.T + [cy, cz]


def _rod(start: np.ndarray, direction: np.ndarray, length: float, width: float) -> np.ndarray:
    d = np.asarray(direction, dtype=float)
    n = float(np.linalg.norm(d))
    d = d / n if n > 0 else np.array([0.0, 1.0])
    side = np.array([-d[1], d[0]]) * width / 2
    end = start + d * length
    return np.array([start - side, start + side, end + side, end - side])


def render_chamber(stage: dict, z0: float, pre_tilt: float, ion_tilt: float,
                   needle_tip: np.ndarray | None, needle_axis: np.ndarray,
                   gis_nozzle: np.ndarray | None) -> np.ndarray:
    """The chamber image (uint8, :data:`SHAPE`).

    Parameters
    ----------
    stage : dict
        Stage position: x, y, z (m), r, t (deg).
    z0 : float
        Stage z (m) that puts the sample surface on the coincidence point.
    pre_tilt, ion_tilt : float
        Shuttle pre-tilt and ion column tilt, deg.
    needle_tip : ndarray or None
        Needle tip (chamber x, y, z, m) if the needle is inserted.
    needle_axis : ndarray
        Unit vector from the tip along the needle's body (chamber frame).
    gis_nozzle : ndarray or None
        GIS nozzle (chamber x, y, z, m) if inserted.
    """
    img = np.full(SHAPE, LEVELS["background"], dtype=np.uint8)
    # pole pieces: the electron column straight up, the ion column tilted towards -y
    for tilt in (0.0, math.radians(ion_tilt)):
        axis = np.array([-math.sin(tilt), math.cos(tilt)])
        _fill(img, _rod(axis * _COLUMN_GAP, axis, 40e-3, _COLUMN_WIDTH), LEVELS["column"])
    # the stage: its top surface centre is where the stage puts the sample's origin
    t = math.radians(stage["t"])
    centre = rx(t) @ np.array([stage["x"], stage["y"], stage["z"] - z0])
    cy, cz = float(centre[1]), float(centre[2])
    shuttle_top = _box(cy, cz, _SHUTTLE_SIZE[0], _SHUTTLE_SIZE[1], t - math.radians(pre_tilt),
                       anchor_top=True)
    under = np.array([math.sin(t), -math.cos(t)]) * _SHUTTLE_SIZE[1]
    block = _box(cy + under[0], cz + under[1], _STAGE_SIZE[0], _STAGE_SIZE[1], t,
                 anchor_top=True)
    _fill(img, block, LEVELS["stage"])
    _fill(img, shuttle_top, LEVELS["shuttle"])
    if gis_nozzle is not None:
        tip = np.asarray(gis_nozzle, dtype=float)
        _fill(img, _rod(tip[1:], tip[1:], 30e-3, 0.5e-3), LEVELS["gis"])
    if needle_tip is not None:
        tip = np.asarray(needle_tip, dtype=float)
        axis = np.asarray(needle_axis, dtype=float)[1:]
        _fill(img, _rod(tip[1:], axis, _NEEDLE_LENGTH, _NEEDLE_WIDTH), LEVELS["needle"])
    return img
