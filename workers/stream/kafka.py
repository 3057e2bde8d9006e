"""confluent-kafka configuration and topic administration, shared by every worker and the CLI."""
from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from topics import TopicSpec, all_topics
from workers.settings import Settings

log = logging.getLogger("vigil.kafka")


def base_config(settings: Settings) -> dict[str, str | int | bool]:
    if not settings.kafka:
        raise ValueError("no Kafka bootstrap servers: set VIGIL_KAFKA or --kafka, or use `vigil up`")
    # log_level 4: librdkafka's warnings and errors, not its info chatter (disconnect notices)
    conf: dict = {"bootstrap.servers": settings.kafka, "client.id": settings.worker_name("vigil"), "log_level": 4}
    conf.update(settings.kafka_config)  # SASL/SSL pass-through wins
    return conf


def consumer_config(settings: Settings, group: str) -> dict:
    conf = base_config(settings)
    conf.update({
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",  # an event produced before the group first joins is still processed
        "enable.partition.eof": False,
        "fetch.wait.max.ms": settings.fetch_wait(),
        "statistics.interval.ms": 5000,
        # librdkafka prefetches up to this much per consumer; bounded so an overload cannot grow memory
        "queued.max.messages.kbytes": 16384,
    })
    if settings.embedded:
        # tansu completes a group join only after max.poll.interval.ms, so keep it short.
        conf.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "max.poll.interval.ms": 6000})
    else:
        conf.update({"session.timeout.ms": 30000, "max.poll.interval.ms": 300000})
    return conf


def producer_config(settings: Settings) -> dict:
    conf = base_config(settings)
    conf.update({
        "acks": "all",
        # No duplicates or reordering from retries, so a video's parts stay in order. The embedded
        # broker is memory-only: a restart forgets producer ids, which an idempotent producer treats
        # as fatal, so there one request in flight keeps the order instead.
        "enable.idempotence": not settings.embedded,
        "max.in.flight.requests.per.connection": 1 if settings.embedded else 5,
        "linger.ms": 2,
        "message.timeout.ms": 120000,  # after this a delivery fails loudly rather than buffering forever
        "queue.buffering.max.messages": 100000,
        "compression.type": "lz4",
    })
    return conf


def create_topics(settings: Settings, specs: list[TopicSpec] | None = None, timeout: float = 30.0) -> list[str]:
    """Create missing topics; existing ones are left as they are. Returns the names created."""
    specs = specs if specs is not None else all_topics(settings.partitions, settings.history_retention_days)
    admin = AdminClient(base_config(settings))
    deadline = time.monotonic() + timeout
    while True:
        try:
            existing = set(admin.list_topics(timeout=5).topics)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot reach Kafka at {settings.kafka}: {exc}") from None
            time.sleep(0.5)
    wanted = [s for s in specs if s.name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics([NewTopic(s.name, num_partitions=s.partitions, replication_factor=-1,
                                            config=s.config) for s in wanted], request_timeout=timeout)
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    log.info("topics created", extra={"topics": created})
    return created
