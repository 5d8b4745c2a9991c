"""One `python -m benchmarks` run as its scenarios see it: the command line's settings, the
temporary folder, and the results so far (which later scenarios and the notes compare with)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.latency_load import max_rate
from benchmarks.scenarios import HttpLoadShape, ProgressFn, ScenarioResult


@dataclass(frozen=True)
class RunSettings:
    events: int  # per scenario, before any scenario's own cap
    jupyter_events_max: int  # cap of jupyter_events and jupyter_events_handler
    http_single_max: int  # cap of http_single and jupyter_server_post
    single_shape: HttpLoadShape  # the load of http_single and jupyter_server_post
    quick: bool

    @property
    def http_single_events(self) -> int:
        return min(self.events, self.http_single_max)


@dataclass
class RunContext:
    settings: RunSettings
    workdir: Path  # each scenario runs in workdir / its name
    results: list[ScenarioResult] = field(default_factory=list)
    _max_rate: tuple[float | None, str] | None = field(default=None, init=False, repr=False)

    def result(self, name: str) -> ScenarioResult | None:
        return next((r for r in self.results if r.name == name), None)

    def max_events_per_sec(self, progress: ProgressFn) -> tuple[float | None, str]:
        """socket_file's rate in this run, or a probe's, measured once for every paced
        scenario: (events/s, where it came from)."""
        if self._max_rate is None:
            self._max_rate = max_rate(self.results, self.settings.events, self.workdir, progress)
        return self._max_rate
