"""The matcher: keeps an index of the Redis bank in memory, in step with the bank's change stream,
and turns signals into decisions with their evidence.

Two consumers share the index, each in its own thread and group: uploads
(`workers/uploads/upload_matcher.py`) and live frames (`workers/live/matcher.py`, which keeps each stream's
state in a changelog across restarts). Separate consumers also keep an upload backlog from
delaying live decisions. The main thread keeps the index in step with the bank."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import redis

from workers.ops import metrics

from workers.index import mih_kernel
from workers.bank import propagation
from workers.bank.store import BankStore
from workers.uploads.decisions import DecisionCache
from workers.live.matcher import LiveMatcher
from workers.index.matching import SYNC_PAGE, BankIndex, IndexRebuilder
from workers.settings import Settings
from workers.uploads.upload_matcher import UploadMatcher

log = logging.getLogger("vigil.matcher")
HEARTBEAT_S = 1.0


class Matcher:
    """Owns the bank index and its sync loop, and the upload and live consumer threads."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = settings.worker_name("matcher")
        self.index = BankIndex(settings)
        self.store = BankStore.from_url(settings.redis, socket_timeout=5, socket_connect_timeout=5,
                                        health_check_interval=10) if settings.redis else None
        if self.store is None:
            raise ValueError("no Redis URL: set VIGIL_REDIS or --redis, or use `vigil up`")
        self.cache = DecisionCache(self.store.r, settings.decision_cache_ttl_s, settings) \
            if settings.decision_cache_ttl_s > 0 else None
        self.index_lock = threading.Lock()  # the consumer threads search while the sync loop applies changes
        self.rebuilds = IndexRebuilder(self.index, self.store, self.index_lock)
        self.uploads = UploadMatcher(settings, self.name, self.index, self.index_lock, self.cache, self.store.r)
        self.live = LiveMatcher(settings, self.name, self.index, self.index_lock)
        self.stop_event = threading.Event()
        self.health = metrics.Health()
        self.health.checks["bank_loaded"] = lambda: self.index.loaded
        self.health.checks["bank_fresh"] = lambda: time.time() - self.index.synced_at < settings.bank_stale_seconds
        self.health.checks["broker"] = lambda: self.uploads.assigned and self.live.assigned  # both in their groups
        self.health.checks["bank_current"] = self._bank_current

    def _bank_current(self) -> bool:
        """Not ready while a bank version in Redis has waited longer than bank_behind_seconds to
        be applied here (a change too big, or a matcher too slow to keep up)."""
        return self.index.catch_up_gate.behind_for() < self.settings.bank_behind_seconds

    def heartbeat(self) -> None:
        """Every HEARTBEAT_S: compare the store's version with the index's, hold decisions while
        the index is behind (BankIndex.catch_up_gate), and write this matcher's heartbeat
        (workers.bank.propagation) so `vigil bank ... --wait` knows when a change is live here.
        A thread of its own: the sync loop may be busy applying a big change meanwhile."""
        while not self.stop_event.is_set():
            try:
                head = self.store.version()
                version = self.index.version  # read after head: behind only if truly not applied
                if self.index.loaded and version < head:
                    self.index.catch_up_gate.behind(head)
                else:
                    self.index.catch_up_gate.reached(version)
                self._beat(version, head)
            except redis.RedisError as exc:
                log.debug("heartbeat not written", extra={"error": str(exc)})
            self.stop_event.wait(HEARTBEAT_S)
        try:
            propagation.forget(self.store.r, self.name)
        except redis.RedisError:
            pass  # it expires by itself

    def stop(self) -> None:
        self.stop_event.set()

    def _beat(self, version: int, head: int) -> None:
        metrics.BANK_BEHIND.set(max(head - version, 0))
        propagation.beat(self.store.r, propagation.MatcherBeat(
            self.name, version, head, self.index.loaded, self.index.catch_up_gate.catching_up,
            int(time.time() * 1000), os.getpid(), socket.gethostname()))

    def sync_bank(self) -> None:
        """Load the snapshot, then tail the change stream until stopped; reconnect with backoff if
        Redis goes away (matching goes on from the index in memory)."""
        backoff = 0.2
        block_ms = int(self.settings.bank_poll_seconds * 1000)
        while not self.stop_event.is_set():
            try:
                if not self.index.loaded:
                    # Not under the lock: load builds a new index aside and swaps it in when
                    # complete, so searches go on (from the old index) while it reads Redis.
                    self.index.load(self.store)
                    self._publish_bank_metrics()
                    log.info("bank loaded", extra={"version": self.index.version, "entries": self.index.counts()})
                after = self.index.stream_id
                changes = self.store.read_changes(after, block_ms, count=SYNC_PAGE, packed=True)
                if changes and changes[0].version > self.index.version + 1 and \
                        (self.store.first_change_version() or 0) > self.index.version + 1:
                    log.warning("change stream trimmed past our version; reloading the snapshot")
                    self.index.loaded = False
                    continue
                with self.index_lock:
                    self.index.apply(changes, after)  # dropped if a rebuild swapped in meanwhile
                if changes:
                    log.info("bank changed", extra={"version": self.index.version, "changes": len(changes)})
                    head = self.store.version()
                    if self.index.version < head:  # more to read: decisions wait until it is in
                        self.index.catch_up_gate.behind(head)
                self.index.catch_up_gate.reached(self.index.version)  # decisions held meanwhile go on
                if changes:
                    self._beat(self.index.version, head)  # writers waiting learn it now, not at the next beat
                self._publish_bank_metrics()
                self.rebuilds.maybe_start()
                backoff = 0.2
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("redis unavailable; matching continues from memory", extra={"error": str(exc),
                                                                                       "retry_s": backoff})
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _publish_bank_metrics(self) -> None:
        metrics.BANK_VERSION.set(self.index.version)
        metrics.BANK_SYNC.set(self.index.synced_at)
        for signal, n in self.index.counts().items():
            metrics.BANK_ENTRIES.labels(signal).set(n)

    def run(self) -> None:
        mih_kernel.warm()  # compiled or loaded from numba's cache before the first search, not during it
        server = metrics.serve(self.settings.metrics_host, self.settings.metrics_port, self.health)
        log.info("matcher started", extra={"worker": self.name, "metrics": f"http://{self.settings.metrics_host}:"
                                           f"{server.server_address[1]}/metrics", "kafka": self.settings.kafka})
        failed: list[str] = []

        def serve(name: str, path: Callable[[threading.Event], None]) -> None:
            """A path that fails stops the whole matcher, so it restarts, rather than serving half."""
            try:
                path(self.stop_event)
            except Exception:
                log.exception("matcher path failed; stopping the matcher", extra={"path": name})
                failed.append(name)
                self.stop_event.set()

        threads = [threading.Thread(target=serve, args=("uploads", self.uploads.run), name="uploads"),
                   threading.Thread(target=serve, args=("live", self.live.run), name="live")]
        threads.append(threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True))
        for t in threads:
            t.start()
        try:
            self.sync_bank()
        finally:
            self.stop_event.set()  # each path finishes, delivers and commits, then leaves its group
            for t in threads:
                t.join(45)
            server.shutdown()
            log.info("matcher stopped", extra={"worker": self.name})
        if failed:
            raise RuntimeError(f"the matcher's {' and '.join(failed)} path failed; see the log above")
