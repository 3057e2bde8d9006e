"""The review pages (Starlette, Jinja2 templates, plain HTML forms: no JavaScript build step).

Every page needs a session (else the login page); every POST needs the session's CSRF token
(else 403). Media goes only to a reviewer holding the case's lease (or a lead), rendered by
`preview` from the media root; the page never links to the file itself."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, REGISTRY, generate_latest
from sqlalchemy.orm import sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from workers.errors import MediaError
from workers.review import auth, cases, preview, queue, verdicts
from workers.review.db import Case, Reviewer
from workers.settings import Settings

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
Handler = Callable[[Request], Awaitable[Response]]


class ReviewApp:
    """The web app and what it needs: the store, settings, the bank (entry metadata) and the applier."""

    def __init__(self, sessions: sessionmaker, settings: Settings, bank_store: Any = None,
                 applier: verdicts.Applier | None = None, registry: CollectorRegistry = REGISTRY,
                 health: Callable[[], dict[str, bool]] | None = None):
        self.db, self.settings, self.bank, self.applier = sessions, settings, bank_store, applier
        self.cookies = auth.Sessions(settings.review_secret)
        self.registry, self.health = registry, health or (lambda: {})
        routes = [
            Route("/login", self.login_form, methods=["GET"]), Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.guard(self.logout), methods=["POST"]),
            Route("/", self.guard(self.queue_page)), Route("/next", self.guard(self.next_case), methods=["POST"]),
            Route("/cases/{id:int}", self.guard(self.case_page)),
            Route("/cases/{id:int}/claim", self.guard(self.claim), methods=["POST"]),
            Route("/cases/{id:int}/preview.jpg", self.guard(self.preview)),
            Route("/cases/{id:int}/reveal", self.guard(self.reveal), methods=["POST"]),
            Route("/cases/{id:int}/verdict", self.guard(self.verdict), methods=["POST"]),
            Route("/settings", self.guard(self.settings_page)),
            Route("/settings", self.guard(self.save_settings), methods=["POST"]),
            Route("/healthz", self.healthz), Route("/readyz", self.healthz), Route("/metrics", self.metrics),
        ]
        self.app = Starlette(routes=routes)

    # -- sessions ---------------------------------------------------------------------------------
    def _who(self, request: Request, session: dict[str, Any]) -> auth.Who | None:
        header = self.settings.review_identity_header
        with self.db.begin() as s:
            r: Reviewer | None = None
            if header and request.headers.get(header):
                r = auth.from_header(s, request.headers[header][:200])
            elif session.get("u"):
                r = s.get(Reviewer, session["u"])
            if r is None or r.disabled:
                return None
            return auth.Who(r.name, r.role, r.blur)

    def render(self, request: Request, template: str, session: dict[str, Any], status: int = 200,
               **ctx: Any) -> Response:
        resp = TEMPLATES.TemplateResponse(request, template, {"csrf": session["csrf"], **ctx}, status_code=status)
        self._set_cookie(request, resp, session)
        return resp

    @staticmethod
    def _https(request: Request) -> bool:
        return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"

    def _set_cookie(self, request: Request, resp: Response, session: dict[str, Any]) -> None:
        """HttpOnly, SameSite=Strict (another site's form cannot even send it), Secure over HTTPS."""
        resp.set_cookie(auth.COOKIE, self.cookies.dump(session), max_age=auth.SESSION_MAX_AGE_S, httponly=True,
                        samesite="strict", secure=self._https(request))

    def guard(self, handler: Callable[..., Awaitable[Response]]) -> Handler:
        """Session or login page; CSRF token on every POST or 403."""
        async def wrapped(request: Request) -> Response:
            session = self.cookies.load(request.cookies.get(auth.COOKIE))
            form = await request.form() if request.method == "POST" else None
            if form is not None and not auth.csrf_ok(session, form.get("csrf")):
                return self.render(request, "error.html", session, 403, who=None,
                                   message="This form has no valid CSRF token: reload the page and try again.")
            who = await run_in_threadpool(self._who, request, session)
            if who is None:
                return RedirectResponse("/login", status_code=303)
            return await handler(request, session, who, form)
        return wrapped

    async def login_form(self, request: Request, error: str | None = None, status: int = 200) -> Response:
        session = self.cookies.load(request.cookies.get(auth.COOKIE))
        return self.render(request, "login.html", session, status, who=None, error=error)

    async def login(self, request: Request) -> Response:
        session = self.cookies.load(request.cookies.get(auth.COOKIE))
        form = await request.form()
        if not auth.csrf_ok(session, form.get("csrf")):
            return self.render(request, "error.html", session, 403, who=None,
                               message="This form has no valid CSRF token: reload the page and try again.")
        name, password = str(form.get("name", ""))[:200], str(form.get("password", ""))

        def check() -> bool:
            with self.db.begin() as s:
                ok = auth.check_password(s, name, password) is not None
                queue.audit(s, name or "?", "login" if ok else "login_failed")
                return ok
        if not await run_in_threadpool(check):
            return await self.login_form(request, "Wrong name or password.", 401)
        import secrets
        fresh = {"u": name, "csrf": secrets.token_urlsafe(24)}  # a new token at login: no fixation
        resp = RedirectResponse("/", status_code=303)
        self._set_cookie(request, resp, fresh)
        return resp

    async def logout(self, request: Request, session: dict, who: auth.Who, form: Any) -> Response:
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(auth.COOKIE)
        return resp

    # -- the queue --------------------------------------------------------------------------------
    async def queue_page(self, request: Request, session: dict, who: auth.Who, form: Any) -> Response:
        def load() -> tuple[list[Case], dict]:
            with self.db() as s:
                return queue.listing(s, who.role), cases.open_counts(s)
        rows, counts = await run_in_threadpool(load)
        now = time.time() * 1000
        return self.render(request, "queue.html", session, who=who, cases=rows, counts=counts, now_ms=now,
                           message=request.query_params.get("m"))

    async def next_case(self, request: Request, session: dict, who: auth.Who, form: Any) -> Response:
        case_id = await run_in_threadpool(queue.next_unclaimed, self.db, who.name, who.role, self.settings.review_lease_s)
        if case_id is None:
            return RedirectResponse("/?m=No+unclaimed+case+is+waiting.", status_code=303)
        return RedirectResponse(f"/cases/{case_id}", status_code=303)

    async def claim(self, request: Request, session: dict, who: auth.Who, form: Any) -> Response:
        case_id = request.path_params["id"]
        won = await run_in_threadpool(queue.claim, self.db, case_id, who.name, who.role, self.settings.review_lease_s)
        if not won:
            return self._refuse(request, session, who, 409,
                                f"Case {case_id} is held by another reviewer, decided, or escalated to a lead.")
        return RedirectResponse(f"/cases/{case_id}", status_code=303)

    def _refuse(self, request: Request, session: dict, who: auth.Who, status: int, message: str) -> Response:
        return self.render(request, "error.html", session, status, who=who, message=message)

    # -- a case -----------------------------------------------------------------------------------
    def _viewable(self, case: Case | None, who: auth.Who) -> str | None:
        """Why this reviewer may not see this case now, or None."""
        if case is None:
            return "No such case."
        if who.role == "lead" or queue.holds(case, who.name):
            return None
        return "Claim the case first: media is shown only to the reviewer holding it."

    async def case_page(self, request: Request, session: dict, who: auth.Who, form: Any) -> Response:
        case_id = request.path_params["id"]

        def load() -> dict[str, Any]:
            with self.db() as s:
                case = s.get(Case, case_id)
                why = self._viewable(case, who)
                if why:
                    return {"why": why}
                hist = cases.history(s, case_id)
                return {"case": case, "history": hist, "revealed": queue.revealed(s, case_id, who.name),
                        "evidence": [self._with_entry(m) for m in case.evidence],
                        "reports": [h for h in hist if h.kind == "report"],
                        "verdicts": _verdicts(s, case_id)}
        data = await run_in_threadpool(load)
        if "why" in data:
            return self._refuse(request, session, who, 403 if "Claim" in data["why"] else 404, data["why"])
        return self.render(request, "case.html", session, who=who, labels=verdicts.LABELS,
                           holds=queue.holds(data["case"], who.name), now_ms=time.time() * 1000,
                           blur_levels=preview.BLUR_LEVELS, **data)

    def _with_entry(self, match: dict[str, Any]) -> dict[str, Any]:
        """The evidence beside the banked entry it matched: who banked it, when, from what."""
        entry = None
        if self.bank is not None:
            try:
                e = self.bank.get_entry(match["bank"], match["entry_id"])
                entry = None if e is None else {"label": e.label, "source": e.source, "note": e.note,
                                                "added_by": e.added_by, "added_at_ms": e.added_at_ms,
                                                "media_type": e.media_type, "disabled": e.disabled}
            except Exception:  # noqa: BLE001  (Redis away: the page still shows the evidence)
                entry = {"note": "bank unavailable"}
        return {**match, "entry": entry}

    async def preview(self, request: Request, session: dict, who: auth.Who, form: Any) -> Response:
        case_id = request.path_params["id"]

        def render() -> tuple[int, bytes | str]:
            with self.db() as s:
                case = s.get(Case, case_id)
                why = self._viewable(case, who)
                if why:
                    return 403, why
                if not case.media_uri:
                    return 404, "This case has no stored media (live frames are not kept)."
                reveal = request.query_params.get("reveal") == "1" and queue.revealed(s, case_id, who.name)
                uri = case.media_uri
            try:
                return 200, preview.render(uri, self.settings, reveal, who.blur)
            except (MediaError, OSError) as exc:
                return 404, f"media unavailable: {exc}"
        status, body = await run_in_threadpool(render)
        if status != 200:
            return Response(str(body), status_code=status, media_type="text/plain")
        return Response(body, media_type="image/jpeg", headers={"Cache-Control": "no-store, private"})

    async def reveal(self, request: Request, session: dict, who: auth.Who, form: Any) -> Response:
        case_id = request.path_params["id"]

        def do() -> str | None:
            with self.db.begin() as s:
                why = self._viewable(s.get(Case, case_id), who)
                if why is None:
                    queue.audit(s, who.name, "reveal", case_id)
                return why
        why = await run_in_threadpool(do)
        if why:
            return self._refuse(request, session, who, 403, why)
        return RedirectResponse(f"/cases/{case_id}", status_code=303)

    async def verdict(self, request: Request, session: dict, who: auth.Who, form: Any) -> Response:
        case_id = request.path_params["id"]
        try:
            await run_in_threadpool(verdicts.record, self.db, self.settings, case_id, who.name, who.role,
                                    str(form.get("verdict", "")), form.get("label") or None, form.get("note"))
        except verdicts.VerdictError as exc:
            return self._refuse(request, session, who, exc.status, str(exc))
        if self.applier is not None:
            self.applier.wake.set()
        return RedirectResponse(f"/?m=Case+{case_id}:+{form.get('verdict')}+recorded.", status_code=303)

    # -- the reviewer's settings ------------------------------------------------------------------
    async def settings_page(self, request: Request, session: dict, who: auth.Who, form: Any) -> Response:
        return self.render(request, "settings.html", session, who=who, blur_levels=preview.BLUR_LEVELS)

    async def save_settings(self, request: Request, session: dict, who: auth.Who, form: Any) -> Response:
        try:
            blur = int(form.get("blur", ""))
        except ValueError:
            blur = -1
        if blur not in preview.BLUR_LEVELS:
            return self._refuse(request, session, who, 400, f"blur must be one of {preview.BLUR_LEVELS}")

        def save() -> None:
            with self.db.begin() as s:
                s.get(Reviewer, who.name).blur = blur
                queue.audit(s, who.name, "settings", None, {"blur": blur})
        await run_in_threadpool(save)
        return RedirectResponse("/?m=Blur+level+saved.", status_code=303)

    # -- operations -------------------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        checks = await run_in_threadpool(self.health)
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    async def metrics(self, request: Request) -> Response:
        from workers.review.metrics import refresh

        def scrape() -> bytes:
            refresh(self.db)
            return generate_latest(self.registry)
        body = await run_in_threadpool(scrape)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _verdicts(s: Any, case_id: int) -> list[Any]:
    from sqlalchemy import select

    from workers.review.db import Verdict
    return list(s.scalars(select(Verdict).where(Verdict.case_id == case_id).order_by(Verdict.id)))


def fmt_age(ms: float) -> str:
    s = max(0, int(ms / 1000))
    return f"{s // 3600}h {s % 3600 // 60}m" if s >= 3600 else f"{s // 60}m {s % 60}s"


TEMPLATES.env.filters["age"] = fmt_age
TEMPLATES.env.filters["json"] = lambda v: json.dumps(v, default=str)
