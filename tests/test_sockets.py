"""A live socket's pump (`contact_center.api.sockets`) closes when its socket is told to,
whatever its sender is doing at that moment."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.websockets import WebSocket

from contact_center.api.open_sockets import POLICY, Held, OpenSockets
from contact_center.api.sockets import pump
from contact_center.limits import Limits
from monitoring.hub import Hub
from monitoring.permissions import Principal

REASON = "forbidden: a permission this stream needs was withdrawn"


@pytest.mark.parametrize("steps", range(8))
def test_a_close_that_comes_as_a_send_finishes_is_not_lost(steps: int) -> None:
    """The close comes while a message is being sent, and the send then takes ``steps``
    more turns of the event loop. On Python 3.11 ``asyncio.wait_for`` around the send
    returned its result when the cancellation arrived just as the send finished, and
    the sender went on to wait for its next message: the socket stayed open (CI, on a
    live board whose user lost a permission)."""
    sent = asyncio.run(_close_during_a_send(steps))
    assert sent[-1] == {"type": "websocket.close", "code": POLICY, "reason": REASON}


async def _close_during_a_send(steps: int) -> list[dict[str, Any]]:
    """What the socket was sent, the close told to its pump as it sends a message."""
    hub, sent = Hub(), list[dict[str, Any]]()
    open_sockets = OpenSockets(access=None)  # type: ignore[arg-type]  (only holds here)
    app = SimpleNamespace(state=SimpleNamespace(
        limits=Limits(100, 10, 10), open_sockets=open_sockets))
    connected = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not connected.is_set():
            connected.set()
            return {"type": "websocket.connect"}
        await asyncio.Event().wait()  # the client sends nothing more
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "websocket.send":
            held.close(REASON)
            for _ in range(steps):
                await asyncio.sleep(0)

    ws = WebSocket({"type": "websocket", "app": app, "path": "/v1/live", "headers": [],
                    "subprotocols": []}, receive, send)
    principal = Principal(user_id="1", username="kim", agent_id=None,
                          profiles=("CallCenterManager",), permissions=frozenset())
    held = Held("token", principal, (), lambda _: None, 0)
    sub = hub.subscribe("live")
    pumping = asyncio.create_task(pump(ws, "live", sub, hub, [], held=held))
    await connected.wait()
    hub.publish("live", {"type": "conversation.updated"})
    # A lost close: the pump waits for a next message (a timeout here would not do: the
    # pump ends a cancellation by closing its socket, as it does for any end).
    done, _ = await asyncio.wait({pumping}, timeout=2)
    assert pumping in done, "the pump did not close its socket"
    return sent
