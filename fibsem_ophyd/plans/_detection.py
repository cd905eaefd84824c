"""Feature detection plans: segment a frame, locate OpenFIBSEM's features, store them.

One run per :func:`detect`: the frame (stream named after the beam, the detector's TIFF; or
a given frame stored as ``detection_image``), the class mask as an external TIFF array
(``detection_mask``, same layout as a frame) and one "detection" event with each feature's
pixel position (``<Feature>_x``, ``<Feature>_y`` px, NaN when not found) and its offset from
the image centre (``<Feature>_mx``, ``<Feature>_my`` m, +y up). The start document carries
``detection``: the features, the model file and the pixel size, which is how the data engine
(:func:`fibsem_ophyd.storage.detection_dataset`) finds these runs.

Supervised detection (``supervised=True``): after detecting, the plan pauses the RunEngine
(a checkpoint, then a pause). Correct a keypoint with :func:`correct_keypoint` (IPython, the
queue server's function execution, or the viewer) and resume; a "correction" event stores the
final position per feature (``<Feature>_x``/``_y`` px), ``<Feature>_dpx``/``_dpy`` (model minus
user, px), ``<Feature>_dmx``/``_dmy`` (the same in m) and ``<Feature>_correct`` (1: the user
kept the model's guess), beside the model's guess, as AutoLamella's data engine logs them.

Needle/lamella moves from a detection: :func:`move_based_on_detection`.
"""

import math
import threading
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from ..detection import (
    FEATURES,
    check_keypoint,
    detect_features_in_mask,
    get_feature,
    load_model,
)
from ._common import in_run, microscope_of, run_md

__all__ = ["detect", "correct_keypoint", "pending_corrections", "move_based_on_detection"]

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()
#: corrections entered while a supervised detection is paused: {feature: (x, y) px}
_CORRECTIONS: dict[str, tuple[float, float]] = {}


def correct_keypoint(feature: str, x: float, y: float) -> None:
    """Correct ``feature``'s position (pixel x right, y down) in the paused supervised
    detection; resume the RunEngine to store it."""
    feature, x, y = check_keypoint(feature, x, y)
    with _LOCK:
        _CORRECTIONS[feature] = (x, y)


def pending_corrections() -> dict[str, tuple[float, float]]:
    """The corrections entered so far for the paused detection."""
    with _LOCK:
        return dict(_CORRECTIONS)


def _model(model):
    """A loaded model from a path, None (the shipped model) or a model object (cached)."""
    if model is not None and not isinstance(model, (str, Path)):
        if not hasattr(model, "inference"):
            raise ValueError(f"model must be a path, None or a segmentation model, got {model!r}")
        return model
    key = str(model)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(model)
        return _MODELS[key]


def detect(
    detector: Readable,
    features: list[str] | None = None,
    model: str | None = None,
    image: Any = None,
    pixel_size: float | None = None,
    supervised: bool = False,
    point: list[float] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[dict]:
    """Acquire a frame (or take ``image``), segment it, locate ``features``, store all three.

    Parameters
    ----------
    detector : Readable
        Imaging detector (``microscope.sem`` / ``microscope.fib``): acquires the frame, or
        with ``image`` gives the stored frame's metadata.
    features : list of str
        OpenFIBSEM feature names (default NeedleTip, LamellaCentre).
    model : str, optional
        ONNX model file (OpenFIBSEM's plain export contract); default the shipped model.
    image : array, optional
        A uint8 (H, W) frame to detect on instead of acquiring one (needs ``pixel_size``).
    pixel_size : float, optional
        m per pixel of ``image``.
    supervised : bool
        Pause after detecting for corrections (module docstring).
    point : [x, y], optional
        Pixel reference for "closest lamella" (default the image centre).
    md : dict, optional
        Extra run metadata.

    Returns
    -------
    dict
        ``uid``, ``features`` ({name: (x, y) px or None, the model's}), ``corrected``
        ({name: (x, y) px, supervised only}), ``detection`` (the
        :class:`~fibsem_ophyd.detection.DetectedFeatures`, live runs only).
    """
    names = list(features) if features is not None else ["NeedleTip", "LamellaCentre"]
    feats = [get_feature(n) for n in names]         # unknown names fail before anything runs
    names = [f.name for f in feats]
    if image is not None:
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim != 2:
            raise ValueError(f"image must be a uint8 (H, W) frame, got dtype {arr.dtype} shape "
                             f"{arr.shape}")
        if pixel_size is None or isinstance(pixel_size, bool) or \
                not isinstance(pixel_size, (int, float)) or not pixel_size > 0:
            raise ValueError(f"pixel_size (m) > 0 is needed with an image, got {pixel_size!r}")
    pt = None
    if point is not None:
        from ..detection import Point
        if len(point) != 2:
            raise ValueError(f"point must be [x, y] px, got {point!r}")
        pt = Point(float(point[0]), float(point[1]))
    seg = _model(model)
    for f in feats:
        if f.class_id is not None and f.class_id >= seg.num_classes:
            raise ValueError(f"the model {seg.checkpoint} has {seg.num_classes} classes; "
                             f"feature {f.name} needs class {f.class_id}")
    recorders = microscope_of(detector).recorders
    rec = recorders.detection
    mask_dev = recorders.detection_masks[detector.beam]
    img_dev = recorders.detection_images[detector.beam] if image is not None else None
    args = {"features": names, "model": str(model), "supervised": supervised,
            "image": None if image is None else list(np.shape(image)), "point": point}
    out: dict = {"features": {}, "corrected": {}}

    def body():
        if image is None:
            reading = yield from bps.trigger_and_read([detector], name=detector.beam)
            frame = yield from bps.rd(detector.last_frame, default_value=None)
            if frame is None:        # not a live RunEngine (plan inspection)
                return out
            key = f"{detector.name}_pixel_size"
            pix = float(reading[key]["value"]) if reading and key in reading else \
                float((yield from bps.rd(detector.hfw))) / float(np.shape(frame)[1])
            frame = np.asarray(frame)
        else:
            frame, pix = np.asarray(image), float(pixel_size)
            yield from bps.mv(img_dev.image, frame, img_dev.pixel_size, pix)
            yield from bps.trigger_and_read([img_dev], name="detection_image")
        mask = seg.inference(frame)
        det = detect_features_in_mask(frame, mask, [get_feature(n) for n in names], pix,
                                      point=pt, num_classes=seg.num_classes,
                                      checkpoint=seg.checkpoint)
        mv: list = [mask_dev.image, mask, mask_dev.pixel_size, pix]
        for n in FEATURES:          # every field is set: the recorder carries nothing over
            if n not in names:
                for k in ("x", "y", "mx", "my"):
                    mv += [getattr(rec, f"{n}_{k}"), math.nan]
        for f in det.features:
            ok = f.px is not None
            mv += [getattr(rec, f"{f.name}_x"), f.px.x if ok else math.nan,
                   getattr(rec, f"{f.name}_y"), f.px.y if ok else math.nan,
                   getattr(rec, f"{f.name}_mx"), f.feature_m.x if ok else math.nan,
                   getattr(rec, f"{f.name}_my"), f.feature_m.y if ok else math.nan]
            out["features"][f.name] = (f.px.x, f.px.y) if ok else None
        yield from bps.mv(*mv)
        yield from bps.trigger_and_read([rec, mask_dev], name="detection")
        out["detection"] = det
        if supervised:
            with _LOCK:
                _CORRECTIONS.clear()
            yield from bps.checkpoint()
            yield from bps.pause()
            corr = pending_corrections()
            unknown = set(corr) - set(names)
            crec = recorders.correction
            cmv: list = []
            for n in FEATURES:
                if n not in names:
                    for k in ("x", "y", "dpx", "dpy", "dmx", "dmy"):
                        cmv += [getattr(crec, f"{n}_{k}"), math.nan]
                    cmv += [getattr(crec, f"{n}_correct"), 1]
            for f in det.features:
                guess = out["features"][f.name]
                final = corr.get(f.name, guess)
                if final is None:
                    final = (math.nan, math.nan)
                g = guess if guess is not None else (math.nan, math.nan)
                dpx, dpy = g[0] - final[0], g[1] - final[1]
                cmv += [getattr(crec, f"{f.name}_x"), final[0],
                        getattr(crec, f"{f.name}_y"), final[1],
                        getattr(crec, f"{f.name}_dpx"), dpx, getattr(crec, f"{f.name}_dpy"), dpy,
                        getattr(crec, f"{f.name}_dmx"), dpx * pix,
                        getattr(crec, f"{f.name}_dmy"), -dpy * pix,
                        getattr(crec, f"{f.name}_correct"), int(f.name not in corr)]
                if f.name in corr:
                    out["corrected"][f.name] = corr[f.name]
            yield from bps.mv(*cmv)
            yield from bps.trigger_and_read([crec], name="correction")
            if unknown:
                raise ValueError(f"corrections for features not detected in this run: "
                                 f"{sorted(unknown)} (detected: {names})")
        return out

    start_md = run_md("detect", args, md, detectors=[detector])
    start_md["detection"] = {"features": names, "checkpoint": seg.checkpoint,
                           "supervised": bool(supervised)}
    devices = [mask_dev] + ([img_dev] if img_dev is not None else [detector])

    @bpp.stage_decorator(devices)
    def inner():
        return (yield from in_run(body(), start_md))

    uid, result = yield from inner()
    return {"uid": uid, **(result or out)}


def move_based_on_detection(microscope: Readable, detector: Readable, detection: dict,
                            feature_from: str,
                            feature_to: str) -> MsgGenerator[dict]:
    """Move so ``feature_from`` lands on ``feature_to`` (OpenFIBSEM's rule): a needle feature
    moves the manipulator by a corrected move in ``detector``'s beam; a lamella or landing
    feature (with the image centre as ``feature_from``) moves the stage by a stable move.

    ``detection`` is the dict :func:`detect` returned (its ``corrected`` positions win).
    Returns the move made: ``kind`` ("manipulator" or "stage") and ``dx``, ``dy`` (m,
    image plane, +y up).
    """
    from ._manipulator import move_manipulator_corrected
    from ._movement import stable_move

    det = detection.get("detection")
    if det is None:
        raise ValueError("detection holds no DetectedFeatures (was it a live run?)")
    pts = {**{k: v for k, v in detection["features"].items() if v is not None},
           **detection.get("corrected", {})}
    for name in (feature_from, feature_to):
        if name not in pts:
            raise ValueError(f"{name} was not detected (have: {sorted(pts)})")
    (x0, y0), (x1, y1) = pts[feature_from], pts[feature_to]
    dx = (x1 - x0) * det.pixelsize
    dy = -(y1 - y0) * det.pixelsize
    if feature_from.startswith("Needle"):
        yield from move_manipulator_corrected(microscope, dx=dx, dy=dy, beam=detector.beam)
        return {"kind": "manipulator", "dx": dx, "dy": dy}
    # the stage moves the feature to the centre: the content moves by -(feature - centre)
    yield from stable_move(microscope, dx=-dx, dy=-dy, beam=detector.beam)
    return {"kind": "stage", "dx": -dx, "dy": -dy}
