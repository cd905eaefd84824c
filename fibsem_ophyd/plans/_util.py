"""Small plan helpers shared by the plan modules, and the failed-status explainer the session's
RunEngine wraps every plan in."""

from typing import Any

import bluesky.plan_stubs as bps
from bluesky.utils import FailedStatus, MsgGenerator, ensure_generator

__all__ = ["mv_raising_cause", "DeviceFailed", "explain_failures", "relay"]


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


class DeviceFailed(FailedStatus):
    """A device's status failed, said in the microscope's words: ``"<device>: <error type>:
    <message>"`` of the error the status failed with (also its ``__cause__``). Still a
    ``FailedStatus``, so plans that catch those (a batch skipping a lost site) go on doing so;
    ``status`` is the failed status."""

    def __init__(self, status: Any, cause: BaseException):
        self.status = status
        device = getattr(getattr(status, "device", None), "name", None) \
            or getattr(getattr(status, "obj", None), "name", None)
        prefix = f"{device}: " if device else ""
        super().__init__(f"{prefix}{type(cause).__name__}: {cause}")


def _explained(err: FailedStatus) -> FailedStatus:
    cause = err.__cause__
    if isinstance(err, DeviceFailed) or not isinstance(cause, BaseException):
        return err
    new = DeviceFailed(err.args[0] if err.args else None, cause)
    new.__cause__ = cause
    return new


def relay(plan, on_response=None, on_error=None) -> MsgGenerator[Any]:
    """Run ``plan`` as ``yield from`` would, message by message, with two hooks:
    ``on_response(msg, response)`` sees each answer of the RunEngine, ``on_error(exc)``
    returns the exception to throw into the plan for one the RunEngine threw (the plan may
    clean up or handle it); return what ``plan`` returns."""
    gen = ensure_generator(plan)
    response: Any = None
    error: BaseException | None = None
    while True:
        try:
            msg = gen.throw(error) if error is not None else gen.send(response)
        except StopIteration as stop:
            return stop.value
        error = None
        try:
            response = yield msg
        except GeneratorExit:
            gen.close()
            raise
        except BaseException as exc:
            response, error = None, (exc if on_error is None else on_error(exc))
            continue
        if on_response is not None:
            on_response(msg, response)


def explain_failures(plan) -> MsgGenerator[Any]:
    """Run ``plan``, turning each bluesky ``FailedStatus`` the RunEngine throws into it (whose
    text is only ``DeviceStatus(device=..., done=True, success=False)``) into a
    :class:`DeviceFailed` that says why, before the plan sees it. The RunEngine throws into
    the outermost generator, so wrapping the whole plan reaches every run inside it: a run
    that fails on it closes with that text as its stop document's ``reason``."""
    return (yield from relay(
        plan, on_error=lambda exc: _explained(exc) if isinstance(exc, FailedStatus) else exc))
