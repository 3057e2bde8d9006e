"""Every Prometheus metric vigil exports, and the HTTP endpoint that serves them.

Conventions: `vigil_` prefix, base units (`_seconds`), `_total` on counters, and labels with
bounded values only (never content or stream ids).
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

# Decision latency runs from milliseconds (cached, live) to minutes (long videos).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
                   1.5, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

DECISION_LATENCY = Histogram(
    "vigil_decision_latency_seconds", "Submit (or capture) to decision published.",
    ["source", "decision"], buckets=LATENCY_BUCKETS)
STAGE_DURATION = Histogram(
    "vigil_stage_duration_seconds", "Time spent per pipeline stage per event.",
    ["stage"], buckets=STAGE_BUCKETS)  # stage: fetch, decode, hash, queue, match, produce
EVENTS = Counter("vigil_events_total", "Input messages consumed.", ["worker", "topic"])
DECISIONS = Counter("vigil_decisions_total", "Decisions published.", ["source", "decision"])


def observe_decision(decision: dict) -> None:
    """Count a published decision and its latency. An end-of-stream summary restates a status:
    it is not a new decision."""
    if "summary" in decision:
        return
    DECISIONS.labels(decision["source"], decision["decision"]).inc()
    DECISION_LATENCY.labels(decision["source"], decision["decision"]).observe(decision["latency_ms"]["total"] / 1000)
PROVENANCE = Counter("vigil_provenance_total", "Uploads by what their provenance record says (C2PA state).",
                     ["state", "ai_generated"])
PROVENANCE_RULES = Counter("vigil_provenance_rules_total", "Provenance rules that fired in a decision.",
                           ["rule", "action"])


def observe_provenance(record: dict | None) -> None:
    if record is not None:
        PROVENANCE.labels(record.get("state", "absent"), "true" if record.get("ai_generated") else "false").inc()


DEAD_LETTERS = Counter("vigil_dead_letters_total", "Inputs sent to the dead-letter topic.", ["stage", "code"])
FRAMES_HASHED = Counter("vigil_frames_hashed_total", "Frames (or stills) hashed.", ["media_type"])
DENSE_FRAMES = Counter("vigil_video_dense_frames_total",
                       "Video frames decoded densely around frames near a banked video (adaptive sampling).")
CACHE_HITS = Counter("vigil_decision_cache_hits_total", "Uploads decided from the decision cache, without decoding.")
INFLIGHT = Gauge("vigil_inflight_events", "Events being processed by this worker.", ["worker"])
PAUSED = Gauge("vigil_paused_partitions", "Partitions paused for backpressure.", ["worker"])
BANK_ENTRIES = Gauge("vigil_bank_entries", "Active bank entries in this matcher's index.", ["signal"])
BANK_VERSION = Gauge("vigil_bank_version", "Bank version this matcher's index reflects.")
BANK_BEHIND = Gauge("vigil_bank_behind_versions", "Bank versions in Redis this matcher has not applied yet.")
BANK_SYNC = Gauge("vigil_bank_last_sync_timestamp_seconds", "When the index last synced with Redis.")
HISTORY_RECORDS = Counter("vigil_history_records_total", "Hash-history records written (or lost).", ["result"])
RETRO_RECORDS = Counter("vigil_retro_records_read_total", "Hash-history records read by rescans.")
RETRO_DECISIONS = Counter("vigil_retro_decisions_total", "Retroactive decisions published.", ["decision"])
RETRO_PARTITIONS = Gauge("vigil_retro_partitions", "History partitions this retro worker reads (its share of the fleet).")
RETRO_PENDING = Gauge("vigil_retro_pending_records", "History records left to read by the running rescans.")
CONSUMER_LAG = Gauge("vigil_consumer_lag_messages", "Consumer lag per partition.", ["group", "topic", "partition"])


class Health:
    """What /healthz and /readyz report; workers flip the flags."""

    def __init__(self) -> None:
        self.checks: dict[str, Callable[[], bool]] = {}

    def ready(self) -> tuple[bool, dict[str, bool]]:
        results = {}
        for name, check in self.checks.items():
            try:
                results[name] = bool(check())
            except Exception:
                results[name] = False
        return all(results.values()), results


def serve(host: str, port: int, health: Health) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz on a daemon thread; port 0 picks a free one."""
    import json

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/metrics"):
                body, ctype, status = generate_latest(), CONTENT_TYPE_LATEST, 200
            elif self.path.startswith("/healthz"):
                body, ctype, status = b'{"alive": true}', "application/json", 200
            elif self.path.startswith("/readyz"):
                ok, checks = health.ready()
                body = json.dumps({"ready": ok, "checks": checks}).encode()
                ctype, status = "application/json", 200 if ok else 503
            else:
                body, ctype, status = b"not found\n", "text/plain", 404
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
LIVE_SKIPPED = Counter("vigil_live_frames_skipped_total",
                       "Live frames skipped because a newer frame of the same stream was waiting.")
LIVE_REPLAYS = Counter("vigil_live_replayed_frames_total",
                       "Live frames delivered or hashed again after a crash or a rebalance, recognised as counted.")
LIVE_ACTIVE = Gauge("vigil_live_active_streams", "Live streams with state in this matcher (not yet ended).")

# The HTTP API (workers/api): route is the path template (/m/raw_lookup, /c/bank/{bank_name}), never the raw path.
API_REQUESTS = Counter("vigil_api_requests_total", "HTTP API requests answered.", ["route", "status"])
API_LATENCY = Histogram("vigil_api_request_duration_seconds", "HTTP API request handling time.", ["route"],
                        buckets=STAGE_BUCKETS)
# The review service (workers/review). The queue gauges are set from its database at each scrape
# (workers.review.metrics.refresh), so they hold across restarts and replicas.
REVIEW_AGE_BUCKETS = (60, 300, 900, 1800, 3600, 2 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400)
REVIEW_VERDICTS = Counter("vigil_review_verdicts_total", "Reviewer verdicts recorded.", ["verdict", "label"])
REVIEW_CASE_AGE = Histogram("vigil_review_case_age_seconds",
                            "Case age (first input to verdict) when a reviewer confirms or overturns it.",
                            buckets=REVIEW_AGE_BUCKETS)
REVIEW_INPUTS = Counter("vigil_review_inputs_total", "Decisions and reports folded into review cases.",
                        ["kind", "new_case"])
REVIEW_CASES_OPEN = Gauge("vigil_review_cases_open", "Review cases not yet decided (open or escalated).",
                          ["priority"])
REVIEW_OLDEST_AGE = Gauge("vigil_review_oldest_case_age_seconds",
                          "Age of the oldest undecided review case (0 when none).", ["priority"])
REVIEW_QA_OVERTURN = Gauge("vigil_review_qa_overturn_ratio",
                           "Share of reviewed QA samples of automatic blocks that reviewers overturned.")
REVIEW_QA_DECIDED = Gauge("vigil_review_qa_decided", "QA samples of automatic blocks decided by reviewers.")
