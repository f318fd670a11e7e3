"""A dict with a size cap: a flood from many sources must not grow memory without limit."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedTable(Generic[K, V]):
    """Insertion-ordered map that evicts its oldest entries when full.

    Touching an entry with ``touch`` moves it to the young end, so active peers outlive a spray
    of one-shot sources.
    """

    __slots__ = ("_data", "evictions", "max_entries")

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._data: dict[K, V] = {}
        self.evictions = 0

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        data = self._data
        if key in data:
            del data[key]
        elif len(data) >= self.max_entries:
            del data[next(iter(data))]
            self.evictions += 1
        data[key] = value

    def touch(self, key: K) -> None:
        value = self._data.pop(key, None)
        if value is not None:
            self._data[key] = value

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(list(self._data.items()))

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data
