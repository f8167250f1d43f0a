"""Memory of the kernels a CPU really runs (archprof.kernels): fused attention and oneDNN's
LSTM against what autograd saves in a real CPU forward (saved-tensor hooks) and against
torch.profiler; the kernel choice against PyTorch's own; MACs as before; a group norm's
copies as a CPU makes them; unsafe_split's outputs as views."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import archprof
from archprof.analysis import build_report
from archprof.errors import ArchprofError
from archprof.fit import fit_batch
from archprof.kernels import DeviceKernels
from archprof.kernels.attention import ATTENTION, FLASH_CPU, MATH, flash_attention_kernel
from archprof.kernels.recurrent import CELL_LOOP, LSTM, ONEDNN_LSTM, onednn_lstm_workspace_bytes
from archprof.passes.flops import op_cost
from archprof.passes.memory import saved_activations
from archprof.passes.training_memory import training_timeline
from archprof.tracing.trace import trace
from tests.memory_oracle import profiled_peaks, profiled_training_peaks
from tests.models import Calls, LinearOnTransposed
from tests.operator_names import OperatorNames
from tests.test_memory import real_saved_bytes


class AttentionBlock(nn.Module):
    """Three projections and one F.scaled_dot_product_attention over (B, heads, L, d)."""

    def __init__(self, dim=64, **attention):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attention = attention

    def forward(self, x):
        return F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x), **self.attention)


def saved_bytes(model, shape) -> int:
    return sum(saved_activations(trace(model, [shape], training=True)).values())


def op_names(graph) -> set[str]:
    return {op.op for op in graph.ops}


# --- attention --------------------------------------------------------------------------------


def test_attention_saves_what_cpu_flash_attention_saves():
    # L = 1024, d = 64, float32: x, q, k, v and the output (256 KiB each) and the log-sum-exp
    # (4 KiB); the math decomposition would also keep the 4 MiB attention matrix.
    model = AttentionBlock()
    graph = trace(model, [(1, 1, 1024, 64)], training=True)
    real = real_saved_bytes(model, torch.randn(1, 1, 1024, 64))
    assert real == 5 * 1024 * 64 * 4 + 1024 * 4 == 1_314_816
    assert sum(saved_activations(graph).values()) == real
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in op_names(graph)
    assert "aten.bmm" not in op_names(graph)
    assert graph.kernels == {f"{ATTENTION}: {FLASH_CPU}": 1}


def test_the_attention_inference_peak_matches_the_profiler():
    """Exact: the log-sum-exp (B x heads x L floats) the kernel returns and the composite frees
    before returning is the one CPU operator's workspace, to the profiler and the graph alike
    (held for the length of the op, it was 2048 x 4 B over)."""
    model = AttentionBlock()
    x = torch.randn(1, 1, 2048, 64)
    graph = trace(model, [x.shape])
    held = build_report(graph, "block").totals.peak_activation_bytes
    _, lasting = profiled_peaks(model, x)
    assert held == lasting + x.nbytes


def test_attention_macs_are_those_of_the_math_decomposition():
    model = AttentionBlock()
    x = torch.randn(2, 4, 32, 64)
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        model(x)
    report = archprof.analyze(model, input_size=tuple(x.shape[1:]), batch=2)
    assert report.totals.macs == counter.get_total_flops() // 2


def test_the_attention_gradient_counts_what_the_fused_kernel_computes():
    from torch.utils.flop_counter import sdpa_backward_flop_count

    graph = trace(AttentionBlock(), [(2, 4, 32, 64)], training=True)
    (gradient,) = [op for op in graph.backward_ops if op.op.endswith("flash_attention_for_cpu_backward")]
    expected = sdpa_backward_flop_count((2, 4, 32, 64), (2, 4, 32, 64), (2, 4, 32, 64), (2, 4, 32, 64)) // 2
    assert op_cost(gradient).macs == expected


@pytest.mark.parametrize(
    "name",
    [
        "plain",
        "causal",
        "float mask",
        "bool mask",
        "mask per head",
        "mask of a wrong shape",
        "mask requiring grad",
        "dropout",
        "three dims",
        "grouped heads",
        "grouped heads not enabled",
        "different value size",
        "transposed last dim",
        "empty sequence",
        "half",
        "mixed dtypes",
    ],
)
def test_the_kernel_choice_is_pytorchs(name):
    """Against torch._fused_sdp_choice on CPU tensors of the same shapes, strides and dtypes."""
    q = k = v = torch.randn(2, 4, 8, 16)
    mask, dropout, gqa = None, 0.0, False
    if name == "causal":
        pass  # is_causal does not enter the choice
    elif name == "float mask":
        mask = torch.zeros(8, 8)
    elif name == "bool mask":
        mask = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    elif name == "mask per head":
        mask = torch.zeros(2, 4, 8, 8)
    elif name == "mask of a wrong shape":
        mask = torch.zeros(3, 4, 8, 8)
    elif name == "mask requiring grad":
        mask = torch.zeros(8, 8, requires_grad=True)
    elif name == "dropout":
        dropout = 0.1
    elif name == "three dims":
        q = k = v = torch.randn(4, 8, 16)
    elif name in ("grouped heads", "grouped heads not enabled"):
        k = v = torch.randn(2, 2, 8, 16)
        gqa = name == "grouped heads"
    elif name == "different value size":
        v = torch.randn(2, 4, 8, 32)
    elif name == "transposed last dim":
        q = torch.randn(2, 4, 16, 8).transpose(-1, -2)
    elif name == "empty sequence":
        q = torch.randn(2, 4, 0, 16)
    elif name == "half":
        q = k = v = q.half()
    elif name == "mixed dtypes":
        v = v.double()
    torch_choice = torch._fused_sdp_choice(q, k, v, mask, dropout, False, enable_gqa=gqa)
    ours = flash_attention_kernel(q, k, v, mask, dropout, gqa)
    assert ours == (torch_choice == SDPBackend.FLASH_ATTENTION.value)


def test_attention_falls_back_to_math_where_the_cpu_does():
    dropout = AttentionBlock(dropout_p=0.1)
    graph = trace(dropout, [(1, 2, 8, 64)], training=True)
    assert "aten.bmm" in op_names(graph) and graph.kernels == {f"{ATTENTION}: {MATH}": 1}
    with sdpa_kernel(SDPBackend.MATH):
        graph = trace(AttentionBlock(), [(1, 2, 8, 64)])
    assert graph.kernels == {f"{ATTENTION}: {MATH}": 1}


def test_a_bool_mask_is_converted_as_the_cpu_does():
    class Causal(AttentionBlock):
        def __init__(self):
            super().__init__()
            self.register_buffer("mask", torch.ones(16, 16, dtype=torch.bool).tril())

        def forward(self, x):
            return F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x), attn_mask=self.mask)

    model = Causal()
    x = torch.randn(1, 2, 16, 64)
    assert trace(model, [x.shape]).kernels == {f"{ATTENTION}: {FLASH_CPU}": 1}
    assert saved_bytes(model, x.shape) == real_saved_bytes(model, x)


def test_multi_head_attention_inside_torch_functions_is_routed_too(hub_packages):
    torchvision, _ = hub_packages
    vit = torchvision.models.VisionTransformer(
        image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128
    )
    x = torch.randn(2, 3, 64, 64)
    graph = trace(vit, [x.shape], training=True)
    assert graph.kernels == {f"{ATTENTION}: {FLASH_CPU}": 2}
    assert sum(saved_activations(graph).values()) == real_saved_bytes(vit, x)


def test_timm_attention_saves_what_a_cpu_forward_saves(hub_packages):
    _, timm = hub_packages
    model = timm.create_model("mobilevit_xxs")
    x = torch.randn(1, 3, 64, 64)
    assert saved_bytes(model, x.shape) == real_saved_bytes(model, x)


def test_fit_counts_the_kernels_memory():
    model = AttentionBlock()
    found = fit_batch(model, 64 * 2**20, input_size=(1, 512, 64), training=True)
    real = real_saved_bytes(model, torch.randn(found.batch, 1, 512, 64))
    assert found.report.totals.saved_activation_bytes == real


# --- nn.MultiheadAttention's inference fast path ----------------------------------------------


class SelfAttention(nn.Module):
    """nn.MultiheadAttention over its input's tokens (B, T, E), called as `call` says."""

    def __init__(self, dim=64, heads=4, batch_first=True, cross=False, **call):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=batch_first)
        self.memory = nn.Linear(dim, dim) if cross else None
        self.call = call

    def forward(self, x):
        key = self.memory(x) if self.memory is not None else x
        output, weights = self.attention(x, key, key, **self.call)
        return output if weights is None else (output, weights)


_TOKENS = 16
MULTI_HEAD_CALLS = {
    "no weights asked": ({}, {"need_weights": False}),
    "weights averaged": ({}, {}),
    "weights per head": ({}, {"average_attn_weights": False}),
    "a key padding mask": ({}, {"need_weights": False, "key_padding_mask": torch.zeros(2, _TOKENS, dtype=torch.bool)}),
    "sequence first": ({"batch_first": False}, {"need_weights": False}),
    "an odd head count": ({"dim": 63, "heads": 3}, {"need_weights": False}),
    "cross-attention": ({"cross": True}, {"need_weights": False}),
}


def _cpu_runs(model: nn.Module, x: torch.Tensor, operator: str = "aten._native_multi_head_attention") -> bool:
    """Whether a real CPU forward in inference (eval, no grad) runs `operator` (a fused kernel)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    names = set()

    class Seen(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            names.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Seen():
        model(x)
    return operator in names


@pytest.mark.parametrize("name", MULTI_HEAD_CALLS)
def test_multi_head_attention_takes_the_road_a_cpu_takes(name):
    """PyTorch's own checks choose, a meta tensor passing the device check as a CPU tensor:
    the fused kernel where a CPU runs it, the composite road (projections, attention) where
    a CPU does; output shapes, weights included (None where none were asked for), as a
    real forward's."""
    built, call = MULTI_HEAD_CALLS[name]
    model = SelfAttention(**built, **call).eval()
    x = torch.randn(2, _TOKENS, model.attention.embed_dim)
    if not model.attention.batch_first:
        x = x.transpose(0, 1).contiguous()
    graph = trace(model, [x.shape])
    fused = "aten._native_multi_head_attention" in op_names(graph)
    assert fused == _cpu_runs(model, x)
    assert fused == (name not in ("sequence first", "an odd head count", "cross-attention"))
    with torch.no_grad():
        real = model(x)
    real_shapes = [tuple(t.shape) for t in (real if isinstance(real, tuple) else (real,))]
    assert [tuple(t.shape) for t in graph.outputs] == real_shapes


@pytest.mark.parametrize("call", [{"need_weights": False}, {}])
def test_the_multi_head_attention_inference_peak_matches_the_profiler(call):
    """The fused kernel's projections, B x heads x T x T scores and softmax are freed inside it:
    the profiler's peak of what outlives each operator (the fast path runs, as on any CPU in
    inference) is the prediction's. The composite road's, traced before, held the projections
    and their copies per head (3.5x this peak, against the profiler's 0.29 in `memory --measure`)."""
    model = SelfAttention(**call).eval()
    x = torch.randn(16, 256, 64)
    graph = trace(model, [x.shape])
    held = build_report(graph, "attention").totals.peak_activation_bytes
    _, lasting = profiled_peaks(model, x)
    assert held == lasting + x.nbytes


def test_the_fused_attention_route_answers_a_real_call_as_pytorch_does():
    """While the kernels are active, `torch._native_multi_head_attention` on CPU tensors
    returns PyTorch's own answer (no weights asked for: None), where it raised
    AttributeError reading None's device; on meta, the same None for the meta kernel's
    empty tensor."""
    attention = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        expected, none = attention(x, x, x, need_weights=False)
        with DeviceKernels():
            output, weights = attention(x, x, x, need_weights=False)
            averaged = attention(x, x, x)[1]
            on_meta = attention.to("meta")(x.to("meta"), x.to("meta"), x.to("meta"), need_weights=False)[1]
    assert none is None and weights is None and on_meta is None
    assert torch.equal(output, expected) and averaged.shape == (2, 5, 5)


def test_the_private_use_device_keeps_its_name_after_a_trace_and_a_failing_one():
    from torch.utils import backend_registration

    name = backend_registration._privateuse1_backend_name
    trace(SelfAttention().eval(), [(2, _TOKENS, 64)])
    assert backend_registration._privateuse1_backend_name == name
    with pytest.raises(ArchprofError):
        trace(SelfAttention().eval(), [(2, _TOKENS, 63)])  # the embedding is 64 wide
    assert backend_registration._privateuse1_backend_name == name


@pytest.mark.parametrize("fused", ["attention", "encoder layer"])
def test_a_query_a_fused_kernel_refuses_is_refused_in_the_cpus_words(fused):
    """The meta kernels of both fused kernels take a query of the wrong width; a CPU's refuses
    it, which the trace now says as the CPU does (it ran, and said 2x16x64)."""
    model = (SelfAttention(need_weights=False) if fused == "attention" else _Encoded({}, {})).eval()
    x = torch.randn(2, _TOKENS, 63)  # the models are 64 wide
    with pytest.raises(RuntimeError) as real, torch.no_grad():
        model(x)
    with pytest.raises(ArchprofError) as traced:
        trace(model, [x.shape])
    assert str(traced.value).endswith(str(real.value).splitlines()[0])


def _composite_road_macs(model: nn.Module, x: torch.Tensor) -> int:
    """FlopCounterMode's count of a real CPU forward in inference, the fast paths off and
    attention on its math road (it has formulas for neither fused kernel), halved."""
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("call", [{"need_weights": False}, {}, {"average_attn_weights": False}])
def test_multi_head_attention_macs_are_those_of_its_projections_and_attention(call):
    """FlopCounterMode has no formula for the fused kernel: it counts the composite road's
    products (the fast path off, math attention), the same products the kernel computes."""
    model = SelfAttention(**call).eval()
    x = torch.randn(2, _TOKENS, 64)
    counted = _composite_road_macs(model, x)
    report = archprof.analyze(model, input_size=tuple(x.shape[1:]), batch=2)
    assert "_native_multi_head_attention" in report.layers["operators"].iloc[0]
    assert report.totals.macs == counted == 2 * (4 * _TOKENS * 64 * 64 + 2 * _TOKENS**2 * 64)


class _PatchAttention(nn.Module):
    """A 4x4 patch embedding, its 8x8 tokens attended over."""

    def __init__(self, **call):
        super().__init__()
        self.patches = nn.Conv2d(3, 32, 4, stride=4)
        self.attention = nn.MultiheadAttention(32, 4, batch_first=True)
        self.call = call

    def forward(self, x):
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        return self.attention(tokens, tokens, tokens, need_weights=False, **self.call)[0]


def test_the_fused_attentions_tokens_each_read_the_whole_input():
    """Every output token reads every key: the whole input; a boolean mask may drop keys, which
    leaves the field in its values."""
    from archprof.passes.receptive_field import FieldMark

    report = archprof.analyze(_PatchAttention().eval(), input_size=(3, 32, 32))
    row = report.layers.set_index("layer").loc["attention"]
    assert "_native_multi_head_attention" in row["operators"]
    assert row["receptive_field"] == FieldMark.INPUT
    masked = _PatchAttention(attn_mask=torch.zeros(64, 64, dtype=torch.bool))
    row = archprof.analyze(masked.eval(), input_size=(3, 32, 32)).layers.set_index("layer").loc["attention"]
    assert "_native_multi_head_attention" in row["operators"]
    assert row["receptive_field"] == FieldMark.UNDEFINED
    assert "mask" in row["receptive_field_note"]


ENCODER_LAYERS = {
    "relu": ({}, {}),
    "gelu": ({"activation": "gelu"}, {}),
    "norm first": ({"norm_first": True}, {}),
    "a key padding mask": ({}, {"src_key_padding_mask": torch.zeros(2, _TOKENS, dtype=torch.bool)}),
    "sequence first": ({"batch_first": False}, {}),
    "an odd head count": ({"d_model": 63, "nhead": 3}, {}),
}


class _Encoded(nn.Module):
    """An nn.TransformerEncoderLayer (64 channels, 4 heads, a feed-forward of 128 unless
    `built` says otherwise), called as `call` says."""

    def __init__(self, built: dict, call: dict) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            **{"d_model": 64, "nhead": 4, "dim_feedforward": 128, "batch_first": True, **built}
        )
        self.call = call

    def forward(self, x):
        return self.layer(x, **self.call)


def _encoder_input(model: _Encoded) -> torch.Tensor:
    x = torch.randn(2, _TOKENS, model.layer.linear1.in_features)
    return x if model.layer.self_attn.batch_first else x.transpose(0, 1).contiguous()


@pytest.mark.parametrize("name", ENCODER_LAYERS)
def test_an_encoder_layer_takes_the_road_a_cpu_takes(name):
    """The whole layer as one kernel where a CPU runs it so (PyTorch's checks, a meta tensor
    passing the device check as a CPU one); else its composite road, its attention's fast
    path where that one's checks pass. The predicted inference peak is the profiler's."""
    model = _Encoded(*ENCODER_LAYERS[name]).eval()
    x = _encoder_input(model)
    graph = trace(model, [x.shape])
    fused = "aten._transformer_encoder_layer_fwd" in op_names(graph)
    assert fused == _cpu_runs(model, x, "aten._transformer_encoder_layer_fwd")
    assert fused == (name not in ("sequence first", "an odd head count"))
    held = build_report(graph, "layer").totals.peak_activation_bytes
    _, lasting = profiled_peaks(model, x)
    given = x.nbytes + sum(t.nbytes for t in model.call.values())  # held before the profiler starts, as the input
    assert held == lasting + given


@pytest.mark.parametrize(
    "built", [{}, {"activation": "gelu"}, {"norm_first": True}], ids=["relu", "gelu", "norm first"]
)
def test_an_encoder_layers_macs_are_its_composite_roads(built):
    """FlopCounterMode counts the composite road's products (the fast paths off, math
    attention); the kernel's elementwise FLOPs are its operators' by archprof's conventions:
    13 per token channel (queries scaled 1, two adds 2, two layer norms 10), one per
    feed-forward unit, 3 per score."""
    model = nn.TransformerEncoder(_Encoded(built, {}).layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(2, _TOKENS, 64)
    counted = _composite_road_macs(model, x)
    report = archprof.analyze(model, input_size=(_TOKENS, 64), batch=2)
    assert report.layers["operators"].map(lambda ops: "_transformer_encoder_layer_fwd" in ops).sum() == 2
    assert report.totals.macs == counted
    per_layer = 13 * 2 * _TOKENS * 64 + 2 * _TOKENS * 128 + 3 * 2 * 4 * _TOKENS * _TOKENS
    assert report.totals.elementwise_flops == 2 * per_layer


def test_an_encoder_layers_tokens_each_read_the_whole_input():
    class Patches(nn.Module):
        def __init__(self):
            super().__init__()
            self.patches = nn.Conv2d(3, 32, 4, stride=4)
            self.layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)

        def forward(self, x):
            return self.layer(self.patches(x).flatten(2).transpose(1, 2))

    from archprof.passes.receptive_field import FieldMark

    row = archprof.analyze(Patches().eval(), input_size=(3, 32, 32)).layers.set_index("layer").loc["layer"]
    assert "_transformer_encoder_layer_fwd" in row["operators"]
    assert row["receptive_field"] == FieldMark.INPUT


# --- recurrent layers -------------------------------------------------------------------------

LSTMS = {
    "batch first, unbatched": (lambda: nn.LSTM(32, 48, batch_first=True), (10, 32)),
    "two layers, both directions": (lambda: nn.LSTM(8, 12, num_layers=2, bidirectional=True), (6, 3, 8)),
    "batch first, no bias": (lambda: nn.LSTM(8, 20, batch_first=True, bias=False), (3, 7, 8)),
    "dropout between layers": (lambda: nn.LSTM(8, 12, num_layers=2, dropout=0.5), (5, 2, 8)),
}


@pytest.mark.parametrize("name", LSTMS)
def test_lstm_saves_what_onednn_saves(name):
    build, shape = LSTMS[name]
    model = build()
    graph = trace(model, [shape], training=True)
    assert "aten.mkldnn_rnn_layer" in op_names(graph) and "aten.addmm" not in op_names(graph)
    assert sum(saved_activations(graph).values()) == real_saved_bytes(model, torch.randn(*shape))


def test_the_issues_lstm():
    model = nn.LSTM(32, 48, batch_first=True)
    assert real_saved_bytes(model, torch.randn(10, 32)) == saved_bytes(model, (10, 32)) == 57_216


BFLOAT16_ONEDNN = pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this processor has no oneDNN bfloat16 LSTM"
)


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=BFLOAT16_ONEDNN)])
@pytest.mark.parametrize(
    "steps, batch, inputs, hidden",
    [(1, 1, 1, 1), (10, 1, 32, 48), (2, 4, 32, 48), (7, 3, 300, 48), (5, 2, 16, 256), (13, 5, 100, 7), (3, 2, 64, 999)],
)
def test_the_workspace_formula_matches_the_cpu_kernel(steps, batch, inputs, hidden, dtype):
    w_ih, w_hh = torch.randn(4 * hidden, inputs, dtype=dtype), torch.randn(4 * hidden, hidden, dtype=dtype)
    bias, state = torch.zeros(4 * hidden, dtype=dtype), torch.zeros(batch, hidden, dtype=dtype)
    workspace = torch.ops.aten.mkldnn_rnn_layer(
        torch.randn(steps, batch, inputs, dtype=dtype), w_ih, w_hh, bias, bias, state, state, False, [], 2, hidden,
        1, True, False, False, True,
    )[3]  # fmt: skip
    assert workspace.numel() == onednn_lstm_workspace_bytes(steps, batch, inputs, hidden, dtype)


def test_the_lstm_inference_peak_matches_the_profiler():
    """A CPU runs the whole layer as one operator (aten::lstm): the contiguous time-major
    copy of the input, and the scratch pads oneDNN allocates itself, are let go of inside
    it, its workspace, not counted. Before the layer was noted as one operator, the copy read
    as an activation of its own, and the prediction could fall short of the peak by it."""
    model = nn.LSTM(32, 48, batch_first=True).eval()
    x = torch.randn(4, 10, 32)
    graph = trace(model, [x.shape])
    _, without_workspace = profiled_peaks(model, x)
    assert build_report(graph, "lstm").totals.peak_activation_bytes == without_workspace + x.nbytes


def test_lstm_macs_are_those_of_the_cell_loop():
    model = nn.LSTM(16, 24, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, 16)
    with FlopCounterMode(display=False) as counter, torch.backends.mkldnn.flags(enabled=False), torch.no_grad():
        model(x)
    assert archprof.analyze(model, input_size=(3, 16), batch=5).totals.macs == counter.get_total_flops() // 2


def test_the_lstm_gradient_counts_every_gradient_the_kernel_computes():
    # inputs 16, hidden 24, 5 steps, batch 3: d(input), d(hidden), d(W_ih) and d(W_hh), each
    # 5 * 3 * 96 rows of gates by 16 or 24 columns
    graph = trace(nn.LSTM(16, 24), [(5, 3, 16)], training=True)
    (gradient,) = [op for op in graph.backward_ops if op.op == "aten.mkldnn_rnn_layer_backward"]
    assert op_cost(gradient).macs == 2 * 5 * 3 * 96 * (16 + 24)


def test_lstms_the_cpu_runs_as_a_cell_loop_are_traced_as_one():
    double = nn.LSTM(8, 12).to(torch.float64)
    graph = trace(double, [(4, 2, 8)], dtype=torch.float64)
    assert "aten.mkldnn_rnn_layer" not in op_names(graph)
    assert graph.kernels == {f"{LSTM}: {CELL_LOOP}": 1}
    projected = trace(nn.LSTM(8, 12, proj_size=4), [(4, 2, 8)])
    assert "aten.mkldnn_rnn_layer" not in op_names(projected)
    assert trace(nn.LSTM(8, 12), [(4, 2, 8)]).kernels == {f"{LSTM}: {ONEDNN_LSTM}": 1}


class FirstOutput(nn.Module):
    """A recurrent layer's output alone (the step's gradient flows from it)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)[0]


@BFLOAT16_ONEDNN
def test_a_bfloat16_lstm_runs_as_onednn_where_the_cpu_does():
    """RNN.cpp's use_mkldnn takes bfloat16 where the processor has oneDNN's instructions for
    it: traced as the cell loop, the step's peak read 18,576 B against the CPU's 128,136 B.
    Then 192 B over, by two errors: the meta kernel of its gradient returns one tensor as both
    biases' (a CPU makes two, each cast to bfloat16 and freed on its own), and the gradients of
    the initial states, which want none, were held to the node's end, where the CPU drops them
    as the op returns, before the engine casts the others (in float32 no cast follows)."""
    model = FirstOutput(nn.LSTM(10, 12, num_layers=2, bidirectional=True, batch_first=True)).to(torch.bfloat16)
    x = torch.randn(2, 5, 10, dtype=torch.bfloat16)
    graph = trace(model, [x.shape], dtype=x.dtype, training=True)
    assert graph.kernels == {f"{LSTM}: {ONEDNN_LSTM}": 1}
    assert sum(saved_activations(graph).values()) == real_saved_bytes(model, x)
    _, lasting = profiled_training_peaks(model, x)
    assert training_timeline(graph).peak_bytes == lasting + x.nbytes


# Layers a CPU runs through RNN.cpp's own layers: the input projected for the whole sequence
# at once (one product over steps x batch rows), then a product per step for the hidden state.
CPU_RECURRENT_LAYERS = {
    "GRU, batch first": (lambda: nn.GRU(10, 12, batch_first=True), (2, 5, 10), torch.float32),
    "GRU, two layers, both directions, dropout": (
        lambda: nn.GRU(10, 12, num_layers=2, bidirectional=True, dropout=0.5),
        (5, 2, 10),
        torch.float32,
    ),
    "RNN, two layers, both directions, batch first": (
        lambda: nn.RNN(10, 12, num_layers=2, bidirectional=True, batch_first=True),
        (2, 5, 10),
        torch.float32,
    ),
    "RNN relu, no bias, unbatched": (lambda: nn.RNN(10, 12, nonlinearity="relu", bias=False), (5, 10), torch.float32),
    "LSTM with a projection, batch first": (
        lambda: nn.LSTM(10, 12, proj_size=4, batch_first=True),
        (2, 5, 10),
        torch.float32,
    ),
    "LSTM with a projection, two layers, both directions": (
        lambda: nn.LSTM(10, 12, proj_size=4, num_layers=2, bidirectional=True),
        (5, 2, 10),
        torch.float32,
    ),
    "LSTM in float64": (lambda: nn.LSTM(10, 12, batch_first=True), (2, 5, 10), torch.float64),
}


def _cpu_recurrent_layer(name):
    build, shape, dtype = CPU_RECURRENT_LAYERS[name]
    return FirstOutput(build()).to(dtype), torch.randn(*shape, dtype=dtype)


@pytest.mark.parametrize("name", CPU_RECURRENT_LAYERS)
def test_a_recurrent_layer_records_the_ops_a_cpu_runs(name):
    """Names, shapes and order, against a real training forward under a dispatch mode; there
    linear's bias is added out of place (tensors look like subclasses under a mode), in place
    in a real run, as archprof records it; autograd's detaches are its own."""
    model, x = _cpu_recurrent_layer(name)
    graph = trace(model, [x.shape], dtype=x.dtype, training=True)
    with OperatorNames() as real:
        model.train()(x)

    def comparable(ops):
        return [(op.replace("aten.add_", "aten.add"), shapes) for op, shapes in ops if op != "aten.detach"]

    traced = [(op.op, tuple(tuple(t.shape) for t in op.outputs)) for op in graph.ops]
    assert comparable(traced) == comparable(real.ops)


@pytest.mark.parametrize("name", CPU_RECURRENT_LAYERS)
def test_a_recurrent_layers_training_step_peak_and_saved_bytes_are_the_cpus(name):
    """Recording a projection per step, as the meta device's road does, the LSTM with a
    projection read 3,632 B over the CPU's step peak (10,048 B against 6,416), the GRU 896 B
    over, the two-layer RNN 448 B over and 400 B short of its saved bytes. The forward runs
    inside one aten operator, as in inference: what it lets go of inside is its workspace, not
    counted. The two-layer bidirectional LSTM with a projection holds both directions' stacked
    outputs at its last layer's concatenation, inside the operator: 256 B over the peak while
    the layer was not noted as one operator."""
    model, x = _cpu_recurrent_layer(name)
    graph = trace(model, [x.shape], dtype=x.dtype, training=True)
    _, without_workspace = profiled_training_peaks(model, x)
    assert training_timeline(graph).peak_bytes == without_workspace + x.nbytes
    assert sum(saved_activations(graph).values()) == real_saved_bytes(model, x)


@pytest.mark.parametrize("name", CPU_RECURRENT_LAYERS)
def test_a_recurrent_layers_inference_peak_is_the_cpus(name):
    """The whole layer runs inside one aten operator (aten.gru, rnn_tanh, lstm), which lets
    go of its intermediates inside (the time-major copy, the projected input, each step's
    gates): its workspace, not counted. Counted, they read the two-layer GRU's peak 2.9x the
    CPU's (6,256 B against 2,128). Batch-first inputs are in: their transposed input,
    multiplied by weights that require grad, is folded into one product (a copy) as on the
    CPU, since the inference trace's parameters require grad too."""
    model, x = _cpu_recurrent_layer(name)
    graph = trace(model, [x.shape], dtype=x.dtype)
    _, without_workspace = profiled_peaks(model, x)
    assert build_report(graph, name).totals.peak_activation_bytes == without_workspace + x.nbytes


# --- group norm -------------------------------------------------------------------------------


class LaidOutGroupNorm(nn.Module):
    """A group norm of a map laid out as `lay_out` leaves it, the map scaled by a parameter
    first, so that the step computes its gradient (a CPU's channels-last group norm backward
    crashes, PyTorch 2.13, where only the norm's weight and bias want one)."""

    def __init__(self, lay_out, channels: int = 4, groups: int = 2) -> None:
        super().__init__()
        self.lay_out = lay_out
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.norm = nn.GroupNorm(groups, channels)

    def forward(self, x):
        return self.norm(self.lay_out(x * self.scale))


GROUP_NORM_OPERATORS = {"aten.clone", "aten.native_group_norm", "aten.native_group_norm_backward"}


@pytest.mark.parametrize(
    "lay_out, shape",
    [
        (lambda x: x.contiguous(memory_format=torch.channels_last), (2, 4, 5, 5)),
        (lambda x: x.contiguous(memory_format=torch.channels_last_3d), (2, 4, 3, 3, 3)),
        (lambda x: x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), (2, 4, 5, 6)),  # a LayerNorm2d's
        (lambda x: x, (2, 4, 5, 5)),
        (lambda x: x.transpose(2, 3), (2, 4, 5, 6)),  # neither layout: copied contiguous on a CPU too
        (lambda x: x, (3, 4, 7)),
    ],
    ids=["channels last", "channels last 3d", "permuted back", "contiguous", "transposed", "3-d"],
)
def test_a_group_norm_makes_the_copies_a_cpu_makes(lay_out, shape):
    """The oracle: the operators of a real CPU training step. On a channels-last map a CPU
    copies nothing, forward or backward; the meta device's composite and gradient formula
    would copy the map, its gradient and the saved map contiguous."""
    model = LaidOutGroupNorm(lay_out)
    cpu = OperatorNames()
    with cpu:
        output = model(torch.randn(*shape))
        output.backward(torch.ones_like(output))
    graph = trace(model, [shape], training=True)

    def watched(ops):
        return [op.op for op in ops if op.op in GROUP_NORM_OPERATORS]

    assert watched(graph.ops) + watched(graph.backward_ops) == [n for n in cpu.names if n in GROUP_NORM_OPERATORS]
    assert watched(trace(model, [shape]).ops) == watched(graph.ops)


@pytest.mark.parametrize(
    "call, reason",
    [
        (lambda x: F.group_norm(x, 3), "divisible by num_groups"),
        (lambda x: F.group_norm(x, 2, torch.ones(3, device=x.device)), "weight to be a vector of size equal"),
    ],
)
def test_a_channels_last_group_norm_the_cpu_refuses_is_refused_in_its_words(call, reason):
    class Refused(nn.Module):
        def forward(self, x):
            return call(x.contiguous(memory_format=torch.channels_last))

    with pytest.raises(RuntimeError, match=reason):
        Refused()(torch.randn(2, 4, 5, 5))
    with pytest.raises(ArchprofError, match=reason):
        trace(Refused(), [(2, 4, 5, 5)])


# --- unsafe_split and unsafe_chunk return views -----------------------------------------------


@pytest.mark.parametrize("shape", [(4, 3, 4), (5, 4)])
def test_a_gru_saves_what_its_cell_loop_saves(shape):
    model = nn.GRU(4, 4)
    assert saved_bytes(model, shape) == real_saved_bytes(model, torch.randn(*shape))


def test_unsafe_split_and_chunk_outputs_share_their_input_storage():
    class Splits(nn.Module):
        def forward(self, x):
            a, b = torch.unsafe_split(x * 2, 3, dim=1)
            c, d = torch.unsafe_chunk(x + 1, 2, dim=1)
            return a + b.sum() + c + d

    graph = trace(Splits(), [(2, 6)])
    for op in graph.ops:
        if op.op in ("aten.unsafe_split", "aten.unsafe_chunk"):
            assert op.is_view and {t.storage for t in op.outputs} == {op.inputs[0].storage}


def test_a_module_passed_in_runs_matmul_as_its_weights_requiring_grad_make_it():
    """matmul folds a non-contiguous batch into one mm (a copy of it) where the weight
    requires grad, under no_grad too; the stand-ins of a module passed in did not require
    grad in inference, so its trace expanded the weight for a bmm instead: no copy, a peak
    under the real one's. The copy, made and freed inside aten.linear, is matmul's workspace
    to the profiler and the graph alike."""
    model = LinearOnTransposed().eval()
    x = torch.randn(3, 50, 64)
    with torch.no_grad(), OperatorNames() as real:
        model(x)
    traced = trace(model, [x.shape])
    assert [op.op for op in traced.ops if op.module.path == "fc"][:4] == real.names[1:5]  # after the transpose
    held = build_report(traced, "model").totals.peak_activation_bytes
    everything, lasting = profiled_peaks(model, x)
    assert held == lasting + x.nbytes < everything + x.nbytes
    assert (
        archprof.analyze(model, input_size=(50, 64), batch=3).totals
        == archprof.analyze("tests/test_memory_kernels.py:LinearOnTransposed", input_size=(50, 64), batch=3).totals
    )


# --- mish's gradient --------------------------------------------------------------------------------


# A training trace's seed, the saved tensors' detaches and AccumulateGrad's copies into `.grad`.
NOT_COMPUTING = {"aten.ones_like", "aten.detach", "aten.new_empty_strided", "aten.copy_"}


def test_mishs_gradient_runs_as_the_cpus_one_kernel():
    """The oracle: the operators of a real CPU training step, whose mish gradient is one fused
    kernel (aten.mish_backward); on meta its composite formula ran in its place (softplus,
    tanh, sigmoid and six more: four maps held at once). The process's dispatcher is left as
    the trace found it: outside a trace, mish_backward on meta is its composite formula again."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Mish())
    x = torch.randn(2, 3, 8, 8)
    output = model(x)
    seed = torch.ones_like(output)
    with OperatorNames() as cpu:
        output.backward(seed)
    graph = trace(model, [x.shape], training=True)
    computed = [op.op for op in graph.backward_ops if op.op not in NOT_COMPUTING]
    assert computed == [name for name in cpu.names if name not in NOT_COMPUTING]
    assert computed == ["aten.mish_backward", "aten.convolution_backward"]
    assert not torch._C._dispatch_has_kernel_for_dispatch_key("aten::mish_backward", torch._C.DispatchKey.AutogradMeta)
    meta = torch.empty(2, 3, device="meta")
    with OperatorNames() as outside:
        torch.ops.aten.mish_backward(meta, meta)
    assert "aten.mish_backward" not in outside.names


# --- zero tensors -----------------------------------------------------------------------------------


def _channel_mean(y):
    return y.mean((0, 2, 3), keepdim=True)


# sgn's gradient of a real map is a zero tensor (`_efficientzerotensor`), which the gradient
# formulas before it multiply, divide and negate.
ZERO_GRADIENTS = {
    "a map's signs times its mean": lambda y: torch.sgn(y * _channel_mean(y)),
    "a map's signs times its exponential": lambda y: torch.sgn(y * y.exp()),
    "a map's signs over its mean": lambda y: torch.sgn(y / _channel_mean(y)),
    "a mean's signs over its map": lambda y: torch.sgn(_channel_mean(y) / y),
    "the signs of a map's exponential minus it": lambda y: torch.sgn(y.exp() - y),
    "a doubled map's signs times the map": lambda y: torch.sgn(y * 2) * y,
}


@pytest.mark.parametrize("name", ZERO_GRADIENTS)
def test_a_zero_gradient_multiplied_divided_or_negated_peaks_as_on_a_cpu(name):
    """The oracle: a real CPU training step's peak under torch.profiler (tests/memory_oracle.py),
    the input held by the caller. A product, quotient or difference with a zero tensor is worked
    out by PyTorch's ZeroTensor kernels through a meta redispatch, which a CPU allocates nothing for
    and the trace recorded as operators of their own (a 0-dim zero expanded, `prims.mul` making a
    whole map): the map's signs times its mean and times its exponential were 4 B over, the
    exponential minus the map 16,388 B. Negating a zero tensor (DivBackward's `-grad`, SubBackward's)
    goes through PyTorch's ZeroTensor fallback, a 0-dim zero expanded inside the operator's call (its
    workspace: 4 B over), and that expand, taken for a view of a named tensor, ended DivBackward's
    statement `-grad * ((self / other) / other)` early: both quotients freed before the product,
    16,380 B short for the map over its mean and the mean over its map."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(ZERO_GRADIENTS[name]))
    x = torch.randn(2, 3, 16, 16)
    predicted = training_timeline(trace(model, [x.shape], training=True)).peak_bytes
    _, lasting = profiled_training_peaks(model, x)
    assert predicted == lasting + x.nbytes


def _operands(dtype: torch.dtype) -> dict[str, object]:
    return {
        "a zero map": torch._efficientzerotensor((2, 3), dtype=dtype),
        "a zero row": torch._efficientzerotensor((3,), dtype=dtype),
        "a map": torch.arange(1, 7, dtype=dtype).reshape(2, 3),
        "a 0-dim tensor": torch.tensor(2, dtype=dtype),
    }


@pytest.mark.parametrize("operator", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32), (torch.int64, torch.float16)])
def test_the_zero_tensor_kernels_answer_as_pytorchs(operator, dtypes):
    """The oracle: PyTorch's own ZeroTensor kernels (BinaryOps.cpp), outside a trace. While
    DeviceKernels is active, archprof's stand in for them on every device: each pair of a zero
    tensor and another operand (a zero tensor, a map, a broadcast row, a 0-dim tensor, a number,
    either way round) gives the same values, dtype, shape and zero-tensor bit."""
    left, right = _operands(dtypes[0]), {**_operands(dtypes[1]), "a number": 3, "a float": 0.5}
    pairs = [(a, b) for a in left.values() for b in right.values()]
    pairs = [(a, b) for a, b in pairs if _is_zero(a) or _is_zero(b)]
    pairs += [(b, a) for a, b in pairs if isinstance(b, torch.Tensor)]
    function = getattr(torch, operator)
    expected = [function(a, b) for a, b in pairs]
    with DeviceKernels():
        answered = [function(a, b) for a, b in pairs]
    for (a, b), want, got in zip(pairs, expected, answered, strict=True):
        assert (got.shape, got.dtype, got._is_zerotensor()) == (want.shape, want.dtype, want._is_zerotensor()), (a, b)
        torch.testing.assert_close(got, want, equal_nan=True, msg=f"{operator}({a}, {b})")


def _is_zero(operand) -> bool:
    return isinstance(operand, torch.Tensor) and operand._is_zerotensor()


# --- copies of conjugate views ------------------------------------------------------------------


def _spectrum_times_its_conjugate(y):
    spectrum = torch.fft.rfft2(y)
    return torch.view_as_real(spectrum.conj() * spectrum)  # the math-bit fallback's copy, inside mul


def _spectrum_copied_without_grad_and_read_twice(y):
    spectrum = torch.fft.rfft2(y.detach())
    copy = spectrum.conj().resolve_conj()  # the user's copy, needing no grad, read at once and kept
    return torch.view_as_real(copy * spectrum).sum() + torch.view_as_real(copy).sum() + y.sum()


CONJUGATE_COPIES = {
    "a spectrum times its conjugate": _spectrum_times_its_conjugate,
    "a spectrum's conjugate copied without grad and read twice": _spectrum_copied_without_grad_and_read_twice,
}


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("name", CONJUGATE_COPIES)
def test_a_copy_of_a_conjugate_view_is_workspace_only_where_the_math_bit_fallback_makes_it(name, training):
    """The oracle: a real CPU forward's (or training step's) peak under torch.profiler, the input
    held by the caller. PyTorch's math-bit fallback copies a conjugate view inside the operator
    reading it (its workspace); a user's `resolve_conj()` is an operator of its own, its copy held
    as any tensor. A dispatch mode sees the same `clone` either way: the inference of a spectrum
    times its conjugate was 18,432 B over (the fallback's copy counted), and a training step
    through a copy needing no grad, read at once and kept, 18,432 B short (taken for the fallback's,
    as autograd records neither)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(CONJUGATE_COPIES[name]))
    x = torch.randn(2, 3, 16, 16)
    graph = trace(model, [x.shape], training=training)
    if training:
        predicted = training_timeline(graph).peak_bytes
        _, lasting = profiled_training_peaks(model, x)
    else:
        predicted = build_report(graph, "model").totals.peak_activation_bytes
        _, lasting = profiled_peaks(model, x)
    assert predicted == lasting + x.nbytes


def test_the_users_copies_are_put_back_as_they_were():
    """While active, DeviceKernels wraps the Python names of a user's copy; after, each is the
    one before (Tensor's inherited from TensorBase, none of its own)."""
    before = {name: getattr(torch, name) for name in ("clone", "resolve_conj", "resolve_neg")}
    with DeviceKernels():
        assert torch.clone is not before["clone"] and "clone" in vars(torch.Tensor)
    assert {name: getattr(torch, name) for name in before} == before
    assert not {"clone", "resolve_conj", "resolve_neg"} & set(vars(torch.Tensor))
