"""HMA 2.x curation routes (OpenMediaMatch blueprints/curation.py): banks and their content.

Banks created here get HMA's name rule and vigil's default action (block, or the request's
`action`, a vigil extension). HMA's matching_enabled_ratio is 1.0 (enabled) or 0.0 (disabled):
vigil has no coinflip. Every write is attributed to the calling token in the audit stream."""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from workers.api.auth import Caller, need
from workers.api.hma_match import hma_hashes, svc
from workers.api.hma_names import HMA_BANK_NAME, SIGNAL_TYPES, checked_value, content_id, entry_ids, hma_signal
from workers.api.media_input import form_media, url_media
from workers.api.problems import Problem
from workers.api.service import ApiService
from workers.bank.model import Bank, Entry, entry_id_for_file, entry_id_for_hash
from workers.bank.store import BankError, BankStore
from workers.ops.logs import now_ms
from workers.signals import SignalValue

router = APIRouter(tags=["HMA: curation"])
NOTE_MAX = 255


class BankCreate(BaseModel):
    name: str = Field(..., description="Bank name: /^[A-Z_][A-Z0-9_]*$/ as in HMA")
    enabled_ratio: float | None = Field(1.0, description="1.0 enabled, 0.0 disabled (no fractions in vigil)")
    enabled: bool | None = None
    action: str = Field("block", description="vigil extension: block | review | allow")


class BankUpdate(BaseModel):
    name: str | None = None
    enabled_ratio: float | None = None
    enabled: bool | None = None


def hma_bank(b: Bank) -> dict[str, Any]:
    return {"name": b.name, "matching_enabled_ratio": 1.0 if b.enabled else 0.0}


def _enabled(ratio: float | None, enabled: bool | None, default: bool) -> bool:
    if ratio is not None:
        if ratio not in (0, 1):
            raise Problem(400, f"enabled_ratio {ratio} is not supported: vigil banks are on (1.0) or off (0.0)")
        return ratio == 1
    return default if enabled is None else bool(enabled)


def _bank(store: BankStore, name: str) -> Bank:
    bank = store.get_bank(name)
    if bank is None:
        raise Problem(404, f"bank '{name}' not found")
    return bank


def _entry(store: BankStore, bank: str, cid: int) -> Entry:
    for eid in entry_ids(cid):
        entry = store.get_entry(bank, eid)
        if entry is not None:
            return entry
    raise Problem(404, f"content '{cid}' not found")


def _note(value: Any) -> str | None:
    if not value:
        return None
    if not isinstance(value, str):
        raise Problem(400, "note should be a string")
    if len(value) > NOTE_MAX:
        raise Problem(400, f"note must be at most {NOTE_MAX} characters")
    return value


@router.get("/c/banks", summary="List banks (HMA)")
async def banks_index(request: Request, _: Caller = Depends(need("bank:read"))) -> list[dict[str, Any]]:
    return [hma_bank(b) for _n, b in sorted(svc(request).store.banks().items())]


@router.get("/c/bank/{bank_name}", summary="Get a bank (HMA)")
async def bank_show(request: Request, bank_name: str, _: Caller = Depends(need("bank:read"))) -> dict[str, Any]:
    return hma_bank(_bank(svc(request).store, bank_name))


@router.post("/c/banks", status_code=201, summary="Create a bank (HMA)")
async def bank_create(request: Request, body: BankCreate, caller: Caller = Depends(need("bank:write"))
                      ) -> dict[str, Any]:
    if not HMA_BANK_NAME.match(body.name):
        raise Problem(400, "Bank names must be UPPER_WITH_UNDERSCORE and must not start with a digit")
    store = svc(request).writer_as(caller.actor)
    if store.get_bank(body.name) is not None:
        raise Problem(403, "Bank already exists")
    enabled = _enabled(body.enabled_ratio if body.enabled is None else None, body.enabled, True)
    store.create_bank(body.name, body.action)
    if not enabled:
        store.update_bank(body.name, enabled=False)
    return hma_bank(store.require_bank(body.name))


@router.put("/c/bank/{bank_name}", summary="Update (or rename) a bank (HMA)")
async def bank_update(request: Request, bank_name: str, body: BankUpdate,
                      caller: Caller = Depends(need("bank:write"))) -> dict[str, Any]:
    store = svc(request).writer_as(caller.actor)
    bank = _bank(store, bank_name)
    enabled = _enabled(body.enabled_ratio, body.enabled, bank.enabled)
    if enabled != bank.enabled:
        bank = store.update_bank(bank_name, enabled=enabled)
    if body.name is not None and body.name != bank_name:
        if not HMA_BANK_NAME.match(body.name):
            raise Problem(400, "Bank names must be UPPER_WITH_UNDERSCORE and must not start with a digit")
        if store.get_bank(body.name) is not None:
            raise Problem(403, "Bank name already exists")
        bank = await run_in_threadpool(_rename, store, bank, body.name)
    return hma_bank(bank)


def _rename(store: BankStore, bank: Bank, new: str) -> Bank:
    """vigil has no rename: a new bank with the same settings and entries, then the old one deleted
    (each step in the change stream, so matchers follow it)."""
    store.create_bank(new, bank.action, label=bank.label, thresholds=bank.thresholds, dihedral=bank.dihedral,
                      description=bank.description, live_strict=bank.live_strict, live_frames=bank.live_frames,
                      live_window_s=bank.live_window_s)
    if not bank.enabled:
        store.update_bank(new, enabled=False)
    batch: list[Entry] = []
    for e in store.iter_entries(bank.name):
        batch.append(replace(e, bank=new))
        if len(batch) >= 1000:
            store.add_entries(new, batch)
            batch = []
    store.add_entries(new, batch)
    store.delete_bank(bank.name)
    return store.require_bank(new)


@router.delete("/c/bank/{bank_name}", summary="Delete a bank (HMA; absent banks succeed too)")
async def bank_delete(request: Request, bank_name: str, caller: Caller = Depends(need("bank:write"))
                      ) -> dict[str, str]:
    store = svc(request).writer_as(caller.actor)
    if store.get_bank(bank_name) is not None:
        await run_in_threadpool(store.delete_bank, bank_name)
    return {"message": "Done"}


def content_json(bank: Bank, entry: Entry, include_signals: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"id": content_id(entry.entry_id), "disable_until_ts": 0 if entry.disabled else 1,
                           "original_media_uri": None, "bank": hma_bank(bank)}
    if include_signals:
        out["signals"] = {hma_signal(s.signal, entry.media_type): s.value
                          for s in entry.signals if not s.variant and s.frame_ms is None}
    if entry.note:
        out["note"] = entry.note
    return out


@router.get("/c/bank/{bank_name}/content/{content}", summary="Get banked content (HMA)")
async def content_get(request: Request, bank_name: str, content: int, include_signals: bool = False,
                      include_metadata: bool = True, _: Caller = Depends(need("bank:read"))) -> dict[str, Any]:
    store = svc(request).store
    bank = _bank(store, bank_name)
    return content_json(bank, _entry(store, bank_name, content), include_signals)


class ContentUpdate(BaseModel):
    disable_until_ts: int | None = Field(None, description="0: disabled; 1 or a past time: enabled; "
                                                           "a future time: disabled (vigil does not re-enable it)")
    note: str | None = None


@router.put("/c/bank/{bank_name}/content/{content}", summary="Enable/disable banked content, set its note (HMA)")
async def content_update(request: Request, bank_name: str, content: int, body: ContentUpdate,
                         caller: Caller = Depends(need("bank:write"))) -> dict[str, Any]:
    store = svc(request).writer_as(caller.actor)
    bank = _bank(store, bank_name)
    entry = _entry(store, bank_name, content)
    changed = entry
    if body.disable_until_ts is not None:
        ts = body.disable_until_ts
        if ts < 0:
            raise Problem(400, "disable_until_ts must be a non-negative integer")
        if ts > time.time() + 5 * 365 * 86400:
            raise Problem(400, "disable_until_ts must be less than 5 years in the future")
        changed = replace(changed, disabled=ts == 0 or ts > time.time())
    if "note" in body.model_fields_set:
        changed = replace(changed, note=_note(body.note))
    if changed != entry:
        store.add_entries(bank_name, [changed])
    return content_json(bank, changed, False)


@router.delete("/c/bank/{bank_name}/content/{content}", summary="Remove banked content (HMA)")
async def content_delete(request: Request, bank_name: str, content: int,
                         caller: Caller = Depends(need("bank:write"))) -> dict[str, int]:
    store = svc(request).writer_as(caller.actor)
    _bank(store, bank_name)
    ids = list(store.existing_ids(bank_name, entry_ids(content)))
    if ids:
        store.remove_entries(bank_name, ids)
    return {"deleted": len(ids)}


@router.post("/c/bank/{bank_name}/content", summary="Add content by URL (?url=) or uploaded file (HMA)")
async def content_add(request: Request, bank_name: str, url: str | None = None, content_type: str | None = None,
                      types: str | None = None, caller: Caller = Depends(need("bank:write"))) -> dict[str, Any]:
    service = svc(request)
    store = service.writer_as(caller.actor)
    bank = _bank(store, bank_name)
    note, source = None, "api"
    if url:
        data = await url_media(url, service)
        source = url[:500]
    elif request.headers.get("content-type", "").startswith("multipart/form-data"):
        media = await form_media(request, service, ("photo", "video"))
        data, content_type = media.data, media.field
        note = _note(media.fields.get("note"))
        source = media.filename or source
    else:
        raise Problem(400, "Neither `url` nor multipart file upload was received")
    entry = await run_in_threadpool(_file_entry, service, bank.name, data, caller, note, source)
    store.add_entries(bank.name, [entry])
    kind = content_type or ("video" if entry.media_type == "video" else "photo")
    from workers.api.service import Hashed
    hashed = Hashed(entry.media_type or "image", list(entry.signals), "")
    return {"id": content_id(entry.entry_id), "signals": hma_hashes(hashed, kind, types)}


def _file_entry(service: ApiService, bank: str, data: bytes, caller: Caller, note: str | None,
                source: str) -> Entry:
    """A bank entry for a file, as `vigil bank add` makes one (videos: every frame's hashes)."""
    h = service.hash(data, query=False)
    signals = h.signals
    if h.media_type == "video":
        from workers.bank.importer import video_entry_signals

        fd, name = tempfile.mkstemp(prefix="vigil-api-", suffix=".video")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            signals = signals + video_entry_signals(Path(name), service.settings)
        finally:
            os.unlink(name)
    return Entry(entry_id_for_file(h.sha256), bank, tuple(signals), source=source, note=note, added_at_ms=now_ms(),
                 added_by=caller.actor, media_type=h.media_type)


@router.post("/c/bank/{bank_name}/signal", summary="Add hashes directly: {signal_type: hash, note?} (HMA)")
async def signal_add(request: Request, bank_name: str, caller: Caller = Depends(need("bank:write"))
                     ) -> dict[str, Any]:
    store = svc(request).writer_as(caller.actor)
    bank = _bank(store, bank_name)
    try:
        data = json.loads(await request.body())
    except ValueError:
        raise Problem(400, "the body must be a JSON object {signal_type: hash}") from None
    if not isinstance(data, dict):
        raise Problem(400, "the body must be a JSON object {signal_type: hash}")
    note = _note(data.pop("note", None))
    if not data:
        raise Problem(400, "No signals given")
    signals = []
    for name, value in data.items():
        if not isinstance(value, str):
            raise Problem(400, f"Invalid {name} signal: not a string")
        signals.append((name, *checked_value(name, value)))
    key_sig = "+".join(v for _n, v, _x in signals)
    key_val = "+".join(x for _n, _v, x in signals)
    entry = Entry(entry_id_for_hash(key_sig, key_val), bank.name, tuple(SignalValue(v, x) for _n, v, x in signals),
                  source="api", note=note, added_at_ms=now_ms(), added_by=caller.actor)
    store.add_entries(bank.name, [entry])
    return {"id": content_id(entry.entry_id), "signals": {n: x for n, _v, x in signals}}


# -- configuration (read-only in vigil) ------------------------------------------------------------
@router.get("/c/signal_type", summary="Signal types (HMA; all enabled)")
async def signal_types(_: Caller = Depends(need("bank:read"))) -> list[dict[str, Any]]:
    return [{"name": n, "enabled_ratio": 1.0} for n in SIGNAL_TYPES]


@router.get("/c/content_type", summary="Content types (HMA)")
async def content_types(_: Caller = Depends(need("bank:read"))) -> list[dict[str, Any]]:
    return [{"name": "photo", "enabled": True}, {"name": "video", "enabled": True}]


@router.get("/c/signal_type/index", summary="Index size per signal type (HMA)")
async def signal_type_index(request: Request, signal_type: str | None = None,
                            _: Caller = Depends(need("bank:read"))) -> dict[str, dict[str, Any]]:
    from workers.api.hma_names import vigil_signal

    index = svc(request).follower.index
    names = SIGNAL_TYPES if signal_type is None else (signal_type,)
    if signal_type is not None and signal_type not in SIGNAL_TYPES:
        raise Problem(400, f"No such signal type '{signal_type}'")
    counts = index.counts()
    built = int(index.synced_at)
    return {n: {"db_size": counts.get(vigil_signal(n), 0), "index_size": counts.get(vigil_signal(n), 0),
                "index_out_of_date": not index.loaded, "newest_db_item": built, "index_built_to": built}
            for n in names}


NOT_SERVED = ("/c/exchanges", "/c/exchanges/apis", "/c/exchanges/api/{api_name}", "/c/exchanges/api/{api_name}/schema",
              "/c/exchange/{exchange_name}", "/c/exchange/{exchange_name}/status",
              "/c/signal_type/{signal_type_name}")


def _not_served(path: str):
    async def route() -> None:
        raise Problem(501, f"{path} is an HMA route vigil does not serve: vigil has no exchanges or signal type "
                           "overrides; import lists with `vigil bank import` (docs/api.md)", "not-served")
    return route


for _path in NOT_SERVED:
    router.add_api_route(_path, _not_served(_path), methods=["GET", "POST", "PUT", "DELETE"],
                         include_in_schema=False)
_ = BankError
