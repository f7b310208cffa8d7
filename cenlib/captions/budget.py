"""A spending limit that holds for the whole cluster (``caption.max_cost``, ``--max-cost``).

Before a request is sent, its worst cost (its prompt tokens and all of ``max_tokens`` at the
endpoint's prices) is *reserved*; when the answer comes, the reservation is settled at the real
cost (or released when the request failed). A reservation that would take spent plus reserved
over the limit is refused, and the request is left for a later run: the limit is never crossed,
whatever the number of workers. One :class:`Ledger` per run, held by a Dask Actor
(:class:`ClusterBudget`) or called directly (:class:`LocalBudget`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any


class Ledger:
    """Spent and reserved amounts against a limit (thread-safe; also the actor's class)."""

    def __init__(self, limit: float | None, spent: float = 0.0) -> None:
        self.limit = limit
        self.spent = spent
        self.reserved = 0.0
        self.refused = 0
        self._lock = threading.Lock()

    def reserve(self, amount: float) -> bool:
        with self._lock:
            if self.limit is not None and self.spent + self.reserved + amount > self.limit + 1e-12:
                self.refused += 1
                return False
            self.reserved += amount
            return True

    def settle(self, reserved: float, actual: float) -> None:
        with self._lock:
            self.reserved = max(0.0, self.reserved - reserved)
            self.spent += actual

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "limit": self.limit,
                "spent": self.spent,
                "reserved": self.reserved,
                "refused": self.refused,
            }


class Budget:
    """The asyncio interface the pool uses."""

    async def reserve(self, amount: float) -> bool:
        raise NotImplementedError

    async def settle(self, reserved: float, actual: float) -> None:
        raise NotImplementedError

    async def state(self) -> dict[str, Any]:
        raise NotImplementedError


class LocalBudget(Budget):
    def __init__(self, limit: float | None, spent: float = 0.0) -> None:
        self.ledger = Ledger(limit, spent)

    async def reserve(self, amount: float) -> bool:
        return self.ledger.reserve(amount)

    async def settle(self, reserved: float, actual: float) -> None:
        self.ledger.settle(reserved, actual)

    async def state(self) -> dict[str, Any]:
        return self.ledger.state()


class ClusterBudget(Budget):
    """A handle to a :class:`Ledger` actor; pickles to the bare handle (pass it to tasks)."""

    def __init__(self, actor: Any, future: Any = None) -> None:
        self.actor = actor
        self._future = future

    @classmethod
    def start(cls, client: Any, limit: float | None, spent: float = 0.0) -> ClusterBudget:
        future = client.submit(Ledger, limit, spent, actor=True, pure=False)
        return cls(future.result(), future)

    def close(self) -> None:
        future, self._future = self._future, None
        if future is not None:
            with contextlib.suppress(Exception):
                future.release()

    def __reduce__(self) -> tuple[Any, ...]:
        return (ClusterBudget, (self.actor,))

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.actor, method)(*args).result()

    async def _call(self, method: str, *args: Any) -> Any:
        return await asyncio.to_thread(self.call, method, *args)

    async def reserve(self, amount: float) -> bool:
        return bool(await self._call("reserve", amount))

    async def settle(self, reserved: float, actual: float) -> None:
        await self._call("settle", reserved, actual)

    async def state(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("state")
        return result
