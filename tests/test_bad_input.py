"""Bad input, refused before anything acts: one table of cases through the public API.

Each case is a call (``setup_session(config=...)``, a plan through the session's real
RunEngine, a device ``set()``, a configuration, positions or protocol YAML file), the
exception it must raise and a regex that must find the parameter's name and the offending
value in the message. After each refusal :func:`snapshot` is compared with the one taken
before: the stage pose, both beams and detectors (``backend.state()``), the needle, the GIS,
the sputter coater, the vacuum, the detectors' image settings, the saved positions, the
simulated clock (any acquisition, move or milling advances it), the start documents the
RunEngine emitted, the runs in the catalog and the files under the data directory. A
refused ``setup_session`` must not have made its data directory.

``python -m pytest tests/test_bad_input.py -q -s -k counts`` prints the table's counts by
kind.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fibsem_ophyd import ConfigError, setup_session
from fibsem_ophyd import plans as P
from fibsem_ophyd.milling import load_protocol

SMALL = {"electron": {"resolution": [128, 96]}, "ion": {"resolution": [128, 96]}}
NAN, INF = float("nan"), float("inf")
#: a reference frame of the small resolution (rows x columns) for the alignment plans
REF = np.random.default_rng(0).integers(0, 255, (96, 128)).astype(np.uint8)
#: a milling stage that the simulator mills (the bad cases change one value of it)
BOX = {"name": "box", "milling": {"milling_current": 1e-9, "hfw": 80e-6, "material": "Si"},
       "pattern": {"name": "Rectangle", "width": 10e-6, "height": 5e-6, "depth": 2e-6},
       "alignment": {"enabled": False}}


@dataclass(frozen=True)
class Case:
    kind: str
    id: str
    call: Callable[[Any], Any]
    exc: type
    match: str


CASES: list[Case] = []


def add(kind: str, id: str, call: Callable, match: str, exc: type = ValueError) -> None:
    CASES.append(Case(kind, id, call, exc, match))


# ------------------------------------------------------------------ how a case calls
def plan(fn, target: str = "scope", *args, **kwargs) -> Callable:
    """``fn(<target>, *args, **kwargs)`` through the session's RunEngine."""
    return lambda c: c.RE(fn(c.target(target), *args, **kwargs))


def put(path: str, value: Any) -> Callable:
    """``microscope.<path>.set(value)``, waited for (a refusal must raise from ``set``)."""
    def call(c):
        dev = c.scope
        for part in path.split("."):
            dev = getattr(dev, part)
        dev.set(value).wait(10)
    return call


def config(cfg: Any) -> Callable:
    """``setup_session(config=cfg)`` into a data directory that must not be made."""
    return lambda c: c.setup(cfg)


def config_yaml(text: str) -> Callable:
    """``setup_session(config=<a YAML file holding text>)``."""
    def call(c):
        path = c.tmp / "scope.yaml"
        path.write_text(text)
        return c.setup(path)
    return call


def positions_yaml(text: str) -> Callable:
    """Load a positions.yaml into the live stage (``stage.positions.load``)."""
    def call(c):
        path = c.tmp / "positions.yaml"
        path.write_text(text)
        c.scope.stage.positions.load(path)
    return call


def protocol_yaml(text: str, then_mill: bool = True) -> Callable:
    """Load a protocol file (``load_protocol``) and, if it loads, mill it (``mill_lamella``)."""
    def call(c):
        path = c.tmp / "protocol.yaml"
        path.write_text(text)
        if then_mill:
            return c.RE(P.mill_lamella(c.scope, str(path)))
        return load_protocol(path)
    return call


def stage_with(section: str, **values) -> dict:
    return {**BOX, section: {**BOX[section], **values}}


# ================================================================== the table
# -- scores and thresholds of the alignment and coincidence plans -------------------------
ALIGNERS = [("align_beam_shift", P.align_beam_shift, "fib"),
            ("align_stage", P.align_stage, "fib"),
            ("correct_drift", P.correct_drift, "sem"),
            ("multi_step_alignment", P.multi_step_alignment, "fib")]
for name, fn, det in ALIGNERS:
    for value, shown in ((NAN, "nan"), (INF, "inf"), (-0.1, "-0.1"), (1.5, "1.5"),
                         ("0.5", "'0.5'"), (True, "True")):
        add("score", f"{name}-min_score={shown}", plan(fn, det, REF, min_score=value),
            rf"min_score.*{shown}")
for name, fn in (("find_coincidence", P.find_coincidence),
                 ("eucentric_alignment", P.eucentric_alignment)):
    for value, shown in ((NAN, "nan"), (INF, "inf"), (-0.5, "-0.5"), (2.0, "2.0"),
                         (None, "None")):
        add("score", f"{name}-min_score={shown}", plan(fn, "scope", min_score=value),
            rf"min_score.*{shown}")
add("score", "align_beam_shift-max_iterations=three",
    plan(P.align_beam_shift, "fib", REF, max_iterations="three"), r"max_iterations.*'three'")
add("score", "align_beam_shift-max_iterations=2.5",
    plan(P.align_beam_shift, "fib", REF, max_iterations=2.5), r"max_iterations.*2\.5")
add("score", "align_beam_shift-max_iterations=True",
    plan(P.align_beam_shift, "fib", REF, max_iterations=True), r"max_iterations.*True")
add("score", "align_beam_shift-tolerance=nan",
    plan(P.align_beam_shift, "fib", REF, tolerance=NAN), r"tolerance.*nan")
add("score", "align_beam_shift-max_step=inf",
    plan(P.align_beam_shift, "fib", REF, max_step=INF), r"max_step.*inf")
add("score", "align_beam_shift-use_stage='no'",
    plan(P.align_beam_shift, "fib", REF, use_stage="no"), r"use_stage.*'no'")
add("score", "align_beam_shift-exclude=nan-box",
    plan(P.align_beam_shift, "fib", REF, exclude=[[0, 0, NAN, 1e-6]]), r"exclude.*nan")
add("score", "align_stage-subsystem=beam",
    plan(P.align_stage, "fib", REF, subsystem="beam"), r"subsystem.*'beam'")
add("score", "find_coincidence-max_iterations=1e400",
    plan(P.find_coincidence, "scope", max_iterations=10**400), r"max_iterations.*1000")
add("score", "find_coincidence-select='false'",
    plan(P.find_coincidence, "scope", select="false"), r"select.*'false'")
add("score", "find_coincidence-template_sigma=nan",
    plan(P.find_coincidence, "scope", template_sigma=NAN), r"template_sigma.*nan")
add("score", "find_coincidence-hfw_fine=True",
    plan(P.find_coincidence, "scope", hfw_fine=True), r"hfw_fine.*True")
add("score", "find_coincidence-max_step=-1e-6",
    plan(P.find_coincidence, "scope", max_step=-1e-6), r"max_step.*-1e-06")

# -- resolutions ----------------------------------------------------------------------------
for value, shown in (("12", "'12'"), ([128], r"\[128\]"), ([128, 96, 1], r"\[128, 96, 1\]"),
                     ([-128, 96], r"-128"), ([0, 96], r"\[0, 96\]"),
                     ([128.5, 96], r"128\.5"), ([128, "96"], r"'96'"),
                     ([True, 96], r"True"), ([20000, 96], r"20000"),
                     ({"w": 128, "h": 96}, r"'w'"), (128, r"128"),
                     ([128, NAN], r"nan")):
    add("resolution", f"acquire_image-resolution={value!r}",
        plan(P.acquire_image, "sem", resolution=value), rf"resolution.*{shown}")
for fn, target in ((P.take_reference_images, "scope"), (P.acquire_series, "fib"),
                   (P.demo_workflow, "scope")):
    add("resolution", f"{fn.__name__}-resolution='12'",
        plan(fn, target, resolution="12"), r"resolution.*'12'")
add("resolution", "sem.resolution.set('12')", put("sem.resolution", "12"),
    r"resolution.*'12'")
add("resolution", "electron_beam.resolution.set('12')", put("electron_beam.resolution", "12"),
    r"resolution.*'12'")
add("resolution", "ion_beam.resolution.set([128.0, 96.5])",
    put("ion_beam.resolution", [128.0, 96.5]), r"resolution.*96\.5")
add("resolution", "config-electron.resolution='12'",
    config({"electron": {"resolution": "12"}}), r"electron\.resolution.*'12'", ConfigError)
add("resolution", "config-ion.resolution=[0, 96]",
    config({"ion": {"resolution": [0, 96]}}), r"ion\.resolution.*\[0, 96\]", ConfigError)
add("resolution", "config-ion.resolution=[100000, 96]",
    config({"ion": {"resolution": [100000, 96]}}), r"ion\.resolution.*100000", ConfigError)
add("resolution", "config-imaging.resolution=[1536]",
    config({"imaging": {"resolution": [1536]}}), r"imaging\.resolution.*\[1536\]",
    ConfigError)

# -- numbers: complex, bool, str, NaN and infinities wherever a number is taken -------------
BAD_NUMBERS = ((NAN, "nan"), (INF, "inf"), (1j, "1j"), (True, "True"), ("1e-6", "'1e-6'"))
for value, shown in BAD_NUMBERS:
    add("number", f"stable_move-dx={shown}", plan(P.stable_move, "scope", value, 0.0),
        rf"dx.*{shown}")
    add("number", f"stage.set-x={shown}", put("stage", {"x": value}), rf"stage\.x.*{shown}")
    add("number", f"electron_beam.current.set({shown})", put("electron_beam.current", value),
        rf"current.*{shown}")
    add("number", f"acquire_image-hfw={shown}", plan(P.acquire_image, "sem", hfw=value),
        rf"hfw.*{shown}")
    add("number", f"mill_stages-depth={shown}",
        plan(P.mill_stages, "scope", [stage_with("pattern", depth=value)]), rf"depth.*{shown}")
add("number", "vertical_move-dy=nan", plan(P.vertical_move, "scope", NAN), r"dy.*nan")
add("number", "vertical_move-dx=True", plan(P.vertical_move, "scope", 1e-6, dx=True),
    r"dx.*True")
add("number", "stable_move-dy=-inf", plan(P.stable_move, "scope", 0.0, -INF), r"dy.*-inf")
add("number", "move_to_milling_angle=nan", plan(P.move_to_milling_angle, "scope", NAN),
    r"milling_angle.*nan")
add("number", "move_to_milling_angle=True", plan(P.move_to_milling_angle, "scope", True),
    r"milling_angle.*True")
add("number", "safe_absolute_move-t=True", plan(P.safe_absolute_move, "scope", {"t": True}),
    r"stage\.t.*True")
add("number", "safe_absolute_move-z='0.004'",
    plan(P.safe_absolute_move, "scope", {"z": "0.004"}), r"stage\.z.*'0\.004'")
add("number", "safe_absolute_move-r=1j", plan(P.safe_absolute_move, "scope", {"r": 1j}),
    r"stage\.r.*1j")
add("number", "stage.x.set(nan)", put("stage.x", NAN), r"stage\.x.*nan")
add("number", "stage.t.set(-inf)", put("stage.t", -INF), r"stage\.t.*-inf")
add("number", "stage.set-r=np.nan", put("stage", {"r": np.float64(NAN)}), r"stage\.r.*nan")
for sig, value, shown in (("ion_beam.voltage", NAN, "nan"), ("electron_beam.voltage", 1j, "1j"),
                          ("electron_beam.hfw", INF, "inf"), ("ion_beam.hfw", "1e-4", "'1e-4'"),
                          ("electron_beam.dwell_time", True, "True"),
                          ("ion_beam.working_distance", NAN, "nan"),
                          ("electron_beam.scan_rotation", INF, "inf"),
                          ("ion_beam.shift", [NAN, 0.0], "nan"),
                          ("ion_beam.shift", [True, 0.0], "True"),
                          ("electron_beam.shift", "ab", "'ab'"),
                          ("electron_beam.stigmation", [1j, 0.0], "1j"),
                          ("ion_beam.current", np.complex128(1e-9), r"1e-09\+0j"),
                          ("electron_beam.blanked", "false", "'false'"),
                          ("ion_beam.on", 1, "1"),
                          ("sem.brightness", NAN, "nan"), ("fib.contrast", True, "True"),
                          ("sem.hfw", NAN, "nan"), ("fib.dwell_time", True, "True"),
                          ("sem.line_integration", 2.5, r"2\.5"),
                          ("sem.frame_integration", True, "True"),
                          ("fib.autocontrast", "false", "'false'"),
                          ("sem.reduced_area", [NAN, 0, 1, 1], "nan"),
                          ("sem.reduced_area", [True, 0, 0.5, 0.5], "True"),
                          ("fib.reduced_area", ["0", 0, 0.5, 0.5], "'0'"),
                          ("sputter_coater.current", True, "True"),
                          ("sputter_coater.current", NAN, "nan"),
                          ):
    add("number", f"{sig}.set({shown})", put(sig, value), rf"{sig.split('.')[-1]}.*{shown}")
add("number", "gis.set(nan)", put("gis", NAN), r"GIS valve time.*nan")
add("number", "sputter_coater.set(True)", put("sputter_coater", True), r"sputter time.*True")
for kwargs, match in (({"dwell_time": 1j}, r"dwell_time.*1j"),
                      ({"line_integration": True}, r"line_integration.*True"),
                      ({"frame_integration": "2"}, r"frame_integration.*'2'"),
                      ({"autocontrast": "false"}, r"autocontrast.*'false'"),
                      ({"reduced_area": [0, 0, NAN, 1]}, r"reduced_area.*nan"),
                      ({"hfw": 0.0}, r"hfw.*0")):
    add("number", f"acquire_image-{kwargs}", plan(P.acquire_image, "fib", **kwargs), match)
for kwargs, match in (({"num": "3"}, r"num.*'3'"), ({"num": 2.5}, r"num.*2\.5"),
                      ({"num": True}, r"num.*True"), ({"delay": NAN}, r"delay.*nan"),
                      ({"delay": "1"}, r"delay.*'1'"), ({"num": 0}, r"num.*0")):
    add("number", f"acquire_series-{kwargs}", plan(P.acquire_series, "sem", **kwargs), match)
add("number", "take_reference_images-hfw=nan", plan(P.take_reference_images, "scope", hfw=NAN),
    r"hfw.*nan")
add("number", "acquire_reference-hfw=True", plan(P.acquire_reference, "fib", hfw=True),
    r"hfw.*True")
for kwargs, match in (({"depth": NAN}, r"depth.*nan"), ({"depth": -1e-6}, r"depth.*-1e-06"),
                      ({"milling_current": True}, r"milling_current.*True"),
                      ({"hfw": 0}, r"hfw.*0"), ({"centre_x": INF}, r"centre_x.*inf"),
                      ({"height": "1e-5"}, r"height.*'1e-5'")):
    add("number", f"mill_fiducial-{kwargs}", plan(P.mill_fiducial, "scope", **kwargs), match)
add("number", "mill_stages-milling_current=nan",
    plan(P.mill_stages, "scope", [stage_with("milling", milling_current=NAN)]),
    r"milling_current.*nan")
add("number", "mill_stages-hfw=1j",
    plan(P.mill_stages, "scope", [stage_with("milling", hfw=1j)]), r"hfw.*1j")
add("number", "mill_stages-imaging_hfw=nan",
    plan(P.mill_stages, "scope", [BOX], imaging_hfw=NAN), r"imaging_hfw.*nan")
add("number", "mill_stages-align='no'",
    plan(P.mill_stages, "scope", [BOX], align="no"), r"align.*'no'")
add("number", "mill_stages-enabled='false'",
    plan(P.mill_stages, "scope", [{**BOX, "enabled": "false"}]), r"enabled.*'false'")
for kwargs, match in (({"time": NAN}, r"time.*nan"), ({"time": True}, r"time.*True"),
                      ({"current": True}, r"current.*True"), ({"time": "10"}, r"time.*'10'"),
                      ({"images": "no"}, r"images.*'no'")):
    add("number", f"sputter_coat-{kwargs}", plan(P.sputter_coat, "scope", **kwargs), match)
for kwargs, match in (({"time": INF}, r"time.*inf"), ({"time": "30"}, r"time.*'30'"),
                      ({"protocol": {"time": NAN}}, r"time.*nan"),
                      ({"retract": "false"}, r"retract.*'false'")):
    add("number", f"cryo_deposition-{kwargs}", plan(P.cryo_deposition, "scope", **kwargs), match)
add("number", "move_manipulator_corrected-dx=nan",
    plan(P.move_manipulator_corrected, "scope", dx=NAN), r"dx.*nan")
add("number", "move_manipulator_corrected-dy=1j",
    plan(P.move_manipulator_corrected, "scope", dy=1j), r"dy.*1j")
add("number", "move_manipulator_to_position_offset-z=nan",
    plan(P.move_manipulator_to_position_offset, "scope", {"z": NAN}), r"manipulator\.z.*nan")
add("number", "move_manipulator_to_position_offset-z=True",
    plan(P.move_manipulator_to_position_offset, "scope", {"z": True}), r"manipulator\.z.*True")
add("number", "manipulator.set-x=inf", put("manipulator", {"x": INF}), r"manipulator\.x.*inf")
for kwargs, match in (({"coarse_range": NAN}, r"coarse_range.*nan"),
                      ({"coarse_steps": 9.5}, r"coarse_steps.*9\.5"),
                      ({"fine_steps": "9"}, r"fine_steps.*'9'"),
                      ({"fine_range": True}, r"fine_range.*True")):
    add("number", f"autofocus-{kwargs}", plan(P.autofocus, "sem", **kwargs), match)
for kwargs, match in (({"target_mean": NAN}, r"target_mean.*nan"),
                      ({"max_saturation": True}, r"max_saturation.*True"),
                      ({"mean_tolerance": "0.05"}, r"mean_tolerance.*'0\.05'"),
                      ({"max_iterations": 2.5}, r"max_iterations.*2\.5")):
    add("number", f"auto_contrast_brightness-{kwargs}",
        plan(P.auto_contrast_brightness, "fib", **kwargs), match)
for kwargs, match in (({"rows": True}, r"rows.*True"), ({"hfw": NAN}, r"hfw.*nan"),
                      ({"overlap": NAN}, r"overlap.*nan"), ({"cols": "3"}, r"cols.*'3'")):
    add("number", f"acquire_overview-{kwargs}", plan(P.acquire_overview, "scope", **kwargs),
        match)
for kwargs, match in (({"n_sites": True}, r"n_sites.*True"),
                      ({"bare_fraction": NAN}, r"bare_fraction.*nan"),
                      ({"hfw": INF}, r"hfw.*inf"), ({"min_size": -1e-6}, r"min_size.*-1e-06")):
    add("number", f"select_sites-{kwargs}", plan(P.select_sites, "scope", **kwargs), match)
add("number", "measure_lamella-spacing=nan", plan(P.measure_lamella, "scope", NAN),
    r"spacing.*nan")
add("number", "measure_lamella-width=True", plan(P.measure_lamella, "scope", 500e-9, True),
    r"width.*True")
add("number", "restore_state-stage.x=nan",
    plan(P.restore_state, "scope", {"stage": {"x": NAN}}), r"stage\.x.*nan")
add("number", "restore_state-electron_beam.current=True",
    plan(P.restore_state, "scope", {"electron_beam": {"current": True}}), r"current.*True")
add("number", "demo_workflow-stable_dx=nan", plan(P.demo_workflow, "scope", stable_dx=NAN),
    r"stable_dx.*nan")
add("number", "demo_workflow-hfw='150e-6'", plan(P.demo_workflow, "scope", hfw="150e-6"),
    r"hfw.*'150e-6'")

# -- the microscope configuration ------------------------------------------------------------
for beam, key, lim, shown in (("electron", "current", [-1e-9, 1e-7], r"-1e-09"),
                              ("ion", "voltage", [-100, 30000], r"-100"),
                              ("electron", "hfw", [0, 2e-3], r"\[0, 0\.002\]"),
                              ("ion", "dwell_time", [0, 1e-3], r"\[0, 0\.001\]"),
                              ("electron", "working_distance", [-0.01, 0.05], r"-0\.01")):
    add("config", f"config-{beam}.limits.{key}={lim}",
        config({beam: {"limits": {key: lim}}}), rf"{beam}\.limits\.{key}.*{shown}", ConfigError)
for cfg, match in (({"electron": {"dwel_time": 1e-6}}, r"'dwel_time'.*did you mean 'dwell_time'"),
                   ({"stage": {"limts": {}}}, r"'limts'.*did you mean 'limits'"),
                   ({"ion": {"colum_tilt": 52}}, r"'colum_tilt'.*did you mean 'column_tilt'"),
                   ({"electorn": {"hfw": 1e-4}}, r"'electorn'.*did you mean 'electron'"),
                   ({"sim": {"drfit": True}}, r"'drfit'.*did you mean 'drift'"),
                   ({"stage": {"limits": {"q": [0, 1]}}}, r"'q'.*stage\.limits"),
                   ({"stage": {"initial_position": {"w": 0}}}, r"'w'.*initial_position"),
                   ({"ion": {"limits": {"curent": [1e-12, 1e-8]}}},
                    r"'curent'.*did you mean 'current'"),
                   ({"info": {"nmae": "x"}}, r"'nmae'.*did you mean 'name'"),
                   ({"sim": {"drift": {"velocty": [0, 0, 0]}}},
                    r"'velocty'.*did you mean 'velocity'")):
    add("config", f"config-misspelt-{cfg}", config(cfg), match, ConfigError)
for cfg, match in (({"info": None}, r"info.*None"), ({"info": "scope"}, r"info.*'scope'"),
                   ({"stage": 5}, r"stage.*5"), ({"electron": [1, 2]}, r"electron.*\[1, 2\]"),
                   ({"sim": "x"}, r"sim.*'x'"), ({"manipulator": True}, r"manipulator.*True"),
                   ({"imaging": 3}, r"imaging.*3"), ({"milling": []}, r"milling.*\[\]"),
                   ({"stage": {"limits": "wide"}}, r"stage\.limits.*'wide'"),
                   ({"stage": {"initial_position": None}}, r"initial_position.*None")):
    add("config", f"config-not-a-mapping-{cfg}", config(cfg), match, ConfigError)
for cfg, match in (({"sim": {"drift": "false"}}, r"sim\.drift.*'false'"),
                   ({"stage": {"enabled": "yes"}}, r"stage\.enabled.*'yes'"),
                   ({"electron": {"enabled": 1}}, r"electron\.enabled.*1"),
                   ({"ion": {"plasma": "false"}}, r"ion\.plasma.*'false'"),
                   ({"imaging": {"autocontrast": "no"}}, r"imaging\.autocontrast.*'no'"),
                   ({"gis": {"sputter_coater": "true"}}, r"gis\.sputter_coater.*'true'"),
                   ({"manipulator": {"enabled": None}}, r"manipulator\.enabled.*None")):
    add("config", f"config-bool-{cfg}", config(cfg), match, ConfigError)
for cfg, match in (({"electron": {"current": True}}, r"electron\.current.*True"),
                   ({"ion": {"voltage": 1j}}, r"ion\.voltage.*1j"),
                   ({"electron": {"hfw": "1e-4"}}, r"electron\.hfw.*'1e-4'"),
                   ({"sim": {"real_time_factor": NAN}}, r"sim\.real_time_factor.*nan"),
                   ({"sim": {"collection_efficiency": 0}}, r"sim\.collection_efficiency.*0"),
                   ({"sim": {"sample_height_offset": INF}}, r"sim\.sample_height_offset.*inf"),
                   ({"milling": {"milling_current": NAN}}, r"milling\.milling_current.*nan"),
                   ({"imaging": {"hfw": -1e-4}}, r"imaging\.hfw.*-0\.0001"),
                   ({"info": {"name": 5}}, r"info\.name.*5"),
                   ({"stage": {"type": 5}}, r"stage\.type.*5"),
                   ({"stage": {"manipulator_height_limit": NAN}},
                    r"stage\.manipulator_height_limit.*nan")):
    add("config", f"config-value-{cfg}", config(cfg), match, ConfigError)
for i, (text, match) in enumerate((
        ("electron:\n  dwel_time: 1.0e-6\n", r"'dwel_time'.*'dwell_time'"),
                    ("info: null\n", r"info.*None"),
                    ("sim:\n  drift: 'false'\n", r"sim\.drift.*'false'"),
                    ("electron:\n  voltage: .inf\n", r"electron\.voltage.*inf"),
                    ("ion:\n  limits:\n    current: [-1.0e-9, 6.5e-8]\n",
                     r"ion\.limits\.current.*-1e-09"),
                    ("stage:\n  initial_position: {x: .nan}\n",
                     r"stage\.initial_position\.x.*nan"))):
    add("config", f"config-yaml-{i}-{text.splitlines()[0]}", config_yaml(text), match, ConfigError)
add("config", "config-not-a-mapping-at-all", config(5), r"config.*int", ConfigError)

# -- positions.yaml --------------------------------------------------------------------------
GOOD = "- name: a\n  x: 0.0\n  y: 0.0\n  z: 0.004\n  r: 0.0\n  t: 0.6\n"
for i, (text, match) in enumerate((
        (GOOD + "  coordinate_system: STAGE\n", r"coordinate_system.*'STAGE'.*'RAW'"),
        (GOOD + "  coordinate_system: raw\n", r"coordinate_system.*'raw'.*'RAW'"),
        (GOOD + "  coordinate_system: 5\n", r"coordinate_system.*5.*'RAW'"),
        ("- name: a\n  x: 0.0\n  y: 0.0\n  r: 0.0\n  t: 0.6\n", r"a.*missing.*'z'"),
        ("- name: a\n  x: 0.0\n", r"a.*missing.*'y', 'z', 'r', 't'"),
        (GOOD.replace("x: 0.0", "x: zero"), r"a\.x.*'zero'"),
        (GOOD.replace("x: 0.0", "x: true"), r"a\.x.*True"),
        (GOOD.replace("z: 0.004", "z: .nan"), r"a\.z.*nan"),
        (GOOD.replace("t: 0.6", "t: .inf"), r"a\.t.*inf"),
        (GOOD.replace("x: 0.0", "x: 1.0"), r"'a'.*stage\.x = 1 m is outside"),
        (GOOD.replace("t: 0.6", "t: 3.0"), r"'a'.*stage\.t = 171\.887 deg is outside"),
        (GOOD.replace("y: 0.0", "y: [0, 1]"), r"a\.y.*\[0, 1\]"),
        (GOOD + "  q: 1\n", r"'q'"),
        ("a: {x: 0}\n", r"positions.*list.*dict"),
        ("- [0, 1]\n", r"entry 0.*\[0, 1\]"),
        ("- name: ''\n  x: 0.0\n  y: 0.0\n  z: 0.004\n  r: 0.0\n  t: 0.6\n", r"name.*''"),
        (GOOD + GOOD, r"'a'.*twice"),
        ("- name: a\n  x: [unclosed\n", r"malformed"))):
    add("positions", f"positions-{i}-{match}", positions_yaml(text), match)
def session_with_positions(text: str) -> Callable:
    """``setup_session`` on a data directory holding only a positions.yaml of ``text``: a
    refusal must leave that file alone in it (no images/, catalog or backup made)."""
    def call(c):
        d = c.tmp / "with-positions"
        d.mkdir()
        (d / "positions.yaml").write_text(text)
        try:
            setup_session(config=SMALL, data_dir=d).close()
        finally:
            c.made = sorted(p.name for p in d.iterdir())
    return call


for i, (text, match) in enumerate((
        (GOOD + "  coordinate_system: SPECIMEN\n", r"coordinate_system.*'SPECIMEN'.*'RAW'"),
        ("- name: a\n  x: 0.0\n", r"a.*missing"),
        (GOOD.replace("x: 0.0", "x: 1.0"), r"'a'.*stage\.x = 1 m is outside"))):
    add("positions", f"setup_session-positions-{i}", session_with_positions(text), match)
add("positions", "save_position-name=5", plan(P.save_position, "scope", 5), r"name.*5")
add("positions", "go_to_position-unknown", plan(P.go_to_position, "scope", "nowhere"),
    r"'nowhere'")
add("positions", "stage.positions.set-x=nan", put("stage.positions", {"p": {"x": NAN}}),
    r"stage\.x.*nan")

# -- crashes instead of messages ---------------------------------------------------------------
add("crash", "config-stage.initial_position.x=10**400",
    config({"stage": {"initial_position": {"x": 10**400}}}), r"initial_position\.x.*1000",
    ConfigError)
add("crash", "config-stage.limits.x=[0, 10**400]",
    config({"stage": {"limits": {"x": [0, 10**400]}}}), r"stage\.limits\.x.*1000", ConfigError)
add("crash", "stage.set-x=10**400", put("stage", {"x": 10**400}), r"stage\.x.*1000")
add("crash", "stable_move-dx=10**400", plan(P.stable_move, "scope", 10**400, 0.0),
    r"dx.*1000")
add("crash", "electron_beam.current.set(10**400)", put("electron_beam.current", 10**400),
    r"current.*1000")
add("crash", "sem.hfw.set(10**400)", put("sem.hfw", 10**400), r"hfw.*1000")
add("crash", "acquire_series-num=10**400", plan(P.acquire_series, "sem", num=10**400),
    r"num.*1000")
add("crash", "cryo_deposition-protocol='cryo'",
    plan(P.cryo_deposition, "scope", protocol="cryo"), r"protocol.*'cryo'")
add("crash", "restore_state-state='cryo'", plan(P.restore_state, "scope", "cryo"),
    r"state.*'cryo'")
add("crash", "move_manipulator_to_position_offset-offset='z'",
    plan(P.move_manipulator_to_position_offset, "scope", "z"), r"offset.*'z'")
add("crash", "mill_lamellae-coating='cryo'",
    plan(P.mill_lamellae, "scope", ["s1"], {"milling": {"box": [BOX]}}, coating="cryo"),
    r"coating.*'cryo'")
add("crash", "mill_lamellae-sites='site-1'",
    plan(P.mill_lamellae, "scope", "site-1", {"milling": {"box": [BOX]}}),
    r"sites.*'site-1'")
add("crash", "mill_stages-stages='box'", plan(P.mill_stages, "scope", "box"), r"stages.*'box'")
add("crash", "acquire_image-md='sample'", plan(P.acquire_image, "sem", md="sample"),
    r"md.*'sample'")
add("crash", "align_beam_shift-max_iterations=None",
    plan(P.align_beam_shift, "fib", REF, max_iterations=None), r"max_iterations.*None")
add("crash", "acquire_series-delay=None", plan(P.acquire_series, "sem", delay=None),
    r"delay.*None")
add("crash", "autofocus-coarse_steps=10**400", plan(P.autofocus, "sem", coarse_steps=10**400),
    r"coarse_steps.*1000")
add("crash", "config-ion.resolution=[10**400, 96]",
    config({"ion": {"resolution": [10**400, 96]}}), r"ion\.resolution.*1000", ConfigError)

# -- a run opened (or the detector staged) before the settings were checked -------------------
for fn, target, kwargs, match in (
        (P.acquire_image, "sem", {"dwell_time": -1.0}, r"dwell_time.*-1"),
        (P.acquire_image, "fib", {"hfw": 1.0}, r"hfw.*1"),
        (P.acquire_image, "sem", {"line_integration": 0}, r"line_integration.*0"),
        (P.acquire_image, "sem", {"reduced_area": [0.5, 0.5, 0.9, 0.9]}, r"reduced_area"),
        (P.acquire_image, "sem", {"focus": 1}, r"focus"),
        (P.acquire_series, "sem", {"hfw": 1.0}, r"hfw.*1"),
        (P.acquire_series, "fib", {"resolution": [0, 0]}, r"resolution.*\[0, 0\]"),
        (P.take_reference_images, "scope", {"hfw": 1.0}, r"hfw.*1"),
        (P.take_reference_images, "scope", {"dwell_time": 1.0}, r"dwell_time.*1"),
        (P.acquire_reference, "sem", {"hfw": -1e-4}, r"hfw.*-0\.0001"),
        (P.demo_workflow, "scope", {"hfw": 1.0}, r"hfw.*1"),
        (P.demo_workflow, "scope", {"vertical_dy": 1.0}, r"vertical_dy.*1"),
        (P.mill_lamella, "scope", {"protocol": {"milling": {"box": [BOX]}},
                                   "milling_angle": NAN}, r"milling_angle.*nan"),
        (P.mill_lamella, "scope", {"protocol": {"milling": {"box": [BOX]}},
                                   "position": "nowhere"}, r"position.*'nowhere'"),
        (P.cryo_deposition, "scope", {"gas": "Xe"}, r"gas.*'Xe'"),
        (P.sputter_coat, "scope", {"current": 1.0}, r"current.*1"),
        (P.select_sites, "scope", {"prefix": ""}, r"prefix.*''"),
        (P.mill_stages, "scope", {"stages": [BOX], "align": True, "reference": "no-such-uid"},
         r"reference.*'no-such-uid'")):
    add("order", f"{fn.__name__}-{list(kwargs)[-1]}", plan(fn, target, **kwargs), match,
        TypeError if "focus" in kwargs else ValueError)

# -- protocol files --------------------------------------------------------------------------
STAGE = ("milling:\n  mill_rough:\n  - name: rough\n    milling: {milling_current: 2.0e-9, "
         "hfw: 8.0e-5, application_file: Si}\n    pattern: {name: Rectangle, width: 1.0e-5, "
         "height: 5.0e-6, depth: DEPTH}\n")
for text, match in (
        (STAGE.replace("DEPTH", "-1.0e-6"), r"depth.*-1e-06"),
        (STAGE.replace("DEPTH", ".nan"), r"depth.*nan"),
        (STAGE.replace("DEPTH", "deep"), r"depth.*'deep'"),
        (STAGE.replace("DEPTH", "true"), r"depth.*True"),
        (STAGE.replace("DEPTH", "0"), r"depth.*0"),
        (STAGE.replace("DEPTH", "1.0e-6").replace("Rectangle", "Rectangel"),
         r"'Rectangel'.*did you mean 'Rectangle'"),
        (STAGE.replace("DEPTH", "1.0e-6").replace("width: 1.0e-5", "widht: 1.0e-5"),
         r"'widht'.*did you mean 'width'"),
        (STAGE.replace("DEPTH", "1.0e-6").replace("milling_current: 2.0e-9",
                                                  "milling_current: -2.0e-9"),
         r"milling_current.*-2e-09"),
        (STAGE.replace("DEPTH", "1.0e-6").replace("milling_current: 2.0e-9",
                                                  "milling_curent: 2.0e-9"),
         r"'milling_curent'.*did you mean 'milling_current'"),
        (STAGE.replace("DEPTH", "1.0e-6").replace("hfw: 8.0e-5", "hfw: .inf"), r"hfw.*inf"),
        (STAGE.replace("DEPTH", "1.0e-6").replace("application_file: Si",
                                                  "application_file: Gold"),
         r"'Gold'"),
        (STAGE.replace("DEPTH", "1.0e-6").replace("name: rough", "name: rough\n    "
                                                  "enabled: 'no'"), r"enabled.*'no'"),
        (STAGE.replace("DEPTH", "1.0e-6").replace("name: Rectangle", "name: Rectangle, "
                                                  "passes: 2.5"), r"passes.*2\.5"),
        (STAGE.replace("DEPTH", "1.0e-6").replace("name: Rectangle", "name: Rectangle, "
                                                  "cross_section: Cleaning"),
         r"cross_section.*'Cleaning'"),
        ("milling:\n  mill_rough: 5\n", r"mill_rough.*5"),
        ("- a\n- b\n", r"protocol.*list"),
        ("options: {num_polishing_stages: two}\nmilling:\n  lamella:\n  - "
         "{type: Trench, lamella_width: 1.0e-5}\n", r"num_polishing_stages.*'two'"),
        ("milling:\n  trench:\n    type: Trench\n    width: 1.0e-5\n    depth: -2.0e-6\n"
         "    milling_current: 2.0e-9\n", r"depth.*-2e-06")):
    add("protocol", f"protocol-{match}", protocol_yaml(text), match)
add("protocol", "load_protocol-unknown-pattern",
    lambda c: load_protocol({"milling": {"x": [{**BOX, "pattern": {"name": "Spiral"}}]}}),
    r"'Spiral'")
add("protocol", "mill_lamella-protocol=nan-depth",
    plan(P.mill_lamella, "scope", {"milling": {"box": [stage_with("pattern", depth=NAN)]}}),
    r"depth.*nan")

# -- limits: stage, needle, beam names, detector modes ----------------------------------------
for target, match in (({"x": 0.1}, r"stage\.x = 0\.1 m is outside its limits \[-0\.025, 0\.025\]"),
                      ({"t": 80.0}, r"stage\.t = 80 deg is outside .*\[-15, 60\]"),
                      ({"z": -1e-3}, r"stage\.z = -0\.001 m is outside"),
                      ({"q": 0.0}, r"stage axis 'q'")):
    add("limits", f"stage.set-{target}", put("stage", target), match)
    add("limits", f"safe_absolute_move-{target}", plan(P.safe_absolute_move, "scope", target),
        match)
add("limits", "stable_move-dx=1 m", plan(P.stable_move, "scope", 1.0, 0.0), r"stage\.x.*outside")
add("limits", "vertical_move-dy=0.1 m", plan(P.vertical_move, "scope", 0.1),
    r"stage\.[yz].*outside")
add("limits", "move_to_milling_angle=120", plan(P.move_to_milling_angle, "scope", 120.0),
    r"milling_angle.*120")
add("limits", "stage.x.set(1.0)", put("stage.x", 1.0), r"stage\.x = 1 m is outside")
add("limits", "manipulator.set-z=1 m", put("manipulator", {"z": 1.0}),
    r"manipulator\.z = 1 m is outside")
add("limits", "manipulator.set-unknown-name", put("manipulator", "HOME"),
    r"'HOME'.*PARK")
add("limits", "insert_manipulator-unknown", plan(P.insert_manipulator, "scope", "HOME"),
    r"'HOME'")
add("limits", "move_manipulator_to_position_offset-z=1 m",
    plan(P.move_manipulator_to_position_offset, "scope", {"z": 1.0}),
    r"manipulator\.z = 1 m is outside")
add("limits", "move_manipulator_to_position_offset-name",
    plan(P.move_manipulator_to_position_offset, "scope", {"z": 0.0}, name="NOPE"), r"'NOPE'")
add("limits", "move_manipulator_corrected-dx=1 m",
    plan(P.move_manipulator_corrected, "scope", dx=1.0), r"manipulator\.x.*outside")
for fn, args in ((P.stable_move, (1e-6, 0.0)), (P.move_flat_to_beam, ()),
                 (P.move_manipulator_corrected, (1e-6, 0.0)), (P.acquire_overview, ())):
    add("limits", f"{fn.__name__}-beam=proton", plan(fn, "scope", *args, beam="proton"),
        r"beam.*'proton'")
add("limits", "sem.detector_mode.set(Bogus)", put("sem.detector_mode", "Bogus"),
    r"detector_mode.*'Bogus'.*SecondaryElectrons")
add("limits", "fib.detector_type.set(XYZ)", put("fib.detector_type", "XYZ"),
    r"detector_type.*'XYZ'")
add("limits", "restore_state-detector_mode",
    plan(P.restore_state, "scope", {"electron_detector": {"detector_mode": "Bogus"}}),
    r"detector_mode.*'Bogus'")
add("limits", "electron_beam.current.set(1 A)", put("electron_beam.current", 1.0),
    r"current = 1 A is outside")
add("limits", "ion_beam.voltage.set(-30000)", put("ion_beam.voltage", -30000.0),
    r"voltage = -30000 V is outside")
add("limits", "chamber.set(open)", put("chamber", "open"), r"chamber state.*'open'")
add("limits", "gis.insert_position.set(somewhere)", put("gis.insert_position", "somewhere"),
    r"insert_position.*'somewhere'")
add("limits", "cryo_deposition-time=601", plan(P.cryo_deposition, "scope", time=601.0),
    r"time.*601")

IDS = [c.id for c in CASES]
assert len(set(IDS)) == len(IDS), [i for i, n in collections.Counter(IDS).items() if n > 1]


# ================================================================== the harness
class Ctx:
    """What a case is called with: the session, its RunEngine and devices, a scratch dir."""

    def __init__(self, session, tmp: Path):
        self.s, self.RE, self.scope, self.tmp = session, session.RE, session.microscope, tmp
        #: a data directory a refused setup_session must not make
        self.fresh = tmp / "fresh-data"
        #: what a refused setup_session left in a data directory that held a positions.yaml
        self.made: list[str] | None = None

    def target(self, name: str):
        return {"scope": self.scope, "sem": self.scope.sem, "fib": self.scope.fib}[name]

    def setup(self, cfg):
        s = setup_session(config=cfg, data_dir=self.fresh)
        s.close()  # not refused: the test fails on the missing exception
        return s


_CATALOG_FILES = ("catalog.db", "tables.duckdb")


def snapshot(session, starts: list) -> dict:
    """Everything a refused call must leave as it was."""
    be, scope = session.backend, session.microscope
    state = dict(be.state())
    state.pop("timestamp", None)
    files = sorted(str(p.relative_to(session.data_dir)) for p in session.data_dir.rglob("*")
                   if not p.name.startswith(_CATALOG_FILES))
    pos_path = scope.stage.positions.path
    return {
        "state": state,
        "clock": be.time(),
        "needle": (be.get_manipulator_position(), be.get("manipulator_inserted")),
        "gis": {k: be.get(k) for k in ("gis_position", "gis_gas", "sputter_current")},
        "vacuum": be.get("vacuum_state"),
        "image_settings": {d.name: d.image_settings() for d in (scope.sem, scope.fib)},
        "positions": (scope.stage.positions.get(), pos_path,
                      pos_path.read_text() if pos_path and pos_path.exists() else None),
        "starts": len(starts),
        "runs": sorted(session.catalog),  # the keys (len() is cached by the client for a while)
        "files": files,
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    session = setup_session(config=SMALL, data_dir=tmp_path_factory.mktemp("bad") / "data",
                            seed=1)
    starts: list = []
    session.RE.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
    yield session, starts
    session.close()


def _same(a, b) -> bool:
    """Equal, NaN == NaN (a snapshot holds floats)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_input_is_refused_before_anything_acts(case, live, tmp_path):
    session, starts = live
    c = Ctx(session, tmp_path)
    before = snapshot(session, starts)
    with pytest.raises(case.exc) as info:
        case.call(c)
    message = str(info.value)
    assert re.search(case.match, message, re.S), (case.match, message)
    after = snapshot(session, starts)
    changed = {k: (before[k], after[k]) for k in before if not _same(before[k], after[k])}
    assert not changed, changed
    assert not c.fresh.exists(), sorted(p.name for p in c.fresh.rglob("*"))
    assert c.made in (None, ["positions.yaml"]), c.made


def test_counts(capsys):
    """The table's size, by kind (printed; at least 150 cases)."""
    counts = collections.Counter(c.kind for c in CASES)
    with capsys.disabled():
        print(f"\nbad-input cases: {len(CASES)}; by kind: "
              + ", ".join(f"{k} {n}" for k, n in counts.items()))
    assert len(CASES) >= 150


def test_the_snapshot_sees_what_acts(session):
    """The harness can fail: a frame, a stage move, a beam setting, a saved position and
    the needle each change what :func:`snapshot` holds."""
    starts: list = []
    session.RE.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
    scope = session.microscope
    before = snapshot(session, starts)
    session.RE(P.acquire_image(scope.sem))
    after = snapshot(session, starts)
    assert {"clock", "starts", "runs", "files"} <= {k for k in before
                                                     if not _same(before[k], after[k])}
    for act, key in ((lambda: session.RE(P.stable_move(scope, 1e-6, 0.0)), "state"),
                     (lambda: scope.ion_beam.current.set(1e-10).wait(5), "state"),
                     (lambda: session.RE(P.save_position(scope, "here")), "positions"),
                     (lambda: scope.sem.hfw.set(100e-6).wait(5), "image_settings"),
                     (lambda: scope.manipulator.set("PARK").wait(30), "needle")):
        before = snapshot(session, starts)
        act()
        assert not _same(before[key], snapshot(session, starts)[key]), key
