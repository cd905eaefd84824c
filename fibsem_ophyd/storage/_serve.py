"""Child-process entry point of :class:`fibsem_ophyd.storage.catalog.CatalogServer`.

``python -m fibsem_ophyd.storage._serve DATA_DIR [-r DIR ...]`` with the API key in the
``FIBSEM_CATALOG_API_KEY`` environment variable. Binds 127.0.0.1 on a free port, prints
``PORT <n>`` on stdout, serves until stdin reaches EOF (the parent closed it or died).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir")
    parser.add_argument("-r", "--readable", action="append", default=[])
    args = parser.parse_args(argv)
    api_key = os.environ["FIBSEM_CATALOG_API_KEY"]

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    import uvicorn

    from fibsem_ophyd.storage.catalog import build_catalog_app

    app = build_catalog_app(args.data_dir, readable_storage=args.readable, api_key=api_key)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)

    def watch_parent() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe or died
        server.should_exit = True

    threading.Thread(target=watch_parent, daemon=True).start()
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
