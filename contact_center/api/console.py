"""The supervisor console (docs/console.md): its pages, for a browser signed in with the
session cookie, and their scripts and styles (`contact_center/console`). A page is a
shell a script fills from the API, which checks every call again; the page itself is
refused to a user without its permission, and sends one not signed in to sign in."""

from __future__ import annotations

import hashlib
import html
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from string import Template
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from contact_center.api.auth import COOKIE
from contact_center.api.supervision import NotLive, find_live
from monitoring.permissions import Permission, Principal
from monitoring.sessions import csrf_token, key_of

router = APIRouter(include_in_schema=False)

CONSOLE = Path(__file__).resolve().parents[1] / "console"
P = Permission

# Scripts from this origin only, no inline script or style, no framing, nothing sent
# elsewhere: a page cannot run what a customer typed, nor be embedded to be clicked on.
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
          "base-uri 'none'")
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
           "X-Frame-Options": "DENY"}


@dataclass(frozen=True, slots=True)
class Page:
    title: str
    needs: tuple[Permission, ...]  # any one of them
    in_menu: bool = True
    unscoped: bool = False  # its routes refuse a user with a scope


PAGES: dict[str, Page] = {
    "wall": Page("Live wall", (P.REALTIME_METRICS,)),
    "alerts": Page("Alerts", (P.ALERTS_OWN, P.ALERTS_ALL)),
    "agents": Page("Agents", (P.REALTIME_METRICS,)),
    "search": Page("Search", (P.CONTACT_SEARCH,)),
    "rules": Page("Rules", (P.RULES_MANAGE,), unscoped=True),
    "monitor": Page("Monitor", (P.MANAGER_MONITOR,), in_menu=False),
}


def _allowed(principal: Principal, page: Page) -> bool:
    if page.unscoped and principal.within is not None:
        return False
    return any(principal.can(p) for p in page.needs)


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _assets() -> dict[str, Asset]:
    """The scripts, styles and vendored files, read once (the package ships them)."""
    found: dict[str, Asset] = {}
    for path in sorted((CONSOLE / "static").iterdir()):
        if path.is_file() and not path.name.startswith("."):
            body = path.read_bytes()
            media = {".js": "text/javascript", ".css": "text/css"}.get(
                path.suffix, mimetypes.guess_type(path.name)[0] or "application/octet-stream")
            found[path.name] = Asset(body, media, f'"{hashlib.sha256(body).hexdigest()[:16]}"')
    return found


ASSETS = _assets()
SHELL = Template((CONSOLE / "page.html").read_text())


def _fragment(name: str) -> str:
    return (CONSOLE / "pages" / f"{name}.html").read_text()


async def _signed_in(request: Request) -> tuple[Principal, str] | None:
    """The user the session cookie names, and its secret; None without a live session."""
    secret = request.cookies.get(COOKIE)
    key = key_of(secret)
    if key is None or secret is None:
        return None
    principal, _ = await request.app.state.access.principal_at(key, used=True)
    return None if principal is None else (principal, secret)


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status, headers=HEADERS)


def _menu(principal: Principal, current: str) -> str:
    links = []
    for name, page in PAGES.items():
        if page.in_menu and _allowed(principal, page):
            here = ' aria-current="page"' if name == current else ""
            links.append(f'<li><a href="/console/{name}"{here}>{html.escape(page.title)}</a></li>')
    return "\n".join(links)


def render(principal: Principal | None, secret: str | None, name: str, title: str,
           main: str, data: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
    """A page: the shell with its menu, the user, and its script (``name``.js)."""
    attributes = {"page": name, **(data or {})}
    if principal is not None and secret is not None:
        attributes |= {"user": principal.username, "csrf": csrf_token(secret),
                       "permissions": " ".join(sorted(principal.permissions))}
    text = SHELL.substitute(
        title=html.escape(title),
        data=" ".join(f'data-{k}="{html.escape(v)}"' for k, v in attributes.items()),
        menu="" if principal is None else _menu(principal, name),
        user="" if principal is None else html.escape(principal.username),
        signed_in="" if principal is not None else "hidden",
        main=main, script=f"/console/assets/{name}.js")
    return _html(text, status)


def _refused(principal: Principal, secret: str, page: Page, status: int, why: str) -> HTMLResponse:
    main = (f'<h1>{html.escape(page.title)}</h1><p class="refused" role="alert">'
            f"{html.escape(why)}</p>")
    return render(principal, secret, "refused", page.title, main, status=status)


def _to_sign_in(request: Request) -> RedirectResponse:
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/sign-in?next={quote(wanted)}", 303, headers=HEADERS)


@router.get("/console")
async def console_home(request: Request) -> Response:
    """The first page the user may open."""
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_sign_in(request)
    principal, secret = signed_in
    for name, page in PAGES.items():
        if page.in_menu and _allowed(principal, page):
            return RedirectResponse(f"/console/{name}", 303, headers=HEADERS)
    return render(principal, secret, "refused", "Console",
                  '<h1>Console</h1><p class="refused" role="alert">Your security profile '
                  "opens none of the console's pages.</p>", status=403)


@router.get("/console/sign-in")
async def sign_in_page() -> Response:
    return render(None, None, "sign-in", "Sign in", _fragment("sign-in"))


@router.get("/console/assets/{name}")
async def asset(request: Request, name: str) -> Response:
    """A script, style or vendored file of the console (public: they hold no data)."""
    found = ASSETS.get(name)
    if found is None:
        return Response(status_code=404, headers=HEADERS)
    headers = {**HEADERS, "Cache-Control": "no-cache", "ETag": found.etag}
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


@router.get("/console/monitor/{conversation_id}")
async def monitor_page(request: Request, conversation_id: str) -> Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _to_sign_in(request)
    principal, secret = signed_in
    page = PAGES["monitor"]
    if not _allowed(principal, page):
        return _refused(principal, secret, page, 403,
                        "Your security profile does not allow monitoring conversations.")
    try:
        await find_live(request, conversation_id, principal)
    except NotLive as exc:
        return _refused(principal, secret, page, exc.status, exc.body["message"])
    return render(principal, secret, "monitor", f"Monitor {conversation_id}",
                  _fragment("monitor"), {"conversation": conversation_id})


@router.get("/console/{name}")
async def page(request: Request, name: str) -> Response:
    signed_in = await _signed_in(request)
    found = PAGES.get(name)
    if signed_in is None:
        return _to_sign_in(request)
    principal, secret = signed_in
    if found is None or not found.in_menu:
        return render(principal, secret, "refused", "Not found",
                      '<h1>Not found</h1><p class="refused" role="alert">No such page.</p>',
                      status=404)
    if not _allowed(principal, found):
        return _refused(principal, secret, found, 403, "Your security profile does not "
                        f"open this page (it needs {' or '.join(found.needs)}"
                        f"{', and a user without a scope' if found.unscoped else ''}).")
    return render(principal, secret, name, found.title, _fragment(name))
