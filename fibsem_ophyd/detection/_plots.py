"""Plots of segmentations and detections (matplotlib; nothing else of the package needs it)."""

from __future__ import annotations

import numpy as np

from ._model import decode_segmap

__all__ = ["plot_segmentations", "plot_detection", "plot_detections", "plot_bounding_boxes"]


def plot_segmentations(images, masks, alpha: float = 0.4, show: bool = False):
    """Each image with its class mask overlaid (one column per pair)."""
    import matplotlib.pyplot as plt

    images, masks = list(images), list(masks)
    if len(images) != len(masks) or not images:
        raise ValueError(f"need as many masks as images (>= 1), got {len(images)} images and "
                         f"{len(masks)} masks")
    fig, axes = plt.subplots(1, len(images), figsize=(5 * len(images), 4), squeeze=False)
    for ax, img, m in zip(axes[0], images, masks, strict=True):
        ax.imshow(img, cmap="gray")
        ax.imshow(decode_segmap(m), alpha=alpha)
        ax.axis("off")
    fig.tight_layout()
    if show:
        plt.show()
    return fig


def _draw(det, ax, title: str) -> None:
    ax.imshow(det.image, cmap="gray")
    ax.imshow(det.rgb, alpha=0.3)
    for f in det.features:
        if f.px is not None:
            ax.plot(f.px.x, f.px.y, "+", color=f.color, ms=14, mew=2,
                    label=f"{f.name} ({f.px.x:.0f}, {f.px.y:.0f})")
    pts = [f.px for f in det.features[:2] if f.px is not None]
    if len(pts) == 2:
        ax.plot([pts[0].x, pts[1].x], [pts[0].y, pts[1].y], "w--", lw=1)
    ax.legend(loc="best", fontsize=7)
    ax.set_title(title)
    ax.axis("off")


def plot_detection(det, title: str = "Prediction", show: bool = False):
    """A :class:`~fibsem_ophyd.detection.DetectedFeatures` over its image and mask."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))
    _draw(det, ax, title)
    if show:
        plt.show()
    return fig


def plot_detections(dets, titles=None, show: bool = False):
    """Several detections side by side (e.g. the model's and a correction)."""
    import matplotlib.pyplot as plt

    dets = list(dets)
    titles = list(titles) if titles is not None else [f"Prediction {i}" for i in range(len(dets))]
    if len(titles) != len(dets) or not dets:
        raise ValueError(f"need one title per detection (>= 1), got {len(titles)} titles and "
                         f"{len(dets)} detections")
    fig, axes = plt.subplots(1, len(dets), figsize=(7 * len(dets), 5), squeeze=False)
    for ax, det, t in zip(axes[0], dets, titles, strict=True):
        _draw(det, ax, t)
    fig.tight_layout()
    if show:
        plt.show()
    return fig


def plot_bounding_boxes(image, mask, objects, show: bool = False):
    """Bounding boxes and centres of :func:`~fibsem_ophyd.detection.get_objects` instances."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(8, 6))
    ax.imshow(image, cmap="gray")
    ax.imshow(decode_segmap(np.asarray(mask)), alpha=0.3)
    for o in objects:
        (r0, c0), (r1, c1) = o["bbox"]
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False,
                               color="white", lw=1))
        kp = o["keypoints"]["centre"]
        ax.plot(kp.x, kp.y, "w+")
        ax.text(c0, r0 - 4, f"{o['class']}.{o['instance']}", color="white", fontsize=7)
    ax.axis("off")
    if show:
        plt.show()
    return fig
