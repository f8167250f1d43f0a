"""TorchScript's pickles (`data.pkl`, `constants.pkl`, a code file's `.debug_pkl`) read by
their opcodes before the archive loads, nothing unpickled (`pickle_problem`): the globals they
name against an allowlist (torch's tensors and containers, the archive's own classes, torch's
C++ classes of `CLASS_NAMESPACES`), and the objects they build bounded as every pickle's are
(`pickle_graph`).
"""

from __future__ import annotations

import io
from typing import Any

from archprof.load.common import shorten
from archprof.load.pickle_graph import built_problem

# The namespaces of torch's C++ classes (`__torch__.torch.classes.NS.Name`) torch.ao's
# quantized layers keep their packed weights in.
CLASS_NAMESPACES = ("quantized", "rnn")
# What TorchScript's unpickler builds (torch/csrc/jit/serialization/unpickler.cpp): tensors,
# storages, quantization schemes, typed lists, an OrderedDict; and TorchScript classes (`__torch__.`).
_PICKLE_MODULES = ("torch", "torch._utils", "torch.jit._pickle")
_PICKLE_GLOBALS = frozenset(["collections OrderedDict"])


def pickle_problem(data: bytes) -> str | None:
    """The first global a pickle names that TorchScript's unpickler would build and the
    allowlist does not hold, or what `pickle_graph.built_problem` finds wrong with the
    objects it builds. Read by its opcodes: nothing is unpickled."""
    try:
        return built_problem(io.BytesIO(data), _global_problem)
    except Exception:  # a truncated or malformed pickle: torch would fail on it too
        return "holds a pickle archprof cannot read"


def _global_problem(opcode: str, argument: Any, called: tuple[str, ...]) -> str | None:
    if opcode in ("STACK_GLOBAL", "INST"):  # TorchScript writes GLOBAL: a name to check
        return f"pickles a {opcode} object, which torch does not write"
    if opcode == "GLOBAL" and not _is_allowed_global(argument):
        return f"pickles {shorten(argument.replace(' ', '.'))}, which is neither torch's nor its own code"
    return None


def _is_allowed_global(name: str) -> bool:
    module, _, attribute = name.partition(" ")
    if module == "__torch__" or module.startswith("__torch__."):
        parts = f"{module}.{attribute}".split(".")
        return parts[1:3] != ["torch", "classes"] or (len(parts) >= 5 and parts[3] in CLASS_NAMESPACES)
    return module in _PICKLE_MODULES or name in _PICKLE_GLOBALS
