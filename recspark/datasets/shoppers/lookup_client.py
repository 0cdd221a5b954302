"""The lookup service as a website calls it: ``GET /v1/users/{user_id}/recommendations`` over real
HTTP, every request bounded in time.

A request that cannot be answered now (nothing listening, a timeout, a 5xx or the 503 of a service
whose tables are not loaded yet) is retried with a growing pause, but never past the caller's
deadline: then :class:`LookupServiceError` says which service, what was asked and the last
problem. A 4xx, or an answer that is not a list with a ``recommendation_id``, fails at once.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from recspark.core.recommendation_ids import is_recommendation_id

_FIRST_PAUSE = 0.05  # seconds before the first retry; doubled each time up to _LONGEST_PAUSE
_LONGEST_PAUSE = 1.0


class LookupServiceError(RuntimeError):
    """The lookup service did not give a list in time, or gave something that is not one."""


@dataclass(frozen=True)
class ServedList:
    """One answer of the service: the list a shopper is shown."""

    recommendation_id: str
    items: tuple[str, ...]  # position 1 first
    fallback: bool
    model_version: str | None
    variant: str | None


class LookupClient:
    """Requests to the service at ``base_url`` (``http://host:port``), each at most
    ``request_timeout`` seconds and none past ``deadline`` (a ``time.monotonic()`` value)."""

    def __init__(self, base_url: str, *, deadline: float, request_timeout: float = 5.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LookupServiceError(f"the lookup service URL must be http://HOST:PORT, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.deadline = deadline
        self.request_timeout = request_timeout
        self.requests = 0  # HTTP requests sent, retries included
        # Straight to the service: a proxy named by the environment is not asked.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def user_list(self, user_id: str, n: int | None = None) -> ServedList:
        """The list the service serves ``user_id`` now (``n`` items at most, else its default)."""
        path = f"/v1/users/{quote(user_id, safe='')}/recommendations" + ("" if n is None else f"?n={n}")
        return _served_list(self._get(path), path)

    def _get(self, path: str) -> dict:
        url = self.base_url + path
        pause, problem = _FIRST_PAUSE, "no request was sent"
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise LookupServiceError(
                    f"the lookup service at {self.base_url} gave no answer to GET {path} within the "
                    f"time limit: {problem}"
                )
            self.requests += 1
            try:
                with self._opener.open(url, timeout=min(self.request_timeout, left)) as response:
                    body = response.read()
                return _json_object(body, path)
            except urllib.error.HTTPError as error:
                text = error.read()[:300].decode("utf-8", "replace")
                if error.code < 500:
                    raise LookupServiceError(f"GET {path} got HTTP {error.code}: {text}") from error
                problem = f"HTTP {error.code}: {text}"
            except (OSError, TimeoutError) as error:  # refused, reset, timed out (URLError is one)
                problem = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
            time.sleep(max(0.0, min(pause, self.deadline - time.monotonic())))
            pause = min(2 * pause, _LONGEST_PAUSE)


def _json_object(body: bytes, path: str) -> dict:
    try:
        found = json.loads(body)
    except ValueError as error:
        raise LookupServiceError(f"GET {path} answered something that is not JSON: {body[:100]!r}") from error
    if not isinstance(found, dict):
        raise LookupServiceError(f"GET {path} answered JSON that is not an object: {body[:100]!r}")
    return found


def _served_list(body: dict, path: str) -> ServedList:
    rid = body.get("recommendation_id")
    items = body.get("items")
    if not isinstance(rid, str) or not is_recommendation_id(rid) or not isinstance(items, list):
        raise LookupServiceError(f"GET {path} answered no list with a recommendation_id: {str(body)[:200]}")
    try:
        shown = tuple(str(entry["item_id"]) for entry in items)
    except (KeyError, TypeError) as error:
        raise LookupServiceError(f"GET {path} answered an item without an item_id: {items[:3]}") from error
    return ServedList(
        recommendation_id=rid,
        items=shown,
        fallback=bool(body.get("fallback", False)),
        model_version=body.get("model_version"),
        variant=body.get("variant"),
    )
