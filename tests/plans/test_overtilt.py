"""The Overtilt strategy through mill_stages: each trench cut milled with the simulated stage
tilted by -/+ the overtilt, aligned again there, the tilt and beam shift restored."""

import pytest

from fibsem_ophyd.plans import acquire_reference, mill_stages, move_to_milling_angle

TRENCH = {"name": "trench", "milling": {"milling_current": 7.4e-10, "hfw": 80e-6,
                                        "material": "ice"},
          "pattern": {"name": "Trench", "width": 8e-6, "upper_trench_height": 3e-6,
                      "lower_trench_height": 3e-6, "spacing": 1e-6, "depth": 1e-6},
          "strategy": {"name": "Overtilt", "config": {"overtilt": 1.0}}}


def test_overtilt_mills_each_cut_at_its_tilt_and_restores_the_stage(session, microscope):
    RE, scope = session.RE, microscope
    scope.fib.hfw.set(80e-6).wait()
    RE(move_to_milling_angle(scope, 15.0))
    scope.ion_beam.blanked.set(False).wait()
    ref = RE(acquire_reference(scope.fib, hfw=80e-6)).plan_result
    t0 = scope.stage.t.position
    shift0 = list(scope.ion_beam.shift.get())
    milled = []  # (the pattern's first cut centre y, the stage tilt then) per milling

    def hook(msg):
        if msg.command == "set" and msg.obj is scope.milling:
            milled.append((msg.args[0]["pattern"]["centre_y"], scope.stage.t.position))

    RE.msg_hook = hook
    try:
        uid = RE(mill_stages(scope, [TRENCH], align=True, reference=ref)).plan_result
    finally:
        RE.msg_hook = None
    # the upper cut (above the lamella) at -1 degree, the lower at +1, as OpenFIBSEM does
    assert [y > 0 for y, _ in milled] == [True, False]
    assert [t for _, t in milled] == pytest.approx([t0 - 1.0, t0 + 1.0], abs=1e-9)
    assert scope.stage.t.position == pytest.approx(t0, abs=1e-12)
    assert list(scope.ion_beam.shift.get()) == pytest.approx(shift0, abs=1e-15)
    # at each tilt the site moved in the image, in opposite directions, and the alignment
    # put the pattern back on it (the corrections, stored in the run's alignment stream)
    run = session.catalog[uid]
    dy = [float(v) for v in run["alignment"].read()["alignment_dy"].values]
    big = [d for d in dy if abs(d) > 0.3e-6]
    assert len(big) == 2 and big[0] * big[1] < 0
    # the milling device alone mills where the stage is: it refuses to drop the tilts
    with pytest.raises(ValueError, match=r"stage\(s\) \['trench'\]: the Overtilt strategy "
                                         r"tilts the stage between cuts"):
        scope.milling.set(TRENCH)
