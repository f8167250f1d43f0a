"""The captured graph: operations in execution order, the tensors they read and wrote,
and the module call each one ran in. Passes read this and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any, Literal

import torch

TensorKind = Literal["input", "parameter", "buffer", "activation", "constant"]
# When an op ran in a training step: the forward pass, the backward pass computing gradients,
# or a forward op run again inside the backward (activation checkpointing recomputes it).
Phase = Literal["forward", "backward", "recompute"]


# Records made by the thousand per analysis (one per operator, tensor and module call; a
# receptive field's maps and states): values, never changed once made (change one with
# dataclasses.replace), but not frozen, because a frozen dataclass's __init__ sets every
# field through object.__setattr__, which made a tenth of an analysis (resnet50: 12.7 ->
# 11.4 ms). unsafe_hash keeps them hashable, as frozen ones are.
value_record = dataclass(slots=True, unsafe_hash=True)


class _Sized:
    """numel and bytes of something with a `shape` and a `dtype`."""

    __slots__ = ()
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize  # not self.numel: a property call fewer, per row and pass


class WrappedFloat(float):
    """A Python float an operator took where its schema has a tensor (`x * 0.5` calls
    aten.mul.Tensor): PyTorch's argument parser wraps it in a 0-dim CPU tensor of its own
    (float64) for the call, which the dispatch mode sees as the number. An OpNode's argument
    so marked is that tensor: `WRAPPED_NUMBER_BYTES` live while the op runs."""

    __slots__ = ()


class WrappedInt(int):
    """A Python int an operator took where its schema has a tensor (int64): as WrappedFloat."""

    __slots__ = ()


WRAPPED_NUMBER_BYTES = 8  # float64 or int64


@value_record
class TensorMeta(_Sized):
    """One tensor seen during the trace (no data: shape, dtype and identity only)."""

    id: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    storage: int  # views and in-place results share their base tensor's storage id
    kind: TensorKind
    name: str = ""  # qualified name for parameters and buffers


@value_record
class ModuleCall:
    """One call of one module. `path` is "" for the root module."""

    path: str
    type: str
    call: int  # 0 for the module's first call, 1 for its second, ...
    index: int  # position among all module calls of the trace
    first_op: int  # number of ops recorded before the call started

    @property
    def depth(self) -> int:
        return 0 if not self.path else self.path.count(".") + 1


@value_record
class OpNode:
    """One aten operation. `args`/`kwargs` hold the call's arguments with every tensor
    replaced by its TensorMeta, so formulas see the exact strides, paddings and flags."""

    index: int
    op: str  # overload packet name, e.g. "convolution", "add_"
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    inputs: tuple[TensorMeta, ...]  # every tensor read, in argument order
    outputs: tuple[TensorMeta, ...]
    module: ModuleCall  # innermost module call running when the op ran
    writes_input: bool  # an in-place op: the output is its first input, written over
    is_view: bool  # the output aliases an input without writing it
    phase: Phase = "forward"
    # Backward and recomputed ops: the index in `Graph.ops` of the forward op they belong to
    # (the op whose gradient they compute, or the op they run again); -1 for forward ops.
    origin: int = -1
    # Storages made for this op and freed inside the one operator a CPU runs for it, which the
    # trace sees as ops of their own: that operator's workspace, which memory does not count, as
    # it counts no kernel's. Noted on the last op of a composite call a CPU runs as one operator
    # (`kernels.one_cpu_operator.ONE_CPU_OPERATOR`: pairwise_distance's `x1 - x2`, freed inside `norm(x1 - x2 +
    # eps)`), in inference and training alike (`Recorder.one_cpu_operator`); and on the op reading
    # a copy PyTorch's math-bit fallback made of a conjugate (or negative) view inside it (polar's
    # gradient's `grad.conj() * result.sgn()`).
    workspace: tuple[int, ...] = ()

    def argument(self, index: int, name: str, default: Any = None) -> Any:
        """The argument at position `index` of the schema, named `name`: given by position or
        by keyword, else `default` (the trailing defaults the dispatcher leaves out)."""
        if len(self.args) > index:
            return self.args[index]
        return self.kwargs.get(name, default)

    def with_workspace(self, storages: tuple[int, ...]) -> OpNode:
        """This op with `storages` added to its workspace: `dataclasses.replace`'s answer in
        a fifth of its time (which reads every field's definition on each call), for the
        batch norms and layer norms of a trace, each of which notes one."""
        return OpNode(
            self.index,
            self.op,
            self.args,
            self.kwargs,
            self.inputs,
            self.outputs,
            self.module,
            self.writes_input,
            self.is_view,
            self.phase,
            self.origin,
            self.workspace + storages,
        )


@value_record
class ParameterInfo(_Sized):
    name: str
    module_path: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    trainable: bool
    is_buffer: bool


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """A function a gradient formula calls in the middle of a statement, as indices in
    `Graph.backward_ops`: DistBackward0's `-norm_backward(grad, self - other, p, result)`,
    logcumsumexp_backward's `(reverse_logcumsumexp(log_grad_positive - result) + self).exp()`
    (a lambda, `flip(logcumsumexp(flip(x)))`). The function frees its temporaries and locals as
    it returns (norm_backward's quotient and mask, before the negation; the lambda's two
    temporaries, before the add); the statement's own (the argument it made: `self - other`,
    which norm_backward reads twice, as a named argument; and what the function returned) are
    freed as the statement ends."""

    statement_start: int  # the statement's first op (making the function's argument)
    first: int  # the function's first op
    returning: int  # the op it returns with
    statement_end: int  # the statement's last op (dist's negation of what it returned, logcumsumexp's exp)


@dataclass(slots=True)
class EngineNotes:
    """What the autograd engine does in a training step that the recorded ops do not say by
    themselves: noted by the training recorder (`archprof.tracing.training_recorder`) as the step
    runs, read by the step's memory timeline (`passes.training_memory.training_timeline`)."""

    # The storages of gradients the backward pass copied into a layout of other strides
    # (AccumulateGrad, into its parameter's: a convolution's weight gradient is channels last
    # where its input is). A CPU step copies these too, where it takes a gradient of the
    # parameter's own layout over as its `.grad`.
    relaid_gradients: set[int] = field(default_factory=set)
    # The storages AccumulateGrad wrote, the parameters' `.grad`: each a copy it made of a
    # gradient (new_empty_strided, then copy_) or a `.grad` it added into. Other nodes copy
    # with the same ops (CopySlices clones the gradient of an in-place op on a view).
    grad_storages: set[int] = field(default_factory=set)
    # The storages of the backward pass's adds whose first gradient is not one dense block of
    # memory (a slice of a larger gradient: RexNet's shortcut into its first channels). Where
    # two gradients of one tensor meet, the autograd engine adds the second into the first in
    # place only if the first is dense; else it allocates the sum.
    gapped_sums: set[int] = field(default_factory=set)
    # The numbers autograd keeps as tensors of their own, as (forward op index, bytes). A
    # Python number multiplying or dividing a tensor that requires grad (`x * 0.5`) is wrapped
    # by PyTorch's argument parser into a 0-dim CPU tensor (float64 or int64: 8 B), which the
    # op's autograd node keeps for the backward pass. No aten op makes it, the dispatch mode
    # sees the number, and saved-tensor hooks never see it.
    saved_numbers: list[tuple[int, int]] = field(default_factory=list)
    # Of those, forward op index -> the ops run (the forward's and the backward's together) when
    # the op's autograd node died, and its number with it, where it died while the step ran: a
    # node whose result nothing on the way to the outputs reads dies in the forward (`y.mean() *
    # 0.5` let go of). Every other keeps its number until it has run in the backward pass.
    number_releases: dict[int, int] = field(default_factory=dict)
    # The storages of the gradients of ones the backward pass starts from, one per floating
    # output requiring grad: whoever passes them to `torch.autograd.backward` holds them to the end.
    seeds: set[int] = field(default_factory=set)
    # The names of the trainable parameters the backward pass gave a gradient (`.grad`). One
    # it never reached (a layer not called, or called only under no_grad) keeps `.grad` None,
    # and PyTorch's optimizers skip it: no gradient, no state, no update.
    given_gradients: set[str] = field(default_factory=set)
    # Storage -> the number of backward ops recorded when the last object of a tensor a
    # Python backward made (a custom torch.autograd.Function's: x_sigmoid, `1 - x_sigmoid`)
    # died: Python frees it then, an unnamed one right after the op that read it, a local
    # variable when the function returns; the number of all of them for one still held when
    # the backward pass ends. The gradients such a backward returns are not among them: the
    # engine passes them on, and frees them as it frees every node's.
    python_releases: dict[int, int] = field(default_factory=dict)
    # The indices (in `Graph.backward_ops`) of the ops a Python backward ran. A number such an
    # op takes where a tensor goes (`1 + t`) is wrapped by PyTorch's argument parser into a
    # tensor of its own for the call, as in the forward.
    python_ops: set[int] = field(default_factory=set)
    # Each op of `python_ops` -> the tensors given to the `apply` of the custom autograd
    # Function whose Python backward ran it, those autograd follows, where known (a parameter;
    # an activation, as the output of the forward op that made it): its products are the
    # gradients of these, a weight's told from an input's by them (`passes.backward`), not by
    # the operands of its forward op, the last the Function's forward ran (a bias's add).
    function_inputs: dict[int, tuple[TensorMeta, ...]] = field(default_factory=dict)
    # The indices (in `Graph.backward_ops`) of the ops of a node whose gradient formula makes all
    # of its gradients in one C++ statement (`return {grad * other * recip, grad * -self * recip}`,
    # atan2's): each temporary is held to the end of that statement, the node's last op.
    one_statement_ops: set[int] = field(default_factory=set)
    # The indices (in `Graph.backward_ops`) of the ops a CPU's gradient formula runs in place on
    # a tensor it made, where the trace's ran them out of place (`TrainingRecorder`'s
    # `gradient_formulas.IN_PLACE_ON_A_CPU`): each goes on with the statement it writes into, as the C++ does
    # (`t.add(1).sub_(y).mul_(s)`), its operands held to that statement's end (clamp's masks,
    # named locals of a block that ends with the `where` reading their combination).
    in_place_ops: set[int] = field(default_factory=set)
    # The functions a gradient formula calls in the middle of a statement (`FunctionCall`,
    # `gradient_formulas.CALLS_IN_A_STATEMENT`), whose return the ops do not show.
    function_calls: list[FunctionCall] = field(default_factory=list)
    # The CPU random-number states taken while the step ran (torch.get_rng_state(): a uint8
    # tensor, 5,056 B on a CPU), as (steps run when it was taken, steps run when it died, or
    # None where it outlived the backward pass, its bytes), the forward's and the backward's ops
    # counted together. Activation checkpointing keeps one per block to replay it with the
    # forward's random numbers (preserve_rng_state, its default), a non-reentrant block's until
    # its last node that saved a tensor has run, a reentrant one's with its node (as long as the
    # caller holds the output), and forks one more while it replays a block. No aten op makes
    # them.
    random_states: list[tuple[int, int | None, int]] = field(default_factory=list)
    # The storages a non-reentrant checkpointed block's frame holds for its replay (the block's
    # inputs), each with the steps run (forward's and backward's ops together) when the last
    # frame holding it died, or None where one outlived the backward pass: the frame holds
    # them until the last node that saved a tensor in the block has run, past the replay that
    # reads them (a block whose first op saves its result, not its input: a ReLU's); and the
    # outputs selective checkpointing's cache holds for the replay (`create_selective_checkpoint_contexts`
    # with a policy that saves an operator's), each until the replay takes it, or the frame dies.
    checkpoint_inputs: dict[int, int | None] = field(default_factory=dict)
    # The indices (in `Graph.backward_ops`) of the adds the autograd engine ran where two
    # gradients of one tensor meet (a tensor read twice): the ops it runs after a node's gradient
    # formula has returned, with the node still running. An add inside a formula (atan2's `self *
    # self + other * other`, a Python backward's `a + b`) adds tensors the backward made too.
    gradient_sums: set[int] = field(default_factory=set)
    # The indices (in `Graph.backward_ops`) of the other ops run outside any gradient formula
    # with a node running: a hook of the user's (a tensor's, `y.register_hook`, which the engine
    # calls before the node's formula, on the gradient coming in). The engine lets go of a
    # gradient a hook replaced as the hook returns, not with the node.
    hook_ops: set[int] = field(default_factory=set)
    # The ids (`TensorMeta.id`) of the gradients the nodes' formulas returned to the engine, as
    # the node's post hook saw them. A node runs one C++ call per gradient formula (clamp's
    # `min, max: clamp_backward_min_max(...)`, then `self: clamp_backward(...)`), each ending
    # with the statement that makes what it returns: its locals die there, not with the node.
    formula_results: set[int] = field(default_factory=set)
    # Storage -> the number of backward ops recorded when the node it came in to as a gradient had
    # run (its post hook): the engine holds a node's incoming gradients until then, read or not
    # (sgn's formula for a real input returns a zero tensor without reading its own).
    received: dict[int, int] = field(default_factory=dict)
    # The indices (in `Graph.backward_ops`) of the sums the engine ran to reduce a gradient a
    # formula returned in a broadcast shape to its input's (validate_outputs' sum_to: atan2's of
    # an operand broadcast along the batch): run after the formula has returned, when its
    # temporaries are gone, with the node still running.
    reductions: set[int] = field(default_factory=set)
    # The storages of the tensors a gradient formula stores in a local variable though one op
    # alone reads them (a local read once looks like a temporary: `TrainingRecorder`'s
    # `gradient_formulas.LOCALS_READ_ONCE`, each read as (operator, argument position), and what it is made of
    # where that read names more): sinc_backward's `out`, read by the `where` it returns, renorm's
    # `grad_norm`, logcumsumexp's `log_grad_positive`, norm_backward's `self_scaled`.
    # Where its node made it, its statement ends where it is made, and it lives until its
    # formula's call returns.
    named_locals: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Graph:
    ops: list[OpNode]
    module_calls: list[ModuleCall]  # in the order the calls started
    call_outputs: dict[int, tuple[TensorMeta, ...]]  # ModuleCall.index -> what it returned
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]
    parameters: list[ParameterInfo]  # parameters then buffers, tied ones once
    module_types: dict[str, str] = field(default_factory=dict)  # every module, called or not
    # Each path a module is reached under besides its first -> that first: a module the model
    # holds under two names (`self.stage = nn.Sequential(self.conv, ...)`), and those under it.
    # A call is recorded under the name its caller holds the module by (ModuleCall.path).
    aliases: dict[str, str] = field(default_factory=dict)
    training: bool = False  # traced as a training forward (train mode, grad enabled)
    # Training only: every tensor autograd saved for the backward pass, in the order it was
    # saved, repeats included (parameters and views too: passes dedupe by storage).
    saved: list[TensorMeta] = field(default_factory=list)
    # The kernel assumed for each attention and LSTM call a CPU would run fused
    # (`archprof.kernels`): "scaled_dot_product_attention: CPU flash attention (...)" -> calls.
    kernels: dict[str, int] = field(default_factory=dict)
    # Training only: the backward pass run on the forward's outputs (gradients of ones), in
    # execution order, recomputed forward ops included; indices count from 0 in this list.
    backward_ops: list[OpNode] = field(default_factory=list)
    # Training only: what the autograd engine did that the backward pass's ops do not say.
    engine: EngineNotes = field(default_factory=EngineNotes)
    # Activation storage -> the number of forward ops that had run when the forward let go
    # of its last tensor object (a local variable rebound, a function returned; all of them
    # for one the model still holds, a cache for its next call). Eager PyTorch frees it
    # then, not at its last reader. In a training step, what autograd saved is not let go of
    # in the forward: the backward pass's nodes free it (`passes.training_memory.training_timeline`).
    released: dict[int, int] = field(default_factory=dict)
    # Activation storages the model's code still holds once the forward is over (a module's
    # cache for its next call, an attention map kept to be looked at, weight_norm's weight, a
    # forward hook's dict of features):
    # a training step holds them to its end, past the backward pass and the update.
    kept_by_the_model: set[int] = field(default_factory=set)
    # The smallest value of each floating buffer the model held for real (TensorMeta id ->
    # value), which a meta trace does not see: an attention mask of -inf in a buffer
    # (`passes.receptive_field`). None listed for a model on meta.
    buffer_minima: dict[int, float] = field(default_factory=dict)
    # The storages of the model's parameters and buffers, read or not: a plain attribute that
    # views one (`self.scale = self.table.detach()`) is a constant in that storage, which
    # holds no bytes of its own.
    state_storages: frozenset[int] = frozenset()

    def calls_as_named(self) -> dict[tuple[str, int], tuple[str, int]]:
        """Each module call as a run hooked through `named_modules()` counts it, (the module's
        first path, its k-th call under any name), -> as the trace named it (`ModuleCall`'s
        path and call), for a module held under two names (`aliases`); empty where none is."""
        if not self.aliases:
            return {}
        counts: dict[str, int] = {}
        named = {}
        for call in self.module_calls:
            first = self.aliases.get(call.path, call.path)
            count = counts.get(first, 0)
            counts[first] = count + 1
            named[(first, count)] = (call.path, call.call)
        return named
