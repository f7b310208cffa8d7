"""The review web app (Starlette): one page, a JSON API, two PNGs per patch.

Access: every request must carry the server's random token. The first page load brings it as
``?token=``; the server answers with a redirect to ``/`` that sets it as a cookie (HttpOnly,
SameSite=Strict, named after the token's hash so that two servers on one host keep apart), and
the page learns it from a ``<meta>`` tag of the HTML it is served. Reads (GET) accept the
cookie, the query parameter or the ``X-Review-Token`` header; writes (POST) only the header, which
a foreign page cannot set on a request to this origin, so no cross-site request forgery. Caption
text reaches the page only as JSON and is drawn with ``textContent``; a Content-Security-Policy
allows nothing but this server's own script, style and images.
"""

from __future__ import annotations

import hashlib
import html
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from cenlib.classes import CLASSES
from cenlib.errors import CenError
from cenlib.review.caption import segments
from cenlib.review.db import KINDS, Decision, ReviewDBError, read_decisions, record
from cenlib.review.db import decision_history as history
from cenlib.review.patches import ReviewRun, UnknownPatch
from cenlib.verify import find_mentions

TOKEN_HEADER = "X-Review-Token"
STATIC = {"review.js": "text/javascript", "review.css": "text/css"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
FORBIDDEN = (
    "403 forbidden: this review server needs its access token. Open the URL that "
    "`cen review` printed (it ends in ?token=...)."
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def new_token() -> str:
    """A fresh access token (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


def cookie_name(token: str) -> str:
    """The token's cookie: cookies ignore ports, so each server names its own."""
    return "cen_review_" + hashlib.sha256(token.encode()).hexdigest()[:12]


class TokenGate:
    """ASGI middleware: 403 for any request without the token (see the module doc)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token
        self.cookie = cookie_name(token)

    def _ok(self, given: str | None) -> bool:
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        header = request.headers.get(TOKEN_HEADER)
        if scope["method"] not in ("GET", "HEAD"):
            allowed = self._ok(header)
        else:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])
            allowed = self._ok(header) or self._ok(request.cookies.get(self.cookie))
            if not allowed and self._ok(query[-1]):
                # The token from the printed URL becomes a cookie, and leaves the address bar.
                response: Response = RedirectResponse("/", status_code=303)
                response.set_cookie(
                    self.cookie, self.token, httponly=True, samesite="strict", path="/"
                )
                await _secured(response)(scope, receive, send)
                return
        if not allowed:
            await _secured(PlainTextResponse(FORBIDDEN, status_code=403))(scope, receive, send)
            return
        await self.app(scope, receive, _with_headers(send))


def _secured(response: Response) -> Response:
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    return response


SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            names = {bytes(k).lower() for k, _ in message.get("headers", [])}
            extra = [
                (k.lower().encode(), v.encode())
                for k, v in SECURITY_HEADERS.items()
                if k.lower().encode() not in names
            ]
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return wrapped


def _static(name: str) -> str:
    return (files("cenlib.review") / "static" / name).read_text(encoding="utf-8")


def build_app(run: ReviewRun, token: str, reviewer: str) -> Starlette:
    """The app reviewing ``run``, behind ``token``; decisions are signed by ``reviewer``."""
    page = _static("review.html").replace("{{token}}", html.escape(token, quote=True))
    classes = [
        {"index": c.index, "name": c.name, "color": f"#{c.color}", "ink": _ink(c.color)}
        for c in CLASSES
    ]

    def progress() -> dict[str, int]:
        latest = read_decisions(run.run_dir)
        done = sum(1 for it in run.items if _current(latest.get(it.patch_id), it.key))
        return {"reviewed": done, "total": len(run.items)}

    def index(request: Request) -> Response:
        return Response(page, media_type="text/html", headers={"Cache-Control": "no-store"})

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse(f"no static file {name!r}", status_code=404)
        return Response(_static(name), media_type=STATIC[name])

    def patches(request: Request) -> Response:
        latest = read_decisions(run.run_dir)
        rows = []
        for it in run.items:
            d = latest.get(it.patch_id)
            row = run.summary(it)
            row["decision"] = d.decision if d is not None and _current(d, it.key) else None
            rows.append(row)
        return _json(
            {
                "run": run.run_dir.name,
                "reviewer": reviewer,
                "classes": classes,
                "patches": rows,
                **progress(),
            }
        )

    def patch(request: Request) -> Response:
        try:
            it = run.item(request.path_params["patch_id"])
        except UnknownPatch as e:
            return PlainTextResponse(str(e), status_code=404)
        past = history(run.run_dir, it.patch_id)
        latest = past[-1] if past else None
        body = run.detail(it)
        body["decision"] = latest.as_dict() if latest else None
        body["stale"] = bool(latest and latest.key != it.key)
        body["history"] = [d.as_dict() for d in past]
        if latest and latest.decision == "edit" and latest.text:
            body["edited_segments"] = run_segments(latest.text)
        return _json(body)

    def image(request: Request) -> Response:
        try:
            png = run.image(request.path_params["patch_id"], request.path_params["kind"])
        except UnknownPatch as e:
            return PlainTextResponse(str(e), status_code=404)
        except (CenError, ValueError) as e:
            return PlainTextResponse(str(e), status_code=500)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private"})

    async def decide(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            patch_id, key, kind = str(body["patch_id"]), str(body["key"]), str(body["decision"])
            text = body.get("text")
        except (ValueError, KeyError, TypeError) as e:
            return PlainTextResponse(
                f"a decision is JSON {{patch_id, key, decision, text}} ({e})", status_code=400
            )
        try:
            it = run.item(patch_id)
        except UnknownPatch as e:
            return PlainTextResponse(str(e), status_code=404)
        if key != it.key:
            return PlainTextResponse(
                f"patch {patch_id}: the caption changed since the page loaded it (key {key[:12]}"
                f" is not the current {it.key[:12]}); reload the page",
                status_code=409,
            )
        if kind not in KINDS:
            return PlainTextResponse(f"decision {kind!r}: expected one of {KINDS}", 400)
        try:
            d = record(run.run_dir, patch_id, key, kind, reviewer, text)
        except ReviewDBError as e:
            return PlainTextResponse(str(e), status_code=400 if kind == "edit" else 500)
        out: dict[str, Any] = {"decision": d.as_dict(), **progress()}
        if d.text:
            out["edited_segments"] = run_segments(d.text)
        return _json(out)

    def run_segments(text: str) -> list[dict[str, Any]]:
        return segments(text, find_mentions(text))

    routes = [
        Route("/", index),
        Route("/static/{name}", static),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/api/patches", patches),
        Route("/api/patch/{patch_id}", patch),
        Route("/img/{patch_id}/{kind}.png", image),
        Route("/api/decision", decide, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(TokenGate, token=token)
    return app


def _current(d: Decision | None, key: str) -> bool:
    """Whether ``d`` decided the caption of request key ``key`` (not an earlier one)."""
    return d is not None and d.key == key


def _ink(hex_colour: str) -> str:
    """Black or white text, whichever reads better on the colour (WCAG relative luminance)."""
    r, g, b = (int(hex_colour[i : i + 2], 16) / 255 for i in (0, 2, 4))
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "#000000" if lum > 0.179 else "#ffffff"


def _json(body: dict[str, Any]) -> Response:
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
