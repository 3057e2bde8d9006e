"""faust's aiokafka transport with two fixes, registered as the `vigilkafka://` broker scheme.

1. A configurable fetch wait. faust hard-codes fetch_max_wait_ms=1500. Apache Kafka answers a
   waiting fetch as soon as data arrives, so that costs nothing there; the embedded broker holds
   the fetch for the full wait, which put hundreds of milliseconds before every decision.
2. No ack for a message the stream skipped. When a rebalance happens while a message fetched
   under the old generation is waiting, faust's stream skips it and then acks it; the ack lets
   the offset be committed, and the message is never processed by anyone (the chaos test lost
   one event in 2,000 that way). Refusing that ack leaves the offset uncommitted, so the
   partition's next owner fetches it again: at least once, as the rest of the pipeline."""
from __future__ import annotations

from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka as fk

_fetch_wait_ms = 500


def set_fetch_wait_ms(ms: int) -> None:
    global _fetch_wait_ms
    _fetch_wait_ms = int(ms)


class ConsumerThread(fk.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = _fetch_wait_ms  # read when the consumer starts its fetcher
        return consumer


class Consumer(fk.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def ack(self, message: Any) -> bool:
        stale = getattr(message, "generation_id", None) not in (None, self.app.consumer_generation_id)
        if stale or not self.app.flow_control.is_active():
            return False  # skipped during a rebalance, not processed: leave it to be fetched again
        return super().ack(message)


class Transport(fk.Transport):
    Consumer = Consumer


drivers.TRANSPORTS.data["vigilkafka"] = "workers.faust_transport:Transport"
SCHEME = "vigilkafka"
