"""The harness of the tests and the benchmarks: telemetryd and the servers it talks to (NATS,
Redis, PostgreSQL, Jupyter Server, JupyterHub, a webhook) as real processes on loopback, and
the helpers that feed them and read what they wrote. docs/development.md describes it."""
