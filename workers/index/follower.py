"""A BankIndex kept in step with Redis from a thread: the load, then the change stream's tail.

The matcher (workers/uploads/matcher.py) runs this loop in its main thread; the HTTP API runs it
in a background thread, so a bank change reaches the API's lookups as fast as the matcher's.
"""
from __future__ import annotations

import logging
import threading

import redis

from workers.bank.store import BankStore
from workers.index.matching import BankIndex, IndexRebuilder
from workers.settings import Settings

log = logging.getLogger("vigil.index")


class BankFollower:
    """Owns `index` and the lock searches take; `start()` runs the sync loop until `stop()`."""

    def __init__(self, settings: Settings, store: BankStore):
        self.settings = settings
        self.store = store
        self.index = BankIndex(settings)
        self.lock = threading.Lock()
        self.rebuilds = IndexRebuilder(self.index, store, self.lock)
        self.stop_event = threading.Event()
        self.applied = threading.Condition()  # notified after every change applied (tests, waits)
        self.thread: threading.Thread | None = None

    def start(self) -> "BankFollower":
        self.thread = threading.Thread(target=self.run, name="bank-follower", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(10)

    def run(self) -> None:
        """Load, then tail until stopped; on a Redis outage, back off and serve from memory."""
        backoff = 0.2
        block_ms = int(self.settings.bank_poll_seconds * 1000)
        while not self.stop_event.is_set():
            try:
                if not self.index.loaded:
                    self.index.load(self.store)  # builds aside, swaps in when complete
                    self._notify()
                after = self.index.stream_id
                changes = self.store.read_changes(after, block_ms)
                if changes and changes[0].version > self.index.version + 1 and \
                        (self.store.first_change_version() or 0) > self.index.version + 1:
                    log.warning("change stream trimmed past our version; reloading the snapshot")
                    self.index.loaded = False
                    continue
                with self.lock:
                    self.index.apply(changes, after)
                if changes:
                    self._notify()
                self.rebuilds.maybe_start()
                backoff = 0.2
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("redis unavailable; lookups continue from memory",
                            extra={"error": str(exc), "retry_s": backoff})
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _notify(self) -> None:
        with self.applied:
            self.applied.notify_all()

    def wait_version(self, version: int, timeout: float) -> bool:
        """True once the index has applied `version` (this process only)."""
        with self.applied:
            return self.applied.wait_for(lambda: self.index.version >= version, timeout)
