"""The review loop end to end, in a real browser (Debian's chromium via Selenium), against the
real pipeline (embedded broker, redis-server, hasher, matcher) and `vigil review` in its own
process, on SQLite and on a real PostgreSQL:

- log in, see the queue, claim a case, see the preview blurred, reveal it, confirm it; then a copy
  of the photo uploaded later is blocked by the reviewed-bad bank, and moderation.actions holds
  the verdict;
- overturn another case; a copy of it is then allowed, the allowlist named in its evidence;
- a second reviewer cannot claim a case already held; without a session the login page; a forged
  form without the CSRF token is refused.
"""
from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker

import topics
from pipeline_helpers import submit_and_wait, write_photo
from review_fixtures import ReviewProcess, chromium, postgres  # noqa: F401
from workers.bank.importer import add_media_file
from workers.bank.store import BankStore
from workers.review.db import Audit, Case
from workers.stack import transforms
from workers.stack.embedded import free_port
from workers.stream.client import OutcomeWatcher

pytestmark = pytest.mark.integration
SHOTS = Path(__file__).resolve().parents[1] / "benchmarks" / "out" / "review"
PASSWORD = "a long test password"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def review(request, cluster, media_dir, tmp_path_factory):
    """A `vigil review` process on a fresh database of each kind; a `suspect` review bank holding
    the test photos; the reviewed banks emptied so each database starts from the same banks."""
    data = tmp_path_factory.mktemp(f"review-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{data / 'review.db'}"
    else:
        import sqlalchemy as sa
        server = request.getfixturevalue("postgres")
        admin = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text("CREATE DATABASE browser"))
        admin.dispose()
        url = server.url.rsplit("/", 1)[0] + "/browser"
    s = cluster.settings
    bank = BankStore.from_url(s.redis, actor="pytest")
    bank.create_bank("suspect", "review", label="test", exist_ok=True)
    for name in ("suspect", "reviewed-bad", "reviewed-ok"):
        if bank.get_bank(name) is not None:
            bank.remove_entries(name, [e.entry_id for e in bank.iter_entries(name)])
            bank.update_bank(name, enabled=True)
    for photo in ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle"):
        add_media_file(bank, "suspect", write_photo(media_dir, f"suspect-{photo}", photo, ext=".png"), s)
    proc = ReviewProcess(s, url, data, free_port())
    proc.user_add("ann", "reviewer", PASSWORD)  # the CLI, as users make accounts
    proc.start()
    engine = create_engine(url)
    proc.db = sessionmaker(engine)
    from workers.review import auth
    auth.add_user(proc.db, "bob", "reviewer", PASSWORD)
    auth.add_user(proc.db, "lee", "lead", PASSWORD)
    proc.kind = request.param
    proc.bank = bank
    yield proc
    proc.stop()
    engine.dispose()
    for name in bank.banks():  # other modules share the cluster: leave no bank enabled behind
        bank.update_bank(name, enabled=False)


@pytest.fixture(scope="module")
def chromium_session(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("profile"))
    yield driver
    driver.quit()


@pytest.fixture
def browser(chromium_session, review):
    """One browser for the module (starting Chromium costs seconds), with no session per test."""
    chromium_session.get(review.url + "/login")
    chromium_session.delete_all_cookies()
    return chromium_session


def upload_case(review: ReviewProcess, cluster, media_dir: Path, photo: str, edit: str = "q80") -> int:
    """Upload an edited copy of a banked photo; the matcher says review; return its case id."""
    scale = 0.9 if review.kind == "sqlite" else 0.88  # other bytes, so another content_id, per database
    path = media_dir / f"{photo}-{review.kind}-{edit}.jpg"
    path.write_bytes(transforms.encode(transforms.resize(cluster_photo(photo), scale), ".jpg", 80))
    (_, d), = submit_and_wait(cluster.settings, [path]).values()
    assert d["decision"] == "review" and d["media_uri"] == path.resolve().as_uri(), d
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with review.db() as s:
            case_id = s.scalar(select(Case.id).where(Case.content_id == d["content_id"]))
        if case_id:
            return case_id
        time.sleep(0.2)
    raise AssertionError(f"no case for {d['content_id']}; log:\n{review.log_path.read_text()[-2000:]}")


def cluster_photo(name: str) -> np.ndarray:
    from workers.stack import samples
    return samples.photo(name)


def login(driver, review: ReviewProcess, name: str) -> None:
    driver.get(review.url + "/")
    assert "Log in" in driver.page_source  # no session: the login page
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    click(driver, By.ID, "login-button")
    assert driver.find_element(By.ID, "queue")


def click(driver, by: str, value: str) -> None:
    """Click a form's button and wait for the page it leads to (a click does not wait)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.__before_click = true")
    driver.find_element(by, value).click()
    WebDriverWait(driver, 15, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script("return window.__before_click === undefined && document.readyState === 'complete'"))


def claim(driver, case_id: int) -> None:
    click(driver, By.CSS_SELECTOR, f"#case-{case_id} button.claim")


def preview_pixels(driver) -> np.ndarray:
    """The preview exactly as the browser received it (fetched with the browser's session)."""
    src = driver.find_element(By.ID, "preview").get_attribute("src")
    b64 = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.arrayBuffer()).then(buf => {
            let s = ''; const b = new Uint8Array(buf);
            for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
            done(btoa(s));
        });""", src)
    return cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)


def sharpness(bgr: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def first_outcome(cluster, media_dir: Path, photo: str, tag: str, want: str, timeout: float = 30) -> dict:
    """Upload fresh copies until one is decided `want` (the bank change reaches the matcher within
    a second or so); the decision."""
    deadline, i = time.monotonic() + timeout, 0
    while True:
        i += 1
        path = media_dir / f"{photo}-{tag}-copy{i}.png"
        path.write_bytes(transforms.encode(transforms.resize(cluster_photo(photo), 0.5 + i / 100), ".png"))
        (_, d), = submit_and_wait(cluster.settings, [path]).values()
        if d["decision"] == want or time.monotonic() > deadline:
            return d


def actions_for(cluster, review: ReviewProcess, case_id: int, want: int = 1, timeout: float = 20) -> list[dict]:
    """This database's case's messages on moderation.actions (case ids restart per database):
    read from the start until `want` are found, then a moment more so an extra one shows too."""
    with review.db() as s:
        content_id = s.get(Case, case_id).content_id
    w = OutcomeWatcher(cluster.settings, watch=(topics.ACTIONS,), from_beginning=True)
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _t, m in w.messages(0.5):
            if (m.get("case_id"), m.get("content_id")) == (case_id, content_id):
                out.append(m)
        if len(out) >= want:
            out += [m for _t, m in w.messages(0.5) if (m.get("case_id"), m.get("content_id")) == (case_id, content_id)]
            break
    w.close()
    return out


def test_confirm_in_the_browser_blocks_every_later_copy(review, cluster, media_dir, browser):
    case_id = upload_case(review, cluster, media_dir, "astronaut")
    login(browser, review, "ann")
    assert browser.find_element(By.ID, f"case-{case_id}")
    if review.kind == "sqlite":
        SHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SHOTS / "queue.png"))
    claim(browser, case_id)
    assert f"Case #{case_id}" in browser.page_source
    blurred = preview_pixels(browser)
    b, g, r = cv2.split(blurred.astype(int))
    assert max(np.abs(b - g).max(), np.abs(g - r).max()) <= 8, "the default preview is greyscale"
    if review.kind == "sqlite":
        browser.save_screenshot(str(SHOTS / "case.png"))
    click(browser, By.ID, "reveal")
    revealed = preview_pixels(browser)
    b, g, r = cv2.split(revealed.astype(int))
    assert np.abs(b - r).mean() > 10, "revealed: in colour"
    assert sharpness(revealed) > 10 * sharpness(blurred), "the default preview is blurred"
    with review.db() as s:
        assert s.scalar(select(Audit.id).where(Audit.what == "reveal", Audit.case_id == case_id, Audit.actor == "ann"))
    Select(browser.find_element(By.ID, "label")).select_by_visible_text("csam")
    click(browser, By.ID, "confirm")
    assert "confirm recorded" in browser.find_element(By.ID, "message").text

    d = first_outcome(cluster, media_dir, "astronaut", review.kind, "block")
    assert d["decision"] == "block", d
    assert any(m["bank"] == "reviewed-bad" and m["label"] == "csam" for m in d["matches"]), d["matches"]
    msgs = actions_for(cluster, review, case_id)
    assert [(m["action"], m["label"], m["reviewer"], m["bank"]) for m in msgs] == [("block", "csam", "ann", "reviewed-bad")]
    entry = BankStore.from_url(cluster.settings.redis).get_entry("reviewed-bad", msgs[0]["entry_id"])
    assert f"review case {case_id}" in entry.note


def test_overturn_allows_copies_with_the_allowlist_in_evidence(review, cluster, media_dir, browser):
    case_id = upload_case(review, cluster, media_dir, "coffee")
    login(browser, review, "ann")
    claim(browser, case_id)
    click(browser, By.ID, "overturn")
    assert "overturn recorded" in browser.find_element(By.ID, "message").text
    d = first_outcome(cluster, media_dir, "coffee", review.kind, "allow")
    assert d["decision"] == "allow", d
    assert d["matches"] and {m["bank"] for m in d["matches"]} == {"reviewed-ok"}, d["matches"]
    msgs = actions_for(cluster, review, case_id)
    assert [(m["action"], m["label"], m["bank"]) for m in msgs] == [("allow", None, "reviewed-ok")]


def test_a_second_reviewer_cannot_claim_a_held_case(review, cluster, media_dir, browser, tmp_path):
    case_id = upload_case(review, cluster, media_dir, "chelsea")
    login(browser, review, "ann")
    claim(browser, case_id)
    assert browser.find_element(By.ID, "preview")
    other = chromium(tmp_path / "bob-profile")
    try:
        login(other, review, "bob")
        claim(other, case_id)
        assert "held by another reviewer" in other.find_element(By.ID, "error").text
        other.get(f"{review.url}/cases/{case_id}")  # nor see its media
        assert "Claim the case first" in other.find_element(By.ID, "error").text
        status = other.execute_script("return fetch(arguments[0]).then(r => r.status)",
                                      f"{review.url}/cases/{case_id}/preview.jpg")
        assert status == 403
    finally:
        other.quit()
    with review.db() as s:
        assert s.get(Case, case_id).lease_owner == "ann"


def test_no_session_gets_the_login_page_and_a_forged_form_is_refused(review, cluster, media_dir, browser):
    case_id = upload_case(review, cluster, media_dir, "rocket")
    browser.get(f"{review.url}/cases/{case_id}")
    assert browser.current_url.endswith("/login") and "Log in" in browser.page_source
    login(browser, review, "ann")
    claim(browser, case_id)
    browser.execute_script("""
        const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
        for (const [k, v] of [['verdict', 'overturn']]) {
            const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }
        document.body.appendChild(f); f.submit();""", f"/cases/{case_id}/verdict")
    time.sleep(0.5)
    assert "CSRF" in browser.find_element(By.ID, "error").text
    with review.db() as s:
        assert s.get(Case, case_id).status == "open"
    assert actions_for(cluster, review, case_id, timeout=3) == []


def test_a_lead_reversal_disables_the_entry_its_verdict_made(review, cluster, media_dir, browser):
    case_id = upload_case(review, cluster, media_dir, "stereo_motorcycle")
    login(browser, review, "lee")
    claim(browser, case_id)
    Select(browser.find_element(By.ID, "label")).select_by_visible_text("terror")
    click(browser, By.ID, "confirm")
    assert first_outcome(cluster, media_dir, "stereo_motorcycle", f"{review.kind}-rev", "block")["decision"] == "block"
    browser.get(f"{review.url}/cases/{case_id}")
    click(browser, By.ID, "reverse")
    assert "reverse recorded" in browser.find_element(By.ID, "message").text
    d = first_outcome(cluster, media_dir, "stereo_motorcycle", f"{review.kind}-rev2", "review")
    assert d["decision"] == "review" and {m["bank"] for m in d["matches"]} == {"suspect"}, d
    msgs = actions_for(cluster, review, case_id, want=2)
    assert [m["action"] for m in msgs] == ["block", "revoke"]
    assert msgs[1]["reverses"] == msgs[0]["event_id"] and msgs[1]["entry_id"] == msgs[0]["entry_id"]
    assert review.bank.get_entry("reviewed-bad", msgs[0]["entry_id"]).disabled  # kept for audit, never matched
    with review.db() as s:
        assert s.get(Case, case_id).status == "open"  # back in the queue


def test_reports_are_matched_like_uploads_and_one_file_is_one_case(review, cluster, media_dir):
    """Reports of one file under three content ids are one case with a count and the match
    evidence; a report of an unrelated photo is a case without evidence; a malformed report is a
    dead letter from the review stage."""
    from confluent_kafka import Producer

    from workers.stream.kafka import producer_config

    reported = write_photo(media_dir, f"reported-{review.kind}", "chelsea", quality=75)
    other = write_photo(media_dir, f"reported-other-{review.kind}", "hubble_deep_field")
    p = Producer(producer_config(cluster.settings))
    watcher = OutcomeWatcher(cluster.settings, watch=(topics.DEAD_LETTER,))
    rid = f"{review.kind}-{time.time_ns()}"

    def report(n: int, content_id: str, path: Path) -> None:
        msg = {"schema_version": 1, "report_id": f"{rid}-{n}", "content_id": content_id, "media_uri": path.as_uri(),
               "reason": "looks like a known item", "reporter": f"user-{n}", "reported_at_ms": int(time.time() * 1000)}
        p.produce(topics.REPORTS, key=content_id.encode(), value=json.dumps(msg).encode())
    for n in range(6):
        report(n, f"{rid}-viral-{n % 3}", reported)
    report(6, f"{rid}-unrelated", other)
    report(6, f"{rid}-unrelated", other)  # the same report twice (a producer retry): counted once
    p.produce(topics.REPORTS, key=b"bad", value=json.dumps({"schema_version": 1, "report_id": rid}).encode())
    assert p.flush(30) == 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with review.db() as s:
            rows = s.scalars(select(Case).where(Case.content_id.like(f"{rid}-%"))).all()
            if sum(c.report_count for c in rows) == 7:
                break
        time.sleep(0.3)
    by_id = {c.content_id: c for c in rows}
    assert len(rows) == 2, by_id
    viral = next(c for c in rows if "viral" in c.content_id)
    assert (viral.count, viral.report_count, viral.priority_name, viral.decision) == (6, 6, "report", "review")
    assert {m["bank"] for m in viral.evidence} == {"suspect"}
    unrelated = by_id[f"{rid}-unrelated"]
    assert (unrelated.report_count, unrelated.evidence, unrelated.decision) == (1, [], "allow")
    dead = []
    for _t, m in watcher.messages(15):
        if m.get("stage") == "review" and json.loads(m["original"]["value"]).get("report_id") == rid:
            dead.append(m)
            break
    watcher.close()
    assert dead and dead[0]["code"] == "schema_invalid"


def test_a_verdict_replayed_after_a_crash_publishes_the_same_message_and_banks_once(review, cluster, media_dir):
    """The service applies a verdict; its `applied` mark is then lost (as if it crashed between
    the message and the mark); the running service replays it: the same event_id again, one entry."""
    from sqlalchemy import update

    from workers.review import cases, queue, verdicts
    from workers.review.db import Verdict
    from workers.settings import Settings

    path = write_photo(media_dir, f"replay-{review.kind}", "coffee", edit=lambda im: transforms.crop(im, 0.05))
    it = cases.Intake(f"decision:replay-{review.kind}-{time.time_ns()}", f"replay-{review.kind}-{time.time_ns()}",
                      "upload", "review", "review", path.as_uri(), "image", None, [], int(time.time() * 1000))
    case_id, _ = cases.store(review.db, it)
    assert queue.claim(review.db, case_id, "ann", "reviewer", 300)
    vid = verdicts.record(review.db, Settings(), case_id, "ann", "reviewer", "confirm", "other")

    def applied() -> bool:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with review.db() as s:
                if s.get(Verdict, vid).applied:
                    return True
            time.sleep(0.2)
        return False
    assert applied()
    with review.db.begin() as s:
        s.execute(update(Verdict).where(Verdict.id == vid).values(applied=False))
    assert applied()
    msgs = actions_for(cluster, review, case_id, want=2)
    assert len(msgs) == 2 and msgs[0] == msgs[1], msgs
    entries = [e for e in review.bank.iter_entries("reviewed-bad") if f"review case {case_id} " in (e.note or "")]
    assert len(entries) == 1 and entries[0].entry_id == msgs[0]["entry_id"]


def test_one_file_under_two_content_ids_is_one_case(review, cluster, media_dir):
    """Decisions carry no file hash; the service reads the file's SHA-256 from the media root, so the
    same bytes uploaded as two items are one case with a count of 2."""
    from workers.stream.client import UploadProducer, upload_event

    path = write_photo(media_dir, f"twice-{review.kind}", "rocket", quality=70)
    watcher, producer = OutcomeWatcher(cluster.settings), UploadProducer(cluster.settings)
    events = [upload_event(path, content_id=f"{review.kind}-item-{i}-{time.time_ns()}") for i in range(2)]
    for e in events:
        producer.submit(e)
    producer.flush()
    got = watcher.wait_for({e["event_id"] for e in events}, 60)
    watcher.close()
    assert [got[e["event_id"]][1]["decision"] for e in events] == ["review", "review"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with review.db() as s:
            rows = s.scalars(select(Case).where(Case.content_id.in_([e["content_id"] for e in events]))).all()
            if rows and rows[0].count == 2:
                break
        time.sleep(0.2)
    assert len(rows) == 1 and rows[0].count == 2 and rows[0].sha256, [(c.content_id, c.count) for c in rows]
