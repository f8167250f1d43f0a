"""TorchScript's pickles (`data.pkl`, `constants.pkl`, a code file's `.debug_pkl`) read by
their opcodes before the archive loads, nothing unpickled (`pickle_problem`): the globals they
name against an allowlist (torch's tensors and containers, the archive's own classes, torch's
C++ classes of `CLASS_NAMESPACES`), and the objects they build bounded: none holding itself,
nested past MOST_PICKLE_DEPTH or holding past MOST_PICKLE_VALUES, memo indices in order.
"""

from __future__ import annotations

import io
import pickletools
from typing import Any

from archprof.load.common import shorten

# The namespaces of torch's C++ classes (`__torch__.torch.classes.NS.Name`) torch.ao's
# quantized layers keep their packed weights in.
CLASS_NAMESPACES = ("quantized", "rnn")
# What TorchScript's unpickler builds (torch/csrc/jit/serialization/unpickler.cpp): tensors,
# storages, quantization schemes, typed lists, an OrderedDict; and TorchScript classes (`__torch__.`).
_PICKLE_MODULES = ("torch", "torch._utils", "torch.jit._pickle")
_PICKLE_GLOBALS = frozenset(["collections OrderedDict"])

# Objects nested deeper than this in a pickle are refused: TorchScript's unpickler crashed
# (SIGSEGV) on a tuple nested 300,000 deep, built by as many one-byte opcodes. A model's
# pickle nests a few levels per module (an object, its state, the dict holding its children).
MOST_PICKLE_DEPTH = 1000
# Pickles whose objects hold more values than this, each value counted as often as it is
# held, are refused: a list held 500 times by each of 500 lists held by one (memo references,
# 9 KB) is 125,000,000 tensors once torch hands it to Python (54 s and 3.3 GB when a forward
# returned it). A model's pickle holds a value per module, tensor and attribute.
MOST_PICKLE_VALUES = 10_000_000


def pickle_problem(data: bytes) -> str | None:
    """The first global a pickle names that TorchScript's unpickler would build and the
    allowlist does not hold; or the objects it builds (`_Built`) holding themselves, nested
    past MOST_PICKLE_DEPTH or holding more than MOST_PICKLE_VALUES; or a memo index out of
    order. Read by its opcodes: nothing is unpickled."""
    built = _Built()
    try:
        for opcode, argument, _ in pickletools.genops(io.BytesIO(data)):
            if opcode.name in ("STACK_GLOBAL", "INST"):  # TorchScript writes GLOBAL: a name to check
                return f"pickles a {opcode.name} object, which torch does not write"
            if opcode.name == "GLOBAL" and not _is_allowed_global(argument):
                return f"pickles {shorten(argument.replace(' ', '.'))}, which is neither torch's nor its own code"
            problem = built.step(opcode, argument)
            if problem:
                return problem
        return built.problem()
    except Exception:  # a truncated or malformed pickle: torch would fail on it too
        return "holds a pickle archprof cannot read"


# Opcodes that add to the object below their arguments (a list's items, an object's state)
# rather than make a new one.
_ADDING = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "BUILD", "ADDITEMS"})
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})


class _Built:
    """The objects a pickle builds, followed opcode by opcode over its stack (`pickletools`'
    stack effects) as a graph: each value a list of the values it holds, made of the values
    its opcode takes, or added to in place (`_ADDING`: a list's items, an object's state, what
    a memo entry read back holds too, however late added); measured once the pickle is read
    (`problem`). Memo indices are refused out of order (TorchScript's unpickler sizes its memo
    table by the index: 2**32 asked for 68 GB; torch writes them 0, 1, 2, ...)."""

    def __init__(self) -> None:
        self._stack: list[list | None] = []  # None: a mark
        self._memo: dict[int, list] = {}
        self._root: list | None = None

    def step(self, opcode: pickletools.OpcodeInfo, argument: Any) -> str | None:
        stack, name = self._stack, opcode.name
        if name in _PUTS or name == "MEMOIZE":
            index = len(self._memo) if name == "MEMOIZE" else argument
            if not isinstance(index, int) or not 0 <= index <= len(self._memo):
                at, filled = (f"{index:,}" if isinstance(index, int) else shorten(str(index))), f"{len(self._memo):,}"
                return f"memoizes a value at index {at}, past the {filled} it has (torch writes them in order)"
            self._memo[index] = stack[-1]
            return None
        if name in _GETS:
            stack.append(self._memo[argument])
            return None
        if name == "DUP":
            stack.append(stack[-1])
            return None
        popped: list[list] = []
        before = opcode.stack_before
        if pickletools.markobject in before:
            while (value := stack.pop()) is not None:
                popped.append(value)
            before = before[: before.index(pickletools.markobject)]
        popped += [stack.pop() for _ in before]
        if name == "STOP":
            self._root = popped[0]
        elif name in _ADDING:  # the object added to is popped last
            popped[-1].extend(popped[:-1])
            stack.append(popped[-1])
        else:
            stack += [None if after is pickletools.markobject else list(popped) for after in opcode.stack_after]
        return None

    def problem(self) -> str | None:
        """What is wrong with the objects the pickle returns, if anything: one that holds
        itself, nesting past MOST_PICKLE_DEPTH, or more than MOST_PICKLE_VALUES values, each
        counted as often as it is held. Each object measured once, from a stack: a chain of
        thousands is as cheap as one."""
        if self._root is None:
            return None
        depth: dict[int, int] = {}
        values: dict[int, int] = {}
        entered: set[int] = set()
        to_measure = [self._root]
        while to_measure:
            held = to_measure[-1]
            key = id(held)
            if key in depth:
                to_measure.pop()
                continue
            if key not in entered:
                entered.add(key)
                pending = [item for item in held if id(item) not in depth]
                if any(id(item) in entered for item in pending):
                    return "pickles an object that holds itself (torch's loader crashes on those)"
                if pending:
                    to_measure += pending
                    continue
            depth[key] = 1 + max((depth[id(item)] for item in held), default=0)
            values[key] = min(1 + sum(values[id(item)] for item in held), MOST_PICKLE_VALUES + 1)
            entered.discard(key)
            to_measure.pop()
            if depth[key] > MOST_PICKLE_DEPTH:
                return f"nests objects more than {MOST_PICKLE_DEPTH} deep in a pickle (torch's loader crashes on those)"
            if values[key] > MOST_PICKLE_VALUES:
                return (
                    f"pickles an object holding more than {MOST_PICKLE_VALUES:,} values, each counted as often as it"
                    " is held (one held over and over)"
                )
        return None


def _is_allowed_global(name: str) -> bool:
    module, _, attribute = name.partition(" ")
    if module == "__torch__" or module.startswith("__torch__."):
        parts = f"{module}.{attribute}".split(".")
        return parts[1:3] != ["torch", "classes"] or (len(parts) >= 5 and parts[3] in CLASS_NAMESPACES)
    return module in _PICKLE_MODULES or name in _PICKLE_GLOBALS
