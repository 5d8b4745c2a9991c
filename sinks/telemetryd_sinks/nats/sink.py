"""The NATS sink: records published to a JetStream stream, each batch acknowledged in full.

Every record is one message on `<subject_prefix>.<host>.<path>.<version>` (see
telemetryd_sinks.nats.subjects) with a `Nats-Msg-Id` made from its bytes. A batch is delivered
when JetStream acknowledged every message of it. After a failure (a lost connection, a
stream leader that died before answering) only the messages not acknowledged are published
again (PartialDelivery), with the same ids: one that was stored but whose acknowledgement was
lost is stored once, by the stream's duplicate window.

Connections are the sink's own business, not nats-py's: nats-py's reconnect is off, so a lost
connection ends the batch at once (instead of buffering behind a dead socket until a
timeout), and the next attempt, paced by the worker's backoff, connects afresh, trying the
configured servers in turn from the last one that worked. A server that is down when the
daemon starts is one such failure: the daemon starts, the sink reports unhealthy and its
queue fills until a server answers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import nats.errors
from nats.aio.client import Client
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from telemetryd.core.record import Record
from telemetryd.sink import PartialDelivery, Sink, SinkHealth, SinkSettings
from telemetryd_sinks.nats.acks import AckWindow, PublishError
from telemetryd_sinks.nats.stream import StreamMismatch, WantedStream, ensure_stream
from telemetryd_sinks.nats.subjects import TOKEN, is_subject, subject_for

log = logging.getLogger("telemetryd.sink.nats")

GiB = 1024 * 1024 * 1024
DAY_SECS = 24 * 3600
URL_SCHEMES = ("nats", "tls", "ws", "wss")

#: What a destination in a bad state raises: the sink reports it and the worker retries.
UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    nats.errors.Error,
    StreamMismatch,
    PublishError,
)


class NatsSettings(SinkSettings):
    servers: list[str] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"],
        min_length=1,
        description="NATS server URLs (nats://, tls://, ws://, wss://), tried in turn.",
    )
    subject_prefix: str = Field(
        "telemetryd",
        description="First token(s) of every subject; the stream captures `<prefix>.>`.",
    )
    stream: str = Field("TELEMETRYD", description="The JetStream stream's name.")
    num_replicas: int = Field(1, ge=1, le=5, description="Replicas of a stream the sink creates.")
    storage: Literal["file", "memory"] = Field("file", description="Storage of a new stream.")
    max_age_secs: float = Field(
        7 * DAY_SECS, ge=0, description="Oldest message the stream keeps; 0 keeps them forever."
    )
    max_bytes: int = Field(
        1 * GiB, ge=0, description="Most bytes the stream keeps (oldest dropped); 0: no limit."
    )
    max_msgs: int = Field(
        0, ge=0, description="Most messages the stream keeps (oldest dropped); 0: no limit."
    )
    duplicate_window_secs: float = Field(
        120.0,
        gt=0,
        validate_default=True,  # checked against max_age_secs even when not given
        description="How long JetStream remembers message ids: a batch retried within it is "
        "stored once.",
    )
    max_outstanding_acks: int = Field(
        1000, gt=0, le=100_000, description="Most messages published and not yet acknowledged."
    )
    connect_timeout_secs: float = Field(
        2.0, gt=0, description="How long connecting to one server may take."
    )
    ack_timeout_secs: float = Field(
        5.0,
        gt=0,
        description="How long to wait for JetStream's next acknowledgement or API reply before "
        "the batch fails and is retried on a new connection.",
    )
    password: SecretStr | None = Field(None, description="Password of `user`.")
    token: SecretStr | None = Field(None, description="Authentication token.")
    creds_file: Path | None = Field(
        None, description="A NATS credentials file (user JWT and NKey seed); needs nkeys."
    )
    # After the secrets, and checked even when absent: the checks of how they combine are
    # this key's, so an error never echoes a password or token.
    user: str | None = Field(
        None, min_length=1, validate_default=True, description="User name (with password)."
    )

    @model_validator(mode="before")
    @classmethod
    def _one_url(cls, data: Any) -> Any:
        """`url = "nats://..."` (the shorthand for a single server) is `servers = ["nats://..."]`."""
        if isinstance(data, dict) and "url" in data:
            if "servers" in data:
                raise ValueError("set url or servers, not both")
            data = {k: v for k, v in data.items() if k != "url"} | {"servers": [data["url"]]}
        return data

    @field_validator("servers")
    @classmethod
    def _server_urls(cls, servers: list[str]) -> list[str]:
        for url in servers:
            parts = urlsplit(url)
            try:
                parts.port  # noqa: B018 - raises on a port that is not a number
            except ValueError:
                raise ValueError(f"{url!r} has a bad port") from None
            if parts.scheme not in URL_SCHEMES or not parts.hostname:
                raise ValueError(f"{url!r} is not a NATS server URL such as nats://127.0.0.1:4222")
        return servers

    @field_validator("subject_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if not is_subject(prefix):
            raise ValueError(
                f"{prefix!r} is not a subject prefix: tokens of letters, digits, _ and -, "
                "separated by dots (no wildcards)"
            )
        return prefix

    @field_validator("stream")
    @classmethod
    def _stream_name(cls, name: str) -> str:
        if not TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a stream name: letters, digits, _ and - only")
        return name

    @field_validator("duplicate_window_secs")
    @classmethod
    def _window(cls, window: float, info: ValidationInfo) -> float:
        max_age = info.data.get("max_age_secs")
        if max_age and window > max_age:
            raise ValueError(
                f"duplicate_window_secs cannot be longer than max_age_secs ({max_age})"
            )
        return window

    @field_validator("user")
    @classmethod
    def _one_auth_method(cls, user: str | None, info: ValidationInfo) -> str | None:
        if (user is None) != (info.data.get("password") is None):
            raise ValueError("user and password go together: give both or neither")
        methods = [
            name
            for name, given in (
                ("user/password", user is not None),
                ("token", info.data.get("token") is not None),
                ("creds_file", info.data.get("creds_file") is not None),
            )
            if given
        ]
        if len(methods) > 1:
            raise ValueError(f"choose one authentication method, not {' and '.join(methods)}")
        return user

    @field_validator("creds_file")
    @classmethod
    def _creds(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        if not path.is_file():
            raise ValueError(f"no credentials file at {path}")
        if importlib.util.find_spec("nkeys") is None:
            raise ValueError("a credentials file needs the nkeys package: pip install nkeys")
        return path


@dataclass
class _Link:
    """One connection, with its acknowledgement window, and whether the stream is checked."""

    nc: Client
    acks: AckWindow
    url: str
    stream_ready: bool = False
    errors: list[str] = field(default_factory=list)  # nats-py's asynchronous errors

    async def close(self) -> None:
        with contextlib.suppress(*UNAVAILABLE):
            await self.acks.close()
        with contextlib.suppress(*UNAVAILABLE):
            await self.nc.close()


class _ConnectFailed(ConnectionError):
    """A server refused or did not answer; the message is nats-py's reason."""


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class NatsSink(Sink):
    """Publishes records to a JetStream stream, which it creates or checks."""

    settings_model = NatsSettings

    def __init__(self, settings: SinkSettings) -> None:
        if not isinstance(settings, NatsSettings):
            raise TypeError(f"NatsSink needs NatsSettings, not {type(settings).__name__}")
        super().__init__(settings)
        self._settings = settings
        self._stream = WantedStream(
            name=settings.stream,
            subject=f"{settings.subject_prefix}.>",
            num_replicas=settings.num_replicas,
            storage=settings.storage,
            max_age_secs=settings.max_age_secs,
            max_bytes=settings.max_bytes,
            max_msgs=settings.max_msgs,
            duplicate_window_secs=settings.duplicate_window_secs,
        )
        self._link: _Link | None = None
        self._first_server = 0  # the next connection tries this one first
        self._subjects: dict[tuple[str, str], str] = {}
        self._error: str | None = None
        self.published = 0  # acknowledged messages, over every connection
        self.duplicates = 0  # of which the stream had already stored (a retried batch)

    async def start(self) -> None:
        try:
            await self._ready_link()
        except UNAVAILABLE as e:
            self._error = _describe(e)
            log.warning(
                "NATS not available at start; the sink retries with its first batch",
                extra={"fields": {"sink": self.name, "error": self._error}},
            )

    async def write_batch(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        link: _Link | None = None
        try:
            link = await self._ready_link()
            await link.acks.publish(batch, self._subject_of)
        except Exception as e:
            self._error = _describe(e)
            if link is None:
                raise
            remaining = link.acks.unstored(batch)
            await self._after_failure(link, e)
            if len(remaining) == len(batch):
                raise
            # Only what JetStream did not acknowledge is published again.
            raise PartialDelivery(remaining, e) from e
        self._error = None

    async def _after_failure(self, link: _Link, error: Exception) -> None:
        if isinstance(error, PublishError):
            link.stream_ready = False  # the server answered: the stream may be gone
        else:
            # A silent server, or a dead connection: whatever it still answers is ignored.
            await self._drop_link()

    def _subject_of(self, record: Record) -> str:
        key = (record.schema_id, record.version)
        subject = self._subjects.get(key)
        if subject is None:
            subject = self._subjects[key] = subject_for(self._settings.subject_prefix, *key)
        return subject

    async def _ready_link(self) -> _Link:
        """A live connection with the stream in place, made now if need be."""
        link = self._link
        if link is not None and not link.nc.is_connected:
            await self._drop_link()
            link = None
        if link is None:
            link = self._link = await self._connect()
        if not link.stream_ready:
            jsm = link.nc.jsm(timeout=self._settings.ack_timeout_secs)
            try:
                await ensure_stream(jsm, self._stream)
            except nats.errors.TimeoutError as e:
                raise TimeoutError(
                    f"no JetStream answer about stream {self._stream.name!r} from {link.url} "
                    f"in {self._settings.ack_timeout_secs} s (is JetStream enabled, is there "
                    "a meta leader?)"
                ) from e
            link.stream_ready = True
        return link

    async def _drop_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            self.published += link.acks.published
            self.duplicates += link.acks.duplicates
            await link.close()

    async def _connect(self) -> _Link:
        servers = self._settings.servers
        failures: list[str] = []
        for step in range(len(servers)):
            index = (self._first_server + step) % len(servers)
            try:
                link = await self._connect_to(servers[index])
            except UNAVAILABLE as e:
                reason = str(e) if isinstance(e, _ConnectFailed) else _describe(e)
                failures.append(f"{servers[index]}: {reason}")
                continue
            self._first_server = index
            return link
        # The next attempt starts with the server after the one that failed first.
        self._first_server = (self._first_server + 1) % len(servers)
        raise ConnectionError("cannot connect to NATS: " + "; ".join(failures))

    async def _connect_to(self, url: str) -> _Link:
        settings = self._settings
        nc = Client()
        errors: list[str] = []
        acks: AckWindow | None = None

        async def on_error(e: Exception) -> None:
            # nats-py's default logs a traceback for every failed attempt; the worker's
            # retry log and health() say it once, with the batch.
            errors[:] = [_describe(e)]

        async def on_closed() -> None:
            if acks is not None:
                reason = errors[0] if errors else "closed by the server"
                acks.fail(ConnectionError(f"connection to {url} lost ({reason})"))

        options: dict[str, Any] = {
            "servers": [url],
            "name": f"telemetryd:{self.name}",
            "allow_reconnect": False,
            # nats-py tries a server at least twice (it drops one from its pool only after
            # max_reconnect_attempts + 1 failures, whatever allow_reconnect says): both
            # attempts, back to back, fit in connect_timeout_secs.
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0,
            "connect_timeout": settings.connect_timeout_secs / 2,
            "error_cb": on_error,
            "closed_cb": on_closed,
        }
        if settings.user is not None and settings.password is not None:
            options |= {"user": settings.user, "password": settings.password.get_secret_value()}
        if settings.token is not None:
            options["token"] = settings.token.get_secret_value()
        if settings.creds_file is not None:
            options["user_credentials"] = str(settings.creds_file)
        try:
            await nc.connect(**options)
            acks = AckWindow(nc, settings.max_outstanding_acks, settings.ack_timeout_secs)
            await acks.open()
        except BaseException as e:
            with contextlib.suppress(*UNAVAILABLE):
                await nc.close()
            if isinstance(e, nats.errors.NoServersError) and errors:
                # All nats-py says in the end; the reason came through error_cb.
                raise _ConnectFailed(errors[0]) from e
            raise
        return _Link(nc, acks, url, errors=errors)

    def health(self) -> SinkHealth:
        if self._error is not None:
            return SinkHealth(False, self._error)
        link = self._link
        if link is None or not link.nc.is_connected:
            reason = f" ({link.errors[0]})" if link is not None and link.errors else ""
            return SinkHealth(
                False, f"not connected to NATS{reason}; the sink reconnects with its next batch"
            )
        return SinkHealth(True, f"connected to {link.url}, stream {self._settings.stream!r}")

    async def close(self) -> None:
        await self._drop_link()
        log.info(
            "NATS sink closed",
            extra={
                "fields": {
                    "sink": self.name,
                    "published": self.published,
                    "duplicates": self.duplicates,
                }
            },
        )
