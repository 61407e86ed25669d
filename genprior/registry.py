"""Registries by name for datasets, networks, baselines and matching losses (priors are listed in
``pretrained/registry.json`` instead, since they are files, not code).

A registry maps a name to a constructor plus a little metadata, like timm's
``register_model``. Unknown names fail with the list of known ones.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional

from .errors import UnknownNameError


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable[..., Any]
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return self.info.get("summary") or (self.fn.__doc__ or "").strip().split("\n")[0]


class Registry:
    def __init__(self, kind: str, plural: Optional[str] = None):
        self.kind = kind
        self.plural = plural or kind + "s"
        self._entries: Dict[str, Entry] = {}

    def register(self, name: Optional[str] = None, **info: Any) -> Callable:
        """Decorator: ``@NETS.register("convnet", summary=...)``."""

        def deco(fn: Callable) -> Callable:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = Entry(key, fn, dict(info))
            return fn

        return deco

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known {self.plural}: {known} (see `genprior list`)"
            )
        return self._entries[name]

    def get(self, name: str) -> Callable:
        return self.entry(name).fn

    def names(self, pattern: Optional[str] = None) -> List[str]:
        names = sorted(self._entries)
        return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)
