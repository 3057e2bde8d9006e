"""HMA 2.x routes for hashing, matching and health (OpenMediaMatch blueprints hashing.py,
matching.py and app.py): same paths, parameters and answers, over vigil's index and hashes.

Differences are listed in docs/api.md (signal type names, no coinflip ratios, integer ids)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from workers.api.auth import Caller, need
from workers.api.hma_names import (
    CONTENT_TYPES,
    PHOTO_TYPES,
    SIGNAL_TYPES,
    VIDEO_TYPES,
    checked_value,
    content_id,
    hma_signal,
    vigil_signal,
)
from workers.api.media_input import form_media, url_media
from workers.api.problems import Problem
from workers.api.service import ApiService, Hashed
from workers.index.matching import Match
from workers.signals import SignalValue

router = APIRouter(tags=["HMA: hashing and matching"])


def svc(request: Request) -> ApiService:
    return request.app.state.service


def hma_hashes(h: Hashed, content_type: str | None, types: str | None) -> dict[str, str]:
    """HMA's `{signal_type: hash}` of a file: the unmodified image's signals (no query variants)."""
    kind = content_type or ("video" if h.media_type == "video" else "photo")
    if kind not in CONTENT_TYPES:
        raise Problem(400, f"no such content_type: '{kind}'")
    base = {hma_signal(s.signal, "video" if kind == "video" else h.media_type): s.value
            for s in h.signals if not s.variant and s.frame_ms is None}
    wanted = VIDEO_TYPES if kind == "video" else PHOTO_TYPES
    if types is not None:
        wanted = tuple(t.strip() for t in types.split(",") if t.strip())
        if not wanted:
            raise Problem(400, "empty signal type selection")
        for t in wanted:
            if t not in SIGNAL_TYPES or t not in base:
                raise Problem(400, f"signal type '{t}' doesn't exist or is disabled")
    return {t: base[t] for t in wanted if t in base}


def by_bank(matches: list[Match], banks: set[str] | None) -> dict[str, list[dict[str, Any]]]:
    """HMA's `{bank: [{bank_content_id, distance}]}`, one row per entry (its closest signal)."""
    best: dict[tuple[str, str], int] = {}
    for m in matches:
        if banks is None or m.bank in banks:
            key = (m.bank, m.entry_id)
            best[key] = min(best.get(key, m.distance), m.distance)
    out: dict[str, list[dict[str, Any]]] = {}
    for (bank, entry), dist in sorted(best.items()):
        out.setdefault(bank, []).append({"bank_content_id": content_id(entry), "distance": str(dist)})
    return out


def ready(service: ApiService) -> None:
    if not service.ready:
        raise Problem(503, "index not yet ready")


def lookup_one(service: ApiService, signal_type: str, value: str, banks: set[str] | None) -> list[Match]:
    name, value = checked_value(signal_type, value)
    ready(service)
    matches, _ = service.search([SignalValue(name, value)])
    return [m for m in matches if banks is None or m.bank in banks]


def bank_set(banks: str | None) -> set[str] | None:
    return {b for b in banks.split(",") if b} if banks else None


# -- hashing -----------------------------------------------------------------------------------
@router.get("/h/hash", summary="Hash content from URL (HMA)")
async def hash_get(request: Request, url: str = Query(..., description="media URL (fetch rules apply)"),
                   content_type: str | None = None, types: str | None = None,
                   _: Caller = Depends(need("lookup"))) -> dict[str, str]:
    service = svc(request)
    data = await url_media(url, service)
    return hma_hashes(await run_in_threadpool(service.hash, data, False), content_type, types)


@router.post("/h/hash", summary="Hash an uploaded file (HMA; form field photo or video)")
async def hash_post(request: Request, _: Caller = Depends(need("lookup"))) -> dict[str, str]:
    service = svc(request)
    media = await form_media(request, service, CONTENT_TYPES)
    return hma_hashes(await run_in_threadpool(service.hash, media.data, False), media.field, None)


# -- matching ----------------------------------------------------------------------------------
def raw_answer(service: ApiService, signal_type: str, signal: str, banks: str | None,
               include_distance: bool) -> dict[str, list]:
    """HMA's raw_lookup answer, for both ways a request reaches it (fast_lookup.py and the route below)."""
    rows = [r for rs in by_bank(lookup_one(service, signal_type, signal, bank_set(banks)), None).values()
            for r in rs]
    return {"matches": rows if include_distance else [r["bank_content_id"] for r in rows]}


@router.get("/m/raw_lookup", summary="Look up one hash (HMA)")
async def raw_lookup(request: Request, signal: str, signal_type: str, banks: str | None = None,
                     include_distance: bool = False, _: Caller = Depends(need("lookup"))) -> dict[str, list]:
    """Documents the route in OpenAPI and answers what the ASGI fast path hands on (another
    method, a request with a body); a plain GET is answered by workers/api/fast_lookup.py."""
    return raw_answer(svc(request), signal_type, signal, banks, include_distance)


@router.get("/m/lookup", summary="Look up content by URL or hash (HMA)")
async def lookup_get(request: Request, url: str | None = None, content_type: str | None = None,
                     types: str | None = None, signal: str | None = None, signal_type: str | None = None,
                     banks: str | None = None, seed: str | None = None, bypass_coinflip: bool = False,
                     _: Caller = Depends(need("lookup"))) -> dict[str, Any]:
    service = svc(request)
    wanted = bank_set(banks)
    if url:
        data = await url_media(url, service)
        hashes = hma_hashes(await run_in_threadpool(service.hash, data, False), content_type, types)
        resp = {t: by_bank(lookup_one(service, t, v, wanted), None) for t, v in hashes.items()}
        return resp.get(signal_type, {}) if signal_type is not None else resp
    if not signal or not signal_type:
        raise Problem(400, "Either url or both signal and signal_type are required")
    return by_bank(lookup_one(service, signal_type, signal, wanted), None)


@router.post("/m/lookup", summary="Look up an uploaded file (HMA; form field photo or video)")
async def lookup_post(request: Request, banks: str | None = None, seed: str | None = None,
                      bypass_coinflip: bool = False, _: Caller = Depends(need("lookup"))) -> dict[str, Any]:
    service = svc(request)
    media = await form_media(request, service, CONTENT_TYPES)
    hashes = hma_hashes(await run_in_threadpool(service.hash, media.data, False), media.field, None)
    return {t: by_bank(lookup_one(service, t, v, bank_set(banks)), None) for t, v in hashes.items()}


@router.post("/m/compare", summary="Distances between pairs of hashes: {signal_type: [a, b]} (HMA)")
async def compare(request: Request, body: dict[str, list[str]],
                  _: Caller = Depends(need("lookup"))) -> dict[str, list[Any]]:
    """HMA's answer per type: [match, {"distance": d}], match meaning within vigil's default
    threshold for the signal (VIGIL_PDQ_THRESHOLD, VIGIL_PHASH_THRESHOLD; digests: equal)."""
    from workers.signals import PERCEPTUAL_BITS

    settings = svc(request).settings
    out: dict[str, list[Any]] = {}
    for signal_type, pair in body.items():
        if len(pair) != 2:
            raise Problem(400, "Comparison hash list length must be exactly 2")
        (name, a), (_n, b) = checked_value(signal_type, pair[0]), checked_value(signal_type, pair[1])
        if name in PERCEPTUAL_BITS:
            distance = (int(a, 16) ^ int(b, 16)).bit_count()
            limit = settings.pdq_threshold if name == "pdq" else settings.phash_threshold
        else:
            distance, limit = int(a != b), 0
        out[signal_type] = [distance <= limit, {"distance": distance}]
    return out


@router.get("/m/index/status", summary="Index status per signal type (HMA)")
async def index_status(request: Request, signal_type: str | None = None,
                       _: Caller = Depends(need("lookup"))) -> dict[str, dict[str, Any]]:
    service = svc(request)
    names = SIGNAL_TYPES
    if signal_type is not None:
        if signal_type not in SIGNAL_TYPES:
            raise Problem(400, f"No such signal type '{signal_type}'")
        names = (signal_type,)
    index = service.follower.index
    counts = index.counts()
    out = {}
    for name in names:
        present = index.loaded
        out[name] = {"present": present, "built_to": int(index.synced_at) if present else -1,
                     "size": counts.get(vigil_signal(name), 0)}
    return out


# -- health ------------------------------------------------------------------------------------
@router.get("/status", response_class=PlainTextResponse, tags=["health"],
            summary="Ready to serve lookups: 200 I-AM-ALIVE, else 503 INDEX-NOT-LOADED / INDEX-STALE (HMA)")
async def status(request: Request) -> PlainTextResponse:
    service = svc(request)
    if not service.ready:
        return PlainTextResponse("INDEX-NOT-LOADED", 503)
    if not service.fresh:
        return PlainTextResponse("INDEX-STALE", 503)
    return PlainTextResponse("I-AM-ALIVE")


@router.get("/status/live", response_class=PlainTextResponse, tags=["health"],
            summary="The process serves HTTP (liveness; never checks the index) (HMA)")
async def status_live() -> PlainTextResponse:
    return PlainTextResponse("I-AM-ALIVE")


@router.get("/site-map", tags=["health"], summary="Every route this API serves (HMA)")
async def site_map(request: Request) -> list[str]:
    return sorted(set(request.app.openapi()["paths"]) | {"/openapi.json", "/docs", "/metrics"})
