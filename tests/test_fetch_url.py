"""Media by URL (workers/media/fetch_url.py): the SSRF rules, against a real local web server."""
from __future__ import annotations

import ipaddress

import pytest

from tests.api_helpers import MediaServer
from workers.errors import MediaError
from workers.media.fetch_url import fetch_url, host_allowed, is_public


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    (root / "a.jpg").write_bytes(b"\xff\xd8" + b"x" * 1000)
    server = MediaServer(root)
    yield server
    server.close()


def _code(url: str, allowed=("localhost", "127.0.0.1"), private_ok=(), max_bytes=10_000) -> str:
    with pytest.raises(MediaError) as err:
        fetch_url(url, allowed, max_bytes, 5.0, private_ok)
    return err.value.code


def test_a_name_resolving_to_a_private_address_is_refused_even_when_allowlisted(web):
    assert _code(f"http://localhost:{web.port}/a.jpg") == "private_address"  # DNS: localhost -> 127.0.0.1
    assert _code(f"http://127.0.0.1:{web.port}/a.jpg") == "private_address"
    data, _ = fetch_url(f"http://localhost:{web.port}/a.jpg", ("localhost",), 10_000, 5.0, ("127.0.0.1/32",))
    assert len(data) == 1002


def test_redirects_are_checked_at_every_hop(web):
    ok = ("127.0.0.1/32",)
    to_private = f"{web.url}/redirect?to=http://127.0.0.2:{web.port}/a.jpg"
    assert _code(to_private, allowed=("127.0.0.1", "127.0.0.2"), private_ok=ok) == "private_address"
    assert _code(f"{web.url}/redirect?to=http://elsewhere.example/a.jpg", private_ok=ok) == "host_not_allowed"
    loop = f"{web.url}/redirect?to={web.url}/redirect?to={web.url}/redirect?to={web.url}/redirect?to=" \
           f"{web.url}/redirect?to={web.url}/redirect?to={web.url}/a.jpg"
    assert _code(loop, private_ok=ok) == "fetch_failed"  # more than 5 redirects


def test_size_scheme_and_credentials(web):
    ok = ("127.0.0.1/32",)
    assert _code(f"{web.url}/a.jpg", private_ok=ok, max_bytes=100) == "media_too_large"
    assert _code(f"{web.url}/nothing.jpg", private_ok=ok) == "fetch_failed"
    assert _code("file:///etc/passwd") == "host_not_allowed"
    assert _code("ftp://localhost/a") == "host_not_allowed"
    assert _code(f"http://u:p@localhost:{web.port}/a.jpg", private_ok=ok) == "host_not_allowed"
    assert _code("http://[::1/") == "host_not_allowed"
    assert _code(f"{web.url}/a.jpg", allowed=()) == "host_not_allowed"


def test_address_and_host_rules():
    for a in ("10.0.0.1", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
              "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"):
        assert not is_public(ipaddress.ip_address(a)), a
    for a in ("8.8.8.8", "2606:4700::1111"):
        assert is_public(ipaddress.ip_address(a)), a
    assert host_allowed("cdn.example.com", ["example.com"]) and host_allowed("EXAMPLE.com.", ["example.com"])
    assert not host_allowed("badexample.com", ["example.com"]) and not host_allowed("example.com", [])
