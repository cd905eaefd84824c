"""Overview (tiled) acquisition: a serpentine grid of stable moves, one frame per tile,
stitched into one mosaic with a pixel -> stage mapping.

The run holds the tile frames (stream named after the beam, with the stage position), one
"overview_tile" event per tile (``index``, ``row``, ``col``, the tile centre's image-plane
offset ``offset_x``/``offset_y`` m from the start view) and one "overview_mosaic" event with
the mosaic image itself (``overview_mosaic_image``: a uint8 TIFF with the usual metadata, the
stage at the mosaic centre; ``load_images(run, "overview_mosaic")``), its geometry and its
pixel -> stage mapping (see :func:`mosaic_pixel_to_stage`), so sites can be picked on the
stored mosaic of any earlier run.
"""

import math
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from .. import geometry, validate
from ..alignment.stitch import stitch_tiles
from ..beams import as_beam
from ._common import (
    beam_device,
    check_stage_position,
    count,
    in_run,
    positive,
    read_stage_limits,
    run_md,
)
from ._imaging import apply_image_settings
from ._movement import read_geometry, read_stage_position

__all__ = ["acquire_overview", "mosaic_pixel_to_stage", "stage_to_mosaic_pixel"]

def mosaic_pixel_to_stage(mapping: dict, col: float, row: float) -> dict[str, float]:
    """Stage position (x, y, z m; r, t deg) that centres mosaic pixel (``col``, ``row``) in
    the overview's beam.

    ``mapping`` is the ``"mapping"`` of :func:`acquire_overview`'s result, or the fields of
    the run's "overview_mosaic" event with the ``overview_mosaic_`` prefix removed. The stage
    position of the mosaic centre is the start position; a pixel offset maps linearly (a
    stable move): ``x = stage_x + dx_dcol * (col - centre_col) + dx_drow * (row - centre_row)``
    and likewise y, z; r and t are the start's.
    """
    dc = float(col) - float(mapping["centre_col"])
    dr = float(row) - float(mapping["centre_row"])
    out = {}
    for ax in ("x", "y", "z"):
        out[ax] = float(mapping[f"stage_{ax}"]) + float(mapping[f"d{ax}_dcol"]) * dc + \
            float(mapping[f"d{ax}_drow"]) * dr
    out["r"] = float(mapping["stage_r"])
    out["t"] = float(mapping["stage_t"])
    return out


def stage_to_mosaic_pixel(mapping: dict, position: dict) -> tuple[float, float]:
    """The mosaic pixel (``col``, ``row``) whose centring stage position is ``position``
    (its x and y), the inverse of :func:`mosaic_pixel_to_stage`.

    z is left out: a site saved after a coincidence search sits at the feature's height,
    not on the overview's plane. A mapping whose x, y columns are degenerate (a stage that
    does not move in x, y between pixels) raises ``ValueError``.
    """
    m = np.array([[float(mapping["dx_dcol"]), float(mapping["dx_drow"])],
                  [float(mapping["dy_dcol"]), float(mapping["dy_drow"])]])
    d = np.array([float(position["x"]) - float(mapping["stage_x"]),
                  float(position["y"]) - float(mapping["stage_y"])])
    if abs(np.linalg.det(m)) <= 1e-12 * float(np.abs(m).max() ** 2 or 1.0):
        raise ValueError(f"the overview mapping's stage x, y per pixel {m.tolist()} is "
                         "degenerate: no mosaic pixel for a stage position")
    dc, dr = np.linalg.solve(m, d)
    return float(mapping["centre_col"]) + float(dc), float(mapping["centre_row"]) + float(dr)


def acquire_overview(
    microscope: Readable,
    rows: int = 3,
    cols: int = 3,
    hfw: float = 150e-6,
    overlap: float = 0.1,
    beam: str = "electron",
    md: dict[str, Any] | None = None,
) -> MsgGenerator[dict]:
    """Image a ``rows x cols`` grid of tiles around the current view and stitch them.

    The tile centres are spaced by (1 - ``overlap``) of the field of view; the grid is
    centred on the current view. Every tile target (a stable move from the start, x/y/z
    only) is checked against the stage limits before the first move. Tiles are visited in
    serpentine order (row 0, the top, left to right; row 1 right to left; ...). The stage
    returns to the start position at the end (also if the plan fails), and the detector's
    ``hfw`` and reduced area are restored. The tiles are stitched by
    :func:`fibsem_ophyd.alignment.stitch.stitch_tiles` (neighbour registration on the
    overlaps, least squares, feathered blending).

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    rows, cols : int
        Grid size.
    hfw : float
        Field width (m) of each tile.
    overlap : float
        Overlap of neighbouring tiles, fraction of the field of view in [0.02, 0.5].
    beam : str
        "electron" (SEM) or "ion" (FIB).
    md : dict, optional
        Extra run metadata.

    Returns
    -------
    dict
        ``uid`` (the run), ``mosaic`` (float32 array, grey levels of the tiles; the run stores
        it rounded to uint8), ``mapping``
        (the "overview_mosaic" event's fields: mosaic size, ``pixel_size``, the pixel of the
        start view's centre ``centre_col``/``centre_row``, ``origin_x``/``origin_y`` (image-
        plane offset in m of pixel (0, 0) from that centre, +x right, +y up), the start stage
        position ``stage_*`` and the stage change per mosaic pixel ``d{x,y,z}_d{col,row}``),
        ``tile_positions`` ((n, 2) top-left col, row of each tile in the mosaic, row-major),
        ``pairs`` (neighbour registrations) and ``tiles`` (the frames, row-major).
    """
    rows, cols = count("rows", rows), count("cols", cols)
    hfw = positive("hfw", hfw)
    validate.in_range("overlap", overlap, (0.02, 0.5), rule="a fraction in [0.02, 0.5]")
    beam = as_beam(beam)
    detector = microscope.sem if beam == "electron" else microscope.fib
    # before the first message (tests step the plan with next()): the one synchronous check left
    detector.hfw.check_value(hfw)
    stage = microscope.stage
    tile_rec = microscope.recorders.overview_tile
    mosaic_rec = microscope.recorders.overview_mosaic
    mosaic_img = microscope.recorders.mosaic_images[beam]
    args = {"microscope": microscope, "rows": rows, "cols": cols, "hfw": hfw,
            "overlap": overlap, "beam": beam}
    state: dict = {}

    def body():
        state["hfw"] = float((yield from bps.rd(detector.hfw)))
        state["area"] = list((yield from bps.rd(detector.reduced_area)))  # [0, 0, 1, 1]: full
        yield from apply_image_settings(detector, {"hfw": hfw, "reduced_area": [0, 0, 1, 1]})
        w, h = (int(v) for v in (yield from bps.rd(detector.resolution)))
        geom = yield from read_geometry(microscope)
        pos0 = yield from read_stage_position(microscope)
        stage_limits = yield from read_stage_limits(microscope)
        rot = math.radians(float((yield from bps.rd(beam_device(microscope, beam).scan_rotation))))
        r, t = math.radians(pos0["r"]), math.radians(pos0["t"])
        pixel = hfw / w

        def delta(u, v):  # stage change that brings image-plane point (u, v) to the centre
            return geometry.stable_move_delta(-u, -v, beam, r, t, geom, scan_rotation=rot)

        step_c, step_r = w * (1.0 - overlap), h * (1.0 - overlap)  # px
        tiles_plan = []
        for i in range(rows):
            order = range(cols) if i % 2 == 0 else range(cols - 1, -1, -1)
            for j in order:
                u = (j - (cols - 1) / 2) * step_c * pixel
                v = ((rows - 1) / 2 - i) * step_r * pixel
                dx, dy, dz = delta(u, v)
                target = {"x": pos0["x"] + dx, "y": pos0["y"] + dy, "z": pos0["z"] + dz}
                try:
                    target = check_stage_position(stage_limits, target)
                except ValueError as exc:
                    raise ValueError(f"overview tile (row {i}, col {j}) is out of the stage "
                                     f"limits: {exc}") from exc
                tiles_plan.append((i, j, u, v, target))
        state["start"] = {ax: pos0[ax] for ax in ("x", "y", "z")}
        frames: dict[tuple[int, int], np.ndarray] = {}
        for n, (i, j, u, v, target) in enumerate(tiles_plan):
            yield from bps.mv(stage, target)
            yield from bps.trigger_and_read([detector, stage], name=beam)
            frame = yield from bps.rd(detector.last_frame, default_value=None)
            if frame is None:  # not a live RunEngine
                return {}
            frames[(i, j)] = np.asarray(frame)
            yield from bps.mv(tile_rec.index, n, tile_rec.row, i, tile_rec.col, j,
                              tile_rec.offset_x, u, tile_rec.offset_y, v)
            yield from bps.trigger_and_read([tile_rec], name="overview_tile")
        tiles = [frames[(i, j)] for i in range(rows) for j in range(cols)]
        nominal = [(j * step_c, i * step_r) for i in range(rows) for j in range(cols)]
        mosaic = stitch_tiles(tiles, nominal, rows, cols, refine=rows * cols > 1)
        centre_col = (cols - 1) / 2 * step_c + (w - 1) / 2 + mosaic.shift[0]
        centre_row = (rows - 1) / 2 * step_r + (h - 1) / 2 + mosaic.shift[1]
        jc = delta(pixel, 0.0)   # one mosaic column right: image-plane +pixel in x
        jr = delta(0.0, -pixel)  # one mosaic row down: image-plane -pixel in y
        used = [p for p in mosaic.pairs if p.used]
        mapping = {
            "width": int(mosaic.image.shape[1]), "height": int(mosaic.image.shape[0]),
            "pixel_size": pixel, "centre_col": centre_col, "centre_row": centre_row,
            "origin_x": -centre_col * pixel, "origin_y": centre_row * pixel,
            "stage_x": pos0["x"], "stage_y": pos0["y"], "stage_z": pos0["z"],
            "stage_r": pos0["r"], "stage_t": pos0["t"],
            "dx_dcol": jc[0], "dy_dcol": jc[1], "dz_dcol": jc[2],
            "dx_drow": jr[0], "dy_drow": jr[1], "dz_drow": jr[2],
            "pairs_used": len(used), "pairs_total": len(mosaic.pairs),
            "max_correction": max((math.hypot(p.dcol, p.drow) for p in used), default=0.0),
        }
        args_mv = [mosaic_img.image, mosaic.image, mosaic_img.pixel_size, pixel]
        for key, value in mapping.items():
            args_mv += [getattr(mosaic_rec, key), value]
        # back at the start: the stored mosaic's metadata has the stage of its centre pixel
        yield from bps.mv(stage, state["start"])
        yield from bps.mv(*args_mv)
        yield from bps.trigger_and_read([mosaic_rec, mosaic_img], name="overview_mosaic")
        return {"mosaic": mosaic.image, "mapping": mapping, "tile_positions": mosaic.positions,
                "pairs": mosaic.pairs, "tiles": tiles}

    def restore():
        if "start" in state:
            yield from bps.mv(stage, state["start"])
        if "hfw" in state:
            yield from apply_image_settings(detector, {"hfw": state["hfw"],
                                                       "reduced_area": state["area"]})

    @bpp.stage_decorator([detector, mosaic_img])
    def inner():
        plan = bpp.finalize_wrapper(body(), restore())
        return (yield from in_run(plan, run_md("acquire_overview", args, md, detectors=[detector])))

    uid, result = yield from inner()
    return {"uid": uid, **(result or {})}
