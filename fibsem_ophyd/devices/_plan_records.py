"""The recorder devices the plans record their measurements with, built once per microscope.

A plan sets a recorder's fields (``bps.mv``) and reads it into its run
(``bps.trigger_and_read``); it never builds a device. Every record a plan makes sets all the
fields of its recorder, so a recorder reused from run to run carries nothing over.
"""

from __future__ import annotations

from ._recorder import make_recorder
from ._stored_image import StoredImage

__all__ = ["PLAN_RECORDS", "PlanRecorders"]


def _detection_fields(correction: bool) -> dict[str, tuple[str, str | None]]:
    """``detect``'s fields for every OpenFIBSEM feature (NaN where not asked or not found)."""
    from ..detection import FEATURES

    out: dict[str, tuple[str, str | None]] = {}
    for n in FEATURES:
        out[f"{n}_x"] = ("number", "pixel")
        out[f"{n}_y"] = ("number", "pixel")
        if correction:
            out[f"{n}_dpx"] = ("number", "pixel")
            out[f"{n}_dpy"] = ("number", "pixel")
            out[f"{n}_dmx"] = ("number", "m")
            out[f"{n}_dmy"] = ("number", "m")
            out[f"{n}_correct"] = ("integer", None)
        else:
            out[f"{n}_mx"] = ("number", "m")
            out[f"{n}_my"] = ("number", "m")
    return out

#: ``{recorder name: {field: (dtype, units)}}``: the event fields of each plan record
PLAN_RECORDS: dict[str, dict[str, tuple[str, str | None]]] = {
    # align_beam_shift, align_stage, correct_drift, find_coincidence, mill_stages' alignment
    "alignment": {
        "iteration": ("integer", None),
        "beam": ("string", None),
        "action": ("string", None),
        "dx": ("number", "m"),
        "dy": ("number", "m"),
        "score": ("number", None),
        "move_x": ("number", "m"),
        "move_y": ("number", "m"),
        "hfw": ("number", "m"),
    },
    "autofocus": {
        "sweep": ("string", None),
        "step": ("integer", None),
        "working_distance": ("number", "m"),
        "score": ("number", None),
        "action": ("string", None),
    },
    "contrast_brightness": {
        "iteration": ("integer", None),
        "brightness": ("number", None),
        "contrast": ("number", None),
        "mean": ("number", None),
        "saturation": ("number", None),
        "dark": ("number", None),
        "action": ("string", None),
    },
    # mill_lamellae: one event per site
    "site": {
        "site": ("string", None),
        "status": ("string", None),
        "sections_done": ("string", None),
        "skipped_section": ("string", None),
        "reason": ("string", None),
        "thickness": ("number", "m"),
        "thickness_reason": ("string", None),
    },
    "lamella": {
        "thickness": ("number", "m"),
        "top": ("number", "m"),
        "bottom": ("number", "m"),
        "contrast": ("number", None),
        "expected": ("number", "m"),
        "reason": ("string", None),
    },
    "deposition_record": {"deposition_step": ("string", None)},
    # a suspension of a run (vacuum loss, beam trip): "suspended" then "resumed"
    "suspension": {"event": ("string", None), "reason": ("string", None)},
    "overview_tile": {
        "index": ("integer", None),
        "row": ("integer", None),
        "col": ("integer", None),
        "offset_x": ("number", "m"),
        "offset_y": ("number", "m"),
    },
    "overview_mosaic": {
        "width": ("integer", "px"),
        "height": ("integer", "px"),
        "pixel_size": ("number", "m"),
        "centre_col": ("number", "px"),
        "centre_row": ("number", "px"),
        "origin_x": ("number", "m"),
        "origin_y": ("number", "m"),
        "stage_x": ("number", "m"),
        "stage_y": ("number", "m"),
        "stage_z": ("number", "m"),
        "stage_r": ("number", "deg"),
        "stage_t": ("number", "deg"),
        "dx_dcol": ("number", "m"),
        "dy_dcol": ("number", "m"),
        "dz_dcol": ("number", "m"),
        "dx_drow": ("number", "m"),
        "dy_drow": ("number", "m"),
        "dz_drow": ("number", "m"),
        "pairs_used": ("integer", None),
        "pairs_total": ("integer", None),
        "max_correction": ("number", "px"),
    },
    # save_position, import_experiment: the saved stage positions after the change, one
    # event per position (stream "positions"), so the newest such run is the whole list
    "position": {
        "label": ("string", None),  # the position's name ("name" is ophyd's)
        "x": ("number", "m"),
        "y": ("number", "m"),
        "z": ("number", "m"),
        "r": ("number", "deg"),
        "t": ("number", "deg"),
    },
    # select_sites: one event per grid square
    "square": {
        "col": ("number", "px"),
        "row": ("number", "px"),
        "size": ("number", "m"),
        "grey": ("number", None),
        "roughness": ("number", None),
        "whole": ("integer", None),
        "bare": ("integer", None),
        "site": ("string", None),
        "stage_x": ("number", "m"),
        "stage_y": ("number", "m"),
        "stage_z": ("number", "m"),
    },
}


class PlanRecorders:
    """One recorder device per :data:`PLAN_RECORDS` entry, as an attribute of that name
    (``microscope.recorders.alignment``), and ``mosaic_images``: per beam ("electron",
    "ion") the :class:`StoredImage` named "overview_mosaic" that stores a stitched overview
    with that beam's detector metadata.

    Parameters
    ----------
    detectors : dict
        ``{beam: imaging detector}``.
    """

    def __init__(self, detectors: dict):
        for name, fields in PLAN_RECORDS.items():
            setattr(self, name, make_recorder(name, fields))
        self.mosaic_images = {beam: StoredImage(name="overview_mosaic", detector=det)
                              for beam, det in detectors.items()}
        # detect: the keypoints, the user's corrections, the mask and a given frame
        self.detection = make_recorder("detection", _detection_fields(False))
        self.correction = make_recorder("correction", _detection_fields(True))
        self.detection_masks = {beam: StoredImage(name="detection_mask", detector=det)
                                for beam, det in detectors.items()}
        self.detection_images = {beam: StoredImage(name="detection_image", detector=det)
                                 for beam, det in detectors.items()}
