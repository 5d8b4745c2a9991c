"""The read budget shared by socket connections: never overdrawn, served in arrival order,
smaller shares when it runs low, and nothing lost to a cancelled wait."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetryd.sources.read_budget import ReadBudget


@pytest.mark.anyio
async def test_shares_shrink_as_the_budget_runs_low_and_none_is_smaller_than_the_minimum() -> None:
    budget = ReadBudget(100, min_share=10)
    assert budget.take_nowait(60) == 60
    assert budget.take_nowait(60) == 40  # what is left: a smaller read
    assert budget.take_nowait(60) == 0
    budget.give_back(5)
    assert budget.take_nowait(60) == 0  # under the minimum: not a read worth making
    assert budget.take_nowait(5) == 5  # unless that is all that was asked for
    budget.give_back(100)
    assert budget.available == 100


@pytest.mark.anyio
async def test_waiters_are_served_in_arrival_order_and_newcomers_queue_behind_them() -> None:
    budget = ReadBudget(100, min_share=50)
    held = budget.take_nowait(100)
    served: list[str] = []

    async def reader(name: str) -> None:
        share = await budget.take(100)
        served.append(name)
        await anyio.lowlevel.checkpoint()
        budget.give_back(share)

    async with anyio.create_task_group() as tg:
        for count, name in enumerate(("first", "second", "third"), start=1):
            tg.start_soon(reader, name)
            while budget.waiting < count:  # it is in line before the next one starts
                await anyio.lowlevel.checkpoint()
        assert budget.take_nowait(10) == 0  # others wait first: no overtaking
        budget.give_back(held)
    assert served == ["first", "second", "third"]
    assert budget.available == 100


@pytest.mark.anyio
async def test_a_cancelled_wait_leaves_the_line_and_loses_nothing() -> None:
    budget = ReadBudget(100, min_share=100)
    held = budget.take_nowait(100)
    with anyio.move_on_after(0.01):
        await budget.take(100)
    assert budget.waiting == 0
    budget.give_back(held)
    assert budget.take_nowait(100) == 100


@settings(max_examples=50, deadline=None)
@given(
    wants=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=30),
    total=st.integers(min_value=1, max_value=500),
)
def test_many_readers_never_overdraw_and_all_are_served(wants: list[int], total: int) -> None:
    budget = ReadBudget(total, min_share=16)
    lowest = [total]

    async def reader(want: int) -> None:
        share = await budget.take(want)
        assert 0 < share <= want
        lowest[0] = min(lowest[0], budget.available)
        await anyio.lowlevel.checkpoint()
        budget.give_back(share)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for want in wants:
                tg.start_soon(reader, want)

    anyio.run(main)
    assert lowest[0] >= 0
    assert budget.available == total
    assert budget.waiting == 0
