"""What a run records when the microscope fails under it.

``note_suspension``: the event a suspended run records (stream "suspensions"), the
pre- and post-plan of the suspenders ``setup_session`` installs.
"""

import logging

import bluesky.plan_stubs as bps
from bluesky.protocols import Readable
from bluesky.utils import IllegalMessageSequence, MsgGenerator

__all__ = ["note_suspension", "SUSPENSION_STREAM"]

#: the stream of a run's suspensions: one event "suspended" and one "resumed" each
SUSPENSION_STREAM = "suspensions"

_log = logging.getLogger(__name__)


def note_suspension(microscope: Readable, event: str, reason: str) -> MsgGenerator[None]:
    """Record ``event`` ("suspended" or "resumed") and ``reason`` as an event of stream
    "suspensions" of the open run (bluesky records nothing of a suspension by itself), and
    log it. Outside a run only the log has it."""
    _log.warning("run %s: %s", event, reason)
    rec = microscope.recorders.suspension
    yield from bps.mv(rec.event, event, rec.reason, reason)
    try:
        yield from bps.create(name=SUSPENSION_STREAM)
    except IllegalMessageSequence:
        return  # no run is open
    yield from bps.read(rec)
    yield from bps.save()

