"""telemetryd's benchmark harness: `python -m benchmarks` (or `make bench`).

Scenarios (see benchmarks.scenarios):

    socket_file            N events over the Unix socket from one load process into the file sink
    socket_file_4clients   the same, from four concurrent load processes
    jupyter_events         the baseline: jupyter_events' EventLogger into a logging.FileHandler
    socket_floor           the machine's floor: the same bytes copied through a Unix socket into
                           a file by a minimal Python server that parses nothing

Every scenario counts the records that reached its output file; a run that loses (or
duplicates) events is FAILED, never fast. `--quick` is the CI smoke test: it checks counts,
never speed.
"""
