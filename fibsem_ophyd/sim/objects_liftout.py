"""Lift-out objects of the simulated microscope: lamellae, landing posts, a copper adaptor and
a volume block (the lifted chunk), with the classes OpenFIBSEM's segmentation names.

Each object is a rectangular :class:`Block` of one material. Blocks that belong to the sample
(a lamella, the posts of a landing grid, a volume block before lift-out) live in the sample
frame and move with the stage; blocks attached to the manipulator (the copper adaptor, a
lifted volume block) live in the chamber frame relative to the needle tip and move with it.
A lamella also mills its two trenches into the scene (a :class:`~fibsem_ophyd.sim.scene.
HeightPatch`), so the renderer shows them with parallax and occlusion like any relief.

Blocks are drawn over each rendered frame like the needle (:mod:`~fibsem_ophyd.sim.manipulator`):
orthographic projection with the frame's :class:`~fibsem_ophyd.sim.render.BeamView`; a pixel
sees a block where its projected silhouette (the convex hull of its eight projected corners)
covers the pixel centre; the face a line of sight enters through sets the yield by the sec law
of the material; edges are anti-aliased by the distance to the silhouette and blurred like the
frame. Order of drawing, which is also the occlusion of the class mask
(:mod:`fibsem_ophyd.sim.masks`): sample blocks (the one nearer the source last), the needle,
then the needle's blocks. Not modelled: occlusion of a block by the sample's relief, shadows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..geometry import image_to_pixel, pixel_to_image
from .materials import MATERIAL_IDS
from .render import gaussian_blur
from .scene import HeightPatch

__all__ = ["CLASS_NAMES", "CLASS_IDS", "Block", "LiftoutObjects", "convex_hull",
           "polygon_signed_distance"]

#: segmentation classes, OpenFIBSEM's ``segmentation_config.yaml`` order
CLASS_NAMES = ("background", "lamella", "manipulator", "landing_post", "copper_adaptor",
               "volume_block")
CLASS_IDS = {n: i for i, n in enumerate(CLASS_NAMES)}
_SEC_CAP = 8.0
#: node spacing (m) of a lamella's trench patch
_TRENCH_SPACING = 0.25e-6


def _rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Block:
    """A rectangular block of one material.

    Attributes
    ----------
    label : str
        Its class, one of :data:`CLASS_NAMES` (not "background").
    centre : tuple of float
        Centre (m): sample frame, or for ``attached`` blocks the chamber-frame offset from
        the needle tip.
    half : tuple of float
        Half extents (m) along the block's own axes.
    rotation : ndarray
        3x3, block axes -> its frame.
    material : str
        A :data:`~fibsem_ophyd.sim.materials.MATERIAL_IDS` name.
    attached : bool
        Carried by the manipulator (drawn only while it is inserted).
    name : str
        Identifier (e.g. "lamella-0").
    """

    label: str
    centre: tuple[float, float, float]
    half: tuple[float, float, float]
    material: str
    attached: bool = False
    name: str = ""
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        if self.label not in CLASS_IDS or self.label == "background":
            raise ValueError(f"block label must be one of {list(CLASS_NAMES[1:])}, "
                             f"got {self.label!r}")
        if self.material not in MATERIAL_IDS:
            raise ValueError(f"unknown material {self.material!r}; known: {list(MATERIAL_IDS)}")
        if len(self.half) != 3 or min(self.half) <= 0:
            raise ValueError(f"block half extents must be three values > 0 m, got {self.half}")

    def corners(self) -> np.ndarray:
        """The eight corners (8, 3), m, in the block's frame."""
        sg = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], float)
        return (sg * np.asarray(self.half)) @ np.asarray(self.rotation).T + np.asarray(self.centre)


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Counter-clockwise (in x right, y down pixel axes: clockwise on screen) convex hull of
    2-D points (n, 2), monotone chain; returns (m, 2) vertices."""
    pts = sorted(map(tuple, np.asarray(points, dtype=float)))
    if len(pts) <= 2:
        return np.array(pts)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def polygon_signed_distance(hull: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance (same units as ``hull``) of points from a convex polygon's boundary:
    negative inside (exact), positive outside (the largest edge-line distance, a lower
    bound of the true distance that is exact near an edge)."""
    out = np.full(np.shape(x), -np.inf)
    n = len(hull)
    for k in range(n):
        a, b = hull[k], hull[(k + 1) % n]
        e = b - a
        ln = math.hypot(*e)
        if ln == 0:
            continue
        # hull is counter-clockwise in (x, y): the outward normal is (e_y, -e_x)
        nx, ny = e[1] / ln, -e[0] / ln
        np.maximum(out, (x - a[0]) * nx + (y - a[1]) * ny, out=out)
    return out


class LiftoutObjects:
    """The lift-out blocks of a :class:`~fibsem_ophyd.sim.SimulatedMicroscope`
    (``sim.liftout``), on its ``scene`` (whose height offset ``offset()`` gives, m) and
    carried by its ``needle``."""

    def __init__(self, scene, offset, needle):
        self._scene = scene
        self._offset = offset           # callable: the sample's height offset now (m)
        self._needle = needle
        self.blocks: list[Block] = []
        #: bumped on every change (part of the render cache key)
        self.version = 0

    def key(self) -> int:
        return self.version

    # ------------------------------------------------------------------ building the scene
    def add(self, block: Block) -> Block:
        """Add ``block`` (drawn from the next frame on)."""
        if not isinstance(block, Block):
            raise TypeError(f"expected a Block, got {type(block).__name__}")
        self.blocks.append(block)
        self.version += 1
        return block

    def remove(self, name: str) -> None:
        """Remove the blocks named ``name``."""
        if not any(b.name == name for b in self.blocks):
            raise ValueError(f"no block named {name!r}; blocks: {[b.name for b in self.blocks]}")
        self.blocks = [b for b in self.blocks if b.name != name]
        self.version += 1

    def clear(self) -> None:
        self.blocks = []
        self.version += 1

    def _surface(self, x: float, y: float) -> float:
        return self._offset() + float(self._scene.height(np.array([x]), np.array([y]))[0])

    def add_lamella(self, sample_xy, width: float = 15e-6, depth: float = 6e-6,
                    thickness: float = 2e-6, trench: float = 8e-6, angle: float = 0.0,
                    material: str = "organic", name: str | None = None) -> Block:
        """A lamella at sample ``(x, y)`` (m): a slab ``width`` x ``thickness`` x ``depth``
        (m) whose top is the surface there, between two trenches ``trench`` (m) long and
        ``depth + 1 um`` deep milled on either side (along the slab's normal); ``angle``
        (deg) turns it about the sample normal."""
        x, y = float(sample_xy[0]), float(sample_xy[1])
        for nm, v in (("width", width), ("depth", depth), ("thickness", thickness),
                      ("trench", trench)):
            if not (math.isfinite(v) and 0 < v <= 200e-6):
                raise ValueError(f"lamella {nm} must be in (0, 200e-6] m, got {v!r}")
        top = self._surface(x, y)
        rot = _rot_z(angle)
        # trenches: a rectangle of width x (thickness + 2 trench) minus the slab
        span = 0.5 * thickness + trench
        reach = math.hypot(0.5 * width, span) + 2 * _TRENCH_SPACING
        xs = np.arange(x - reach, x + reach + _TRENCH_SPACING, _TRENCH_SPACING)
        ys = np.arange(y - reach, y + reach + _TRENCH_SPACING, _TRENCH_SPACING)
        gx, gy = np.meshgrid(xs - x, ys - y)
        lu = gx * rot[0, 0] + gy * rot[1, 0]          # coordinates along the slab's axes
        lv = gx * rot[0, 1] + gy * rot[1, 1]
        inside = (np.abs(lu) <= 0.5 * width) & (np.abs(lv) <= span) \
            & (np.abs(lv) >= 0.5 * thickness)
        dh = np.where(inside, -(depth + 1e-6), 0.0)
        self._scene.add_patch(HeightPatch(x0=float(xs[0]), y0=float(ys[0]),
                                              spacing=_TRENCH_SPACING, dh=dh))
        n = sum(b.label == "lamella" for b in self.blocks)
        return self.add(Block("lamella", (x, y, top - 0.5 * depth),
                              (0.5 * width, 0.5 * thickness, 0.5 * depth), material,
                              name=name or f"lamella-{n}", rotation=rot))

    def add_landing_grid(self, sample_xy, posts: int = 3, pitch: float = 60e-6,
                         post_width: float = 25e-6, post_height: float = 40e-6,
                         post_thickness: float = 15e-6, material: str = "Cu") -> list[Block]:
        """A row of ``posts`` landing posts along sample x centred at ``sample_xy`` (m), each
        ``post_width`` x ``post_thickness`` standing ``post_height`` (m) above the surface."""
        x, y = float(sample_xy[0]), float(sample_xy[1])
        if not (isinstance(posts, int) and 1 <= posts <= 20):
            raise ValueError(f"posts must be an integer in [1, 20], got {posts!r}")
        out = []
        for k in range(posts):
            px = x + (k - 0.5 * (posts - 1)) * pitch
            top = self._surface(px, y)
            out.append(self.add(Block("landing_post", (px, y, top + 0.5 * post_height),
                                      (0.5 * post_width, 0.5 * post_thickness,
                                       0.5 * post_height), material, name=f"post-{k}")))
        return out

    def add_volume_block(self, sample_xy, size=(20e-6, 10e-6, 8e-6), attached: bool = False,
                         material: str = "organic", name: str = "volume-block") -> Block:
        """A volume block (lift-out chunk) of ``size`` (x, y, z m): on the sample at
        ``sample_xy`` (its top at the surface), or ``attached`` with its centre at
        ``sample_xy`` = chamber (dx, dz) from the needle tip (touching the tip)."""
        half = tuple(0.5 * float(v) for v in size)
        if attached:
            dx, dz = float(sample_xy[0]), float(sample_xy[1])
            return self.add(Block("volume_block", (dx, 0.0, dz), half, material, True, name))
        x, y = float(sample_xy[0]), float(sample_xy[1])
        top = self._surface(x, y)
        return self.add(Block("volume_block", (x, y, top - half[2]), half, material, False,
                              name))

    def attach_adaptor(self, size=(12e-6, 6e-6, 6e-6), material: str = "Cu",
                       name: str = "copper-adaptor") -> Block:
        """A copper adaptor on the needle: a block of ``size`` (chamber x, y, z m) whose left
        end sits on the needle tip, reaching along the needle."""
        half = tuple(0.5 * float(v) for v in size)
        return self.add(Block("copper_adaptor", (half[0] - 1e-6, 0.0, 0.0), half, material,
                              True, name))

    # ------------------------------------------------------------------ projection
    def _chamber_corners(self, block: Block, view) -> np.ndarray:
        c = block.corners()
        if block.attached:
            return c + self._needle.tip()
        return view.sample_to_chamber(c)

    def _visible(self, attached: bool) -> list[Block]:
        if attached and not self._needle.inserted:
            return []
        return [b for b in self.blocks if b.attached == attached]

    def silhouette(self, block: Block, view) -> np.ndarray:
        """Pixel (col, row) vertices (m, 2) of ``block``'s projected silhouette in ``view``."""
        q = self._chamber_corners(block, view)
        u, v = view.qperp_to_image(q @ view.right, q @ view.up)
        col, row = image_to_pixel(u, v, (view.height, view.width), view.pixel)
        return convex_hull(np.column_stack([col, row]))

    def _ordered(self, view, attached: bool) -> list[tuple[Block, np.ndarray]]:
        """Visible blocks with their chamber corners, farthest from the source first."""
        out = []
        for b in self._visible(attached):
            q = self._chamber_corners(b, view)
            out.append((float(q.mean(axis=0) @ view.source), b, q))
        out.sort(key=lambda t: t[0])
        return [(b, q) for _, b, q in out]

    def _footprint(self, q: np.ndarray, view, shape, margin: int):
        """Pixel box, pixel-centre grids and signed silhouette distance (px) of corners ``q``."""
        H, W = shape
        u, v = view.qperp_to_image(q @ view.right, q @ view.up)
        col, row = image_to_pixel(u, v, (H, W), view.pixel)
        hull = convex_hull(np.column_stack([col, row]))
        c0 = max(0, int(math.floor(col.min())) - margin)
        c1 = min(W, int(math.ceil(col.max())) + margin + 1)
        r0 = max(0, int(math.floor(row.min())) - margin)
        r1 = min(H, int(math.ceil(row.max())) + margin + 1)
        if c0 >= c1 or r0 >= r1 or len(hull) < 3:
            return None
        cc, rr = np.meshgrid(np.arange(c0, c1, dtype=np.float64),
                             np.arange(r0, r1, dtype=np.float64))
        return (r0, r1, c0, c1), cc, rr, polygon_signed_distance(hull, cc, rr)

    def _face_cos(self, block: Block, view, cc, rr, shape) -> np.ndarray:
        """cos of the incidence on the face each pixel's line of sight enters ``block``
        through (slab method along the ray from the source)."""
        H, W = shape
        u, v = pixel_to_image(cc, rr, (H, W), view.pixel)
        a1, a2 = view.image_to_qperp(u, v)
        o = a1[..., None] * view.right + a2[..., None] * view.up        # chamber, lambda = 0
        d = np.asarray(view.source, dtype=float)
        if block.attached:
            o = o - self._needle.tip()
        else:
            o = view.chamber_to_sample(o)
            d = d @ view.rotation
        rot = np.asarray(block.rotation)
        lo = (o - np.asarray(block.centre)) @ rot           # block axes
        ld = d @ rot
        half = np.asarray(block.half)
        far = np.full(lo.shape[:-1], np.inf)
        face = np.zeros(lo.shape[:-1], dtype=np.intp)
        for k in range(3):
            if abs(ld[k]) < 1e-12:
                continue
            t_exit = np.maximum((-half[k] - lo[..., k]) / ld[k], (half[k] - lo[..., k]) / ld[k])
            nearer = t_exit < far
            far = np.where(nearer, t_exit, far)
            face = np.where(nearer, k, face)
        return np.abs(ld)[face]

    # ------------------------------------------------------------------ drawing
    def composite(self, img: np.ndarray, view, shading, optics, attached: bool) -> np.ndarray:
        """``img`` (a clean yield image of ``view``) with the sample's blocks
        (``attached=False``) or the needle's (``attached=True``) drawn over it."""
        blocks = self._ordered(view, attached)
        if not blocks:
            return img
        out = img
        margin = int(math.ceil(3 * optics.max_sigma)) + 2
        for b, q in blocks:
            fp = self._footprint(q, view, img.shape, margin)
            if fp is None:
                continue
            (r0, r1, c0, c1), cc, rr, sd = fp
            cover = np.clip(0.5 - sd, 0.0, 1.0).astype(np.float32)
            if not cover.any():
                continue
            cos_i = self._face_cos(b, view, cc, rr, img.shape)
            sec = np.minimum(1.0 / np.maximum(cos_i, 1.0 / _SEC_CAP), _SEC_CAP)
            mid = MATERIAL_IDS[b.material]
            yld = (shading.base[mid] * sec ** shading.exponent[mid]).astype(np.float32)
            layer = cover * yld
            if optics.max_sigma >= 0.5:
                cov = optics.covariance()
                cover = gaussian_blur(cover, cov)
                layer = gaussian_blur(layer, cov)
            if out is img:
                out = img.copy()
            box = out[r0:r1, c0:c1]
            out[r0:r1, c0:c1] = box * (1.0 - cover) + layer
        return out

    def paint_labels(self, labels: np.ndarray, view, attached: bool) -> None:
        """Write the class id of each visible block into ``labels`` (H, W) where its
        silhouette covers the pixel centre, in drawing order."""
        for b, q in self._ordered(view, attached):
            fp = self._footprint(q, view, labels.shape, 0)
            if fp is None:
                continue
            (r0, r1, c0, c1), _, _, sd = fp
            labels[r0:r1, c0:c1][sd < 0] = CLASS_IDS[b.label]
