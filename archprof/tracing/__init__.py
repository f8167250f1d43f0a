"""Tracing: one forward of a model (and a training step's backward) on meta tensors,
recorded into a `Graph` (`trace.trace`). The module tree walked, its tensors stood in for
and put back (`module_tree`, `model_tensors`, `model_state`); every module call wrapped
(`module_calls`), answered without its forward where archprof knows it (`shortcuts`) or
copied from an earlier block (`replay`); every operator recorded and answered by the
dispatch mode (`recorder`, with `op_info`, `meta_outputs`, and `parameter_attribution`
for models without hooks); a training step's backward recorded (`training_recorder`, with
`gradient_formulas`, `autograd_hooks`, `recomputation`); TorchScript modules followed
through their call stacks (`script_calls`, `script_stacks`, `script_copies`,
`script_statements`)."""
