"""Keypoint evaluation: how far detected features are from ground truth (OpenFIBSEM's
``fibsem.detection.evaluation`` measures, our code).

Ground truth comes from an OpenFIBSEM ground-truth CSV (``filename, feature, px.x, px.y,
pixelsize, corrected``; images as TIFF files beside it) or from stored detection runs (the
items of :func:`fibsem_ophyd.storage.detection_dataset`, whose truth is the user's
correction, or the model's guess where the user accepted it), or any iterable of mappings
with ``image``, ``keypoints`` ({feature: (x, y)} px, the truth) and optionally ``prediction``
({feature: (x, y)}) and ``pixelsize``. With a ``model`` the features are detected again on
each image; without, the items' ``prediction`` is scored.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["evaluate_keypoints", "KeypointEvaluation", "plot_evaluation"]

THRESHOLDS = (250, 100, 50, 25, 10)


@dataclass
class KeypointEvaluation:
    """Per-feature errors (px, Euclidean, full resolution) and their summary.

    Attributes
    ----------
    rows : list of dict
        One per (image, feature): ``filename``, ``feature``, ``truth`` and ``prediction``
        (x, y px; prediction None when not detected), ``error`` (px, inf when not detected).
    thresholds : tuple of float
        px.
    """

    rows: list[dict] = field(default_factory=list)
    thresholds: tuple = THRESHOLDS

    def table(self) -> list[dict]:
        """Per feature: ``n``, ``detected``, ``mean``, ``median``, ``std`` (px, over the
        detected) and ``accuracy_<t>`` (% of all under t px)."""
        out = []
        for name in sorted({r["feature"] for r in self.rows}):
            err = np.array([r["error"] for r in self.rows if r["feature"] == name], float)
            fin = err[np.isfinite(err)]
            row = {"feature": name, "n": int(err.size), "detected": int(fin.size),
                   "mean": float(fin.mean()) if fin.size else float("nan"),
                   "median": float(np.median(fin)) if fin.size else float("nan"),
                   "std": float(fin.std()) if fin.size else float("nan")}
            for t in self.thresholds:
                row[f"accuracy_{t:g}"] = float(100.0 * np.mean(err < t))
            out.append(row)
        return out

    def __str__(self) -> str:
        cols = ["feature", "n", "detected", "mean", "median", "std"] + \
            [f"accuracy_{t:g}" for t in self.thresholds]
        lines = ["  ".join(f"{c:>14}" for c in cols)]
        for row in self.table():
            lines.append("  ".join(f"{row[c]:>14.2f}" if isinstance(row[c], float)
                                   else f"{row[c]!s:>14}" for c in cols))
        return "\n".join(lines)

    def plot(self, show: bool = False):
        return plot_evaluation(self, show=show)


def _check_thresholds(thresholds) -> tuple:
    try:
        ts = tuple(float(t) for t in thresholds)
    except TypeError as exc:
        raise ValueError(f"thresholds must be a sequence of px > 0, got {thresholds!r}") from exc
    if not ts or any(not np.isfinite(t) or t <= 0 for t in ts):
        raise ValueError(f"thresholds must be px > 0, got {thresholds!r}")
    return ts


def _read_csv(path: Path) -> list[dict]:
    """OpenFIBSEM ground truth CSV -> items (images found beside the CSV)."""
    import tifffile

    need = {"filename", "feature", "px.x", "px.y", "pixelsize"}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = need - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not an OpenFIBSEM ground-truth CSV, missing columns "
                             f"{sorted(missing)}")
        rows = list(reader)
    items: dict[str, dict] = {}
    for r in rows:
        it = items.setdefault(r["filename"], {"filename": r["filename"], "keypoints": {},
                                              "pixelsize": float(r["pixelsize"])})
        it["keypoints"][r["feature"]] = (float(r["px.x"]), float(r["px.y"]))
    out = []
    for name, it in items.items():
        cands = [path.parent / name, path.parent / f"{name}.tif", path.parent / f"{name}.tiff"]
        f = next((c for c in cands if c.is_file()), None)
        if f is None:
            raise FileNotFoundError(f"{path}: no image for {name!r} (looked for "
                                    f"{[str(c) for c in cands]})")
        it["image"] = np.asarray(tifffile.imread(f))
        out.append(it)
    return out


def _get(item, key, default=None):
    if isinstance(item, Mapping):
        return item.get(key, default)
    return getattr(item, key, default)


def evaluate_keypoints(source, model=None, thresholds=THRESHOLDS,
                       features: Iterable[str] | None = None) -> KeypointEvaluation:
    """Score keypoints against ground truth (module docstring for ``source``).

    Parameters
    ----------
    source : str, Path or iterable
        A ground-truth CSV, or items (stored detection runs, mappings).
    model : SegmentationModel, optional
        Detect again with this model (required for a CSV).
    thresholds : sequence of float
        px; accuracy is the share of errors under each.
    features : iterable of str, optional
        Only these features.
    """
    from ._features import detect_features

    ts = _check_thresholds(thresholds)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no ground-truth CSV at {str(path)!r}")
        if model is None:
            raise ValueError("a ground-truth CSV has no predictions: pass a model")
        items = _read_csv(path)
    else:
        items = source
    only = set(features) if features is not None else None
    ev = KeypointEvaluation(thresholds=ts)
    for k, item in enumerate(items):
        truth = dict(_get(item, "keypoints") or {})
        correction = _get(item, "correction")
        if correction:
            truth.update(correction)
        if only is not None:
            truth = {n: v for n, v in truth.items() if n in only}
        if not truth:
            continue
        if model is not None:
            det = detect_features(_get(item, "image"), model, list(truth),
                                  float(_get(item, "pixelsize") or 1.0))
            pred = {f.name: (f.px.x, f.px.y) if f.px is not None else None
                    for f in det.features}
        else:
            # stored runs: the model's guess is their "keypoints", the truth the final ones
            given = _get(item, "prediction")
            pred = dict(given if given is not None else _get(item, "keypoints") or {})
        for name, xy in truth.items():
            p = pred.get(name)
            err = float(np.hypot(p[0] - xy[0], p[1] - xy[1])) if p is not None else np.inf
            ev.rows.append({"filename": _get(item, "filename") or str(k), "feature": name,
                            "truth": tuple(map(float, xy)),
                            "prediction": tuple(map(float, p)) if p is not None else None,
                            "error": err})
    return ev


def plot_evaluation(ev: KeypointEvaluation, show: bool = False):
    """Accuracy (%) under each threshold per feature, and the error distribution."""
    import matplotlib.pyplot as plt

    table = ev.table()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    for row in table:
        a1.plot(ev.thresholds, [row[f"accuracy_{t:g}"] for t in ev.thresholds], "o-",
                label=row["feature"])
    a1.set_xscale("log")
    a1.set_xlabel("threshold (px)")
    a1.set_ylabel("accuracy (%)")
    a1.set_ylim(0, 105)
    a1.legend(fontsize=7)
    names = [r["feature"] for r in table]
    errs = [[r["error"] for r in ev.rows if r["feature"] == n and np.isfinite(r["error"])]
            or [np.nan] for n in names]
    a2.boxplot(errs)
    a2.set_xticks(range(1, len(names) + 1), names)
    a2.set_ylabel("error (px)")
    a2.tick_params(axis="x", rotation=45, labelsize=7)
    fig.tight_layout()
    if show:
        plt.show()
    return fig
