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
    for name in ("reviewed-bad", "reviewed-ok"):
        if bank.get_bank(name) is not None:
            bank.remove_entries(name, [e.entry_id for e in bank.iter_entries(name)])
    for photo in ("astronaut", "coffee", "chelsea", "rocket"):
        add_media_file(bank, "suspect", write_photo(media_dir, f"suspect-{photo}", photo, ext=".png"), s)
    proc = ReviewProcess(s, url, data, free_port())
    proc.user_add("ann", "reviewer", PASSWORD)
    proc.user_add("bob", "reviewer", PASSWORD)
    proc.start()
    engine = create_engine(url)
    proc.db = sessionmaker(engine)
    proc.kind = request.param
    yield proc
    proc.stop()
    engine.dispose()


@pytest.fixture
def browser(tmp_path):
    driver = chromium(tmp_path / "profile")
    yield driver
    driver.quit()


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
    driver.find_element(By.ID, "login-button").click()
    assert driver.find_element(By.ID, "queue")


def claim(driver, case_id: int) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#case-{case_id} button.claim").click()


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


def actions_for(cluster, review: ReviewProcess, case_id: int, timeout: float = 20) -> list[dict]:
    """This database's case's messages on moderation.actions (case ids restart per database)."""
    with review.db() as s:
        content_id = s.get(Case, case_id).content_id
    w = OutcomeWatcher(cluster.settings, watch=(topics.ACTIONS,), from_beginning=True)
    out = [m for _t, m in w.messages(timeout / 4) if (m.get("case_id"), m.get("content_id")) == (case_id, content_id)]
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
    browser.find_element(By.ID, "reveal").click()
    revealed = preview_pixels(browser)
    b, g, r = cv2.split(revealed.astype(int))
    assert np.abs(b - r).mean() > 10, "revealed: in colour"
    assert sharpness(revealed) > 10 * sharpness(blurred), "the default preview is blurred"
    with review.db() as s:
        assert s.scalar(select(Audit.id).where(Audit.what == "reveal", Audit.case_id == case_id, Audit.actor == "ann"))
    Select(browser.find_element(By.ID, "label")).select_by_visible_text("csam")
    browser.find_element(By.ID, "confirm").click()
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
    browser.find_element(By.ID, "overturn").click()
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
    assert actions_for(cluster, review, case_id, timeout=4) == []
