"""A document consumer process: ``python _zmq_consumer.py PROXY_OUT_ADDRESS OUT_FILE [N_RUNS]``.

Subscribes to a ``bluesky-0MQ-proxy`` output with ``RemoteDispatcher``, writes one JSON line
``[name, doc]`` per document, prints ``READY`` once subscribed and exits after ``N_RUNS`` stop
documents (default 1).
"""

import asyncio
import json
import sys

from bluesky.callbacks.zmq import RemoteDispatcher


def main() -> None:
    address, out_path = sys.argv[1], sys.argv[2]
    n_runs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    dispatcher = RemoteDispatcher(address)
    stops = 0
    out = open(out_path, "w")

    def record(name, doc):
        nonlocal stops
        out.write(json.dumps([name, doc], default=repr) + "\n")
        out.flush()
        if name == "stop":
            stops += 1
            if stops >= n_runs:
                dispatcher._task.cancel()

    dispatcher.subscribe(record)
    dispatcher.loop.call_soon(lambda: print("READY", flush=True))
    try:
        dispatcher.start()
    except asyncio.CancelledError:
        pass
    finally:
        out.close()


if __name__ == "__main__":
    main()
