"""The base of every stage's summary: a frozen, typed record that reads like its JSON.

Each stage's ``run_<stage>`` returns a subclass; the job writes ``as_dict()`` to
``summary.json`` and prints ``line()``. ``summary["field"]`` reads a field, so code written
against ``summary.json`` reads a summary object the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Summary:
    """A stage's summary. Subclasses are frozen dataclasses of JSON-able fields."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __getitem__(self, name: str) -> Any:
        if name not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(f"{type(self).__name__} has no field {name!r}")
        return getattr(self, name)

    def line(self) -> str:
        """One line for the run's console summary."""
        raise NotImplementedError
