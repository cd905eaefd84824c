"""Closing a queue-server client closes every 0MQ context it made (no server needed: a 0MQ
connect does not wait for its peer)."""

import gc

import zmq

from fibsem_ophyd.qserver import close_manager


def _open_contexts() -> dict[int, zmq.Context]:
    # type(), not isinstance(): isinstance reads ``__class__`` of every live object, and some
    # modules' objects warn when it is read (torch.distributed.reduce_op, if torch is loaded)
    return {id(o): o for o in gc.get_objects()
            if issubclass(type(o), zmq.Context) and not o.closed}


def test_close_manager_terminates_the_contexts_close_leaves_open():
    from bluesky_queueserver_api.zmq import REManagerAPI

    before = _open_contexts()
    api = REManagerAPI(zmq_control_addr="tcp://127.0.0.1:60001",
                       zmq_info_addr="tcp://127.0.0.1:60002")
    made = [c for i, c in _open_contexts().items() if i not in before]
    assert len(made) == 3  # control client, console monitor, system-info monitor
    try:
        api.close()
        assert not any(c.closed for c in made)  # what the library's close leaves
    finally:
        close_manager(api)
    assert all(c.closed for c in made)
    close_manager(api)  # idempotent

