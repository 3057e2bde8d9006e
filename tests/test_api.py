"""vigil's own HTTP API (/v1) and the API's security, over a real `vigil api` process (uvicorn)
with the real embedded broker, Redis and workers: scopes, rate limits, bad input (missing fields,
wrong types, huge bodies, bombs, SSRF URLs), uploads through the pipeline, and bank changes seen
by lookups in under a second."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import psutil
import pytest

from tests.api_helpers import MediaServer, start_api, stop_api
from tests.pipeline_helpers import disable_banks_made_since
from tests.test_hostile import png_bomb
from workers.api.tokens import TokenStore
from workers.bank.store import BankStore
from workers.stack import samples, transforms

pytestmark = pytest.mark.integration
MAX_BODY = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def env(cluster, media_dir, tmp_path_factory):
    web = tmp_path_factory.mktemp("web")
    (web / "chelsea.jpg").write_bytes(transforms.encode(samples.photo("chelsea"), ".jpg", 90))
    (web / "bomb.png").write_bytes(png_bomb(20_000, 20_000))
    server = MediaServer(web)
    r = BankStore.from_url(cluster.settings.redis).r
    banks_before = set(BankStore.from_url(cluster.settings.redis).banks())
    tokens = TokenStore(r)
    tag = uuid.uuid4().hex[:6]
    made = {k: tokens.create(f"{k}-{tag}", scopes, rate, burst)[0] for k, scopes, rate, burst in (
        ("admin", ["lookup", "submit", "bank:read", "bank:write"], None, None),
        ("lookup", ["lookup"], None, None),
        ("reader", ["bank:read"], None, None),
        ("slow", ["lookup"], 0.5, 2))}
    api = start_api(cluster.settings.redis, tmp_path_factory.mktemp("api"), kafka=cluster.settings.kafka,
                    media_root=media_dir,
                    env={"VIGIL_FETCH_ALLOWED_HOSTS": os.pathsep.join(["127.0.0.1", "127.0.0.2",
                                                                       "169.254.169.254"]),
                         "VIGIL_FETCH_PRIVATE_CIDRS": "127.0.0.1/32", "VIGIL_API_MAX_BODY_BYTES": str(MAX_BODY),
                         "VIGIL_MAX_MEDIA_BYTES": str(3 * 1024 * 1024),
                         "VIGIL_API_RATE_PER_S": "10000", "VIGIL_API_BURST": "10000"})
    yield {"api": api, "cluster": cluster, "tokens": made, "tag": tag, "bomb": (web / "bomb.png").read_bytes(), "web": server.url, "store": BankStore.from_url(cluster.settings.redis),
           "admin": api.client(made["admin"])}
    stop_api(api)
    disable_banks_made_since(BankStore.from_url(cluster.settings.redis), banks_before)
    server.close()


def _bank(env, action: str = "block") -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    r = env["admin"].post("/v1/banks", json={"name": name, "action": action})
    assert r.status_code == 201, r.text
    return name


def _problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert {"type", "title", "status", "detail"} <= set(body) and body["status"] == status
    assert "Traceback" not in r.text
    return body


def test_lookup_file_url_and_hashes_give_the_matchers_decision(env):
    admin, bank = env["admin"], _bank(env)
    photo = samples.photo("astronaut")
    added = admin.post(f"/v1/banks/{bank}/entries", files={"file": ("a.png", transforms.encode(photo, ".png"))})
    assert added.status_code == 201, added.text
    version = added.json()["version"]
    copy = transforms.encode(transforms.resize(photo, 0.5), ".jpg", 70)
    deadline = time.monotonic() + 1.0
    while (d := admin.post("/v1/lookup", files={"file": ("copy.jpg", copy)}).json())["bank_version"] < version:
        assert time.monotonic() < deadline, "bank change not seen by the API's lookups within 1 s"
    assert d["decision"] == "block" and d["source"] == "api" and d["media_type"] == "image"
    top = d["matches"][0]
    assert top["bank"] == bank and top["entry_id"] == added.json()["entry_id"]
    assert {"signal", "distance", "threshold", "action"} <= set(top) and top["distance"] <= top["threshold"]
    assert {"decode", "hash", "match", "total"} <= set(d["latency_ms"])
    by_hash = admin.post("/v1/lookup", json={"signals": [{"signal": "pdq", "value": added.json()["signals"]["pdq"]}]})
    assert by_hash.json()["decision"] == "block" and by_hash.json()["matches"][0]["distance"] == 0
    by_url = admin.post("/v1/lookup", json={"url": f"{env['web']}/chelsea.jpg", "content_id": "c-1",
                                            "metadata": {"k": "v"}}).json()
    assert by_url["decision"] == "allow" and by_url["content_id"] == "c-1" and by_url["metadata"] == {"k": "v"}
    assert "fetch" in by_url["latency_ms"]
    import topics

    topics.validate("decision", {k: v for k, v in d.items()})  # exactly the moderation.decisions contract


def test_bank_change_is_seen_by_lookups_in_under_a_second(env):
    admin, bank = env["admin"], _bank(env)
    pdq = uuid.uuid4().hex * 2
    lookup = {"signal": pdq, "signal_type": "pdq", "banks": bank}
    assert admin.get("/m/raw_lookup", params=lookup).json()["matches"] == []
    t0 = time.monotonic()
    path = f"/v1/banks/{bank}/import"
    r = admin.post(path, params={"format": "local"}, content=f"pdq {pdq}\n".encode())
    assert r.status_code == 200 and r.json()["added"] == 1, r.text
    while not admin.get("/m/raw_lookup", params=lookup).json()["matches"]:
        assert time.monotonic() - t0 < 1.0, "import not seen within 1 s"
        time.sleep(0.01)
    seen_add = time.monotonic() - t0
    entry = next(iter(env["store"].iter_entries(bank))).entry_id
    t0 = time.monotonic()
    assert admin.post(f"/v1/banks/{bank}/disable", json={"entry_ids": [entry]}).status_code == 200
    while admin.get("/m/raw_lookup", params=lookup).json()["matches"]:
        assert time.monotonic() - t0 < 1.0, "disable not seen within 1 s"
        time.sleep(0.01)
    print(f"import seen after {seen_add * 1000:.0f} ms, disable after {(time.monotonic() - t0) * 1000:.0f} ms")


def test_bank_admin_verbs_and_audit(env):
    admin, bank = env["admin"], _bank(env, "review")
    assert admin.post("/v1/banks", json={"name": bank, "action": "review"}).status_code == 400  # exists
    assert admin.post("/v1/banks", json={"name": bank, "action": "review", "exist_ok": True}).status_code == 201
    pdqs = [uuid.uuid4().hex * 2 for _ in range(3)]
    r = admin.post(f"/v1/banks/{bank}/import", params={"format": "local"},
                   content="".join(f"pdq {p}\n" for p in pdqs).encode())
    assert r.json()["added"] == 3
    bad = admin.post(f"/v1/banks/{bank}/import", params={"format": "local"}, content=b"pdq nothex\n")
    assert _problem(bad, 400)["report"]["invalid_count"] == 1
    stats = admin.get(f"/v1/banks/{bank}").json()
    assert stats["entries"] == 3 and stats["action"] == "review"
    exported = admin.get(f"/v1/banks/{bank}/export").text.split()
    assert sorted(p for p in exported if len(p) == 64) == sorted(pdqs)
    assert "signal,hash" in admin.get(f"/v1/banks/{bank}/export", params={"format": "csv"}).text
    upd = admin.patch(f"/v1/banks/{bank}", json={"action": "block", "thresholds": {"pdq": 20}}, params={"wait_s": 30})
    assert upd.json()["bank"]["action"] == "block" and upd.json()["bank"]["thresholds"] == {"pdq": 20}
    prop = upd.json()["propagation"]  # asked to wait: every live matcher has applied the change
    assert prop["ok"] and prop["behind"] == [] and prop["matchers"], prop
    assert min(prop["matchers"].values()) >= upd.json()["version"]
    _problem(admin.patch(f"/v1/banks/{bank}", json={"label": "x"}, params={"wait_s": -1}), 400)
    _problem(admin.patch(f"/v1/banks/{bank}", json={}), 400)
    _problem(admin.patch(f"/v1/banks/{bank}", json={"thresholds": {"nope": 1}}), 400)
    ids = [e.entry_id for e in env["store"].iter_entries(bank)]
    assert admin.post(f"/v1/banks/{bank}/enable", json={"entry_ids": ids[:1]}).json()["disabled"] is False
    assert admin.post(f"/v1/banks/{bank}/remove", json={"entry_ids": ids[:1]}).status_code == 200
    _problem(admin.post(f"/v1/banks/{bank}/remove", json={"entry_ids": ids[:1]}), 404)
    assert any(b["name"] == bank for b in admin.get("/v1/banks").json()["banks"])
    audit = env["store"].audit(count=20)
    mine = [a for a in audit if a["bank"] == bank]
    assert mine and {a["actor"] for a in mine} == {f"api:admin-{env['tag']}"}  # the calling token
    assert admin.delete(f"/v1/banks/{bank}").status_code == 200
    _problem(admin.get(f"/v1/banks/{bank}"), 404)


def test_scopes_tokens_and_rate_limit(env):
    api, t = env["api"], env["tokens"]
    with api.client() as anon:
        body = _problem(anon.get("/m/raw_lookup", params={"signal": "0" * 64, "signal_type": "pdq"}), 401)
        assert "Bearer" in body["detail"]
        assert anon.get("/status").status_code == 200 and anon.get("/metrics").status_code == 200
    with api.client("vgl_not-a-token") as bad:
        _problem(bad.get("/c/banks"), 401)
    with api.client(t["lookup"]) as lookup:
        assert lookup.get("/m/raw_lookup", params={"signal": "0" * 64, "signal_type": "pdq"}).status_code == 200
        _problem(lookup.get("/c/banks"), 403)
        _problem(lookup.post("/v1/lookup", params={"publish": "true"}, json={"signals": [
            {"signal": "md5", "value": "0" * 32}]}), 403)  # publishing needs submit
    with api.client(t["reader"]) as reader:
        assert reader.get("/c/banks").status_code == 200
        _problem(reader.post("/c/banks", json={"name": "NOPE"}), 403)
        _problem(reader.post("/v1/banks", json={"name": "nope", "action": "block"}), 403)
    with api.client(t["slow"]) as slow:
        q = {"signal": "0" * 64, "signal_type": "pdq"}
        codes = [slow.get("/m/raw_lookup", params=q) for _ in range(3)]
        assert [c.status_code for c in codes[:2]] == [200, 200]
        body = _problem(codes[2], 429)
        assert int(codes[2].headers["Retry-After"]) >= 1 and "rate limit" in body["detail"]
        time.sleep(2.1)  # 0.5 token/s: one more after 2 s
        assert slow.get("/m/raw_lookup", params=q).status_code == 200


def test_bad_inputs_answer_4xx_problems_and_the_server_keeps_serving(env):
    admin, web = env["admin"], env["web"]
    pid = env["api"].proc.pid
    _problem(admin.get("/m/raw_lookup", params={"signal_type": "pdq"}), 400)  # missing field
    _problem(admin.get("/m/raw_lookup", params={"signal": "0" * 64, "signal_type": "pdq",
                                                "include_distance": "maybe"}), 400)  # wrong type
    _problem(admin.get("/m/raw_lookup", params={"signal": "xyz", "signal_type": "pdq"}), 400)
    _problem(admin.get("/m/raw_lookup", params={"signal": "0" * 64, "signal_type": "tmk"}), 400)
    _problem(admin.post("/v1/lookup", json={"signals": "pdq"}), 400)
    _problem(admin.post("/v1/lookup", json={}), 400)
    _problem(admin.post("/v1/lookup", content=b"{not json", headers={"content-type": "application/json"}), 400)
    _problem(admin.post("/v1/lookup", content=b"x", headers={"content-type": "text/plain"}), 415)
    _problem(admin.get("/v1/decisions/not-a-uuid"), 400)
    _problem(admin.post("/v1/banks", json={"name": 3, "action": "explode"}), 400)
    # huge bodies: declared, and streamed without a length
    _problem(admin.post("/v1/lookup", files={"file": ("big.jpg", b"\xff" * (MAX_BODY + 1))}), 413)

    def chunks():
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"\0" * 65536
    r = admin.post(f"/v1/banks/{_bank(env)}/import", params={"format": "local"}, content=chunks())
    assert r.status_code == 413
    _problem(admin.post("/v1/lookup", files={"file": ("big.jpg", b"\xff\xd8" + b"\0" * (3 * 1024 * 1024))}), 413)
    # bombs and junk: refused by the decoder's limits, not decoded
    rss0 = psutil.Process(pid).memory_info().rss
    bomb = env["bomb"]
    assert _problem(admin.post("/v1/lookup", files={"file": ("bomb.png", bomb)}), 413)["code"] == "image_too_large"
    assert _problem(admin.get("/h/hash", params={"url": f"{web}/bomb.png"}), 413)["code"] == "image_too_large"
    assert psutil.Process(pid).memory_info().rss - rss0 < 150 * 1024 * 1024
    _problem(admin.post("/v1/lookup", files={"file": ("junk.jpg", os.urandom(5000))}), 400)
    _problem(admin.post("/v1/lookup", files={"file": ("empty.jpg", b"")}), 400)
    # SSRF: scheme, allowlist, private addresses by literal, by DNS name, and on a redirect
    port = web.rsplit(":", 1)[1]
    for url, code in (("file:///etc/passwd", "host_not_allowed"), ("gopher://127.0.0.1/", "host_not_allowed"),
                      ("http://example.org/a.jpg", "host_not_allowed"),
                      ("http://169.254.169.254/latest/meta-data/", "private_address"),
                      (f"http://127.0.0.2:{port}/chelsea.jpg", "private_address"),
                      (f"http://[::1]:{port}/chelsea.jpg", "host_not_allowed"),
                      (f"{web}/redirect?to=http://127.0.0.2:{port}/chelsea.jpg", "private_address"),
                      (f"{web}/redirect?to=http://example.org/x.jpg", "host_not_allowed"),
                      (f"{web}/missing.jpg", "fetch_failed"),
                      ("http://user:pw@127.0.0.1/x", "host_not_allowed")):
        r = admin.post("/v1/lookup", json={"url": url})
        assert r.status_code in (400, 502) and r.json().get("code") == code, (url, r.text)
    assert admin.get("/h/hash", params={"url": f"{web}/redirect?to={web}/chelsea.jpg"}).status_code == 200
    # still serving, same process, and no temp file left open or behind
    assert env["api"].proc.poll() is None and admin.get("/status").text == "I-AM-ALIVE"
    fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    spooled = [f for f in fds if "(deleted)" in f or "vigil-api-" in f]
    assert spooled == [], spooled


def test_uploads_go_through_the_pipeline_and_decisions_long_poll(env, media_dir):
    admin, bank = env["admin"], _bank(env)
    photo = samples.photo("rocket")
    version = admin.post(f"/v1/banks/{bank}/entries",
                         files={"file": ("r.png", transforms.encode(photo, ".png"))}).json()["version"]
    _matchers_at(env["cluster"], version)
    copy = transforms.encode(transforms.resize(photo, 0.6), ".jpg", 75)
    r = admin.post("/v1/uploads", files={"file": ("copy.jpg", copy)}, data={"json": '{"metadata": {"t": 1}}'})
    assert r.status_code == 202, r.text
    eid = r.json()["event_id"]
    spooled = media_dir / "vigil-api-uploads" / f"{eid}.jpg"
    d = admin.get(f"/v1/decisions/{eid}", params={"wait_ms": 30000})
    assert d.status_code == 200, d.text
    assert d.json()["decision"] == "block" and bank in {m["bank"] for m in d.json()["matches"]}
    assert d.json()["metadata"] == {"t": 1} and d.json()["source"] == "upload"
    deadline = time.monotonic() + 2
    while spooled.exists():
        assert time.monotonic() < deadline, "the spooled upload was not removed after its decision"
        time.sleep(0.05)
    by_url = admin.post("/v1/uploads", json={"url": f"{env['web']}/chelsea.jpg"}).json()
    assert admin.get(f"/v1/decisions/{by_url['event_id']}", params={"wait_ms": 30000}).json()["decision"] == "allow"
    _problem(admin.post("/v1/uploads", json={"media_uri": "file:///etc/passwd"}), 400)
    _problem(admin.get(f"/v1/decisions/{uuid.uuid4()}", params={"wait_ms": 100}), 404)
    # publish=true: the API's decision goes on moderation.decisions with source "api"
    published = admin.post("/v1/lookup", params={"publish": "true"}, files={"file": ("copy.jpg", copy)})
    assert published.headers["X-Vigil-Published"] == "true"
    pub = published.json()
    seen = admin.get(f"/v1/decisions/{pub['event_id']}", params={"wait_ms": 10000}).json()
    assert seen["source"] == "api" and seen["decision"] == "block"


def _matchers_at(cluster, version: int, timeout: float = 20.0) -> None:
    """Every matcher process has applied bank `version` (its vigil_bank_version gauge)."""
    deadline = time.monotonic() + timeout
    for w in (w for w in cluster.workers if w.kind == "matcher"):
        while True:
            text = httpx.get(w.metrics_url, timeout=5).text
            seen = next((float(line.split()[1]) for line in text.splitlines()
                         if line.startswith("vigil_bank_version ")), 0)
            if seen >= version:
                break
            assert time.monotonic() < deadline, f"{w.name} still at bank version {seen} < {version}"
            time.sleep(0.1)


def test_openapi_and_docs_come_from_the_code(env):
    admin = env["admin"]
    spec = admin.get("/openapi.json").json()
    for path in ("/h/hash", "/m/raw_lookup", "/m/lookup", "/m/index/status", "/c/banks", "/c/bank/{bank_name}",
                 "/c/bank/{bank_name}/content", "/c/bank/{bank_name}/content/{content}", "/c/bank/{bank_name}/signal",
                 "/status", "/v1/lookup", "/v1/uploads", "/v1/decisions/{event_id}", "/v1/banks"):
        assert path in spec["paths"], path
    assert admin.get("/docs").status_code == 200
    health = admin.get("/v1/health").json()
    assert health["ready"] is True and health["checks"] == {"bank_loaded": True, "bank_fresh": True}
    with env["api"].client() as anon:  # the probes need no token
        assert anon.get("/readyz").json()["ready"] is True and anon.get("/healthz").json() == {"alive": True}
        assert "vigil_api_requests_total" in anon.get("/metrics").text


def test_open_mode_and_the_bind_rule(cluster, tmp_path):
    """No token in this Redis database: open on loopback; a public bind is refused unless --insecure."""
    url = cluster.settings.redis.rsplit("/", 1)[0] + "/7"
    BankStore.from_url(url).r.delete("vigil:api:tokens")
    api = start_api(url, tmp_path)
    try:
        with api.client() as c:
            assert c.get("/c/banks").status_code == 200
    finally:
        stop_api(api)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    r = subprocess.run([sys.executable, "-m", "workers.cli", "api", "--redis", url, "--host", "0.0.0.0",
                        "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "refusing to serve 0.0.0.0" in r.stderr and "--insecure" in r.stderr
    out = subprocess.run([sys.executable, "-m", "workers.cli", "api", "token", "create", "--redis", url,
                          "--name", "cli", "--scope", "lookup,bank:read", "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import json

    made = json.loads(out.stdout)
    assert made["token"].startswith("vgl_") and made["scopes"] == ["lookup", "bank:read"]
    stored = BankStore.from_url(url).r.hgetall("vigil:api:tokens")
    assert made["token"] not in str(stored)  # stored hashed
    bad = subprocess.run([sys.executable, "-m", "workers.cli", "api", "token", "create", "--redis", url,
                          "--name", "x", "--scope", "everything"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "scopes are lookup, submit, bank:read, bank:write" in bad.stderr

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "workers.cli", "api", "token", *args, "--redis", url], env=env,
                              capture_output=True, text=True, timeout=60)
    listed = json.loads(cli("list", "--json").stdout)
    assert [t["name"] for t in listed] == ["cli"] and "token" not in listed[0]
    assert cli("revoke", "cli").returncode == 0 and cli("revoke", "cli").returncode == 2
    assert json.loads(cli("list", "--json").stdout) == []
    BankStore.from_url(url).r.delete("vigil:api:tokens")
