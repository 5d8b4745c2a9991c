"""rsyslog as a baseline: the same lines into a Unix socket, parsed as JSON, written to a file.

`rsyslog_json`: rsyslogd (Debian's, started by the harness with a generated configuration in
the scenario's folder) reads the load's lines from a Unix stream socket (imptcp `path`),
parses each with mmjsonparse (`useRawMsg`: the line itself, no syslog header expected) and
writes the parsed JSON (`$!all-json`) a line each with omfile. It checks that each line is
JSON and nothing more: no schema, no metadata, no acknowledgement. Tuned for throughput
(batches of 1,024 from a 100,000-message in-memory main queue, a 256 KiB write buffer flushed
at the end of each batch), as an operator comparing would tune it.

Timed like socket_file: from the load's first byte until the output file holds every event;
then every line is decoded and each event must be there exactly once (a lossy run is FAILED).
Without rsyslogd on the machine the scenario is FAILED with a note saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.load import split, unix_loads
from benchmarks.scenarios import (
    ProgressFn,
    ScenarioResult,
    _finish,
    _load_summary,
    _verify,
    _wait_for_lines,
)
from benchmarks.verify import LineCounter, verify_delivery

NAME = "rsyslog_json"
TICKS = os.sysconf("SC_CLK_TCK")

CONFIG = """\
global(workDirectory="{folder}" maxMessageSize="64k")
module(load="imptcp")
module(load="mmjsonparse")
main_queue(queue.type="LinkedList" queue.size="100000" queue.dequeueBatchSize="1024")
template(name="json_line" type="list") {{
  property(name="$!all-json")
  constant(value="\\n")
}}
ruleset(name="events") {{
  action(type="mmjsonparse" cookie="" useRawMsg="on")
  if $parsesuccess == "OK" then {{
    action(type="omfile" file="{out}" template="json_line" ioBufferSize="256k"
           flushOnTXEnd="on" asyncWriting="off")
  }}
}}
input(type="imptcp" path="{socket}" unlink="on" ruleset="events")
"""


def rsyslogd() -> str | None:
    return shutil.which("rsyslogd") or next(
        (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.access(p, os.X_OK)), None
    )


def _cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_rsyslog(events: int, folder: Path, progress: ProgressFn) -> ScenarioResult:
    result = ScenarioResult(
        NAME,
        f"the same {events:,} lines from one load process into rsyslogd over a Unix socket "
        "(imptcp), parsed by mmjsonparse, written as JSON lines by omfile: no schema, no "
        "metadata",
        events,
    )
    binary = rsyslogd()
    if binary is None:
        result.problems.append("rsyslogd is not installed (Debian: apt-get install rsyslog)")
        return result
    folder.mkdir(parents=True)
    sock, out = folder / "rsyslog.sock", folder / "out.jsonl"
    config = folder / "rsyslog.conf"
    config.write_text(CONFIG.format(folder=folder, out=out, socket=sock))
    log = (folder / "rsyslogd.log").open("wb")
    process = subprocess.Popen(
        [binary, "-n", "-f", str(config), "-i", str(folder / "rsyslogd.pid")],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"rsyslogd did not listen on {sock}: "
                    + (folder / "rsyslogd.log").read_text(errors="replace")[-2000:]
                )
            time.sleep(0.02)
        cpu_before = _cpu_secs(process.pid)
        with unix_loads(sock, split(events, 1)) as loads, LineCounter(out) as counter:
            loads.start()
            loads.go()
            finished = _wait_for_lines(counter, events, progress, loads.done)
            reports = loads.reports(timeout_secs=60)
        result.cpu_secs_server = _cpu_secs(process.pid) - cpu_before
        result.peak_rss_bytes = _peak_rss_bytes(process.pid)
        result.cpu_secs_load = sum(r.cpu_secs for r in reports)
        result.details["load"] = _load_summary(reports)
        if finished is None:
            result.problems.append(f"the output stopped growing at {counter.lines:,} lines")
        else:
            result.elapsed_secs = finished - min(r.first_byte for r in reports)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    _verify(result, verify_delivery([out], events, nested=True))
    return _finish(result)
