"""Operations: health probes (open by design: they reveal no data), Prometheus metrics,
and the scale-out pipeline's dead letters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from contact_center import __version__
from contact_center import service_metrics as metrics
from contact_center.api.auth import require
from contact_center.api.openapi import COMMON
from contact_center.api.views import Health, Liveness
from monitoring.permissions import Permission, Principal

router = APIRouter()  # (each route names its tags: they were declared apart before)


class DeadLetter(BaseModel):
    id: str = Field(description="The dead letter's id on the dead-letter stream")
    partition: int
    entry: str = Field(description="The event's entry id on its partition stream")
    deliveries: int = Field(description="How often it was delivered without being applied")
    at: float = Field(description="When it was set aside (Unix time)")
    event: Any = Field(description="The event as the API node passed it on")
    node: str = Field(description="The API node that received it")
    request: str


class DeadLetters(BaseModel):
    dead_letters: list[DeadLetter]


@router.get("/v1/admin/dead-letters", response_model=DeadLetters, tags=["admin"],
            responses=COMMON)
async def dead_letters(request: Request, limit: int = Query(default=100, ge=1, le=1000),
                       _: Principal = require(Permission.OPERATE)) -> dict[str, Any]:
    """Events set aside by scale-out workers after failing too often, newest first
    (always empty embedded, where a failing event is answered ``internal_error`` at
    once)."""
    return {"dead_letters": await request.app.state.runtime.dead_letters(limit)}


not_ready: dict[int | str, dict[str, Any]] = {503: {"description": "Not ready"}}

@router.get("/healthz", response_model=Health, tags=["operations"], responses=not_ready)
@router.get("/readyz", response_model=Health, tags=["operations"], responses=not_ready)
async def health(request: Request) -> JSONResponse:
    """Readiness: dependencies and pipeline depth (open by design: it reveals no
    data). 503 when the pipeline has stopped or a dependency does not answer:
    nothing would be acknowledged. ``/readyz`` and ``/healthz`` are the same."""
    status, fields = await request.app.state.runtime.health()
    return JSONResponse({"status": status, "version": __version__} | fields,
                        status_code=200 if status == "ok" else 503)

@router.get("/livez", response_model=Liveness, tags=["operations"], responses=not_ready)
async def liveness(request: Request) -> JSONResponse:
    """Liveness: 503 only when restarting this process would help (its pipeline or
    worker has stopped); a dependency that is down is /readyz's concern. Open."""
    alive = request.app.state.runtime.alive()
    return JSONResponse({"status": "ok" if alive else "pipeline stopped"},
                        status_code=200 if alive else 503)

@router.get("/metrics", tags=["operations"], response_class=Response,
         responses={200: {"content": {"text/plain": {}},
                          "description": "Prometheus text format"},
                    **{status: COMMON[status] for status in (401, 403, 429)}})
async def prometheus_metrics(request: Request,
                             _: object = require(Permission.OPERATE)) -> Response:
    """This process's metrics for Prometheus (see docs/operations.md#metrics)."""
    metrics.BUS_DEPTH.set(request.app.state.runtime.bus.depth)
    metrics.HUB_SUBSCRIBERS.set(request.app.state.hub.subscriptions)
    return Response(metrics.exposition(),
                    media_type="text/plain; version=0.0.4; charset=utf-8")
