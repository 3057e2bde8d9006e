"""Media by URL (the HTTP API's `url` parameters), with the same caution as file:// media.

A URL from a caller must not become a way to reach the metadata service, Redis or anything else
inside the network (SSRF). So: http(s) only, the host must be allowlisted, and every address the
name resolves to must be public, on the first request and on every redirect (followed by hand,
at most MAX_REDIRECTS). The connection then goes to the address that was checked, with the name
kept for the Host header and TLS (SNI and certificate), so a second DNS answer cannot swap in a
private address (DNS rebinding). Size and time are bounded; the body is never held past max_bytes.
"""
from __future__ import annotations

import ipaddress
import socket
import time
from typing import Iterable
from urllib.parse import urljoin, urlsplit

import httpx

from workers.errors import MediaError

MAX_REDIRECTS = 5
USER_AGENT = "vigil-fetch/1"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """The host is an allowlisted name or a subdomain of one (case-insensitive)."""
    host = host.lower().rstrip(".")
    for a in allowed:
        a = a.lower().strip().rstrip(".")
        if a and (host == a or host.endswith("." + a)):
            return True
    return False


def is_public(addr: IPAddress) -> bool:
    """Globally routable unicast: not private, loopback, link-local, multicast, reserved or unspecified.
    An IPv4-mapped IPv6 address is judged by the IPv4 address inside it."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


def resolve_checked(host: str, port: int, private_ok: tuple[str, ...] = ()) -> IPAddress:
    """The first address of `host`, after checking that every address it resolves to is public
    (or inside one of the private_ok networks, for an in-cluster media store)."""
    nets = [ipaddress.ip_network(c, strict=False) for c in private_ok]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise MediaError("fetch_failed", f"cannot resolve {host!r}: {exc}") from None
    addrs = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not addrs:
        raise MediaError("fetch_failed", f"{host!r} resolves to no address")
    for a in addrs:
        if not is_public(a) and not any(a in n for n in nets):
            raise MediaError("private_address", f"{host!r} resolves to {a}, a non-public address")
    return addrs[0]


def fetch_url(url: str, allowed_hosts: tuple[str, ...], max_bytes: int, timeout_s: float,
              private_ok: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """The body of `url` (and its Content-Type), or MediaError saying why it was not fetched."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False,
                      headers={"User-Agent": USER_AGENT}) as client:
        for _ in range(MAX_REDIRECTS + 1):
            target, host, headers, ext = _pinned(url, allowed_hosts, private_ok)
            left = deadline - time.monotonic()
            if left <= 0:
                raise MediaError("fetch_failed", f"{url}: timed out after {timeout_s:.0f}s")
            try:
                with client.stream("GET", target, headers=headers, extensions=ext,
                                   timeout=httpx.Timeout(left)) as resp:
                    if resp.is_redirect:
                        location = resp.headers.get("location", "")
                        if not location:
                            raise MediaError("fetch_failed", f"{url}: redirect without a Location")
                        url = urljoin(url, location)
                        continue
                    if resp.status_code != 200:
                        raise MediaError("fetch_failed", f"{url}: HTTP {resp.status_code}")
                    return _read_bounded(resp, url, max_bytes, deadline), resp.headers.get("content-type", "")
            except httpx.HTTPError as exc:
                raise MediaError("fetch_failed", f"{url}: {type(exc).__name__}: {exc}") from None
    raise MediaError("fetch_failed", f"{url}: more than {MAX_REDIRECTS} redirects")


def _pinned(url: str, allowed_hosts: tuple[str, ...], private_ok: tuple[str, ...]) -> tuple[str, str, dict, dict]:
    """(URL with the checked address in place of the name, host, headers, httpx extensions)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise MediaError("host_not_allowed", f"not a parseable URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise MediaError("host_not_allowed", f"only http(s) URLs are fetched, not {parts.scheme or 'a bare path'!r}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise MediaError("host_not_allowed", "the URL names no host")
    if parts.username or parts.password:
        raise MediaError("host_not_allowed", "URLs with credentials are not fetched")
    if not host_allowed(host, allowed_hosts):
        raise MediaError("host_not_allowed", f"{host!r} is not in VIGIL_FETCH_ALLOWED_HOSTS"
                         + ("" if allowed_hosts else " (none are configured)"))
    port = port or (443 if parts.scheme == "https" else 80)
    addr = resolve_checked(host, port, private_ok)
    literal = f"[{addr}]" if addr.version == 6 else str(addr)
    path = parts.path or "/"
    target = f"{parts.scheme}://{literal}:{port}{path}" + (f"?{parts.query}" if parts.query else "")
    default = (parts.scheme, port) in (("http", 80), ("https", 443))
    headers = {"Host": host if default else f"{host}:{port}"}
    ext = {"sni_hostname": host} if parts.scheme == "https" else {}
    return target, host, headers, ext


def _read_bounded(resp: httpx.Response, url: str, max_bytes: int, deadline: float) -> bytes:
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise MediaError("media_too_large", f"{url} is {declared} bytes; the limit is {max_bytes}")
    chunks, total = [], 0
    for chunk in resp.iter_raw():  # raw: a Content-Encoding is not undone, so no gzip bomb either
        total += len(chunk)
        if total > max_bytes:
            raise MediaError("media_too_large", f"{url} exceeds {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise MediaError("fetch_failed", f"{url}: download timed out")
        chunks.append(chunk)
    if not total:
        raise MediaError("empty_media", f"{url} returned no bytes")
    return b"".join(chunks)
