"""Pure FIB-SEM geometry: frames, stage moves, orientations, pixel <-> metre conversion.

numpy only, no I/O, no ophyd. Angles are **radians** in this module (devices and plans
convert from the degrees users type); lengths are metres.

Frames (see ``shared`` physics notes, section 1):

* chamber frame: origin at the coincidence point (CP), ``z`` up along the electron column,
  ``x`` along the stage tilt axis; the ion column lies in the y-z plane at ``column_tilt``
  from ``z``.
* stage frame (Thermo Fisher convention, the y/z axes ride the tilt):
  ``q = Rx(t) @ ((x, y, z - z0) + Rz(r) @ Rx(-pretilt) @ s)`` maps a point ``s`` in the
  sample frame to the chamber for stage position ``(x, y, z, r, t)``; ``z0`` is the stage z
  that puts the nominal sample surface on the tilt axis.
* other stage types (``SystemGeometry.stage_type``): ``"tescan"``, whose z axis is
  chamber-vertical (``+z`` down) below the tilt while x, y ride it, and ``"compustage"``
  (Arctis), the Thermo Fisher chain without rotation, normally without pre-tilt, that
  faces the ion beam by tilting 180 degrees further (the ion beam then sees the grid's
  back side). See :func:`stage_axes`.
* image frame: metres from the image centre, ``+x`` right, ``+y`` up (OpenFIBSEM's
  convention); pixel ``(col, row)`` from the top-left corner.

A stage move of ``+d`` moves the sample, and so the image content, by ``+d``: to centre a
feature seen at image offset ``f`` call ``stable_move(-f)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ELECTRON",
    "ION",
    "STAGE_TYPES",
    "SystemGeometry",
    "stage_axes",
    "stage_translation",
    "rx",
    "rz",
    "sample_to_chamber_matrix",
    "beam_axes",
    "stable_move_delta",
    "vertical_move_delta",
    "manipulator_corrected_delta",
    "flat_to_beam",
    "milling_tilt",
    "milling_angle",
    "orientation_name",
    "pixel_to_image",
    "image_to_pixel",
    "rotate_image_vector",
]

ELECTRON = "electron"
ION = "ion"

_ANGLE_TOL = math.radians(5.0)

STAGE_TYPES = ("shuttle", "tescan", "compustage")


@dataclass(frozen=True)
class SystemGeometry:
    """Column and holder geometry of one microscope (angles in radians)."""

    ion_column_tilt: float = math.radians(52.0)
    electron_column_tilt: float = 0.0
    shuttle_pre_tilt: float = math.radians(35.0)
    rotation_reference: float = 0.0
    rotation_180: float = math.pi
    stage_type: str = "shuttle"

    def __post_init__(self):
        if self.stage_type not in STAGE_TYPES:
            raise ValueError(
                f"unknown stage type {self.stage_type!r}; expected one of {', '.join(STAGE_TYPES)}"
            )

    def column_tilt(self, beam: str) -> float:
        return self.ion_column_tilt if beam == ION else self.electron_column_tilt


def rx(a: float) -> np.ndarray:
    """Rotation about x (the tilt axis) by ``a`` radians."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rz(a: float) -> np.ndarray:
    """Rotation about z by ``a`` radians."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def sample_to_chamber_matrix(r: float, t: float, pretilt: float) -> np.ndarray:
    """Rotation part of the sample -> chamber map: ``Rx(t) Rz(r) Rx(-pretilt)``."""
    return rx(t) @ rz(r) @ rx(-pretilt)


def stage_axes(t: float, geom: SystemGeometry) -> np.ndarray:
    """Chamber displacement (columns) of a unit stage x, y, z move at tilt ``t`` (rad).

    Shuttle and compustage: all three axes ride the tilt (``Rx(t)``). TESCAN: x and y ride
    the tilt, z is chamber-vertical and points down.
    """
    m = rx(t)
    if geom.stage_type == "tescan":
        m[:, 2] = (0.0, 0.0, -1.0)
    return m


def stage_translation(x: float, y: float, z: float, t: float, z0: float,
                      geom: SystemGeometry) -> np.ndarray:
    """Chamber position (m) of the sample-frame origin for stage ``(x, y, z)`` (m), tilt ``t``
    (rad); ``z0`` is the stage z putting the nominal surface on the tilt axis."""
    return stage_axes(t, geom) @ np.array([x, y, z - z0])


def beam_axes(beam: str, geom: SystemGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors of a beam's image: (right, up, towards the source), chamber frame."""
    b = geom.column_tilt(beam)
    right = np.array([1.0, 0.0, 0.0])
    up = np.array([0.0, math.cos(b), math.sin(b)])
    source = np.array([0.0, -math.sin(b), math.cos(b)])
    return right, up, source


def _is_near(a: float, b: float, tol: float = _ANGLE_TOL) -> bool:
    d = (a - b + math.pi) % (2 * math.pi) - math.pi
    return abs(d) < tol


def _signed_pretilt(r: float, geom: SystemGeometry) -> float:
    """Pre-tilt seen from the tilt axis: +P at the reference rotation, -P at 180 degrees."""
    return -geom.shuttle_pre_tilt if _is_near(r, geom.rotation_180) else geom.shuttle_pre_tilt


def rotate_image_vector(dx: float, dy: float, scan_rotation: float) -> tuple[float, float]:
    """Express a displacement seen in a scan-rotated image in the unrotated image frame."""
    c, s = math.cos(scan_rotation), math.sin(scan_rotation)
    return c * dx - s * dy, s * dx + c * dy


def stable_move_delta(
    dx: float, dy: float, beam: str, r: float, t: float, geom: SystemGeometry,
    scan_rotation: float = 0.0,
) -> tuple[float, float, float]:
    """Stage (dx, dy, dz) that moves the sample by (dx, dy) in ``beam``'s image.

    The move stays in the (pre-tilted) sample plane, so coincidence is kept. Derived from
    the chamber map: an in-plane move of ``s`` along the sample's y appears as
    ``s cos(t - P' - view_tilt)`` in the image (``P'`` the signed pre-tilt), so
    ``s = dy / cos(t - P' - view_tilt)`` and the stage moves ``(dx, s cos P', -s sin P')``.
    """
    dx, dy = rotate_image_vector(dx, dy, scan_rotation)
    p = _signed_pretilt(r, geom) + geom.electron_column_tilt
    view = geom.column_tilt(beam)
    phi = t - p - view
    c = math.cos(phi)
    if abs(c) < 1e-3:
        raise ValueError(
            f"stable move in the {beam} view is undefined at tilt {math.degrees(t):.1f} deg: "
            "the sample plane is edge-on to that beam"
        )
    s = dy / c
    if geom.stage_type == "shuttle":
        return dx, s * math.cos(p), -s * math.sin(p)
    # the in-plane y line runs along (0, cos(t - P'), sin(t - P')) in the chamber
    d = np.linalg.solve(_stage_axes_checked(t, geom),
                        [dx, s * math.cos(t - p), s * math.sin(t - p)])
    return float(d[0]), float(d[1]), float(d[2])


def _stage_axes_checked(t: float, geom: SystemGeometry) -> np.ndarray:
    m = stage_axes(t, geom)
    if abs(np.linalg.det(m)) < 1e-3:
        raise ValueError(
            f"{geom.stage_type} stage axes are degenerate at tilt {math.degrees(t):.1f} deg "
            "(y parallel to z)"
        )
    return m


def vertical_move_delta(
    dy: float, t: float, geom: SystemGeometry, dx: float = 0.0, scan_rotation: float = 0.0,
) -> tuple[float, float, float]:
    """Stage (dx, dy, dz) that moves the sample chamber-vertically so that it shifts by
    ``dy`` in the ion image (and not at all in the electron image).

    Exact form: a chamber-vertical move ``m`` shifts the ion image by ``m sin(ion tilt)``, so
    ``m = dy / sin(ion tilt)``; in the tilted stage axes it is ``(0, m sin t, m cos t)``.
    """
    dx, dy = rotate_image_vector(dx, dy, scan_rotation)
    m = dy / math.sin(geom.ion_column_tilt)
    if geom.stage_type == "tescan":
        # a pure z move: TESCAN's z is chamber-vertical, pointing down
        return dx, 0.0, -m
    return dx, m * math.sin(t), m * math.cos(t)


def manipulator_corrected_delta(
    dx: float, dy: float, beam: str, geom: SystemGeometry, scan_rotation: float = 0.0,
) -> tuple[float, float, float]:
    """Chamber-frame (RAW) move of the manipulator tip that shifts it by (dx, dy) in ``beam``'s
    image (OpenFIBSEM's corrected movement, exact form; the needle is not on the stage, so
    the stage pose does not enter).

    Electron: ``dx`` along the chamber x, ``dy`` along the electron image's up (chamber y).
    Ion: ``dx`` along x, and ``dy`` along the electron beam axis (chamber z), which the
    electron image does not see: ``dz = dy / sin(ion tilt - electron tilt)`` moves the tip
    vertically in the ion image only (towards the sample for ``dy < 0``).
    """
    dx, dy = rotate_image_vector(dx, dy, scan_rotation)
    e_right, e_up, e_src = beam_axes(ELECTRON, geom)
    if beam == ELECTRON:
        d = dx * e_right + dy * e_up
    elif beam == ION:
        i_right, i_up, _ = beam_axes(ION, geom)
        k = float(i_up @ e_src)
        if abs(k) < 1e-6:
            raise ValueError("corrected ion move undefined: the columns are parallel")
        d = dx * i_right + (dy / k) * e_src
    else:
        raise ValueError(f"unknown beam {beam!r}; expected 'electron' or 'ion'")
    return float(d[0]), float(d[1]), float(d[2])


def flat_to_beam(beam: str, geom: SystemGeometry) -> tuple[float, float]:
    """Stage (r, t) that puts the pre-tilted sample surface perpendicular to ``beam``.

    The compustage has no rotation: it reaches the ion beam by tilting 180 degrees further
    (the ion beam then faces the grid's other side)."""
    if geom.stage_type == "compustage":
        if beam == ION:
            return geom.rotation_reference, geom.ion_column_tilt - geom.shuttle_pre_tilt - math.pi
        return geom.rotation_reference, geom.shuttle_pre_tilt + geom.electron_column_tilt
    if beam == ION:
        return geom.rotation_180, geom.ion_column_tilt - geom.shuttle_pre_tilt
    return geom.rotation_reference, geom.shuttle_pre_tilt + geom.electron_column_tilt


def milling_tilt(angle: float, geom: SystemGeometry) -> float:
    """Stage tilt giving ion-beam-to-surface ``angle`` at the reference rotation."""
    return angle + geom.ion_column_tilt + geom.shuttle_pre_tilt - math.pi / 2


def milling_angle(t: float, geom: SystemGeometry) -> float:
    """Ion-beam-to-surface angle at the reference rotation for stage tilt ``t``."""
    if geom.stage_type == "compustage" and t < -math.pi / 2:
        # past -90 deg the compustage faces the ion beam from the grid's back side
        t += math.pi
    return math.pi / 2 - geom.ion_column_tilt + t - geom.shuttle_pre_tilt


def orientation_name(r: float, t: float, geom: SystemGeometry) -> str:
    """OpenFIBSEM orientation of a pose: "SEM", "FIB", "MILLING" or "UNKNOWN"."""
    tol_t = 0.1
    r_sem, t_sem = flat_to_beam(ELECTRON, geom)
    r_fib, t_fib = flat_to_beam(ION, geom)
    if _is_near(r, r_sem) and abs(t - t_sem) < tol_t:
        return "SEM"
    if _is_near(r, r_fib) and abs(t - t_fib) < tol_t:
        return "FIB"
    if _is_near(r, r_sem) and t > -math.pi / 4:
        return "MILLING"
    return "UNKNOWN"


def pixel_to_image(col, row, shape: tuple[int, int], pixel_size: float):
    """Pixel (col, row) -> image metres (+x right, +y up, origin at the image centre).

    ``shape`` is (height, width); the centre is (W/2, H/2) in pixel-edge coordinates, so pixel
    centres sit at half-integers shifted by 0.5.
    """
    h, w = shape
    x = (np.asarray(col, dtype=float) + 0.5 - w / 2) * pixel_size
    y = (h / 2 - (np.asarray(row, dtype=float) + 0.5)) * pixel_size
    return x, y


def image_to_pixel(x, y, shape: tuple[int, int], pixel_size: float):
    """Image metres -> pixel (col, row); inverse of :func:`pixel_to_image`."""
    h, w = shape
    col = w / 2 + np.asarray(x, dtype=float) / pixel_size - 0.5
    row = h / 2 - np.asarray(y, dtype=float) / pixel_size - 0.5
    return col, row
