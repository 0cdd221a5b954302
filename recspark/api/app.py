"""The HTTP endpoints (Starlette): lists, health and metrics, every answer JSON but the metrics.

A malformed request (an unknown or repeated parameter, ``n`` that is not a whole number in
range, an empty, over-long or control-character id, too many excluded items) gets 400 with
``{"error": ...}`` naming what is wrong; an unknown path 404 and a wrong method 405, also JSON.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from recspark.api.lists import SIMILAR_LIST, USER_LIST, ListAnswer
from recspark.api.metrics import CONTENT_TYPE
from recspark.api.service import LookupService
from recspark.core.contract import MAX_ID_LENGTH

log = logging.getLogger("recspark.api")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")
USER_PARAMETERS = ("n", "exclude", "category")
# user_id: the shopper the similar items are shown to (their impression names them).
SIMILAR_PARAMETERS = ("n", "user_id")


class BadRequest(ValueError):
    """The request cannot be answered as asked; the message says why (400)."""


def _id(value: str, what: str) -> str:
    if not value:
        raise BadRequest(f"{what} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{what} is longer than {MAX_ID_LENGTH} characters")
    if _CONTROL.search(value):
        raise BadRequest(f"{what} contains control characters")
    return value


def _parameters(request: Request, known: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each at most once and all known."""
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in known:
            raise BadRequest(f"unknown parameter {name!r} (known: {', '.join(known)})")
        if name in found:
            raise BadRequest(f"parameter {name!r} given more than once")
        found[name] = value
    return found


def _n(text: str | None, default: int, most: int) -> int:
    if text is None:
        return min(default, most)
    if not _WHOLE_NUMBER.fullmatch(text) or not 1 <= int(text) <= most:
        raise BadRequest(f"n must be a whole number from 1 to {most}, got {text[:40]!r}")
    return int(text)


def _exclude(text: str | None, most: int) -> list[str]:
    if text is None:
        return []
    items = [part.strip() for part in text.split(",") if part.strip()]
    if len(items) > most:
        raise BadRequest(f"exclude names {len(items)} items; at most {most} are allowed")
    return [_id(item, "an excluded item id") for item in items]


def _json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _not_loaded(what: str) -> JSONResponse:
    return _json({"error": f"{what} not loaded yet: see /health"}, 503)


Handler = Callable[[Request], Awaitable[Response]]


def build_app(service: LookupService) -> Starlette:
    """The ASGI application over ``service`` (whose follower thread runs for the app's life)."""
    api = service.config.api
    top_n = service.config.serve.top_n

    def timed(endpoint: str, handler: Handler) -> Handler:
        observe = service.metrics.request_observer(endpoint)

        async def timed_handler(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except BadRequest as problem:
                response = _json({"error": str(problem)}, 400)
            except Exception:
                log.exception("api: %s %s failed", request.method, request.url.path)
                response = _json({"error": "internal error"}, 500)
            observe(response.status_code, time.perf_counter() - started)
            return response

        return timed_handler

    def answer(served: ListAnswer | None, what: str) -> Response:
        if served is None:
            return _not_loaded(what)
        if served.fallback:
            service.metrics.fallback_lists.labels(served.kind).inc()
        return _json(served.as_json())

    async def recommendations(request: Request) -> Response:
        user_id = _id(request.path_params["user_id"], "user_id")
        query = _parameters(request, USER_PARAMETERS)
        category = query.get("category")
        filters = service.filters(
            _n(query.get("n"), top_n, api.max_n),
            _exclude(query.get("exclude"), api.max_exclude),
            None if category is None else _id(category, "category"),
        )
        return answer(service.user_list(user_id, filters), "recommendations")

    async def similar(request: Request) -> Response:
        item_id = _id(request.path_params["item_id"], "item_id")
        query = _parameters(request, SIMILAR_PARAMETERS)
        filters = service.filters(_n(query.get("n"), top_n, api.max_n), (), None)
        user_id = query.get("user_id")
        shown_to = None if user_id is None else _id(user_id, "user_id")
        return answer(service.similar_list(item_id, filters, shown_to), "similar_items")

    async def health(request: Request) -> Response:
        status, body = service.health()
        return _json(body, status)

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        service.metrics.request_observer("other")(exc.status_code, 0.0)
        return _json({"error": exc.detail}, exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("api: %s %s failed", request.method, request.url.path, exc_info=exc)
        return _json({"error": "internal error"}, 500)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    return Starlette(
        routes=[
            Route(
                "/v1/users/{user_id:path}/recommendations",
                timed(USER_LIST, recommendations),
                methods=["GET"],
            ),
            Route("/v1/items/{item_id:path}/similar", timed(SIMILAR_LIST, similar), methods=["GET"]),
            Route("/health", timed("health", health), methods=["GET"]),
            Route("/metrics", timed("metrics", metrics), methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
