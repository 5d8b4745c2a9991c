"""`python -m benchmarks [--events N] [--quick] [--scenario NAME ...] [--output DIR]`."""

from __future__ import annotations

from benchmarks.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
