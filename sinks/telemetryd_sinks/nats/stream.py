"""The JetStream stream the NATS sink writes to: created if absent, checked if present.

An existing stream is never changed: it may hold other producers' data and its owner's
retention choices, and some differences (storage) cannot be changed in place at all. A stream
that differs from the sink's settings is a `StreamMismatch` naming every difference; the sink
reports it as unhealthy and the worker retries until the stream or the config is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamManager
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

#: JetStream's error code for "stream name already in use" (another creator won the race).
STREAM_NAME_IN_USE = 10058


class StreamMismatch(Exception):
    """The stream exists with settings other than the sink's."""


@dataclass(frozen=True)
class WantedStream:
    """The stream as the sink's settings describe it; 0 limits mean no limit."""

    name: str
    subject: str  # the filter the sink publishes under: `<prefix>.>`
    num_replicas: int
    storage: str  # "file" or "memory"
    max_age_secs: float
    max_bytes: int
    max_msgs: int
    duplicate_window_secs: float

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=[self.subject],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            storage=StorageType(self.storage),
            num_replicas=self.num_replicas,
            max_age=self.max_age_secs,
            max_bytes=self.max_bytes or -1,
            max_msgs=self.max_msgs or -1,
            duplicate_window=self.duplicate_window_secs,
        )

    def differences(self, existing: StreamConfig) -> list[str]:
        """`key: the stream's value, the config's value` for each setting that differs."""
        found: list[str] = []
        if self.subject not in (existing.subjects or []):
            found.append(f"subjects {existing.subjects} do not include {self.subject!r}")
        # nats-py leaves the enum as the server's string when it reads a stream's config.
        storage = StorageType(existing.storage).value if existing.storage else None
        compared: list[tuple[str, object, object]] = [
            ("num_replicas", existing.num_replicas or 1, self.num_replicas),
            ("storage", storage, self.storage),
            ("max_age_secs", _secs(existing.max_age), _secs(self.max_age_secs)),
            ("max_bytes", _limit(existing.max_bytes), self.max_bytes),
            ("max_msgs", _limit(existing.max_msgs), self.max_msgs),
            (
                "duplicate_window_secs",
                _secs(existing.duplicate_window),
                _secs(self.duplicate_window_secs),
            ),
        ]
        found.extend(
            f"{key} is {theirs} (the config says {ours})"
            for key, theirs, ours in compared
            if theirs != ours
        )
        return found


def _secs(value: float | None) -> float:
    """Seconds rounded to JetStream's nanoseconds, so that a value read back compares equal."""
    return round((value or 0) * 1e9) / 1e9


def _limit(value: int | None) -> int:
    """JetStream's -1 (no limit) as the settings' 0."""
    return 0 if value is None or value < 0 else value


async def ensure_stream(jsm: JetStreamManager, wanted: WantedStream) -> None:
    """Creates the stream, or checks the one there; raises StreamMismatch if it differs."""
    try:
        info = await jsm.stream_info(wanted.name)
    except NotFoundError:
        try:
            await jsm.add_stream(wanted.config())
            return
        except BadRequestError as e:
            if e.err_code != STREAM_NAME_IN_USE:
                raise
            info = await jsm.stream_info(wanted.name)  # created meanwhile: check that one
    differences = wanted.differences(info.config)
    if differences:
        raise StreamMismatch(
            f"JetStream stream {wanted.name!r} exists with other settings: "
            + "; ".join(differences)
            + ". The sink never changes an existing stream: edit the stream "
            "(nats stream edit) or the sink's settings to match"
        )
