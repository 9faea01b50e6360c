"""A live socket's pump (`contact_center.api.sockets`) closes when its socket is told to,
whatever its sender is doing at that moment."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.websockets import WebSocket

from contact_center.api import sockets
from contact_center.api.open_sockets import POLICY, Held, OpenSockets
from contact_center.api.sockets import PUSHES_FRAME, SLOW_CONSUMER, Close, pump
from contact_center.limits import Limits
from monitoring import codec
from monitoring.hub import Hub, Message
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


def _peer(app: Any, on_send: Any = None, takes: bool = True) -> tuple[
        WebSocket, list[dict[str, Any]], asyncio.Event]:
    """A WebSocket whose client connects, then only listens; what it is sent, and when it
    has connected. ``on_send(message)`` is called as each message is sent; ``takes``:
    whether a frame's send ever finishes (not: the client stopped reading)."""
    sent, connected = list[dict[str, Any]](), asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not connected.is_set():
            connected.set()
            return {"type": "websocket.connect"}
        await asyncio.Event().wait()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if on_send is not None:
            on_send(message)
        if not takes and message["type"] == "websocket.send":
            await asyncio.Event().wait()

    return WebSocket({"type": "websocket", "app": app, "path": "/v1/live", "headers": [],
                      "subprotocols": []}, receive, send), sent, connected


ENDED = {"conversation.ended": (1000, "conversation ended")}


async def _frames(published: list[dict[str, Any] | Message], batched: bool, later: int = 0,
                  queue_size: int = 1000, first: list[dict[str, Any]] | None = None,
                  on_send: Any = None, end: bool = True,
                  **options: Any) -> list[dict[str, Any]]:
    """What a socket is sent when ``published`` wait for its pump at once, then ``later``
    more come one by one, then (``end``) the conversation ends; ``on_send(hub, message)``
    is called as each message is sent."""
    hub = Hub(queue_size)
    app = SimpleNamespace(state=SimpleNamespace(
        limits=Limits(100, 10, 10), open_sockets=OpenSockets(access=None)))  # type: ignore[arg-type]
    ws, sent, connected = _peer(app, None if on_send is None else lambda m: on_send(hub, m))
    sub = hub.subscribe("c")
    for message in published:
        if isinstance(message, Message):
            hub.offer("c", message, None)
        else:
            hub.publish("c", message)
    pumping = asyncio.create_task(pump(ws, "monitor", sub, hub, first or [], ENDED,
                                       batched=batched, **options))
    await connected.wait()
    for n in range(later):
        await asyncio.sleep(0.01)  # (the pump takes what waits, then waits itself)
        hub.publish("c", {"type": "segment", "n": 1000 + n})
    if end:
        hub.publish("c", {"type": "conversation.ended"})
    async with asyncio.timeout(5):
        await pumping
    return sent


def _unpacked(sent: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Each frame's messages (a batched frame's, or the one of a frame of one)."""
    frames = [json.loads(m["text"]) for m in sent if m["type"] == "websocket.send"]
    return [f["pushes"] if f.get("type") == "pushes" else [f] for f in frames]


def test_batched_pushes_send_what_waits_together_in_one_frame_in_order() -> None:
    """``?pushes=batched``: the messages waiting when the sender wakes go out in one
    frame, in order; one that ends the stream ends its frame, and the close follows. The
    first opening message says so."""
    published = [{"type": "segment", "n": n} for n in range(5)]
    opening = [{"type": "catch_up"}, {"type": "live"}]
    sent = asyncio.run(_frames(published, batched=True, later=3, first=opening))
    frames = _unpacked(sent)
    assert frames[:2] == [[{"type": "catch_up", "pushes": "batched"}], [{"type": "live"}]]
    assert all(json.loads(m["text"])["type"] == "pushes"
               for m in sent[3:] if m["type"] == "websocket.send")
    assert frames[2] == published
    assert [m["n"] for f in frames[3:] for m in f if m["type"] == "segment"] == [
        1000, 1001, 1002]
    assert frames[-1][-1] == {"type": "conversation.ended"}
    assert sent[-1] == {"type": "websocket.close", "code": 1000,
                        "reason": "conversation ended"}
    single = asyncio.run(_frames(published, batched=False, later=3, first=opening))
    assert [len(f) for f in _unpacked(single)] == [1] * 11  # (the default: one a frame)
    assert _unpacked(single)[0] == [{"type": "catch_up"}]
    assert [m for f in _unpacked(single) for m in f][2:] == [m for f in frames[2:] for m in f]


@pytest.mark.parametrize("over", [0, 1])
def test_a_batched_frame_keeps_within_its_bytes(monkeypatch: pytest.MonkeyPatch,
                                                over: int) -> None:
    """Bytes of UTF-8, not characters: two pushes that make a frame of exactly the limit
    share it, one byte more and they do not; a push too large to share goes alone."""
    monkeypatch.setattr(sockets, "MAX_FRAME_BYTES", 400)
    a = {"type": "segment", "text": "é" * 60}
    padding = 400 - len(PUSHES_FRAME.format(codec.dumps(a) + "," + codec.dumps(
        {"type": "segment", "text": ""})).encode()) + over
    b = {"type": "segment", "text": "x" * padding}
    big = {"type": "segment", "text": "é" * 300}
    sent = asyncio.run(_frames([a, b, big], batched=True))
    frames = [m["text"] for m in sent if m["type"] == "websocket.send"]
    assert len(frames[0].encode()) == (400 if not over else len(PUSHES_FRAME.format(
        codec.dumps(a)).encode()))
    assert json.loads(frames[0])["pushes"] == ([a, b] if not over else [a])
    for text in frames:
        assert len(text.encode()) <= 400 or json.loads(text)["pushes"] == [big]
    assert [m for t in frames for m in json.loads(t)["pushes"]] == [
        a, b, big, {"type": "conversation.ended"}]


def test_batched_pushes_skip_what_the_snapshot_held_and_end_with_a_close() -> None:
    """What the snapshot covers and what the client may not see are left out of a frame;
    a rewrite that closes the stream sends what came before it first."""
    numbered = [Message("segment", codec.dumps({"type": "segment", "n": n}), n, "c1")
                for n in range(1, 7)]

    def rewrite(message: Message) -> Message | None:
        n = json.loads(message.text)["n"]
        if n == 5:
            return None
        if n == 6:
            raise Close(POLICY, "forbidden: gone")
        return message

    sent = asyncio.run(_frames(numbered, batched=True, rewrite=rewrite, seen={"c1": 3}))
    assert _unpacked(sent) == [[{"type": "segment", "n": 4}]]
    assert sent[-1] == {"type": "websocket.close", "code": POLICY,
                        "reason": "forbidden: gone"}


def test_a_batched_subscriber_that_overflows_is_cut_off() -> None:
    """Whether the overflow comes before the sender woke or while it sends a frame: what
    was taken goes out, then the close (1013)."""
    published = [{"type": "segment", "n": n} for n in range(10)]
    sent = asyncio.run(_frames(published, batched=True, queue_size=4))
    assert sent[-1]["type"] == "websocket.close" and sent[-1]["code"] == SLOW_CONSUMER

    def flood(hub: Hub, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            for n in range(10):
                hub.publish("c", {"type": "segment", "n": 100 + n})

    sent = asyncio.run(_frames(published[:3], batched=True, queue_size=4, on_send=flood,
                               end=False))
    assert _unpacked(sent) == [published[:3]]
    assert sent[-1]["type"] == "websocket.close" and sent[-1]["code"] == SLOW_CONSUMER


def test_a_stream_that_fails_closes_with_1011() -> None:
    """Not 1000 ("finished": a client would not come back) when the server fails."""
    def rewrite(message: Message) -> Message | None:
        raise RuntimeError("a bug")

    sent = asyncio.run(_frames([{"type": "segment"}], batched=True, rewrite=rewrite,
                               end=False))
    assert sent[-1] == {"type": "websocket.close", "code": 1011,
                        "reason": "internal_error: reconnect"}


@pytest.mark.parametrize("batched", [False, True])
def test_a_client_that_takes_too_long_to_accept_a_message_is_cut_off(
        monkeypatch: pytest.MonkeyPatch, batched: bool) -> None:
    """A send that does not finish within SEND_TIMEOUT (the client stopped reading and
    the server's buffers filled) closes the socket with 1013, the client told why."""
    monkeypatch.setattr(sockets, "SEND_TIMEOUT", 0.05)

    async def scenario() -> list[dict[str, Any]]:
        hub = Hub()
        app = SimpleNamespace(state=SimpleNamespace(
            limits=Limits(100, 10, 10), open_sockets=OpenSockets(access=None)))  # type: ignore[arg-type]
        ws, sent, connected = _peer(app, takes=False)
        sub = hub.subscribe("c")
        pumping = asyncio.create_task(pump(ws, "monitor", sub, hub, [], ENDED,
                                           batched=batched))
        await connected.wait()
        hub.publish("c", {"type": "segment", "n": 1})
        async with asyncio.timeout(5):
            await pumping
        return sent

    sent = asyncio.run(scenario())
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send",
                                         "websocket.close"]
    assert sent[-1] == {"type": "websocket.close", "code": SLOW_CONSUMER,
                        "reason": "client too slow; reconnect"}


def test_the_send_deadline_cuts_off_one_send_that_takes_too_long() -> None:
    """As ``asyncio.timeout`` around each send: one send past the deadline raises
    TimeoutError, however long the stream waited between sends or how many quick sends
    came before it; a send within it is awaited to its end."""
    async def scenario() -> tuple[float, list[str]]:
        deadline, done = sockets.SendDeadline(0.1), list[str]()
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with deadline.watching():
                await asyncio.sleep(0.25)  # waiting for a message is not sending
                for _ in range(15):  # 0.15 s of sends, each well within the deadline
                    await deadline.send(asyncio.sleep(0.01))
                done.append("quick sends")
                await deadline.send(asyncio.sleep(0.08))
                done.append("a send within the deadline")
                stalled = loop.time()
                await deadline.send(asyncio.sleep(5))
                done.append("not reached")
        return loop.time() - stalled, done

    waited, done = asyncio.run(scenario())
    assert done == ["quick sends", "a send within the deadline"]
    assert 0.1 <= waited < 0.5
