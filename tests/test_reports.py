"""Reports from real decisions: the real broker and Redis, the real pipeline, the real CLI.

The module runs its own cluster so the counts it checks are exactly the decisions it produced."""
from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path
from xml.etree import ElementTree as ET

import jsonschema
import pytest

from tests.reports_helpers import BANKS, DEAD, METADATA, UNRELATED, produce_all, vigil
from workers.reports import sor
from workers.reports.consumer import ReportsConsumer
from workers.reports.preserve import PreserveStore, new_key
from workers.reports.preserve_consumer import PreserveConsumer
from workers.settings import Settings

pytestmark = pytest.mark.integration
BLOCKED = [p for _, (action, _, photos) in BANKS.items() if action == "block" for p in photos]


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    from workers.stack.cluster import Cluster

    media = tmp_path_factory.mktemp("report-media")
    settings = Settings(media_roots=(str(media),), data_dir=str(tmp_path_factory.mktemp("report-cluster")),
                        partitions=2)
    with Cluster(settings) as c:
        c.wait_ready(timeout=120)
        yield produce_all(c, media)


def _transparency(produced, out: Path) -> dict:
    start, end = produced.period()
    proc = vigil(produced.settings, "report", "transparency", "--from", start, "--to", end, "--out", str(out), "--json")
    assert json.loads(proc.stdout)["files"]["html"] == str(out / "report.html")
    return json.loads((out / "report.json").read_text())


def test_pipeline_made_the_decisions_the_reports_count(produced):
    for name in BLOCKED:
        assert produced.decisions[name]["decision"] == "block", produced.decisions[name]
    assert produced.decisions["stereo_motorcycle"]["decision"] == "review"
    assert all(produced.decisions[n]["decision"] == "allow" for n in UNRELATED)
    assert produced.decisions["astronaut"]["metadata"] == METADATA


def test_transparency_figures_equal_the_produced_counts(produced, tmp_path):
    figs = _transparency(produced, tmp_path / "r1")
    t = figs["totals"]
    assert (t["decisions"], t["decisions_block"], t["decisions_review"], t["decisions_allow"]) == (7, 4, 1, 2)
    assert t["automated_decisions"] == 7 and t["human_decisions"] == 3
    assert t["dead_letters"] == sum(DEAD.values()) and figs["dead_letters_by_code"] == DEAD
    assert t["reports_received"] == 1 and figs["reports_by_reason"] == {"csam": 1}
    assert t["automatic_blocks_reviewed"] == 2 and t["automatic_blocks_overturned"] == 1
    assert t["overturn_rate_of_automatic_blocks"] == 0.5
    assert t["live_streams_terminated"] == 0 and t["unreadable_messages"] == 0
    truth = sorted(d["latency_ms"]["total"] for n, d in produced.decisions.items() if d["decision"] == "block")
    true_median = truth[(len(truth) - 1) // 2]
    assert abs(t["median_time_to_block_ms"] - true_median) <= 0.13 * true_median + 1  # ~12% buckets
    rows = {(r["bank"], r["label"]): r for r in figs["matches_by_bank_and_label"]}
    assert rows[("csam-list", "csam")]["block"] == 2 and rows[("ncii-list", "ncii")]["block"] == 1
    assert rows[("custom-list", "custom-x")]["block"] == 1 and rows[("watch-list", "terror")]["review"] == 1
    assert figs["decisions_by_source"] == {"upload": 7, "live": 0, "api": 0, "retro": 0}
    assert figs["decisions_by_media_type"] == {"image": 7, "video": 0}
    assert sum(d["block"] for d in figs["decisions_per_day"]) == 4
    outcomes = {(r["action"], r["label"]): r["count"] for r in figs["review_outcomes"]}
    assert outcomes == {("block", "csam"): 1, ("allow", "-"): 1, ("block", "terror"): 1}
    with open(tmp_path / "r1" / "report.csv") as fh:
        flat = {(r["figure"], r["key"]): r["value"] for r in csv.DictReader(fh)}
    assert flat[("totals", "decisions_block")] == "4" and flat[("dead_letters_by_code", "not_json")] == "2"
    html = (tmp_path / "r1" / "report.html").read_text()
    # nothing a browser would fetch: no scripts, no src, no links or CSS urls (xmlns are names, not loads)
    assert "<script" not in html and "src=" not in html and "url(http" not in html and "@import" not in html
    assert not re.search(r"href=[\"'](?!#)", html), re.search(r"href=[\"'](?!#).{0,80}", html)


def test_counting_again_counts_nothing_twice(produced, tmp_path):
    before = _transparency(produced, tmp_path / "a")
    assert ReportsConsumer(produced.settings).catch_up() == 0
    assert json.loads(vigil(produced.settings, "report", "aggregate", "--once", "--json").stdout) == {"counted": 0}
    rebuilt = json.loads(vigil(produced.settings, "report", "aggregate", "--rebuild", "--json").stdout)
    assert rebuilt["counted"] > 0  # every message on the topics, counted again from nothing
    assert _transparency(produced, tmp_path / "c") == before
    after = _transparency(produced, tmp_path / "b")
    assert before == after
    assert (tmp_path / "a" / "report.json").read_bytes() == (tmp_path / "b" / "report.json").read_bytes()


def test_statements_of_reasons_are_schema_valid_and_unmapped_labels_are_reported(produced, tmp_path):
    start, end = produced.period()
    out = tmp_path / "sor.jsonl"
    summary = json.loads(vigil(produced.settings, "report", "sor", "--from", start, "--to", end,
                               "--out", str(out), "--json").stdout)
    statements = [json.loads(line) for line in out.read_text().splitlines()]
    for s in statements:
        sor.validate(s)
    # csam x2 and ncii blocked automatically, and the review confirmed as terror by a person
    assert summary["statements"] == len(statements) == 4
    by_puid = {s["puid"]: s for s in statements}
    csam = by_puid[f"vigil-{produced.decisions['astronaut']['event_id']}"]
    assert csam["category"] == "STATEMENT_CATEGORY_PROTECTION_OF_MINORS"
    assert csam["category_specification"] == ["KEYWORD_CHILD_SEXUAL_ABUSE_MATERIAL"]
    assert csam["automated_detection"] == "Yes" and csam["automated_decision"] == "AUTOMATED_DECISION_FULLY"
    assert csam["decision_visibility"] == ["DECISION_VISIBILITY_CONTENT_REMOVED"]
    assert csam["content_type"] == ["CONTENT_TYPE_IMAGE"] and "DE" in csam["territorial_scope"]
    ncii = by_puid[f"vigil-{produced.decisions['rocket']['event_id']}"]
    assert ncii["category"] == "STATEMENT_CATEGORY_NON_CONSENSUAL_BEHAVIOUR"
    human = by_puid["vigil-case-3"]
    assert human["category"] == "STATEMENT_CATEGORY_RISK_FOR_PUBLIC_SECURITY"
    assert human["automated_decision"] == "AUTOMATED_DECISION_PARTIALLY"
    unmapped = [json.loads(line) for line in out.with_suffix(".unmapped.jsonl").read_text().splitlines()]
    assert [(u["content_id"], u["label"]) for u in unmapped] == [(produced.cid("coffee"), "custom-x")]
    assert vigil(produced.settings, "report", "sor", "--from", start, "--to", end, "--out", str(out),
                 "--strict", check=False).returncode == 1
    with pytest.raises(jsonschema.ValidationError):  # the schema constrains the vocabulary
        sor.validate({**csam, "category": "STATEMENT_CATEGORY_CSAM"})
    with pytest.raises(jsonschema.ValidationError):
        sor.validate({k: v for k, v in csam.items() if k != "incompatible_content_explanation"})


def _package(produced, photo: str, out: Path, env: dict | None = None, media: bool = False, check: bool = True):
    args = ["report", "evidence", "--content-id", produced.cid(photo), "--out", str(out), "--json"]
    proc = vigil(produced.settings, *args, *(["--include-media"] if media else []), extra_env=env, check=check)
    return (Path(json.loads(proc.stdout)["packages"][0]) if proc.returncode == 0 else None), proc


def _check_sums(pkg: Path) -> list[str]:
    names = []
    for line in (pkg / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((pkg / name).read_bytes()).hexdigest() == digest, name
        names.append(name)
    assert sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file() and p.name != "SHA256SUMS") == names
    return names


def test_evidence_packages_by_label_are_one_per_incident(produced, tmp_path):
    start, end = produced.period()
    proc = vigil(produced.settings, "report", "evidence", "--label", "csam", "--from", start, "--to", end,
                 "--out", str(tmp_path), "--json")
    packages = [Path(p) for p in json.loads(proc.stdout)["packages"]]
    contents = sorted(json.loads((p / "manifest.json").read_text())["content_id"] for p in packages)
    assert contents == sorted([produced.cid("astronaut"), produced.cid("chelsea")])
    proc = vigil(produced.settings, "report", "evidence", "--label", "nothing-has-this", "--from", start, "--to", end,
                 "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "no blocked content" in proc.stderr


def test_evidence_package_without_preservation(produced, tmp_path):
    pkg, _ = _package(produced, "astronaut", tmp_path / "one")
    again, _ = _package(produced, "astronaut", tmp_path / "two")
    assert (pkg / "manifest.json").read_bytes() == (again / "manifest.json").read_bytes()
    assert (pkg / "SHA256SUMS").read_bytes() == (again / "SHA256SUMS").read_bytes()
    assert _check_sums(pkg) == ["cybertip-file-1.xml", "cybertip-report.xml", "manifest.json"]
    man = json.loads((pkg / "manifest.json").read_text())
    decision = produced.decisions["astronaut"]
    assert man["content_id"] == produced.cid("astronaut") and decision["event_id"] in man["event_ids"]
    assert man["decisions"][0]["matches"] == decision["matches"]
    assert [v["case_id"] for v in man["verdicts"]] == [1]
    upload = man["uploads"][0]
    assert upload["metadata"] == METADATA
    data = produced.copies["astronaut"].read_bytes()
    assert upload["hashes"]["md5"] == hashlib.md5(data).hexdigest()
    assert upload["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(upload["hashes"]["pdq"]) == 64 and upload["hashes"]["sha1"] is None
    assert man["preservation"] == []
    report = ET.parse(pkg / "cybertip-report.xml").getroot()
    assert report.tag == "report" and report.find("incidentSummary/incidentType").text.startswith("Child Pornography")
    assert report.find("personOrUserReported/espIdentifier").text == "u-17"
    assert report.find("personOrUserReported/ipCaptureEvent/ipAddress").text == "203.0.113.5"
    fd = ET.parse(pkg / "cybertip-file-1.xml").getroot()
    assert fd.tag == "fileDetails"
    assert {h.get("hashType"): h.text for h in fd.findall("originalFileHash")} == {
        "MD5": hashlib.md5(data).hexdigest(), "SHA256": hashlib.sha256(data).hexdigest()}


@pytest.mark.slow
def test_preservation_encrypts_blocked_csam_and_the_key_guards_access(produced, tmp_path):
    key = new_key()
    pdir = tmp_path / "preserved"
    env = {"VIGIL_PRESERVE_DIR": str(pdir), "VIGIL_PRESERVE_KEY": key}
    settings = Settings.from_env({**produced.settings.to_env(), **env})
    assert PreserveConsumer(settings).catch_up() == 2  # the two csam blocks; ncii is not a preserved label
    store = PreserveStore(pdir, key)
    records = store.verify_chain()
    assert sorted(r["content_id"] for r in records) == sorted([produced.cid("astronaut"), produced.cid("chelsea")])
    assert all(r["action"] == "preserved" for r in records)
    original = produced.copies["astronaut"].read_bytes()
    enc = pdir / next(r["file"] for r in records if r["content_id"] == produced.cid("astronaut"))
    assert original not in enc.read_bytes() and original[:4096] not in enc.read_bytes()
    assert PreserveConsumer(settings).catch_up() == 0  # replays preserve nothing twice

    pkg, _ = _package(produced, "astronaut", tmp_path / "pkg", env=env, media=True)
    man = json.loads((pkg / "manifest.json").read_text())
    assert man["uploads"][0]["hashes"]["sha1"] == hashlib.sha1(original).hexdigest()
    assert man["preservation"][0]["plaintext_sha256"] == hashlib.sha256(original).hexdigest()
    media = [n for n in _check_sums(pkg) if n.startswith("media/")]
    assert [(pkg / n).read_bytes() for n in media] == [original]
    assert [r["action"] for r in store.verify_chain()][-1] == "accessed"
    import redis
    audit = redis.Redis.from_url(produced.settings.redis).xrange("vigil:reports:audit")
    assert audit and audit[-1][1][b"content_id"].decode() == produced.cid("astronaut")
    no_media, _ = _package(produced, "astronaut", tmp_path / "pkg2", env=env)
    assert (no_media / "manifest.json").read_bytes() == (pkg / "manifest.json").read_bytes()

    wrong = {**env, "VIGIL_PRESERVE_KEY": new_key()}
    refused, proc = _package(produced, "astronaut", tmp_path / "wrong", env=wrong, media=True, check=False)
    assert refused is None and proc.returncode == 2 and "wrong preservation key" in proc.stderr
    assert not list((tmp_path / "wrong").rglob("media/*"))
    tampered = bytearray(enc.read_bytes())
    tampered[-5] ^= 1
    enc.write_bytes(bytes(tampered))
    _, proc = _package(produced, "astronaut", tmp_path / "tampered", env=env, media=True, check=False)
    assert proc.returncode == 2 and "altered" in proc.stderr


def test_transparency_page_in_headless_chromium(produced, tmp_path):
    """Debian's chromium renders report.html offline; the totals and the numbers on the charts
    are what the test produced, and a screenshot is kept for the README."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    figs = _transparency(produced, tmp_path / "page")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,2400"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get((tmp_path / "page" / "report.html").as_uri())
        totals = {el.get_attribute("data-total"): el.text for el in driver.find_elements(By.CSS_SELECTOR, "[data-total]")}
        assert totals["decisions"] == "7" and totals["decisions_block"] == "4" and totals["human_decisions"] == "3"
        assert totals["dead_letters"] == "3" and totals["overturn_rate_of_automatic_blocks"] == "50.0%"
        charts = driver.find_elements(By.CSS_SELECTOR, "figure[data-chart]")
        assert len(charts) == 7
        for chart in charts:  # every chart is drawn, with a size on the page
            svg = chart.find_element(By.TAG_NAME, "svg")
            assert svg.size["width"] > 200 and svg.size["height"] > 100, chart.get_attribute("data-chart")

        def bar_numbers(name: str) -> list[str]:
            svg = driver.find_element(By.CSS_SELECTOR, f"figure[data-chart={name}] svg")
            return [t.text for t in svg.find_elements(By.CSS_SELECTOR, "g[id^=text] text, text") if t.text.strip()]

        per_day = bar_numbers("decisions_per_day")
        for action, n in (("block", 4), ("review", 1), ("allow", 2)):
            assert str(n) in per_day and action in per_day
        dead = bar_numbers("dead_letters_by_code")
        assert {"not_json", "media_not_found", "2", "1"} <= set(dead)
        banks = bar_numbers("matches_by_bank_and_label")
        assert "csam-list (csam)" in banks and "2" in banks
        human = bar_numbers("automated_versus_human")
        assert {"7", "3"} <= set(human)
        logs = driver.get_log("browser") if hasattr(driver, "get_log") else []
        assert not [e for e in logs if e.get("level") == "SEVERE"], logs
        shot = tmp_path / "transparency.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        keep = Path(__file__).resolve().parent.parent / "benchmarks" / "out" / "transparency-report.png"
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_bytes(shot.read_bytes())
        assert figs["totals"]["decisions"] == 7
    finally:
        driver.quit()


def test_the_long_running_consumer_resumes_from_redis_and_counts_only_what_is_new(produced, tmp_path):
    """`vigil report aggregate` as a service: joins its group, seeks to the offsets in Redis (so
    nothing already counted is counted again) and counts a user report that arrives later."""
    import threading
    import time

    from confluent_kafka import Producer

    from workers.reports.aggregate import Aggregate
    from workers.reports.consumer import REPORTS
    from workers.stream.kafka import producer_config

    consumer = ReportsConsumer(produced.settings)
    before = consumer.aggregate.offsets()
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        p = Producer(producer_config(produced.settings))
        p.produce(REPORTS, key=b"c-later", value=json.dumps({
            "schema_version": 1, "report_id": "rep-2", "content_id": "c-later", "media_uri": "file:///x.jpg",
            "reason": "ncii", "reporter": "user-3", "reported_at_ms": int(time.time() * 1000)}).encode())
        assert p.flush(30) == 0
        deadline = time.monotonic() + 90
        while consumer.counted < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)
    assert consumer.counted == 1, consumer.counted  # only the new report, nothing replayed
    after = Aggregate(consumer.r).offsets()
    assert {tp: n for tp, n in after.items() if tp[0] != REPORTS} == {tp: n for tp, n in before.items() if tp[0] != REPORTS}
    figs = _transparency(produced, tmp_path / "later")
    assert figs["reports_by_reason"] == {"csam": 1, "ncii": 1} and figs["totals"]["decisions"] == 7


def test_the_aggregate_service_answers_its_probes_and_stops_on_sigterm(produced):
    """deploy/k8s/reports.yaml probes `vigil report aggregate` like every worker: /readyz while it
    runs, /metrics for Prometheus; SIGTERM stops it cleanly (exit 0)."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(produced.settings.to_env(), VIGIL_METRICS_PORT=str(port), VIGIL_METRICS_HOST="127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "report", "aggregate"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, ready = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    ready = (r.status, json.loads(r.read()))
                    break
            except OSError:
                time.sleep(0.3)
        assert ready is not None and ready[0] == 200, (ready, proc.poll())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            assert b"# TYPE" in r.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
