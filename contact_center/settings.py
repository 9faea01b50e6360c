"""Settings, read from CC_* environment variables (and the CLI's options)."""

from __future__ import annotations

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

    @property
    def rolling(self) -> RollingConfig:
        return RollingConfig(window=self.rolling_window, ewma_alpha=self.ewma_alpha)
