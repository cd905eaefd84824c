"""OpenFIBSEM-style protocols using the whole pattern library load into milling stages."""

import math

import pytest

from fibsem_ophyd.milling import (
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
    SerialSection,
    TrapezoidTrench,
    Trench,
    Undercut,
    WaffleNotch,
    estimate_stage_time,
    load_protocol,
)

# Entries as OpenFIBSEM writes them: a stage list, a single stage, and the task-protocol
# group {name, field_of_view, stages: [...]}; points carry a name, and OpenFIBSEM's
# no-op defaults (time: 0, fillet: 0, is_exclusion: false, path: '') appear.
PROTOCOL = """
milling:
  lift_out:
  - name: Horseshoe
    milling: {milling_current: 2.8e-08, hfw: 0.00015, application_file: Si}
    pattern: {name: Horseshoe, width: 4.0e-05, upper_trench_height: 1.0e-05,
              lower_trench_height: 1.0e-05, spacing: 1.0e-05, depth: 1.0e-05,
              side_width: 5.0e-06, inverted: false, scan_direction: TopToBottom,
              cross_section: Rectangle, point: {x: 0.0, y: 0.0, name: null}}
  - name: Horseshoe Vertical
    milling: {milling_current: 2.8e-08, hfw: 0.00015}
    pattern: {name: HorseshoeVertical, width: 2.0e-05, height: 5.0e-05,
              side_trench_width: 5.0e-06, top_trench_height: 1.0e-05, depth: 4.0e-06,
              scan_direction: TopToBottom, inverted: true, cross_section: Rectangle}
  - name: Undercut
    milling: {milling_current: 7.6e-09, hfw: 0.00015}
    pattern: {name: Undercut, width: 5.0e-06, height: 1.0e-05, depth: 1.0e-05,
              trench_width: 2.0e-06, rhs_height: 1.0e-05, h_offset: 5.0e-06,
              cross_section: Rectangle, point: {x: 1.0e-05, y: -5.0e-06}}
  - name: Serial Section
    milling: {milling_current: 7.6e-09, hfw: 0.00015}
    pattern: {name: SerialSection, section_thickness: 4.0e-06, section_width: 5.0e-05,
              section_depth: 2.0e-05, side_width: 1.0e-05, side_height: 1.0e-05,
              side_depth: 4.0e-05, inverted: false, use_side_patterns: true}
  weld:
    name: Weld
    milling: {milling_current: 1.0e-09, hfw: 8.0e-05, application_file: Si}
    pattern: {name: ArrayPattern, width: 2.0e-06, height: 2.0e-06, depth: 5.0e-06,
              n_columns: 3, n_rows: 2, pitch_vertical: 5.0e-06, pitch_horizontal: 5.0e-06,
              passes: 10, rotation: 0, scan_direction: TopToBottom, cross_section: Rectangle,
              point: {x: 0.0, y: 1.0e-05, name: null}}
  notch:
    name: Notch
    field_of_view: 8.0e-05
    stages:
    - name: Notch 01
      milling: {milling_current: 2.0e-09, hfw: 8.0e-05}
      pattern: {name: WaffleNotch, vheight: 2.0e-06, vwidth: 2.0e-07, hheight: 2.0e-07,
                hwidth: 4.0e-06, depth: 2.5e-06, distance: 2.0e-06, inverted: true,
                cross_section: Rectangle}
    - name: Trapezoid 01
      milling: {milling_current: 7.4e-10, hfw: 8.0e-05}
      pattern: {name: TrapezoidTrench, trench_width: 1.0e-05, trench_height: 5.0e-06,
                spacing: 5.0e-06, depth: 1.0e-06, angle: 60}
  shapes:
    name: Shapes
    stages:
    - name: Spot
      milling: {milling_current: 1.0e-09}
      pattern: {name: Circle, radius: 2.0e-06, depth: 1.0e-06, thickness: 5.0e-07,
                point: {x: -1.0e-05, y: 0.0}}
    - name: Cut
      milling: {milling_current: 1.0e-09}
      pattern: {name: Line, start_x: -5.0e-06, end_x: 5.0e-06, start_y: 0.0, end_y: 0.0,
                depth: 1.0e-06}
    - name: Wedge
      milling: {milling_current: 1.0e-09}
      pattern: {name: PolygonPattern, vertices: [[0.0, 0.0], [4.0e-06, 0.0], [0.0, 3.0e-06]],
                depth: 1.0e-06, is_exclusion: false, point: {x: 0.0, y: 2.0e-06}}
    - name: Mark
      milling: {milling_current: 1.0e-09}
      pattern: {name: Bitmap, width: 4.0e-06, height: 2.0e-06, depth: 1.0e-06, rotation: 0,
                time: 0, passes: 0, scan_direction: TopToBottom, path: '',
                array: [[1, 0], [1, 1]]}
  polish:
  - name: Polishing Mill 01
    milling: {milling_current: 6.0e-11, application_file: Si}
    pattern: {name: Trench, width: 9.0e-06, depth: 4.0e-07, spacing: 3.0e-07,
              upper_trench_height: 7.0e-07, lower_trench_height: 7.0e-07,
              cross_section: CleaningCrossSection, time: 0.0, fillet: 0.0,
              point: {x: 0.0, y: 0.0, name: null}}
  - name: Stress Relief
    milling: {milling_current: 1.0e-09}
    pattern: {name: MicroExpansion, width: 5.0e-07, height: 1.8e-05, depth: 1.0e-06,
              distance: 1.0e-05, point: {x: 0.0, y: 0.0, name: null}}
  - name: Fiducial
    milling: {milling_current: 1.0e-09}
    pattern: {name: Fiducial, width: 1.0e-06, height: 1.0e-05, depth: 1.0e-06, rotation: 45,
              cross_section: Rectangle, point: {x: 2.5e-05, y: 0.0, name: null}}
"""

RATE_SI = 0.27e-9  # m^3/C: 0.27 um^3/nC


def test_protocol_with_every_pattern_loads(tmp_path):
    p = tmp_path / "protocol.yaml"
    p.write_text(PROTOCOL)
    proto = load_protocol(p)
    assert [type(s.pattern) for s in proto["lift_out"]] == [
        Horseshoe, HorseshoeVertical, Undercut, SerialSection]
    assert [type(s.pattern) for s in proto["notch"]] == [WaffleNotch, TrapezoidTrench]
    assert [type(s.pattern) for s in proto["shapes"]] == [
        CirclePattern, LinePattern, PolygonPattern, BitmapPattern]
    assert [type(s.pattern) for s in proto["polish"]] == [Trench, MicroExpansion, Fiducial]
    (weld,) = proto["weld"]
    assert isinstance(weld.pattern, ArrayPattern) and weld.pattern.passes == 10
    assert weld.pattern.centre_y == pytest.approx(10e-6)

    # the parameters mean what they say in OpenFIBSEM
    vertical = proto["lift_out"][1].pattern
    assert vertical.inverted and vertical.shapes()[0].centre_y == pytest.approx(-30e-6)
    undercut = proto["lift_out"][2].pattern
    assert undercut.shapes()[0].centre_x == pytest.approx(10e-6)
    wedge = proto["shapes"][2].pattern
    assert wedge.bounds == pytest.approx((0.0, 2e-6, 4e-6, 5e-6))
    assert proto["shapes"][3].pattern.area == pytest.approx(3 * 2e-12, rel=1e-9, abs=0)
    assert proto["polish"][2].pattern.centre_x == pytest.approx(25e-6)

    # time from dose: 6 welds 2 x 2 x 5 um in silicon at 1 nA; ten passes change nothing
    assert weld.estimated_time() == pytest.approx(6 * 20e-18 / (1e-9 * RATE_SI), rel=1e-9)
    assert estimate_stage_time(weld)["milling"] == pytest.approx(weld.estimated_time())
    # a cleaning cross-section trench: 0.66 x 2 cuts 9 x 0.7 x 0.4 um at 60 pA
    (polish, *_) = proto["polish"]
    assert polish.estimated_time() == pytest.approx(
        0.66 * 2 * 9 * 0.7 * 0.4e-18 / (60e-12 * RATE_SI), rel=1e-9)

    # every stage survives our own dict form
    for stages in proto.values():
        for stage in stages:
            again = MillingStage.from_dict(stage.to_dict())
            assert again.pattern == stage.pattern
            assert again.estimated_time() == pytest.approx(stage.estimated_time(), rel=1e-12)


def test_trapezoid_from_protocol_has_the_analytic_area():
    proto = load_protocol({"milling": {"t": {
        "name": "t", "milling": {"milling_current": 1e-9},
        "pattern": {"name": "TrapezoidTrench", "trench_width": 10e-6, "trench_height": 5e-6,
                    "spacing": 5e-6, "depth": 1e-6, "angle": 60}}}})
    (stage,) = proto["t"]
    # two trapezoids 5 um tall, 10 um wide at the lamella, 10 + 2 x 5 tan 60 at the far edge
    area = 2 * 5 * (10 + 5 * math.tan(math.radians(60))) * 1e-12
    assert stage.pattern.area == pytest.approx(area, rel=1e-9, abs=0)


@pytest.mark.parametrize(
    "old, new, match",
    [
        ("side_trench_width: 5.0e-06", "side_width: 5.0e-06",
         r"milling.lift_out\[1\]: HorseshoeVertical: unknown parameter\(s\) \['side_width'\]"),
        ("n_columns: 3", "n_columns: 0",
         r"milling.weld\[0\]: ArrayPattern.n_columns must be an integer in \[1, 100\], got 0"),
        ("name: TrapezoidTrench", "name: Trapezoid",
         r"milling.notch\[1\]: unknown pattern type 'Trapezoid'"),
        ("time: 0.0, fillet: 0.0", "time: 12.0, fillet: 0.0",
         r"milling.polish\[0\]: Trench.time=12.0 is not supported"),
        ("side_height: 1.0e-05", "side_height: -1.0e-05",
         r"milling.lift_out\[3\]: SerialSection.side_height must be > 0 m, got -1e-05"),
    ],
)
def test_bad_protocol_entries_name_the_stage_and_value(tmp_path, old, new, match):
    assert old in PROTOCOL
    p = tmp_path / "protocol.yaml"
    p.write_text(PROTOCOL.replace(old, new, 1))
    with pytest.raises(ValueError, match=match):
        load_protocol(p)
