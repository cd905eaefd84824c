"""Segmentation models: ONNX files run with onnxruntime on the CPU.

The contract is OpenFIBSEM's plain ONNX export (``scripts/convert_to_onnx.py``): input
``input``, float32 ``[N, 1, H, W]``, the grey image divided by 255; output ``output``, float32
logits ``[N, C, H, W]``; the class mask is the argmax over C. Their export fixes H x W at
1024 x 1536; a model with fixed H, W gets the image resized to them (block mean down,
nearest-neighbour mask back up). A model whose H, W are free runs on the image as it is,
unless the file names a working width in its metadata (``fibsem_ophyd.input_width``): then the
image is block-averaged by the integer factor that brings it nearest that width and the mask
is expanded back, each boundary placed to the pixel by the argmax of the logits interpolated
bilinearly (the shipped model works at 768 px wide: a 1536 x 1024 frame is averaged 2 x 2).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["SegmentationModel", "load_model", "SHIPPED_MODEL", "CLASS_NAMES", "CLASS_COLOURS",
           "decode_segmap"]

#: the model that ships with the package (trained on simulator frames, see the README)
SHIPPED_MODEL = Path(__file__).parent / "models" / "fibsem-ophyd-seg.onnx"
#: OpenFIBSEM's segmentation classes (``segmentation_config.yaml``)
CLASS_NAMES = ("background", "lamella", "manipulator", "landing_post", "copper_adaptor",
               "volume_block")
#: RGB colour per class for ``rgb=True`` masks and plots
CLASS_COLOURS = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [255, 255, 0], [0, 0, 255],
                          [255, 0, 255], [0, 255, 255], [255, 128, 0], [128, 0, 255]],
                         dtype=np.uint8)


def decode_segmap(mask: np.ndarray) -> np.ndarray:
    """Class mask (H, W) -> RGB uint8 (H, W, 3) with :data:`CLASS_COLOURS`."""
    mask = np.asarray(mask)
    return CLASS_COLOURS[np.clip(mask, 0, len(CLASS_COLOURS) - 1)]


def check_image(image) -> np.ndarray:
    """``image`` as a 2-D uint8 array, or a ValueError naming what is wrong with it."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (a grey frame, 0..255), got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"image must be 2-D (height, width), got shape {a.shape}")
    if min(a.shape) < 8:
        raise ValueError(f"image must be at least 8 x 8 px, got shape {a.shape}")
    return a


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks (the frame is edge-padded to a multiple of f), float32.

    A uint8 frame is summed in uint16 (exact for f <= 16) one strided slice at a time, which
    is several times faster than a reduction over a reshaped array."""
    h, w = a.shape
    ph, pw = -h % f, -w % f
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)), mode="edge")
    hh, ww = a.shape
    if a.dtype == np.uint8 and f <= 16:
        acc = np.zeros((hh // f, ww // f), dtype=np.uint16)
        for i in range(f):
            for j in range(f):
                acc += a[i::f, j::f]
        out = acc.astype(np.float32)
        out *= np.float32(1.0 / (f * f))
        return out
    return a.reshape(hh // f, f, ww // f, f).mean(axis=(1, 3), dtype=np.float32)


def _argmax0(logits: np.ndarray) -> np.ndarray:
    """``argmax(logits, axis=0)`` as uint8 (ties to the lower class, as numpy), by running
    comparisons over the few classes: faster than numpy's argmax over a short leading axis."""
    best = logits[0].copy()
    idx = np.zeros(best.shape, dtype=np.uint8)
    for k in range(1, logits.shape[0]):
        better = logits[k] > best
        idx[better] = k
        np.maximum(best, logits[k], out=best)
    return idx


def _expand(small: np.ndarray, logits: np.ndarray, f: int, h: int, w: int) -> np.ndarray:
    """The mask at the image's size from the argmax ``small`` of ``logits`` at 1/f.

    Each block is filled with its class; in the blocks with another class among their
    8 neighbours (the object boundaries) each pixel gets the argmax of the logits
    interpolated bilinearly at its centre, which places a boundary to the pixel rather than to
    the block. Elsewhere that argmax equals the block's class (a convex combination of logit
    vectors that all peak at one class peaks there too), so it is not computed."""
    sh, sw = small.shape
    big = np.empty((sh, f, sw, f), dtype=np.uint8)
    big[...] = small[:, None, :, None]
    mask = big.reshape(sh * f, sw * f)
    p = np.pad(small, 1, mode="edge")
    edge = np.zeros((sh, sw), dtype=bool)
    for dy in range(3):
        for dx in range(3):
            if dy != 1 or dx != 1:
                edge |= p[dy:dy + sh, dx:dx + sw] != small
    bi, bj = np.nonzero(edge)
    if bi.size:
        oy, ox = np.divmod(np.arange(f * f), f)
        rows = (bi[:, None] * f + oy[None]).ravel()
        cols = (bj[:, None] * f + ox[None]).ravel()
        ys = (rows + 0.5) / f - 0.5          # pixel centres on the 1/f grid
        xs = (cols + 0.5) / f - 0.5
        y0, x0 = np.floor(ys).astype(np.intp), np.floor(xs).astype(np.intp)
        wy, wx = (ys - y0).astype(np.float32), (xs - x0).astype(np.float32)
        y1, x1 = np.minimum(y0 + 1, sh - 1), np.minimum(x0 + 1, sw - 1)
        y0, x0 = np.maximum(y0, 0), np.maximum(x0, 0)
        val = ((logits[:, y0, x0] * (1 - wx) + logits[:, y0, x1] * wx) * (1 - wy)
               + (logits[:, y1, x0] * (1 - wx) + logits[:, y1, x1] * wx) * wy)
        mask[rows, cols] = _argmax0(val)
    return mask[:h, :w]


class SegmentationModel:
    """An ONNX segmentation model (module docstring for the contract).

    Attributes
    ----------
    checkpoint : str
        File name of the model.
    num_classes : int
        Number of output classes C.
    input_size : tuple of int or None
        Fixed (height, width) the model takes, or None when free.
    input_width : int or None
        Working width (px) for free-size models that name one.
    """

    def __init__(self, path, threads: int = 1):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no segmentation model file at {str(path)!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{str(path)!r} is not a loadable ONNX model: {exc}") from exc
        self.checkpoint = path.name
        self.path = path
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f"{self.checkpoint}: expected one input [N, 1, H, W], got "
                             f"{[(i.name, i.shape) for i in inputs]}")
        shape = inputs[0].shape
        if isinstance(shape[1], int) and shape[1] != 1:
            raise ValueError(f"{self.checkpoint}: expected a 1-channel input [N, 1, H, W], got "
                             f"{shape} (3-channel models are not supported)")
        oshape = outputs[0].shape
        if len(oshape) != 4:
            raise ValueError(f"{self.checkpoint}: expected an output [N, C, H, W], got {oshape}")
        self.input_name = inputs[0].name
        fixed = isinstance(shape[2], int) and isinstance(shape[3], int)
        if isinstance(oshape[1], int):
            self.num_classes = int(oshape[1])
        else:       # a symbolic class axis: count it on a small frame
            probe = np.zeros((1, 1, *((shape[2], shape[3]) if fixed else (64, 64))), np.float32)
            self.num_classes = int(self.session.run(None, {self.input_name: probe})[0].shape[1])
        self.input_size = (int(shape[2]), int(shape[3])) if fixed else None
        meta = self.session.get_modelmeta().custom_metadata_map
        w = meta.get("fibsem_ophyd.input_width")
        self.input_width = int(w) if w else None
        self.metadata = dict(meta)

    def __repr__(self) -> str:
        return (f"SegmentationModel({self.checkpoint!r}, classes={self.num_classes}, "
                f"input={self.input_size or self.input_width or 'free'})")

    def logits(self, image) -> tuple[np.ndarray, int]:
        """Logits ``(C, h, w)`` of ``image`` at the model's working size, and the factor that
        maps them back to the image (1: full size)."""
        img = check_image(image)
        h, w = img.shape
        if self.input_size is not None:
            th, tw = self.input_size
            if (h, w) == (th, tw):
                x = img.astype(np.float32)
            else:       # nearest sampling to the model's fixed size
                rows = np.minimum(((np.arange(th) + 0.5) * h / th).astype(int), h - 1)
                cols = np.minimum(((np.arange(tw) + 0.5) * w / tw).astype(int), w - 1)
                x = img[rows][:, cols].astype(np.float32)
            f = 0
        else:
            f = max(1, round(w / self.input_width)) if self.input_width else 1
            x = _block_mean(img, f) if f > 1 else img.astype(np.float32)
        x /= np.float32(255.0)
        out = self.session.run(None, {self.input_name: x[None, None]})[0]
        return out[0], f

    def inference(self, image, rgb: bool = False) -> np.ndarray:
        """Class mask of ``image`` (uint8 (H, W)): uint8 (H, W) class indices, or with
        ``rgb`` an RGB uint8 (H, W, 3) image of them."""
        img = check_image(image)
        h, w = img.shape
        logits, f = self.logits(img)
        small = _argmax0(logits) if logits.shape[0] < 256 else \
            np.argmax(logits, axis=0).astype(np.uint8)
        if f == 0:       # fixed-size model: back to the image by nearest neighbour
            sh, sw = small.shape
            rows = np.minimum((np.arange(h) * sh // h), sh - 1)
            cols = np.minimum((np.arange(w) * sw // w), sw - 1)
            mask = small[rows][:, cols]
        elif f > 1:
            mask = _expand(small, logits, f, h, w)
        else:
            mask = small
        mask = np.ascontiguousarray(mask)
        return decode_segmap(mask) if rgb else mask


def load_model(path=None, threads: int = 1) -> SegmentationModel:
    """Load a segmentation model.

    Parameters
    ----------
    path : str or Path, optional
        An ONNX file following OpenFIBSEM's plain export contract; ``None``: the shipped model
        (:data:`SHIPPED_MODEL`).
    threads : int
        onnxruntime intra-op threads (one is fastest on a busy machine).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        The file is not an ONNX model, or not one with a 1-channel input and C-class output.
    """
    if not (isinstance(threads, int) and 1 <= threads <= 64):
        raise ValueError(f"threads must be an integer in [1, 64], got {threads!r}")
    if path is None:
        path = SHIPPED_MODEL
    if not isinstance(path, (str, Path)) or (isinstance(path, float) and math.isnan(path)):
        raise ValueError(f"path must be a file path or None, got {path!r}")
    return SegmentationModel(path, threads)
