"""Small plan helpers shared by the plan modules."""

import bluesky.plan_stubs as bps
from bluesky.utils import FailedStatus, MsgGenerator

__all__ = ["mv_raising_cause"]


def mv_raising_cause(device, value) -> MsgGenerator[None]:
    """``mv(device, value)``; if the move fails, raise the microscope's own error (e.g.
    ``BackendError: the chamber is vented``) instead of bluesky's ``FailedStatus``, so the
    caller and a run's stop document say why, not only that a status failed."""
    try:
        yield from bps.mv(device, value)
    except FailedStatus as err:
        cause = err.__cause__
        if isinstance(cause, Exception):
            raise cause from err
        raise
