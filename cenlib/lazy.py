"""Package exports that load their module on first use (PEP 562).

A Dask worker that runs one stage's task imports that stage's package; loading every export
eagerly would pull the client side (rich, the other stages, geopandas) into every worker.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``where`` maps each lazy name to the
    module that defines it; a loaded name is stored in ``namespace`` (the package's globals)."""

    def getattr_(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # once loaded, a plain attribute
        return value

    def dir_() -> list[str]:
        return sorted(namespace.get("__all__", where))

    return getattr_, dir_
