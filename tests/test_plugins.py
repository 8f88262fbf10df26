"""The TensorRT plugin wrappers without a GPU: registration, fields, creators, shape checks, format
support, the RTX refusal, and the CPU-evaluator references against native-layer networks evaluated by
netdef's evaluator (what a network with plugins computes on the CPU must equal the native network)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from netdef.backend import HAS_PLUGIN_V3, LOGGER, create_network, trt
from netdef.evaluator import evaluate
from netdef.evaluator.plugins import lookup_plugin_reference, plugin_fields
from plugins import names, reference
from plugins.cpu_reference import register_cpu_references
from plugins.trt_plugins import (
    LayerNormPlugin,
    PluginConfigError,
    RelPosAttentionPlugin,
    add_layernorm,
    create_plugin,
    register_plugins,
)

RNG = np.random.default_rng(5)


def ln_fields(eps, has_residual):
    return [trt.PluginField(names.LAYERNORM_FIELD_EPS, np.array([eps], np.float32), trt.PluginFieldType.FLOAT32),
            trt.PluginField(names.LAYERNORM_FIELD_HAS_RESIDUAL, np.array([has_residual], np.int32),
                            trt.PluginFieldType.INT32)]


def attn_fields(heads):
    return [trt.PluginField(names.ATTENTION_FIELD_HEADS, np.array([heads], np.int32), trt.PluginFieldType.INT32)]


def desc(shape, dtype=trt.DataType.FLOAT):
    d = trt.PluginTensorDesc()
    d.dims = trt.Dims(list(shape))
    d.type = dtype
    d.format = trt.TensorFormat.LINEAR
    return d


def dyn(shape, dtype=trt.DataType.FLOAT):
    d = trt.DynamicPluginTensorDesc()
    d.desc = desc(shape, dtype)
    return d


def test_creators_are_registered_once_under_the_project_namespace():
    register_plugins()
    register_plugins()
    registry = trt.get_plugin_registry()
    for name in (names.LAYERNORM_PLUGIN_NAME, names.ATTENTION_PLUGIN_NAME):
        creator = registry.get_creator(name, names.PLUGIN_VERSION, names.PLUGIN_NAMESPACE)
        assert creator is not None and creator.name == name
        assert creator.plugin_namespace == names.PLUGIN_NAMESPACE == "wenet_trt"
        assert sum(c.name == name for c in registry.all_creators) == 1


@pytest.mark.parametrize("eps,has_residual", [(1e-5, 1), (1e-12, 0)])
def test_layernorm_plugin_fields_round_trip(eps, has_residual):
    plugin = create_plugin(names.LAYERNORM_PLUGIN_NAME, ln_fields(eps, has_residual))
    assert isinstance(plugin, LayerNormPlugin)
    assert plugin.eps == pytest.approx(eps, rel=1e-7) and plugin.has_residual == bool(has_residual)
    assert plugin.num_outputs == (2 if has_residual else 1)
    assert (plugin.plugin_name, plugin.plugin_version, plugin.plugin_namespace) == ("WenetLayerNorm", "1", "wenet_trt")
    fields = plugin_fields(plugin)  # what the CPU evaluator reads
    assert fields["eps"][0] == np.float32(eps) and fields["has_residual"][0] == has_residual
    clone = plugin.clone()
    assert (clone.eps, clone.has_residual) == (plugin.eps, plugin.has_residual)


def test_attention_plugin_fields_round_trip_and_validation():
    plugin = create_plugin(names.ATTENTION_PLUGIN_NAME, attn_fields(4))
    assert isinstance(plugin, RelPosAttentionPlugin) and plugin.heads == 4 and plugin.clone().heads == 4
    assert plugin_fields(plugin)["heads"][0] == 4
    with pytest.raises(PluginConfigError, match="heads"):
        create_plugin(names.ATTENTION_PLUGIN_NAME, [])
    with pytest.raises(PluginConfigError, match="eps"):
        create_plugin(names.LAYERNORM_PLUGIN_NAME, [])


def test_output_types_and_shapes():
    plugin = create_plugin(names.LAYERNORM_PLUGIN_NAME, ln_fields(1e-5, 1))
    assert plugin.get_output_data_types([trt.DataType.HALF] * 4) == [trt.DataType.HALF] * 2
    attn = create_plugin(names.ATTENTION_PLUGIN_NAME, attn_fields(4))
    assert attn.get_output_data_types([trt.DataType.FLOAT] * 6 + [trt.DataType.INT32]) == [trt.DataType.FLOAT]


def test_format_support_is_one_float_type_and_int32_lengths():
    ln = LayerNormPlugin(1e-5, True)
    io = [dyn((2, 3, 256), trt.DataType.HALF)] * 2 + [dyn((256,), trt.DataType.HALF)] * 2 + \
         [dyn((2, 3, 256), trt.DataType.HALF)] * 2
    assert all(ln.supports_format_combination(i, io, 4) for i in range(6))
    mixed = io[:5] + [dyn((2, 3, 256), trt.DataType.FLOAT)]
    assert not ln.supports_format_combination(5, mixed, 4)
    ints = [dyn((2, 3, 256), trt.DataType.INT32)] + io[1:]
    assert not ln.supports_format_combination(0, ints, 4)

    attn = RelPosAttentionPlugin(4)
    q = dyn((2, 9, 256))
    io = [q, q, q, dyn((4, 9, 64)), dyn((4, 64)), dyn((4, 64)), dyn((2,), trt.DataType.INT32), q]
    assert all(attn.supports_format_combination(i, io, 7) for i in range(8))
    io[6] = dyn((2,), trt.DataType.FLOAT)
    assert not attn.supports_format_combination(6, io, 7)


@pytest.mark.parametrize("plugin,shapes,message", [
    (LayerNormPlugin(1e-5, True), [(2, 3, 100), (2, 3, 100), (100,), (100,)], "multiple of 32"),
    (LayerNormPlugin(1e-5, True), [(2, 3, 256), (2, 4, 256), (256,), (256,)], "residual"),
    (LayerNormPlugin(1e-5, False), [(2, 3, 256), (128,), (256,)], "gamma"),
    (RelPosAttentionPlugin(4), [(2, 9, 200)] * 3 + [(4, 9, 50), (4, 50), (4, 50), (2,)], "multiple of 16"),
    (RelPosAttentionPlugin(4), [(2, 9, 256)] * 3 + [(4, 8, 64), (4, 64), (4, 64), (2,)], "p must be"),
    (RelPosAttentionPlugin(4), [(2, 9, 256)] * 3 + [(4, 9, 64), (4, 64), (4, 64), (3,)], "lengths"),
    (RelPosAttentionPlugin(3), [(2, 9, 256)] * 3 + [(4, 9, 64), (4, 64), (4, 64), (2,)], "multiple of heads"),
])
def test_shape_errors_name_plugin_and_tensor(plugin, shapes, message):
    with pytest.raises(ValueError, match=message):
        plugin.on_shape_change([desc(s) for s in shapes], [])


def test_build_time_check_accepts_dynamic_dimensions_and_rejects_known_mismatches():
    attn = RelPosAttentionPlugin(4)
    q = dyn((-1, -1, 256))
    attn.configure_plugin([q, q, q, dyn((1, 4, -1, 64)), dyn((4, 64)), dyn((4, 64)), dyn((-1,), trt.DataType.INT32)], [])
    with pytest.raises(PluginConfigError, match="pos_bias_v"):
        attn.configure_plugin([q, q, q, dyn((4, -1, 64)), dyn((4, 64)), dyn((4, 32)), dyn((-1,), trt.DataType.INT32)], [])
    ln = LayerNormPlugin(1e-5, True)
    ln.configure_plugin([dyn((-1, -1, 256)), dyn((-1, -1, 256)), dyn((256,)), dyn((256,))], [])
    with pytest.raises(ValueError, match="multiple of 32"):
        ln.configure_plugin([dyn((-1, 100)), dyn((-1, 100)), dyn((100,)), dyn((100,))], [])


def test_valid_shapes_pass_including_batched_position_projection():
    RelPosAttentionPlugin(4).on_shape_change(
        [desc((2, 9, 256))] * 3 + [desc((1, 4, 9, 64)), desc((4, 64)), desc((4, 64)), desc((2,), trt.DataType.INT32)], [])
    LayerNormPlugin(1e-5, False).on_shape_change([desc((7, 1024)), desc((1024,)), desc((1024,))], [])


def test_plugin_layer_is_added_or_refused_clearly_by_backend():
    builder = trt.Builder(LOGGER)
    network = create_network(builder)
    x = network.add_input("x", trt.float32, (2, 256))
    gamma = network.add_input("gamma", trt.float32, (256,))
    beta = network.add_input("beta", trt.float32, (256,))
    if HAS_PLUGIN_V3:  # full TensorRT: one plugin layer with the normalized output
        (norm,) = add_layernorm(network, x, gamma, beta, eps=1e-5)
        assert tuple(norm.shape) == (2, 256) and network.num_layers == 1
    else:  # TensorRT-RTX has no plugin layers
        with pytest.raises(RuntimeError, match="add_plugin_v3.*full TensorRT"):
            add_layernorm(network, x, gamma, beta, eps=1e-5)
        assert network.num_layers == 0


# ------------------------------------------------------------------- CPU references vs native layers
def _native_network():
    builder = trt.Builder(LOGGER)
    return builder, create_network(builder)


def _const(network, array):
    array = np.ascontiguousarray(array, dtype=np.float32)
    layer = network.add_constant(array.shape, trt.Weights(array))
    return layer.get_output(0)


@pytest.mark.parametrize("eps", [1e-5, 1e-12])
def test_layernorm_reference_equals_native_add_and_normalization(eps):
    register_cpu_references()
    b, t, d = 3, 5, 256
    x, r = RNG.normal(2.0, 3.0, (b, t, d)).astype(np.float32), RNG.normal(size=(b, t, d)).astype(np.float32)
    gamma, beta = RNG.normal(1, 0.2, d).astype(np.float32), RNG.normal(0, 0.2, d).astype(np.float32)
    _, network = _native_network()
    xi = network.add_input("x", trt.float32, (b, t, d))
    ri = network.add_input("r", trt.float32, (b, t, d))
    total = network.add_elementwise(xi, ri, trt.ElementWiseOperation.SUM).get_output(0)
    norm = network.add_normalization(total, _const(network, gamma.reshape(1, 1, d)),
                                     _const(network, beta.reshape(1, 1, d)), 1 << 2)
    norm.epsilon = eps
    total.name, norm.get_output(0).name = "sum", "norm"
    network.mark_output(total)
    network.mark_output(norm.get_output(0))
    native = evaluate(network, {"x": x, "r": r})

    plugin = create_plugin(names.LAYERNORM_PLUGIN_NAME, ln_fields(eps, 1))
    fn = lookup_plugin_reference(names.LAYERNORM_PLUGIN_NAME, names.PLUGIN_VERSION, names.PLUGIN_NAMESPACE)
    out_sum, out_norm = fn([x, r, gamma, beta], plugin_fields(plugin))
    assert out_sum.dtype == np.float32 and out_norm.dtype == np.float32
    np.testing.assert_allclose(out_sum, native["sum"], rtol=0, atol=0)
    np.testing.assert_allclose(out_norm, native["norm"], rtol=1e-5, atol=1e-5)


def test_attention_reference_equals_native_matmul_softmax_network():
    register_cpu_references()
    b, t, heads, dk = 2, 11, 4, 16
    hd = heads * dk
    q, k, v = (RNG.normal(size=(b, t, hd)).astype(np.float32) for _ in range(3))
    p = RNG.normal(size=(heads, t, dk)).astype(np.float32)
    u, w = RNG.normal(0, 0.5, (heads, dk)).astype(np.float32), RNG.normal(0, 0.5, (heads, dk)).astype(np.float32)
    lengths = np.array([11, 6], np.int32)
    mask_bias = np.where(np.arange(t)[None, :] < lengths[:, None], 0.0, -np.inf).astype(np.float32)

    _, network = _native_network()

    def heads_first(tensor):  # [B, T, H*dk] -> [B, H, T, dk]
        shuffle = network.add_shuffle(tensor)
        shuffle.reshape_dims = (b, t, heads, dk)
        shuffle.second_transpose = (0, 2, 1, 3)
        return shuffle.get_output(0)

    ins = {name: network.add_input(name, trt.float32, (b, t, hd)) for name in ("q", "k", "v")}
    bias_in = network.add_input("mask_bias", trt.float32, (b, t))
    qh, kh, vh = (heads_first(ins[n]) for n in ("q", "k", "v"))
    add = lambda a, c: network.add_elementwise(a, c, trt.ElementWiseOperation.SUM).get_output(0)  # noqa: E731
    mm = trt.MatrixOperation
    ac = network.add_matrix_multiply(add(qh, _const(network, u.reshape(1, heads, 1, dk))), mm.NONE, kh, mm.TRANSPOSE)
    bd = network.add_matrix_multiply(add(qh, _const(network, w.reshape(1, heads, 1, dk))), mm.NONE,
                                     _const(network, p.reshape(1, heads, t, dk)), mm.TRANSPOSE)
    scores = network.add_elementwise(add(ac.get_output(0), bd.get_output(0)),
                                     _const(network, np.full((1, 1, 1, 1), 1 / math.sqrt(dk))),
                                     trt.ElementWiseOperation.PROD).get_output(0)
    shuffle = network.add_shuffle(bias_in)
    shuffle.reshape_dims = (b, 1, 1, t)
    softmax = network.add_softmax(add(scores, shuffle.get_output(0)))
    softmax.axes = 1 << 3
    ctx = network.add_matrix_multiply(softmax.get_output(0), mm.NONE, vh, mm.NONE).get_output(0)
    merge = network.add_shuffle(ctx)
    merge.first_transpose = (0, 2, 1, 3)
    merge.reshape_dims = (b, t, hd)
    merge.get_output(0).name = "out"
    network.mark_output(merge.get_output(0))
    native = evaluate(network, {"q": q, "k": k, "v": v, "mask_bias": mask_bias})["out"]

    plugin = create_plugin(names.ATTENTION_PLUGIN_NAME, attn_fields(heads))
    fn = lookup_plugin_reference(names.ATTENTION_PLUGIN_NAME, names.PLUGIN_VERSION, names.PLUGIN_NAMESPACE)
    (out,) = fn([q, k, v, p, u, w, lengths], plugin_fields(plugin))
    assert out.dtype == np.float32 and out.shape == (b, t, hd)
    np.testing.assert_allclose(out, native, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out, reference.rel_pos_attention_ref(q, k, v, p, u, w, lengths, heads), rtol=1e-6, atol=1e-6)
