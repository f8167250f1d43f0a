"""Attributing a traced forward's operators to module calls without hooks (a TorchScript
module, or one marked `_archprof_attribution = "parameters"`): as the trace records each op,
by the parameters and buffers it reads (`ParameterOwners.call_of`); once the forward has run,
by the TorchScript call stacks read for the ops (`followed_calls`). The recorder
(`archprof.tracing.recorder.Recorder`) holds the ops and calls; these take and return them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from archprof.graph import ModuleCall, OpNode, TensorMeta
from archprof.tracing.op_info import OpInfo
from archprof.tracing.script_calls import Link


@dataclass(slots=True)
class OwnerCall:
    """The submodule call that ops reading parameters go to now (`ParameterOwners.call_of`):
    the tensors it has read and written (by the id of their first version), its last op."""

    call: ModuleCall
    read: set[int] = field(default_factory=set)
    written: set[int] = field(default_factory=set)
    last: int = -1


class ParameterOwners:
    """The submodules holding each parameter and buffer, and the attribution of forward ops
    to their calls as the trace records them (`call_of`). `module_types`: each module's
    path -> its type's name; `owners`: each parameter's and buffer's storage -> the paths of
    the submodules holding it (several for a tied tensor), in the model's order."""

    def __init__(self, module_types: dict[str, str], owners: dict[int, tuple[str, ...]]) -> None:
        self.module_types = module_types
        self.owners = owners
        self._open: OwnerCall | None = None
        self._chosen: dict[tuple[str, ...], str] = {}  # a tied tensor's owners -> the one chosen last
        self._versions: dict[int, int] = {}  # id of an in-place result -> id of the tensor it is a version of

    def call_of(
        self,
        info: OpInfo,
        inputs: tuple[TensorMeta, ...],
        outputs: tuple[TensorMeta, ...],
        root: ModuleCall,
        ops: list[OpNode],
        calls: list[ModuleCall],
        counts: dict[str, int],
    ) -> ModuleCall:
        """The call of the op about to be recorded after `ops`: that of the submodule whose
        parameters or buffers (or views of them: a linear layer's transposed weight) it reads;
        else the model's own (`root`'s type), one row per op (its output counted, as nothing
        says which ops a parameter-free module such as ReLU grouped). A new call is appended
        to `calls`, counted in `counts` (path -> calls so far); ops of the model's own that
        an op of the open call now follows are given to that call in `ops`.

        An op of the module now open continues its call unless it reads again a tensor the call
        has read (any version of it), or writes again one it has written: a module called twice
        in a row reads its weight twice, where one call of any layer reads each of its tensors
        once (a batch norm in training writes its batch count, then reads its weights and
        statistics). The model's own ops between two ops of one call are that call's (a linear
        layer's view of its input before its product); so is `_unsafe_view` of the call's last
        output, which only a composite's reshape of its own product makes (matmul's, linear's).
        A new call of a tied tensor goes to its next holder after the one chosen last, in the
        model's order: an Embedding's lookup, then the Linear head's product."""
        owned = [t for t in inputs if t.storage in self.owners]
        opened = self._open
        if not owned:
            last = ops[-1] if ops else None
            if (
                info.name == "aten._unsafe_view"
                and opened is not None
                and last is not None
                and last.module is opened.call
                and inputs
                and inputs[0] in last.outputs
            ):
                opened.last = len(ops)
                return opened.call
            call = ModuleCall("", root.type, 0, len(calls), len(ops))
            calls.append(call)
            return call
        written = None
        if info.writes_input and inputs[0] is owned[0]:
            written = self._versions.get(owned[0].id, owned[0].id)
            self._versions[outputs[0].id] = written
        read = {self._versions.get(t.id, t.id) for t in owned} - {written}
        if (
            opened is not None
            and any(opened.call.path in self.owners[t.storage] for t in owned)
            and not read & opened.read
            and written not in opened.written
        ):
            for index in range(opened.last + 1, len(ops)):
                ops[index] = dataclasses.replace(ops[index], module=opened.call)
        else:
            opened = self._open = OwnerCall(self._new_call(self.owners[owned[0].storage], len(ops), calls, counts))
        opened.read |= read
        if written is not None:
            opened.written.add(written)
        opened.last = len(ops)
        return opened.call

    def _new_call(
        self, owners: tuple[str, ...], first_op: int, calls: list[ModuleCall], counts: dict[str, int]
    ) -> ModuleCall:
        """A new call of the holder of a tensor held by `owners` (one, or a tied tensor's several)."""
        last = self._chosen.get(owners)
        path = owners[(owners.index(last) + 1) % len(owners)] if last is not None else owners[0]
        self._chosen[owners] = path
        count = counts.get(path, 0)
        counts[path] = count + 1
        call = ModuleCall(path, self.module_types[path], count, len(calls), first_op)
        calls.append(call)
        return call


def followed_calls(
    ops: list[OpNode],
    chains: list[tuple[int | None, tuple[Link, ...] | None]],
    owners: ParameterOwners,
    model_inputs: tuple[TensorMeta, ...],
) -> tuple[list[OpNode], list[ModuleCall], dict[int, tuple[TensorMeta, ...]]]:
    """The forward's `ops`, each attributed anew to the innermost of the module calls its chain
    names, those calls, and what each call no op ran in returned (call index -> its outputs).

    `chains`: each op's TorchScript call stack (`ScriptCode.chains`), in the order the ops and
    the operators that never reached the recorder ran, each with its op's index or None. A
    call begins where a chain leaves the one before it, by its module or its site, or where an
    op reads again a parameter or buffer that an op of its kind read in the call (a loop
    calling a module from one line: `for _ in range(3): x = self.conv(x)`). An op without a
    chain keeps the call `ParameterOwners.call_of` gave it (the module whose parameters it
    reads, else the model's own); an operator without one is passed over. A call no op ran in
    (a Dropout in eval, the operators it reached handed back their input) returned what the op
    before it made, or the model's first input (`model_inputs`) where it came before every op
    (an Identity first)."""
    ops = list(ops)
    calls: list[ModuleCall] = []
    running: list[tuple[Link, ModuleCall]] = []
    counts: dict[str, int] = {}
    read: set[tuple[str, int]] = set()  # (op, storage) of the innermost call's parameters read
    recorded = 0  # ops attributed so far: where a call begins
    for position, chain in chains:
        if chain is None and position is None:
            continue
        op = ops[position] if position is not None else None
        if chain is None:
            owner = op.module.path
            chain = (("", ()), (owner, ("parameters", str(op.module.index)))) if owner else (("", ()),)
        kept = 0
        while kept < min(len(running), len(chain)) and running[kept][0] == chain[kept]:
            kept += 1
        reads = {(op.op, t.storage) for t in op.inputs if t.storage in owners.owners} if op is not None else set()
        if kept == len(chain) == len(running) and reads & read:  # the innermost call again
            kept -= 1
        if kept < len(running):
            read = set()
        del running[kept:]
        for path, site in chain[kept:]:
            count = counts.get(path, 0)
            counts[path] = count + 1
            call = ModuleCall(path, owners.module_types[path], count, len(calls), recorded)
            calls.append(call)
            running.append(((path, site), call))
        if op is not None:
            read |= reads
            ops[position] = dataclasses.replace(op, module=running[-1][1])
            recorded += 1
    with_ops = {op.module.index for op in ops}
    handed: dict[int, tuple[TensorMeta, ...]] = {}
    for call in calls:
        if call.index not in with_ops:  # what it was handed: the op before it made it, else the model's input
            made_before = ops[call.first_op - 1].outputs if call.first_op else model_inputs
            handed[call.index] = made_before[:1]
    return ops, calls, handed
