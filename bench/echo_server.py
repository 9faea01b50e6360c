"""A bare WebSocket endpoint on contact-center's server stack: the ceiling a route can reach.

One Starlette WebSocket route at ``/v1/ingest``: it says hello (as the ingest socket
does), then parses each JSON frame and answers a small JSON ack. Nothing is scored,
stored or checked (any ``Authorization`` header is ignored). It runs under uvicorn with
the options ``contact-center serve`` uses: the websockets-sansio protocol, no
per-message deflate, the same maximum frame size, and the same HTTP protocol class and
connection cap (``contact_center.connections.server_options``), uvloop where installed.

    python bench/echo_server.py --port 8765
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contact_center.connections import server_options  # noqa: E402


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text('{"type":"hello","protocol":"echo"}')
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text") or message.get("bytes") or b"{}"
            event = json.loads(raw)
            await ws.send_text(json.dumps(
                {"type": "ack", "event": event.get("type"), "status": "accepted",
                 "conversation_id": event.get("conversation_id"),
                 "segment_id": event.get("segment_id")}, separators=(",", ":")))
    except WebSocketDisconnect:
        return


app = Starlette(routes=[WebSocketRoute("/v1/ingest", echo)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, ws="websockets-sansio",
                ws_max_size=1 << 20, ws_per_message_deflate=False, log_level="warning",
                access_log=False, log_config=None, **server_options(10.0, None))


if __name__ == "__main__":
    main()
