"""Errors as RFC 9457 problem documents, never a stack trace, and the server keeps serving.

Every 4xx/5xx body is `application/problem+json` with type, title, status and detail. It also
carries `message` (the same text as detail): HMA clients read `{"message": ...}` from errors."""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from workers.bank.store import BankError
from workers.errors import MediaError

log = logging.getLogger("vigil.api")

TYPE_BASE = "https://github.com/vigil/vigil/blob/main/docs/api.md#problem-"
TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
          409: "Conflict", 413: "Content too large", 415: "Unsupported media type", 422: "Invalid request",
          429: "Too many requests", 501: "Not implemented", 502: "Bad gateway", 503: "Service unavailable",
          504: "Gateway timeout", 500: "Internal server error"}
MEDIA_STATUS = {"media_too_large": 413, "image_too_large": 413, "unsupported_media": 415,
                "host_not_allowed": 400, "private_address": 400, "fetch_failed": 502}


class Problem(Exception):
    """Raise from a route: answered as a problem document."""

    def __init__(self, status: int, detail: str, code: str | None = None, headers: dict[str, str] | None = None,
                 **extra: Any):
        super().__init__(detail)
        self.status, self.detail, self.code, self.headers, self.extra = status, detail, code, headers, extra


def problem_response(status: int, detail: str, code: str | None = None, headers: dict[str, str] | None = None,
                     **extra: Any) -> JSONResponse:
    slug = code or TITLES.get(status, "error").lower().replace(" ", "-")
    body = {"type": TYPE_BASE + slug, "title": TITLES.get(status, "Error"), "status": status,
            "detail": detail, "message": detail, **extra}
    if code:
        body["code"] = code
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_req: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, exc.code, exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(x) for x in first["loc"])
        return problem_response(400, f"{where}: {first['msg']}" if where else first["msg"], "invalid-request",
                                errors=errors)

    @app.exception_handler(MediaError)
    async def _media(_req: Request, exc: MediaError) -> JSONResponse:
        return problem_response(MEDIA_STATUS.get(exc.code, 400), exc.message, exc.code)

    @app.exception_handler(BankError)
    async def _bank(_req: Request, exc: BankError) -> JSONResponse:
        text = str(exc)
        return problem_response(404 if text.startswith("no bank") or text.startswith("no entry") else 400, text,
                                "bank-error")

    @app.exception_handler(Exception)
    async def _bug(req: Request, exc: Exception) -> JSONResponse:
        from workers.api.body_limit import BodyTooLarge

        if isinstance(exc, BodyTooLarge):  # a streamed body crossed the limit while a route read it
            return problem_response(413, str(exc), "content-too-large", headers={"Connection": "close"})
        log.exception("internal error", extra={"path": req.url.path})
        return problem_response(500, f"internal error ({type(exc).__name__}); see the API's log", "internal_error")


_ = HTTPException  # fastapi's HTTPException subclasses Starlette's: one handler answers both
