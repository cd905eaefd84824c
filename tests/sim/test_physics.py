"""Physical checks of the simulated images: every one is a measured pixel shift, focus or SNR.

Registration convention (``fibsem_ophyd.alignment.register``): +dx = content moved right,
+dy = content moved up. A stage move of +d moves the image content by +d.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fibsem_ophyd import geometry as G
from fibsem_ophyd.alignment import register

from ._helpers import SMALL, laplacian_variance, small_sim

HIGH_DOSE = {"dwell_time": 3e-6}
TOL_PX = 0.3

#: the three stage frames (``stage.type``), with the column and holder they come with
STAGES = {
    "shuttle": None,
    "tescan": {"stage": {"type": "tescan"}, "ion": {"column_tilt": 55.0}},
    "compustage": {"stage": {"type": "compustage", "shuttle_pre_tilt": 0.0,
                             "limits": {"t": [-195.0, 30.0]},
                             "initial_position": {"t": 0.0}}},
}


def _stage_sim(stage_type, seed, config=None):
    """A small simulator configured as ``stage_type``, flat to the electron beam."""
    cfg = dict(STAGES[stage_type] or {})
    for key, value in (config or {}).items():
        cfg[key] = {**cfg.get(key, {}), **value}
    sim = small_sim(seed=seed, config=cfg or None)
    assert sim.geometry.stage_type == stage_type
    r, t = G.flat_to_beam(G.ELECTRON, sim.geometry)
    sim.move_stage_absolute({"r": math.degrees(r), "t": math.degrees(t)})
    return sim


def _pixel(sim, beam):
    return sim.get("hfw", beam) / sim.get("resolution", beam)[0]


def _stable_shift(sim, move_beam, view_beam, d):
    """Apply the geometry's stable move for ``d`` (m) in ``move_beam``'s view and return
    (measured, expected) shifts in px of ``view_beam``'s image."""
    pos = sim.get_stage_position()
    before = sim.acquire_image(view_beam, HIGH_DOSE)
    dx, dy, dz = G.stable_move_delta(d[0], d[1], move_beam, math.radians(pos["r"]),
                                     math.radians(pos["t"]), sim.geometry)
    sim.move_stage_absolute({"x": pos["x"] + dx, "y": pos["y"] + dy, "z": pos["z"] + dz})
    after = sim.acquire_image(view_beam, HIGH_DOSE)
    sim.move_stage_absolute(pos)
    reg = register(before, after)
    p = _pixel(sim, view_beam)
    return np.array([reg.dx, reg.dy]), np.array(d) / p


@pytest.mark.parametrize("stage_type", list(STAGES))
@pytest.mark.parametrize("orientation", ["SEM", "MILLING"])
def test_stable_move_shifts_sem_image_by_d(orientation, stage_type):
    sim = _stage_sim(stage_type, seed=2)
    if orientation == "MILLING":
        t = math.degrees(G.milling_tilt(math.radians(15.0), sim.geometry))
        sim.move_stage_absolute({"t": t})
    got, want = _stable_shift(sim, "electron", "electron", (7.3e-6, -4.1e-6))
    assert np.all(np.abs(want) > 15)
    np.testing.assert_allclose(got, want, atol=TOL_PX)


@pytest.mark.parametrize("stage_type", list(STAGES))
@pytest.mark.parametrize("milling_angle", [None, 15.0])
def test_stable_move_in_ion_view_shifts_ion_image_by_d(milling_angle, stage_type):
    """Flat to the electron beam and at a 15 deg milling angle, for each stage frame."""
    sim = _stage_sim(stage_type, seed=3)
    if milling_angle is not None:
        t = G.milling_tilt(math.radians(milling_angle), sim.geometry)
        sim.move_stage_absolute({"t": math.degrees(t)})
    got, want = _stable_shift(sim, "ion", "ion", (-5.2e-6, 4.4e-6))
    np.testing.assert_allclose(got, want, atol=TOL_PX)


@pytest.mark.parametrize("rotation", [90.0, 30.0])
def test_stable_move_in_scan_rotated_ion_view(rotation):
    """Parallax no longer along the image columns: the rotated raster path."""
    sim = small_sim(seed=3)
    sim.set("scan_rotation", rotation, "ion")
    pos = sim.get_stage_position()
    before = sim.render_clean("ion")
    d = (5.2e-6, -4.4e-6)
    dx, dy, dz = G.stable_move_delta(*d, "ion", math.radians(pos["r"]), math.radians(pos["t"]),
                                     sim.geometry, scan_rotation=math.radians(rotation))
    sim.move_stage_absolute({"x": pos["x"] + dx, "y": pos["y"] + dy, "z": pos["z"] + dz})
    reg = register(before, sim.render_clean("ion"))
    assert not sim.last_render.aligned
    p = _pixel(sim, "ion")
    np.testing.assert_allclose([reg.dx, reg.dy], np.array(d) / p, atol=TOL_PX)


@pytest.mark.parametrize("stage_type", list(STAGES))
@pytest.mark.parametrize("milling_angle", [None, 15.0])
def test_vertical_move_shifts_ion_image_only(milling_angle, stage_type):
    sim = _stage_sim(stage_type, seed=4)
    if milling_angle is not None:
        t = G.milling_tilt(math.radians(milling_angle), sim.geometry)
        sim.move_stage_absolute({"t": math.degrees(t)})
    h = 3e-6
    pos = sim.get_stage_position()
    ion0, sem0 = sim.acquire_image("ion", HIGH_DOSE), sim.acquire_image("electron", HIGH_DOSE)
    dx, dy, dz = G.vertical_move_delta(h * math.sin(sim.geometry.ion_column_tilt),
                                       math.radians(pos["t"]), sim.geometry)
    sim.move_stage_absolute({"x": pos["x"] + dx, "y": pos["y"] + dy, "z": pos["z"] + dz})
    ion1, sem1 = sim.acquire_image("ion", HIGH_DOSE), sim.acquire_image("electron", HIGH_DOSE)
    r_ion, r_sem = register(ion0, ion1), register(sem0, sem1)
    expected = h * math.sin(sim.geometry.ion_column_tilt) / _pixel(sim, "ion")
    assert expected > 10
    assert r_ion.dx == pytest.approx(0.0, abs=TOL_PX)
    assert r_ion.dy == pytest.approx(expected, abs=TOL_PX)
    assert math.hypot(r_sem.dx, r_sem.dy) < TOL_PX


@pytest.mark.parametrize("stage_type", list(STAGES))
def test_sample_height_offset_is_an_eucentric_error(stage_type):
    """A sample sitting h too high: the FIB image is displaced by h sin(ion tilt), the SEM not."""
    h = 4e-6
    ref = _stage_sim(stage_type, seed=5)
    high = _stage_sim(stage_type, seed=5, config={"sim": {"sample_height_offset": h}})
    r_ion = register(ref.render_clean("ion"), high.render_clean("ion"))
    r_sem = register(ref.render_clean("electron"), high.render_clean("electron"))
    tilt = ref.geometry.ion_column_tilt
    assert r_ion.dy == pytest.approx(h * math.sin(tilt) / _pixel(ref, "ion"), abs=TOL_PX)
    assert math.hypot(r_sem.dx, r_sem.dy) < TOL_PX
    # the true eucentric height moved by h along the stage z: tilted by the pre-tilt on the
    # shuttle, chamber-vertical and pointing down on the TESCAN stage
    dz = ref.truth.eucentric_z() - high.truth.eucentric_z()
    want = {"shuttle": h * math.cos(ref.geometry.shuttle_pre_tilt), "tescan": -h,
            "compustage": h}[stage_type]
    assert dz == pytest.approx(want, rel=0.02)


def test_defocus_lowers_sharpness_monotonically():
    sim = small_sim(seed=6)
    focus = sim.truth.focus_working_distance("electron")
    scores = []
    for dz in (0.0, 40e-6, 80e-6, 160e-6, 320e-6):
        sim.set("working_distance", focus + dz, "electron")
        scores.append(laplacian_variance(sim.acquire_image("electron", {"dwell_time": 2e-5})))
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores
    # defocus either way blurs
    sim.set("working_distance", focus - 160e-6, "electron")
    below = laplacian_variance(sim.acquire_image("electron", {"dwell_time": 2e-5}))
    assert below < scores[0]


def test_focus_follows_the_surface_along_each_beam():
    """A vertical raise h: the SEM focus (WD) shortens by exactly h; the FIB focal distance
    of its image centre by ~h / cos(52 deg) (the centre ray meets the raised surface further
    up the ion axis; a single feature would move h cos(52 deg) along it)."""
    sim = small_sim(seed=6)
    e0 = sim.truth.focus_working_distance("electron")
    i0 = sim.truth.focus_working_distance("ion")
    pos = sim.get_stage_position()
    h = 20e-6
    t = math.radians(pos["t"])
    sim.move_stage_absolute({"y": pos["y"] + h * math.sin(t), "z": pos["z"] + h * math.cos(t)})
    assert e0 - sim.truth.focus_working_distance("electron") == pytest.approx(h, abs=1e-9)
    di = i0 - sim.truth.focus_working_distance("ion")
    assert di == pytest.approx(h / math.cos(math.radians(52)), rel=0.05)


def _noise_and_mean(sim, dwell):
    a = sim.acquire_image("electron", {"dwell_time": dwell}).astype(np.float64)
    b = sim.acquire_image("electron", {"dwell_time": dwell}).astype(np.float64)
    ok = (a > 0) & (a < 255) & (b > 0) & (b < 255)
    return float(np.std((a - b)[ok]) / math.sqrt(2)), float(a[ok].mean())


def test_doubling_dwell_raises_snr_by_sqrt2_and_keeps_grey_level():
    sim = small_sim(seed=7)
    n1, m1 = _noise_and_mean(sim, 1e-6)
    n2, m2 = _noise_and_mean(sim, 2e-6)
    assert (n1 / n2) / math.sqrt(2) == pytest.approx(1.0, abs=0.1)
    assert (m2 / n2) / (m1 / n1) == pytest.approx(math.sqrt(2), rel=0.1)
    assert abs(m1 - m2) < 2.0


@pytest.mark.parametrize("beam", ["electron", "ion"])
def test_default_settings_are_well_exposed(beam):
    sim = small_sim(seed=1)
    img = sim.acquire_image(beam)
    assert 0.35 <= img.mean() / 255 <= 0.65
    assert (img == 255).mean() < 0.01 and (img == 0).mean() < 0.01


def test_brightness_shifts_mean_and_contrast_scales_spread():
    sim = small_sim(seed=8)
    means = []
    for b in (0.2, 0.35, 0.5, 0.65, 0.8):
        sim.set("brightness", b, "electron")
        means.append(float(sim.acquire_image("electron").mean()))
    assert all(x < y for x, y in zip(means, means[1:], strict=False)), means
    sim.set("brightness", 0.5, "electron")
    spreads = []
    for c in (0.2, 0.35, 0.5, 0.65):
        sim.set("contrast", c, "electron")
        img = sim.acquire_image("electron").astype(float)
        spreads.append(float(np.percentile(img, 90) - np.percentile(img, 10)))
    assert all(x < y for x, y in zip(spreads, spreads[1:], strict=False)), spreads


def test_autocontrast_exposes_a_badly_set_detector():
    sim = small_sim(seed=9)
    sim.set("brightness", 0.05, "ion")
    sim.set("contrast", 0.95, "ion")
    img = sim.acquire_image("ion", {"autocontrast": True})
    assert 0.42 <= img.mean() / 255 <= 0.58
    assert (img == 255).mean() < 0.01 and (img == 0).mean() < 0.01
    assert sim.get("brightness", "ion") != 0.05 and sim.get("contrast", "ion") != 0.95


def test_ion_and_electron_contrast_differ():
    """Same sample, same pose: metal bars bright in both, ice much darker in the FIB."""
    sim = small_sim(seed=1)
    sem = sim.render_clean("electron")
    ion = sim.render_clean("ion")
    # the central hole (ice) relative to the image: far darker in the ion image
    c_sem = np.median(sem[200:312, 300:468]) / np.median(sem)
    c_ion = np.median(ion[200:312, 300:468]) / np.median(ion)
    assert c_ion < 0.7 * c_sem
    ncc = np.corrcoef(sem.ravel(), ion.ravel())[0, 1]
    assert ncc < 0.9


def test_reduced_area_is_a_crop_of_the_full_frame():
    sim = small_sim(seed=10)
    ra = (0.25, 0.5, 0.5, 0.25)                      # left, top, width, height
    full = sim.render_clean("electron")
    crop = sim.render_clean("electron", {"reduced_area": ra})
    w, h = SMALL
    expected = full[int(0.5 * h):int(0.75 * h), int(0.25 * w):int(0.75 * w)]
    np.testing.assert_array_equal(crop, expected)
    img_full = sim.acquire_image("electron", HIGH_DOSE)
    img_crop = sim.acquire_image("electron", {**HIGH_DOSE, "reduced_area": ra})
    assert img_crop.shape == crop.shape
    reg = register(img_full[256:384, 192:576], img_crop)
    assert math.hypot(reg.dx, reg.dy) < TOL_PX


def test_scan_rotation_180_flips_the_image():
    sim = small_sim(seed=11)
    for beam in ("electron", "ion"):
        a = sim.render_clean(beam)
        sim.set("scan_rotation", 180.0, beam)
        b = sim.render_clean(beam)
        sim.set("scan_rotation", 0.0, beam)
        assert np.corrcoef(a[::-1, ::-1].ravel(), b.ravel())[0, 1] > 0.99
        reg = register(a[::-1, ::-1], b)
        assert math.hypot(reg.dx, reg.dy) < TOL_PX


def test_scan_rotation_90_rotates_the_image():
    sim = small_sim(seed=11)
    sim.set("resolution", [512, 512], "electron")
    a = sim.render_clean("electron")
    sim.set("scan_rotation", 90.0, "electron")
    b = sim.render_clean("electron")
    # scanning rotated by +90 deg shows the content rotated by -90 deg (clockwise)
    reg = register(np.rot90(a, -1), b)
    assert math.hypot(reg.dx, reg.dy) < TOL_PX and reg.score > 0.8


@pytest.mark.parametrize("beam", ["electron", "ion"])
def test_beam_shift_moves_the_field_of_view(beam):
    """(u, v) = R(-rho) q - b: a beam shift b moves the content by -b/p."""
    sim = small_sim(seed=12)
    a = sim.acquire_image(beam, HIGH_DOSE)
    b_shift = (4e-6, -3e-6)
    sim.set("shift", list(b_shift), beam)
    b = sim.acquire_image(beam, HIGH_DOSE)
    reg = register(a, b)
    p = _pixel(sim, beam)
    assert reg.dx == pytest.approx(-b_shift[0] / p, abs=TOL_PX)
    assert reg.dy == pytest.approx(-b_shift[1] / p, abs=TOL_PX)


def test_drift_moves_the_sample_with_the_clock():
    v = 2e-9                                              # m/s along the chamber x
    sim = small_sim(seed=13, config={"sim": {"drift": {"velocity": [v, 0.0, 0.0],
                                                       "settle_amplitude": 0.0}}})
    a = sim.acquire_image("electron", HIGH_DOSE)
    t0 = sim.time()
    sim.clock.advance(1000.0)
    b = sim.acquire_image("electron", HIGH_DOSE)
    dt = sim.time() - t0 - 0.0                           # includes one frame time
    reg = register(a, b)
    assert reg.dx == pytest.approx(v * dt / _pixel(sim, "electron"), abs=TOL_PX)
    assert abs(reg.dy) < TOL_PX
    assert sim.get_stage_position()["x"] == 0.0         # the encoders do not see drift
