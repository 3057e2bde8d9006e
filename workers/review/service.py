"""`vigil review`: the store migrated, the internal banks created, the intake consumer and the
verdict applier in threads, and the pages served by uvicorn in the main thread."""
from __future__ import annotations

import logging
import threading
from typing import Any

from workers.review import db
from workers.review.intake import Intake
from workers.review.verdicts import Applier
from workers.settings import Settings

log = logging.getLogger("vigil.review")


class ReviewService:
    """Everything `vigil review` runs; `start()` then `serve()` (blocks) or `stop()`."""

    def __init__(self, settings: Settings):
        from confluent_kafka import Producer
        from workers.bank.store import BankStore
        from workers.review.web import ReviewApp
        from workers.stream.kafka import producer_config

        self.settings = settings
        self.name = settings.worker_name("review")
        self.sessions = db.open_store(settings)
        self.bank = BankStore.from_url(settings.redis, actor=settings.actor or "vigil-review",
                                       socket_timeout=5, socket_connect_timeout=5)
        self.applier = Applier(self.sessions, settings, self.bank, Producer(producer_config(settings)))
        self.intake = Intake(settings, self.sessions, self.bank, self.name)
        self.web = ReviewApp(self.sessions, settings, self.bank, self.applier, health=self.health)
        self.threads: list[threading.Thread] = []
        self.server: Any = None

    def health(self) -> dict[str, bool]:
        alive = all(t.is_alive() for t in self.threads)
        return {"threads": alive, "broker": self.intake.assigned}

    def start(self) -> "ReviewService":
        self.applier.ensure_banks()
        for target, name in ((self.intake.run, "review-intake"), (self.applier.run, "review-applier")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def serve(self) -> None:
        import uvicorn

        config = uvicorn.Config(self.web.app, host=self.settings.review_host, port=self.settings.review_port,
                                log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.server.run()

    def stop(self) -> None:
        self.intake.stop()
        self.applier.stopping.set()
        self.applier.wake.set()
        if self.server is not None:
            self.server.should_exit = True
        for t in self.threads:
            t.join(timeout=15)

    @property
    def url(self) -> str:
        return f"http://{self.settings.review_host}:{self.settings.review_port}/"
