"""Slowing down password guessing: each failed login waits longer before it is answered."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

# Looked up at each failure rather than bound once, so that a test can record the delays in
# place of waiting them out.
sleep: Callable[[float], Awaitable[object]] = asyncio.sleep


class FailureDelays:
    """How long to wait before answering a failed login: doubles per consecutive failure of
    the same key (provider and username), up to ``cap``; a success resets it. Only the most
    recent ``max_entries`` keys are remembered, so that guesses at many names cannot grow the
    table without bound."""

    def __init__(self, base: float = 0.05, cap: float = 2.0, max_entries: int = 10_000):
        self.base, self.cap, self.max_entries = base, cap, max_entries
        self._failures: OrderedDict[Hashable, int] = OrderedDict()

    def record(self, key: Hashable) -> float:
        """Count one more failure of ``key``; the seconds to wait before answering it."""
        count = self._failures.pop(key, 0) + 1
        self._failures[key] = count
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)
        return min(self.base * 2 ** (count - 1), self.cap)

    def reset(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    async def wait_after_failure(self, key: Hashable) -> None:
        """Count one more failure of ``key`` and wait its delay."""
        await sleep(self.record(key))
