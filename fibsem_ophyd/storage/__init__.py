"""Storage: TIFF images with OpenFIBSEM metadata, and the Tiled catalog of Bluesky runs.

- :mod:`.metadata` -- the one metadata vocabulary (OpenFIBSEM ``FibsemImageMetadata``
  layout; our units in, radians only inside the dict).
- :mod:`.tiff` -- :func:`write_tiff`, :func:`read_tiff`, :class:`FibImage`,
  :class:`TiffSeries` (a device's frames and their StreamResource/StreamDatum).
- :mod:`.catalog` -- :func:`open_catalog` (embedded SQLite + DuckDB under a data
  directory, in-process), :func:`serve_catalog` (the same, served from a child process),
  :func:`open_remote_catalog`.
- :mod:`.writer` -- :class:`CatalogWriter`, the RunEngine callback (JSON-lines backup +
  background, adaptively batched catalog writes).
- :mod:`.reader` -- :func:`load_images`, :func:`search_runs`, :func:`replay`,
  :func:`replay_backup`.
- :mod:`.recovery` -- :func:`recover_run` (close a run whose writer died, from its backup),
  :func:`unfinished_backups`.
- :mod:`.validate` -- :func:`validate_document`.
- :mod:`.detection` -- :func:`detection_dataset` (stored detections and corrections),
  :func:`export_detection_dataset` (OpenFIBSEM's ``data.csv`` + TIFF layout),
  :func:`read_detection` (one run's, also while it waits for corrections).
"""

from .catalog import (
    BACKUP_DIR,
    IMAGES_DIR,
    CatalogServer,
    backup_dir,
    build_catalog_app,
    images_dir,
    open_catalog,
    open_remote_catalog,
    serialization_registry,
    serve_catalog,
)
from .detection import (
    DetectionItem,
    detection_dataset,
    export_detection_dataset,
    read_detection,
)
from .metadata import (
    METADATA_VERSION,
    get_beam,
    get_beam_settings,
    get_detector_settings,
    get_hardware_geometry,
    get_hfw,
    get_image_settings,
    get_pixel_size,
    get_resolution,
    get_stage_position,
    get_timestamp,
    image_metadata,
    image_settings,
    microscope_state,
    read_state,
    state_metadata,
    system_info,
)
from .reader import (
    image_files,
    image_keys,
    iter_backup,
    load_images,
    replay,
    replay_backup,
    search_runs,
)
from .recovery import RECOVERED_REASON, recover_run, unfinished_backups
from .tiff import (
    TIFF_MIMETYPE,
    TIFF_TEMPLATE,
    FibImage,
    TiffSeries,
    read_metadata,
    read_tiff,
    write_tiff,
)
from .validate import validate_document, validate_documents

# The writer imports bluesky_tiled_plugins/tiled (several seconds): load it on first use so
# that detectors importing the metadata/TIFF helpers stay light.
_LAZY = {"CatalogWriter": ".writer", "WriteError": ".writer", "StorageError": ".writer",
         "BackupWriteError": ".writer"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    # detection data engine
    "DetectionItem",
    "detection_dataset",
    "export_detection_dataset",
    "read_detection",
    # metadata
    "METADATA_VERSION",
    "microscope_state",
    "read_state",
    "state_metadata",
    "image_settings",
    "image_metadata",
    "system_info",
    "get_stage_position",
    "get_pixel_size",
    "get_beam",
    "get_hfw",
    "get_resolution",
    "get_timestamp",
    "get_image_settings",
    "get_beam_settings",
    "get_detector_settings",
    "get_hardware_geometry",
    # tiff
    "FibImage",
    "write_tiff",
    "read_tiff",
    "read_metadata",
    "TiffSeries",
    "TIFF_TEMPLATE",
    "TIFF_MIMETYPE",
    # catalog
    "open_catalog",
    "open_remote_catalog",
    "serve_catalog",
    "CatalogServer",
    "build_catalog_app",
    "serialization_registry",
    "images_dir",
    "backup_dir",
    "IMAGES_DIR",
    "BACKUP_DIR",
    # writer
    "CatalogWriter",
    "WriteError",
    "StorageError",
    "BackupWriteError",
    # reader
    "load_images",
    "image_files",
    "image_keys",
    "search_runs",
    "replay",
    "replay_backup",
    "iter_backup",
    # recovery
    "recover_run",
    "unfinished_backups",
    "RECOVERED_REASON",
    # validate
    "validate_document",
    "validate_documents",
]
