"""One registry type for interchangeable parts: detectors, importers, feature backends, model variants.

Why: a part is chosen by name in `params.yaml`; the registry is the one list of valid names, so
parameter validation asks it (no second list of names to keep in step) and an unknown name gets
the same one-line error everywhere, naming the parameter key and the names that exist.

A part registers itself where it is defined (`@DETECTORS.register("mtcnn")`); the package that owns
the registry imports its members, so importing the registry is importing every part it can create
(which is exactly what a stage that chooses by name depends on).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pipeline.errors import PipelineError

T = TypeVar("T")


class UnknownNameError(PipelineError, KeyError):
    """A name that no part of the registry answers to."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Parts of one kind by name: `register`, `get`, `create`, `names`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._parts: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` above a class or factory function."""

        def add(part: T) -> T:
            if name in self._parts and self._parts[name] is not part:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._parts[name] = part
            return part

        return add

    def add(self, name: str, part: T) -> T:
        """Register `part` under `name` (for parts that are values, not definitions)."""
        return self.register(name)(part)

    def get(self, name: str, key: str | None = None) -> T:
        """The part called `name`; `key` is the parameter that named it, for the error message."""
        try:
            return self._parts[name]
        except KeyError:
            where = f"{key}: " if key else ""
            raise UnknownNameError(f"{where}unknown {self.kind} {name!r} (known: {', '.join(self.names())})") from None

    def create(self, name: str, *args: Any, key: str | None = None, **kwargs: Any) -> Any:
        """Call the part (a class or factory) with the given arguments."""
        factory = self.get(name, key)
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r} is not callable")
        return factory(*args, **kwargs)

    def check(self, names: str | list[str] | tuple[str, ...], key: str) -> None:
        """Raise the one-line error for the first name that is not registered."""
        for n in [names] if isinstance(names, str) else names:
            self.get(n, key)

    def names(self) -> list[str]:
        return sorted(self._parts)

    def __contains__(self, name: object) -> bool:
        return name in self._parts

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._parts)
