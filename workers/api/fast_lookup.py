"""`GET /m/raw_lookup` answered straight from the ASGI scope, ahead of the middleware and FastAPI.

Why: it is the hot route of an HMA deployment (one hash per upload, thousands a second), and the
framework around it cost more CPU than the search: measured on a 1M-entry bank, ~250 µs of server
CPU a request through RequestMetrics, BodyLimit, FastAPI and a Starlette route, against ~30 µs for
uvicorn alone and ~80 µs for the index search (docs/api.md "Performance"). Here it is the same
token check, scope, per-token rate limit, parameter validation, RFC 9457 problems and metrics as a
routed request, with none of the per-request objects.

Anything unusual (another method, a request body, which the body limit would have to watch) is
handed on unchanged to the normal stack, whose FastAPI route (hma_match.raw_lookup) gives the same
answer through the same `raw_answer` (tests/test_api_hma.py compares the two).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from workers.api.hma_match import raw_answer
from workers.api.problems import Problem, problem_response
from workers.ops import metrics

log = logging.getLogger("vigil.api")

PATH = "/m/raw_lookup"
# pydantic's bool strings (what the FastAPI route accepts), compared lower-cased
TRUE, FALSE = frozenset({"1", "on", "t", "true", "y", "yes"}), frozenset({"0", "off", "f", "false", "n", "no"})
JSON_HEADERS = [(b"content-type", b"application/json")]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _invalid(field: str, msg: str, kind: str) -> Problem:
    """The problem FastAPI's validation handler (problems.install) gives for one bad query field."""
    return Problem(400, f"query.{field}: {msg}", "invalid-request",
                   errors=[{"loc": ["query", field], "msg": msg, "type": kind}])


def parse(query_string: bytes) -> tuple[str, str, str | None, bool]:
    """(signal, signal_type, banks, include_distance) from the query, or a 400 Problem worded as
    the FastAPI route's. A repeated parameter counts its last value, as Starlette's QueryParams."""
    q = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
    signal, signal_type = q.get("signal"), q.get("signal_type")
    if signal is None or signal_type is None:
        missing = [n for n, v in (("signal", signal), ("signal_type", signal_type)) if v is None]
        raise Problem(400, f"query.{missing[0]}: Field required", "invalid-request",
                      errors=[{"loc": ["query", n], "msg": "Field required", "type": "missing"} for n in missing])
    flag = q.get("include_distance", "false").lower()
    if flag not in TRUE and flag not in FALSE:
        raise _invalid("include_distance", "Input should be a valid boolean, unable to interpret input",
                       "bool_parsing")
    return signal, signal_type, q.get("banks"), flag in TRUE


class RawLookupFast:
    """ASGI wrapper: plain `GET /m/raw_lookup` here, everything else to `app`.

    `state` is the FastAPI app's state (its `service` and `auth`), read per request so the app's
    lifespan owns them as before."""

    def __init__(self, app: Callable, state: Any):
        self.app, self.state = app, state
        self._requests: dict[int, Any] = {}  # status -> the Counter child (labels() costs a lookup a call)
        self._latency = metrics.API_LATENCY.labels(PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        auth = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                if not auth:
                    auth = value.decode("latin-1")
            elif (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
                await self.app(scope, receive, send)  # a body: the body limit's business
                return
        t0 = time.perf_counter()
        status = 500
        try:
            self.state.auth.check(auth, "lookup")
            signal, signal_type, banks, with_distance = parse(scope["query_string"])
            body = json.dumps(raw_answer(self.state.service, signal_type, signal, banks, with_distance),
                              ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
            status = 200
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(body)).encode()), *JSON_HEADERS]})
            await send({"type": "http.response.body", "body": body})
        except Problem as p:
            status = p.status
            await problem_response(p.status, p.detail, p.code, p.headers, **p.extra)(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - answered as a problem, logged, and the server keeps serving
            log.exception("internal error", extra={"path": PATH})
            await problem_response(500, f"internal error ({type(exc).__name__}); see the API's log",
                                   "internal_error")(scope, receive, send)
        finally:
            counter = self._requests.get(status)
            if counter is None:
                counter = self._requests[status] = metrics.API_REQUESTS.labels(PATH, str(status))
            counter.inc()
            self._latency.observe(time.perf_counter() - t0)
