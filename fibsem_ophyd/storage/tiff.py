"""One image per TIFF file, with its metadata JSON in the ImageDescription tag.

The layout is OpenFIBSEM's (see :mod:`fibsem_ophyd.storage.metadata`): a file written by
:func:`write_tiff` opens with ``fibsem.structures.FibsemImage.load``, and
:func:`read_tiff` opens files written by ``FibsemImage.save`` (its tifffile "shaped"
description, which adds a ``"shape"`` key, is tolerated and the key dropped).

Writing is a single uncompressed :func:`tifffile.imwrite` with a precomputed
description: the cost over a bare ``imwrite`` of the same frame is the JSON encoding of a
few kilobytes of metadata (tens of microseconds).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from . import metadata as _md
from ._json import dumps

__all__ = ["FibImage", "write_tiff", "read_tiff", "read_metadata"]

_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def _check_frame(data: np.ndarray) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    elif data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim != 2 or data.dtype not in _DTYPES:
        raise ValueError(
            f"an image must be a 2-D uint8 or uint16 array, got shape {data.shape} "
            f"dtype {data.dtype}"
        )
    return data


def write_tiff(path: str | os.PathLike, data: np.ndarray, metadata: dict | None) -> Path:
    """Write one frame and its metadata to an uncompressed TIFF.

    Parameters
    ----------
    path : str or PathLike
        Destination file (``.tif``); its directory must exist.
    data : numpy.ndarray
        2-D ``uint8`` or ``uint16`` frame, shape (height, width) in pixels.
    metadata : dict or None
        Image metadata (layout of :func:`fibsem_ophyd.storage.metadata.image_metadata`),
        stored as JSON in the ImageDescription tag. Numpy values are converted.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    data = _check_frame(data)
    description = dumps(metadata) if metadata is not None else None
    tifffile.imwrite(
        path, data, description=description, metadata=None, photometric="minisblack"
    )
    return Path(path)


def _parse_description(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        md = json.loads(text)
    except ValueError:
        return None
    if not isinstance(md, dict):
        return None
    md.pop("shape", None)  # tifffile's "shaped" description, written by FibsemImage.save
    return md or None


def read_metadata(path: str | os.PathLike) -> dict | None:
    """Only the metadata dict of a TIFF (``None`` if it carries none); pixels are not read."""
    with tifffile.TiffFile(path) as tif:
        return _parse_description(tif.pages.first.description)


def read_tiff(path: str | os.PathLike) -> FibImage:
    """Read a TIFF written by :func:`write_tiff` (or OpenFIBSEM) into a :class:`FibImage`.

    Parameters
    ----------
    path : str or PathLike
        The file.

    Returns
    -------
    FibImage
        Pixels and metadata (``None`` if the file has no JSON description).
    """
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        md = _parse_description(page.description)
        data = page.asarray()
    return FibImage(data=data, metadata=md, path=Path(path))


@dataclass
class FibImage:
    """An image and its metadata (OpenFIBSEM layout).

    Attributes
    ----------
    data : numpy.ndarray
        2-D frame, (height, width) pixels, ``uint8`` or ``uint16``.
    metadata : dict or None
        See :func:`fibsem_ophyd.storage.metadata.image_metadata`.
    path : pathlib.Path or None
        The file the image was read from or last saved to.
    """

    data: np.ndarray
    metadata: dict | None = None
    path: Path | None = field(default=None, compare=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FibImage:
        """Read a TIFF file (see :func:`read_tiff`)."""
        return read_tiff(path)

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (see :func:`write_tiff`) and remember it in :attr:`path`."""
        self.path = write_tiff(path, self.data, self.metadata)
        return self.path

    def _need(self) -> dict:
        if self.metadata is None:
            raise ValueError("this image has no metadata")
        return self.metadata

    @property
    def pixel_size(self) -> float:
        """Pixel size (x) in metres."""
        return _md.get_pixel_size(self._need())

    @property
    def beam(self) -> str:
        """``"electron"`` or ``"ion"``."""
        return _md.get_beam(self._need())

    @property
    def stage_position(self) -> dict[str, Any]:
        """Stage position at acquisition: x, y, z in metres; r, t in degrees."""
        return _md.get_stage_position(self._need())

    @property
    def hfw(self) -> float:
        """Horizontal field width in metres."""
        return _md.get_hfw(self._need())

    @property
    def timestamp(self) -> float:
        """POSIX time (s) of the microscope state."""
        return _md.get_timestamp(self._need())

    @property
    def shape(self) -> tuple[int, ...]:
        """(height, width) in pixels."""
        return tuple(self.data.shape)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FibImage):
            return NotImplemented
        return (
            self.data.shape == other.data.shape
            and self.data.dtype == other.data.dtype
            and bool(np.array_equal(self.data, other.data))
            and self.metadata == other.metadata
        )

    __hash__ = None  # mutable, array-valued
