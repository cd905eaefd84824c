"""The one validator: each refusal names the parameter, the value and the rule."""

import math

import numpy as np
import pytest

from fibsem_ophyd import validate


@pytest.mark.parametrize("value", [1, 2.5, np.float32(0.5), np.int64(3), -1e-9])
def test_real_accepts_real_numbers_and_numpy_scalars(value):
    assert validate.real("x", value) == float(value)
    assert isinstance(validate.real("x", value), float)


@pytest.mark.parametrize(("value", "message"), [
    (True, r"^dwell_time must be a number in s, got True$"),
    (np.bool_(False), r"^dwell_time must be a number in s, got "),
    (1 + 2j, r"^dwell_time must be a number in s, got \(1\+2j\)$"),
    ("1e-6", r"^dwell_time must be a number in s, got '1e-6'$"),
    (None, r"^dwell_time must be a number in s, got None$"),
    (math.nan, r"^dwell_time must be finite, got nan$"),
    (np.float64(np.inf), r"^dwell_time must be finite, got "),
])
def test_real_refuses_non_numbers_with_name_value_and_rule(value, message):
    with pytest.raises(ValueError, match=message):
        validate.real("dwell_time", value, units="s")


def test_rule_replaces_the_wording():
    with pytest.raises(ValueError, match=r"^dx must be a finite number in metres, got nan$"):
        validate.real("dx", math.nan, rule="a finite number in metres")


def test_in_range_names_units_and_limits():
    assert validate.in_range("hfw", 1e-4, (1e-6, 1e-3), units="m") == 1e-4
    assert validate.in_range("hfw", 1e-3, (1e-6, 1e-3), units="m") == 1e-3  # inclusive
    with pytest.raises(ValueError,
                       match=r"^hfw = 0\.1 m is outside its limits \[1e-06, 0\.001\] m$"):
        validate.in_range("hfw", 0.1, (1e-6, 1e-3), units="m")
    with pytest.raises(ValueError,
                       match=r"^stage\.x = 1 m is outside the limit \[-0\.05, 0\.05\] m$"):
        validate.in_range("stage.x", 1, (-0.05, 0.05), units="m", limits_name="the limit")
    assert validate.in_range("anything", -1e30, None) == -1e30


def test_positive_and_non_negative():
    assert validate.positive("current", 1e-9, units="A") == 1e-9
    with pytest.raises(ValueError, match=r"^current must be > 0 A, got 0$"):
        validate.positive("current", 0, units="A")
    assert validate.non_negative("depth", 0.0, units="m") == 0.0
    with pytest.raises(ValueError, match=r"^depth must be >= 0 m, got -1e-06$"):
        validate.non_negative("depth", -1e-6, units="m")


def test_integer():
    assert validate.integer("n", np.int32(4), minimum=1) == 4
    assert validate.integer("passes", 2.0, integral_float=True) == 2
    for bad in (True, 2.0, 2.5, "3"):
        with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got "):
            validate.integer("n", bad, minimum=1)
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got 0$"):
        validate.integer("n", 0, minimum=1)
    with pytest.raises(ValueError, match=r"got 2\.5$"):
        validate.integer("passes", 2.5, integral_float=True)


def test_int_pair():
    assert validate.int_pair("resolution", (np.int64(1536), 1024)) == [1536, 1024]
    for bad in ([1536], [1536, 0], [1536.0, 1024], "ab", 5, [True, 2]):
        with pytest.raises(ValueError, match=r"^resolution must be a pair of integers >= 1"):
            validate.int_pair("resolution", bad)


def test_choice():
    assert validate.choice("beam", "ion", ("electron", "ion")) == "ion"
    with pytest.raises(ValueError,
                       match=r"^beam: unknown 'iron'; choose one of \['electron', 'ion'\] "
                             r"\(did you mean 'ion'\?\)$"):
        validate.choice("beam", "iron", ("electron", "ion"))
    with pytest.raises(ValueError, match=r"unknown \[1\]"):
        validate.choice("beam", [1], {"electron", "ion"})  # unhashable: refused, not TypeError


def test_known_keys_names_the_misspelt_key():
    validate.known_keys("settings", {"hfw": 1}, ("hfw", "dwell_time"))
    with pytest.raises(ValueError) as err:
        validate.known_keys("the image settings", {"dwel_time": 1e-6, "zz": 1},
                            ("hfw", "dwell_time"), what="image setting")
    msg = str(err.value)
    assert msg.startswith("unknown image setting 'dwel_time' (did you mean 'dwell_time'?), "
                          "'zz' in the image settings")
    assert "['hfw', 'dwell_time']" in msg


HFW = {"vtype": "float", "units": "m", "limits": (1e-6, 1e-3)}


def test_setting_checks_against_a_spec():
    assert validate.setting("fib_hfw", np.float64(1e-4), HFW) == 1e-4
    with pytest.raises(ValueError, match=r"^fib_hfw = 0\.1 m is outside its limits"):
        validate.setting("fib_hfw", 0.1, HFW)
    with pytest.raises(ValueError, match=r"^tilt is read-only$"):
        validate.setting("tilt", 1.0, {"vtype": "float", "read_only": True})
    assert validate.setting("res", (768, 512), {"vtype": "intpair", "length": 2}) == [768, 512]
    with pytest.raises(ValueError, match=r"^res must have 2 elements"):
        validate.setting("res", [768], {"vtype": "intpair", "length": 2})
    with pytest.raises(ValueError, match=r"^gas: unknown value 'Xe'; choose one of \['Pt'\]$"):
        validate.setting("gas", "Xe", {"vtype": "str", "choices": ["Pt"]})
    assert validate.setting("area", {"left": 0, "top": 0, "width": 0.5, "height": 0.5},
                            {"vtype": "area"}) == [0.0, 0.0, 0.5, 0.5]
    with pytest.raises(ValueError, match=r"must lie inside the frame"):
        validate.setting("area", [0.6, 0, 0.5, 0.5], {"vtype": "area"})


LIMITS = {"x": (-1e-3, 1e-3), "t": (-10.0, 60.0)}
UNITS = {"x": "m", "t": "deg"}


def test_position_and_target():
    assert validate.position("stage", {"x": 1e-4, "t": None}, LIMITS, UNITS) == {"x": 1e-4}
    with pytest.raises(ValueError, match=r"^stage\.t = 90 deg is outside its limits"):
        validate.position("stage", {"t": 90}, LIMITS, UNITS)
    with pytest.raises(ValueError, match=r"^unknown stage axis 'q' in the stage position"):
        validate.position("stage", {"q": 0.0}, LIMITS, UNITS, what="stage axis")
    with pytest.raises(ValueError, match=r"^a stage position must be a mapping"):
        validate.position("stage", [0.0], LIMITS, UNITS)
    assert validate.target("needle", "PARK", ["PARK"], LIMITS, UNITS) == "PARK"
    assert validate.target("needle", "retracted", ["PARK"], LIMITS, UNITS,
                           also=("retracted",)) == "retracted"
    with pytest.raises(ValueError, match=r"^unknown needle position 'PRK'; saved positions: "
                                         r"\['PARK'\] \(or 'retracted'\)$"):
        validate.target("needle", "PRK", ["PARK"], LIMITS, UNITS, also=("retracted",))
    assert validate.target("needle", {"x": 0}, [], LIMITS, UNITS) == {"x": 0.0}
