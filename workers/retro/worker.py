"""`vigil worker retro`: watches the bank change stream and rescans the hash history for the
entries each change adds to a block or review bank.

Changes that come within retro_settle_s of each other make one rescan. Changes that come while
a rescan runs are merged into it: the running rescan takes the new entries for the rest of its
range (and reads on to the history's new end), and a second rescan reads, for the new entries
only, the part the running one had already passed. Removing or disabling entries never un-blocks
anything: a retro decision is an announcement a platform has acted on, and taking it back is a
reviewer's call, not a hash list's.

State (Redis key vigil:retro:state, or vigil:retro:state:<i> for member i of a fleet of N, JSON):
the change stream position read up to and the queue of segments (workers/retro/rescan.py). It is
written only after the segment's offsets are committed, so a restart re-reads at most the changes
since, and re-announces nothing.

A fleet of N retro workers (VIGIL_RETRO_MEMBERS) splits every rescan by partition
(workers/retro/members.py): each member tails the change stream itself and queues, merges and
commits segments over its own partitions only, exactly as a single worker does over all of them.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from confluent_kafka import Producer

from workers.bank.model import Bank, Entry
from workers.bank.store import BankStore, entries_key, stream_pos
from workers.ops import metrics
from workers.ops.logs import now_ms
from workers.retro import members
from workers.retro.announce import Announcer, resolve_pending
from workers.retro.new_entries import NewEntries
from workers.retro.rescan import Segment, SegmentScan, history_bounds, history_partitions
from workers.settings import Settings
from workers.stream.kafka import create_topics, producer_config

log = logging.getLogger("vigil.retro")
ACTIVE = ("block", "review")
RENEW_EVERY_S = 2.0


def load_entries(store: BankStore, keys: list[tuple[str, str]]) -> list[Entry]:
    """The entries as the bank holds them now (an entry removed since is simply not rescanned)."""
    out: list[Entry] = []
    by_bank: dict[str, list[str]] = {}
    for bank, eid in keys:
        by_bank.setdefault(bank, []).append(eid)
    for bank, ids in by_bank.items():
        for i in range(0, len(ids), 5000):
            for blob in store.r.hmget(entries_key(bank), ids[i:i + 5000]):
                if blob is not None:
                    out.append(Entry.from_json(json.loads(blob)))
    return out


class RetroWorker:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = settings.worker_name("retro")
        self.store = BankStore.from_url(settings.redis, socket_timeout=10, socket_connect_timeout=5)
        self.producer = Producer(producer_config(settings))
        self.member = members.Member(0, 1)  # set by run(), once the history's partitions are known
        self.announcer: Announcer | None = None
        self.stop_event = threading.Event()
        self.health = metrics.Health()
        self.started = False
        self.health.checks["started"] = lambda: self.started
        self.state: dict[str, Any] = {}
        self.scan: SegmentScan | None = None
        self.waiting: list[tuple[str, str]] = []  # entries added, not yet in a segment
        self.waiting_since = 0.0
        self.waiting_version, self.waiting_ms = 0, 0

    def stop(self) -> None:
        self.stop_event.set()

    # -- state --------------------------------------------------------------------------------
    def _load_state(self) -> None:
        raw = self.store.r.get(self.member.state_key)
        if raw:
            self.state = json.loads(raw)
        else:  # first start: rescans begin with the next change (the matcher decides with what is banked),
            # counted from the fleet's first start, so a change between two members' first starts
            # is rescanned by both (each on its own partitions)
            self.store.r.set(members.ORIGIN_KEY, self.store.snapshot_start().stream_id, nx=True)
            self.state = {"stream_id": self.store.r.get(members.ORIGIN_KEY), "segments": [], "seq": 0}
            self._save()
        self.read_id = self.state["stream_id"]

    def _save(self) -> None:
        self.store.r.set(self.member.state_key, json.dumps(self.state))

    @property
    def segments(self) -> list[Segment]:
        return [Segment.from_json(s) for s in self.state["segments"]]

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        server = metrics.serve(self.settings.metrics_host, self.settings.metrics_port, self.health)
        create_topics(self.settings)
        partitions = history_partitions(self.settings)
        self.member = members.join(self.store.r, self.settings, len(partitions), self.name)
        self.announcer = Announcer(self.settings, self.store.r, self.producer, self.name,
                                   pending_key=self.member.pending_key)
        for key in self.member.pending_keys:
            resolve_pending(self.settings, self.store.r, key)
        self._load_state()
        self.started = True
        renewed = time.monotonic()
        metrics.RETRO_PARTITIONS.set(len(self.member.share(partitions)))
        log.info("retro worker started", extra={"worker": self.name, "segments": len(self.state["segments"]),
                                                "member": self.member.index, "members": self.member.members,
                                                "partitions": self.member.share(partitions),
                                                "metrics": f"http://{self.settings.metrics_host}:{server.server_address[1]}/metrics"})
        try:
            while not self.stop_event.is_set():
                if time.monotonic() - renewed >= RENEW_EVERY_S:
                    members.renew(self.store.r, self.member, self.name)
                    renewed = time.monotonic()
                self._read_changes(block_ms=0 if self.scan or self.state["segments"] else 500)
                if self.waiting and time.monotonic() - self.waiting_since >= self.settings.retro_settle_s:
                    self._enqueue()
                if self.scan is None and self.state["segments"]:
                    self._open(self.segments[0])
                if self.scan is not None:
                    self.scan.step(0.2)
                    metrics.RETRO_PENDING.set(self.scan.remaining())
                    if self.scan.done:
                        self._finish()
        finally:
            if self.scan is not None:
                self.scan.commit()
                self.scan.close()
            self.producer.flush(30)
            if self.started:
                members.leave(self.store.r, self.member, self.name)
            server.shutdown()
            log.info("retro worker stopped", extra={"worker": self.name})

    def _read_changes(self, block_ms: int) -> None:
        changes = self.store.read_changes(self.read_id, block_ms=block_ms or None, count=2000)
        if not changes:
            return
        seen = self.state.get("version")
        if seen is not None and changes[0].version > seen + 1:
            log.warning("bank changes were trimmed from the stream before this worker read them; entries "
                        "they added were not rescanned: run `vigil retro run` for the banks concerned",
                        extra={"last_version": seen, "next_version": changes[0].version})
        self.state["version"] = changes[-1].version
        banks = self.store.banks()
        for ch in changes:
            bank = banks.get(ch.bank)
            if ch.op == "entries_put" and bank is not None and bank.enabled and bank.action in ACTIVE:
                added = [(ch.bank, o["entry_id"]) for o in ch.data if not o.get("disabled")]
                if added and not self.waiting:
                    self.waiting_since = time.monotonic()
                self.waiting.extend(added)
                self.waiting_version, self.waiting_ms = ch.version, stream_pos(ch.stream_id)[0]
        self.read_id = changes[-1].stream_id
        if not self.waiting:  # nothing waiting for a segment: the durable position moves on at once
            self.state["stream_id"] = self.read_id
            self._save()
        log.info("bank changes read", extra={"changes": len(changes), "waiting_entries": len(self.waiting)})

    def _enqueue(self) -> None:
        """The waiting entries become a segment, or merge into the running one."""
        since = now_ms() - int(self.settings.retro_since_days * 86400_000)
        start, end = history_bounds(self.settings, since, owns=self.member.owns)
        self.state["seq"] += 1
        sid = f"{self.member.id_prefix}v{self.waiting_version}-{self.state['seq']}"
        if self.scan is None:
            seg = Segment(sid, self.waiting_version, self.waiting_ms, self.waiting, start, end, since)
            self.state["segments"].append(seg.to_json())
        else:
            self.scan.commit()  # the split point is what is committed
            run = self.scan.seg
            prefix = Segment(sid, self.waiting_version, self.waiting_ms, self.waiting, start,
                             {p: self.scan.pos.get(p, start[p]) for p in start}, since, open_end=False)
            merged = Segment(run.id, self.waiting_version, self.waiting_ms, run.entries + self.waiting,
                             run.start, {p: max(run.end.get(p, 0), end[p]) for p in end}, run.since_ms)
            self.state["segments"][0] = merged.to_json()
            self.state["segments"].insert(1, prefix.to_json())
            self.scan.close()
            self.scan = None  # reopened with the merged entries from the committed offsets
        self.state["stream_id"] = self.read_id
        self._save()
        log.info("rescan queued", extra={"rescan": sid, "entries": len(self.waiting),
                                         "records": sum(end[p] - start[p] for p in end)})
        self.waiting = []

    def _open(self, seg: Segment) -> None:
        banks: dict[str, Bank] = self.store.banks()
        index = NewEntries(load_entries(self.store, seg.entries), banks, self.settings)
        assert self.announcer is not None
        self.scan = SegmentScan(self.settings, seg, index, self.announcer, self.producer)
        log.info("rescan started", extra={"rescan": seg.id, "entries": len(index), "records": self.scan.progress.total,
                                          "resumed_at": self.scan.progress.read, "partitions": sorted(seg.start)})

    def _finish(self) -> None:
        assert self.scan is not None
        self.scan.commit()
        p = self.scan.progress
        log.info("rescan finished", extra={"rescan": self.scan.seg.id, "records": p.read, "matched": p.matched,
                                           "partitions": sorted(self.scan.seg.start),
                                           "announced": p.announced,
                                           "seconds": round(time.monotonic() - p.started, 2)})
        self.scan.close()
        self.scan = None
        self.state["segments"].pop(0)
        self._save()

