"""A throwaway PostgreSQL cluster for the postgres sink's tests (benchmarks.postgres_cluster,
which the benchmark shares), with the queries the tests assert with."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from benchmarks.postgres_cluster import SUPERUSER, PostgresCluster, pg_binary

__all__ = ["SUPERUSER", "PostgresServer", "pg_binary"]


class PostgresServer(PostgresCluster):
    def fetch(self, query: str, *args: Any, database: str = "postgres") -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.dsn(database), timeout=10)
            try:
                rows: list[asyncpg.Record] = await conn.fetch(query, *args)
                return rows
            finally:
                await conn.close()

        return asyncio.run(run())

    def value(self, query: str, *args: Any) -> Any:
        return self.fetch(query, *args)[0][0]

    def execute(self, script: str, database: str = "postgres") -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.dsn(database), timeout=10)
            try:
                await conn.execute(script)
            finally:
                await conn.close()

        asyncio.run(run())

    def wait_until(self, query: str, expected: Any, timeout: float = 30) -> None:
        """Polls `query`'s single value until it equals `expected`."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                value = self.value(query)
                if value == expected:
                    return
            time.sleep(0.05)
        raise AssertionError(f"{query!r} gave {value!r}, not {expected!r}, after {timeout}s")
