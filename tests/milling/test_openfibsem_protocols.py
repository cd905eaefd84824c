"""The protocol files OpenFIBSEM (fibsem 0.5.3) and AutoLamella (0.4.0) ship load, with what
they mean; what cannot be honoured is refused by name."""

import importlib.util
import math
from pathlib import Path

import pytest

from fibsem_ophyd.milling import (
    APPLICATION_FILES,
    Fiducial,
    MicroExpansion,
    MillingStage,
    RectanglePattern,
    Trench,
    WaffleNotch,
    load_protocol,
)

_SPEC = importlib.util.find_spec("fibsem")
FIBSEM_PROTOCOLS = Path(_SPEC.origin).parent / "applications" / "autolamella" / "protocol" \
    if _SPEC else None
AUTOLAMELLA = Path(__file__).parent / "data" / "autolamella-0.4.0"
RATE_SI = 0.27e-9  # m^3/C: 0.27 um^3/nC

#: the files fibsem 0.5.3 ships, and the two it ships that cannot load, with the reason
REFUSED = {
    "development/task-protocol-coincidence.yaml":
        r"task 'Coincidence Milling' milling.mill_coincident\[0\]: stage 'Coincidence Milling "
        r"01': milling strategy 'CoincidenceMilling' is not supported",
    # the file's own typo: "width: 2.5.0e-6"
    "legacy/protocol-liftout.yaml":
        r"milling.prepare-manipulator\[0\]: Rectangle.width must be a finite number in metres, "
        r"got '2.5.0e-6'",
}
SHIPPED = ["development/task-protocol-coincidence.yaml", "legacy/protocol-liftout.yaml",
           "legacy/protocol-on-grid.yaml", "legacy/protocol-serial-liftout.yaml",
           "legacy/protocol-trench.yaml", "legacy/protocol-waffle.yaml",
           "task-protocol-waffle.yaml", "task-protocol.yaml"]

needs_fibsem = pytest.mark.skipif(_SPEC is None, reason="fibsem 0.5.3 (the test extra) absent")


@needs_fibsem
def test_the_list_is_every_protocol_fibsem_ships():
    found = sorted(str(p.relative_to(FIBSEM_PROTOCOLS))
                   for p in FIBSEM_PROTOCOLS.rglob("*.yaml"))
    assert found == sorted(SHIPPED)


@needs_fibsem
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_protocol_loads_or_is_refused_by_name(name):
    path = FIBSEM_PROTOCOLS / name
    if name in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[name]):
            load_protocol(path)
        return
    protocol = load_protocol(path)
    assert protocol and all(protocol.values())
    for stages in protocol.values():
        for stage in stages:
            # our dict form is OpenFIBSEM's stage layout: a stage survives it unchanged
            again = MillingStage.from_dict(stage.to_dict())
            assert again.pattern == stage.pattern
            assert (again.material, again.strategy, again.alignment, again.hfw) == \
                (stage.material, stage.strategy, stage.alignment, stage.hfw)
            assert again.extra.get("application_file") == stage.extra.get("application_file")


@needs_fibsem
def test_task_protocol_reads_the_task_settings_as_openfibsem_does():
    p = load_protocol(FIBSEM_PROTOCOLS / "task-protocol.yaml")
    assert list(p) == ["fiducial", "mill_rough", "mill_polishing"]
    rough1, rough2, relief = p["mill_rough"]
    # the task's field of view (100 um) is each stage's; Si-ccs mills silicon
    assert [s.hfw for s in p["mill_rough"]] == [100e-6] * 3
    assert (rough1.material, rough1.extra["application_file"]) == ("Si", "Si-ccs")
    assert isinstance(rough1.pattern, Trench)
    assert rough1.pattern.cross_section == "CleaningCrossSection"
    assert (rough1.pattern.spacing, rough1.pattern.width) == (4.6e-6, 10e-6)
    assert isinstance(relief.pattern, MicroExpansion)
    # the task's alignment: off for the fiducial, on for rough milling and polishing
    assert [s.alignment for s in p["fiducial"]] == [False]
    assert all(s.alignment for s in p["mill_rough"] + p["mill_polishing"])
    (fid,) = p["fiducial"]
    assert isinstance(fid.pattern, Fiducial) and fid.pattern.centre_x == 25e-6
    # dose: 0.66 (cleaning cross-section) x two 10 x 3.5 x 2 um cuts at 740 pA in silicon
    assert rough1.estimated_time() == pytest.approx(
        0.66 * 2 * 10 * 3.5 * 2e-18 / (7.4e-10 * RATE_SI), rel=1e-12)


@needs_fibsem
def test_legacy_stage_protocol_and_its_passes():
    p = load_protocol(FIBSEM_PROTOCOLS / "legacy" / "protocol-serial-liftout.yaml")
    welds = p["landing-weld"]
    assert welds[0].extra["application_file"] == "Si-multipass" and welds[0].material == "Si"
    # a one-column array: pitch 0 between columns is no pitch at all
    assert welds[0].pattern.n_columns == 1 and welds[0].pattern.pitch_horizontal == 0
    assert {s.passes for s in welds[0].pattern.shapes()} == {welds[0].pattern.passes}


def test_patternless_flat_stages_take_the_pattern_of_their_section():
    p = load_protocol(AUTOLAMELLA / "protocol-odemis-on-grid-archive.yaml")
    cut1, cut2 = p["mill_rough"]
    assert isinstance(cut1.pattern, Trench) and cut1.name == "Rough Cut 01"
    # OpenFIBSEM's conversion: spacing = lamella_height + 2 offset, heights by size_ratio
    assert cut1.pattern.width == 10e-6
    assert cut1.pattern.spacing == pytest.approx(0.6e-6 + 2 * 2e-6, abs=1e-18)
    assert cut1.pattern.upper_trench_height == cut1.pattern.lower_trench_height == 3.5e-6
    assert cut1.pattern.cross_section == "CleaningCrossSection"
    # TESCAN / Odemis recipe settings are recorded, not applied
    assert cut1.extra["rate"] == 1e-4 and cut1.extra["spot_size"] == 5e-8
    (mx,) = p["microexpansion"]
    assert isinstance(mx.pattern, MicroExpansion)
    assert mx.hfw == pytest.approx(200e-6)  # "200e-6": YAML 1.1 reads it as text


def test_old_keys_cleaning_cross_section_flip_passes_and_the_lamella_split():
    p = load_protocol(AUTOLAMELLA / "protocol-waffle-archive.yaml")
    (fid,) = p["fiducial"]  # cleaning_cross_section: false, passes: null
    assert fid.pattern.cross_section == "Rectangle"
    (notch,) = p["notch"]  # flip: 0
    assert isinstance(notch.pattern, WaffleNotch) and notch.pattern.inverted is False
    # the lamella section: the last stage polishes, the others are rough milling
    assert [s.name for s in p["mill_rough"]] == ["Rough Milling", "Regular Milling"]
    assert [s.name for s in p["mill_polishing"]] == ["Polish Milling"]
    assert "lamella" not in p


def _flat(**pattern):
    return {"milling": {"box": {"milling_current": 1e-9, "hfw": 80e-6, "application_file": "Si",
                                "width": 4e-6, "height": 2e-6, "depth": 1e-6, **pattern}}}


def test_cleaning_cross_section_flag_means_a_cleaning_cross_section():
    (plain,) = load_protocol(_flat(type="Rectangle"))["box"]
    (ccs,) = load_protocol(_flat(type="Rectangle", cleaning_cross_section=1.0))["box"]
    assert ccs.pattern.cross_section == "CleaningCrossSection"
    assert ccs.estimated_time() == pytest.approx(0.66 * plain.estimated_time(), rel=1e-12)
    with pytest.raises(ValueError, match=r"cleaning_cross_section=1.0 contradicts "
                                         r"cross_section='RegularCrossSection'"):
        load_protocol(_flat(type="Rectangle", cleaning_cross_section=1.0,
                            cross_section="RegularCrossSection"))


def test_legacy_keys_openfibsem_does_not_read_are_kept_and_typos_refused():
    (st,) = load_protocol(_flat(type="Rectangle", needle_angle=40.0, tip_angle=35.0))["box"]
    assert st.extra["unread"] == {"needle_angle": 40.0, "tip_angle": 35.0}
    with pytest.raises(ValueError, match=r"milling.box\[0\]: Rectangle: unknown "
                                         r"parameter\(s\) \['needle_angel'\]"):
        load_protocol(_flat(type="Rectangle", needle_angel=40.0))
    with pytest.raises(ValueError, match=r"MicroExpansion cannot take rotation=30"):
        load_protocol(_flat(type="MicroExpansion", distance=5e-6, rotation=30))
    with pytest.raises(ValueError, match=r"section 'box' names none"):
        load_protocol(_flat())


def test_application_files_map_to_materials_and_others_are_refused():
    assert APPLICATION_FILES == {"Si": "Si", "Si-ccs": "Si", "Si-multipass": "Si",
                                 "autolamella": "Si"}
    stage = {"name": "s", "milling": {"milling_current": 1e-9, "application_file": "autolamella"},
             "pattern": {"name": "Rectangle", "width": 4e-6, "height": 2e-6, "depth": 1e-6}}
    si = MillingStage.from_dict(stage)
    ice = MillingStage.from_dict(stage, materials={"autolamella": "ice"})
    assert (si.material, ice.material) == ("Si", "ice")
    assert ice.estimated_time() == pytest.approx(si.estimated_time() * 0.27 / 3.0, rel=1e-12)
    stage["milling"]["application_file"] = "Pt dep"
    with pytest.raises(ValueError, match=r"unknown material 'Pt dep'"):
        MillingStage.from_dict(stage)


def _stage(strategy=None, pattern=None, **more):
    d = {"name": "trench", "milling": {"milling_current": 1e-9},
         "pattern": pattern or {"name": "Trench", "width": 10e-6, "upper_trench_height": 3e-6,
                                "lower_trench_height": 2e-6, "spacing": 1e-6, "depth": 2e-6,
                                "point": {"x": 1e-6, "y": -2e-6}},
         **more}
    if strategy is not None:
        d["strategy"] = strategy
    return d


def test_overtilt_mills_the_upper_cut_at_minus_and_the_lower_at_plus_the_overtilt():
    st = MillingStage.from_dict(_stage({"name": "Overtilt", "config": {"overtilt": 2.5}}))
    assert (st.strategy, st.overtilt) == ("Overtilt", 2.5)
    (t_up, up), (t_lo, lo) = st.cuts()
    assert (t_up, t_lo) == (-2.5, 2.5)
    # the cuts are the trench's two rectangles, exactly
    assert up.pattern == RectanglePattern(10e-6, 3e-6, 2e-6, centre_x=1e-6,
                                          centre_y=-2e-6 + 0.5e-6 + 1.5e-6,
                                          scan_direction="TopToBottom")
    assert lo.pattern == RectanglePattern(10e-6, 2e-6, 2e-6, centre_x=1e-6,
                                          centre_y=-2e-6 - 0.5e-6 - 1e-6,
                                          scan_direction="BottomToTop")
    assert up.pattern.volume + lo.pattern.volume == pytest.approx(st.pattern.volume, rel=1e-12)
    assert up.strategy == lo.strategy == "Standard"
    # OpenFIBSEM's default overtilt is 1 degree; ours round-trips
    assert MillingStage.from_dict(_stage({"name": "Overtilt", "config": {}})).overtilt == 1.0
    assert MillingStage.from_dict(st.to_dict()).cuts()[0][0] == -2.5
    assert MillingStage.from_dict(_stage()).cuts() == [(0.0, MillingStage.from_dict(_stage()))]


@pytest.mark.parametrize("change, match", [
    ({"strategy": {"name": "Overtilt", "config": {"overtilt": 12}}},
     r"overtilt must be within \[0.1, 10.0\] degrees, got 12.0"),
    ({"strategy": {"name": "Overtilt"},
      "pattern": {"name": "Rectangle", "width": 1e-6, "height": 1e-6, "depth": 1e-6}},
     r"the Overtilt strategy mills a Trench, got Rectangle"),
    ({"strategy": {"name": "CoincidenceMilling", "config": {}}},
     r"milling strategy 'CoincidenceMilling' is not supported \(it stops on a fluorescence"),
    ({"strategy": {"name": "Spiral"}}, r"milling strategy 'Spiral' is not supported"),
    ({"alignment": {"enabled": True, "interval_enabled": True}},
     r"alignment.interval_enabled \(re-aligning during milling\) is not supported"),
    ({"alignment": {"enabled": True, "rect": {"left": 0.7}}},
     r"alignment setting\(s\) \['rect'\] are not supported"),
    ({"imaging": {"hfw": 50e-6, "resolution": [3072, 2048]}},
     r"imaging setting\(s\) \['resolution'\] are not supported"),
    ({"milling": {"milling_current": 1e-9, "milling_channel": "ELECTRON"}},
     r"milling_channel='ELECTRON' is not supported"),
    ({"milling": {"milling_current": 1e-9, "spot_sise": 1e-8}},
     r"unknown milling setting 'spot_sise' \(did you mean 'spot_size'\?\)"),
])
def test_what_cannot_be_honoured_is_refused_by_name(change, match):
    d = _stage()
    d.update(change)
    with pytest.raises(ValueError, match=match):
        MillingStage.from_dict(d)


def test_per_stage_imaging_and_alignment():
    st = MillingStage.from_dict(_stage(alignment={"enabled": False},
                                       imaging={"hfw": 50e-6, "path": "/data", "save": True}))
    assert st.alignment is False and st.imaging_hfw == 50e-6
    assert st.extra["imaging"] == {"path": "/data", "save": True}
    assert MillingStage.from_dict(st.to_dict()).imaging_hfw == 50e-6


def test_a_section_in_two_tasks_is_ambiguous():
    stage = _stage()
    proto = {"tasks": {"A": {"milling": {"rough": {"stages": [stage]}}},
                       "B": {"milling": {"rough": {"stages": [stage]}}}}}
    with pytest.raises(ValueError, match=r"milling section 'rough' appears in two tasks "
                                         r"\('A' and 'B'\)"):
        load_protocol(proto)


def test_trench_passes_like_openfibsem():
    st = MillingStage.from_dict(_stage(pattern={"name": "Trench", "passes": 4}))
    assert {s.passes for s in st.pattern.shapes()} == {4}
    assert math.isclose(st.estimated_time(),
                        MillingStage.from_dict(_stage(pattern={"name": "Trench"}))
                        .estimated_time())
