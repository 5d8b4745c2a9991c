"""Fan-out: every accepted record goes to the queue of every sink whose routing wants it,
through that sink's privacy policy (telemetryd.delivery.policy).

Sinks are served in a fixed order and a blocking queue makes `publish` wait, which is how a
`block` sink pushes back on the sources. Records of one publish keep their order in every queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from telemetryd.core.reasons import DropReason
from telemetryd.core.record import Record
from telemetryd.delivery.policy import PASS_THROUGH, SinkPolicy
from telemetryd.delivery.routing import RouteFilter
from telemetryd.delivery.sink_queue import EventQueue
from telemetryd.delivery.subscribers import SubscriberHub


@dataclass(frozen=True)
class Route:
    name: str
    queue: EventQueue
    filter: RouteFilter
    policy: SinkPolicy = PASS_THROUGH  # the sink's privacy policy (telemetryd.delivery.policy)


class Bus:
    def __init__(self, routes: Sequence[Route], hub: SubscriberHub | None = None) -> None:
        self.routes = tuple(routes)
        #: Live subscribers get a copy of what every sink queue took, without waiting.
        self.hub = hub

    async def publish(
        self, records: Sequence[Record], *, lost_reason: str = DropReason.SHUTDOWN_TIMEOUT
    ) -> None:
        """Returns once every record is in every wanting queue (or dropped by its policy).

        Cancelled while a `block` queue waits for room, the records that never got into a
        wanting queue are counted as that sink's drops with `lost_reason`."""
        for index, route in enumerate(self.routes):
            selected = route.filter.select(records)
            if selected and route.policy is not PASS_THROUGH:
                selected = route.policy.apply(selected)
            if not selected:
                continue
            try:
                await route.queue.put_many(selected, lost_reason=lost_reason)
            except BaseException:
                # Stopping while a `block` sink waited for room: the sinks after it never got
                # these records either. Each sink's counts stay whole: received = sent + dropped.
                reason = self.lost_reason(lost_reason)
                for later in self.routes[index + 1 :]:
                    later.queue.count_lost(len(later.filter.select(records)), reason)
                raise
        hub = self.hub
        if hub is not None and hub.subscriptions:
            hub.offer(records)

    def lost_reason(self, default: str) -> str:
        """Why a publish that did not complete lost its records: a queue's full disk, which
        held it back, rather than the stop (`default`) that ended the wait."""
        if any(route.queue.problem is not None for route in self.routes):
            return DropReason.DISK_FULL
        return default

    def wanted_by(self, schema_id: str) -> list[str]:
        return [route.name for route in self.routes if route.filter.wants(schema_id)]

    def close(self) -> None:
        for route in self.routes:
            route.queue.close()
