"""Components chosen by name: one :class:`Registry` per config key, filled where the components live.

A new kind of block, norm, residual or loss is one registration next to its definition::

    NORMS = Registry("model.norm")

    @NORMS.register("rmsnorm")
    class RMSNorm(nn.Module): ...

and ``NORMS.get(config.norm)`` builds it. The config validator accepts exactly the registered names
(``growth.config.choices``), so there is no second list to keep in step, and an unknown name is an
error that names the key and the known names, never a silent fallback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

# Only the error class (growth/errors.py sits below every module; this one right above it).
from growth.errors import ConfigError

T = TypeVar("T")

_BY_KEY: dict[str, Registry] = {}


class Registry(Generic[T]):
    """Names -> components for one config key (e.g. ``model.residual``), in registration order."""

    def __init__(self, key: str):
        if key in _BY_KEY:
            raise ValueError(f"a registry for {key} already exists; register into that one")
        self.key = key
        self._entries: dict[str, T] = {}
        _BY_KEY[key] = self

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator (or plain call) that files ``obj`` under ``name`` and returns it unchanged."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.key}: {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            # The wording the config validator has always used, so both paths read the same.
            raise ConfigError(f"{self.key} must be one of {' | '.join(self._entries)}, got {name!r}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.key!r}: {' | '.join(self._entries)})"


def registry_for(key: str) -> Registry:
    """The registry of a config key; only registries whose module has been imported exist."""
    if key not in _BY_KEY:
        raise ConfigError(f"no component registry for {key}; is the module that defines them imported?")
    return _BY_KEY[key]
