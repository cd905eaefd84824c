"""Features found in a class mask, with OpenFIBSEM's names and shapes.

A feature's ``px`` is a pixel :class:`Point` (x right, y down, origin at the top-left pixel
centre); ``feature_m`` the same point in metres from the image centre ``(W // 2, H // 2)`` with
+y up (OpenFIBSEM's microscope image coordinates).

Rules, and where they deliberately differ from OpenFIBSEM's ``fibsem.detection``:

- objects are 8-connected components of one class (OpenFIBSEM fills each contour's bounding
  box first; a component keeps the object's true outline, so an edge is where the object is,
  not where its box is); components under ``min_pixels`` are noise and ignored;
- ``NeedleTip``: in the largest manipulator component, the pixel farthest from where the
  component enters the frame (the mean of its pixels on the frame border), refined as the
  median of the pixels within 1.5 px of that distance. OpenFIBSEM takes the right-most pixel,
  which is the tip only for a needle entering from the left; ours works from any side. A
  component not touching the border falls back to OpenFIBSEM's right-most rule;
- ``LamellaCentre``: the centre of the bounding box of the lamella component closest to
  ``point`` (default the image centre), as OpenFIBSEM; ``LamellaLeft/RightEdge`` are the
  component's ends on the row of that centre and ``LamellaTop/BottomEdge`` on its column
  (OpenFIBSEM uses the mean row/column; for the centrally symmetric outline of a projected slab
  they coincide, and ours stays on the object when it is partly hidden);
- ``LandingPost``: the landing-post pixel nearest ``point`` (default the image centre), over
  the whole frame (OpenFIBSEM looks only at the central ~20 % of columns);
- ``CopperAdapterCentre`` / ``VolumeBlockCentre``: centroid of the largest component;
  ``...TopEdge`` / ``...BottomEdge``: the median column of its top / bottom row; the volume
  block's corners: those of its bounding box;
- a feature whose class is absent has ``px = None`` (OpenFIBSEM returns (0, 0) for a needle
  and the image centre for a lamella, indistinguishable from a detection); using it in a
  distance raises an error naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from scipy import ndimage

from ._model import CLASS_NAMES, check_image, decode_segmap

__all__ = [
    "Point", "Feature", "DetectedFeatures", "FEATURES", "get_feature", "detect_features",
    "detect_features_in_mask", "get_objects", "ImageCentre", "NeedleTip", "NeedleTipBottom",
    "LamellaCentre", "LamellaLeftEdge", "LamellaRightEdge", "LamellaTopEdge",
    "LamellaBottomEdge", "LandingPost", "CopperAdapterCentre", "CopperAdapterTopEdge",
    "CopperAdapterBottomEdge", "VolumeBlockCentre", "VolumeBlockTopEdge",
    "VolumeBlockBottomEdge", "VolumeBlockTopLeftCorner", "VolumeBlockTopRightCorner",
    "VolumeBlockBottomLeftCorner", "VolumeBlockBottomRightCorner",
]

#: components smaller than this (px) are ignored
MIN_PIXELS = 50
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class Point:
    """A 2-D point: pixels (x right, y down) or metres (x right, y up), as the context says."""

    x: float = 0.0
    y: float = 0.0

    def to_dict(self) -> dict:
        return {"x": float(self.x), "y": float(self.y)}

    def distance(self, other: Point) -> Point:
        """``other - self``."""
        return Point(other.x - self.x, other.y - self.y)

    def euclidean(self, other: Point) -> float:
        return float(np.hypot(other.x - self.x, other.y - self.y))


def _components(mask: np.ndarray, class_id: int, min_pixels: int) -> list[np.ndarray]:
    """(N, 2) (row, col) pixel arrays of the class's components, largest first."""
    sel = mask == class_id
    if not sel.any():
        return []
    lab, n = ndimage.label(sel, structure=_EIGHT)
    if n == 0:
        return []
    sizes = np.bincount(lab.ravel())
    rows, cols = np.nonzero(lab)
    ids = lab[rows, cols]
    order = np.argsort(ids, kind="stable")
    rows, cols, ids = rows[order], cols[order], ids[order]
    starts = np.searchsorted(ids, np.arange(1, n + 1))
    ends = np.append(starts[1:], len(ids))
    out = [np.column_stack([rows[a:b], cols[a:b]]) for a, b in zip(starts, ends, strict=True)
           if sizes[ids[a]] >= min_pixels and b > a]
    out.sort(key=len, reverse=True)
    return out


def _bbox_centre(pix: np.ndarray) -> tuple[float, float]:
    return (float(0.5 * (pix[:, 1].min() + pix[:, 1].max())),
            float(0.5 * (pix[:, 0].min() + pix[:, 0].max())))


@dataclass
class Feature:
    """Base of the features (module docstring for the rules)."""

    px: Point | None = None
    feature_m: Point | None = None
    name: ClassVar[str] = "Feature"
    class_id: ClassVar[int | None] = None
    color: ClassVar[str] = "white"
    min_pixels: ClassVar[int] = MIN_PIXELS

    def detect(self, image: np.ndarray, mask: np.ndarray | None = None,
               point: Point | None = None) -> Feature:
        """Locate the feature in ``mask`` (class indices, shape of ``image``); sets ``px``
        (``None`` if absent) and returns ``self``."""
        raise NotImplementedError

    @property
    def detected(self) -> bool:
        return self.px is not None

    def to_dict(self) -> dict:
        return {"name": self.name,
                "px": self.px.to_dict() if self.px is not None else None,
                "feature_m": self.feature_m.to_dict() if self.feature_m is not None else None}

    def _comps(self, mask):
        if mask is None:
            raise ValueError(f"{self.name} needs a class mask")
        return _components(np.asarray(mask), int(self.class_id), self.min_pixels)


@dataclass
class ImageCentre(Feature):
    name: ClassVar[str] = "ImageCentre"
    color: ClassVar[str] = "white"

    def detect(self, image, mask=None, point=None):
        h, w = np.shape(image)[:2]
        self.px = Point(float(w // 2), float(h // 2))
        return self


def _needle_tip(pix: np.ndarray, shape, bottom: bool) -> Point:
    h, w = shape
    r, c = pix[:, 0], pix[:, 1]
    if bottom:
        far = r == r.max()
        return Point(float(np.median(c[far])), float(r.max()))
    edge = (r == 0) | (r == h - 1) | (c == 0) | (c == w - 1)
    if not edge.any():          # does not enter the frame: OpenFIBSEM's right-most rule
        far = c == c.max()
        return Point(float(c.max()), float(np.median(r[far])))
    br, bc = r[edge].mean(), c[edge].mean()
    d = np.hypot(r - br, c - bc)
    near = d >= d.max() - 1.5
    return Point(float(np.median(c[near])), float(np.median(r[near])))


@dataclass
class NeedleTip(Feature):
    name: ClassVar[str] = "NeedleTip"
    class_id: ClassVar[int] = 2
    color: ClassVar[str] = "green"

    def detect(self, image, mask=None, point=None):
        comps = self._comps(mask)
        self.px = _needle_tip(comps[0], np.shape(mask), bottom=False) if comps else None
        return self


@dataclass
class NeedleTipBottom(Feature):
    name: ClassVar[str] = "NeedleTipBottom"
    class_id: ClassVar[int] = 2
    color: ClassVar[str] = "green"

    def detect(self, image, mask=None, point=None):
        comps = self._comps(mask)
        self.px = _needle_tip(comps[0], np.shape(mask), bottom=True) if comps else None
        return self


def _closest(comps, mask, point):
    h, w = np.shape(mask)
    p = point or Point(float(w // 2), float(h // 2))
    return min(comps, key=lambda pix: float(np.hypot(*np.subtract(_bbox_centre(pix),
                                                                    (p.x, p.y)))))


def _lamella_point(pix: np.ndarray, which: str) -> Point:
    cx, cy = _bbox_centre(pix)
    if which == "centre":
        return Point(cx, cy)
    r, c = pix[:, 0], pix[:, 1]
    if which in ("left", "right"):
        row = r == int(round(cy))
        if not row.any():
            row = np.abs(r - cy) == np.abs(r - cy).min()
        x = c[row].min() if which == "left" else c[row].max()
        return Point(float(x), cy)
    col = c == int(round(cx))
    if not col.any():
        col = np.abs(c - cx) == np.abs(c - cx).min()
    y = r[col].min() if which == "top" else r[col].max()
    return Point(cx, float(y))


class _LamellaFeature(Feature):
    class_id: ClassVar[int] = 1
    color: ClassVar[str] = "red"
    _which: ClassVar[str] = "centre"

    def detect(self, image, mask=None, point=None):
        comps = self._comps(mask)
        self.px = _lamella_point(_closest(comps, mask, point), self._which) if comps else None
        return self

    def detect_all(self, image, mask) -> list[Feature]:
        """One feature per lamella component (``filter=False``)."""
        return [type(self)(px=_lamella_point(pix, self._which)) for pix in self._comps(mask)]


@dataclass
class LamellaCentre(_LamellaFeature):
    name: ClassVar[str] = "LamellaCentre"
    _which: ClassVar[str] = "centre"


@dataclass
class LamellaLeftEdge(_LamellaFeature):
    name: ClassVar[str] = "LamellaLeftEdge"
    color: ClassVar[str] = "magenta"
    _which: ClassVar[str] = "left"


@dataclass
class LamellaRightEdge(_LamellaFeature):
    name: ClassVar[str] = "LamellaRightEdge"
    color: ClassVar[str] = "cyan"
    _which: ClassVar[str] = "right"


@dataclass
class LamellaTopEdge(_LamellaFeature):
    name: ClassVar[str] = "LamellaTopEdge"
    color: ClassVar[str] = "orange"
    _which: ClassVar[str] = "top"


@dataclass
class LamellaBottomEdge(_LamellaFeature):
    name: ClassVar[str] = "LamellaBottomEdge"
    color: ClassVar[str] = "yellow"
    _which: ClassVar[str] = "bottom"


@dataclass
class LandingPost(Feature):
    name: ClassVar[str] = "LandingPost"
    class_id: ClassVar[int] = 3
    color: ClassVar[str] = "cyan"

    def detect(self, image, mask=None, point=None):
        comps = self._comps(mask)
        if not comps:
            self.px = None
            return self
        h, w = np.shape(mask)
        p = point or Point(float(w // 2), float(h // 2))
        pix = np.concatenate(comps)
        k = int(np.argmin(np.hypot(pix[:, 1] - p.x, pix[:, 0] - p.y)))
        self.px = Point(float(pix[k, 1]), float(pix[k, 0]))
        return self


def _block_point(pix: np.ndarray, which: str) -> Point:
    r, c = pix[:, 0], pix[:, 1]
    if which == "centre":
        return Point(float(c.mean()), float(r.mean()))
    if which in ("top", "bottom"):
        y = r.min() if which == "top" else r.max()
        return Point(float(np.median(c[r == y])), float(y))
    y = r.min() if "top" in which else r.max()
    x = c.min() if "left" in which else c.max()
    return Point(float(x), float(y))


class _LargestFeature(Feature):
    _which: ClassVar[str] = "centre"

    def detect(self, image, mask=None, point=None):
        comps = self._comps(mask)
        self.px = _block_point(comps[0], self._which) if comps else None
        return self


def _make(name: str, class_id: int, which: str, color: str) -> type[Feature]:
    cls = type(name, (_LargestFeature,), {"__annotations__": {}, "name": name,
                                          "class_id": class_id, "_which": which,
                                          "color": color, "__module__": __name__})
    return dataclass(cls)


CopperAdapterCentre = _make("CopperAdapterCentre", 4, "centre", "yellow")
CopperAdapterTopEdge = _make("CopperAdapterTopEdge", 4, "top", "yellow")
CopperAdapterBottomEdge = _make("CopperAdapterBottomEdge", 4, "bottom", "yellow")
VolumeBlockCentre = _make("VolumeBlockCentre", 5, "centre", "magenta")
VolumeBlockTopEdge = _make("VolumeBlockTopEdge", 5, "top", "magenta")
VolumeBlockBottomEdge = _make("VolumeBlockBottomEdge", 5, "bottom", "magenta")
VolumeBlockTopLeftCorner = _make("VolumeBlockTopLeftCorner", 5, "top-left", "magenta")
VolumeBlockTopRightCorner = _make("VolumeBlockTopRightCorner", 5, "top-right", "magenta")
VolumeBlockBottomLeftCorner = _make("VolumeBlockBottomLeftCorner", 5, "bottom-left", "magenta")
VolumeBlockBottomRightCorner = _make("VolumeBlockBottomRightCorner", 5, "bottom-right",
                                     "magenta")

#: feature name -> class
FEATURES: dict[str, type[Feature]] = {c.name: c for c in (
    ImageCentre, NeedleTip, NeedleTipBottom, LamellaCentre, LamellaLeftEdge, LamellaRightEdge,
    LamellaTopEdge, LamellaBottomEdge, LandingPost, CopperAdapterCentre, CopperAdapterTopEdge,
    CopperAdapterBottomEdge, VolumeBlockCentre, VolumeBlockTopEdge, VolumeBlockBottomEdge,
    VolumeBlockTopLeftCorner, VolumeBlockTopRightCorner, VolumeBlockBottomLeftCorner,
    VolumeBlockBottomRightCorner)}


def get_feature(name) -> Feature:
    """A new feature instance from its name (or a copy of an instance's kind)."""
    if isinstance(name, Feature):
        return type(name)()
    if isinstance(name, type) and issubclass(name, Feature) and name.name in FEATURES:
        return name()
    if not isinstance(name, str) or name not in FEATURES:
        raise ValueError(f"unknown feature {name!r}; known features: {sorted(FEATURES)}")
    return FEATURES[name]()


def check_keypoint(feature: str, x, y) -> tuple[str, float, float]:
    """A keypoint correction checked: a known feature name and finite pixel coordinates
    (x right, y down); ``ValueError`` naming the bad value otherwise."""
    if not isinstance(feature, str) or feature not in FEATURES:
        raise ValueError(f"unknown feature {feature!r}; known features: {sorted(FEATURES)}")
    for nm, v in (("x", x), ("y", y)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer,
                                                                   np.floating)) \
                or not math.isfinite(float(v)):
            raise ValueError(f"{nm} must be a finite pixel coordinate, got {v!r}")
    return feature, float(x), float(y)


@dataclass
class DetectedFeatures:
    """What :func:`detect_features` found.

    Attributes
    ----------
    features : list of Feature
    image : ndarray
        The uint8 frame.
    mask : ndarray
        uint8 class mask (H, W).
    rgb : ndarray
        The mask in colour (H, W, 3).
    pixelsize : float
        m per pixel.
    checkpoint : str or None
        The model's file name.
    """

    features: list[Feature]
    image: np.ndarray
    mask: np.ndarray
    rgb: np.ndarray
    pixelsize: float
    checkpoint: str | None = None
    offset: Point = field(default_factory=Point)

    @property
    def distance(self) -> Point:
        """Second feature minus first, metres in microscope image coordinates (+x right,
        +y up), plus ``offset`` (OpenFIBSEM scales the pixel difference, whose y points
        down; here both axes follow the microscope image)."""
        if len(self.features) < 2:
            raise ValueError(f"distance needs two features, got {len(self.features)}")
        a, b = self.features[0], self.features[1]
        for f in (a, b):
            if f.feature_m is None:
                raise ValueError(f"{f.name} was not detected: no distance")
        return Point(b.feature_m.x - a.feature_m.x + self.offset.x,
                     b.feature_m.y - a.feature_m.y + self.offset.y)

    def get_feature(self, ftype) -> Feature | None:
        """The first feature of that name (or kind)."""
        name = ftype if isinstance(ftype, str) else ftype.name
        return next((f for f in self.features if f.name == name), None)

    def to_dict(self) -> dict:
        return {"features": [f.to_dict() for f in self.features],
                "pixelsize": float(self.pixelsize), "offset": self.offset.to_dict(),
                "checkpoint": self.checkpoint}


def _to_metres(px: Point, shape, pixelsize: float) -> Point:
    h, w = shape
    return Point((px.x - w // 2) * pixelsize, (h // 2 - px.y) * pixelsize)


def _resolve(features) -> list[Feature]:
    if isinstance(features, (str, Feature)) or (isinstance(features, type)):
        features = [features]
    out = [get_feature(f) for f in features]
    if not out:
        raise ValueError("no features asked for")
    return out


def detect_features_in_mask(image, mask, features, pixelsize: float, filter: bool = True,
                            point: Point | None = None, num_classes: int | None = None,
                            checkpoint: str | None = None) -> DetectedFeatures:
    """:func:`detect_features` on a given class ``mask`` (e.g. a corrected one)."""
    img = check_image(image)
    m = np.asarray(mask)
    if m.shape != img.shape:
        raise ValueError(f"mask shape {m.shape} differs from the image's {img.shape}")
    if not (isinstance(pixelsize, (int, float)) and np.isfinite(pixelsize) and pixelsize > 0):
        raise ValueError(f"pixelsize must be > 0 m, got {pixelsize!r}")
    feats = _resolve(features)
    if num_classes is not None:
        for f in feats:
            if f.class_id is not None and f.class_id >= num_classes:
                raise ValueError(
                    f"the model {checkpoint or ''} has {num_classes} classes; feature "
                    f"{f.name} needs class {f.class_id} ({CLASS_NAMES[f.class_id]})")
    found: list[Feature] = []
    for f in feats:
        if not filter and isinstance(f, _LamellaFeature):
            found.extend(f.detect_all(img, m))
        else:
            found.append(f.detect(img, m, point))
    for f in found:
        if f.px is not None:
            f.feature_m = _to_metres(f.px, img.shape, float(pixelsize))
    return DetectedFeatures(found, img, m, decode_segmap(m), float(pixelsize), checkpoint)


def detect_features(image, model, features, pixelsize: float, filter: bool = True,
                    point: Point | None = None) -> DetectedFeatures:
    """Segment ``image`` with ``model`` and locate ``features`` in the mask.

    Parameters
    ----------
    image : ndarray
        uint8 (H, W) frame.
    model : SegmentationModel
        From :func:`~fibsem_ophyd.detection.load_model`.
    features : sequence of Feature or str
        Feature instances, classes or names (:data:`FEATURES`).
    pixelsize : float
        m per pixel of ``image``.
    filter : bool
        One lamella (the closest to ``point``); False: every lamella component.
    point : Point, optional
        Pixel reference for "closest" (default the image centre).

    Raises
    ------
    ValueError
        Unknown feature name, a feature whose class the model does not have, a bad image or
        pixel size.
    """
    img = check_image(image)
    feats = _resolve(features)
    n = getattr(model, "num_classes", None)
    if n is not None:
        for f in feats:
            if f.class_id is not None and f.class_id >= n:
                raise ValueError(
                    f"the model {getattr(model, 'checkpoint', '')} has {n} classes; feature "
                    f"{f.name} needs class {f.class_id} ({CLASS_NAMES[f.class_id]})")
    mask = model.inference(img, rgb=False)
    return detect_features_in_mask(img, mask, feats, pixelsize, filter, point, n,
                                   getattr(model, "checkpoint", None))


def get_objects(mask, ignore_classes=(0,), min_pixels: int = 100) -> list[dict]:
    """Instances in a class mask: per connected component a dict with ``class``,
    ``instance`` (1-based within its class), ``mask`` ((N, 2) row, col pixels), ``bbox``
    (``[(row0, col0), (row1, col1)]``, end exclusive, OpenFIBSEM's layout) and ``keypoints``
    (``centre``, ``left``, ``right``, ``top``, ``bottom``, ``top_left``, ``top_right``,
    ``bottom_left``, ``bottom_right`` as :class:`Point`, pixels). Components are 8-connected
    (OpenFIBSEM's ``measure.label`` default connectivity is the same)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (height, width), got shape {m.shape}")
    out = []
    for c in np.unique(m):
        if int(c) in tuple(ignore_classes):
            continue
        for k, pix in enumerate(_components(m, int(c), min_pixels), start=1):
            (r0, c0), (r1, c1) = pix.min(0), pix.max(0) + 1
            kp = {"centre": _lamella_point(pix, "centre"),
                  **{w: _lamella_point(pix, w) for w in ("left", "right", "top", "bottom")},
                  **{w.replace("-", "_"): _block_point(pix, w)
                     for w in ("top-left", "top-right", "bottom-left", "bottom-right")}}
            out.append({"class": int(c), "instance": k, "mask": pix,
                        "bbox": [(int(r0), int(c0)), (int(r1), int(c1))], "keypoints": kp})
    return out
