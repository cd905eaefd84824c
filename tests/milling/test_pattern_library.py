"""The pattern library: every OpenFIBSEM pattern by name, its area and volume from geometry
(overlaps counted once) agreeing with the depth map it draws, its shapes where geometry puts
them, and bad input refused with the offending value named."""

import math

import numpy as np
import pytest

from fibsem_ophyd.milling import (
    PATTERNS,
    ArrayPattern,
    BitmapPattern,
    CirclePattern,
    Fiducial,
    Horseshoe,
    HorseshoeVertical,
    LinePattern,
    MicroExpansion,
    MillingStage,
    PolygonPattern,
    RectanglePattern,
    SerialSection,
    TrapezoidTrench,
    Trench,
    Undercut,
    WaffleNotch,
    check_patterns,
    estimate_milling_time,
    make_pattern,
)

UM = 1e-6
PX = 20e-9


def near(value, rel=1e-9):
    """pytest.approx without its 1e-12 absolute floor, which would swallow any m^2 or m^3."""
    return pytest.approx(value, rel=rel, abs=0)


FIELD = (1000, 1500)  # 20 x 30 um at 20 nm pixels

OPENFIBSEM_NAMES = {
    "Rectangle", "Line", "Circle", "Polygon", "PolygonPattern", "Bitmap", "Trench", "Horseshoe",
    "HorseshoeVertical", "Undercut", "Fiducial", "MicroExpansion", "SerialSection",
    "ArrayPattern", "WaffleNotch", "TrapezoidTrench",
}


def test_every_pattern_is_available_by_its_openfibsem_name():
    assert OPENFIBSEM_NAMES <= set(PATTERNS)
    for name, cls in PATTERNS.items():
        p = make_pattern({"name": name})  # OpenFIBSEM's defaults
        assert isinstance(p, cls)
        assert p.area > 0 and p.volume > 0
        # our dict form builds the same pattern again
        again = make_pattern(p.to_dict())
        assert again.area == near(p.area) and again.volume == near(p.volume)
    assert isinstance(make_pattern({"name": "horseshoevertical"}), HorseshoeVertical)


# (pattern, analytic area m^2, analytic volume m^3); each fits the 30 x 20 um field. Edges that
# would fall on pixel centres are moved OFF them, so the drawn count has no boundary rows.
OFF = 0.013 * UM
T60 = math.tan(math.radians(60))
CASES = {
    "rectangle, regular cross-section (a ramp: half the box)": (
        RectanglePattern(8 * UM, 3 * UM, 1 * UM, centre_x=2 * UM, centre_y=-1 * UM, rotation=30,
                         cross_section="RegularCrossSection"), 24e-12, 12e-18),
    "line": (LinePattern(-5 * UM, 5 * UM, -4.2 * UM, 4.6 * UM, 1 * UM, width=0.2 * UM,
                         centre_x=1 * UM),
             math.hypot(10, 8.8) * 0.2e-12, math.hypot(10, 8.8) * 0.2e-18),
    "annulus": (CirclePattern(4 * UM, 1 * UM, thickness=1 * UM),
                math.pi * (16 - 9) * 1e-12, math.pi * (16 - 9) * 1e-18),
    "polygon": (PolygonPattern([[0, 0], [6 * UM, 0], [0, 4 * UM]], 1 * UM, centre_x=-3 * UM),
                12e-12, 12e-18),
    # 4 x 4 pixels of 2 x 1.5 um, 9 milled, grey sum 7; turned 20 degrees
    "bitmap": (BitmapPattern([[1, 1, 0, 0], [0.5, 0.5, 0, 0], [1, 0, 0, 0.5], [1, 1, 0, 0.5]],
                             8 * UM, 6 * UM, 2 * UM, rotation=20),
               9 * 3e-12, 7 * 3e-12 * 2 * UM),
    # two cuts 10 um wide, 3 and 2 um high
    "trench": (Trench(10 * UM, 3 * UM, 2 * UM, 1 * UM, 2 * UM), 50e-12, 100e-18),
    # cuts 10 x (3 + 2) plus a side 2 um wide across 3 + 1.5 + 2 um
    "horseshoe": (Horseshoe(10 * UM, 3 * UM, 2 * UM, 1.5 * UM, 1 * UM, side_width=2 * UM,
                            centre_y=OFF),
                  50e-12 + 2 * 6.5e-12, (50e-12 + 2 * 6.5e-12) * UM),
    # top (6 + 2 x 2) x 3, sides 2 x 12 each
    "vertical horseshoe": (HorseshoeVertical(6 * UM, 12 * UM, 2 * UM, 3 * UM, 1 * UM,
                                             centre_y=-1.5 * UM),
                           30e-12 + 48e-12, 78e-18),
    # bar 8 x 1.5, side 1.5 x 6: they share a 1.5 um square
    "undercut": (Undercut(8 * UM, 10 * UM, 2 * UM, 1.5 * UM, 6 * UM, centre_y=OFF),
                 12e-12 + 9e-12 - 2.25e-12, (12 + 9 - 2.25) * 2e-18),
    # two 1 x 10 bars share a 1 um square
    "fiducial": (Fiducial(10 * UM, 1 * UM, 1 * UM), 19e-12, 19e-18),
    # one bar halved: 10 + 5 - the half square they share
    "asymmetric fiducial": (Fiducial(10 * UM, 1 * UM, 1 * UM, rotation=20, asymmetric=True),
                            14.5e-12, 14.5e-18),
    # cuts 2 um wide 0.5 um either side of the centre overlap: one 3 x 10 um cut
    "overlapping expansion joints": (MicroExpansion(2 * UM, 10 * UM, 0.5 * UM, 1 * UM),
                                     30e-12, 30e-18),
    # 4 columns 3 um wide at a 2.5 um pitch overlap: 3 rows of 10.5 x 2 um
    "overlapping array": (ArrayPattern(3 * UM, 2 * UM, 1 * UM, n_columns=4, n_rows=3,
                                       pitch_vertical=3 * UM, pitch_horizontal=2.5 * UM),
                          3 * 10.5 * 2e-12, 3 * 10.5 * 2e-18),
    "notch": (WaffleNotch(4 * UM, 1 * UM, 1 * UM, 4 * UM, 1 * UM, 4 * UM),
              2 * 4e-12 + 2 * 4e-12 + 1 * 5e-12, 21e-18),
    "trapezoid trench": (TrapezoidTrench(8 * UM, 3 * UM, 2 * UM, 1 * UM, angle=60),
                         2 * 3 * (8 + 3 * T60) * 1e-12, 2 * 3 * (8 + 3 * T60) * 1e-18),
}


def _serial_section():
    # lines 0.5 um wide: section 12 um long 20 um deep at y = 3.03 um; side lines 40 um deep,
    # horizontal 4 um centred on each end, vertical 5 um up from each end (edges placed off
    # the pixel centres, so the drawn count has no boundary rows)
    s = SerialSection(section_thickness=3.03 * UM, section_width=12 * UM, section_depth=20 * UM,
                      side_width=4 * UM, side_height=5 * UM, side_depth=40 * UM,
                      line_width=0.5 * UM, centre_x=0.31 * UM)
    lw = 0.5 * UM
    area = (12 + 4) * UM * lw + 2 * (lw * 5 * UM - lw * lw / 2)
    # the deeper side lines set the depth where they cross the section line
    volume = lw * (2 * 4 * UM * 40 * UM + (12 - 4) * UM * 20 * UM) \
        + 2 * (lw * 5 * UM - lw * lw / 2) * 40 * UM
    return s, area, volume


CASES["serial section"] = _serial_section()


@pytest.mark.parametrize("case", sorted(CASES))
def test_area_and_volume_from_geometry_match_the_drawn_depth_map(case):
    pattern, area, volume = CASES[case]
    assert pattern.area == near(area)
    assert pattern.volume == near(volume)
    depth = pattern.depth_map(FIELD, PX)
    assert np.count_nonzero(depth) * PX**2 == near(area, rel=0.01)
    assert depth.sum() * PX**2 == near(volume, rel=0.01)


def test_overlaps_of_ramped_shapes_count_the_deepest_once():
    # regular cross-sections crossing at 30 degrees: no closed form, but the depth map's
    # integral is the same union at the deepest ramp
    fid = Fiducial(10 * UM, 1.5 * UM, 2 * UM, rotation=30, cross_section="RegularCrossSection")
    drawn = fid.depth_map((1000, 1000), 15e-9).sum() * 15e-9**2
    assert fid.volume == near(drawn, rel=0.005)
    separate = sum(s.volume for s in fid.shapes())
    assert fid.volume < separate  # the crossing square is not removed twice


def test_trenches_leave_the_lamella_and_horseshoes_close_one_side():
    lamella = (-4 * UM, -0.5 * UM + 1e-9, 4 * UM, 0.5 * UM - 1e-9)
    check_patterns(Trench(10 * UM, 3 * UM, 3 * UM, 1 * UM, 1 * UM), 80 * UM, protected=lamella)
    check_patterns(TrapezoidTrench(8 * UM, 3 * UM, 1 * UM, 1 * UM), 80 * UM, protected=lamella)
    h = Horseshoe(10 * UM, 3 * UM, 2 * UM, 1 * UM, 1 * UM, side_width=2 * UM)
    check_patterns(h, 80 * UM, protected=lamella)
    # the side cut sits just outside the right end and spans lower cut to upper cut
    side = h.shapes()[2]
    assert side.bounds == pytest.approx((5 * UM, -2.5 * UM, 7 * UM, 3.5 * UM))
    inv = Horseshoe(10 * UM, 3 * UM, 2 * UM, 1 * UM, 1 * UM, side_width=2 * UM, inverted=True)
    assert inv.shapes()[2].bounds == pytest.approx((-7 * UM, -2.5 * UM, -5 * UM, 3.5 * UM))
    # the trapezoid widens away from the lamella by height x tan(angle) each side
    upper = TrapezoidTrench(8 * UM, 3 * UM, 1 * UM, 1 * UM, angle=30).shapes()[0]
    far = 8 * UM + 2 * 3 * UM * math.tan(math.radians(30))
    assert upper.bounds == pytest.approx((-far / 2, 0.5 * UM, far / 2, 3.5 * UM))


def test_vertical_horseshoe_frames_the_block_and_mills_towards_it():
    v = HorseshoeVertical(6 * UM, 12 * UM, 2 * UM, 3 * UM, 1 * UM)
    top, left, right = v.shapes()
    assert top.bounds == pytest.approx((-5 * UM, 6 * UM, 5 * UM, 9 * UM))
    assert (left.scan_direction, right.scan_direction) == ("LeftToRight", "RightToLeft")
    check_patterns(v, 80 * UM, protected=(-3 * UM + 1e-9, -6 * UM, 3 * UM - 1e-9,
                                          6 * UM - 1e-9))
    inv = HorseshoeVertical(6 * UM, 12 * UM, 2 * UM, 3 * UM, 1 * UM, inverted=True)
    assert inv.shapes()[0].bounds == pytest.approx((-5 * UM, -9 * UM, 5 * UM, -6 * UM))


def test_undercut_is_an_l_of_a_bar_and_a_side_cut_down_its_right_end():
    u = Undercut(8 * UM, 10 * UM, 2 * UM, 1.5 * UM, 6 * UM, centre_x=1 * UM)
    bar, side = u.shapes()
    assert bar.bounds == pytest.approx((-3 * UM, -0.75 * UM, 5 * UM, 0.75 * UM))
    assert side.bounds == pytest.approx((3.5 * UM, -5.25 * UM, 5 * UM, 0.75 * UM))


def test_fiducial_and_notch_orientation():
    # an asymmetric fiducial keeps only the half of its first bar along +its axis
    f = Fiducial(10 * UM, 1 * UM, 1 * UM, rotation=0, asymmetric=True)
    assert f.depth_at(0.0, 3 * UM) > 0 and f.depth_at(0.0, -3 * UM) == 0
    # the inverted notch is the mirror image
    n, m = WaffleNotch(), WaffleNotch(inverted=True)
    x0, y0, x1, y1 = n.bounds
    assert m.bounds == pytest.approx((-x1, y0, -x0, y1))
    d = n.depth_map((400, 600), 20e-9)
    assert np.array_equal(d[:, ::-1], m.depth_map((400, 600), 20e-9))


def test_serial_section_and_array_placement():
    s = SerialSection(inverted=True, use_side_patterns=False, centre_y=2 * UM)
    (line,) = s.shapes()
    assert line.start_y == pytest.approx(2 * UM - 4 * UM) and line.length == pytest.approx(50 * UM)
    a = ArrayPattern(n_columns=3, n_rows=2, pitch_horizontal=4 * UM, pitch_vertical=5 * UM,
                     centre_x=1 * UM)
    centres = sorted((round(r.centre_x / UM, 6), round(r.centre_y / UM, 6)) for r in a.shapes())
    assert centres == [(-3, -2.5), (-3, 2.5), (1, -2.5), (1, 2.5), (5, -2.5), (5, 2.5)]


def test_passes_do_not_change_the_dose_or_the_time():
    box = {"width": 10 * UM, "height": 5 * UM, "depth": 2 * UM}
    once = estimate_milling_time(RectanglePattern(**box), 1e-9)
    assert estimate_milling_time(RectanglePattern(**box, passes=12), 1e-9) == once
    arr = ArrayPattern(passes=3)
    assert {s.passes for s in arr.shapes()} == {3}
    stage = MillingStage.from_dict({"name": "welds", "milling": {"milling_current": 1e-9},
                                    "pattern": {"name": "ArrayPattern", "passes": 3}})
    plain = MillingStage.from_dict({"name": "welds", "milling": {"milling_current": 1e-9},
                                    "pattern": {"name": "ArrayPattern"}})
    assert stage.pattern.passes == 3
    assert stage.estimated_time() == pytest.approx(plain.estimated_time())
    # 25 welds 2 x 2 x 5 um in silicon (0.27 um^3/nC) at 1 nA
    assert stage.estimated_time() == pytest.approx(25 * 20 / 0.27, rel=1e-9)


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"name": "Horseshoe", "side_width": 0.0}, r"Horseshoe.side_width must be > 0 m, got 0.0"),
        ({"name": "HorseshoeVertical", "height": -1e-6},
         r"HorseshoeVertical.height must be > 0 m, got -1e-06"),
        ({"name": "SerialSection", "section_width": 0}, r"section_width must be > 0 m, got 0"),
        ({"name": "ArrayPattern", "n_columns": 0}, r"n_columns must be an integer .* got 0"),
        ({"name": "ArrayPattern", "n_rows": 2.5}, r"n_rows must be an integer .* got 2.5"),
        ({"name": "ArrayPattern", "pitch_vertical": -2e-6}, r"pitch_vertical .* got -2e-06"),
        ({"name": "WaffleNotch", "distance": -1e-6}, r"WaffleNotch.distance .* got -1e-06"),
        ({"name": "TrapezoidTrench", "angle": 90}, r"angle must be within \(-90, 90\).* 90"),
        ({"name": "TrapezoidTrench", "angle": -80}, r"far edge would be .* angle -80"),
        ({"name": "Circle", "radius": 1e-6, "thickness": 2e-6}, r"thickness .* got 2e-06"),
        ({"name": "Polygon", "vertices": [[0, 0], [1e-6, 1e-6], [1e-6, 0], [0, 1e-6]]},
         r"edges cross"),
        ({"name": "Polygon", "vertices": [[0, 0], [1e-6, 0]]}, r"vertices must be >= 3"),
        ({"name": "Bitmap", "array": [[0, 2]]}, r"values in 0..1, got \[\[0, 2\]\]"),
        ({"name": "Line", "start_x": 0, "end_x": 0}, r"same point"),
        ({"name": "Fiducial", "asymmetric": "yes"}, r"asymmetric must be true or false, got 'yes'"),
        ({"name": "Undercut", "cross_section": "Spiral"}, r"cross_section: unknown 'Spiral'"),
        ({"name": "Rectangle", "passes": -1}, r"passes must be an integer >= 0 .* got -1"),
        ({"name": "Trench", "time": 30.0}, r"Trench.time=30.0 is not supported"),
        ({"name": "Trench", "fillet": 1e-6}, r"Trench.fillet=1e-06 is not supported"),
        ({"name": "Bitmap", "path": "notch.png"}, r"Bitmap.path='notch.png' is not supported"),
        ({"name": "Horseshoe", "time": 0}, r"unknown parameter\(s\) \['time'\]"),
        ({"name": "WaffleNotch", "point": [0, 0]}, r"point must be a mapping"),
        ({"name": "Trapezoid"}, r"unknown pattern type 'Trapezoid'"),
    ],
)
def test_bad_input_is_refused_naming_the_value(spec, match):
    with pytest.raises(ValueError, match=match):
        make_pattern(spec)
