"""A reviewer's browser in a few lines: log in, claim, decide, through the page's own forms
(session cookie and CSRF token included). `vigil demo` and benchmarks/bench_review.py use it,
so what they measure is what a click does."""
from __future__ import annotations

import http.cookiejar
import re
import urllib.parse
import urllib.request

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class ReviewerClient:
    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.csrf = ""

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=30) as resp:
            page = resp.read().decode()
        m = _CSRF.search(page)
        if m:
            self.csrf = m.group(1)
        return page

    def post(self, path: str, **fields: str) -> str:
        data = urllib.parse.urlencode({"csrf": self.csrf, **fields}).encode()
        with self.opener.open(self.base + path, data=data, timeout=30) as resp:
            page = resp.read().decode()
        m = _CSRF.search(page)
        if m:
            self.csrf = m.group(1)
        return page

    def login(self, name: str, password: str) -> None:
        self.get("/login")
        page = self.post("/login", name=name, password=password)
        if 'id="queue"' not in page:
            raise RuntimeError(f"login as {name} failed")

    def claim(self, case_id: int) -> None:
        self.post(f"/cases/{case_id}/claim")

    def verdict(self, case_id: int, verdict: str, label: str | None = None) -> None:
        fields = {"verdict": verdict, **({"label": label} if label else {})}
        page = self.post(f"/cases/{case_id}/verdict", **fields)
        if f"{verdict} recorded" not in page:
            raise RuntimeError(f"verdict {verdict} on case {case_id} refused")
