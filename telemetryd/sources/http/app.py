"""The HTTP API's endpoints (docs/http-api.md): a parsed request in, a response out, no sockets.

telemetryd.sources.http.connection speaks HTTP/1.1 (parsed by httptools) and enforces the
limits; this module routes a request (404, 405, 415 before its body is read) and answers it.
Events go through an intake (telemetryd.delivery.intake) as on the Unix socket, so one payload
is judged the same way on either transport.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import anyio
import anyio.lowlevel
import msgspec
from prometheus_client import CollectorRegistry

from telemetryd.auth import REALM, Authenticator, AuthFailure, Identity, Pending
from telemetryd.config import AuthSettings, PioneerSettings, ServerSettings
from telemetryd.core.framing import Frame, LineFramer
from telemetryd.core.reasons import DropReason, Reason
from telemetryd.core.record import Record
from telemetryd.core.rejections import Rejection
from telemetryd.core.schemas.model import CompiledSchema
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.intake import Intake, Refusal
from telemetryd.delivery.sink_worker import SinkWorker
from telemetryd.delivery.subscribers import SubscriberHub, TooManySubscribers
from telemetryd.integrations import pioneer
from telemetryd.integrations.hub_auth import HUB_RETRY_AFTER_SECS, HubClient
from telemetryd.metrics import render
from telemetryd.sources.http import openapi
from telemetryd.sources.http.bodies import (
    AllRejected,
    BatchResult,
    BatchResultItem,
    EventRejected,
    Healthy,
    NotReady,
    Ready,
    SchemaList,
    SchemaProperty,
    SchemaVersion,
    SchemaView,
    SinkReadiness,
)
from telemetryd.sources.http.messages import (
    HEALTH,
    INGEST,
    JSON,
    METRICS,
    SUBSCRIBE,
    Handler,
    Request,
    Response,
    Route,
    Stream,
    error_response,
    json_response,
)
from telemetryd.sources.http.operations import NDJSON, OPERATIONS
from telemetryd.sources.read_budget import ReadBudget

#: The events of a request that waited `http_enqueue_timeout_secs` for full `block` queues.
#: The events of a request refused because `http_max_waiting_requests` already waited for room.
#: A queue at this fraction of its queue_max_events makes the daemon not ready.
READY_QUEUE_FRACTION: Final = 0.9
#: Events of a batch validated between two yields to the event loop.
BATCH_SLICE_EVENTS: Final = 4096
RETRY_AFTER_SECS: Final = 1

_array_decoder = msgspec.json.Decoder(list[msgspec.Raw])


@dataclass(frozen=True, slots=True)
class _Endpoint:
    handler: Handler
    media_types: tuple[str, ...] = ()  # accepted request bodies; empty: no body expected
    access: str = INGEST  # endpoints need a token under `[auth] required` unless marked


def media_type(content_type: str | None) -> tuple[str, str | None]:
    """(type, charset) of a Content-Type value, lower case; ("", None) when absent."""
    if not content_type:
        return "", None
    kind, *params = content_type.split(";")
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return kind.strip().lower(), charset


def websocket_key(headers: Mapping[bytes, bytes]) -> str | Response:
    """The Sec-WebSocket-Key of a valid RFC 6455 handshake, or the 400 that refuses it."""
    problem = None
    connection = {token.strip() for token in headers.get(b"connection", b"").lower().split(b",")}
    key = headers.get(b"sec-websocket-key", b"")
    if headers.get(b"upgrade", b"").lower() != b"websocket":
        problem = "Upgrade must be websocket"
    elif b"upgrade" not in connection:
        problem = "Connection must include Upgrade"
    elif headers.get(b"sec-websocket-version") != b"13":
        problem = "Sec-WebSocket-Version must be 13"
    elif len(key) != 24 or not key.endswith(b"=="):
        problem = "Sec-WebSocket-Key must be 16 bytes in base64"
    if problem is not None:
        return error_response(
            400,
            "bad_websocket_handshake",
            f"bad WebSocket handshake: {problem} (RFC 6455)",
            (("sec-websocket-version", "13"),),
        )
    return key.decode("ascii")


class HttpApi:
    def __init__(
        self,
        settings: ServerSettings,
        intake: Intake,
        *,
        workers: Sequence[SinkWorker],
        metrics: CollectorRegistry | None = None,
        auth: AuthSettings | None = None,
        pioneer: PioneerSettings | None = None,
        hub: SubscriberHub | None = None,
        read_budget: ReadBudget | None = None,
    ) -> None:
        self.settings = settings
        self.hub = hub
        #: Shared with the socket source: bodies being turned into records and published.
        self.read_budget = read_budget
        self.pioneer = pioneer or PioneerSettings()
        self.metrics = metrics
        #: The connections to JupyterHub ([auth.jupyterhub]), kept across reloads.
        self.hub_client = HubClient()
        self.auth = Authenticator(auth or AuthSettings(), self.hub_client)
        #: Patient as http_enqueue_timeout_secs and http_max_waiting_requests say.
        self.intake = intake
        self.workers = tuple(workers)
        self.stopping = False
        self._paths, self._prefixes = self._route_table()

    @property
    def stats(self) -> ComponentStats:
        """The HTTP source's counters, kept by its intake."""
        return self.intake.stats

    # -- routing -----------------------------------------------------------------------------

    def _route_table(
        self,
    ) -> tuple[dict[str, dict[str, _Endpoint]], dict[str, dict[str, _Endpoint]]]:
        """The route table (telemetryd.sources.http.operations) with each operation's handler:
        by exact path, and by prefix (the rest of the path is the handler's parameter)."""
        handlers: dict[str, Handler] = {
            "postEvent": self.post_event,
            "postEventBatch": self.post_batch,
            "postPioneerEvent": self.post_pioneer,
            "subscribe": self.subscribe,
            "listSchemas": self.get_schemas,
            "getSchema": self.get_schema,
            "getOpenApi": self.get_openapi,
            "healthz": self.healthz,
            "readyz": self.readyz,
            "metrics": self.get_metrics,
        }
        paths: dict[str, dict[str, _Endpoint]] = {}
        prefixes: dict[str, dict[str, _Endpoint]] = {}
        for operation in OPERATIONS:
            if operation.operation_id == "postPioneerEvent" and not self.pioneer.enabled:
                continue  # off by default: 404
            handler = handlers[operation.operation_id]
            if operation.ingest:
                handler = self._within_budget(handler)
            prefix = operation.prefix
            table, path = (paths, operation.path) if prefix is None else (prefixes, prefix)
            table.setdefault(path, {})[operation.method] = _Endpoint(
                handler, operation.media_types, operation.access
            )
        return paths, prefixes

    def route(self, method: str, target: str, content_type: str | None) -> Route | Response:
        """The endpoint for a request head, or the 404, 405 or 415 that answers it."""
        path = target.partition("?")[0]
        param = ""
        methods = self._paths.get(path)
        if methods is None:
            for prefix, endpoints in self._prefixes.items():
                if path.startswith(prefix) and len(path) > len(prefix):
                    methods, param = endpoints, unquote(path[len(prefix) :])
                    break
        if methods is None:
            return error_response(404, "not_found", f"no endpoint at {path}")
        endpoint = methods.get(method)
        if endpoint is None:
            allowed = ", ".join(methods)
            return error_response(
                405,
                "method_not_allowed",
                f"{method} is not allowed on {path}; allowed: {allowed}",
                (("allow", allowed),),
            )
        if not endpoint.media_types:
            return Route(endpoint.handler, param, "", endpoint.access)
        kind, charset = media_type(content_type)
        if kind not in endpoint.media_types or charset not in (None, "utf-8"):
            named = [kind for kind in endpoint.media_types if kind]
            return error_response(
                415,
                "unsupported_media_type",
                f"Content-Type {content_type or '(none)'!s} is not accepted on {path}; "
                f"send {' or '.join(named)} (UTF-8)",
            )
        return Route(endpoint.handler, param, kind, endpoint.access)

    # -- authentication ----------------------------------------------------------------------

    def reload_auth(self, settings: AuthSettings) -> None:
        """New tokens and hub settings, with empty caches (a revoked token stops at once)."""
        self.auth = Authenticator(settings, self.hub_client)

    async def aclose(self) -> None:
        await self.hub_client.aclose()

    def authenticate(
        self, route: Route, header: bytes | None
    ) -> Identity | Response | Coroutine[Any, Any, Identity | Response] | None:
        """The request's identity (None: anonymous), or the 401/403/503 that answers it; or,
        for a token JupyterHub must be asked about (not cached), a coroutine to await for it."""
        auth = self.auth
        if not auth.enabled:
            return None
        settings = auth.settings
        access = route.access
        required = (
            settings.required
            if access == INGEST
            else settings.protect_health
            if access == HEALTH
            else settings.protect_metrics
            if access == METRICS
            else access == SUBSCRIBE
        )
        verdict = auth.authenticate(header, required=required)
        if verdict is None or type(verdict) is Identity:
            return verdict
        if isinstance(verdict, AuthFailure):
            return self._refuse(verdict)
        if isinstance(verdict, Coroutine):
            return self._settle(verdict)
        return verdict

    async def _settle(self, pending: Pending) -> Identity | Response:
        verdict = await pending
        return self._refuse(verdict) if isinstance(verdict, AuthFailure) else verdict

    def _refuse(self, failure: AuthFailure) -> Response:
        self.stats.errors[failure.reason] += 1
        headers: tuple[tuple[str, str], ...] = ()
        if failure.status == 401:
            headers = (("www-authenticate", REALM),)
        elif failure.status == 503:
            headers = (("retry-after", str(HUB_RETRY_AFTER_SECS)),)
        return error_response(failure.status, failure.reason, failure.message, headers)

    # -- events ------------------------------------------------------------------------------

    async def post_event(self, request: Request, _: str) -> Response:
        """Jupyter Server's POST /api/events: 204, or 400 {"message", "reason": null}."""
        intake = self.intake
        arrival = intake.arrive(request.origin, 1)
        records, rejected = intake.validate([request.body], arrival, 0, request.identity)
        if rejected:
            await intake.dead_letter(rejected, arrival)
            first = rejected[0]
            identity = request.identity
            if (
                identity is not None
                and first.reason == Reason.SCHEMA_NOT_ALLOWED
                and first.schema_id is not None
                and not identity.allows(first.schema_id)
            ):
                # the token's allowed_schemas, not the event: as Jupyter Server, 403
                return error_response(403, first.reason, first.message)
            return json_response(400, EventRejected(first.message, None, first.reason))
        refusal = await intake.publish(records)
        return Response(204) if refusal is None else self._refused(refusal, len(records))

    def _within_budget(self, handler: Handler) -> Handler:
        """`handler` run while the request's body holds its size of the read budget: a crowd of
        requests waiting for full queues holds the budget (and their bodies), not their records
        each. Waiting for it counts as waiting for room (http_max_waiting_requests,
        http_enqueue_timeout_secs); a request refused so is counted under that reason."""

        async def within(request: Request, param: str) -> Response:
            budget = self.read_budget
            size = len(request.body)
            if budget is None or not size:
                return await handler(request, param)
            share = budget.take_nowait(size, whole=True)
            if not share:
                refused, share = await self._wait_for_budget(budget, size)
                if refused is not None:
                    return refused
            try:
                return await handler(request, param)
            finally:
                budget.give_back(share)

        return within

    async def _wait_for_budget(self, budget: ReadBudget, size: int) -> tuple[Response | None, int]:
        """(None, the share) once the budget has room for the body, or the 429/503 refusal."""
        if self.intake.crowded:
            self.stats.errors[DropReason.TOO_MANY_WAITING] += 1
            return self._too_many_waiting("the request was"), 0
        share = 0
        with (
            self.intake.waiting_for_room(),
            anyio.move_on_after(self.settings.http_enqueue_timeout_secs),
        ):
            share = await budget.take(size, whole=True)
        if not share:
            self.stats.errors[DropReason.ENQUEUE_TIMEOUT] += 1
            return self._unavailable(
                "queue_full",
                f"sink queues stayed full for {self.settings.http_enqueue_timeout_secs} s: "
                "the request was not accepted; retry later",
            ), 0
        return None, share

    async def post_pioneer(self, request: Request, _: str) -> Response:
        """JupyterLab Pioneer's remote_exporter body: its event, under its shipped schema."""
        try:
            lines = pioneer.to_events(request.body, keep_environ=self.pioneer.keep_environ)
        except pioneer.PioneerError as e:
            arrival = self.intake.arrive(request.origin, 1)
            # A refused NotebookOpenEvent still carries the server's environment.
            body = request.body
            kept = body if self.pioneer.keep_environ else pioneer.without_environ(body)
            rejection = Rejection(Reason.INVALID_PIONEER, str(e), kept, len(body))
            await self.intake.reject(rejection, arrival)
            return error_response(400, Reason.INVALID_PIONEER, str(e))
        return await self.post_event(replace(request, body=lines[0]), "")

    async def post_batch(self, request: Request, _: str) -> Response:
        """NDJSON or a JSON array of events; each is accepted or rejected on its own."""
        lines: list[Frame]
        if request.media_type == NDJSON:
            framer = LineFramer(self.settings.max_line_bytes)
            lines = framer.feed(request.body)
            last = framer.close()
            if last is not None:
                lines.append(last)
        else:
            try:
                elements = _array_decoder.decode(request.body)
            except (msgspec.DecodeError, RecursionError) as e:
                return error_response(
                    400, "invalid_batch", f"the body is not a JSON array of events: {e}"
                )
            lines = [bytes(element) for element in elements]
        intake = self.intake
        arrival = intake.arrive(request.origin, len(lines))
        records: list[Record] = []
        rejected: list[Rejection] = []
        for start in range(0, len(lines), BATCH_SLICE_EVENTS):
            if start:
                await anyio.lowlevel.checkpoint()  # a large batch must not hold the loop
            accepted, refused = intake.validate(
                lines[start : start + BATCH_SLICE_EVENTS], arrival, start + 1, request.identity
            )
            records += accepted
            rejected += refused
        if rejected:
            await intake.dead_letter(rejected, arrival, held=len(records))
        refusal = await intake.publish(records)
        if refusal is not None:
            return self._refused(refusal, len(records))
        results = [BatchResultItem(i, "accepted") for i in range(len(lines))]
        for r in rejected:
            results[r.line - 1] = BatchResultItem(r.line - 1, "rejected", r.reason, r.message)
        if not rejected:
            return json_response(200, BatchResult(len(records), 0, results))
        if records:
            return json_response(207, BatchResult(len(records), len(rejected), results))
        # As EventGate: nothing accepted is a client error, with the same per-event detail.
        return json_response(
            400,
            AllRejected(
                f"all {len(rejected)} events were rejected; see results",
                "all_rejected",
                0,
                len(rejected),
                results,
            ),
        )

    def _refused(self, refusal: Refusal, count: int) -> Response:
        """The 429 or 503 that tells the client its events were not accepted (the intake
        counted them as dropped)."""
        if refusal is Refusal.TOO_MANY_WAITING:
            return self._too_many_waiting(f"the request's {count} events were")
        if refusal is Refusal.STOPPING:
            return self._unavailable("stopping", "the daemon is stopping; events not accepted")
        timeout = self.settings.http_enqueue_timeout_secs
        if refusal is Refusal.DISK_FULL:
            disks = [f"{w.name}: {w.queue.problem}" for w in self.workers if w.queue.problem]
            return self._unavailable(
                DropReason.DISK_FULL,
                f"a sink's disk buffer could not take them for {timeout} s ({'; '.join(disks)}): "
                f"the request's {count} events were not accepted; retry later",
            )
        return self._unavailable(
            "queue_full",
            f"sink queues stayed full for {timeout} s: "
            f"the request's {count} events were not accepted; retry later",
        )

    def _too_many_waiting(self, what: str) -> Response:
        """The 429 of a request shed at once: queues are full and enough requests wait."""
        return error_response(
            429,
            "too_many_requests",
            f"sink queues are full and {self.intake.waiting} requests already wait for room "
            f"(http_max_waiting_requests): {what} not accepted; retry later",
            (("retry-after", str(RETRY_AFTER_SECS)),),
        )

    def _timed_out(self, count: int) -> Response:
        """The 503 for a request whose events waited too long, naming why: a disk buffer's
        full disk, or full queues."""
        disks = [f"{w.name}: {w.queue.problem}" for w in self.workers if w.queue.problem]
        timeout = self.settings.http_enqueue_timeout_secs
        if disks:
            self.stats.dropped[DropReason.DISK_FULL] += count
            return self._unavailable(
                DropReason.DISK_FULL,
                f"a sink's disk buffer could not take them for {timeout} s ({'; '.join(disks)}): "
                f"the request's {count} events were not accepted; retry later",
            )
        self.stats.dropped[DropReason.ENQUEUE_TIMEOUT] += count
        return self._unavailable(
            "queue_full",
            f"sink queues stayed full for {timeout} s: "
            f"the request's {count} events were not accepted; retry later",
        )

    def _unavailable(self, reason: str, message: str) -> Response:
        return error_response(503, reason, message, (("retry-after", str(RETRY_AFTER_SECS)),))

    # -- live records ------------------------------------------------------------------------

    async def subscribe(self, request: Request, _: str) -> Response:
        """A live subscription: SSE, or WebSocket when the request asks to upgrade."""
        params = parse_qs(request.query, keep_blank_values=True)
        unknown = sorted(set(params) - {"schema_id"})
        if unknown:
            return error_response(
                400,
                "bad_query",
                f"unknown query parameter {unknown[0]!r}; filter with schema_id=<glob>, repeated",
            )
        patterns = params.get("schema_id", [])
        if any(not pattern for pattern in patterns):
            return error_response(400, "bad_query", "schema_id must be a non-empty glob pattern")
        key = None
        headers = dict(request.headers)
        if b"upgrade" in headers:
            handshake = websocket_key(headers)
            if isinstance(handshake, Response):
                return handshake
            key = handshake
        if self.hub is None or self.hub.max_subscribers == 0:
            return error_response(
                404, "not_found", "subscriptions are off (subscribe_max_subscribers = 0)"
            )
        identity = request.identity
        allows = None if identity is None or identity.permits is None else identity.allows
        try:
            subscription = self.hub.subscribe(patterns, allows)
        except TooManySubscribers as e:
            return self._unavailable("too_many_subscribers", str(e))
        return Response(
            200,
            headers=(("content-type", "text/event-stream"), ("cache-control", "no-cache")),
            stream=Stream(subscription, key),
        )

    # -- schemas -----------------------------------------------------------------------------

    async def get_schemas(self, request: Request, _: str) -> Response:
        registry = self.intake.ingestor.registry
        views = [
            self._schema_view(schema_id, versions)
            for schema_id, versions in registry.by_id().items()
        ]
        return json_response(200, SchemaList(views))

    async def get_schema(self, request: Request, schema_id: str) -> Response:
        versions = self.intake.ingestor.registry.by_id().get(schema_id)
        if not versions:
            return error_response(
                404, "unknown_schema", f"unknown schema {schema_id!r}: it is not registered"
            )
        return json_response(200, self._schema_view(schema_id, versions))

    def _schema_view(self, schema_id: str, versions: Mapping[str, CompiledSchema]) -> SchemaView:
        return SchemaView(
            schema_id,
            [
                SchemaVersion(
                    schema.version,
                    schema.title,
                    schema.description,
                    schema.personal_data,
                    schema.allowed,
                    [
                        SchemaProperty(
                            p.name, p.title, p.type, p.description, p.categories, p.required
                        )
                        for p in schema.properties()
                    ],
                )
                for schema in versions.values()
            ],
            self.intake.bus.wanted_by(schema_id),
        )

    async def get_openapi(self, request: Request, _: str) -> Response:
        """The OpenAPI 3.1 document of this API (telemetryd.sources.http.openapi)."""
        return Response(200, openapi.document_bytes(), (("content-type", JSON),))

    # -- health ------------------------------------------------------------------------------

    async def get_metrics(self, request: Request, _: str) -> Response:
        """Prometheus exposition of every source's and sink's counters (telemetryd.metrics)."""
        if self.metrics is None:
            return error_response(404, "not_found", "metrics are not enabled")
        body, content_type = render(self.metrics)
        return Response(200, body, (("content-type", content_type),))

    async def healthz(self, request: Request, _: str) -> Response:
        return json_response(200, Healthy("ok"))

    async def readyz(self, request: Request, _: str) -> Response:
        """Ready: not stopping, every sink healthy, every queue below its high mark."""
        sinks: list[SinkReadiness] = []
        for worker in self.workers:
            health = worker.health()
            queue = worker.queue.statistics()
            queued = queue.queued_events + queue.inflight_events
            # A disk buffer has no limit in events (max_events 0): its bytes decide.
            below = (
                queue.max_events == 0 or queued < READY_QUEUE_FRACTION * queue.max_events
            ) and queue.queued_bytes < READY_QUEUE_FRACTION * queue.max_bytes
            sinks.append(
                SinkReadiness(
                    worker.name,
                    health.healthy and below,
                    health.healthy,
                    health.detail,
                    queued,
                    queue.max_events,
                )
            )
        if self.stopping:
            return json_response(503, NotReady("the daemon is stopping", "stopping", sinks))
        waiting = [s.name for s in sinks if not s.ready]
        if waiting:
            return json_response(
                503,
                NotReady(
                    f"sinks not ready (unhealthy, or queue at {READY_QUEUE_FRACTION:.0%} or "
                    f"more of its limit in events or bytes): {', '.join(waiting)}",
                    "not_ready",
                    sinks,
                ),
            )
        return json_response(200, Ready("ready", sinks))
