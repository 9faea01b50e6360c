"""Settings: one model, read from the command line's options, then CC_* environment
variables, then a TOML configuration file (``--config`` or ``CC_CONFIG``), then the
defaults; validated at start. See docs/operations.md#configuration."""

from __future__ import annotations

import functools
import os
import tomllib
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from analytics.rolling import RollingConfig
from analytics.rules import Severity
from monitoring.alerts import AlertPolicy
from monitoring.recording import Policies, RecordingPolicy
from monitoring.redaction import redacted
from monitoring.retention import RetentionPolicy
from monitoring.sessions import SessionPolicy
from monitoring.webhooks import allowed_networks


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CC_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    database: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, Path) else v)
                        ] = Field(default="contact-center.db",
                                  description="a SQLite file, or a postgresql:// URL")
    sqlite_synchronous: str = Field(default="FULL", pattern="^(FULL|NORMAL|EXTRA)$")
    rules_file: Path | None = None
    support_lexicon: bool = Field(default=True, description=(
        "apply the shipped support-vocabulary overlay (analytics/lexicons/support.txt) "
        "under any lexicon_overlay; false: VADER's own lexicon"))
    lexicon_overlay: Path | None = None
    scorer: Literal["fast", "reference"] = Field(default="fast", description=(
        "fast: analytics.fast_vader, the same scores as vaderSentiment, faster; "
        "reference: vaderSentiment itself"))

    recording: RecordingPolicy = Field(default="all", description=(
        "whose words are kept in a conversation whose queue has no policy and that names "
        "none: none, agent, customer or all"))
    recording_by_queue: dict[str, RecordingPolicy] = Field(
        default_factory=dict, max_length=10_000, description=(
            "each queue's recording policy, e.g. {\"payments\": \"agent\"}; a conversation "
            "may name its own when it starts"))
    recording_partials: bool = Field(default=False, description=(
        "keep partial (interim) hypotheses too, as segment.partial events, where the "
        "policy keeps their role's words, in a conversation whose queue does not say"))
    recording_partials_by_queue: dict[str, bool] = Field(
        default_factory=dict, max_length=10_000, description=(
            "each queue's choice to keep partials, e.g. {\"voice-claims\": true}; a "
            "conversation may name its own when it starts"))
    pii_redaction: bool = Field(default=True, description=(
        "replace payment cards, IBANs, SSNs, e-mail addresses and phone numbers with "
        "placeholders before a turn is stored, indexed, shown or sent (scoring and rules "
        "read it as said)"))
    pii_region: str = Field(default="US", pattern="^[A-Z]{2}$", description=(
        "the country whose phone numbers may be written without a country code"))

    rolling_window: int = Field(default=5, ge=1, le=1000)
    ewma_alpha: float = Field(default=0.5, gt=0, le=1)

    batch_size: int = Field(default=500, ge=1, le=10_000)
    commit_window_ms: float = Field(default=5.0, ge=0, le=1000, description=(
        "embedded: how long after a batch's write started the next batch may gather, "
        "unless a full batch waits: while the write is in flight, and after it too when "
        "its batch held several events (fewer, fuller batches at a moderate rate; at most "
        "this much more latency); 0: a batch is taken as soon as one event waits"))
    idle_timeout_seconds: float = Field(default=7200.0, ge=0, le=30 * 86400, description=(
        "a live conversation with no event for this long ends itself (reason "
        "idle_timeout: a connector that crashed never ends it); 0: never"))
    # The alert workflow (see docs/alerts.md).
    alert_resolve_on_end: bool = Field(default=True, description=(
        "a conversation's end (idle timeout included) resolves its alert "
        "(resolution conversation_ended)"))
    alert_recovered_above: float = Field(default=0.05, ge=-1, le=1, description=(
        "the customer's rolling sentiment at or above which a turn counts towards "
        "recovery"))
    alert_recovered_turns: int = Field(default=3, ge=0, le=100, description=(
        "customer turns in a row above alert_recovered_above that resolve the alert "
        "(resolution recovered); 0: never"))
    alert_renotify_seconds: dict[Severity, float] = Field(
        default_factory=lambda: dict(AlertPolicy().renotify_seconds), description=(
            "an open alert nobody acknowledged is notified again after this long, per "
            "severity (JSON object); 0: never"))
    alert_events_keep_days: float = Field(default=30.0, gt=0, le=3650, description=(
        "alert events kept for clients that resume (older: resync)"))
    webhook_allowed_networks: list[str] = Field(default_factory=list, description=(
        "networks (CIDRs, e.g. [\"10.0.0.0/8\"]) webhooks may call though they are not "
        "public: private, loopback and link-local addresses are refused otherwise"))
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60, description=(
        "a receiver must answer a webhook within this long"))
    webhook_disable_after_seconds: float = Field(default=3 * 86400.0, gt=0, description=(
        "an endpoint whose deliveries have failed for this long is disabled"))
    tell_agent_monitored: bool = Field(default=False, description=(
        "tell the agent desktop (a connector socket that takes pushes) when a supervisor "
        "starts or stops monitoring its conversation (monitor.started, monitor.ended; "
        "not who); read where the monitor socket opens, so set it alike on every API node"))
    gc_freeze_seconds: float = Field(default=1.0, ge=0, description=(
        "freeze what survives a young collection into the collector's permanent "
        "generation, and every this many seconds the young generations' survivors (no "
        "collection pauses that grow with the live state); 0: never"))
    switch_interval_ms: float = Field(default=0.5, gt=0, le=100, description=(
        "the longest a thread holds the interpreter lock while another waits for it "
        "(sys.setswitchinterval, set by `serve`): the SQLite writer thread takes it back "
        "after each statement, behind a busy event loop; Python's default is 5"))
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

    # Abuse limits (see docs/operations.md#limits).
    ws_messages_per_second: float = Field(default=10_000, gt=0, description=(
        "messages a client may send per second on one WebSocket (bursts of one second's "
        "worth); beyond, the socket is answered rate_limited and closed"))
    max_sockets_per_token: int = Field(default=200, ge=1, description=(
        "WebSockets one API token may hold open at once (per API node)"))
    auth_failures_per_minute: int = Field(default=30, ge=0, description=(
        "failed authentications one client address may make per minute; past them, its "
        "further failures are answered 429 after a pause for the rest of the minute "
        "(good tokens still pass); 0: no limit"))

    # Browser sessions (see docs/security.md#signing-in-from-a-browser).
    session_idle_seconds: float = Field(default=1800.0, ge=60, le=86400, description=(
        "a browser session unused for this long ends (to a minute late at most)"))
    session_lifetime_seconds: float = Field(default=43200.0, ge=60, le=30 * 86400,
                                            description=(
        "a browser session ends this long after signing in, however much it is used"))
    session_cookie_secure: bool = Field(default=False, description=(
        "always mark the session cookie Secure (sent over HTTPS only); without it, only "
        "when the request came over HTTPS (behind a TLS proxy: set this, or have the "
        "server trust the proxy's X-Forwarded-Proto)"))

    # Operations (see docs/operations.md).
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_port: int | None = Field(default=None, ge=1, le=65535, description=(
        "a worker's Prometheus port (an API node serves /metrics itself)"))
    metrics_host: str = "127.0.0.1"

    # Scale-out (see docs/deployment.md#scale-out): without ``redis``, everything runs
    # embedded in one process.
    redis: str | None = Field(default=None, description="redis:// URL: run as an API node")
    redis_namespace: str = Field(default="cc", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    partitions: int = Field(default=16, ge=1, le=1024)
    worker: bool = Field(default=False, description="an API node also runs a worker")
    reply_timeout_seconds: float = Field(default=30.0, gt=0)

    # Retention (see docs/security.md#retention-and-erasure).
    retention_days: float | None = Field(default=None, gt=0, le=36500, description=(
        "days the words of an ended conversation whose queue has no retention are kept, "
        "then removed (scores, times and alerts stay); default: for ever"))
    retention_by_queue: dict[str, Annotated[float, Field(gt=0, le=36500)]] = Field(
        default_factory=dict, max_length=10_000, description=(
            "each queue's retention in days, e.g. {\"payments\": 30}"))
    retention_interval_seconds: float = Field(default=3600.0, gt=0, le=86400, description=(
        "how often the retention job looks for conversations due"))

    @property
    def rolling(self) -> RollingConfig:
        return RollingConfig(window=self.rolling_window, ewma_alpha=self.ewma_alpha)

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        allowed_networks(value)  # (names the bad one)
        return value

    @property
    def recording_policies(self) -> Policies:
        return Policies(self.recording, dict(self.recording_by_queue),
                        self.recording_partials, dict(self.recording_partials_by_queue))

    @property
    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(self.retention_days, dict(self.retention_by_queue))

    @property
    def session_policy(self) -> SessionPolicy:
        return SessionPolicy(self.session_idle_seconds, self.session_lifetime_seconds)

    @property
    def redactor(self) -> Callable[[str], str] | None:
        """What of a text is kept or shown (docs/security.md#pii); None: all of it."""
        if not self.pii_redaction:
            return None
        return functools.partial(redacted, region=self.pii_region)

    @property
    def alert_policy(self) -> AlertPolicy:
        return AlertPolicy(resolve_on_end=self.alert_resolve_on_end,
                           recovered_above=self.alert_recovered_above,
                           recovered_turns=self.alert_recovered_turns,
                           renotify_seconds={severity: self.alert_renotify_seconds.get(
                               severity, 0.0) for severity in ("low", "medium", "high")})


SECRET_SETTINGS = ("database", "redis")  # URLs that may hold a password


class ConfigError(ValueError):
    """Settings that cannot be used, said for a person: which setting, from where, why."""


def load_settings(config_file: Path | None = None, **options: Any) -> Settings:
    """The effective settings: ``options`` (the command line's; None means not given)
    over the environment over ``config_file`` (else $CC_CONFIG) over the defaults."""
    given = {k: v for k, v in options.items() if v is not None}
    config_file = config_file_in_use(config_file)
    from_file = read_config_file(config_file) if config_file is not None else {}

    class Effective(Settings):
        @classmethod
        def settings_customise_sources(
                cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, InitSettingsSource(settings_cls, from_file))

    try:
        return Settings.model_validate(Effective(**given).model_dump())
    except ValidationError as exc:
        raise ConfigError(_explain(exc, given, from_file, config_file)) from None


def config_file_in_use(config_file: Path | None) -> Path | None:
    if config_file is None and os.environ.get("CC_CONFIG"):
        return Path(os.environ["CC_CONFIG"])
    return config_file


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        values = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: "
                          f"{exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not TOML: {exc}") from None
    unknown = sorted(set(values) - Settings.model_fields.keys())
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; "
                          "'contact-center config' lists them all")
    return values


def source_of(name: str, given: dict[str, Any], from_file: dict[str, Any],
              config_file: Path | None) -> str:
    if name in given:
        return "command line"
    if f"CC_{name.upper()}" in {k.upper() for k in os.environ}:
        return f"environment CC_{name.upper()}"
    if name in from_file:
        return f"file {config_file}"
    return "default"


def _explain(exc: ValidationError, given: dict[str, Any], from_file: dict[str, Any],
             config_file: Path | None) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else "settings"
        lines.append(f"  {name} ({source_of(name, given, from_file, config_file)}): "
                     f"{error['msg']}")
    return "invalid settings:\n" + "\n".join(lines)


def effective(settings: Settings) -> dict[str, Any]:
    """The settings as plain values for display, passwords masked."""
    values = settings.model_dump(mode="json")
    for name in SECRET_SETTINGS:
        if values.get(name):
            values[name] = masked(values[name])
    return values


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
