"""Security configuration on real servers: the Redis ACL users of deploy/redis/acl.conf against the
real bank, matcher and hasher code, TLS with certificates made here by openssl, requirepass, and no
media on the dead-letter topic."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis
from confluent_kafka import Message

import topics
from workers.bank import propagation
from workers.bank.model import Entry, entry_id_for_hash
from workers.bank.store import VERSION, BankStore, chunk_key, entries_key
from workers.uploads.decisions import CACHE_KEY, DecisionCache
from workers.uploads.hasher import EARLY_BLOCK_KEY, process_upload
from workers.live.hasher import LiveHasher
from workers.index.matching import BankIndex
from workers.stream.messages import Source
from workers.settings import Settings
from workers.signals import SignalValue
from workers.stack.embedded import free_port, redis_server_binary, spawn, stop, wait_for_port

ACL_TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "redis" / "acl.conf"
PASSWORDS = {"BANK-ADMIN": "admin-pw", "MATCHER": "matcher-pw", "HASHER": "hasher-pw", "API": "api-pw"}
KEY_PASSWORD = "key-pw"
PDQ = "a5" * 32


# -- certificates and servers ------------------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def _sign(d: Path, ca: str, name: str, san: str, *key_opts: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", *(key_opts or ("-nodes",)), "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server cert for localhost, a client cert whose key is encrypted, and a stranger CA."""
    d = tmp_path_factory.mktemp("certs")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _sign(d, "ca", "server", "DNS:localhost,IP:127.0.0.1")
    _sign(d, "ca", "client", "DNS:vigil-matcher", "-passout", f"pass:{KEY_PASSWORD}")
    _openssl("rsa", "-in", "client.key", "-passin", f"pass:{KEY_PASSWORD}", "-out", "client-plain.key", cwd=d)
    return d


def _redis7() -> str:
    binary = redis_server_binary()
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    major = int(re.search(r"v=(\d+)\.", out).group(1))  # type: ignore[union-attr]
    if major < 7:
        pytest.fail(f"deploy/redis/acl.conf needs redis-server >= 7 (read-only key patterns); {binary} is "
                    f"{out.split()[2]}: install Debian's redis-server (apt-get install redis-server)")
    return binary


def render_acl(template: str, passwords: dict[str, str]) -> str:
    """The template with each placeholder replaced by the SHA-256 of that user's password."""
    return re.sub(r"#REPLACE-WITH-SHA256-OF-([A-Z-]+)-PASSWORD",
                  lambda m: "#" + hashlib.sha256(passwords[m.group(1)].encode()).hexdigest(), template)


class Server:
    def __init__(self, tmp: Path, *args: str, binary: str | None = None):
        self.port, self.tls_port = free_port(), 0
        argv = [binary or _redis7(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(tmp), "--save", "",
                "--appendonly", "no", "--daemonize", "no", *args]
        self.proc = spawn(argv, log_path=tmp / "redis.log")
        try:
            wait_for_port(self.port, 30, self.proc)
        except Exception:
            raise RuntimeError((tmp / "redis.log").read_text()[-2000:]) from None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user or ''}:{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[Server]:
    """redis-server 7 loading deploy/redis/acl.conf, plain and TLS (client certificates required)."""
    tmp = tmp_path_factory.mktemp("acl-redis")
    (tmp / "acl.conf").write_text(render_acl(ACL_TEMPLATE.read_text(), PASSWORDS))
    tls_port = free_port()
    server = Server(tmp, "--aclfile", str(tmp / "acl.conf"), "--tls-port", str(tls_port),
                    "--tls-cert-file", str(certs / "server.pem"), "--tls-key-file", str(certs / "server.key"),
                    "--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-auth-clients", "yes")
    server.tls_port = tls_port
    wait_for_port(tls_port, 10, server.proc)
    yield server
    stop(server.proc)


def url_for(server: Server, role: str) -> str:
    return server.url(f"vigil-{role.lower()}", PASSWORDS[role])


# -- Redis: ACL users against the real code ------------------------------------------------------
def _entry(bank: str, value: str = PDQ) -> Entry:
    return Entry(entry_id_for_hash("pdq", value), bank, (SignalValue("pdq", value, 100),))


@pytest.fixture(scope="module")
def bank(acl_server: Server) -> BankStore:
    """The bank CLI's user creates a bank and adds entries through BankStore."""
    admin = BankStore.from_url(url_for(acl_server, "BANK-ADMIN"), actor="pytest")
    admin.create_bank("csam", "block", label="csam")
    admin.add_entries("csam", [_entry("csam"), _entry("csam", "5a" * 32)])
    assert admin.entry_count("csam") == 2 and admin.version() == 2
    assert admin.r.memory_usage(entries_key("csam")) and admin.r.info("memory")["used_memory"]  # bank stats
    return admin


def test_unauthenticated_clients_are_refused(acl_server: Server, bank: BankStore):
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(acl_server.url()).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(acl_server.url("vigil-matcher", "wrong")).ping()


def test_bank_admin_cannot_leave_vigil_or_flush(acl_server: Server, bank: BankStore):
    for command in (("SET", "other", "1"), ("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            bank.r.execute_command(*command)


def test_matcher_loads_and_follows_the_bank_but_cannot_change_it(acl_server: Server, bank: BankStore):
    store = BankStore.from_url(url_for(acl_server, "MATCHER"), socket_timeout=5, health_check_interval=10)
    index = BankIndex(Settings())
    index.load(store)
    assert index.version == bank.version() and index.counts()["pdq"] == 2
    assert store.has_codes("csam")
    assert sum(len(ids) for ids, _codes, _frames in store.iter_codes("csam", "pdq")) == 2
    bank.add_entries("csam", [_entry("csam", "3c" * 32)])
    changes = store.read_changes(index.stream_id, block_ms=1000)
    index.apply(changes)
    assert index.version == bank.version() and index.counts()["pdq"] == 3
    assert store.first_change_version() == 1
    bank.add_entries("csam", [_entry("csam", f"{i:064x}") for i in range(1, 202)])  # an import batch
    index.apply(store.read_changes(index.stream_id, packed=True))  # read as packed codes (HMGET)
    assert index.version == bank.version() and index.counts()["pdq"] == 204
    propagation.beat(store.r, propagation.MatcherBeat("m1", index.version, bank.version(), True, False,
                                                      int(time.time() * 1000)))
    assert [(m.name, m.version) for m in propagation.live_matchers(bank.r)] == [("m1", index.version)]
    propagation.forget(store.r, "m1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        propagation.live_matchers(store.r)  # it writes its heartbeat; only bank writers read them
    bank.write_snapshot("csam")  # the admin writes snapshots; the matcher loads from them
    assert bank.snapshot_metas("csam")["pdq"].entries == 204
    snap_index = BankIndex(Settings())
    snap_index.load(store)
    assert snap_index.counts()["pdq"] == 204 and store.snapshot_metas("csam")["pdq"].entries == 204
    meta = store.snapshot_metas("csam")["pdq"]
    assert sum(len(b.entries) for b in store.iter_snapshot_blocks("csam", "pdq", meta)) == 204
    with pytest.raises(redis.exceptions.NoPermissionError):
        store.write_snapshot("csam")
    with pytest.raises(redis.exceptions.NoPermissionError):
        store.r.unlink(chunk_key("csam", "pdq", meta.gen, 0))
    with pytest.raises(redis.exceptions.NoPermissionError):
        store.create_bank("evil", "allow")
    with pytest.raises(redis.exceptions.NoPermissionError):
        store.add_entries("csam", [_entry("csam", "00" * 32)])
    with pytest.raises(redis.exceptions.NoPermissionError):
        store.r.set(VERSION, "0")
    with pytest.raises(redis.exceptions.NoPermissionError):
        store.r.hset(entries_key("csam"), "x", "{}")
    with pytest.raises(redis.exceptions.NoPermissionError):
        store.audit()  # who changed the bank is for reviewers, not workers
    assert bank.entry_count("csam") == 204 and bank.get_bank("evil") is None


def test_api_user_follows_the_bank_and_reads_tokens_but_writes_nothing(acl_server: Server, bank: BankStore):
    """The HTTP API reads through vigil-api; its bank:write calls go through VIGIL_API_BANK_WRITE_REDIS."""
    from workers.api.tokens import TokenStore

    token, _ = TokenStore(bank.r).create("acl-test", ["lookup"])  # `vigil api token create` as bank admin
    store = BankStore.from_url(url_for(acl_server, "API"), socket_timeout=5)
    index = BankIndex(Settings())
    index.load(store)
    assert index.version == bank.version() and index.counts()["pdq"] >= 2
    assert store.read_changes(index.stream_id, block_ms=10) == []
    assert TokenStore(store.r).find(token).scopes == ("lookup",) and store.audit(count=1)
    with pytest.raises(redis.exceptions.NoPermissionError):
        store.create_bank("evil", "allow")
    with pytest.raises(redis.exceptions.NoPermissionError):
        TokenStore(store.r).create("evil", ["bank:write"])
    with pytest.raises(redis.exceptions.NoPermissionError):
        store.r.set("vigil:decision-cache:x", "1")


def _decision(version: int) -> dict:
    return {"decision": "block", "matches": [], "bank_version": version, "media_type": "image", "notes": [],
            "source": "upload", "partial": False}


def test_matcher_writes_only_the_decision_cache_and_early_blocks(acl_server: Server, bank: BankStore):
    matcher = BankStore.from_url(url_for(acl_server, "MATCHER"))
    sha = "ab" * 32
    DecisionCache(matcher.r, 60).put(sha, _decision(bank.version()))  # swallows errors: check it landed
    assert json.loads(bank.r.get(CACHE_KEY.format(sha256=sha)))["decision"] == "block"
    assert 0 < bank.r.ttl(CACHE_KEY.format(sha256=sha)) <= 60
    matcher.r.set(EARLY_BLOCK_KEY.format(event_id="ev-1"), "1", ex=3600)  # as Matcher._fold does
    assert bank.r.exists(EARLY_BLOCK_KEY.format(event_id="ev-1"))


def test_hasher_reads_the_cache_and_marks_only(acl_server: Server, bank: BankStore):
    sha = "cd" * 32
    DecisionCache(BankStore.from_url(url_for(acl_server, "MATCHER")).r, 60).put(sha, _decision(bank.version()))
    bank.r.set(EARLY_BLOCK_KEY.format(event_id="ev-2"), "1", ex=60)
    hasher = redis.Redis.from_url(url_for(acl_server, "HASHER"), socket_timeout=1)  # as Hasher.__init__
    assert DecisionCache(hasher, 60).get(sha)["decision"] == "block"
    assert hasher.exists(EARLY_BLOCK_KEY.format(event_id="ev-2")) == 1
    assert int(hasher.get(VERSION)) == bank.version()
    for command in (("HGETALL", entries_key("csam")), ("HGETALL", "vigil:banks"), ("XRANGE", "vigil:changes", "-", "+"),
                    ("SET", CACHE_KEY.format(sha256="ef" * 32), "{}"), ("SET", EARLY_BLOCK_KEY.format(event_id="x"), "1"),
                    ("SET", VERSION, "0"), ("DEL", CACHE_KEY.format(sha256=sha)), ("INCR", VERSION)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            hasher.execute_command(*command)
    with pytest.raises(redis.exceptions.NoPermissionError):
        BankStore(hasher).snapshot_start()


def test_rediss_url_carries_user_ca_and_client_cert(acl_server: Server, bank: BankStore, certs: Path):
    """TLS, the CA and the client certificate all fit in the URL: no extra Redis options needed."""
    url = (f"rediss://vigil-matcher:{PASSWORDS['MATCHER']}@localhost:{acl_server.tls_port}/0"
           f"?ssl_ca_certs={certs / 'ca.pem'}&ssl_certfile={certs / 'client.pem'}"
           f"&ssl_keyfile={certs / 'client-plain.key'}")
    index = BankIndex(Settings())
    index.load(BankStore.from_url(url, socket_timeout=5))
    assert index.version == bank.version()
    stranger = url.replace(str(certs / "ca.pem"), str(certs / "other-ca.pem"))
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis.Redis.from_url(stranger).ping()


def test_requirepass_refuses_a_url_without_the_password(tmp_path: Path):
    server = Server(tmp_path, "--requirepass", "s3cret/with:odd@chars", binary=redis_server_binary())
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(server.url()).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(server.url(password="wrong")).ping()
        ok = server.url(password="s3cret%2Fwith%3Aodd%40chars")  # URL-encoded, as docs/security.md says
        store = BankStore.from_url(ok, actor="pytest")
        store.create_bank("b", "review")
        assert store.version() == 1
    finally:
        stop(server.proc)


# -- media never reaches the dead-letter topic ---------------------------------------------------
def test_a_live_frame_dead_letter_carries_no_frame_bytes():
    """LiveHasher._process on real confluent-kafka Messages; its clients point at a closed port."""
    live = LiveHasher(Settings(kafka=f"127.0.0.1:{free_port()}"), "hasher-test")
    try:
        secret = b"FRAME-BYTES-" + b"x" * 300  # UTF-8 too, the case a dead letter would keep verbatim
        headers = [("stream_id", b"cam-1"), ("seq", b"7"), ("captured_at_ms", b"1000")]
        for frame_headers, value in ((headers, b"\xff\xd8\xff" + secret), (headers, secret),
                                     (headers[:1], secret)):  # undecodable JPEG, not an image, bad headers
            m = Message(topic=topics.LIVE_FRAMES, partition=0, offset=3, key=b"cam-1", value=value,
                        headers=frame_headers, timestamp=(1, 1000))
            topic, key, out = live._process(m)
            assert topic == topics.DEAD_LETTER and key == b"cam-1"
            dl = json.loads(out)
            assert dl["original"]["value"] is None and dl["original"]["offset"] == 3
            assert b"FRAME-BYTES" not in out and b"RlJBTUUtQllURV" not in out  # nor its base64
    finally:
        live.consumer.close()


def test_an_upload_dead_letter_carries_the_event_not_the_media(tmp_path: Path):
    media = tmp_path / "bad.jpg"
    media.write_bytes(b"\xff\xd8\xffMEDIA-BYTES-" + b"y" * 300)
    event = {"schema_version": topics.SCHEMA_VERSION, "event_id": "ev-9", "content_id": "c-9",
             "media_uri": media.as_uri(), "submitted_at_ms": 1}
    raw = json.dumps(event).encode()
    out = process_upload(Source(topics.UPLOADS, 0, 1, 1, b"c-9", raw),
                         Settings(media_roots=(str(tmp_path),), decision_cache_ttl_s=0), "hasher-test")
    assert out.topic == topics.DEAD_LETTER
    dl = json.loads(out.value)
    assert dl["original"]["value"] == raw.decode() and dl["event_id"] == "ev-9"
    assert b"MEDIA-BYTES" not in out.value and b"TUVESUEtQllURV" not in out.value
