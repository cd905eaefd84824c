"""The read path's use of Tiled's server and in-process client internals, in one place.

Every catalog request pays Tiled's request handling; three of its costs are removable
from outside Tiled without changing a response (measured with cProfile/py-spy on a
2-core machine, ``benchmarks/bench_tiled_read.py`` for the totals):

- **Dependency re-resolution.** Tiled's ``build_app`` overrides ``get_settings``, and
  FastAPI re-analyses the signature of *every* dependency of a route on every request
  whenever ``app.dependency_overrides`` is non-empty (``solve_dependencies`` calls
  ``get_dependant`` per sub-dependency): ~25-35 % of the server's CPU per request.
  Tiled's override returns the very object ``get_settings()`` returns (it sets the
  configured values on that cached ``Settings``), so :func:`tune_app` hides the
  override from that check once it has verified this identity; every route still gets
  the same ``Settings`` object, and Tiled's own ``app.dependency_overrides[get_settings]``
  look-ups still work. An override added later (or a different one for
  ``get_settings``) turns the mapping truthy again, so FastAPI honours it as usual.
- **Generic response models rebuilt.** ``construct_resource`` parametrises
  ``schemas.Resource[...]`` per node; pydantic keeps parametrised generics only in a
  weak cache, so once the garbage collector has dropped one it is built again (~30 ms
  of CPU on the next metadata request). :func:`tune_app` keeps those few classes alive.
- **The app outlives its client.** ``Context.from_app`` registers the TestClient's
  ``__exit__`` with ``threading._register_atexit`` (so the portal thread is stopped before
  the interpreter joins threads) and never removes it: every in-process catalog ever
  opened, with its whole app (~5,500 FastAPI ``Dependant`` s, pydantic adapters; 8.4
  against 1.0 million tracked objects after the 126 plan tests in one process), stays
  alive until the interpreter exits, and each full garbage collection walks all of it
  (7 s per collection after the plan tests, 44 s late in the whole suite in one process).
  :func:`in_process_context` makes a context whose ``close()`` also drops that hook once
  the client has exited.
- **The in-process transport.** ``Context.from_app`` talks to the app through
  starlette's ``TestClient``, which crosses threads ~8 times per request (each ASGI
  message and each body chunk is one ``portal.call``) and copies the body.
  :func:`lean_in_process_transport` runs each HTTP request as one call on the same
  portal (the one the app's lifespan runs on), collecting the response there.

Pinned by tests/storage/test_tiled_read.py. Written against Tiled 0.2.20 and FastAPI
0.165; each step checks what it relies on and leaves the app as it is otherwise.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any
from urllib.parse import unquote

import httpx

__all__ = ["tune_app", "in_process_context", "lean_in_process_transport", "LeanAppTransport"]

logger = logging.getLogger(__name__)

#: parametrised ``schemas.Resource`` classes kept alive (pydantic caches them weakly)
_PINNED_MODELS: list[type] = []


class _SettledOverrides(dict):
    """``app.dependency_overrides`` whose overrides are known to change nothing.

    False in a boolean context (FastAPI's test for re-resolving dependencies) while it
    holds exactly the settled entries; true as soon as an entry is added or replaced.
    """

    def __init__(self, settled: dict):
        super().__init__(settled)
        self._settled = dict(settled)

    def __bool__(self) -> bool:
        return len(self) != len(self._settled) or any(
            self.get(k, _MISSING) is not v for k, v in self._settled.items()
        )


_MISSING = object()


def _settle_settings_override(app) -> bool:
    from tiled.server.settings import get_settings

    overrides = app.dependency_overrides
    if isinstance(overrides, _SettledOverrides):
        return True
    if set(overrides) != {get_settings}:
        return False
    # Tiled's override is cached and returns get_settings()'s cached object after
    # setting the configured values on it; only then is skipping it a no-op.
    if overrides[get_settings]() is not get_settings():
        return False
    app.dependency_overrides = _SettledOverrides(overrides)
    return True


def _pin_resource_models(app) -> bool:
    from tiled.server import schemas

    if _PINNED_MODELS:
        return True
    links = {*schemas.resource_links_type_by_structure_family.values(), schemas.SelfLinkOnly}
    models = [schemas.Resource[schemas.NodeAttributes, link, schemas.EmptyDict]
              for link in links]
    models.append(schemas.Resource[schemas.NodeAttributes, schemas.ContainerLinks,
                                   schemas.ContainerMeta])
    _PINNED_MODELS.extend(models)
    return True


def tune_app(app) -> list[str]:
    """Remove the per-request costs described in the module docstring from a Tiled app.

    Parameters
    ----------
    app : fastapi.FastAPI
        An app from ``tiled.server.app.build_app``.

    Returns
    -------
    list of str
        What was applied (``"settings-override"``, ``"resource-models"``); a step whose
        premise does not hold (another Tiled/FastAPI) is skipped and logged.
    """
    applied = []
    for name, step in (("settings-override", _settle_settings_override),
                       ("resource-models", _pin_resource_models)):
        try:
            if step(app):
                applied.append(name)
            else:
                logger.info("Tiled app tuning %r skipped: its premise does not hold", name)
        except Exception:
            logger.warning("Tiled app tuning %r failed; the app is left as built", name,
                           exc_info=True)
    return applied


class LeanAppTransport(httpx.BaseTransport):
    """An httpx transport that runs each request through an ASGI app in one portal call.

    Made from starlette's ``_TestClientTransport`` (``inner``): same app, portal, scope
    (client address, root path, lifespan state) and ``raise_server_exceptions``; the
    response is collected on the portal's thread and returned whole. WebSocket requests
    go to ``inner``.
    """

    def __init__(self, inner: Any):
        self.inner = inner
        self.app = inner.app
        self.portal_factory = inner.portal_factory
        self.raise_server_exceptions = inner.raise_server_exceptions
        self.root_path = inner.root_path
        self.client = inner.client
        self.app_state = inner.app_state

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            return self.inner.handle_request(request)
        headers = [(k.lower().encode(), v.encode()) for k, v in request.headers.multi_items()]
        if "host" not in request.headers:
            headers.insert(0, (b"host", url.netloc))
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": request.method,
            "path": unquote(url.path),
            "raw_path": url.raw_path.split(b"?", 1)[0],
            "root_path": self.root_path,
            "scheme": url.scheme,
            "query_string": url.query,
            "headers": headers,
            "client": self.client,
            "server": [url.raw_host.decode("ascii"), url.port or (443 if url.scheme == "https"
                                                                   else 80)],
            "extensions": {},
            "state": dict(self.app_state),
        }
        body = request.read()
        app = self.app
        raise_errors = self.raise_server_exceptions

        async def run() -> tuple[dict, list]:
            import anyio

            start: dict = {}
            chunks: list = []
            received = False
            complete = anyio.Event()

            async def receive() -> dict:
                nonlocal received
                if received:
                    # as a client that stays connected: the disconnect comes only
                    # after the whole response (a middleware or a streaming response
                    # listening for it would otherwise stop the app early)
                    await complete.wait()
                    return {"type": "http.disconnect"}
                received = True
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: dict) -> None:
                if message["type"] == "http.response.start":
                    start.update(message)
                elif message["type"] == "http.response.body":
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        complete.set()

            try:
                await app(scope, receive, send)
            except Exception:
                if raise_errors or start:
                    raise
                return {"status": 500, "headers": []}, [b"Internal Server Error"]
            finally:
                complete.set()
            return start, chunks

        with self.portal_factory() as portal:
            start, chunks = portal.call(run)
        content = b"".join(chunks)  # one copy (a Tiled array body is a memoryview)
        return httpx.Response(
            start["status"],
            headers=[(k.decode("latin-1"), v.decode("latin-1"))
                     for k, v in start.get("headers", [])],
            content=content if request.method != "HEAD" else b"",
            request=request,
        )


def lean_in_process_transport(context) -> bool:
    """Give an in-process ``tiled.client.Context`` (``Context.from_app``) a
    :class:`LeanAppTransport`; ``False`` (and unchanged) if it is not built as expected."""
    try:
        from starlette.testclient import _TestClientTransport
        from tiled.client.transport import Transport

        outer = context.http_client._transport
        if not isinstance(outer, Transport):
            return False
        inner = outer.transport
        if isinstance(inner, LeanAppTransport):
            return True
        if not isinstance(inner, _TestClientTransport):
            return False
        outer.transport = LeanAppTransport(inner)
        return True
    except Exception:
        logger.warning("in-process Tiled transport left as built", exc_info=True)
        return False


def _forget_thread_atexit(callback) -> bool:
    """Remove ``callback`` from the hooks ``threading`` runs before joining threads at
    interpreter exit; ``False`` if the (private) list is not there or does not hold it."""
    hooks = getattr(threading, "_threading_atexits", None)
    if not isinstance(hooks, list):
        return False
    # _register_atexit stores functools.partial(callback, *args)
    kept = [h for h in hooks if getattr(h, "func", h) != callback]
    found = len(kept) != len(hooks)
    hooks[:] = kept
    return found


@functools.cache
def _closing_context_class() -> type:
    from tiled.client import Context

    class ClosingContext(Context):
        """``Context`` whose ``close()`` also drops the exit hook ``from_app`` registered."""

        def close(self):
            client = self.http_client
            super().close()
            _forget_thread_atexit(client.__exit__)

    return ClosingContext


def in_process_context(app, **kwargs):
    """``tiled.client.Context.from_app(app, **kwargs)`` whose ``close()`` lets the client
    and the app be collected (see the module's notes); until it is closed, the exit hook
    stays, so a context left open is still shut down cleanly at interpreter exit."""
    return _closing_context_class().from_app(app, **kwargs)
