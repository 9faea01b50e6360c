"""Request guards that run before any route: the body size limit and URLs with NUL."""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 16 * 1024 * 1024


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, {"type": "error", "code": "message_too_large",
                                        "message": f"request bodies are limited to {limit} bytes"})


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes: at once when Content-Length says so,
    else as soon as the streamed (chunked) body passes it, so none is buffered whole.
    (The largest valid batch is 500 segments of 8,000 characters.)"""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            exc = _too_large(self.limit)
            await JSONResponse(exc.detail, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _too_large(self.limit)
            return message

        await self.app(scope, counted, send)


class RefuseNul:
    """Refuses a URL holding a NUL character (``%00``): no store can keep or look one up
    (PostgreSQL refuses it), so it gets a 422 ``validation_error``, never a 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and (
                b"%00" in scope.get("raw_path", b"") or "\x00" in scope.get("path", "")
                or b"%00" in scope.get("query_string", b"")):
            body = {"type": "error", "code": "validation_error",
                    "message": "URLs must not contain NUL characters (%00)"}
            if scope["type"] == "http":
                await JSONResponse(body, status_code=422)(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)
