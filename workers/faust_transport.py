"""faust's aiokafka transport with a configurable fetch wait.

faust hard-codes fetch_max_wait_ms=1500. Apache Kafka answers a waiting fetch as soon as data
arrives, so that costs nothing there; the embedded broker (tansu) holds the fetch for the full
wait, which put hundreds of milliseconds between the hasher and every decision. Registered as
the `vigilkafka://` broker scheme."""
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


class Transport(fk.Transport):
    Consumer = Consumer


drivers.TRANSPORTS.data["vigilkafka"] = "workers.faust_transport:Transport"
SCHEME = "vigilkafka"
