"""The daemon's lifecycle: start sinks, serve, and on SIGTERM drain and stop
(docs/architecture.md, Lifecycle).

start   every sink's start(); a failure stops the daemon before it listens
serve   sink workers, the sources and the signal watcher run in one task group
stop    SIGTERM/SIGINT: stop accepting and reading, let the sources finish the lines they
        hold, close the queues, let every worker drain its queue, close the sinks, exit 0;
        the whole stop is bounded by shutdown_timeout_secs, and whatever a sink could not
        take by then is counted as dropped with the reason "shutdown_timeout"
reload  SIGHUP: re-read the schemas; a bad schema set is refused and the old one kept
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from telemetryd import __version__
from telemetryd.config import Config, ConfigError, load_config
from telemetryd.core.ingest import Ingestor
from telemetryd.core.reasons import DropReason
from telemetryd.core.schemas.model import SchemaLoadError
from telemetryd.core.schemas.registry import SchemaRegistry
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.bus import Bus, Route
from telemetryd.delivery.disk_queue import DiskQueue
from telemetryd.delivery.intake import Intake, Patience
from telemetryd.delivery.routing import RouteFilter
from telemetryd.delivery.sink_queue import EventQueue, SinkQueue
from telemetryd.delivery.sink_worker import SinkWorker
from telemetryd.delivery.subscribers import SubscriberHub
from telemetryd.metrics import make_registry
from telemetryd.plugins import load_sink_class
from telemetryd.settings_types import GroupError
from telemetryd.sink import Sink, SinkSettings
from telemetryd.source import Source
from telemetryd.sources.http.app import HttpApi
from telemetryd.sources.http.server import HttpSource
from telemetryd.sources.read_budget import ReadBudget
from telemetryd.sources.unix import MIN_READ_BYTES, UnixSource

log = logging.getLogger("telemetryd")


class StartupError(Exception):
    """Why the daemon cannot start, and the configuration key it is about ("" for none)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def load_registry(config: Config) -> SchemaRegistry:
    settings = config.schemas
    return SchemaRegistry.load(
        settings.paths,
        builtin=settings.builtin,
        allowed=settings.allowed,
        overlays=settings.overlays,
        builtin_overlays=settings.builtin_overlays,
    )


def _worker(settings: SinkSettings) -> SinkWorker:
    sink: Sink = load_sink_class(settings.type)(settings)
    stats = ComponentStats("sink", settings.name)
    queue: EventQueue
    if settings.buffer == "disk":
        queue = DiskQueue(
            Path(settings.buffer_path or f"var/buffer/{settings.name}"),
            max_bytes=settings.buffer_max_bytes,
            segment_bytes=settings.buffer_segment_bytes,
            fsync=settings.buffer_fsync,
            when_full=settings.when_full,
            stats=stats,
        )
    else:
        queue = SinkQueue(
            settings.queue_max_events, settings.queue_max_bytes, settings.when_full, stats
        )
    return SinkWorker(sink, queue, stats)


class Daemon:
    def __init__(self, config: Config, registry: SchemaRegistry) -> None:
        self.config = config
        self.workers = [_worker(settings) for settings in config.sinks]
        self.dead_letter = _worker(config.dead_letter)
        server = config.server
        self.hub = SubscriberHub(
            server.subscribe_max_subscribers,
            server.subscribe_queue_events,
            server.subscribe_queue_bytes,
        )
        self.bus = Bus(
            [
                Route(
                    w.name, w.queue, RouteFilter(w.sink.settings.include, w.sink.settings.exclude)
                )
                for w in self.workers
            ],
            self.hub,
        )
        self.ingestor = Ingestor(registry)
        #: What socket connections and HTTP requests hold between reading and publishing.
        self.read_budget = ReadBudget(server.read_budget_bytes, MIN_READ_BYTES)
        #: The socket first: the stats line's and /metrics' order.
        self.sources: list[Source] = []
        if server.unix_socket is not None:
            self.sources.append(UnixSource(server, self._intake("unix"), budget=self.read_budget))
        self.http: HttpSource[HttpApi] | None = None
        if server.http or server.http_unix_socket is not None:
            patience = Patience(server.http_enqueue_timeout_secs, server.http_max_waiting_requests)
            self.http = HttpSource(
                HttpApi(
                    server,
                    self._intake("http", patience),
                    workers=self.all_workers,
                    metrics=make_registry(
                        lambda: [source.stats for source in self.sources],
                        lambda: self.all_workers,
                        self.hub,
                    ),
                    auth=config.auth,
                    pioneer=config.pioneer,
                    hub=self.hub,
                    read_budget=self.read_budget,
                )
            )
            self.sources.append(self.http)
        self._stop = anyio.Event()
        self.started_at = time.monotonic()
        self.ready = False  # whether it served: the final counters are worth a line only then

    @property
    def all_workers(self) -> list[SinkWorker]:
        return [*self.workers, self.dead_letter]

    def _intake(self, source: str, patience: Patience | None = None) -> Intake:
        """A source's intake: the shared ingestor, bus and dead-letter queue, its own counters."""
        stats = ComponentStats("source", source)
        return Intake(self.ingestor, self.bus, self.dead_letter.queue, stats, patience=patience)

    def request_stop(self) -> None:
        self._stop.set()

    def reload(self) -> None:
        """SIGHUP: swap in a freshly loaded schema set, or keep the current one if it is bad."""
        try:
            config = load_config(self.config.source) if self.config.source else self.config
            registry = load_registry(config)
        except (ConfigError, SchemaLoadError) as e:
            log.error(
                "reload refused; keeping the current schemas",
                extra={"fields": {"problems": str(e).splitlines()}},
            )
            return
        self.ingestor.registry = registry
        log.info("schemas reloaded", extra={"fields": {"schemas": len(registry)}})
        if self.http is not None and (
            config.auth != self.config.auth or config.auth.jupyterhub is not None
        ):
            # Tokens apply at once, so a revoked token stops working without a restart; the
            # answers cached from JupyterHub go with the old Authenticator, on every SIGHUP
            # (a token revoked in the hub then stops working at once too).
            self.http.api.reload_auth(config.auth)
            self.config = self.config.model_copy(update={"auth": config.auth})
            log.info(
                "tokens reloaded",
                extra={
                    "fields": {
                        "tokens": len(config.auth.tokens),
                        "jupyterhub": config.auth.jupyterhub is not None,
                    }
                },
            )
        unapplied = [
            section
            for section in ("server", "log", "sinks", "dead_letter")
            if getattr(config, section) != getattr(self.config, section)
        ]
        if unapplied:
            log.warning(
                "configuration changes need a restart; not applied",
                extra={"fields": {"sections": unapplied}},
            )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._start_sinks()
        try:
            async with anyio.create_task_group() as tg:
                for worker in self.all_workers:
                    tg.start_soon(worker.run)
                tg.start_soon(self._watch_signals)
                if self.config.log.stats_interval_secs > 0:
                    tg.start_soon(self._log_stats_periodically)
                deadline = await self._serve_until_stopped(task_status)
                await self._drain(deadline)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._close_sinks()
            if self.ready:
                log.info("stopped", extra={"fields": self.snapshot()})

    async def _serve_until_stopped(self, task_status: TaskStatus[None]) -> float:
        """Serves until a stop is requested, then stops the sources (bounded by the shutdown
        timeout); returns the deadline by which the whole stop must be done."""
        done = [anyio.Event() for _ in self.sources]
        async with anyio.create_task_group() as sources:
            for source, source_done in zip(self.sources, done, strict=True):
                try:
                    await sources.start(self._serve_source, source, source_done)
                except OSError as e:
                    key = e.key if isinstance(e, GroupError) else source.config_key
                    raise StartupError(key, _describe(e)) from e
            self._log_pioneer()
            log.info(
                "ready",
                extra={
                    "fields": {
                        "version": __version__,
                        "pid": os.getpid(),
                        "sinks": [w.name for w in self.workers],
                        "schemas": len(self.ingestor.registry),
                    }
                },
            )
            _sd_notify(b"READY=1")
            self.ready = True
            task_status.started()
            await self._stop.wait()
            _sd_notify(b"STOPPING=1")
            deadline = time.monotonic() + self.config.server.shutdown_timeout_secs
            queued = {w.name: len(w.queue) for w in self.all_workers}
            log.info(
                "stopping: no longer accepting; draining queues",
                extra={"fields": {"queued": queued}},
            )
            for source in self.sources:
                source.stop()
            with anyio.move_on_after(deadline - time.monotonic()):
                for source_done in done:
                    await source_done.wait()
            sources.cancel_scope.cancel()
        return deadline

    def _log_pioneer(self) -> None:
        """Says that POST /api/pioneer takes notebooks, and whose (a warning when anyone's)."""
        if self.http is None or not self.config.pioneer.enabled:
            return
        auth = self.config.auth
        if not auth.required:
            log.warning(
                "POST /api/pioneer is on",
                extra={"fields": {"authentication": "none (pioneer.allow_anonymous)"}},
            )
            return
        checked = ["auth.tokens"] if auth.tokens else []
        checked += ["auth.jupyterhub"] if auth.jupyterhub is not None else []
        log.info("POST /api/pioneer is on", extra={"fields": {"authentication": checked}})

    async def _drain(self, deadline: float) -> None:
        """Lets every worker empty its queue until `deadline`; counts and logs what is left."""
        self.bus.close()
        self.dead_letter.queue.close()
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            for worker in self.all_workers:
                await worker.done.wait()
        for worker in self.all_workers:
            worker.queue.abandon()
            lost = worker.stats.dropped[DropReason.SHUTDOWN_TIMEOUT]
            if lost:
                log.error(
                    "shutdown timeout: events not delivered",
                    extra={"fields": {"sink": worker.name, "events": lost}},
                )
        for source in self.sources:
            stats = source.stats
            unread = stats.dropped[DropReason.SHUTDOWN_TIMEOUT]
            if unread:
                log.error(
                    "shutdown timeout: events read but never accepted (not acknowledged)",
                    extra={"fields": {"source": stats.name, "events": unread}},
                )

    async def _serve_source(
        self,
        source: Source,
        done: anyio.Event,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await source.serve(task_status=task_status)
        finally:
            done.set()

    async def _start_sinks(self) -> None:
        started: list[SinkWorker] = []
        for worker in self.all_workers:
            try:
                await worker.sink.start()
            except Exception as e:
                for done in started:
                    await done.sink.close()
                key = self._sink_key(worker) + (f".{e.key}" if isinstance(e, GroupError) else "")
                raise StartupError(
                    key,
                    f"sink {worker.name!r} ({worker.sink.settings.type}) failed to start: "
                    + _describe(e),
                ) from e
            started.append(worker)

    def _sink_key(self, worker: SinkWorker) -> str:
        if worker is self.dead_letter:
            return "dead_letter"
        return f"sinks[{self.workers.index(worker)}]"

    async def _close_sinks(self) -> None:
        for worker in self.all_workers:
            try:
                await worker.sink.close()
            except Exception:
                log.exception("sink failed to close", extra={"fields": {"sink": worker.name}})
            worker.queue.shutdown()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload()
                else:
                    log.info(
                        "signal received", extra={"fields": {"signal": signal.Signals(signum).name}}
                    )
                    self.request_stop()

    async def _log_stats_periodically(self) -> None:
        while True:
            await anyio.sleep(self.config.log.stats_interval_secs)
            log.info("stats", extra={"fields": self.snapshot()})

    def snapshot(self) -> dict[str, Any]:
        sinks = []
        for worker in self.all_workers:
            entry = worker.stats.snapshot()
            queue = worker.queue.statistics()
            entry |= {
                "healthy": worker.health().healthy,
                "queued": queue.queued_events + queue.inflight_events,
                "batches": worker.batches,
                "retries": worker.retries,
                "latency_p50_secs": worker.latency.quantile(0.5),
                "latency_p99_secs": worker.latency.quantile(0.99),
            }
            sinks.append(entry)
        sources = [source.stats.snapshot() | source.snapshot() for source in self.sources]
        subscribers = self.hub.stats.snapshot() | {"open": len(self.hub.subscriptions)}
        return {
            "uptime_secs": round(time.monotonic() - self.started_at, 3),
            "sources": sources,
            "sinks": sinks,
            "subscribers": subscribers,
        }


def _sd_notify(state: bytes) -> None:
    """Tell systemd (Type=notify) about readiness; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state, address)
        except OSError:
            log.warning("sd_notify failed", extra={"fields": {"socket": address}})


def run(config: Config) -> int:
    """Runs the daemon on uvloop until SIGTERM; returns the exit code."""
    try:
        registry = load_registry(config)
    except SchemaLoadError as e:
        # Each problem names its schema file, not the configuration's.
        problems = [str(problem) for problem in e.problems]
        return _refuse(problems, 2, "refusing to start: bad schemas", {"problems": problems})
    try:
        daemon = Daemon(config, registry)  # opens the disk buffers, which lock their directory
    except OSError as e:
        return _refuse_start(config, [e])
    try:
        anyio.run(daemon.run, backend="asyncio", backend_options={"use_uvloop": True})
    except (StartupError, OSError) as e:
        return _refuse_start(config, [e])
    except BaseExceptionGroup as group:
        matched, rest = group.split((StartupError, OSError))
        if rest is not None or matched is None:
            raise
        return _refuse_start(config, _leaves(matched))
    return 0


def _refuse_start(config: Config, errors: list[BaseException]) -> int:
    source = str(config.source or "<configuration>")
    messages = [_describe(e) for e in errors]
    keys = [e.key if isinstance(e, StartupError) else "" for e in errors]
    located = [
        f"{source}: {key}: {message}" if key else f"{source}: {message}"
        for key, message in zip(keys, messages, strict=True)
    ]
    return _refuse(located, 1, "refusing to start", {"error": "; ".join(messages)})


def _describe(error: BaseException) -> str:
    """An error in words, without OSError's "[Errno 17]" prefix."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return str(error)


def _refuse(problems: list[str], code: int, msg: str, fields: dict[str, Any]) -> int:
    """A fatal start error, first and readable: a `telemetryd: error: <file>: <key>: <message>`
    line per problem on stderr (for a person at a terminal, or systemctl status), then the JSON
    log line for log collectors when stderr is not a terminal."""
    for problem in problems:
        print(f"telemetryd: error: {problem}", file=sys.stderr, flush=True)
    if not sys.stderr.isatty():
        log.error(msg, extra={"fields": fields})
    return code


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out
