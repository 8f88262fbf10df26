"""The plugins' CPU references are drop-in replacements at every site where --plugins puts them.

A network with plugin layers cannot be built here (TensorRT-RTX has no add_plugin_v3), so this is
what can be shown: evaluate the native-layer netdef network on hackathon cases, take the tensors
flowing into each Add&Norm and each rel-pos attention, feed them to the plugin references (the
functions the evaluator runs for a plugin layer) and compare with what the native layers computed.
"""
from __future__ import annotations

import numpy as np
import pytest

from netdef.build import build_networks
from netdef.evaluator import evaluate
from plugins.cpu_reference import layernorm_plugin_reference, rel_pos_attention_plugin_reference
from plugins.names import ATTENTION_FIELD_HEADS, LAYERNORM_FIELD_EPS, LAYERNORM_FIELD_HAS_RESIDUAL
from weights.loader import load_weights

CASES = [(4, 64), (16, 16)]


@pytest.fixture(scope="module")
def evaluated(tiny_model):
    weights = load_weights(tiny_model.weights_dir)
    definitions = build_networks(weights, False)
    cases = np.load(tiny_model.cases)
    runs = []
    for batch, frames in CASES:
        for name, d in definitions.items():
            net = d.network
            names = [net.get_input(i).name for i in range(net.num_inputs)]
            inputs = {n: cases[f"{name}.b{batch}.t{frames}.{n}"] for n in names}
            runs.append((name, net, evaluate(net, inputs, return_all=True)))
    return weights, runs


def _layers(net):
    return {net.get_layer(i).name: net.get_layer(i) for i in range(net.num_layers)}


def test_layernorm_plugin_at_every_add_norm(evaluated):
    weights, runs = evaluated
    eps = weights.config["encoder"]["layer_norm_eps"]
    checked = 0
    for name, net, values in runs:
        tensors = weights.encoder if name == "encoder" else weights.decoder
        for layer_name, layer in _layers(net).items():
            if not layer_name.endswith(".layer_norm") or f"{layer_name[:-len('.layer_norm')]}.sum" not in _layers(net):
                continue
            scope = layer_name[: -len(".layer_norm")]
            add = _layers(net)[f"{scope}.sum"]
            residual, delta = (values[add.get_input(i).name] for i in range(2))
            fields = {LAYERNORM_FIELD_EPS: np.float32(eps), LAYERNORM_FIELD_HAS_RESIDUAL: np.int32(1)}
            total, normed = layernorm_plugin_reference([delta, residual, tensors[f"{scope}.weight"], tensors[f"{scope}.bias"]], fields)
            np.testing.assert_allclose(total, values[add.get_output(0).name], rtol=0, atol=1e-5)
            np.testing.assert_allclose(normed, values[layer.get_output(0).name], rtol=0, atol=2e-5)
            checked += 1
    # tiny: 2 encoder blocks x 4 Add&Norm sites + 2 decoder layers x 2, for each case
    assert checked == len(CASES) * (2 * 4 + 2 * 2)


def test_rel_pos_attention_plugin_at_every_encoder_block(evaluated):
    weights, runs = evaluated
    cfg = weights.config["encoder"]
    heads, d_model = cfg["attention_heads"], cfg["output_size"]
    checked = 0
    for name, net, values in runs:
        if name != "encoder":
            continue
        layers = _layers(net)
        lengths = values["encoder_out_lens"]
        batch = lengths.shape[0]
        for i in range(cfg["num_blocks"]):
            prefix = f"encoder.encoders.{i}.self_attn"
            y = values[layers[f"{prefix}.matmul"].get_input(0).name].astype(np.float64)  # the qkv projection's input
            frames = y.shape[0] // batch
            w = {k: weights.encoder[f"{prefix}.{k}"].astype(np.float64) for k in
                 ("linear_q.weight", "linear_q.bias", "linear_k.weight", "linear_k.bias", "linear_v.weight", "linear_v.bias",
                  "linear_pos.weight", "pos_bias_u", "pos_bias_v")}
            q, k, v = ((y @ w[f"linear_{n}.weight"].T + w[f"linear_{n}.bias"]).reshape(batch, frames, d_model) for n in "qkv")
            pe = weights.encoder["encoder.embed.pos_enc.pe"].reshape(-1, d_model)[:frames].astype(np.float64)
            p = (pe @ w["linear_pos.weight"].T).reshape(frames, heads, -1).transpose(1, 0, 2)
            (out,) = rel_pos_attention_plugin_reference(
                [q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), p.astype(np.float32),
                 w["pos_bias_u"].astype(np.float32), w["pos_bias_v"].astype(np.float32), lengths],
                {ATTENTION_FIELD_HEADS: np.int32(heads)})
            native = values[layers[f"{prefix}.transpose_reshape"].get_output(0).name]
            np.testing.assert_allclose(out.reshape(-1, d_model), native, rtol=0, atol=2e-5)
            checked += 1
    assert checked == len(CASES) * cfg["num_blocks"]
