"""Pure geometry: OpenFIBSEM's published move table, exact vertical move, projection parity."""

import math

import numpy as np
import pytest

from fibsem_ophyd import geometry as g

GEOM = g.SystemGeometry()  # 52 deg ion column, 35 deg pre-tilt, rotations 0 / 180
D = math.radians


@pytest.mark.parametrize(
    "r, t, beam, expected_um",
    [
        # OpenFIBSEM 0.5.3 Demo output for dy = 10 um, (dy, dz) in um
        (0, 35, "electron", (8.19, -5.74)),
        (0, 35, "ion", (13.31, -9.32)),
        (180, 17, "electron", (13.31, 9.32)),
        (180, 17, "ion", (8.19, 5.74)),
        (0, 12, "electron", (8.90, -6.23)),
        (0, 12, "ion", (31.65, -22.16)),
    ],
)
def test_stable_move_matches_openfibsem_table(r, t, beam, expected_um):
    dx, dy, dz = g.stable_move_delta(3e-6, 10e-6, beam, D(r), D(t), GEOM)
    assert dx == pytest.approx(3e-6)
    assert dy * 1e6 == pytest.approx(expected_um[0], abs=0.01)
    assert dz * 1e6 == pytest.approx(expected_um[1], abs=0.01)


def _image_shift(delta, beam, r, t):
    """Image displacement of a sample point when the stage moves by ``delta`` (projection)."""
    m = g.sample_to_chamber_matrix(D(r), D(t), GEOM.shuttle_pre_tilt)
    s = np.array([1e-6, -2e-6, 0.5e-6])
    q0 = g.rx(D(t)) @ np.zeros(3) + m @ s
    q1 = g.rx(D(t)) @ np.asarray(delta) + m @ s
    right, up, _ = g.beam_axes(beam, GEOM)
    dq = q1 - q0
    return float(dq @ right), float(dq @ up)


@pytest.mark.parametrize("r, t", [(0, 35), (180, 17), (0, 12), (0, 0), (180, 30)])
@pytest.mark.parametrize("beam", ["electron", "ion"])
def test_stable_move_shifts_image_by_request_and_stays_in_plane(r, t, beam):
    delta = g.stable_move_delta(4e-6, -7e-6, beam, D(r), D(t), GEOM)
    ux, uy = _image_shift(delta, beam, r, t)
    assert ux == pytest.approx(4e-6, abs=1e-12)
    assert uy == pytest.approx(-7e-6, abs=1e-12)
    # the move stays in the sample plane: no component along the surface normal
    normal_stage = g.rz(D(r)) @ g.rx(-GEOM.shuttle_pre_tilt) @ np.array([0, 0, 1.0])
    assert float(np.dot(delta, normal_stage)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("t", [0, 12, 17, 35, 52])
def test_vertical_move_is_exact_and_invisible_to_sem(t):
    dy_img = 10e-6
    delta = g.vertical_move_delta(dy_img, D(t), GEOM)
    m = dy_img / math.sin(GEOM.ion_column_tilt)
    assert delta[1] == pytest.approx(m * math.sin(D(t)))
    assert delta[2] == pytest.approx(m * math.cos(D(t)))  # not m / cos t (OpenFIBSEM #720)
    chamber = g.rx(D(t)) @ np.asarray(delta)
    assert chamber[:2] == pytest.approx([0, 0], abs=1e-15)  # purely chamber-vertical
    assert _image_shift(delta, "ion", 0, t)[1] == pytest.approx(dy_img)
    assert _image_shift(delta, "electron", 0, t) == pytest.approx((0, 0), abs=1e-15)


def test_vertical_move_example_t17():
    _, dy, dz = g.vertical_move_delta(10e-6, D(17), GEOM)
    assert (dy * 1e6, dz * 1e6) == pytest.approx((3.71, 12.14), abs=0.01)


def test_orientations_and_milling_angle():
    assert [math.degrees(v) for v in g.flat_to_beam("electron", GEOM)] == pytest.approx([0, 35])
    assert [math.degrees(v) for v in g.flat_to_beam("ion", GEOM)] == pytest.approx([180, 17])
    assert math.degrees(g.milling_tilt(D(15), GEOM)) == pytest.approx(12.0)
    assert math.degrees(g.milling_angle(D(12), GEOM)) == pytest.approx(15.0)
    assert g.orientation_name(0, D(35), GEOM) == "SEM"
    assert g.orientation_name(math.pi, D(17), GEOM) == "FIB"
    assert g.orientation_name(0, D(12), GEOM) == "MILLING"


def test_flat_to_beam_puts_surface_normal_on_the_beam():
    for beam in ("electron", "ion"):
        r, t = g.flat_to_beam(beam, GEOM)
        normal = g.sample_to_chamber_matrix(r, t, GEOM.shuttle_pre_tilt) @ np.array([0, 0, 1.0])
        source = g.beam_axes(beam, GEOM)[2]
        assert float(normal @ source) == pytest.approx(1.0)


def test_pixel_conversion_round_trip_and_sign():
    shape = (1024, 1536)
    x, y = g.pixel_to_image(1535, 0, shape, 1e-7)
    assert x > 0 and y > 0  # top-right pixel: +x right, +y up
    col, row = g.image_to_pixel(x, y, shape, 1e-7)
    assert (float(col), float(row)) == pytest.approx((1535, 0))


def test_scan_rotation_180_negates_moves():
    a = g.stable_move_delta(1e-6, 2e-6, "electron", 0, D(35), GEOM)
    b = g.stable_move_delta(1e-6, 2e-6, "electron", 0, D(35), GEOM, scan_rotation=math.pi)
    assert np.allclose(a, [-v for v in b])


def test_edge_on_view_is_refused():
    with pytest.raises(ValueError, match="edge-on"):
        g.stable_move_delta(0, 1e-6, "ion", 0, D(35 + 52 - 90), GEOM)


def _chamber_shift(delta, beam):
    """Image (u, v) shift of a chamber-frame displacement (no scan rotation)."""
    right, up, _ = g.beam_axes(beam, GEOM)
    d = np.asarray(delta)
    return float(d @ right), float(d @ up)


@pytest.mark.parametrize("dx, dy", [(0.0, -8e-6), (3e-6, 5e-6)])
def test_corrected_ion_needle_move_is_vertical_in_the_ion_image_only(dx, dy):
    d = g.manipulator_corrected_delta(dx, dy, g.ION, GEOM)
    assert _chamber_shift(d, g.ION) == pytest.approx((dx, dy), abs=1e-15)
    assert _chamber_shift(d, g.ELECTRON) == pytest.approx((dx, 0.0), abs=1e-15)
    # along the electron axis: dz = dy / sin 52
    assert d[2] == pytest.approx(dy / math.sin(math.radians(52)))


def test_corrected_electron_needle_move_and_scan_rotation():
    d = g.manipulator_corrected_delta(4e-6, -2e-6, g.ELECTRON, GEOM)
    assert d == pytest.approx((4e-6, -2e-6, 0.0))
    assert _chamber_shift(d, g.ION) == pytest.approx((4e-6, -2e-6 * math.cos(math.radians(52))))
    # a 180 deg scan rotation flips what "right" and "up" mean in the image
    flipped = g.manipulator_corrected_delta(4e-6, -2e-6, g.ELECTRON, GEOM,
                                            scan_rotation=math.pi)
    assert flipped == pytest.approx((-4e-6, 2e-6, 0.0), abs=1e-18)
    with pytest.raises(ValueError, match="unknown beam"):
        g.manipulator_corrected_delta(0.0, 1e-6, "optical", GEOM)


TESCAN = g.SystemGeometry(ion_column_tilt=D(55), stage_type="tescan")
COMPUSTAGE = g.SystemGeometry(shuttle_pre_tilt=0.0, stage_type="compustage")


def _stage_image_shift(delta, beam, t, geom):
    """Image shift (m) of a stage move ``delta`` through the stage type's axes."""
    dq = g.stage_axes(D(t), geom) @ np.asarray(delta)
    right, up, _ = g.beam_axes(beam, geom)
    return float(dq @ right), float(dq @ up)


@pytest.mark.parametrize("r, t", [(0, 35), (180, 20), (0, 12), (0, -10)])
@pytest.mark.parametrize("beam", ["electron", "ion"])
def test_tescan_stable_move_has_openfibsem_tescan_split(r, t, beam):
    """TESCAN (z chamber-vertical, +down; y on the tilt): y = y_s cos(T - P') / cos T and
    z = y_s sin P' / cos T, with y_s = dy_img / cos(T - P' - view tilt)."""
    delta = g.stable_move_delta(4e-6, -7e-6, beam, D(r), D(t), TESCAN)
    p = -TESCAN.shuttle_pre_tilt if r == 180 else TESCAN.shuttle_pre_tilt
    y_s = -7e-6 / math.cos(D(t) - p - TESCAN.column_tilt(beam))
    assert delta == pytest.approx((4e-6, y_s * math.cos(D(t) - p) / math.cos(D(t)),
                                   y_s * math.sin(p) / math.cos(D(t))), rel=1e-12)
    assert _stage_image_shift(delta, beam, t, TESCAN) == pytest.approx((4e-6, -7e-6), abs=1e-15)


def test_tescan_vertical_move_is_a_pure_z_move():
    for t in (0, 20, 35):
        delta = g.vertical_move_delta(10e-6, D(t), TESCAN)
        assert delta == pytest.approx((0.0, 0.0, -10e-6 / math.sin(D(55))))
        assert _stage_image_shift(delta, "electron", t, TESCAN) == pytest.approx((0, 0), abs=1e-15)
        assert _stage_image_shift(delta, "ion", t, TESCAN)[1] == pytest.approx(10e-6)


def test_tescan_axes_degenerate_at_90_deg_tilt_are_refused():
    with pytest.raises(ValueError, match="degenerate at tilt 90.0"):
        g.stable_move_delta(0.0, 1e-6, "electron", 0.0, D(90), TESCAN)


def test_compustage_poses_and_milling_angle():
    """No rotation: flat to the ion beam is 180 deg further down the tilt (the ion beam faces
    the grid's back side); milling happens on the electron side at OpenFIBSEM's tilt."""
    assert np.degrees(g.flat_to_beam("electron", COMPUSTAGE)) == pytest.approx((0, 0))
    r, t = g.flat_to_beam("ion", COMPUSTAGE)
    assert np.degrees((r, t)) == pytest.approx((0, -128))
    normal = g.sample_to_chamber_matrix(r, t, 0.0) @ np.array([0, 0, 1.0])
    assert float(normal @ g.beam_axes("ion", COMPUSTAGE)[2]) == pytest.approx(-1.0)
    assert g.orientation_name(r, t, COMPUSTAGE) == "FIB"
    t15 = g.milling_tilt(D(15), COMPUSTAGE)
    assert math.degrees(t15) == pytest.approx(-23)
    assert math.degrees(g.milling_angle(t15, COMPUSTAGE)) == pytest.approx(15)
    assert math.degrees(g.milling_angle(t15 - math.pi, COMPUSTAGE)) == pytest.approx(15)


def test_unknown_stage_type_is_refused():
    with pytest.raises(ValueError, match="'tfs'.*shuttle, tescan, compustage"):
        g.SystemGeometry(stage_type="tfs")
