"""tools/extract_weights.py and weights/: round trips, inferred configs, bad inputs.

The references: the ONNX initializers themselves (read with onnx.numpy_helper), the seeded PyTorch
model's own state_dict (BN folding recomputed in NumPy float64), ONNX Runtime's outputs, and the
exporter's config."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tools.export_wenet import DECODER_INPUTS, ENCODER_INPUTS, decoder_inputs, export, fbank_like_inputs, ort_session
from tools.extract_weights import extract_to
from weights.extract import ExtractError, extract
from weights.loader import WeightsError, load_weights

REPO_ROOT = Path(__file__).resolve().parents[1]
# docs/weights.md: these are stored transposed relative to the ONNX MatMul operand.
TRANSPOSED = re.compile(r"(linear_(q|k|v|out|pos)|w_1|w_2|embed\.out\.0|ctc_lo|output_layer)\.weight$")

# Two more hyperparameter sets: every inferred field differs from aishell's and tiny's.
OTHER_A = {
    "encoder": {"output_size": 96, "attention_heads": 3, "linear_units": 192, "num_blocks": 3,
                "cnn_module_kernel": 7, "layer_norm_eps": 1e-12, "global_cmvn": False},
    "decoder": {"attention_heads": 4, "linear_units": 160, "num_blocks": 1, "layer_norm_eps": 1e-12},
    "vocab_size": 123, "ctc_weight": 0.5, "beam_size": 4,
}
OTHER_B = {
    "encoder": {"input_dim": 40, "output_size": 64, "attention_heads": 1, "linear_units": 128, "num_blocks": 1,
                "cnn_module_kernel": 31, "pos_enc_max_len": 1000},
    "decoder": {"attention_heads": 2, "linear_units": 96, "num_blocks": 3, "pos_enc_max_len": 600},
    "vocab_size": 57, "ctc_weight": 0.1,
}


def run_cli(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True)


def assert_one_line_error(result, *needles):
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Exports (no cases) of other configs and export modes, each with its extraction."""
    root = tmp_path_factory.mktemp("variants")
    from tools.wenet_model import merge_config, aishell_config

    specs = {
        "other_a": (merge_config(aishell_config(), OTHER_A), dict(decoder="best_index", fold_bn=False)),
        "other_b": (merge_config(aishell_config(), OTHER_B), dict()),
        "tiny_pytorch_init": ("tiny", dict(init="pytorch")),
    }
    out = {}
    for name, (spec, kw) in specs.items():
        cfg = export(spec, 1, root / name, cases=False, **kw)
        extract_to(root / name / "encoder.onnx", root / name / "decoder.onnx", root / name / "weights")
        out[name] = (root / name, cfg)
    return out


# ----------------------------------------------------------------------------------------------
# Round trip


def check_tensors_equal_initializers(onnx_dir: Path, wdir: Path):
    """Each safetensors tensor equals the ONNX initializer report.json says it came from, after the
    documented transpose/squeeze; every initializer is mapped or listed as unused with a reason."""
    w = load_weights(wdir)
    report = json.loads((wdir / "report.json").read_text())
    for part in ("encoder", "decoder"):
        graph = onnx.load(str(onnx_dir / f"{part}.onnx")).graph
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        entries = report[part]["initializers"]
        assert set(entries) == set(inits)
        seen = set()
        for init, entry in entries.items():
            if "unused" in entry:
                assert entry["unused"], init
                assert inits[init].dtype.kind != "f" or inits[init].size <= 1, f"float tensor {init} left unused"
                continue
            for target in entry["mapped"]:
                name = target["name"]
                want = inits[init]
                if TRANSPOSED.search(name):
                    want = want.T
                if name.endswith(".pe"):
                    want = want.reshape(want.shape[-2:])
                np.testing.assert_array_equal(getattr(w, part)[name], want, err_msg=name)
                seen.add(name)
        assert seen == set(getattr(w, part)), "every stored tensor comes from an initializer"


@pytest.mark.parametrize("name", ["tiny", "aishell"])
def test_tensors_equal_their_initializers(name, request):
    paths = request.getfixturevalue(f"{name}_model")
    check_tensors_equal_initializers(paths.dir, paths.weights_dir)


def run_torch(encoder, decoder, feeds: dict[str, np.ndarray], network: str):
    import torch

    module, names = (encoder, ENCODER_INPUTS) if network == "encoder" else (decoder, DECODER_INPUTS)
    with torch.no_grad():
        outs = module(*[torch.from_numpy(feeds[n]) for n in names])
    return [o.numpy() for o in (outs if isinstance(outs, tuple) else (outs,))]


def assert_outputs_match(got, want, label):
    for g, (name, w) in zip(got, want):
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"{label} {name}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{label} {name}")


# aishell's batch-16 cases take ~40 s of CPU in PyTorch and exercise no code that tiny's batch-16
# cases and aishell's batch-1/4 cases do not; CI time matters more.
@pytest.mark.parametrize("name, batches", [("tiny", (1, 4, 16)), ("aishell", (1, 4))])
def test_torch_model_from_safetensors_reproduces_cases(name, batches, request):
    """A PyTorch model built from WDIR alone (config.json + safetensors) reproduces ONNX Runtime's
    outputs in cases.npz to 1e-5: the names and layouts mean what they say."""
    from tools.wenet_model import models_from_weights

    paths = request.getfixturevalue(f"{name}_model")
    encoder, decoder = models_from_weights(paths.weights_dir)
    cases = np.load(paths.cases)
    keys = sorted({k.rsplit(".", 1)[0] for k in cases.files})
    assert len(keys) == 18
    for key in [k for k in keys if int(k.split(".")[1][1:]) in batches]:
        network = key.split(".")[0]
        ins = ENCODER_INPUTS if network == "encoder" else DECODER_INPUTS
        outs = [k.rsplit(".", 1)[1] for k in cases.files if k.startswith(key + ".") and k.rsplit(".", 1)[1] not in ins]
        order = ["encoder_out", "encoder_out_lens", "ctc_log_probs", "beam_log_probs", "beam_log_probs_idx",
                 "decoder_out", "best_index"]
        outs.sort(key=order.index)
        got = run_torch(encoder, decoder, {n: cases[f"{key}.{n}"] for n in ins}, network)
        assert_outputs_match(got, [(n, cases[f"{key}.{n}"]) for n in outs], key)


@pytest.mark.parametrize("variant", ["other_a", "other_b", "tiny_pytorch_init"])
def test_variant_round_trip(variant, variants):
    """Other hyperparameters, BN as its own node, WeNet's best_index-only decoder, de-duplicated
    initializers: the safetensors still rebuild a model that matches ONNX Runtime."""
    from tools.wenet_model import models_from_weights

    onnx_dir, cfg = variants[variant]
    check_tensors_equal_initializers(onnx_dir, onnx_dir / "weights")
    encoder, decoder = models_from_weights(onnx_dir / "weights")
    rng = np.random.default_rng(1)
    speech, lengths = fbank_like_inputs(cfg, 3, 4 * 20 + 3, rng)
    enc_feeds = {"speech": speech, "speech_lengths": lengths}
    enc_sess, dec_sess = ort_session(onnx_dir / "encoder.onnx"), ort_session(onnx_dir / "decoder.onnx")
    enc_names = [o.name for o in enc_sess.get_outputs()]
    want = enc_sess.run(enc_names, enc_feeds)
    assert_outputs_match(run_torch(encoder, decoder, enc_feeds, "encoder"), list(zip(enc_names, want)), variant)
    dec_feeds = decoder_inputs(cfg, want[0], want[1], rng)
    dec_names = [o.name for o in dec_sess.get_outputs()]
    assert_outputs_match(run_torch(encoder, decoder, dec_feeds, "decoder"),
                         list(zip(dec_names, dec_sess.run(dec_names, dec_feeds))), variant)


def test_separate_batch_norm_maps_norm_tensors(variants):
    """With BN as its own node the extractor maps conv_module.norm.*; every tensor then equals the
    seeded PyTorch model's state_dict exactly (an independent check of every name)."""
    from tools.wenet_model import build_models

    onnx_dir, cfg = variants["other_a"]
    graph = onnx.load(str(onnx_dir / "encoder.onnx")).graph
    assert sum(n.op_type == "BatchNormalization" for n in graph.node) == cfg["encoder"]["num_blocks"]
    w = load_weights(onnx_dir / "weights")
    assert w.config["encoder"]["batch_norm"] == "separate" and w.config["encoder"]["batch_norm_eps"] == 1e-05
    encoder, decoder = build_models(cfg, seed=1)
    state = {k: v.numpy() for k, v in {**encoder.state_dict(), **decoder.state_dict()}.items()
             if not k.endswith("num_batches_tracked")}
    stored = {**w.encoder, **w.decoder}
    assert set(stored) == set(state)
    for name, value in state.items():
        want = value[0] if name.endswith(".pe") else value
        np.testing.assert_array_equal(stored[name], want, err_msg=name)


def test_folded_batch_norm_equals_numpy_folding(aishell_model):
    """The exporter folded BN into the depthwise conv: the stored weights equal BN folded in float64
    from the seeded model's own parameters."""
    from tools.wenet_model import build_models

    cfg = json.loads((aishell_model.dir / "model_config.json").read_text())
    encoder, _ = build_models(cfg, seed=aishell_model.seed)
    state = {k: v.double().numpy() for k, v in encoder.state_dict().items()}
    w = load_weights(aishell_model.weights_dir)
    assert w.config["encoder"]["batch_norm"] == "folded" and not any(".norm.running" in n for n in w.encoder)
    for i in range(cfg["encoder"]["num_blocks"]):
        c = f"encoder.encoders.{i}.conv_module"
        scale = state[f"{c}.norm.weight"] / np.sqrt(state[f"{c}.norm.running_var"] + 1e-5)
        weight = state[f"{c}.depthwise_conv.weight"] * scale[:, None, None]
        bias = (state[f"{c}.depthwise_conv.bias"] - state[f"{c}.norm.running_mean"]) * scale + state[f"{c}.norm.bias"]
        np.testing.assert_allclose(w.get(f"{c}.depthwise_conv.weight"), weight, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(w.get(f"{c}.depthwise_conv.bias"), bias, rtol=1e-6, atol=1e-6)
        pos = f"encoder.encoders.{i}.self_attn.linear_pos.weight"
        np.testing.assert_array_equal(w.get(pos), state[pos].astype(np.float32))


def test_identity_deduplicated_initializers_are_followed(variants):
    onnx_dir, _ = variants["tiny_pytorch_init"]
    graph = onnx.load(str(onnx_dir / "encoder.onnx")).graph
    identities = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    assert "encoder.after_norm.weight" in identities, "the export should de-duplicate the untrained LayerNorms"
    w = load_weights(onnx_dir / "weights")
    np.testing.assert_array_equal(w.get("encoder.after_norm.weight"), np.ones(w.config["encoder"]["output_size"], np.float32))
    report = json.loads((onnx_dir / "weights" / "report.json").read_text())["encoder"]["initializers"]
    shared = report[identities["encoder.after_norm.weight"]]["mapped"]
    assert {"encoder.after_norm.weight", identities["encoder.after_norm.weight"]} <= {e["name"] for e in shared}


# ----------------------------------------------------------------------------------------------
# Inferred config


@pytest.mark.parametrize("name", ["tiny", "aishell", "other_a", "other_b", "tiny_pytorch_init"])
def test_inferred_config_equals_exporters(name, request):
    if name in ("tiny", "aishell"):
        paths = request.getfixturevalue(f"{name}_model")
        onnx_dir, wdir = paths.dir, paths.weights_dir
    else:
        onnx_dir, _ = request.getfixturevalue("variants")[name]
        wdir = onnx_dir / "weights"
    exported = json.loads((onnx_dir / "model_config.json").read_text())
    inferred = json.loads((wdir / "config.json").read_text())
    sources = inferred.pop("sources")
    assert inferred == exported
    assert set(sources) == {"encoder", "decoder"} and all(len(s["sha256"]) == 64 for s in sources.values())


def test_other_configs_really_differ():
    from tools.wenet_model import aishell_config, merge_config, tiny_config

    configs = [aishell_config(), tiny_config(), merge_config(aishell_config(), OTHER_A), merge_config(aishell_config(), OTHER_B)]
    for field in ("output_size", "attention_heads", "num_blocks", "cnn_module_kernel"):
        assert len({c["encoder"][field] for c in configs}) >= 3, field
    assert len({c["vocab_size"] for c in configs}) == 4


# ----------------------------------------------------------------------------------------------
# Anonymous pe table, extra initializers, report


def rename_initializer(model: onnx.ModelProto, old: str, new: str) -> None:
    for t in model.graph.initializer:
        if t.name == old:
            t.name = new
    for node in model.graph.node:
        node.input[:] = [new if x == old else x for x in node.input]


def test_anonymous_pe_table_found_by_structure(tiny_model, tmp_path):
    """WeNet keeps pe as a plain attribute, so its export has an unnamed table: found via the Slice."""
    for part, table in (("encoder", "encoder.embed.pos_enc.pe"), ("decoder", "decoder.embed.1.pe")):
        model = onnx.load(str(getattr(tiny_model, f"{part}_onnx")))
        rename_initializer(model, table, "onnx::Slice_12345")
        onnx.save(model, str(tmp_path / f"{part}.onnx"))
    extract_to(tmp_path / "encoder.onnx", tmp_path / "decoder.onnx", tmp_path / "w")
    ref, got = load_weights(tiny_model.weights_dir), load_weights(tmp_path / "w")
    for name in ("encoder.embed.pos_enc.pe", "decoder.embed.1.pe"):
        np.testing.assert_array_equal(got.get(name), ref.get(name))


def test_independent_of_node_names_node_order_and_anonymous_names(tiny_model, tmp_path):
    """Shuffle the nodes, rename every node and every anonymous initializer: same tensors, same config."""
    rng = np.random.default_rng(7)
    for part in ("encoder", "decoder"):
        model = onnx.load(str(getattr(tiny_model, f"{part}_onnx")))
        nodes = list(model.graph.node)
        order = rng.permutation(len(nodes))
        del model.graph.node[:]
        model.graph.node.extend(nodes[i] for i in order)
        for i, node in enumerate(model.graph.node):
            node.name = f"n{rng.integers(1 << 30)}_{i}"
        for t in list(model.graph.initializer):
            if t.name.startswith("onnx::"):
                rename_initializer(model, t.name, f"anon_{rng.integers(1 << 30)}")
        onnx.save(model, str(tmp_path / f"{part}.onnx"))
    extract_to(tmp_path / "encoder.onnx", tmp_path / "decoder.onnx", tmp_path / "w")
    ref, got = load_weights(tiny_model.weights_dir), load_weights(tmp_path / "w")
    strip = lambda c: {k: v for k, v in c.items() if k != "sources"}  # noqa: E731
    assert strip(got.config) == strip(ref.config)
    for part in ("encoder", "decoder"):
        assert getattr(got, part).keys() == getattr(ref, part).keys()
        for name, value in getattr(ref, part).items():
            np.testing.assert_array_equal(getattr(got, part)[name], value, err_msg=name)


def test_report_lists_unused_constants_and_rejects_stray_weights(tiny_model, tmp_path):
    model = onnx.load(str(tiny_model.encoder_onnx))
    # an integer shape constant used by a Reshape: legitimately unused
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, -1, 2, 64], np.int64), "extra_shape"))
    model.graph.node.append(helper.make_node("Reshape", [reshape.input[0], "extra_shape"], ["extra_out"]))
    onnx.save(model, str(tmp_path / "encoder.onnx"))
    extract_to(tmp_path / "encoder.onnx", tiny_model.decoder_onnx, tmp_path / "w")
    entry = json.loads((tmp_path / "w" / "report.json").read_text())["encoder"]["initializers"]["extra_shape"]
    assert "integer" in entry["unused"] and "Reshape" in entry["unused"]

    model.graph.initializer.append(numpy_helper.from_array(np.ones((4, 4), np.float32), "mystery_weight"))
    model.graph.node.append(helper.make_node("MatMul", ["extra_out", "mystery_weight"], ["mystery_out"]))
    onnx.save(model, str(tmp_path / "encoder2.onnx"))
    with pytest.raises(ExtractError, match="'mystery_weight'.*maps to no WeNet parameter"):
        extract(tmp_path / "encoder2.onnx", tiny_model.decoder_onnx)


# ----------------------------------------------------------------------------------------------
# Bad inputs: one line, non-zero exit, no partial output


def plain_mlp(path: Path, io_names=("x", "y")) -> None:
    x = helper.make_tensor_value_info(io_names[0], TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info(io_names[1], TensorProto.FLOAT, [1, 3])
    inits = [numpy_helper.from_array(np.ones((4, 3), np.float32), "fc.weight_t"),
             numpy_helper.from_array(np.zeros(3, np.float32), "fc.bias")]
    nodes = [helper.make_node("MatMul", [io_names[0], "fc.weight_t"], ["h"]),
             helper.make_node("Add", ["h", "fc.bias"], ["a"]),
             helper.make_node("Relu", ["a"], [io_names[1]])]
    graph = helper.make_graph(nodes, "mlp", [x], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def expect_cli_failure(tmp_path, enc, dec, *needles):
    out = tmp_path / "wdir"
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("tools/extract_weights.py", str(enc), str(dec), "--out", str(out))
    assert_one_line_error(result, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "no partial output"


def test_truncated_onnx(tiny_model, tmp_path):
    data = tiny_model.encoder_onnx.read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 3])
    expect_cli_failure(tmp_path, tmp_path / "truncated.onnx", tiny_model.decoder_onnx,
                       "truncated.onnx", "not a readable ONNX model")


def test_plain_mlp_is_not_a_wenet_encoder(tiny_model, tmp_path):
    plain_mlp(tmp_path / "mlp.onnx")
    expect_cli_failure(tmp_path, tmp_path / "mlp.onnx", tiny_model.decoder_onnx,
                       "mlp.onnx", "not a WeNet conformer encoder", "'speech'")


def test_mlp_with_wenet_io_names_says_what_is_missing(tiny_model, tmp_path):
    """The right input names are not enough: the message names the first missing structure."""
    model_path = tmp_path / "mlp_io.onnx"
    plain_mlp(model_path, ("speech", "encoder_out"))
    model = onnx.load(str(model_path))
    model.graph.input.append(helper.make_tensor_value_info("speech_lengths", TensorProto.INT32, [1]))
    model.graph.output.append(helper.make_tensor_value_info("encoder_out_lens", TensorProto.INT32, [1]))
    model.graph.node.append(helper.make_node("Identity", ["speech_lengths"], ["encoder_out_lens"]))
    onnx.save(model, str(model_path))
    expect_cli_failure(tmp_path, model_path, tiny_model.decoder_onnx, "mlp_io.onnx", "no tensor for encoder.")


def test_encoder_passed_as_decoder(tiny_model, tmp_path):
    expect_cli_failure(tmp_path, tiny_model.encoder_onnx, tiny_model.encoder_onnx,
                       "not a WeNet conformer decoder", "hyps_pad_sos_eos", "swapped")
    expect_cli_failure(tmp_path, tiny_model.decoder_onnx, tiny_model.decoder_onnx,
                       "not a WeNet conformer encoder", "swapped")


def test_failed_extraction_keeps_existing_output(tiny_model, tmp_path):
    shutil.copytree(tiny_model.weights_dir, tmp_path / "wdir")
    before = {p.name: p.read_bytes() for p in (tmp_path / "wdir").iterdir()}
    plain_mlp(tmp_path / "mlp.onnx")
    result = run_cli("tools/extract_weights.py", str(tmp_path / "mlp.onnx"), str(tiny_model.decoder_onnx),
                     "--out", str(tmp_path / "wdir"))
    assert result.returncode != 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "wdir").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx", "wdir"]


def rewrite_safetensors(path: Path, edit) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


@pytest.mark.parametrize("damage, needle", [
    (lambda t: t.pop("encoder.encoders.1.self_attn.linear_pos.weight"), "missing tensor 'encoder.encoders.1.self_attn.linear_pos.weight'"),
    (lambda t: t.update({"encoder.after_norm.bias": np.zeros(7, np.float32)}), "'encoder.after_norm.bias' has shape [7]"),
    (lambda t: t.update({"ctc.ctc_lo.bias": t["ctc.ctc_lo.bias"].astype(np.float16)}), "'ctc.ctc_lo.bias' has dtype float16"),
])
def test_damaged_safetensors(tiny_model, tmp_path, damage, needle):
    wdir = tmp_path / "wdir"
    shutil.copytree(tiny_model.weights_dir, wdir)
    rewrite_safetensors(wdir / "encoder.safetensors", damage)
    with pytest.raises(WeightsError, match=re.escape(needle)) as err:
        load_weights(wdir)
    assert "encoder.safetensors" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)
    assert_one_line_error(run_cli("-m", "weights.loader", str(wdir)), "encoder.safetensors", needle)


def test_loader_typed_access(tiny_model):
    w = load_weights(tiny_model.weights_dir)
    cfg = w.config
    assert w.get("decoder.embed.0.weight").shape == (cfg["vocab_size"], cfg["decoder"]["output_size"])
    assert set(w.sha256) == {"encoder.safetensors", "decoder.safetensors", "config.json"}
    with pytest.raises(KeyError) as err:
        w.get("decoder.decoders.9.norm1.weight")
    assert isinstance(err.value, WeightsError) and "decoder.safetensors" in str(err.value)
    assert "'decoder.decoders.9.norm1.weight'" in str(err.value)
    result = run_cli("-m", "weights.loader", str(tiny_model.weights_dir))
    assert result.returncode == 0 and "match config.json" in result.stdout


def test_truncated_safetensors_and_bad_config(tiny_model, tmp_path):
    wdir = tmp_path / "wdir"
    shutil.copytree(tiny_model.weights_dir, wdir)
    data = (wdir / "decoder.safetensors").read_bytes()
    (wdir / "decoder.safetensors").write_bytes(data[:1000])
    with pytest.raises(WeightsError, match="decoder.safetensors: not a readable safetensors file"):
        load_weights(wdir)
    (wdir / "config.json").write_text("{")
    with pytest.raises(WeightsError, match="config.json: not valid JSON"):
        load_weights(wdir)
