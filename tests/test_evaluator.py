"""netdef.evaluator on networks built here with the TensorRT API, against independent references:
NumPy float64 formulas and ONNX Runtime running the equivalent ONNX node."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from netdef.backend import create_network, trt
from netdef.evaluator import (
    EvaluationError,
    UnsupportedLayerError,
    evaluate,
    register_plugin_reference,
    unregister_plugin_reference,
)
from netdef.evaluator.plugins import lookup_plugin_reference

RNG = np.random.default_rng(0)


# trt.Weights borrows the NumPy buffer: keep every array alive while its network is used
_KEEP_ALIVE: list[np.ndarray] = []


def weights(array: np.ndarray):
    array = np.ascontiguousarray(array)
    _KEEP_ALIVE.append(array)
    return trt.Weights(array)


# TensorRT keeps the first logger a process registers and uses it from then on: it must never be freed
from netdef.backend import LOGGER  # noqa: E402 - the one process-wide logger


@pytest.fixture()
def network():
    builder = trt.Builder(LOGGER)
    yield create_network(builder)  # the builder outlives the network
    _KEEP_ALIVE.clear()


def constant(net, array: np.ndarray):
    return net.add_constant(array.shape, weights(array)).get_output(0)


def run_onnx_node(op: str, inputs: dict[str, np.ndarray], attrs: dict, n_outputs: int = 1) -> list[np.ndarray]:
    """ONNX Runtime's result for one node: the independent reference."""
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, list(inputs), outs, **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


# ---------------------------------------------------------------- matrix multiply


@pytest.mark.parametrize(
    "a_shape, b_shape, op0, op1",
    [
        ((2, 3, 5, 4), (1, 1, 4, 6), "NONE", "NONE"),       # shared weight (the single-GEMM path)
        ((2, 3, 4, 5), (2, 3, 6, 4), "TRANSPOSE", "TRANSPOSE"),
        ((2, 1, 5, 4), (1, 3, 4, 6), "NONE", "NONE"),       # broadcast both ways
        ((2, 4), (2, 4, 6), "VECTOR", "NONE"),
        ((2, 5, 4), (2, 4), "NONE", "VECTOR"),
    ],
)
def test_matrix_multiply_matches_float64(network, a_shape, b_shape, op0, op1):
    a = RNG.standard_normal(a_shape).astype(np.float32)
    b = RNG.standard_normal(b_shape).astype(np.float32)
    ta = network.add_input("a", trt.float32, a_shape)
    layer = network.add_matrix_multiply(ta, getattr(trt.MatrixOperation, op0), constant(network, b),
                                        getattr(trt.MatrixOperation, op1))
    layer.name = "mm"
    network.mark_output(layer.get_output(0))
    got = evaluate(network, {"a": a})[layer.get_output(0).name]
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    a64 = a64[..., None, :] if op0 == "VECTOR" else np.swapaxes(a64, -1, -2) if op0 == "TRANSPOSE" else a64
    b64 = b64[..., :, None] if op1 == "VECTOR" else np.swapaxes(b64, -1, -2) if op1 == "TRANSPOSE" else b64
    want = np.matmul(a64, b64)
    want = want[..., 0, :] if op0 == "VECTOR" else want
    want = want[..., 0] if op1 == "VECTOR" else want
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- convolution and pooling against ONNX Runtime


@pytest.mark.parametrize(
    "channels, out_maps, groups, kernel, stride, dilation, pads",
    [
        (3, 4, 1, (3, 3), (2, 2), (1, 1), (1, 0, 1, 2)),      # strided, asymmetric padding
        (4, 6, 2, (3, 2), (1, 2), (2, 1), (0, 0, 0, 0)),      # grouped, dilated
        (8, 8, 8, (15, 1), (1, 1), (1, 1), (7, 0, 7, 0)),     # depthwise, the conformer's conv module
    ],
)
def test_convolution_matches_onnxruntime(network, channels, out_maps, groups, kernel, stride, dilation, pads):
    x = RNG.standard_normal((2, channels, 11, 9)).astype(np.float32)
    w = RNG.standard_normal((out_maps, channels // groups, *kernel)).astype(np.float32)
    bias = RNG.standard_normal(out_maps).astype(np.float32)
    tx = network.add_input("x", trt.float32, (-1, channels, -1, -1))
    conv = network.add_convolution_nd(tx, out_maps, kernel, weights(w), weights(bias))
    conv.stride_nd, conv.dilation_nd, conv.num_groups = stride, dilation, groups
    conv.pre_padding, conv.post_padding = pads[:2], pads[2:]
    network.mark_output(conv.get_output(0))
    got = evaluate(network, {"x": x})[conv.get_output(0).name]
    (want,) = run_onnx_node("Conv", {"x": x, "w": w, "b": bias},
                            dict(strides=stride, dilations=dilation, group=groups, pads=list(pads)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["MAX", "AVERAGE"])
def test_pooling_matches_onnxruntime(network, kind):
    x = RNG.standard_normal((1, 2, 7, 8)).astype(np.float32)
    tx = network.add_input("x", trt.float32, x.shape)
    pool = network.add_pooling_nd(tx, getattr(trt.PoolingType, kind), (3, 2))
    pool.stride_nd, pool.pre_padding, pool.post_padding = (2, 2), (1, 0), (1, 1)
    pool.average_count_excludes_padding = True
    network.mark_output(pool.get_output(0))
    got = evaluate(network, {"x": x})[pool.get_output(0).name]
    op = "MaxPool" if kind == "MAX" else "AveragePool"
    (want,) = run_onnx_node(op, {"x": x}, dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- slice modes, gather, shape tensors


@pytest.mark.parametrize("mode, np_mode", [("WRAP", "wrap"), ("CLAMP", "edge"), ("REFLECT", "reflect"), ("FILL", "constant")])
def test_slice_modes_match_numpy_pad(network, mode, np_mode):
    x = RNG.standard_normal((3, 5)).astype(np.float32)
    tx = network.add_input("x", trt.float32, x.shape)
    sl = network.add_slice(tx, (-2, -3), (7, 11), (1, 1))
    sl.mode = getattr(trt.SampleMode, mode)
    network.mark_output(sl.get_output(0))
    got = evaluate(network, {"x": x})[sl.get_output(0).name]
    want = np.pad(x, ((2, 2), (3, 3)), mode=np_mode)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("start, size, stride, expected", [
    ((4, 1), (3, 2), (-1, 2), (slice(4, 1, -1), slice(1, 4, 2))),
    ((4, 0), (5, 5), (-1, 1), (slice(4, None, -1), slice(0, 5))),
    ((0, 3), (2, 4), (2, 0), (slice(0, 3, 2), [3, 3, 3, 3])),  # stride 0 repeats an element
])
def test_strict_slice_matches_numpy_indexing(network, start, size, stride, expected):
    x = np.arange(25, dtype=np.int32).reshape(5, 5)
    sl = network.add_slice(network.add_input("x", trt.int32, x.shape), start, size, stride)
    network.mark_output(sl.get_output(0))
    got = evaluate(network, {"x": x})[sl.get_output(0).name]
    want = x[expected[0]][:, expected[1]]
    np.testing.assert_array_equal(got, want)


def test_slice_strict_bounds_raises(network):
    tx = network.add_input("x", trt.float32, (3, 5))
    sl = network.add_slice(tx, (0, 2), (3, 4), (1, 1))
    network.mark_output(sl.get_output(0))
    with pytest.raises(EvaluationError, match="leave the extent"):
        evaluate(network, {"x": np.zeros((3, 5), np.float32)})


@pytest.mark.parametrize("mode", ["DEFAULT", "ELEMENT", "ND"])
def test_gather_modes_match_onnxruntime(network, mode):
    data = RNG.standard_normal((4, 5, 3)).astype(np.float32)
    if mode == "DEFAULT":
        indices, op, attrs = np.array([[0, -1], [3, 2]], np.int64), "Gather", {"axis": 0}
    elif mode == "ELEMENT":
        indices, op, attrs = RNG.integers(-5, 5, (4, 2, 3)).astype(np.int64), "GatherElements", {"axis": 1}
    else:
        indices, op, attrs = np.array([[[1, 2]], [[0, 4]]], np.int64), "GatherND", {}
    td = network.add_input("data", trt.float32, data.shape)
    g = network.add_gather_v2(td, constant(network, indices), getattr(trt.GatherMode, mode))
    g.axis = attrs.get("axis", 0)
    network.mark_output(g.get_output(0))
    got = evaluate(network, {"data": data})[g.get_output(0).name]
    (want,) = run_onnx_node(op, {"data": data, "indices": indices}, attrs)
    np.testing.assert_array_equal(got, want)


def test_dynamic_reshape_from_shape_tensor(network):
    x = RNG.standard_normal((2, 6, 4)).astype(np.float32)
    tx = network.add_input("x", trt.float32, (-1, -1, 4))
    shape = network.add_shape(tx).get_output(0)  # [B, T, 4] -> reshape to [B, T*4] via shape arithmetic
    b_t = network.add_slice(shape, (0,), (2,), (1,)).get_output(0)
    t4 = network.add_elementwise(
        network.add_slice(b_t, (1,), (1,), (1,)).get_output(0), constant(network, np.array([4], np.int64)),
        trt.ElementWiseOperation.PROD).get_output(0)
    target = network.add_concatenation([network.add_slice(b_t, (0,), (1,), (1,)).get_output(0), t4]).get_output(0)
    shuffle = network.add_shuffle(tx)
    shuffle.set_input(1, target)
    network.mark_output(shuffle.get_output(0))
    got = evaluate(network, {"x": x})[shuffle.get_output(0).name]
    np.testing.assert_array_equal(got, x.reshape(2, 24))


# ---------------------------------------------------------------- FP16 emulation


def _attention_block(network, dtype, x: np.ndarray, w: np.ndarray, gamma: np.ndarray, beta: np.ndarray):
    """LayerNorm(softmax(x @ w) @ x) in `dtype`: a matmul, a softmax and a normalization."""
    np_type = np.float16 if dtype == trt.float16 else np.float32
    tx = network.add_input("x", dtype, x.shape)
    scores = network.add_matrix_multiply(tx, trt.MatrixOperation.NONE, constant(network, w.astype(np_type)),
                                         trt.MatrixOperation.NONE)
    softmax = network.add_softmax(scores.get_output(0))
    softmax.axes = 1 << 2
    mixed = network.add_matrix_multiply(softmax.get_output(0), trt.MatrixOperation.NONE, tx, trt.MatrixOperation.NONE)
    norm = network.add_normalization(mixed.get_output(0), constant(network, gamma.astype(np_type)),
                                     constant(network, beta.astype(np_type)), 1 << 2)
    norm.epsilon = 1e-5
    network.mark_output(norm.get_output(0))
    return norm.get_output(0).name


def _float64_reference(x, w, gamma, beta):
    scores = x @ w
    e = np.exp(scores - scores.max(-1, keepdims=True))
    mixed = (e / e.sum(-1, keepdims=True)) @ x
    mean = mixed.mean(-1, keepdims=True)
    var = ((mixed - mean) ** 2).mean(-1, keepdims=True)
    return (mixed - mean) / np.sqrt(var + 1e-5) * gamma + beta


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_fp16_rounding_is_emulated(network, precision):
    n = 64
    x = RNG.standard_normal((2, n, n)).astype(np.float32)
    w = (RNG.standard_normal((1, n, n)) / np.sqrt(n)).astype(np.float32)
    gamma, beta = RNG.standard_normal((1, 1, n)).astype(np.float32), RNG.standard_normal((1, 1, n)).astype(np.float32)
    dtype = trt.float16 if precision == "fp16" else trt.float32
    # the float64 reference sees exactly the values the network holds (FP16 inputs already rounded)
    cast = (lambda a: a.astype(np.float16).astype(np.float64)) if precision == "fp16" else (lambda a: a.astype(np.float64))
    name = _attention_block(network, dtype, x, w, gamma, beta)
    feed = x.astype(np.float16) if precision == "fp16" else x
    got = evaluate(network, {"x": feed})[name]
    want = _float64_reference(cast(x), cast(w), cast(gamma), cast(beta))
    err = np.abs(got.astype(np.float64) - want).max()
    scale = np.abs(want).max()
    if precision == "fp16":
        assert got.dtype == np.float16
        # float16's unit roundoff is 2^-11: the rounded output alone errs by up to that much of its
        # scale (measured: 4.6e-4 of it); a few roundings more stay within a few units, never zero
        assert 2.0**-13 * scale < err < 2.0**-8 * scale, err
    else:
        assert got.dtype == np.float32
        assert err < 1e-5 * scale, err


def test_fp16_intermediates_are_stored_as_float16(network):
    x = RNG.standard_normal((3, 4)).astype(np.float16)
    tx = network.add_input("x", trt.float16, x.shape)
    y = network.add_elementwise(tx, tx, trt.ElementWiseOperation.PROD)
    y.name = "square"
    z = network.add_unary(y.get_output(0), trt.UnaryOperation.EXP)
    network.mark_output(z.get_output(0))
    every = evaluate(network, {"x": x}, return_all=True)
    assert every[y.get_output(0).name].dtype == np.float16
    np.testing.assert_array_equal(every[y.get_output(0).name], (x.astype(np.float32) ** 2).astype(np.float16))
    assert set(every) >= {"x", y.get_output(0).name, z.get_output(0).name}


# ---------------------------------------------------------------- errors


def test_input_dtype_and_shape_are_checked(network):
    tx = network.add_input("speech", trt.float32, (-1, -1, 80))
    network.mark_output(network.add_identity(tx).get_output(0))
    with pytest.raises(EvaluationError, match=r"input 'speech': expected dtype float32, got float64"):
        evaluate(network, {"speech": np.zeros((1, 4, 80))})
    with pytest.raises(EvaluationError, match=r"input 'speech': expected shape \[-1, -1, 80\]"):
        evaluate(network, {"speech": np.zeros((1, 4, 81), np.float32)})
    with pytest.raises(EvaluationError, match=r"missing network input\(s\) \['speech'\]"):
        evaluate(network, {})


def test_unimplemented_layer_raises_naming_it(network):
    tx = network.add_input("x", trt.float32, (2, 3))
    fill = network.add_fill((2, 3), trt.FillOperation.RANDOM_UNIFORM, trt.float32)
    fill.name = "noise"
    network.mark_output(network.add_elementwise(tx, fill.get_output(0), trt.ElementWiseOperation.SUM).get_output(0))
    with pytest.raises(UnsupportedLayerError, match=r"layer 'noise' \(FILL\): fill operation RANDOM_UNIFORM") as info:
        evaluate(network, {"x": np.zeros((2, 3), np.float32)})
    assert info.value.layer_name == "noise" and info.value.layer_type == "FILL"


def test_unimplemented_layer_type_raises_before_running(network):
    x = network.add_input("x", trt.float32, (1, 2, 5))
    bounds = network.add_input("bounds", trt.int32, (1, 2, 1))
    layer = network.add_ragged_softmax(x, bounds)
    layer.name = "ragged"
    network.mark_output(layer.get_output(0))
    with pytest.raises(UnsupportedLayerError, match=r"layer 'ragged' \(RAGGED_SOFTMAX\): layer type RAGGED_SOFTMAX"):
        evaluate(network, {"x": np.zeros((1, 2, 5), np.float32), "bounds": np.ones((1, 2, 1), np.int32)})


@pytest.mark.parametrize("reverse", [False, True])
def test_loop_matches_numpy(network, reverse):
    """A loop over the rows of x: the running sum (recurrence), every partial sum (CONCATENATE output)
    and the final sum (LAST_VALUE of the recurrence)."""
    x = RNG.standard_normal((5, 3)).astype(np.float32)
    tx = network.add_input("x", trt.float32, x.shape)
    loop = network.add_loop()
    loop.add_trip_limit(constant(network, np.array(5, np.int32)), trt.TripLimit.COUNT)
    row = loop.add_iterator(tx, 0, reverse).get_output(0)
    total = loop.add_recurrence(constant(network, np.zeros(3, np.float32)))
    running = network.add_elementwise(total.get_output(0), row, trt.ElementWiseOperation.SUM).get_output(0)
    total.set_input(1, running)
    every = loop.add_loop_output(running, trt.LoopOutput.CONCATENATE, 0)
    every.set_input(1, constant(network, np.array(5, np.int32)))
    last = loop.add_loop_output(total.get_output(0), trt.LoopOutput.LAST_VALUE)
    network.mark_output(every.get_output(0))
    network.mark_output(last.get_output(0))
    got = evaluate(network, {"x": x})
    rows = x[::-1] if reverse else x
    want = np.cumsum(rows.astype(np.float64), axis=0)
    np.testing.assert_allclose(got[every.get_output(0).name], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[last.get_output(0).name], want[-1], rtol=1e-6, atol=1e-6)


def test_assertion_layer_failure_is_reported(network):
    tx = network.add_input("lengths", trt.int32, (3,))
    positive = network.add_elementwise(tx, constant(network, np.zeros(3, np.int32)), trt.ElementWiseOperation.GREATER)
    assertion = network.add_assertion(positive.get_output(0), "lengths must be positive")
    assertion.name = "check_lengths"
    network.mark_output(network.add_identity(tx).get_output(0))
    evaluate(network, {"lengths": np.array([1, 2, 3], np.int32)})
    with pytest.raises(EvaluationError, match="check_lengths.*lengths must be positive"):
        evaluate(network, {"lengths": np.array([1, 0, 3], np.int32)})


# ---------------------------------------------------------------- plugin registry


def test_plugin_registry_lookup_and_errors():
    @register_plugin_reference("TestScalePlugin", version="2", namespace="wenet")
    def scale(inputs, fields):
        return [inputs[0] * fields["factor"]]

    try:
        fn = lookup_plugin_reference("TestScalePlugin", "2", "wenet")
        assert fn is scale
        np.testing.assert_array_equal(fn([np.ones(3)], {"factor": 2.0})[0], np.full(3, 2.0))
        with pytest.raises(KeyError, match=r"no reference implementation registered for plugin 'wenet::TestScalePlugin' version '1'"):
            lookup_plugin_reference("TestScalePlugin", "1", "wenet")
        with pytest.raises(ValueError, match="already registered"):
            register_plugin_reference("TestScalePlugin", version="2", namespace="wenet")(lambda i, f: i)
    finally:
        unregister_plugin_reference("TestScalePlugin", "2", "wenet")
    with pytest.raises(KeyError, match="registered: none|registered: "):
        lookup_plugin_reference("TestScalePlugin", "2", "wenet")


def test_plugin_identity_and_fields_read_through_the_plugin_api():
    """A Python IPluginV3 (as a plugin layer's `.plugin` returns it): name, version and namespace
    from its CORE capability, fields from its RUNTIME capability's get_fields_to_serialize."""
    from netdef.evaluator.plugins import plugin_fields, plugin_identity

    class ScalePlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        def __init__(self):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.plugin_name, self.plugin_version, self.plugin_namespace = "TestScalePlugin", "2", "wenet"
            self.num_outputs = 1

        def get_capability_interface(self, capability):
            return self

        def get_fields_to_serialize(self):
            return trt.PluginFieldCollection(
                [trt.PluginField("factor", np.array([2.5], np.float32), trt.PluginFieldType.FLOAT32)])

    plugin = ScalePlugin()
    assert plugin_identity(plugin) == ("TestScalePlugin", "2", "wenet")
    fields = plugin_fields(plugin)
    assert list(fields) == ["factor"]
    np.testing.assert_array_equal(fields["factor"], np.array([2.5], np.float32))


def test_outputs_do_not_alias_inputs(network):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    tx = network.add_input("x", trt.float32, x.shape)
    sl = network.add_slice(tx, (0, 1), (2, 2), (1, 1))  # a basic slice: a view inside the walk
    network.mark_output(network.add_identity(tx).get_output(0))
    network.mark_output(sl.get_output(0))
    outputs = evaluate(network, {"x": x})
    for value in outputs.values():
        value += 100
    np.testing.assert_array_equal(x, np.arange(6, dtype=np.float32).reshape(2, 3))


@pytest.mark.parametrize("mask_kind", ["none", "bool", "causal"])
def test_attention_layer_matches_numpy(network, mask_kind):
    """add_attention: softmax(Q K^T) V per head (no implicit scaling), grouped-query K/V heads."""
    q = RNG.standard_normal((2, 4, 5, 8)).astype(np.float32)
    k = RNG.standard_normal((2, 2, 6, 8)).astype(np.float32)
    v = RNG.standard_normal((2, 2, 6, 8)).astype(np.float32)
    mask = RNG.random((2, 1, 5, 6)) > 0.3
    mask[..., 0] = True  # every query attends somewhere
    inputs = {name: network.add_input(name, trt.float32, a.shape) for name, a in (("q", q), ("k", k), ("v", v))}
    attention = network.add_attention(inputs["q"], inputs["k"], inputs["v"], trt.AttentionNormalizationOp.SOFTMAX,
                                      mask_kind == "causal")
    if mask_kind == "bool":
        attention.mask = constant(network, mask)
    network.mark_output(attention.get_output(0))
    got = evaluate(network, {"q": q, "k": k, "v": v})[attention.get_output(0).name]
    k64, v64 = (np.repeat(a.astype(np.float64), 2, axis=1) for a in (k, v))  # each K/V head serves 2 query heads
    scores = q.astype(np.float64) @ np.swapaxes(k64, -1, -2)
    if mask_kind == "bool":
        scores = np.where(mask, scores, -np.inf)
    elif mask_kind == "causal":  # upper-left aligned: query i sees keys 0..i
        scores = np.where(np.tril(np.ones((5, 6), bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    want = (weights / weights.sum(-1, keepdims=True)) @ v64
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
