"""Train the shipped segmentation model from scratch on simulator frames with exact masks.

Needs the ``train`` extra (torch). Three steps::

    python scripts/train_segmentation.py data  --out /tmp/seg_data.npz --count 400
    python scripts/train_segmentation.py train --data /tmp/seg_data.npz --minutes 15 \
        --checkpoint /tmp/seg.pt
    python scripts/train_segmentation.py export --checkpoint /tmp/seg.pt \
        --onnx fibsem_ophyd/detection/models/fibsem-ophyd-seg.onnx

The shipped model (``nice -n 19``, one thread): seeds 0-299 and 900-1099 (``data --start 0``
and ``data --start 900`` at the default ``--width 768``, stopped after 300 and 200 frames:
the file holds the frames so far), then ``train`` from
scratch (100 steps on the first 200 frames), again with ``--init`` on both files
(1600 steps), and with ``--init --lr 2e-3 --seed 2 --band 2 --thin 10 --minutes 74``
(7894 steps): 9594 steps in all.

Data: scenes from :func:`fibsem_ophyd.sim.liftout_scenes.liftout_scene` with seeds
``start .. start+count-1`` (the held-out seeds, from 100000, are refused), each rendered at
twice the working size with the dwell scaled so that averaging 2 x 2 gives the dose per
input pixel of a 1536 x 1024 frame block-averaged to the working width (which is what
inference does; at 768 px the render is the microscope's own 1536 x 1024 frame); the target
is the scene's exact class mask at the working size (whose pixel centres are the centres of
those blocks). Augmentations while training: horizontal flips (needles from either side),
random crops of half the working size in each direction, grey-level gain/offset/gamma and
added Gaussian noise.
The network is :class:`SmallUNet`: a stride-2 stem, three levels of 8/16/32 channels, a
64-channel bottleneck with dilated convolutions, logits at half the input size bilinearly
upsampled to it; cross-entropy with class weights (optionally per-pixel weights on
boundaries and thin parts, :func:`pixel_weights`) plus a soft Dice loss on lamella and
needle; AdamW with warm-up and a cosine schedule; one CPU thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

N_CLASSES = 6
CLASS_NAMES = ("background", "lamella", "manipulator", "landing_post", "copper_adaptor",
               "volume_block")
#: channels of the stem/first level, second, third level and bottleneck
WIDTHS = (8, 16, 32, 64)
IN_W, IN_H = 384, 256


def set_width(width: int) -> None:
    """Set the working size (``IN_W`` x ``IN_H``, 3:2) the data, training and export use."""
    global IN_W, IN_H
    if width not in (384, 512, 768):
        raise ValueError(f"width must be 384, 512 or 768 px (1536 / 4, 3, 2), got {width}")
    IN_W, IN_H = width, (width * 2) // 3


def make_data(out: str, count: int, start: int = 0) -> None:
    """Frames of seeds ``start .. start+count-1`` at the working size with their exact masks.

    Each scene is rendered at twice the working size with the dose per pixel scaled so that
    averaging 2 x 2 gives the dose per input pixel of a 1536 x 1024 frame block-averaged to
    the working width (what inference does)."""
    from fibsem_ophyd.sim.liftout_scenes import HELD_OUT_SEEDS, liftout_scene

    seeds = np.arange(start, start + count)
    clash = set(seeds.tolist()) & set(HELD_OUT_SEEDS)
    if clash:
        raise ValueError(f"seeds {start}..{start + count - 1} overlap the held-out seeds "
                         f"({min(clash)} ...)")
    dose = (1536 / (2 * IN_W)) ** 2
    images = np.zeros((count, IN_H, IN_W), dtype=np.uint8)
    masks = np.zeros((count, IN_H, IN_W), dtype=np.uint8)
    t0 = time.time()
    for k in range(count):
        sim, beam = liftout_scene(start + k, resolution=(2 * IN_W, 2 * IN_H))
        dwell = sim.get("dwell_time", beam)
        frame = sim.acquire_image(beam, {"dwell_time": min(dose * dwell, 1e-3)})
        images[k] = frame.reshape(IN_H, 2, IN_W, 2).mean(axis=(1, 3)).round().astype(np.uint8)
        masks[k] = sim.truth.mask(beam, {"resolution": [IN_W, IN_H]})
        if k % 100 == 99:     # a usable file at any time
            print(f"{k + 1}/{count} frames, {time.time() - t0:.0f} s", flush=True)
            np.savez(out, images=images[:k + 1], masks=masks[:k + 1], seeds=seeds[:k + 1],
                     width=IN_W)
    np.savez(out, images=images, masks=masks, seeds=seeds, width=IN_W)
    print(f"wrote {count} frames to {out} in {time.time() - t0:.0f} s")


def _model():
    import torch
    from torch import nn

    def block(cin, cout, dilation=1):
        d = dilation
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=d, dilation=d, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=d, dilation=d, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class SmallUNet(nn.Module):
        """Stride-2 stem, encoder 16/32/64, bottleneck 128, decoder back to the input size."""

        def __init__(self, n_classes: int = N_CLASSES):
            super().__init__()
            c = WIDTHS
            self.stem = nn.Sequential(nn.Conv2d(1, c[0], 3, stride=2, padding=1, bias=False),
                                      nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True))
            self.e1 = block(c[0], c[0])
            self.e2 = block(c[0], c[1])
            self.e3 = block(c[1], c[2])
            self.b = block(c[2], c[3], dilation=2)      # a wider view at no cost
            self.pool = nn.MaxPool2d(2)
            self.u3 = nn.Conv2d(c[3], c[2], 1)
            self.d3 = block(2 * c[2], c[2])
            self.u2 = nn.Conv2d(c[2], c[1], 1)
            self.d2 = block(2 * c[1], c[1])
            self.u1 = nn.Conv2d(c[1], c[0], 1)
            self.d1 = block(2 * c[0], c[0])
            self.head = nn.Conv2d(c[0], n_classes, 1)

        @staticmethod
        def _up(x, ref):
            return nn.functional.interpolate(x, size=ref.shape[-2:], mode="bilinear",
                                             align_corners=False)

        def forward(self, x):
            s = self.stem(x)
            e1 = self.e1(s)
            e2 = self.e2(self.pool(e1))
            e3 = self.e3(self.pool(e2))
            b = self.b(self.pool(e3))
            d3 = self.d3(torch.cat([self._up(self.u3(b), e3), e3], 1))
            d2 = self.d2(torch.cat([self._up(self.u2(d3), e2), e2], 1))
            d1 = self.d1(torch.cat([self._up(self.u1(d2), e1), e1], 1))
            return self._up(self.head(d1), x)

    return SmallUNet()


def pixel_weights(mask: np.ndarray, band: float, thin: float) -> np.ndarray:
    """Per-pixel loss weights of one mask: ``1 + band`` within 2 px of a lamella or needle
    boundary (either side), plus ``thin`` on lamella/needle pixels of parts thinner than
    about 12 px (no pixel within 6 px lies deeper than 6 px inside: a thin slab, the needle's
    tapered tip), which the network otherwise gives to the background."""
    from scipy import ndimage

    w = np.ones(mask.shape, dtype=np.float32)
    for k in (1, 2):
        rows, cols = np.nonzero(mask == k)
        if not rows.size:
            continue
        r0, r1 = max(rows.min() - 8, 0), rows.max() + 9      # the object's box and a margin
        c0, c1 = max(cols.min() - 8, 0), cols.max() + 9
        m = mask[r0:r1, c0:c1] == k
        inside = ndimage.distance_transform_edt(m)
        outside = ndimage.distance_transform_edt(~m)
        sub = w[r0:r1, c0:c1]
        sub += band * (((inside > 0) & (inside <= 2)) | ((outside > 0) & (outside <= 2)))
        sub += thin * (m & (ndimage.maximum_filter(inside, size=13) <= 6))
    return w


def _augment(rng, img, msk, crop, wts=None):
    h, w = img.shape
    ch, cw = crop
    r = int(rng.integers(0, h - ch + 1))
    c = int(rng.integers(0, w - cw + 1))
    img = img[r:r + ch, c:c + cw].astype(np.float32) / 255.0
    msk = msk[r:r + ch, c:c + cw]
    wts = np.ones(msk.shape, np.float32) if wts is None else wts[r:r + ch, c:c + cw]
    if rng.uniform() < 0.5:
        img, msk, wts = img[:, ::-1], msk[:, ::-1], wts[:, ::-1]
    img = np.clip(img * rng.uniform(0.7, 1.3) + rng.uniform(-0.15, 0.15), 0, 1)
    img = img ** rng.uniform(0.7, 1.4)
    img = img + rng.normal(0, rng.uniform(0, 0.05), img.shape)
    return (np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(msk),
            np.ascontiguousarray(wts))


def _load(paths) -> tuple[np.ndarray, np.ndarray]:
    parts = [np.load(p) for p in paths]
    widths = {int(p["width"]) if "width" in p else 384 for p in parts}
    if len(widths) != 1:
        raise ValueError(f"data files have different working widths {sorted(widths)}")
    set_width(widths.pop())
    return (np.concatenate([p["images"] for p in parts]),
            np.concatenate([p["masks"] for p in parts]))


def train(data, checkpoint: str, minutes: float, batch: int = 8, seed: int = 0,
          init: str | None = None, lr: float = 3e-3, dice: float = 1.0, band: float = 0.0,
          thin: float = 0.0) -> None:
    """Class-weighted cross-entropy (each pixel also weighted by :func:`pixel_weights` when
    ``band`` or ``thin`` is set) plus ``dice`` x the soft Dice loss of the lamella and the
    manipulator (an overlap loss: a thin slab counts as much as a large one), on crops of
    half the working size in each direction."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, masks = _load(data)
    n = len(images)
    crop = (IN_H // 2, IN_W // 2)
    model = _model()
    if init:        # continue from an earlier run's weights
        model.load_state_dict(torch.load(init))
    counts = np.bincount(masks.ravel(), minlength=N_CLASSES).astype(float)
    weights = torch.tensor(np.clip((counts.sum() / np.maximum(counts, 1)) ** 0.5, 1, 30)
                           / 1.0, dtype=torch.float32)
    weights = weights / weights.min()
    print(f"{n} frames {IN_W} x {IN_H}, crops {crop[1]} x {crop[0]}; pixels per class",
          counts.astype(int).tolist(), "weights", [round(w, 2) for w in weights.tolist()])
    pix = None
    if band or thin:
        t1 = time.time()
        pix = [pixel_weights(m, band, thin) for m in masks]
        print(f"pixel weights (band {band}, thin {thin}) in {time.time() - t1:.0f} s", flush=True)
    fg = [1, 2]

    def loss_fn(logits, y, wpix):
        ce = torch.nn.functional.cross_entropy(logits, y, weight=weights, reduction="none")
        wsum = weights[y] * wpix
        loss = (ce * wpix).sum() / wsum.sum()
        if dice:
            p = torch.softmax(logits, 1)[:, fg]
            t = torch.stack([y == k for k in fg], 1).float()
            inter = (p * t).sum((0, 2, 3))
            total = p.sum((0, 2, 3)) + t.sum((0, 2, 3))
            loss = loss + dice * (1 - (2 * inter + 1) / (total + 1)).mean()
        return loss

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    budget = minutes * 60.0
    t0, c0 = time.time(), time.process_time()
    step = 0
    avg = None
    model.train()
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * frac)) + 1e-5
        idx = rng.integers(0, n, batch)
        xs, ys, ws = zip(*(_augment(rng, images[i], masks[i], crop,
                                    None if pix is None else pix[i]) for i in idx), strict=True)
        x = torch.from_numpy(np.stack(xs))[:, None]
        y = torch.from_numpy(np.stack(ys).astype(np.int64))
        loss = loss_fn(model(x), y, torch.from_numpy(np.stack(ws)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 100 == 0:
            print(f"step {step} t={time.time() - t0:.0f}s cpu={time.process_time() - c0:.0f}s "
                  f"loss={avg:.4f}", flush=True)
            torch.save(model.state_dict(), checkpoint)
        step += 1
    torch.save(model.state_dict(), checkpoint)
    print(f"trained {step} steps in {time.time() - t0:.0f} s "
          f"({time.process_time() - c0:.0f} s CPU) -> {checkpoint}")


def export(checkpoint: str, onnx_path: str) -> None:
    import torch

    model = _model()
    model.load_state_dict(torch.load(checkpoint))
    model.eval()
    x = torch.zeros(1, 1, IN_H, IN_W)
    Path(onnx_path).parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, x, onnx_path, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                    "output": {0: "batch", 2: "height", 3: "width"}},
                      opset_version=17, dynamo=False)
    import onnx

    m = onnx.load(onnx_path)
    # the class axis is fixed (the exporter leaves it symbolic after the final resize)
    dim = m.graph.output[0].type.tensor_type.shape.dim[1]
    dim.ClearField("dim_param")
    dim.dim_value = N_CLASSES
    # the working width: inference block-averages a frame to about this many columns
    for k, v in {"fibsem_ophyd.input_width": str(IN_W),
                 "fibsem_ophyd.classes": ",".join(CLASS_NAMES)}.items():
        prop = m.metadata_props.add()
        prop.key, prop.value = k, v
    onnx.save(m, onnx_path)
    print(f"exported {onnx_path} ({Path(onnx_path).stat().st_size / 1e6:.2f} MB)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("data")
    a.add_argument("--out", required=True)
    a.add_argument("--count", type=int, default=400)
    a.add_argument("--start", type=int, default=0)
    a.add_argument("--width", type=int, default=768, help="working width (px)")
    b = sub.add_parser("train")
    b.add_argument("--data", required=True, nargs="+")
    b.add_argument("--checkpoint", required=True)
    b.add_argument("--minutes", type=float, default=15.0)
    b.add_argument("--init", default=None, help="start from these weights (a checkpoint)")
    b.add_argument("--lr", type=float, default=3e-3)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--dice", type=float, default=1.0,
                   help="weight of the lamella/manipulator soft Dice loss (0: none)")
    b.add_argument("--band", type=float, default=0.0,
                   help="extra cross-entropy weight within 2 px of a lamella/needle boundary")
    b.add_argument("--thin", type=float, default=0.0,
                   help="extra cross-entropy weight on lamella/needle parts thinner than ~8 px")
    c = sub.add_parser("export")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--onnx", required=True)
    c.add_argument("--width", type=int, default=768, help="working width (px)")
    args = ap.parse_args(argv)
    if args.cmd == "data":
        set_width(args.width)
        make_data(args.out, args.count, args.start)
    elif args.cmd == "train":
        train(args.data, args.checkpoint, args.minutes, seed=args.seed, init=args.init,
              lr=args.lr, dice=args.dice, band=args.band, thin=args.thin)
    else:
        set_width(args.width)
        export(args.checkpoint, args.onnx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
