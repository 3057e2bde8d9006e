"""vigil's own API, bank admin: the verbs of `vigil bank` (create, add, import, remove, disable,
enable, update, stats, export). Every write is attributed to the calling token in the audit
stream (`api:<token name>`) and answers with the bank version it produced."""
from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from workers.api.auth import Caller, need
from workers.api.hma_curation import _file_entry
from workers.api.hma_match import svc
from workers.api.media_input import form_media, url_media
from workers.api.problems import Problem
from workers.bank.codes import CODE_SIGNALS
from workers.bank.store import codes_key

router = APIRouter(prefix="/v1/banks", tags=["vigil: banks"])
WAIT = Query(0.0, ge=0, le=600, description="seconds to wait until every live matcher has applied the version this "
                                            "write created (as `vigil bank ... --wait`); the answer's `propagation` "
                                            "says whether they did (ok) and names the matchers behind")
IMPORT_SUFFIX = {"local": ".txt", "csv": ".csv", "stopncii": ".json", "ncmec": ".xml", "tat": ".json"}


async def _propagated(store, out: dict[str, Any], wait_s: float) -> dict[str, Any]:
    """The write's answer, with `propagation` when the caller asked to wait for the matchers.
    A wait that times out still answers 200: the write is done; `propagation.ok` is false."""
    if wait_s > 0:
        from workers.bank.propagation import wait_for_version

        result = await run_in_threadpool(wait_for_version, store.r, int(out["version"]), wait_s)
        out["propagation"] = result.to_json()
    return out


class BankIn(BaseModel):
    name: str = Field(..., max_length=100)
    action: str = Field(..., pattern="^(block|review|allow)$")
    label: str | None = None
    thresholds: dict[str, int] = Field(default_factory=dict)
    dihedral: bool = False
    description: str = Field("", max_length=2000)
    exist_ok: bool = False


class BankPatch(BaseModel):
    action: str | None = Field(None, pattern="^(block|review|allow)$")
    enabled: bool | None = None
    label: str | None = None
    thresholds: dict[str, int] | None = None
    dihedral: bool | None = None
    description: str | None = Field(None, max_length=2000)


class EntryIds(BaseModel):
    entry_ids: list[str] = Field(..., min_length=1, max_length=10_000)


def _stats(store, name: str) -> dict[str, Any]:
    bank = store.require_bank(name)
    per_signal = {s: n for s in CODE_SIGNALS if (n := int(store.r.hlen(codes_key(name, s))))}
    return {**bank.to_json(), "entries": store.entry_count(name), "enabled_per_signal": per_signal,
            "snapshots": {s: m.version for s, m in store.snapshot_metas(name).items()}}


@router.get("", summary="Every bank with its entry counts (vigil bank list)")
async def banks(request: Request, _: Caller = Depends(need("bank:read"))) -> dict[str, Any]:
    store = svc(request).store
    return {"version": store.version(), "banks": [_stats(store, n) for n in sorted(store.banks())]}


@router.post("", status_code=201, summary="Create a bank (vigil bank create)")
async def create(request: Request, body: BankIn, wait_s: float = WAIT,
                 caller: Caller = Depends(need("bank:write"))) -> dict[str, Any]:
    store = svc(request).writer_as(caller.actor)
    bank = store.create_bank(body.name, body.action, label=body.label, exist_ok=body.exist_ok,
                             thresholds=body.thresholds, dihedral=body.dihedral, description=body.description)
    return await _propagated(store, {"bank": bank.to_json(), "version": store.version()}, wait_s)


@router.get("/{name}", summary="A bank and its stats (vigil bank stats)")
async def stats(request: Request, name: str, _: Caller = Depends(need("bank:read"))) -> dict[str, Any]:
    store = svc(request).store
    last = store.audit(count=1)
    return {**_stats(store, name), "version": store.version(), "last_change": last[0] if last else None}


@router.patch("/{name}", summary="Change action, enabled, label, thresholds, dihedral (vigil bank update)")
async def update(request: Request, name: str, body: BankPatch, wait_s: float = WAIT,
                 caller: Caller = Depends(need("bank:write"))) -> dict[str, Any]:
    store = svc(request).writer_as(caller.actor)
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise Problem(400, "nothing to change: give action, enabled, label, thresholds, dihedral or description")
    if "thresholds" in changes:
        from workers.signals import ALL_SIGNALS

        bad = [s for s in changes["thresholds"] if s not in ALL_SIGNALS]
        if bad:
            raise Problem(400, f"thresholds: unknown signal {bad[0]!r}")
        changes["thresholds"] = {**store.require_bank(name).thresholds, **changes["thresholds"]}
    bank = store.update_bank(name, **changes)
    return await _propagated(store, {"bank": bank.to_json(), "version": store.version()}, wait_s)


@router.delete("/{name}", summary="Delete a bank and its entries")
async def delete(request: Request, name: str, wait_s: float = WAIT,
                 caller: Caller = Depends(need("bank:write"))) -> dict[str, Any]:
    store = svc(request).writer_as(caller.actor)
    return await _propagated(store, {"deleted": name, "version": await run_in_threadpool(store.delete_bank, name)}, wait_s)


@router.post("/{name}/entries", status_code=201, summary="Hash a file (multipart `file`) or ?url= and bank it "
                                                          "(vigil bank add)")
async def add(request: Request, name: str, url: str | None = None, label: str | None = None,
              note: str | None = Query(None, max_length=255), wait_s: float = WAIT,
              caller: Caller = Depends(need("bank:write"))
              ) -> dict[str, Any]:
    service = svc(request)
    store = service.writer_as(caller.actor)
    store.require_bank(name)
    if url:
        data, source = await url_media(url, service), url[:500]
    else:
        media = await form_media(request, service)
        data, source = media.data, media.filename or "api"
    entry = await run_in_threadpool(_file_entry, service, name, data, caller, note, source)
    if label:
        entry = replace(entry, label=label)
    version = store.add_entries(name, [entry])
    return await _propagated(store, {"entry_id": entry.entry_id, "version": version, "media_type": entry.media_type,
                                     "signals": {s.signal: s.value for s in entry.signals
                                                 if not s.variant and s.frame_ms is None}}, wait_s)


@router.post("/{name}/import", summary="Import a hash list sent as the body (vigil bank import)")
async def import_list(request: Request, name: str,
                      format: str = Query(..., pattern="^(local|csv|stopncii|ncmec|tat)$"),
                      skip_invalid: bool = False, label: str | None = None, wait_s: float = WAIT,
                      caller: Caller = Depends(need("bank:write"))) -> dict[str, Any]:
    from workers.bank.formats import FormatError
    from workers.bank.importer import import_file

    store = svc(request).writer_as(caller.actor)
    store.require_bank(name)
    fd, path = tempfile.mkstemp(prefix="vigil-api-import-", suffix=IMPORT_SUFFIX[format])
    try:
        with os.fdopen(fd, "wb") as f:  # the body is bounded by BodyLimit; spooled, then always removed
            async for chunk in request.stream():
                f.write(chunk)
        try:
            report = await run_in_threadpool(import_file, store, name, Path(path), format, skip_invalid, label, False)
        except FormatError as exc:
            raise Problem(400, str(exc), "invalid-list") from None
    finally:
        os.unlink(path)
    report["version"] = store.version()
    if not report["loaded"]:
        raise Problem(400, f"not imported: {report['invalid_count']} invalid lines", "invalid-list",
                      report=report)
    return await _propagated(store, report, wait_s)


@router.post("/{name}/remove", summary="Remove entries (vigil bank remove)")
async def remove(request: Request, name: str, body: EntryIds, wait_s: float = WAIT,
                 caller: Caller = Depends(need("bank:write"))
                 ) -> dict[str, Any]:
    store = svc(request).writer_as(caller.actor)
    return await _propagated(store, {"removed": body.entry_ids, "version": store.remove_entries(name, body.entry_ids)},
                             wait_s)


@router.post("/{name}/disable", summary="Stop entries matching, kept for audit (vigil bank disable)")
async def disable(request: Request, name: str, body: EntryIds, wait_s: float = WAIT,
                  caller: Caller = Depends(need("bank:write"))) -> dict[str, Any]:
    return await _set_disabled(request, name, body, wait_s, caller, True)


@router.post("/{name}/enable", summary="Let disabled entries match again (vigil bank enable)")
async def enable(request: Request, name: str, body: EntryIds, wait_s: float = WAIT,
                 caller: Caller = Depends(need("bank:write"))) -> dict[str, Any]:
    return await _set_disabled(request, name, body, wait_s, caller, False)


async def _set_disabled(request: Request, name: str, body: EntryIds, wait_s: float, caller: Caller,
                        disabled: bool) -> dict[str, Any]:
    store = svc(request).writer_as(caller.actor)
    versions = [store.set_entry_disabled(name, e, disabled) for e in body.entry_ids]
    return await _propagated(store, {"entries": body.entry_ids, "disabled": disabled, "version": versions[-1]}, wait_s)


@router.get("/{name}/export", summary="The bank's hashes as a list (vigil bank export)")
async def export(request: Request, name: str, format: str = Query("local", pattern="^(local|csv)$"),
                 _: Caller = Depends(need("bank:read"))) -> StreamingResponse:
    from workers.bank import formats
    from workers.bank.importer import export_records

    store = svc(request).store
    store.require_bank(name)

    def write() -> Any:
        """Into an anonymous temp file (gone when closed), so a 10M-entry bank is not held in memory."""
        out = tempfile.TemporaryFile("w+", newline="")
        formats.WRITERS[format](export_records(store, name), out)
        out.seek(0)
        return out

    out = await run_in_threadpool(write)

    def chunks():
        try:
            while block := out.read(1 << 16):
                yield block
        finally:
            out.close()

    return StreamingResponse(chunks(), media_type="text/csv" if format == "csv" else "text/plain")
