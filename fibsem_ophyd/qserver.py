"""Queue-server client helpers (bluesky-queueserver-api's ``REManagerAPI`` over 0MQ).

``REManagerAPI.close()`` (bluesky-queueserver-api 0.0.13 on bluesky-queueserver 0.0.25)
closes its sockets but not the three ``zmq.Context`` objects the client made, one each for
the control socket, the console monitor and the system-info monitor. pyzmq destroys an
unclosed context only when it is garbage-collected, and warns ``ResourceWarning: Unclosed
context`` then, at whatever moment the collector runs. :func:`close_manager` closes the
client and terminates those contexts at once.
"""

from __future__ import annotations

__all__ = ["close_manager"]


def _contexts(manager) -> list:
    """The 0MQ contexts an ``REManagerAPI`` (zmq) holds: its control client's and its
    monitors' receivers' (each socket keeps its context as ``socket.context``)."""
    found = [getattr(getattr(manager, "_client", None), "_ctx", None)]
    for name in ("_console_monitor", "_system_info_monitor"):
        receiver = getattr(getattr(manager, name, None), "_rco", None)
        socket = getattr(receiver, "_socket", None)
        found.append(getattr(socket, "context", None))
    return [c for c in found if c is not None]


def close_manager(manager) -> None:
    """Close an ``REManagerAPI`` (zmq) and terminate the 0MQ contexts it leaves open.

    Idempotent. The monitors' threads are stopped by ``manager.close()`` before their
    contexts are destroyed (``linger=0``: nothing queued is waited for; a closed client
    sends nothing more).
    """
    contexts = _contexts(manager)
    manager.close()
    for context in contexts:
        if not context.closed:
            context.destroy(linger=0)
