"""Configuration loading: OpenFIBSEM layout, merging, precise errors."""

import math

import pytest

from fibsem_ophyd import ConfigError, load_config


def test_default_config_geometry():
    cfg = load_config()
    geom = cfg.geometry()
    assert math.degrees(geom.ion_column_tilt) == pytest.approx(52)
    assert math.degrees(geom.shuttle_pre_tilt) == pytest.approx(35)
    assert cfg.stage_limits()["t"] == (-15.0, 60.0)


def test_dict_is_merged_over_default(tmp_path):
    cfg = load_config({"ion": {"column_tilt": 55}, "stage": {"shuttle_pre_tilt": 45}})
    assert math.degrees(cfg.geometry().ion_column_tilt) == pytest.approx(55)
    assert cfg["electron"]["eucentric_height"] == pytest.approx(0.007)  # untouched default


def test_yaml_file(tmp_path):
    p = tmp_path / "scope.yaml"
    p.write_text("stage:\n  shuttle_pre_tilt: 45\nion:\n  column_tilt: 54\n")
    assert math.degrees(load_config(p).geometry().shuttle_pre_tilt) == pytest.approx(45)


@pytest.mark.parametrize(
    "text, match",
    [
        ("stage: [unclosed", "malformed YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("ion:\n  column_tilt: abc\n", r"ion.column_tilt must be a number, got 'abc'"),
        ("electron:\n  hfw: .nan\n", "electron.hfw must be finite"),
        ("electron:\n  current: 1.0\n", r"electron.current = 1.0 is outside electron.limits"),
        ("stage:\n  limits:\n    x: [1, -1]\n", "stage.limits.x: low must be < high"),
        ("stage:\n  initial_position: {t: 80}\n", "stage.initial_position.t = 80.0 is outside"),
        ("ion:\n  resolution: [1536]\n", r"ion.resolution must be \[width, height\]"),
    ],
)
def test_bad_config_gives_precise_error(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config("/nonexistent/scope.yaml")


def test_stage_type_selects_the_stage_frame():
    assert load_config().geometry().stage_type == "shuttle"
    for stage_type in ("shuttle", "tescan", "compustage"):
        cfg = load_config({"stage": {"type": stage_type}})
        assert cfg.geometry().stage_type == stage_type


def test_bad_stage_type_names_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"stage.type = 'hitachi'.*shuttle, tescan, compustage"):
        load_config({"stage": {"type": "hitachi"}})
