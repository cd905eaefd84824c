"""Bluesky plans for a dual-beam FIB-SEM. Plans speak only bluesky messages.

Plan modules do not use ``from __future__ import annotations``: the queue server reads the
annotations at run time to type-check parameters and to map ``Readable`` to device names.
"""

from ._alignment import (
    AlignmentError,
    acquire_reference,
    align_beam_shift,
    align_stage,
    correct_drift,
    multi_step_alignment,
)
from ._autofunctions import auto_contrast_brightness, autofocus
from ._batch import import_experiment, measure_lamella, mill_lamellae
from ._coincidence import eucentric_alignment, find_coincidence
from ._deposition import cryo_deposition, sputter_coat
from ._detection import correct_keypoint, detect, move_based_on_detection, pending_corrections
from ._imaging import (
    acquire_image,
    acquire_series,
    apply_image_settings,
    take_reference_images,
)
from ._manipulator import (
    insert_manipulator,
    move_manipulator_corrected,
    move_manipulator_to_position_offset,
    read_manipulator_position,
    retract_manipulator,
)
from ._milling import mill_fiducial, mill_lamella, mill_stages
from ._movement import (
    go_to_position,
    move_flat_to_beam,
    move_to_milling_angle,
    read_geometry,
    read_stage_position,
    safe_absolute_move,
    save_position,
    stable_move,
    vertical_move,
)
from ._overview import acquire_overview, mosaic_pixel_to_stage, stage_to_mosaic_pixel
from ._safety import safe_state
from ._safety import safe_state_decorator as safe_state_decorator  # a wrapper, not a plan
from ._safety import safe_state_wrapper as safe_state_wrapper  # a wrapper, not a plan
from ._sites import select_sites
from ._state import restore_state, snapshot_state
from ._workflow import demo_workflow

__all__ = [
    "cryo_deposition",
    "detect",
    "correct_keypoint",
    "pending_corrections",
    "move_based_on_detection",
    "select_sites",
    "insert_manipulator",
    "move_manipulator_corrected",
    "move_manipulator_to_position_offset",
    "read_manipulator_position",
    "retract_manipulator",
    "sputter_coat",
    "acquire_overview",
    "mosaic_pixel_to_stage",
    "stage_to_mosaic_pixel",
    "auto_contrast_brightness",
    "autofocus",
    "AlignmentError",
    "acquire_reference",
    "align_beam_shift",
    "align_stage",
    "correct_drift",
    "eucentric_alignment",
    "find_coincidence",
    "acquire_image",
    "acquire_series",
    "apply_image_settings",
    "demo_workflow",
    "go_to_position",
    "measure_lamella",
    "mill_fiducial",
    "mill_lamella",
    "mill_lamellae",
    "import_experiment",
    "mill_stages",
    "move_flat_to_beam",
    "move_to_milling_angle",
    "multi_step_alignment",
    "read_geometry",
    "read_stage_position",
    "restore_state",
    "safe_state",
    "safe_absolute_move",
    "save_position",
    "snapshot_state",
    "stable_move",
    "take_reference_images",
    "vertical_move",
]
