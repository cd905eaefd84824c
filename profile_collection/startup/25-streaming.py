"""Live document streaming to a ``bluesky-0MQ-proxy`` (optional).

Set ``FIBSEM_OPHYD_ZMQ_ADDRESS`` to the proxy's input (``host:port``, e.g. ``localhost:5577``
for ``bluesky-0MQ-proxy --in-address 5577 --out-address 5578``); consumers elsewhere then
subscribe with ``bluesky.callbacks.zmq.RemoteDispatcher("host:5578")``.
"""

zmq_publisher = None
if FIBSEM_ENV["zmq_address"]:  # noqa: F821  (00-base.py)
    from bluesky.callbacks.zmq import Publisher

    zmq_publisher = Publisher(FIBSEM_ENV["zmq_address"])  # noqa: F821
    RE.subscribe(zmq_publisher)  # noqa: F821  (10-session.py)
