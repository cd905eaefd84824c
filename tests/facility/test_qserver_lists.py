"""The committed queue-server lists: existing plans/devices (not stale) and user groups."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from .conftest import EXISTING_PLANS, PERMISSIONS, REPO, STARTUP_DIR, bin_path, facility_env

MOVEMENT_PLANS = ["stable_move", "vertical_move", "safe_absolute_move", "move_flat_to_beam",
                  "move_to_milling_angle", "go_to_position", "restore_state", "demo_workflow",
                  "insert_manipulator", "retract_manipulator", "move_manipulator_corrected",
                  "move_manipulator_to_position_offset", "select_sites", "safe_state"]
#: alignment (stage / beam shift), milling and deposition plans: denied to observers
ALIGNMENT_PLANS = ["align_beam_shift", "correct_drift", "find_coincidence",
                   "eucentric_alignment", "mill_stages", "cryo_deposition", "sputter_coat"]
IMAGING_PLANS = ["take_reference_images", "acquire_image", "acquire_series", "snapshot_state",
                 "read_manipulator_position"]


def public_plans() -> list[str]:
    import inspect

    import fibsem_ophyd.plans as P

    return sorted(n for n in P.__all__ if inspect.isgeneratorfunction(getattr(P, n)))


def test_existing_plans_and_devices_is_current(tmp_path):
    """Regenerate with ``qserver-list-plans-devices``; the committed file must match.

    Fix a failure with (from the repository root)::

        FIBSEM_OPHYD_DATA_DIR=$(mktemp -d) qserver-list-plans-devices \\
            --startup-dir profile_collection/startup --file-dir profile_collection/startup
    """
    out_dir = tmp_path / "lists"
    out_dir.mkdir()
    proc = subprocess.run(
        [bin_path("qserver-list-plans-devices"), "--startup-dir", str(STARTUP_DIR),
         "--file-dir", str(out_dir)],
        cwd=REPO, env=facility_env(tmp_path / "data"), capture_output=True, text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fresh = yaml.safe_load((out_dir / "existing_plans_and_devices.yaml").read_text())
    committed = yaml.safe_load(EXISTING_PLANS.read_text())
    for section in ("existing_plans", "existing_devices"):
        stale = sorted(k for k in set(fresh[section]) | set(committed[section])
                       if fresh[section].get(k) != committed[section].get(k))
        assert not stale, (
            f"{EXISTING_PLANS.relative_to(REPO)} is stale for {section} {stale}; regenerate "
            "it (see this test's docstring)"
        )
    assert fresh == committed


@pytest.fixture(scope="module")
def existing():
    return yaml.safe_load(EXISTING_PLANS.read_text())


def test_every_public_plan_is_listed_and_typed(existing):
    plans = existing["existing_plans"]
    assert sorted(plans) == public_plans()
    for name, plan in plans.items():
        for p in plan["parameters"]:
            ann = p.get("annotation", {}).get("type")
            assert ann, f"{name}({p['name']}) has no type annotation"
            assert not ann.startswith("'"), f"{name}({p['name']}): unevaluated annotation {ann}"
    # devices are chosen by name from the device list
    for name in MOVEMENT_PLANS + IMAGING_PLANS:
        first = plans[name]["parameters"][0]
        assert first["annotation"]["type"] == "__READABLE__", (name, first)
    for dev in ("microscope", "stage", "electron_beam", "ion_beam", "sem", "fib", "chamber"):
        assert dev in existing["existing_devices"]


def test_user_group_permissions(existing):
    from bluesky_queueserver.manager.profile_ops import (
        load_allowed_plans_and_devices,
        load_user_group_permissions,
        validate_plan,
    )

    permissions = load_user_group_permissions(str(PERMISSIONS))  # validates the schema
    assert {"root", "primary", "observers"} <= set(permissions["user_groups"])
    allowed_plans, allowed_devices = load_allowed_plans_and_devices(
        path_existing_plans_and_devices=str(EXISTING_PLANS),
        path_user_group_permissions=str(PERMISSIONS),
    )
    assert sorted(allowed_plans["primary"]) == sorted(existing["existing_plans"])
    observers = allowed_plans["observers"]
    for name in MOVEMENT_PLANS:
        assert name not in observers, name
    for name in ALIGNMENT_PLANS:
        assert name not in observers, name
    for name in IMAGING_PLANS:
        assert name in observers, name
    for group in ("primary", "observers"):
        assert "microscope" in allowed_devices[group]

    plan = {"name": "take_reference_images", "args": ["microscope"],
            "kwargs": {"hfw": 100e-6, "resolution": [384, 256], "md": {"sample": "L1"}}}
    for group in ("primary", "observers"):
        ok, msg = validate_plan(plan, allowed_plans=allowed_plans[group],
                                allowed_devices=allowed_devices[group])
        assert ok, msg
    bad = {"name": "take_reference_images", "args": ["microscope"], "kwargs": {"hfw": "wide"}}
    ok, msg = validate_plan(bad, allowed_plans=allowed_plans["primary"],
                            allowed_devices=allowed_devices["primary"])
    assert not ok and "hfw" in msg
    move = {"name": "stable_move", "args": ["microscope"], "kwargs": {"dx": 1e-6, "dy": 0.0}}
    ok, msg = validate_plan(move, allowed_plans=allowed_plans["primary"],
                            allowed_devices=allowed_devices["primary"])
    assert ok, msg
    ok, msg = validate_plan(move, allowed_plans=allowed_plans["observers"],
                            allowed_devices=allowed_devices["observers"])
    assert not ok and "stable_move" in msg
