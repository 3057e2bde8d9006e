"""The dashboard and alert rules against a real Prometheus scraping a real running pipeline.

test_deploy.py proves each expression parses and names metrics vigil defines; this proves the
workers actually export those series under those labels once traffic flows, that the alert
rules evaluate without error, and that the SLO latency query gives a sane figure.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import promql  # noqa: E402

from workers.stack import samples, transforms  # noqa: E402
from workers.bank.model import Entry, entry_id_for_file  # noqa: E402
from workers.bank.store import BankStore  # noqa: E402
from workers.stream.client import OutcomeWatcher, UploadProducer, upload_event  # noqa: E402
from workers.signals.hashing import hash_media  # noqa: E402
from workers.stack.cluster import Cluster  # noqa: E402
from workers.settings import Settings  # noqa: E402
from workers.stack.embedded import free_port, spawn, stop, wait_for_port  # noqa: E402

BANKED = ("astronaut", "coffee", "chelsea", "rocket")
UNRELATED = ("china.jpg", "flower.jpg", "stereo_motorcycle", "hubble_deep_field", "immunohistochemistry", "retina")

# Selectors no code path exercised by this load produces, and why. Everything else must have data.
NO_DATA_EXPECTED = {
    'vigil_decision_latency_seconds_bucket{source="live"}': "only uploads are submitted here; no live frames",
    "vigil_review_verdicts_total": "nobody reviews here (tests/test_review_browser.py does)",
}


def _get(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


class Prom:
    """The HTTP API of one Prometheus server."""

    def __init__(self, base: str):
        self.base = base

    def query(self, expr: str) -> list[dict]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            body = _get(url)
        except urllib.error.HTTPError as exc:  # 400 with a JSON error body for bad PromQL
            body = json.load(exc)
        assert body["status"] == "success", f"{expr!r}: {body.get('errorType')}: {body.get('error')}"
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)


def _write_media(media: Path) -> tuple[dict[str, Path], list[Path]]:
    """Originals to bank, then uploads: edited copies of the banked photos, unrelated photos,
    and two files that are not media (they must become dead letters)."""
    originals = {}
    for name in BANKED:
        p = media / f"bank-{name}.png"
        p.write_bytes(transforms.encode(samples.photo(name), ".png"))
        originals[name] = p
    uploads = []
    for name in BANKED:
        img = samples.photo(name)
        for q in (95, 85, 75, 65):
            p = media / f"{name}-q{q}.jpg"
            p.write_bytes(transforms.encode(img, ".jpg", q))
            uploads.append(p)
        p = media / f"{name}-half.png"
        p.write_bytes(transforms.encode(transforms.resize(img, 0.5), ".png"))
        uploads.append(p)
    for name in UNRELATED:
        img = samples.photo(name)
        for q in (90, 70, 50):
            p = media / f"{Path(name).stem}-q{q}.jpg"
            p.write_bytes(transforms.encode(img, ".jpg", q))
            uploads.append(p)
    for i in range(2):
        p = media / f"not-media-{i}.jpg"
        p.write_bytes(b"this is not an image " * (i + 1))
        uploads.append(p)
    return originals, uploads


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    """A running pipeline that has processed 40 uploads, scraped every second by Prometheus."""
    prom_bin = shutil.which("prometheus")
    assert prom_bin, "prometheus not on PATH: `apt-get install -y prometheus`"
    tmp = tmp_path_factory.mktemp("prom")
    media = tmp / "media"
    media.mkdir()
    originals, uploads = _write_media(media)
    assert len(uploads) == 40
    settings = Settings(media_roots=(str(media),), actor="test-prometheus")
    with Cluster(settings, hashers=1, matchers=1, review=True) as cluster:
        s = cluster.settings
        store = BankStore.from_url(s.redis, actor="test-prometheus")
        store.create_bank("known-bad", "block", label="test")
        for path in originals.values():
            result = hash_media(path.read_bytes(), s)
            sha = next(v.value for v in result.signals if v.signal == "sha256")
            store.add_entries("known-bad", [Entry(entry_id_for_file(sha), "known-bad", tuple(result.signals),
                                                  source=path.name, media_type="image")])

        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(promql.RULES)],
            "scrape_configs": [
                {"job_name": f"vigil-{kind}", "metrics_path": "/metrics",
                 "static_configs": [{"targets": [urllib.parse.urlsplit(w.metrics_url).netloc
                                                 for w in cluster.workers if w.kind == kind]}]}
                for kind in ("hasher", "matcher", "review")
            ],
        }
        config_path = tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        proc = spawn([prom_bin, f"--config.file={config_path}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                     log_path=tmp / "prometheus.log")
        try:
            wait_for_port(port, 30, proc)
            prom = Prom(f"http://127.0.0.1:{port}")
            cluster.wait_ready(timeout=90)
            # Two waves a few scrapes apart, so every counter already has a sample before the
            # second wave raises it and rate() over the window sees an increase.
            watcher = OutcomeWatcher(s)
            producer = UploadProducer(s)
            outcomes = {}
            for wave in (uploads[::4], [u for i, u in enumerate(uploads) if i % 4]):
                events = [upload_event(p) for p in wave]
                for e in events:
                    producer.submit(e)
                producer.flush()
                got = watcher.wait_for({e["event_id"] for e in events}, timeout=60)
                assert len(got) == len(events), f"{len(events) - len(got)} uploads undecided; see {s.data_dir}"
                outcomes.update(got)
                time.sleep(3)
            watcher.close()
            yield prom, cluster, outcomes
        finally:
            stop(proc, timeout=10)


def test_load_produced_every_outcome(loaded):
    _, _, outcomes = loaded
    kinds = [msg.get("decision") if topic == "moderation.decisions" else "dead-letter"
             for topic, msg in outcomes.values()]
    assert kinds.count("block") >= 16, kinds  # the 4 JPEG re-encodes of each banked photo at least
    assert kinds.count("allow") >= 18, kinds
    assert kinds.count("dead-letter") == 2, kinds


def test_targets_up_and_rules_evaluate(loaded):
    prom, cluster, _ = loaded
    targets = prom.wait_for('up{job=~"vigil-.*"} == 1', timeout=10)
    assert len(targets) == len(cluster.workers)
    groups = _get(f"{prom.base}/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} == {e.name for e in promql.rule_expressions()}
    for r in rules:
        assert r["health"] == "ok", f"{r['name']}: {r.get('lastError')}"
    # A healthy pipeline under light load alerts on nothing: not even pending (the `for:` clauses
    # are longer than this test, so "pending" is as far as a wrong rule could get here).
    alerting = [f"{a['labels']['alertname']} {a['state']} {a['labels']}"
                for a in _get(f"{prom.base}/api/v1/alerts")["data"]["alerts"]]
    assert alerting == [], ("alerts on a healthy pipeline; a hasher also exports the matcher-only bank gauges "
                            "(at 0), so bank rules and panels must select job=\"vigil-matcher\"")


def test_upload_p99_latency_is_sane(loaded):
    prom, _, _ = loaded
    result = prom.query('histogram_quantile(0.99, sum by (le, source) '
                        '(rate(vigil_decision_latency_seconds_bucket[1m])))')
    by_source = {r["metric"].get("source"): float(r["value"][1]) for r in result}
    assert "upload" in by_source, result
    p99 = by_source["upload"]
    assert not math.isnan(p99) and 0 < p99 < 60, p99


def test_consumer_lag_series_exist(loaded):
    prom, _, _ = loaded
    # librdkafka reports statistics every 5 s, so the first lag sample can trail the load.
    result = prom.wait_for("vigil_consumer_lag_messages", timeout=15)
    assert result, "no vigil_consumer_lag_messages series"
    assert {r["metric"]["topic"] for r in result} >= {"moderation.uploads"}
    for r in result:
        assert float(r["value"][1]) >= 0


def test_every_expression_evaluates_and_every_selector_has_data(loaded):
    prom, _, _ = loaded
    exprs = promql.all_expressions()
    assert exprs
    seen_exempt, missing = set(), []
    for e in exprs:
        prom.query(e.render(rate_interval="1m", interval="1s", range_="5m"))  # asserts success
        for sel in promql.selectors(e.expr):
            if sel in NO_DATA_EXPECTED:
                seen_exempt.add(sel)
                continue
            if not prom.query(sel):
                missing.append(f"{e}: {sel}")
    assert not missing, "selectors with no data:\n" + "\n".join(missing)
    # The exemptions must name selectors that exist, or they silently exempt nothing.
    assert seen_exempt == set(NO_DATA_EXPECTED)
