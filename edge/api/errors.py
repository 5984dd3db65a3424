"""How the API answers errors, and how it reads request bodies.

Errors are always ``{"error": {"code": ..., "message": ...}}``: handlers raise ``ApiError`` (status, code, message and
extra fields), ``error_middleware`` turns it, aiohttp's own 4xx and any unexpected exception into that shape (a 500
never leaks internals). An unreachable database (:class:`store.protocol.StoreUnavailable`) is a ``503
store_unavailable`` with ``Retry-After`` (setting ``store_retry_after``): transient, nobody's input was wrong.
``json_body`` reads a JSON object of at most ``MAX_BODY`` bytes, arriving within ``listener_body_timeout`` seconds
(408 ``body_timeout`` beyond).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from store.protocol import StoreUnavailable

from edge.api.state import SERVICES

__all__ = ["MAX_BODY", "ApiError", "api_error", "error_middleware", "json_body", "query_int",
           "MAX_QUERY_INT", "store_unavailable"]

log = logging.getLogger("edge.api")
#: The largest request body the API reads (also the app's ``client_max_size``).
MAX_BODY = 256 * 1024
#: Seconds for a request body to arrive when the app has no settings (setting ``listener_body_timeout``).
DEFAULT_BODY_TIMEOUT = 30.0


def api_error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
              **extra: Any) -> web.Response:
    """The error answer: ``{"error": {"code", "message", **extra}}`` with ``headers``; a 401 also names the bearer
    realm."""
    body = {"error": {"code": code, "message": message, **extra}}
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="edgecert"'
    return web.json_response(body, status=status, headers=headers)


#: Retry-After of a 503 when the app has no settings (seconds).
DEFAULT_STORE_RETRY_AFTER = 5
#: At most one log line per this many seconds about 503s while the database is away.
OUTAGE_LOG_EVERY = 10.0
_last_outage_log = -OUTAGE_LOG_EVERY
_outage_suppressed = 0


def store_unavailable(request: web.Request, e: StoreUnavailable) -> web.Response:
    """503 while the database is away: one warning line in the log (no traceback), ``Retry-After`` for clients."""
    services = request.app.get(SERVICES)
    retry = int(getattr(getattr(services, "settings", None), "store_retry_after", DEFAULT_STORE_RETRY_AFTER))
    global _last_outage_log, _outage_suppressed
    now = time.monotonic()
    if now - _last_outage_log >= OUTAGE_LOG_EVERY:  # one line per 10 s during an outage, not one per request
        more = f" ({_outage_suppressed} more 503s since the last line)" if _outage_suppressed else ""
        log.warning("%s %s: 503, %s%s", request.method, request.path, e, more)
        _last_outage_log, _outage_suppressed = now, 0
    else:
        _outage_suppressed += 1
    return api_error(503, "store_unavailable", "edgecert cannot reach its database right now (its operator must "
                     f"restore it); nothing was changed. Try again in {retry} seconds.",
                     headers={"Retry-After": str(retry)}, retry_after=retry)


class ApiError(Exception):
    """Raised by handlers; ``error_middleware`` answers it with ``api_error(status, code, message, **extra)``."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra, self.headers = status, code, message, extra, headers


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return api_error(e.status, e.code, e.message, headers=e.headers, **e.extra)
    except web.HTTPException as e:
        if e.status >= 400 and e.content_type != "application/json":
            code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(e.status, "http_error")
            return api_error(e.status, code, e.reason)
        raise
    except StoreUnavailable as e:
        return store_unavailable(request, e)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return api_error(500, "internal_error", "internal error; see the server log")


async def json_body(request: web.Request) -> dict:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "body_too_large", f"request body is larger than {MAX_BODY} bytes")
    services = request.app.get(SERVICES)
    deadline = getattr(getattr(services, "settings", None), "listener_body_timeout", DEFAULT_BODY_TIMEOUT)
    try:
        async with asyncio.timeout(deadline):  # a client that stops half-way through its body is cut off
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "body_too_large", f"request body is larger than {MAX_BODY} bytes") from None
    except TimeoutError:
        raise ApiError(408, "body_timeout", f"the request body did not arrive in full within {deadline:g} seconds",
                       headers={"Connection": "close"}) from None
    if not raw.strip():
        raise ApiError(400, "invalid_json", "request body is empty; send a JSON object")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "request body is nested too deeply") from None
    except ValueError:  # not UTF-8, or an integer of more than 4,300 digits
        raise ApiError(400, "invalid_json", "request body is not valid JSON: it must be UTF-8 text with "
                       "numbers of at most 4,300 digits") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return data


#: The largest integer a query parameter may carry (a signed 64-bit column).
MAX_QUERY_INT = 2 ** 63 - 1


def query_int(request: web.Request, name: str, default: int, *, minimum: int = 0,
              maximum: int = MAX_QUERY_INT) -> int:
    """The integer query parameter ``name`` (``default`` when absent); ``ApiError`` 422 ``invalid_query`` when it is
    not an integer from ``minimum`` to ``maximum``."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    value = int(text) if len(text) <= 20 and text.lstrip("+-").isascii() and text.lstrip("+-").isdigit() else None
    if value is None or not minimum <= value <= maximum:
        raise ApiError(422, "invalid_query", f"{name} must be an integer from {minimum} to {maximum}", field=name)
    return value
