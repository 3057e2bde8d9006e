"""faust's aiokafka transport with fixes, registered as the `vigilkafka://` broker scheme.

1. A configurable fetch wait. faust hard-codes fetch_max_wait_ms=1500. Apache Kafka answers a
   waiting fetch as soon as data arrives, so that costs nothing there; the embedded broker holds
   the fetch for the full wait, which put hundreds of milliseconds before every decision.
2. No ack for a message the stream skipped. When a rebalance happens while a message fetched
   under the old generation is waiting, faust's stream skips it and then acks it; the ack lets
   the offset be committed, and the message is never processed by anyone (the chaos test lost
   one event in 2,000 that way). Refusing that ack leaves the offset uncommitted, so the
   partition's next owner fetches it again: at least once, as the rest of the pipeline.
3. Exact end offsets with the embedded broker (`true_end_offsets`). tansu 0.6 reports a
   partition's end as its last batch's first offset + 1, so after a batch of several records the
   end trails the log. faust restores a table up to that end: a rebalance rolled a stream's state
   back a frame, and the frame went uncounted (tests/test_chaos.py, live).
4. No silent gap (`GapGuard`). Messages can also be dropped without an ack: faust's fetch loop
   gives up handing a message to a stream when a rebalance suspends the flow, yet moves its read
   position past it. The later messages are processed, the dropped ones are not, and nothing
   fetches them again while the partition stays here. The live chaos test lost an end-of-stream
   marker that way, and a restarted matcher began partitions the killed one had never committed
   dozens of offsets into the log. The agent checks each message's offset against the last one
   (at first, the committed offset, or the log's start if there is none) and seeks back to the
   first one it has not seen."""
from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiokafka
from faust.transport import drivers
from faust.transport.drivers import aiokafka as fk

_fetch_wait_ms = 500

_exact_ends = False

# With the embedded broker a consumer-group join waits out the poll interval: seconds, not minutes.
EMBEDDED_OPTIONS: dict[str, Any] = {"broker_session_timeout": 6.0, "broker_heartbeat_interval": 1.0,
                                    "broker_max_poll_interval": 6.0, "broker_rebalance_timeout": 6.0}


def set_embedded(embedded: bool) -> None:
    """Embedded broker: read end offsets from the log itself (see 3. above)."""
    global _exact_ends
    _exact_ends = bool(embedded)


async def true_end_offsets(servers: list[str] | tuple[str, ...], reported: Mapping[Any, int], wait_ms: int = 50) -> dict[Any, int]:
    """End offsets read from the log: fetch from each reported end - 1 (the last batch's first
    record, where tansu's end points) and read on until nothing more comes. Never below the
    reported end; at most ~10 s. One short-lived consumer, only when a table is restored."""
    ends = dict(reported)
    probe = {tp: end for tp, end in ends.items() if end}
    if not probe:
        return ends
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=list(servers), enable_auto_commit=False,
                                         fetch_max_wait_ms=wait_ms, auto_offset_reset="latest")
    await consumer.start()
    try:
        tps = [aiokafka.TopicPartition(tp.topic, tp.partition) for tp in probe]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, probe[tp] - 1)
        waiting, seen = set(tps), set()
        deadline = time.monotonic() + 10
        while waiting and time.monotonic() < deadline:
            got = await consumer.getmany(*waiting, timeout_ms=wait_ms * 4)
            for tp in list(waiting):
                records = got.get(tp)
                if records:  # faust's TP and aiokafka's TopicPartition are equal tuples
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
                    seen.add(tp)
                elif tp in seen:  # the record at end - 1 exists: wait for it, then for nothing more
                    waiting.discard(tp)
    finally:
        await consumer.stop()
    return ends


def set_fetch_wait_ms(ms: int) -> None:
    global _fetch_wait_ms
    _fetch_wait_ms = int(ms)


# Messages an agent set aside to be fetched again: never acked, so their offsets stay uncommitted.
_refetch: weakref.WeakSet[Any] = weakref.WeakSet()


def refetch(message: Any) -> None:
    _refetch.add(message)


Verdict = Literal["process", "seek", "wait", "gap"]


@dataclass
class GapGuard:
    """The next offset the agent expects per partition (at first, the committed offset). A message
    past it means messages were dropped: "seek" (set it aside and seek back to the expected
    offset), then "wait" while copies fetched before the seek go by, seeking again every `reseek_s` (a fetch batch being handed over
    during the seek can move faust's read position past the offset again). If the expected offset
    has not come back after `give_up_s` (the log no longer holds it: retention), "gap": process the
    message and log the gap. A message at or before the expected offset is processed (a replay
    after a seek or a rebalance)."""
    reseek_s: float = 1.0
    give_up_s: float = 10.0
    expected: dict[Any, int] = field(default_factory=dict)
    sought: dict[Any, tuple[int, float, float]] = field(default_factory=dict)  # want, first, last seek
    seen_at: dict[Any, float] = field(default_factory=dict)
    assigned_at: float = field(default_factory=time.monotonic)

    def check(self, tp: Any, offset: int, now: float | None = None, start: int | None = None) -> Verdict:
        """`start`: the partition's committed offset, for its first message after an assignment
        (messages can be dropped before the first one the agent sees, too)."""
        now = time.monotonic() if now is None else now
        self.seen_at[tp] = now
        want = self.expected.get(tp, start)
        verdict: Verdict = "process"
        if want is not None and offset > want:
            asked = self.sought.get(tp)
            if asked is None or asked[0] != want:
                self.sought[tp] = (want, now, now)
                return "seek"
            if now - asked[1] < self.give_up_s:
                if now - asked[2] < self.reseek_s:
                    return "wait"
                self.sought[tp] = (want, asked[1], now)
                return "seek"
            verdict = "gap"
        self.expected[tp] = offset + 1
        self.sought.pop(tp, None)
        return verdict

    def reset(self, now: float | None = None) -> None:
        """On a new assignment: each partition starts again from its committed offset."""
        self.expected.clear()
        self.sought.clear()
        self.seen_at.clear()
        self.assigned_at = time.monotonic() if now is None else now

    def idle(self, tps: Iterable[Any], after_s: float, now: float | None = None) -> list[Any]:
        """Assigned partitions with no message for `after_s` (since the assignment, at first); each
        is counted as seen now, so it is named again only after another `after_s`. A restarted
        matcher was seen to get partitions faust never fetched."""
        now = time.monotonic() if now is None else now
        out = [tp for tp in tps if now - self.seen_at.get(tp, self.assigned_at) > after_s]
        self.seen_at.update((tp, now) for tp in out)
        return out


class ConsumerThread(fk.AIOKafkaConsumerThread):
    _servers: tuple[str, ...] = ()

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = _fetch_wait_ms  # read when the consumer starts its fetcher
        self._servers = tuple(fk.server_list(transport.url, transport.default_port))
        return consumer

    async def _highwaters(self, partitions: Any) -> Mapping[Any, int]:
        ends = await super()._highwaters(partitions)
        return await true_end_offsets(self._servers, ends) if _exact_ends else ends


class Consumer(fk.Consumer):
    def committed_offset(self, tp: Any) -> int | None:
        """The offset this consumer resumes from on `tp` (faust keeps it once it seeks or commits)."""
        return self._committed_offset.get(tp)

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def ack(self, message: Any) -> bool:
        stale = getattr(message, "generation_id", None) not in (None, self.app.consumer_generation_id)
        if stale or message in _refetch or not self.app.flow_control.is_active():
            return False  # skipped during a rebalance, not processed: leave it to be fetched again
        return super().ack(message)


class Transport(fk.Transport):
    Consumer = Consumer


drivers.TRANSPORTS.data["vigilkafka"] = "workers.faust_transport:Transport"
SCHEME = "vigilkafka"
