"""How a trace sees the model's module calls: a recording `forward` set on each submodule
for the trace (`attach_hooks`: the recorder's `enter` and post hook around the call, which a
shortcut may answer or a replay copy), and the model's own call recorded around its whole
call, or for a ScriptModule its ops attributed by their call stacks (`model_called`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from archprof.tracing.module_tree import type_name
from archprof.tracing.recorder import Recorder
from archprof.tracing.replay import Replays
from archprof.tracing.script_calls import ScriptCode
from archprof.tracing.script_stacks import stacks_of_marks
from archprof.tracing.shortcuts import Shortcut, class_shortcut, reaches_as_defined


def attach_hooks(
    modules: list[tuple[str, torch.nn.Module]],
    attributes: list[dict[str, Any]],
    module_types: dict[str, str],
    paths: dict[int, tuple[str, ...]],
    recorder: Recorder,
    shortcuts: bool,
    replays: Replays | None,
):
    """Run the recorder's `enter` and `post_hook` around every submodule's forward, until the
    handles returned are removed. Not as nn.Module hooks: a module with any hook takes the
    slow road through `Module._call_impl` (RegNetY-016's 709 calls: a sixth of its trace,
    and registering 1,418 hooks another tenth); an instance attribute `forward` that calls
    the hooks around the class's is found first. A module with forward hooks of its own
    (which may replace its output) gets the post hook as its last forward hook, as before;
    one with forward pre-hooks of its own gets `enter` as its first pre-hook, so that what they
    compute (torch.nn.utils.prune's masked weight, the old `weight_norm`'s) is its call's.
    With `shortcuts`, where `archprof.tracing.shortcuts` knows the module's call, the wrapper records
    its operator instead of running the forward; with `replays`, a block that repeats an
    earlier one is copied from it (`archprof.tracing.replay`). Hooks run as they would.
    A module reached under several names (`paths`: module id -> its paths) records each call
    under the name its caller holds it by (`Recorder.reached_as`).
    A forward that raises closes its call, which returned nothing, and the recorder notes
    where it raised, for the error to say (`Recorder.left_by_a_raise`): a model that catches it
    goes on in its own call. So does a hook of the module's own that raises (`closing`).
    `attributes`: each module's `__dict__` (`module_tree.walked`'s), where its hooks are read
    and its forward set."""
    restore, handles = _Restore([], []), []
    class_shortcuts: dict[type, Shortcut | None] = {}  # asked once per class: most repeat
    for (path, module), state in zip(modules, attributes, strict=True):
        if not path:  # the model's own call is recorded around its whole call (`model_called`)
            continue
        own_forward = state.get("forward")
        if own_forward is None:
            restore.plain.append(state)
        else:
            restore.own.append((state, own_forward))
        pre_hooks, hooks = state["_forward_pre_hooks"], state["_forward_hooks"]
        if hooks:
            handles.append(module.register_forward_hook(recorder.post_hook))
        # A forward of the module's own runs: the recorded forward hides it from `reaches_as_defined`.
        shortcut = None
        if shortcuts and own_forward is None:
            cls = type(module)
            if cls not in class_shortcuts:
                class_shortcuts[cls] = class_shortcut(cls)
            shortcut = class_shortcuts[cls]
        # A lone layer is as quick to run as to copy.
        watched = replays if state["_modules"] else None
        named = paths.get(id(module), path) if paths else path  # nearly always none reached twice
        forward = _RecordedForward(
            module, state, named, module_types[path], module.forward, not hooks, recorder, shortcut, watched
        )
        if pre_hooks:
            forward.entered_by_hook = True
            handles.append(module.register_forward_pre_hook(forward.enter, prepend=True, with_kwargs=True))
        if pre_hooks or hooks:  # hooks of its own, which may raise
            forward.depths = []
            handles.append(module.register_forward_hook(forward.closing, always_call=True))
        state["forward"] = forward
    return [restore, *handles]


def model_called(
    model: torch.nn.Module, args, kwargs, recorder: Recorder, by_parameters: bool, code: ScriptCode | None
):
    """`model(*args, **kwargs)`, recorded as the model's own call (unless `by_parameters`, where
    `Recorder.start_root` opened it) from its first hook to its last: ops its pre-hooks, the
    global module hooks or a `__call__` of its own run outside its forward are the model's too.
    A ScriptModule with its `code` runs under the profiler, its ops then attributed by their
    call stacks (`archprof.tracing.script_calls`); before any backward pass, whose ops follow theirs."""
    if by_parameters:
        if code is None:
            return model(*args, **kwargs)
        recorder.marking = True
        try:
            with stacks_of_marks() as stacks:
                output = model(*args, **kwargs)
        finally:
            recorder.marking = False
        chains = code.chains(stacks, len(recorder.ops))
        if chains is not None:  # none where a profiler of the caller's was running
            recorder.follow_chains(chains)
        return output
    recorder.enter("", type_name(model), (*args, *kwargs.values()))  # an error names keyword inputs too
    output = model(*args, **kwargs)
    recorder.post_hook(model, args, output)
    return output


class _RecordedForward:
    """The `forward` a submodule is given for the trace (`attach_hooks`): the recorder's
    `enter`, the call (answered by its `shortcut`, copied by `replays`, or `__wrapped__`,
    the forward it had), then the post hook unless one of the module's own forward hooks
    runs it. `path`: the module's, or all of them for one reached under several names.
    One object per module, not a closure: a closure of these eight values took
    eleven objects to make and let go of on every trace (its cells, its tuple of them, the
    function and the dict that holds its `__wrapped__`; regnety_016: 708 modules).
    `inspect.signature(module.forward)` follows `__wrapped__` to the forward's own, as it
    does a decorated function's; a copy of the module shares it, as it would a function."""

    __slots__ = (
        "__wrapped__",
        "attributes",
        "depths",
        "entered_by_hook",
        "module",
        "path",
        "post_hook",
        "recorder",
        "replays",
        "shortcut",
        "type_name",
    )

    def __init__(
        self,
        module: torch.nn.Module,
        attributes: dict,
        path: str | tuple[str, ...],
        type_name: str,
        forward: Callable,
        post_hook: bool,
        recorder: Recorder,
        shortcut: Shortcut | None,
        replays: Replays | None,
    ) -> None:
        self.module = module
        self.attributes = attributes  # its `__dict__`, which its shortcut reads (`archprof.tracing.shortcuts.Shortcut`)
        self.path = path
        self.type_name = type_name
        self.__wrapped__ = forward
        self.post_hook = post_hook
        self.recorder = recorder
        self.shortcut = shortcut
        self.replays = replays
        self.entered_by_hook = False  # whether `enter` runs as the module's first forward pre-hook
        # With hooks of its own: the number of calls open once each of its calls running opened (`closing`).
        self.depths: list[int] | None = None

    def enter(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """The module's call opened as its first forward pre-hook (None: its input kept)."""
        self._opened(args, kwargs)

    def _opened(self, args: tuple, kwargs: dict) -> str:
        """The recorder's `enter` for this module's call; the path it is recorded under."""
        recorder = self.recorder
        path = self.path if type(self.path) is str else recorder.reached_as(self.path)
        recorder.enter(path, self.type_name, (*args, *kwargs.values()) if kwargs else args)  # as the model's
        if self.depths is not None:
            self.depths.append(recorder.open_calls())
        return path

    def closing(self, module: torch.nn.Module, args: tuple, output) -> None:
        """The module's last forward hook, which PyTorch calls even where its call raised
        (`always_call`): one of its own hooks that raised, where no forward of archprof's
        saw it, closes the call as a forward that raises does (`Recorder.left_by_a_raise`)."""
        if self.recorder.open_calls() >= self.depths.pop():  # still open: not closed by the post hook
            self.recorder.left_by_a_raise(sys.exc_info()[1], output)

    def __call__(self, *args, **kwargs):
        recorder = self.recorder
        path = recorder.running_path() if self.entered_by_hook else self._opened(args, kwargs)
        output = start = None
        try:
            if (
                self.shortcut is not None
                and len(args) == 1
                and not kwargs
                and reaches_as_defined(type(self.module), self.attributes, self)
            ):
                output = recorder.answer_directly(self.attributes, args[0], self.shortcut)
            elif self.replays is not None:
                output, start = self.replays.answer(self.module, path, args, kwargs)
            if output is None:
                output = self.__wrapped__(*args, **kwargs)
                if start is not None:
                    self.replays.learn(start, args, output)
        except BaseException as exc:  # the caller may catch it and go on: its later ops are not this call's
            recorder.left_by_a_raise(exc)
            raise
        if self.post_hook:
            recorder.post_hook(self.module, args, output)
        return output

    def __copy__(self) -> _RecordedForward:
        return self

    def __deepcopy__(self, memo: dict) -> _RecordedForward:
        return self


@dataclass(slots=True)  # not frozen: made every trace, and a frozen one's fields go through object.__setattr__
class _Restore:
    """Removes the recorded forwards: each module's own instance attribute back, if it had one.
    `plain`: the attribute dicts of the modules without one (nearly all); `own`: the others',
    each with its forward."""

    plain: list[dict]
    own: list[tuple[dict, Callable]]

    def remove(self) -> None:
        for state in self.plain:
            state.pop("forward", None)
        for state, forward in self.own:
            state["forward"] = forward
