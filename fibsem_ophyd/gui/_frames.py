"""The one place where napari's world (rows down, (y, x) order) meets our image frame.

Our image frame (``fibsem_ophyd.geometry``): metres from the image centre, +x right, +y up;
pixel (col, row) from the top-left corner, pixel centres at integer indices. napari draws
data (row, col) at ``world = data * scale + translate`` with world y pointing down the rows.
Each beam's layer is placed so that its image centre sits at ``(0, offset_x)`` in the world
(the ion view beside the electron view), in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import geometry

__all__ = ["ImageFrame", "VIEW_GAP"]

#: space between the electron and the ion view in the world, as a fraction of the electron
#: field width
VIEW_GAP = 0.05


@dataclass(frozen=True)
class ImageFrame:
    """Where one frame of one beam sits in the napari world.

    Parameters
    ----------
    shape : (int, int)
        Frame (height, width), pixels.
    pixel_size : float
        Metres per pixel.
    offset_x : float
        World x (m) of the beam's field centre: 0 for the electron view, beside it for the
        ion view.
    centre_x, centre_y : float
        Where this frame's centre lies in the beam's field (m, +y up): zero but for a
        reduced area. Image coordinates below are the field's, as the movement plans take them.
    """

    shape: tuple[int, int]
    pixel_size: float
    offset_x: float = 0.0
    centre_x: float = 0.0
    centre_y: float = 0.0

    def __post_init__(self):
        if not (self.pixel_size > 0 and np.isfinite(self.pixel_size)):
            raise ValueError(f"pixel size must be > 0 m, got {self.pixel_size!r}")

    @property
    def width(self) -> float:
        """Field width, m."""
        return self.shape[1] * self.pixel_size

    @property
    def height(self) -> float:
        """Field height, m."""
        return self.shape[0] * self.pixel_size

    def layer_kwargs(self) -> dict:
        """``scale`` and ``translate`` of a napari image layer showing this frame."""
        h, w = self.shape
        px = self.pixel_size
        # pixel centre (row 0, col 0) lies at image (x, y) = ((0.5 - w/2) px, (h/2 - 0.5) px)
        return {"scale": (px, px),
                "translate": ((0.5 - h / 2) * px - self.centre_y,
                              (0.5 - w / 2) * px + self.offset_x + self.centre_x)}

    # -- points -------------------------------------------------------------------------------
    def world_to_image(self, world) -> tuple[float, float]:
        """napari world position (..., y_world, x_world) -> image metres (x, y), +y up."""
        yw, xw = float(world[-2]), float(world[-1])
        return xw - self.offset_x, -yw

    def image_to_world(self, x, y) -> np.ndarray:
        """Image metres (x, y), +y up -> napari world (y_world, x_world); arrays broadcast."""
        return np.stack([-np.asarray(y, dtype=float),
                         np.asarray(x, dtype=float) + self.offset_x], axis=-1)

    def pixel_to_image(self, col, row) -> tuple[float, float]:
        """Pixel (col, row) -> image metres, as :func:`fibsem_ophyd.geometry.pixel_to_image`."""
        x, y = geometry.pixel_to_image(col, row, self.shape, self.pixel_size)
        return float(x) + self.centre_x, float(y) + self.centre_y

    def image_to_pixel(self, x, y) -> tuple[float, float]:
        """Image metres -> pixel (col, row)."""
        c, r = geometry.image_to_pixel(x - self.centre_x, y - self.centre_y, self.shape,
                                       self.pixel_size)
        return float(c), float(r)

    def contains(self, x: float, y: float) -> bool:
        """Is image point (x, y) (m) inside the frame?"""
        return abs(x - self.centre_x) <= self.width / 2 \
            and abs(y - self.centre_y) <= self.height / 2

    def polygon_to_world(self, ring) -> np.ndarray:
        """A closed outline in image metres ((N, 2) of x, y) -> napari polygon vertices."""
        ring = np.asarray(ring, dtype=float)
        return self.image_to_world(ring[:, 0], ring[:, 1])

    def world_to_polygon(self, vertices) -> np.ndarray:
        """napari polygon vertices -> (N, 2) image metres (x, y)."""
        v = np.asarray(vertices, dtype=float)
        return np.stack([v[:, -1] - self.offset_x, -v[:, -2]], axis=-1)
