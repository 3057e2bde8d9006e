"""HMA compatibility: the requests and expected answers of HMA's own tests
(facebook/ThreatExchange hasher-matcher-actioner/src/OpenMediaMatch/tests/test_api_banks.py,
test_match_api.py, test_api.py), sent to a real `vigil api` process over HTTP, against the real
embedded Redis and broker. Where vigil answers differently on purpose (docs/api.md), the test
says so and asserts vigil's documented answer."""
from __future__ import annotations

import time
import uuid

import pytest

from tests.api_helpers import MediaServer, start_api, stop_api
from tests.pipeline_helpers import disable_banks_made_since
from workers.api.tokens import TokenStore
from workers.bank.store import BankStore
from workers.stack import samples, transforms

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8].upper()}"


@pytest.fixture(scope="module")
def hma(cluster, tmp_path_factory):
    media = tmp_path_factory.mktemp("hma-media")
    # HMA's tests serve their images from a local HTTP server too (tests/utils.py image_server)
    (media / "image1.jpg").write_bytes(transforms.encode(samples.photo("astronaut"), ".jpg", 90))
    (media / "image2.jpg").write_bytes(transforms.encode(samples.photo("rocket"), ".jpg", 90))
    server = MediaServer(media)
    banks_before = set(BankStore.from_url(cluster.settings.redis).banks())
    token, _ = TokenStore(BankStore.from_url(cluster.settings.redis).r).create(f"hma-{uuid.uuid4().hex[:6]}",
                                                                               ["lookup", "bank:read", "bank:write"])
    api = start_api(cluster.settings.redis, tmp_path_factory.mktemp("hma-api"),
                    env={"VIGIL_FETCH_ALLOWED_HOSTS": "127.0.0.1", "VIGIL_FETCH_PRIVATE_CIDRS": "127.0.0.1/32",
                         "VIGIL_API_RATE_PER_S": "10000", "VIGIL_API_BURST": "10000"})
    client = api.client(token)
    yield client, server.url
    client.close()
    stop_api(api)
    disable_banks_made_since(BankStore.from_url(cluster.settings.redis), banks_before)
    server.close()


def _wait_match(client, params, want: int, timeout: float = 3.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get("/m/raw_lookup", params=params).json()
        if len(body["matches"]) == want or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_status_texts(hma):
    client, _ = hma
    r = client.get("/status")
    assert r.status_code == 200 and r.text == "I-AM-ALIVE"
    r = client.get("/status/live")
    assert r.status_code == 200 and r.text == "I-AM-ALIVE"
    assert "/m/raw_lookup" in client.get("/site-map").json()


def test_banks_create_and_index(hma):
    client, _ = hma
    # Must not start with number; cannot contain lowercase letters (HMA test_banks_create)
    assert client.post("/c/banks", json={"name": "01_TEST_BANK"}).status_code == 400
    assert client.post("/c/banks", json={"name": "my_test_bank"}).status_code == 400
    name = _name("MY_TEST_BANK")
    r = client.post("/c/banks", json={"name": name})
    assert r.status_code == 201
    assert r.json() == {"matching_enabled_ratio": 1.0, "name": name}
    assert r.json() in client.get("/c/banks").json()
    assert client.get(f"/c/bank/{name}").json() == r.json()
    assert client.post("/c/banks", json={"name": name}).status_code == 403  # "Bank already exists"
    err = client.get("/c/bank/NO_SUCH_BANK_X")
    assert err.status_code == 404 and "message" in err.json()


def test_banks_update_rename_and_disable(hma):
    client, _ = hma
    name, renamed = _name("MY_TEST_BANK"), _name("MY_TEST_BANK_RENAMED")
    assert client.post("/c/banks", json={"name": name}).status_code == 201
    assert client.post(f"/c/bank/{name}/signal", json={"pdq": "f" * 64}).status_code == 200
    assert client.put(f"/c/bank/{name}", json={"name": "1_invalid_name"}).status_code == 400
    r = client.put(f"/c/bank/{name}", json={"name": renamed})
    assert r.status_code == 200 and r.json()["name"] == renamed
    assert client.get(f"/c/bank/{name}").status_code == 404
    r = client.put(f"/c/bank/{renamed}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["matching_enabled_ratio"] == 0
    # HMA accepts a fractional enabled_ratio (a coinflip); vigil banks are on or off: 400 (docs/api.md)
    r = client.put(f"/c/bank/{renamed}", json={"enabled_ratio": 0.5})
    assert r.status_code == 400 and "on (1.0) or off (0.0)" in r.json()["message"]
    banks = {b["name"]: b for b in client.get("/c/banks").json()}
    assert banks[renamed] == {"name": renamed, "matching_enabled_ratio": 0.0} and name not in banks


def test_banks_delete(hma):
    client, _ = hma
    name = _name("MY_TEST_BANK")
    assert client.post("/c/banks", json={"name": name}).status_code == 201
    assert client.delete(f"/c/bank/{name}").status_code == 200
    assert client.delete(f"/c/bank/{name}").status_code == 200  # deleting a missing bank succeeds


def test_bank_content_by_url_get_update_delete(hma):
    client, images = hma
    bank = _name("TEST_BANK_GET")
    assert client.get(f"/c/bank/{bank}/content/1").status_code == 404  # bank does not exist
    assert client.post("/c/banks", json={"name": bank}).status_code == 201
    assert client.get(f"/c/bank/{bank}/content/1").status_code == 404  # content does not exist
    image_url = f"{images}/image1.jpg"
    add = client.post(f"/c/bank/{bank}/content?url={image_url}&content_type=photo&types=pdq")
    assert add.status_code == 200, add.text
    expected_pdq = client.get("/h/hash", params={"url": image_url, "types": "pdq"}).json()["pdq"]
    assert add.json() == {"id": add.json()["id"], "signals": {"pdq": expected_pdq}}
    content_id = add.json()["id"]
    assert isinstance(content_id, int)
    got = client.get(f"/c/bank/{bank}/content/{content_id}", params={"include_signals": "true"})
    assert got.status_code == 200 and got.json()["id"] == content_id
    assert got.json()["signals"]["pdq"] == expected_pdq and got.json()["bank"]["name"] == bank
    # HMA test_bank_update_content: disable for a year
    until = int(time.time()) + 365 * 86400
    upd = client.put(f"/c/bank/{bank}/content/{content_id}", json={"disable_until_ts": until})
    assert upd.status_code == 200 and upd.json()["disable_until_ts"] == 0  # vigil: disabled (no timed re-enable)
    query = {"signal": expected_pdq, "signal_type": "pdq", "banks": bank}
    assert _wait_match(client, query, 0)["matches"] == []
    assert client.put(f"/c/bank/{bank}/content/{content_id}", json={"disable_until_ts": 1}).status_code == 200
    assert _wait_match(client, query, 1)["matches"] == [content_id]
    assert client.delete(f"/c/bank/{bank}/content/{content_id}").json() == {"deleted": 1}
    assert client.delete(f"/c/bank/{bank}/content/{content_id}").json() == {"deleted": 0}


def test_bank_content_by_upload_and_by_signal(hma):
    client, _ = hma
    bank = _name("UPLOADS")
    client.post("/c/banks", json={"name": bank})
    jpg = transforms.encode(samples.photo("coffee"), ".jpg", 90)
    r = client.post(f"/c/bank/{bank}/content", files={"photo": ("coffee.jpg", jpg, "image/jpeg")},
                    data={"note": "from a test"})
    assert r.status_code == 200 and set(r.json()["signals"]) >= {"pdq", "md5"}
    got = client.get(f"/c/bank/{bank}/content/{r.json()['id']}").json()
    assert got["note"] == "from a test"
    r = client.post(f"/c/bank/{bank}/signal", json={"pdq": "A" * 64, "note": "hash only"})
    assert r.status_code == 200 and r.json()["signals"] == {"pdq": "a" * 64}
    assert client.post(f"/c/bank/{bank}/signal", json={"pdq": "xyz"}).status_code == 400
    assert client.post(f"/c/bank/{bank}/signal", json={}).status_code == 400
    assert client.post(f"/c/bank/{bank}/content").status_code == 400  # neither url nor a file


@pytest.fixture(scope="module")
def three_banks(hma):
    """HMA test_match_api's client_with_multi_bank_data: one PDQ in BANK_A, BANK_B and BANK_C."""
    client, _ = hma
    from threatexchange.signal_type.pdq.signal import PdqSignal

    pdq = PdqSignal.get_examples()[0]  # the hash HMA's test uses
    names = {x: _name(f"BANK_{x}") for x in "ABC"}
    for n in names.values():
        assert client.post("/c/banks", json={"name": n}).status_code == 201
        assert client.post(f"/c/bank/{n}/signal", json={"pdq": pdq}).status_code == 200
    _wait_match(client, {"signal": pdq, "signal_type": "pdq", "banks": ",".join(names.values())}, 3)
    return client, pdq, names


def test_raw_lookup_with_bank_filter(three_banks):
    client, pdq, n = three_banks
    q = {"signal": pdq, "signal_type": "pdq", "banks": ",".join(n.values())}
    assert len(client.get("/m/raw_lookup", params=q).json()["matches"]) == 3
    for banks, want in ((n["A"], 1), (f"{n['A']},{n['B']}", 2), ("NON_EXISTENT_BANK", 0)):
        r = client.get("/m/raw_lookup", params={**q, "banks": banks})
        assert r.status_code == 200 and len(r.json()["matches"]) == want
    r = client.get("/m/raw_lookup", params={**q, "include_distance": True, "banks": f"{n['A']},{n['B']}"})
    assert len(r.json()["matches"]) == 2
    for match in r.json()["matches"]:
        assert "bank_content_id" in match and match["distance"] == "0"


def test_lookup_with_bank_filter(three_banks):
    client, pdq, n = three_banks
    q = {"signal": pdq, "signal_type": "pdq"}
    for banks, want in ((",".join(n.values()), set(n.values())), (n["A"], {n["A"]}),
                        (f"{n['A']},{n['C']}", {n["A"], n["C"]}), ("NON_EXISTENT_BANK", set())):
        r = client.get("/m/lookup", params={**q, "banks": banks})
        assert r.status_code == 200 and set(r.json()) == want
        for matches in r.json().values():
            assert matches and all({"bank_content_id", "distance"} <= set(m) for m in matches)


def test_hash_and_lookup_by_url_and_upload(hma):
    client, images = hma
    bank = _name("LOOKUP")
    client.post("/c/banks", json={"name": bank})
    url = f"{images}/image2.jpg"
    added = client.post(f"/c/bank/{bank}/content", params={"url": url}).json()
    h = client.get("/h/hash", params={"url": url})
    assert h.status_code == 200 and set(h.json()) == {"pdq", "phash", "md5", "sha256"}
    assert h.json()["pdq"] == added["signals"]["pdq"]
    deadline = time.monotonic() + 3
    while bank not in client.get("/m/lookup", params={"url": url, "banks": bank}).json().get("pdq", {}):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    by_url = client.get("/m/lookup", params={"url": url, "banks": bank}).json()
    assert by_url["pdq"][bank] == [{"bank_content_id": added["id"], "distance": "0"}]
    elided = client.get("/m/lookup", params={"url": url, "signal_type": "pdq", "banks": bank}).json()
    assert elided == by_url["pdq"]  # "If Signal Type is given, the outer JSON object is elided"
    # A re-encoded copy, uploaded (HMA test_lookup_success posts {"photo": file})
    copy = transforms.encode(transforms.resize(samples.photo("rocket"), 0.5), ".jpg", 70)
    r = client.post("/m/lookup", params={"banks": bank}, files={"photo": ("copy.jpg", copy, "image/jpeg")})
    assert r.status_code == 200 and bank in r.json()["pdq"] and int(r.json()["pdq"][bank][0]["distance"]) <= 31
    assert client.post("/h/hash", files={"photo": ("copy.jpg", copy)}).json()["pdq"] != h.json()["pdq"]
    # two files, a wrong field name, no file: 400 with HMA's message shape
    r = client.post("/h/hash", files=[("photo", ("a.jpg", copy)), ("photo", ("b.jpg", copy))])
    assert r.status_code == 400 and r.json()["message"] == "Only one file allowed per request"
    assert client.post("/h/hash", files={"document": ("a.jpg", copy)}).status_code == 400
    assert client.get("/m/lookup").status_code == 400  # neither url nor signal


def test_compare(hma):
    client, _ = hma
    a = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
    b = a[:-1] + "3"  # one bit away
    r = client.post("/m/compare", json={"pdq": [a, b], "md5": ["0" * 32, "0" * 32]})
    assert r.status_code == 200 and r.json() == {"pdq": [True, {"distance": 1}], "md5": [True, {"distance": 0}]}
    assert client.post("/m/compare", json={"pdq": [a]}).status_code == 400  # "exactly 2"
    assert client.post("/m/compare", json={"pdq": [a, "zz"]}).status_code == 400
    assert client.post("/m/compare", json=["not", "a", "dict"]).status_code == 400


def test_index_status_and_config_routes(hma):
    client, _ = hma
    bank, pdq = _name("STATUS"), "ab" * 32
    client.post("/c/banks", json={"name": bank})
    client.post(f"/c/bank/{bank}/signal", json={"pdq": pdq})
    _wait_match(client, {"signal": pdq, "signal_type": "pdq", "banks": bank}, 1)
    status = client.get("/m/index/status").json()
    assert status["pdq"]["present"] is True and status["pdq"]["size"] >= 1
    assert set(client.get("/m/index/status", params={"signal_type": "pdq"}).json()) == {"pdq"}
    assert client.get("/m/index/status", params={"signal_type": "tmk"}).status_code == 400
    assert {"name": "pdq", "enabled_ratio": 1.0} in client.get("/c/signal_type").json()
    assert {"name": "photo", "enabled": True} in client.get("/c/content_type").json()
    assert "pdq" in client.get("/c/signal_type/index").json()
    r = client.get("/c/exchanges")
    assert r.status_code == 501 and r.headers["content-type"].startswith("application/problem+json")


def test_raw_lookup_fast_path_answers_as_the_routed_one(three_banks):
    """workers/api/fast_lookup.py answers plain GETs ahead of FastAPI; a GET with a body goes
    through the normal stack. Both must give the same answers and the same problems."""
    client, pdq, n = three_banks
    queries = [{"signal": pdq, "signal_type": "pdq", "banks": ",".join(n.values()), "include_distance": "true"},
               {"signal": pdq, "signal_type": "pdq", "banks": n["A"]},
               {"signal_type": "pdq"}, {"signal": "xyz", "signal_type": "pdq"},
               {"signal": pdq, "signal_type": "pdq", "include_distance": "maybe"}]
    for q in queries:
        fast = client.get("/m/raw_lookup", params=q)
        routed = client.request("GET", "/m/raw_lookup", params=q, content=b"{}")
        assert (fast.status_code, fast.json()) == (routed.status_code, routed.json()), q
