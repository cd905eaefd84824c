"""Plots of stored runs (matplotlib): what an alignment measured and how coincidence converged;
and milling patterns outlined over an ion image.

The run plots read only the run (documents in the catalog), so they work on any replayed run.
"""

import numpy as np

from .storage import load_images

__all__ = ["plot_alignment", "plot_convergence", "alignment_table", "draw_pattern"]


def alignment_table(run) -> dict[str, np.ndarray]:
    """The run's "alignment" stream as arrays: iteration, beam, action, dx, dy (m), score,
    move_x, move_y (m), hfw (m)."""
    if "alignment" not in run:
        raise ValueError("this run has no 'alignment' stream (not an alignment run?)")
    table = run["alignment"].read()
    return {k.removeprefix("alignment_"): np.asarray(table[k]) for k in table.data_vars}


def plot_alignment(run, beam: str | None = None, ax=None):
    """Reference, last image, their overlay and the measured shift vector of an alignment run.

    Parameters
    ----------
    run : tiled BlueskyRun
        A run of ``align_beam_shift`` / ``correct_drift`` (or any run with frames and an
        "alignment" stream).
    beam : str, optional
        "electron" or "ion" (default: the beam of the last measurement).
    ax : sequence of 3 matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    t = alignment_table(run)
    beam = beam or str(t["beam"][-1])
    images = load_images(run, beam)
    if len(images) < 2:
        raise ValueError(f"need at least two {beam} frames in the run, found {len(images)}")
    ref, new = images[0], images[-1]
    if ax is None:
        fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    else:
        fig = ax[0].figure
    ax[0].imshow(ref.data, cmap="gray")
    ax[0].set_title("reference")
    ax[1].imshow(new.data, cmap="gray")
    ax[1].set_title("last image")
    rgb = np.zeros((*ref.data.shape, 3))
    rgb[..., 0] = ref.data / 255.0
    rgb[..., 1] = new.data / 255.0
    ax[2].imshow(rgb)
    rows = np.flatnonzero(t["beam"] == beam)
    dx, dy = float(t["dx"][rows[0]]), float(t["dy"][rows[0]])
    h, w = ref.data.shape
    p = ref.pixel_size
    # first measurement: content moved by (dx, dy) (+y up) -> arrow in pixels (+row down)
    ax[2].annotate("", xy=(w / 2 + dx / p, h / 2 - dy / p), xytext=(w / 2, h / 2),
                   arrowprops={"color": "yellow", "width": 2})
    ax[2].set_title(f"overlay (red ref, green last); shift {dx * 1e6:.2f}, {dy * 1e6:.2f} um")
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    return fig


def plot_convergence(run, ax=None):
    """Measured offset per iteration of a coincidence (or any alignment) run, per beam.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    t = alignment_table(run)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    offset = np.hypot(t["dx"], t["dy"]) * 1e6
    for beam in dict.fromkeys(t["beam"]):
        rows = t["beam"] == beam
        ax.semilogy(t["iteration"][rows], np.maximum(offset[rows], 1e-3), "o-", label=beam)
    ax.set_xlabel("iteration")
    ax.set_ylabel("measured offset (um)")
    ax.legend()
    ax.set_title("alignment convergence")
    fig.tight_layout()
    return fig


def draw_pattern(pattern, ax, image_shape, pixel_size, image=None, **style):
    """Outline every shape of a milling pattern over an ion image, in pixel coordinates.

    Parameters
    ----------
    pattern : fibsem_ophyd.milling.Pattern or Shape
        Metres in the ion image frame (+x right, +y up, origin at the image centre).
    ax : matplotlib Axes
    image_shape : (rows, cols)
        Shape of the image the pattern is placed on.
    pixel_size : float
        Image pixel size, m.
    image : 2-D array, optional
        Shown in grey underneath (its shape must be ``image_shape``).
    **style
        Passed to ``matplotlib.patches.Polygon`` (default: unfilled yellow outline).

    Returns
    -------
    list of matplotlib.patches.Polygon
        One closed outline per shape ring (an annulus has two).
    """
    rows, cols = image_shape
    if image is not None:
        image = np.asarray(image)
        if image.shape != tuple(image_shape):
            raise ValueError(f"image shape {image.shape} differs from image_shape "
                             f"{tuple(image_shape)}")
        ax.imshow(image, cmap="gray")
    patches = pattern.draw(ax, pixel_size, image_shape, **style)
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)  # rows down, as imshow shows them
    return patches
