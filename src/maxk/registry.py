"""A small generic registry: names to callables of one signature.

Used for advantage estimators (`maxk.advantages.ADVANTAGES`), losses and rewards. Hyperparameters are
keyword-only and bound once by the caller (`Registry.bind` is `functools.partial` over `get`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Maps names to callables. Unknown names raise a KeyError listing the known ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, F] = {}

    def register(self, name: str, fn: F | None = None):
        """Register `fn` under `name`; usable as a decorator (`@REG.register("name")`).

        Registering the same name twice with a different object is an error; the same object is a no-op.
        """
        if fn is None:
            return functools.partial(self.register, name)
        existing = self._entries.get(name)
        if existing is not None and existing is not fn:
            raise ValueError(f"{self.kind} {name!r} is already registered to {existing!r}; pick another name")
        self._entries[name] = fn
        return fn

    def get(self, name: str) -> F:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def bind(self, name: str, **options) -> Callable:
        """The entry with its keyword options bound once, e.g. `ADVANTAGES.bind("maxk", k=4)`."""
        return functools.partial(self.get(name), **options)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
