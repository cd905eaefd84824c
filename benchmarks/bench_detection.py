"""Feature detection on held-out simulator scenes: speed, segmentation IoU, keypoint errors.

    PYTHONPATH=$PWD python benchmarks/bench_detection.py [--count 40] [--model PATH]

Each held-out seed (:data:`fibsem_ophyd.sim.liftout_scenes.HELD_OUT_SEEDS`, never trained on)
builds a lift-out scene, acquires a 1536 x 1024 frame and scores the model against the
simulator's exact mask and keypoints (``sim.truth.mask`` / ``sim.truth.keypoint``):

- time per frame end to end (``model.inference``: block mean, onnxruntime on one thread,
  argmax, expansion to full size), wall and process CPU time (the machine may be shared);
- IoU per class over the frames where the class is in the truth or the prediction;
- NeedleTip over the frames where the tip is visible (the truth mask shows needle within 2 px
  of the true tip: an adaptor can hide it), LamellaCentre over the frames with a lamella;
  error in px and the share within 10 px.

Targets: <= 60 ms per frame; IoU >= 0.85 for lamella and manipulator; NeedleTip and
LamellaCentre within 10 px in >= 95 % of frames.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fibsem_ophyd.detection import (
    CLASS_NAMES,
    detect_features_in_mask,
    iou_per_class,
    load_model,
    mean_iou_per_class,
)
from fibsem_ophyd.sim.liftout_scenes import HELD_OUT_SEEDS, liftout_scene


def _visible_tip(mask, tip) -> bool:
    c, r = int(round(tip[0])), int(round(tip[1]))
    h, w = mask.shape
    if not (0 <= c < w and 0 <= r < h):
        return False
    return bool((mask[max(0, r - 2):r + 3, max(0, c - 2):c + 3] == 2).any())


def run(count: int = 40, model_path=None, verbose: bool = False) -> dict:
    model = load_model(model_path)
    wall, cpu = [], []
    ious = []
    errs: dict[str, list[float]] = {"NeedleTip": [], "LamellaCentre": []}
    seeds = list(HELD_OUT_SEEDS)[:count]
    for seed in seeds:
        sim, beam = liftout_scene(seed)
        frame = sim.acquire_image(beam)
        truth = sim.truth.mask(beam)
        model.inference(frame)                    # warm (first-run allocations)
        t0, c0 = time.perf_counter(), time.process_time()
        pred = model.inference(frame)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        ious.append(iou_per_class(pred, truth, len(CLASS_NAMES)))
        det = detect_features_in_mask(frame, pred, ["NeedleTip", "LamellaCentre"],
                                      sim.truth.pixel_size(beam))
        for f in det.features:
            if f.name == "NeedleTip":
                if not sim.needle.inserted:
                    continue
                t = sim.truth.keypoint("NeedleTip", beam)
                if not _visible_tip(truth, t):
                    continue
            else:
                if not (truth == 1).any():
                    continue
                t = sim.truth.keypoint("LamellaCentre", beam)
            e = float(np.hypot(f.px.x - t[0], f.px.y - t[1])) if f.px is not None else np.inf
            errs[f.name].append(e)
            if verbose and e > 10:
                print(f"  seed {seed} {beam}: {f.name} error {e:.1f} px")
    iou = mean_iou_per_class(ious)
    out = {"seeds": (seeds[0], seeds[-1]), "frames": len(seeds),
           "wall_ms_median": 1e3 * float(np.median(wall)),
           "cpu_ms_median": 1e3 * float(np.median(cpu)),
           "iou": {n: float(v) for n, v in zip(CLASS_NAMES, iou, strict=True)}}
    for name, e in errs.items():
        e = np.array(e)
        fin = e[np.isfinite(e)]
        out[name] = {"frames": int(e.size),
                     "within_10px_%": float(100 * np.mean(e <= 10)) if e.size else float("nan"),
                     "mean_px": float(fin.mean()) if fin.size else float("nan"),
                     "median_px": float(np.median(fin)) if fin.size else float("nan")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--model", default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    r = run(a.count, a.model, a.verbose)
    print(f"held-out seeds {r['seeds'][0]}..{r['seeds'][1]} ({r['frames']} frames, 1536x1024)")
    print(f"time per frame: {r['wall_ms_median']:.1f} ms wall, {r['cpu_ms_median']:.1f} ms CPU "
          "(median, one onnxruntime thread)")
    print("IoU: " + ", ".join(f"{k} {v:.3f}" for k, v in r["iou"].items()))
    for name in ("NeedleTip", "LamellaCentre"):
        s = r[name]
        print(f"{name}: {s['within_10px_%']:.1f} % within 10 px over {s['frames']} frames, "
              f"error mean {s['mean_px']:.2f} px, median {s['median_px']:.2f} px")


if __name__ == "__main__":
    main()
