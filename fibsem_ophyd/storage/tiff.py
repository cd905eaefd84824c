"""One image per TIFF file, with its metadata JSON in the ImageDescription tag.

:class:`TiffSeries` is a run's series of such files (one directory, one file per frame) and
the StreamResource/StreamDatum documents that announce them to the catalog.

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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from event_model import compose_stream_resource

from . import metadata as _md
from ._json import dumps

__all__ = ["FibImage", "write_tiff", "read_tiff", "read_metadata", "TiffSeries",
           "TIFF_TEMPLATE", "TIFF_MIMETYPE"]

#: file name of frame n of a series
TIFF_TEMPLATE = "img_{:06d}.tif"
#: the StreamResource mimetype of a TIFF series (Tiled's TIFF-sequence consolidator)
TIFF_MIMETYPE = "multipart/related;type=image/tiff"

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


class TiffSeries:
    """A series of one-frame TIFFs in one directory, and the documents that announce it.

    Frame ``n`` is ``<directory>/`` :data:`TIFF_TEMPLATE` ``.format(n)``. A device opens a
    series when it is staged, numbers each frame with :meth:`add` (which also keeps the
    frame shape fixed within the series), writes it with :meth:`write` (on any thread) and
    yields :meth:`asset_docs` from ``collect_asset_docs``: the StreamResource once, then a
    StreamDatum per call covering the frames not yet announced.

    Parameters
    ----------
    name : str
        The owning device's name: directories are ``<name>_<12 hex digits>`` and errors
        name it.
    data_key : str
        The data key of the image in the device's ``describe()``.
    """

    def __init__(self, name: str, data_key: str):
        self.name = name
        self.data_key = data_key
        self.directory: Path | None = None
        #: (height, width) of the frames in pixels; ``None`` before the first
        self.shape: tuple[int, int] | None = None
        self._count = 0
        self._emitted = 0
        self._bundle = None

    def open(self, parent: str | os.PathLike) -> Path:
        """Start a new series in a new directory under ``parent``; return the directory."""
        self.directory = Path(parent) / f"{self.name}_{uuid.uuid4().hex[:12]}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.shape = None
        self._count = self._emitted = 0
        self._bundle = None
        return self.directory

    def close(self) -> None:
        """End the series (the files stay); :meth:`open` starts the next one."""
        self.directory = None
        self._bundle = None

    @property
    def is_open(self) -> bool:
        return self.directory is not None

    @property
    def count(self) -> int:
        """Frames numbered so far (by :meth:`add`)."""
        return self._count

    @property
    def announced(self) -> int:
        """Frames announced so far (by :meth:`asset_docs`)."""
        return self._emitted

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise unless a frame of ``shape`` (height, width) pixels may join the series.

        Raises
        ------
        RuntimeError
            The series is not open, or ``shape`` differs from the series' first frame.
        """
        if self.directory is None:
            raise RuntimeError(f"{self.name}: no TIFF series is open (stage the device)")
        if self.shape is not None and tuple(shape) != self.shape:
            raise RuntimeError(
                f"{self.name}: frame shape changed from {self.shape} to {tuple(shape)} "
                "within one staging; change resolution or reduced area between runs (or "
                "re-stage)"
            )

    def add(self, shape: tuple[int, ...]) -> int:
        """Number the next frame, of ``shape`` (height, width) pixels; return its index.

        Raises
        ------
        RuntimeError
            As :meth:`check_shape`.
        """
        self.check_shape(shape)
        if self.shape is None:
            self.shape = tuple(int(n) for n in shape)
        index = self._count
        self._count += 1
        return index

    def path(self, index: int) -> Path:
        """The file of frame ``index``."""
        if self.directory is None:
            raise RuntimeError(f"{self.name}: no TIFF series is open (stage the device)")
        return self.directory / TIFF_TEMPLATE.format(index)

    def write(self, index: int, data: np.ndarray, metadata: dict | None) -> Path:
        """Write frame ``index`` (see :func:`write_tiff`); return its path."""
        return write_tiff(self.path(index), data, metadata)

    @property
    def resource_uid(self) -> str | None:
        """Uid of this series' StreamResource (``None`` before it is composed)."""
        return None if self._bundle is None else self._bundle.stream_resource_doc["uid"]

    def rewind(self, count: int, resource_emitted: bool = True) -> None:
        """Forget the frames from ``count`` on (numbered, maybe announced in documents that
        were never emitted), delete their files and number the next frame ``count``: a
        RunEngine that suspends re-takes them. ``resource_emitted=False``: the StreamResource
        went out with none of the documents kept, so the next announcement starts with a
        new one."""
        count = int(count)
        if not 0 <= count <= self._count:
            raise ValueError(f"{self.name}: cannot rewind to frame {count} of {self._count}")
        if self.directory is not None:
            for index in range(count, self._count):
                self.path(index).unlink(missing_ok=True)
        self._count = count
        self._emitted = min(self._emitted, count)
        if not resource_emitted:
            self._bundle = None

    def asset_docs(self, stop: int | None = None) -> Iterator[tuple[str, dict]]:
        """StreamResource (first call only) and one StreamDatum for the frames not yet
        announced, up to ``stop`` (exclusive; default: every frame numbered). Announce
        only frames whose files are written."""
        stop = self._count if stop is None else min(int(stop), self._count)
        if stop <= self._emitted:
            return
        if self._bundle is None:
            h, w = self.shape
            self._bundle = compose_stream_resource(
                mimetype=TIFF_MIMETYPE,
                uri=f"file://localhost{self.directory.resolve().as_posix()}/",
                data_key=self.data_key,
                parameters={"template": TIFF_TEMPLATE, "chunk_shape": [1, h, w]},
                validate=False,
            )
            yield "stream_resource", self._bundle.stream_resource_doc
        yield "stream_datum", self._bundle.compose_stream_datum(
            indices={"start": self._emitted, "stop": stop}, validate=False
        )
        self._emitted = stop
