"""Alerts: the recent ones (REST) and the alert stream (WebSocket)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, WebSocket

from contact_center.api.auth import authorize_websocket, require
from contact_center.api.openapi import COMMON
from contact_center.api.sockets import pump
from contact_center.api.views import Alerts
from monitoring.messages import ALERTS_TOPIC
from monitoring.permissions import Permission, Principal

router = APIRouter(tags=["supervision"], responses=COMMON)


@router.get("/v1/alerts", response_model=Alerts)
async def list_alerts(request: Request, conversation_id: str | None = None,
                      limit: int = Query(default=100, ge=1, le=1000),
                      principal: Principal = require(Permission.ALERTS_OWN,
                                                     Permission.ALERTS_ALL)) -> dict[str, Any]:
    """Recent alerts this user may see: on their own conversations, or all."""
    if principal.can(Permission.ALERTS_ALL):
        agent_id = None
    elif principal.agent_id is None:
        return {"alerts": []}
    else:
        agent_id = principal.agent_id
    return {"alerts": await request.app.state.store.list_alerts(conversation_id, agent_id,
                                                                limit)}



@router.websocket("/v1/alerts/stream")
async def alert_stream(ws: WebSocket) -> None:
    """Alerts as they are raised: an agent's own conversations, or all for supervisors."""
    principal = await authorize_websocket(ws, Permission.ALERTS_OWN, Permission.ALERTS_ALL)
    if principal is None:
        return
    hub = ws.app.state.hub
    sub = hub.subscribe(ALERTS_TOPIC, accept=lambda meta: principal.can_see_alert(meta["agent_id"]))
    await pump(ws, "alerts", sub, hub, [{"type": "subscribed", "user": principal.username,
                                         "agent_id": principal.agent_id}])
