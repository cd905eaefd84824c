"""Overview acquisition: a 3x3 serpentine tile scan, the stitched mosaic and its pixel -> stage
mapping, against the simulator's ground truth."""

import math

import numpy as np
import pytest

from fibsem_ophyd.alignment import register
from fibsem_ophyd.plans import (
    acquire_overview,
    acquire_reference,
    mosaic_pixel_to_stage,
    stable_move,
    stage_to_mosaic_pixel,
)
from fibsem_ophyd.storage import load_images


def _stage(microscope):
    return {ax: getattr(microscope.stage, ax).position for ax in "xyzrt"}


def test_overview_maps_a_feature_to_its_stage_position(session, microscope):
    sim, RE = session.backend, session.RE
    start = _stage(microscope)
    hfw0 = microscope.sem.hfw.get()
    res = RE(acquire_overview(microscope, rows=3, cols=3, hfw=150e-6, overlap=0.1)).plan_result
    mp = res["mapping"]
    mosaic = res["mosaic"]
    # back at the start, settings restored
    assert _stage(microscope) == pytest.approx(start, abs=1e-12)
    assert microscope.sem.hfw.get() == hfw0
    assert mosaic.shape == (mp["height"], mp["width"])
    assert mp["pairs_used"] == mp["pairs_total"] == 12
    assert mp["max_correction"] < 1.0  # px: the simulated stage is accurate
    # the run: 9 tiles in serpentine order, one mosaic event with the mapping
    run = session.catalog[res["uid"]]
    tiles = run["overview_tile"].read()
    assert list(tiles["overview_tile_col"].values) == [0, 1, 2, 2, 1, 0, 0, 1, 2]
    assert list(tiles["overview_tile_row"].values) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(run["electron"].read()["microscope_sem_pixel_size"]) == 9
    ev = run["overview_mosaic"].read()
    stored = {k: ev[f"overview_mosaic_{k}"].values[0] for k in mp}
    assert stored == pytest.approx(mp)
    # the mosaic itself is in the run: a TIFF with metadata, the stage at its centre pixel
    (img,) = load_images(run, "overview_mosaic")
    assert img.data.dtype == np.uint8 and img.data.shape == mosaic.shape
    assert np.abs(img.data.astype(float) - mosaic).max() <= 0.5
    assert img.pixel_size == pytest.approx(mp["pixel_size"])
    assert img.beam == "electron"
    assert [img.stage_position[a] for a in "xyz"] == pytest.approx(
        [start[a] for a in "xyz"], abs=1e-12)
    # from here on, only what is stored: pick the site on the stored mosaic with the stored map
    mosaic, mp = img.data.astype(np.float32), stored

    # a ground-truth particle in a corner tile (the farthest one fully inside a crop)
    v = sim.truth.view("electron")
    h, w = v.height, v.width
    s0 = sim.truth.surface_point("electron")
    best = None
    for f in sim.truth.features("particle", region=(s0[0] - 200e-6, s0[0] + 200e-6,
                                                   s0[1] - 200e-6, s0[1] + 200e-6)):
        col, row = sim.truth.project(f.position, "electron")
        mc, mr = col - (w - 1) / 2 + mp["centre_col"], row - (h - 1) / 2 + mp["centre_row"]
        if w / 2 + 2 < mc < mp["width"] - w / 2 - 2 and h / 2 + 2 < mr < mp["height"] - h / 2 - 2:
            d = math.hypot(mc - mp["centre_col"], mr - mp["centre_row"])
            if best is None or d > best[0]:
                best = (d, f, col, row, mc, mr)
    assert best is not None and best[0] > 250  # px: well outside the centre tile
    _, feat, col, row, mc, mr = best

    # centre it (ground truth) and take a frame there
    u, vv = (col - (w - 1) / 2) * v.pixel, -(row - (h - 1) / 2) * v.pixel
    RE(stable_move(microscope, -u, -vv, "electron"))
    c2, r2 = sim.truth.project(feat.position, "electron")
    assert math.hypot(c2 - (w - 1) / 2, r2 - (h - 1) / 2) * v.pixel < 0.05e-6
    centred = _stage(microscope)
    frame = RE(acquire_reference(microscope.sem, hfw=150e-6)).plan_result

    # find the particle in the mosaic: register the frame against the mosaic crop
    c0, r0 = int(round(mc)), int(round(mr))
    crop = mosaic[r0 - h // 2:r0 + h // 2, c0 - w // 2:c0 + w // 2]
    reg = register(crop, frame)
    assert reg.score > 0.5
    found_c = c0 - w // 2 + (w - 1) / 2 - reg.dx
    found_r = r0 - h // 2 + (h - 1) / 2 + reg.dy

    # the mosaic position maps to the stage position that centres the particle
    target = mosaic_pixel_to_stage(mp, found_c, found_r)
    err = math.dist([target[a] for a in "xyz"], [centred[a] for a in "xyz"])
    print(f"overview: mosaic -> stage error {err * 1e9:.0f} nm")
    assert err < 1e-6, err
    # and, by ground truth, going there centres it
    microscope.stage.set({a: target[a] for a in "xyz"})
    c3, r3 = sim.truth.project(feat.position, "electron")
    assert math.hypot(c3 - (w - 1) / 2, r3 - (h - 1) / 2) * v.pixel < 1e-6


def test_overview_checks_every_tile_before_moving(session, microscope):
    microscope.stage.set({"x": 0.0249})  # 100 um from the +x limit
    start = _stage(microscope)
    with pytest.raises(ValueError, match="out of the stage limits"):
        session.RE(acquire_overview(microscope, rows=1, cols=5, hfw=1e-3, overlap=0.1))
    assert _stage(microscope) == start


def test_overview_bad_input(microscope):
    for kwargs, match in [({"rows": 0}, "rows"), ({"cols": 2.5}, "cols"),
                          ({"hfw": -1.0}, "hfw"), ({"overlap": 0.9}, "overlap"),
                          ({"beam": "xray"}, "beam"), ({"hfw": 1.0}, "hfw")]:
        with pytest.raises(ValueError, match=match):
            next(iter(acquire_overview(microscope, **kwargs)))


def test_mosaic_pixel_to_stage_is_linear():
    mp = {"centre_col": 10.0, "centre_row": 20.0, "stage_x": 1.0, "stage_y": 2.0,
          "stage_z": 3.0, "stage_r": 0.0, "stage_t": 35.0, "dx_dcol": 0.5, "dy_dcol": 0.0,
          "dz_dcol": 0.0, "dx_drow": 0.0, "dy_drow": -0.25, "dz_drow": 0.1}
    out = mosaic_pixel_to_stage(mp, 12.0, 24.0)
    assert out == pytest.approx({"x": 2.0, "y": 1.0, "z": 3.4, "r": 0.0, "t": 35.0})
    assert np.isclose(mosaic_pixel_to_stage(mp, 10.0, 20.0)["x"], 1.0)
    # the inverse, from x and y (z left out: a site's height may differ from the plane's)
    assert stage_to_mosaic_pixel(mp, {**out, "z": 9.0}) == pytest.approx((12.0, 24.0))
    # a rotated scan: x and y both change along a row and along a column
    c, s = math.cos(0.3), math.sin(0.3)
    rot = {**mp, "dx_dcol": 0.5 * c, "dy_dcol": 0.5 * s, "dx_drow": 0.25 * s,
           "dy_drow": -0.25 * c}
    assert stage_to_mosaic_pixel(rot, mosaic_pixel_to_stage(rot, -3.5, 41.25)) == \
        pytest.approx((-3.5, 41.25))
    with pytest.raises(ValueError, match="degenerate"):
        stage_to_mosaic_pixel({**mp, "dx_dcol": 0.0, "dy_dcol": 0.0}, out)
