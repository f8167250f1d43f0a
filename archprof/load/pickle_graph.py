"""What a pickle builds, followed by its opcodes before anything unpickles it, nothing built
(`built_problem`): the one reading ahead that archprof's two pickle checks share, TorchScript's
(`script_pickles`, against its allowlist of globals) and every weights-only load's
(`unpickling`, against torch's tensor classes called). The objects are followed as a graph
over `pickletools`' stack effects and measured once the pickle is read, so that what a memo
entry holds counts however late it was filled. Refused, whoever loads the pickle:
- an object that holds itself (torch's TorchScript loader crashes on one; a walk never ends);
- objects nested past MOST_PICKLE_DEPTH (the TorchScript loader crashed on a tuple nested
  300,000 deep, one byte an opcode);
- objects holding more than MOST_REACHED values past the opcodes read, each counted as often
  as it is held: a container handed out again and again by the memo (`t = (t, t)`, forty
  deep, is 1.4 KB and 2**40 leaves to anyone who walks or hashes it);
- memo indices out of order (TorchScript's unpickler sizes its memo table by the index: 2**32
  asked for 68 GB; torch, as Python's pickler, writes them 0, 1, 2, ...).
"""

from __future__ import annotations

import pickletools
from collections.abc import Callable
from typing import Any, BinaryIO

from archprof.load.common import shorten

# Objects nested deeper than this in a pickle are refused. A model's pickle nests a few
# levels per module (an object, its state, the dict holding its children).
MOST_PICKLE_DEPTH = 1000
# What a pickle's objects may hold beyond what it spells out: walked, each value counted
# wherever it is held, they may meet this many more than the pickle has opcodes (torch.save
# shares a tensor, a string, a small tuple; never much).
MOST_REACHED = 1_000_000

# What a pickle this reading cannot follow raises: pickletools' errors, and the stack's own
# (an opcode taking more than is on it, adding to a number).
UNFOLLOWED = (ValueError, IndexError, KeyError, AttributeError, TypeError)

# Opcodes that add to the object below their arguments (a list's items, an object's state)
# rather than make a new one.
_ADDING = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "BUILD", "ADDITEMS"})
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_CALLS = frozenset({"REDUCE", "NEWOBJ"})  # a callable (a GLOBAL) and its arguments
# Opcodes making a container that later opcodes add to (`_ADDING`).
_EMPTY_CONTAINERS = frozenset({"EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"})
# Every value holding nothing, made by an opcode of no arguments: adding to it fails (a tuple
# has no `extend`), as torch fails on such a pickle.
_LEAF = ()

# What `built_problem` asks of each opcode before following it: its name, its argument and,
# for a call, the GLOBALs it names (`_Built.called`); a problem or None.
Vetting = Callable[[str, Any, tuple[str, ...]], str | None]


def built_problem(stream: BinaryIO, vetted: Vetting) -> str | None:
    """The first problem of the pickle at `stream`'s position: what `vetted` says of an
    opcode, or what is wrong with the objects it builds (the module's list), every one of
    them: what it returns, and what it leaves on its stack, pops or memoizes alone (a
    dictionary keyed by a tuple that hashing walks, then dropped). Read by its opcodes to its
    STOP: nothing is unpickled. A pickle this reading cannot follow raises one of `UNFOLLOWED`
    (whether torch is left to say why is the caller's to decide), unless what it built up to
    there, which torch builds too before it fails, is refused."""
    built = _Built()
    try:
        for opcode, argument, _ in pickletools.genops(stream):
            called = built.called() if opcode.name in _CALLS else ()
            problem = vetted(opcode.name, argument, called) or built.step(opcode, argument)
            if problem:
                return problem
    except UNFOLLOWED:
        problem = built.problem()
        if problem:
            return problem
        raise
    return built.problem()


class _Built:
    """The objects a pickle builds, followed opcode by opcode over its stack as a graph: each
    value the values it holds, in the order the stack holds them, made of the values its
    opcode takes, or added to in place (`_ADDING`: a list's items, an object's state, what a
    memo entry read back holds too, however late added); measured once the pickle is read
    (`problem`), from each object no other holds."""

    def __init__(self) -> None:
        self._stack: list[list | tuple | None] = []  # None: a mark
        self._memo: dict[int, list | tuple] = {}
        self._globals: dict[int, str] = {}  # id of a GLOBAL's value -> its name, "module name"
        self._made: list[list] = []  # every object that may hold others, in the order made
        self._held: set[int] = set()  # the ids of those another holds
        self._opcodes = 0

    def called(self) -> tuple[str, ...]:
        """The GLOBALs a REDUCE or NEWOBJ about to be followed names: its callable's, then each
        of its arguments' ("" where one is no GLOBAL)."""
        if len(self._stack) < 2 or self._stack[-1] is None:
            return ()
        callable_, arguments = self._stack[-2:]
        return tuple(self._globals.get(id(value), "") for value in (callable_, *arguments))

    def step(self, opcode: pickletools.OpcodeInfo, argument: Any) -> str | None:
        self._opcodes += 1
        stack, name = self._stack, opcode.name
        if name in _PUTS:
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
        taken = self._taken(opcode.stack_before)
        if not opcode.stack_after:  # STOP, POP, POP_MARK: what they take is held by nothing more
            return None
        if name in _ADDING:  # the object added to lies under what it takes
            self._hold(taken[1:])
            taken[0].extend(taken[1:])
            stack.append(taken[0])
        elif name == "GLOBAL":
            made: list = []
            self._globals[id(made)] = argument
            stack.append(made)
        elif taken or name in _EMPTY_CONTAINERS:
            self._hold(taken)
            for after in opcode.stack_after:
                made = None if after is pickletools.markobject else list(taken)
                if made is not None:
                    self._made.append(made)
                stack.append(made)
        else:  # a number, a string, None, a persistent id, a mark: nothing is added to one, so one stands for all
            stack += [None if after is pickletools.markobject else _LEAF for after in opcode.stack_after]
        return None

    def _taken(self, before: list) -> list:
        """What an opcode takes off the stack, in the order the stack held it: the values under
        its mark, if it has one, then those above it."""
        stack = self._stack
        marked: list = []
        if pickletools.markobject in before:
            while (value := stack.pop()) is not None:
                marked.append(value)
            marked.reverse()
            before = before[: before.index(pickletools.markobject)]
        count = len(before)
        taken = stack[len(stack) - count :] if count else []
        del stack[len(stack) - count :]
        return taken + marked

    def _hold(self, values: list) -> None:
        self._held.update(id(value) for value in values)

    def problem(self) -> str | None:
        """What is wrong with the objects the pickle builds, if anything (the module's list),
        measured from each no other holds. Each object measured once, from a stack: a chain of
        thousands is as cheap as one."""
        most = self._opcodes + MOST_REACHED
        depth: dict[int, int] = {}
        values: dict[int, int] = {}
        entered: set[int] = set()
        for top in (made for made in self._made if id(made) not in self._held):
            to_measure = [top]
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
                        return "builds an object that holds itself"
                    if pending:
                        to_measure += pending
                        continue
                depth[key] = 1 + max((depth[id(item)] for item in held), default=0)
                values[key] = min(1 + sum(values[id(item)] for item in held), most + 1)  # no huge integers
                entered.discard(key)
                to_measure.pop()
                if depth[key] > MOST_PICKLE_DEPTH:
                    return f"nests objects more than {MOST_PICKLE_DEPTH} deep"
                if values[key] > most:
                    return (
                        "hands out one container again and again (t = (t, t)): its objects hold more than"
                        f" {MOST_REACHED:,} values past its {self._opcodes:,} opcodes, each counted as often as it"
                        " is held"
                    )
        return None
