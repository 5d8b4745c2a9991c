"""telemetryd's benchmark harness: `python -m benchmarks` (or `make bench`).

Scenarios (see benchmarks.scenarios):

    socket_file            N events over the Unix socket from one load process into the file sink
    socket_file_4clients   the same, from four concurrent load processes
    socket_file_16clients  the same, from sixteen
    socket_file_disk       socket_file through the disk buffer
    socket_file_2daemons   two independent daemons at once, half the events each: the ceiling
                           of any telemetryd split over processes on this machine
    fanout_3sinks          every event to three file sinks, each of which must hold every event
    slow_sink              two file sinks and a slow blackhole sink (drop_newest, small queue):
                           the fast sinks get every event, the slow one's drops are counted
    socket_file_large_schema  socket_file with the large schema (benchmarks/schemas/large)
    latency_at_load        a paced load at 25/50/75% of socket_file's rate: send-to-visible
                           latency p50/p99/p99.9 (latency_25pct, latency_50pct, latency_75pct)
    overload               the same load offered at 2/5/10x: back-pressure, offered against
                           achieved rate, peak RSS (overload_2x, overload_5x, overload_10x)
    event_size             socket_file with lines of 100 B to 10 KB (event_size_100b ... _10kb)
    python_minimal         the same events through a minimal blocking Python server
    jupyter_events         the baseline: jupyter_events' EventLogger into a logging.FileHandler
    jupyter_events_large_schema  the same with the large schema (socket_file_large_schema's)
    socket_floor           the machine's floor: the same bytes copied through a Unix socket into
                           a file by a minimal Python server that parses nothing
    rsyslog_json           the same lines into rsyslogd (imptcp on a Unix socket, mmjsonparse,
                           omfile): JSON checked and written, no schema (benchmarks.rsyslog)
    http_batch             NDJSON batches of 1,000 events to POST /api/events/batch over keep-alive
                           connections (raw sockets, prebuilt requests) into the file sink
    http_single            one event per POST /api/events, many keep-alive connections, each
                           waiting for its 204 (no pipelining)
    jupyter_server_post    the HTTP baseline: a live Jupyter Server answering the same requests
                           from the same load, its EventLogger writing through a FileHandler
    client_emit            telemetryd.client.Client.emit, each call timed in the caller's thread
                           (against jupyter_events' EventLogger.emit, timed the same way)
    jupyter_events_handler EventLogger.emit with a TelemetrydHandler as its only handler
    jupyter_server_fast    EventLogger.emit with the Jupyter Server extension's fast path

Besides the JSON report, a run writes a PNG plot of latency, throughput and memory against load
and event size (benchmarks.figures, with matplotlib) and, unless it is --quick without
--output, SUMMARY.md.

Every scenario counts the records that reached its output file; a run that loses (or
duplicates) events is FAILED, never fast. `--quick` is the CI smoke test: it checks counts,
never speed. The issue's targets (http_batch >= 150k events/s, http_single >= 10x
jupyter_server_post) are reported as ratios, never asserted.
"""
