"""The http sink: batches POSTed as NDJSON to a webhook, or to another telemetryd.

`format = "records"` (the default) posts every record as stored (docs/events.md, Records), one
a line.
`format = "events"` turns each record back into the event it was (docs/events.md) for another
telemetryd's `POST /api/events/batch` (an agent -> aggregator topology): the schema id, version
and original `__timestamp__` from the metadata, `data` the record without its `__` keys. The
aggregator stamps its own `__origin__` (the agent's token identity); the agent's origin is lost,
since an event cannot carry `__` keys and a schema need not allow an extra one.

What the destination answers decides what happens to the batch:

- 2xx: delivered. From a telemetryd batch endpoint (207, or 400 `all_rejected`), the events it
  rejected are in the aggregator's dead-letter: counted by reason and logged once per reason.
- connection errors, timeouts, 408, 429 and 5xx: raised, so the worker retries the batch with
  backoff; a `Retry-After` (seconds or an HTTP date) is honoured through RetryLater.
- 413: the batch is halved until its pieces fit; pieces already delivered are not sent again
  when the worker retries the batch after a later failure.
- 401, 403, 404, 405, 415: no batch can succeed (token, URL or method wrong): retried like an
  outage, unhealthy, until the destination or the configuration is fixed.
- any other 4xx (400, 422, a single record still 413, ...) refuses this batch for good. With
  `dead_letter_path` its records are appended there (JSON Lines, fsynced) and the sink moves
  on; without it the batch is retried like an outage, so no accepted event is ever lost.
"""

from __future__ import annotations

import gzip as gzip_module
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Literal

import anyio.to_thread
import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from telemetryd import __version__
from telemetryd.core.record import Record
from telemetryd.sink import RetryLater, Sink, SinkHealth, SinkSettings
from telemetryd_sinks.file.sink import FileSettings, FileSink
from telemetryd_sinks.http.events import BatchAnswer, EventEncoder, batch_answer_of

log = logging.getLogger("telemetryd.sink.http")

NDJSON = "application/x-ndjson"
#: Statuses after which the same request may succeed later.
RETRYABLE_4XX = frozenset({408, 429})
#: Statuses that no batch can get past: the token, the URL or the method is wrong.
MISADDRESSED = frozenset({401, 403, 404, 405, 415})
#: Bodies larger than this are compressed in a worker thread (zlib releases the GIL).
GZIP_IN_THREAD_BYTES = 64 * 1024
#: The headers the sink sets itself.
RESERVED_HEADERS = frozenset(
    {"content-type", "content-encoding", "content-length", "transfer-encoding", "host"}
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
BODY_SAMPLE_CHARS = 300


class HttpSettings(SinkSettings):
    url: str = Field(description="Where batches are POSTed (http:// or https://).")
    format: Literal["records", "events"] = Field(
        default="records",
        description="records: each record as stored; events: each record turned back into "
        "an event, for another telemetryd's /api/events/batch.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers (a TOML table)."
    )
    auth_token: SecretStr | None = Field(
        default=None, description="Sent as `Authorization: Bearer <token>`."
    )
    auth_token_file: Path | None = Field(
        default=None,
        description="A file holding the token (read at start, surrounding whitespace removed).",
    )
    gzip: bool = Field(default=False, description="Compress request bodies (Content-Encoding).")
    timeout_secs: float = Field(
        default=30.0,
        gt=0,
        description="How long sending a request, or waiting for the next bytes of its answer, "
        "may take.",
    )
    connect_timeout_secs: float = Field(
        default=5.0, gt=0, description="Longest wait for a connection to the destination."
    )
    dead_letter_path: Path | None = Field(
        default=None,
        description="JSON Lines file for the records of batches the destination refuses for "
        "good (4xx); unset: such a batch is retried until the destination takes it.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as e:
            raise ValueError(f"not a URL: {e}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"expected an http:// or https:// URL with a host, not {value!r}")
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"the sink sets {name} itself; remove it from headers")
            if "\r" in text or "\n" in text:
                raise ValueError(f"the value of header {name} has a line break")
        return value

    @model_validator(mode="after")
    def _check_auth_and_format(self) -> HttpSettings:
        if self.auth_token is not None and self.auth_token_file is not None:
            raise ValueError("set auth_token or auth_token_file, not both")
        has_token = self.auth_token is not None or self.auth_token_file is not None
        if has_token and any(name.lower() == "authorization" for name in self.headers):
            raise ValueError("an Authorization header and auth_token(_file) exclude each other")
        return self


@dataclass
class HttpSinkStats:
    """Counters since start, for tests, health and the close log line."""

    requests: int = 0
    body_bytes: int = 0  # bytes on the wire, after gzip
    delivered: int = 0  # records the destination took (2xx)
    rejected: Counter[str] = field(default_factory=Counter)  # by an aggregator, by reason
    dead_lettered: int = 0  # refused for good, written to dead_letter_path


class HttpSinkError(Exception):
    """A POST that did not deliver its batch; the worker retries it."""


class Refused(HttpSinkError):
    """A 4xx that this batch will never get past."""


def retry_after_secs(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header in seconds from now: delay-seconds, or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        secs = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(secs):
        return None
    return max(0.0, secs)


def ndjson(lines: Sequence[bytes]) -> bytes:
    return b"\n".join([*lines, b""])


def _sample(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:BODY_SAMPLE_CHARS] + ("..." if len(text) > BODY_SAMPLE_CHARS else "")


class _Progress:
    """How much of each batch being delivered is already delivered, so a retry after a
    failure between two pieces of a split batch resends only the rest. The worker hands the
    same records back on a retry; a new batch starts from 0. Keyed by id() of the batch,
    alive (so unique) while it is being delivered."""

    def __init__(self) -> None:
        self._done: dict[int, tuple[Record, int, int]] = {}  # first record, length, done

    def resume(self, batch: Sequence[Record]) -> int:
        first, length, done = self._done.get(id(batch), (None, 0, 0))
        if first is batch[0] and length == len(batch):
            return done
        self._done[id(batch)] = (batch[0], len(batch), 0)
        return 0

    def advance(self, batch: Sequence[Record], done: int) -> None:
        self._done[id(batch)] = (batch[0], len(batch), done)

    def clear(self, batch: Sequence[Record]) -> None:
        self._done.pop(id(batch), None)


class HttpSink(Sink):
    """POSTs each batch as one NDJSON request to `url`."""

    settings_model = HttpSettings
    concurrent_batches = True

    def __init__(self, settings: SinkSettings) -> None:
        if not isinstance(settings, HttpSettings):
            raise TypeError(f"HttpSink needs HttpSettings, not {type(settings).__name__}")
        super().__init__(settings)
        self._settings = settings
        self.stats = HttpSinkStats()
        self._client: httpx.AsyncClient | None = None
        self._progress = _Progress()
        self._error: str | None = None
        self._dead_letter: FileSink | None = None
        self._dead_letter_lock = anyio.Lock()
        self._events = settings.format == "events"
        self._encoder = EventEncoder()

    async def start(self) -> None:
        settings = self._settings
        headers = {"user-agent": f"telemetryd/{__version__}", **settings.headers}
        headers["content-type"] = NDJSON
        token = await self._token()
        if token:
            headers["authorization"] = f"Bearer {token}"
        if settings.gzip:
            headers["content-encoding"] = "gzip"
        if settings.dead_letter_path is not None:
            self._dead_letter = FileSink(
                FileSettings(
                    name=f"{self.name}-dead-letter",
                    type="file",
                    path=settings.dead_letter_path,
                    rotate_bytes=0,
                    fsync="batch",
                )
            )
            await self._dead_letter.start()
        # A connection for each batch the worker may have in flight.
        connections = settings.batches_in_flight
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_secs, connect=settings.connect_timeout_secs),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment is not what the config says
        )

    async def _token(self) -> str | None:
        settings = self._settings
        if settings.auth_token is not None:
            return settings.auth_token.get_secret_value()
        if settings.auth_token_file is None:
            return None
        path = settings.auth_token_file
        try:
            text = await anyio.Path(path).read_text()
        except OSError as e:
            raise OSError(f"http sink {self.name!r} cannot read auth_token_file {path}: {e}") from e
        if not text.strip():
            raise ValueError(f"http sink {self.name!r}: auth_token_file {path} is empty")
        return text.strip()

    async def write_batch(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        try:
            await self._deliver(batch, self._progress.resume(batch))
        except Exception as e:
            self._error = f"POST {self._settings.url}: {e}"
            raise
        self._progress.clear(batch)
        self._error = None

    async def _deliver(self, batch: Sequence[Record], start: int) -> None:
        """Posts batch[start:], halving the pieces while the destination answers 413."""
        piece = len(batch) - start
        while start < len(batch):
            end = min(len(batch), start + piece)
            records = batch[start:end]
            response = await self._post(records)
            if response.status_code == 413 and len(records) > 1:
                piece = (len(records) + 1) // 2
                continue
            if self._judge(response):
                self.stats.delivered += len(records)
            else:
                await self._refuse(records, response)
            start = end
            self._progress.advance(batch, end)

    async def _post(self, records: Sequence[Record]) -> httpx.Response:
        assert self._client is not None, "write_batch before start"
        if self._events:
            encode = self._encoder.encode
            lines = [encode(r) for r in records]
        else:
            lines = [r.payload for r in records]
        body = ndjson(lines)
        if self._settings.gzip:
            if len(body) > GZIP_IN_THREAD_BYTES:
                body = await anyio.to_thread.run_sync(gzip_module.compress, body)
            else:
                body = gzip_module.compress(body)
        self.stats.requests += 1
        self.stats.body_bytes += len(body)
        try:
            return await self._client.post(self._settings.url, content=body)
        except httpx.TransportError as e:
            raise HttpSinkError(f"{type(e).__name__}: {e or 'no detail'}") from e

    def _judge(self, response: httpx.Response) -> bool:
        """True: delivered; False: refused for good (and a dead-letter file is set); raises
        to have the batch retried."""
        status = response.status_code
        if 200 <= status < 300:
            # telemetryd answers 200 only when it accepted every event: no results to read.
            if self._events and status != 200:
                answer = batch_answer_of(response)
                if answer is not None and answer.rejected:
                    self._count_rejections(answer)
            return True
        if status == 400 and self._events:
            answer = batch_answer_of(response)
            if answer is not None and answer.reason == "all_rejected":
                self._count_rejections(answer)  # in the aggregator's dead-letter, as it says
                return True
        message = f"{status} {response.reason_phrase}: {_sample(response)}"
        if status >= 500 or status in RETRYABLE_4XX:
            after = retry_after_secs(response.headers.get("retry-after"))
            if after is not None:
                raise RetryLater(f"{message} (Retry-After {after:g} s)", after)
            raise HttpSinkError(message)
        if status < 400:  # 1xx or 3xx: a POST must not be redirected
            raise HttpSinkError(f"{message} (redirects are not followed: set url to the target)")
        if status in MISADDRESSED:
            raise HttpSinkError(f"{message} (check url and auth_token)")
        if self._dead_letter is None:
            raise Refused(f"{message} (refused for good; set dead_letter_path to move on)")
        return False

    def _count_rejections(self, answer: BatchAnswer) -> None:
        for result in answer.results:
            if result.get("status") != "rejected":
                continue
            reason = str(result.get("reason"))
            if not self.stats.rejected[reason]:
                log.warning(
                    "the destination rejected events (in its dead-letter); counted, logged "
                    "once per reason",
                    extra={
                        "fields": {
                            "sink": self.name,
                            "reason": reason,
                            "message": str(result.get("message"))[:BODY_SAMPLE_CHARS],
                        }
                    },
                )
            self.stats.rejected[reason] += 1

    async def _refuse(self, records: Sequence[Record], response: httpx.Response) -> None:
        assert self._dead_letter is not None
        async with self._dead_letter_lock:  # one file: batches in flight take turns
            await self._dead_letter.write_batch(records)
        self.stats.dead_lettered += len(records)
        log.error(
            "the destination refused a batch for good; its records are in dead_letter_path",
            extra={
                "fields": {
                    "sink": self.name,
                    "status": response.status_code,
                    "answer": _sample(response),
                    "records": len(records),
                    "dead_letter_path": str(self._settings.dead_letter_path),
                }
            },
        )

    def health(self) -> SinkHealth:
        if self._error is not None:
            return SinkHealth(False, self._error)
        notes = []
        if self.stats.rejected:
            notes.append(f"{self.stats.rejected.total()} events rejected by the destination")
        if self.stats.dead_lettered:
            notes.append(f"{self.stats.dead_lettered} records in {self._settings.dead_letter_path}")
        return SinkHealth(True, "; ".join(notes))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._dead_letter is not None:
            await self._dead_letter.close()
        log.info(
            "http sink closed",
            extra={
                "fields": {
                    "sink": self.name,
                    "requests": self.stats.requests,
                    "delivered": self.stats.delivered,
                    "rejected_by_destination": dict(self.stats.rejected),
                    "dead_lettered": self.stats.dead_lettered,
                }
            },
        )
