"""The lazy-stack Plan keeps bluesky's 'never iterated' warning and its stack."""

import gc

import bluesky.plan_stubs as bps
import pytest

from fibsem_ophyd import _bluesky_compat


def _forgets_yield_from():
    bps.sleep(0.1)  # the bug the warning exists for: no `yield from`
    yield from bps.null()


def test_warning_still_fires_with_caller_in_stack():
    assert _bluesky_compat.install()
    with pytest.warns(RuntimeWarning, match="plan `sleep` was never iterated") as rec:
        list(_forgets_yield_from())
        gc.collect()
    text = str(rec[0].message)
    assert "_forgets_yield_from" in text  # the frame that forgot `yield from`
    assert "bps.sleep(0.1)" in text  # source line looked up when the warning is shown


def test_plans_still_run(session):
    from bluesky.plans import count

    result = session.RE(count([session.microscope.sem], num=2))
    assert result.exit_status == "success"
