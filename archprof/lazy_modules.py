"""Modules named in annotations, imported at their first use."""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """The module `name`, imported at the first read of one of its attributes. A module whose
    annotations name pandas (`pd.DataFrame`) binds `pd` to one of these, so that
    `typing.get_type_hints` resolves its public functions (as an IDE, pydantic's validate_call
    or sphinx-autodoc-typehints ask), while importing the module that annotates still leaves
    pandas unimported (a third of a second of a command's start-up)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported at its first use>"
