"""vigil's own API, the decision routes: `POST /v1/lookup`, `POST /v1/uploads`,
`GET /v1/decisions/{event_id}`. Answers are the decision exactly as on moderation.decisions."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

import topics
from workers.api.auth import Caller, need
from workers.api.hma_match import svc
from workers.api.media_input import form_media, url_media
from workers.api.problems import Problem
from workers.api.service import ApiService, upload_dir
from workers.ops.logs import now_ms
from workers.signals import SignalValue, normalise

router = APIRouter(prefix="/v1", tags=["vigil: decisions"])
MAX_WAIT_MS = 30_000


class SignalIn(BaseModel):
    signal: str = Field(..., description="pdq | phash | dhash | md5 | sha1 | sha256")
    value: str = Field(..., description="lower-case hex")
    quality: int | None = None


class LookupIn(BaseModel):
    """JSON body of POST /v1/lookup: exactly one of url or signals. (A file is sent as multipart.)"""
    url: str | None = Field(None, description="media URL (fetch rules: docs/api.md)")
    signals: list[SignalIn] | None = Field(None, max_length=1000, description="hashes you computed yourself")
    content_id: str | None = Field(None, max_length=200)
    metadata: dict[str, Any] | None = None


class UploadIn(BaseModel):
    """JSON body of POST /v1/uploads: a url, or a media_uri (file://) already under the hasher's media roots."""
    url: str | None = None
    media_uri: str | None = None
    content_id: str | None = Field(None, max_length=200)
    media_type: str | None = Field(None, pattern="^(image|video)$")
    metadata: dict[str, Any] | None = None


async def _json_or_form(request: Request, model: type[BaseModel], service: ApiService):
    """(model, file bytes or None, file name): a multipart body's `file` field plus its JSON
    `fields`, or a JSON body."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        media = await form_media(request, service)
        raw = media.fields.get("json") or "{}"
        try:
            return model.model_validate_json(raw), media.data, media.filename
        except ValidationError as exc:
            raise Problem(400, f"form field json: {exc.errors()[0]['msg']}", "invalid-request") from None
    if not ctype.startswith("application/json"):
        raise Problem(415, "send application/json, or multipart/form-data with a `file` field")
    try:
        return model.model_validate_json(await request.body()), None, None
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e.get("loc", ()))
        raise Problem(400, f"{where}: {e['msg']}" if where else e["msg"], "invalid-request",
                      errors=[{"loc": list(x.get("loc", ())), "msg": x["msg"]} for x in exc.errors()]) from None


@router.post("/lookup", summary="The decision for a file, a URL or hashes (nothing published unless publish=true)",
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"schema": LookupIn.model_json_schema()},
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "file": {"type": "string", "format": "binary"},
                     "json": {"type": "string", "description": "optional LookupIn fields as JSON"}}}}}}})
async def lookup(request: Request, publish: bool = Query(False, description="also put the decision on "
                                                                               "moderation.decisions (source api)"),
                 caller: Caller = Depends(need("lookup"))) -> JSONResponse:
    service = svc(request)
    received = now_ms()
    if publish and "submit" not in caller.scopes:
        raise Problem(403, f"publish=true needs the 'submit' scope; token {caller.name!r} lacks it", "forbidden")
    body, data, _name = await _json_or_form(request, LookupIn, service)
    given = [x for x in (data is not None, body.url is not None, body.signals is not None) if x]
    if len(given) != 1:
        raise Problem(400, "give exactly one of: a multipart `file`, `url`, or `signals`")
    stage: dict[str, float] = {}
    if body.signals is not None:
        try:
            signals = [SignalValue(s.signal, normalise(s.signal, s.value), s.quality) for s in body.signals]
        except ValueError as exc:
            raise Problem(400, f"signals: {exc}", "invalid-request") from None
        media_type, notes = "image", []
    else:
        if body.url is not None:
            t0 = time.perf_counter()
            data = await url_media(body.url, service)
            stage["fetch"] = round((time.perf_counter() - t0) * 1000, 3)
        h = await run_in_threadpool(service.hash, data, True)
        signals, media_type, notes = h.signals, h.media_type, h.notes
        stage.update(h.stage_ms)
    out = service.decision(signals, media_type=media_type, content_id=body.content_id, notes=notes,
                           stage_ms=stage, received_ms=received, metadata=body.metadata)
    if publish:
        topics.validate("decision", out)
        await run_in_threadpool(service.produce, topics.DECISIONS, out["content_id"], out)
    # the body stays exactly the decision message; whether it went on the topic is a header
    return JSONResponse(out, headers={"X-Vigil-Published": "true" if publish else "false"})


@router.post("/uploads", status_code=202, summary="Put an upload event on moderation.uploads; returns its event_id",
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"schema": UploadIn.model_json_schema()},
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "file": {"type": "string", "format": "binary"},
                     "json": {"type": "string", "description": "optional UploadIn fields as JSON"}}}}}}})
async def uploads(request: Request, _: Caller = Depends(need("submit"))) -> JSONResponse:
    service = svc(request)
    body, data, filename = await _json_or_form(request, UploadIn, service)
    given = [x for x in (data is not None, body.url is not None, body.media_uri is not None) if x]
    if len(given) != 1:
        raise Problem(400, "give exactly one of: a multipart `file`, `url`, or `media_uri`")
    event_id = str(uuid.uuid4())
    path = None
    if body.media_uri is not None:
        from workers.media.fetch import resolve_uri

        media_uri = resolve_uri(body.media_uri, service.settings.media_roots).as_uri()
    else:
        if body.url is not None:
            data = await url_media(body.url, service)
        suffix = Path(filename or "").suffix[:10] if filename else ""
        path = os.path.join(upload_dir(service.settings), event_id + suffix)
        with open(path, "wb") as f:
            f.write(data)
        media_uri = Path(path).as_uri()
    content_id = body.content_id or ("c-" + hashlib.sha256(data).hexdigest()[:16] if data is not None
                                     else "c-" + hashlib.sha256(media_uri.encode()).hexdigest()[:16])
    event: dict[str, Any] = {"schema_version": topics.SCHEMA_VERSION, "event_id": event_id,
                             "content_id": content_id, "media_uri": media_uri, "submitted_at_ms": now_ms()}
    if body.media_type:
        event["media_type"] = body.media_type
    if body.metadata:
        event["metadata"] = body.metadata
    topics.validate("upload", event)
    watch = request.app.state.decisions
    try:
        if path and watch is not None:
            watch.track_file(event_id, path)
        await run_in_threadpool(service.produce, topics.UPLOADS, content_id, event)
    except Exception:
        if path:
            os.unlink(path)
        raise
    return JSONResponse({"event_id": event_id, "content_id": content_id, "media_uri": media_uri,
                         "decision_url": f"/v1/decisions/{event_id}"}, status_code=202)


@router.get("/decisions/{event_id}", summary="The decision (or dead letter) of an upload; long-polls with wait_ms")
async def decision(request: Request, event_id: str,
                   wait_ms: int = Query(0, ge=0, le=MAX_WAIT_MS, description="wait up to this long for it"),
                   _: Caller = Depends(need("submit"))) -> JSONResponse:
    watch = request.app.state.decisions
    if watch is None:
        raise Problem(503, "no Kafka configured (VIGIL_KAFKA): decisions cannot be read")
    try:
        uuid.UUID(event_id)
    except ValueError:
        raise Problem(400, "event_id is not a UUID", "invalid-request") from None
    deadline = time.monotonic() + wait_ms / 1000
    found = watch.get(event_id, 0)
    while found is None and time.monotonic() < deadline:  # polled here: no thread held per waiting client
        await asyncio.sleep(0.05)
        found = watch.get(event_id, 0)
    if found is None:
        raise Problem(404, f"no decision for {event_id} yet (or it is older than this API process has seen)",
                      "not-decided")
    topic, msg = found
    if topic == topics.DEAD_LETTER:
        return JSONResponse({"dead_letter": True, **msg}, status_code=200)
    return JSONResponse(msg)


_ = json
