"""The per-sink privacy policy hook: what a sink may see of the records routed to it.

The bus hands each sink's selection of a publish through that sink's policy before it enters
the sink's queue, so a policy can drop records (consent withdrawn, a category the sink may not
receive) or hand over redacted copies (new payload bytes), per sink, without changing what
other sinks get. The daemon installs `PASS_THROUGH` for every sink today; the privacy settings
(`[privacy]`, docs/architecture.md, Privacy) are to fill this hook.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from telemetryd.core.record import Record


class SinkPolicy(Protocol):
    def apply(self, records: Sequence[Record]) -> Sequence[Record]:
        """The records this sink may store, in order: some of `records`, or redacted copies."""
        ...


class PassThrough:
    def apply(self, records: Sequence[Record]) -> Sequence[Record]:
        return records


PASS_THROUGH: Final = PassThrough()
