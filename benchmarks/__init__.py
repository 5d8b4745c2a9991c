"""telemetryd's benchmark harness: `python -m benchmarks` (or `make bench`).

Scenarios (see benchmarks.scenarios):

    socket_file            N events over the Unix socket from one load process into the file sink
    socket_file_4clients   the same, from four concurrent load processes
    jupyter_events         the baseline: jupyter_events' EventLogger into a logging.FileHandler
    socket_floor           the machine's floor: the same bytes copied through a Unix socket into
                           a file by a minimal Python server that parses nothing
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

Every scenario counts the records that reached its output file; a run that loses (or
duplicates) events is FAILED, never fast. `--quick` is the CI smoke test: it checks counts,
never speed. The issue's targets (http_batch >= 150k events/s, http_single >= 10x
jupyter_server_post) are reported as ratios, never asserted.
"""
