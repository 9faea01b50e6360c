"""Settings, read from CC_* environment variables (and the CLI's options)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from analytics.rolling import RollingConfig


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CC_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    database: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, Path) else v)
                        ] = Field(default="contact-center.db",
                                  description="a SQLite file, or a postgresql:// URL")
    sqlite_synchronous: str = Field(default="FULL", pattern="^(FULL|NORMAL|EXTRA)$")
    rules_file: Path | None = None
    lexicon_overlay: Path | None = None

    rolling_window: int = Field(default=5, ge=1, le=1000)
    ewma_alpha: float = Field(default=0.5, gt=0, le=1)

    batch_size: int = Field(default=500, ge=1, le=10_000)
    bus_queue_size: int = Field(default=10_000, ge=1)
    submit_timeout_seconds: float = Field(default=5.0, gt=0)
    max_message_bytes: int = Field(default=64 * 1024, ge=1024)
    ws_max_frame_bytes: int = Field(default=1024 * 1024, ge=1024)
    ingest_window: int = Field(default=256, ge=1, description="unanswered events per socket")
    subscriber_queue_size: int = Field(default=1000, ge=1)
    allowed_origins: list[str] = Field(default_factory=list)
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300,
                                          description="request headers must arrive within")
    max_connections: int | None = Field(default=None, ge=1, description=(
        "connections at once, beyond which 503; default: the file-descriptor limit - 100"))

    # Scale-out (see docs/deployment.md#scale-out): without ``redis``, everything runs
    # embedded in one process.
    redis: str | None = Field(default=None, description="redis:// URL: run as an API node")
    redis_namespace: str = Field(default="cc", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    partitions: int = Field(default=16, ge=1, le=1024)
    worker: bool = Field(default=False, description="an API node also runs a worker")
    reply_timeout_seconds: float = Field(default=30.0, gt=0)

    @property
    def rolling(self) -> RollingConfig:
        return RollingConfig(window=self.rolling_window, ewma_alpha=self.ewma_alpha)


def masked(url: str) -> str:
    """A database or Redis URL for messages: without its password (in it or its query)."""
    if "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = urllib.parse.urlencode(
        [(k, "***" if k == "password" else v)
         for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
