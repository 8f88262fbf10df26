"""netdef networks against ONNX Runtime on the hackathon cases, and real builds with the installed builder.

References are ONNX Runtime's outputs on the original ONNX files (cases.npz, written by the export
tool); the networks are evaluated on the CPU by netdef.evaluator, since no engine can run here.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from netdef.backend import trt
from netdef.build import build_engines, build_networks, main as build_main
from netdef.metrics import HACKATHON_CASES
from netdef.precision import PrecisionPolicy
from netdef.verify import verify_definitions
from weights.loader import load_weights

MODELS = ["tiny", "aishell"]


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    return request.getfixturevalue(f"{request.param}_model")


_reports: dict = {}


def verified(model, precision: str) -> dict:
    """verify_definitions on all 9 cases, computed once per model and precision."""
    key = (str(model.dir), precision)
    if key not in _reports:
        definitions = build_networks(load_weights(model.weights_dir), precision == "fp16")
        _reports[key] = verify_definitions(definitions, np.load(model.cases), progress=False)
    return _reports[key]


def rows(report, output):
    found = [r for r in report["cases"] if r["output"] == output]
    assert len(found) == len(HACKATHON_CASES), f"{output}: {len(found)} cases evaluated"
    return found


def test_fp32_matches_onnxruntime(model):
    report = verified(model, "fp32")
    assert max(r["a"] for r in rows(report, "encoder_out")) < 1e-4
    assert max(r["a"] for r in rows(report, "decoder_out")) < 1e-3
    assert max(r["a"] for r in rows(report, "encoder_out_lens")) == 0
    assert max(r["a"] for r in rows(report, "best_index")) == 0


def test_fp16_within_hackathon_thresholds(model):
    report = verified(model, "fp16")
    failed = [r for r in report["cases"] if not r["pass"]]
    assert not failed, failed
    # FP16 really is in use: encoder_out differs from the FP32 reference by more than FP32 rounding.
    assert max(r["a"] for r in rows(report, "encoder_out")) > 1e-4


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_builder_writes_plans_and_manifest(model, precision, tmp_path):
    manifest_path = build_engines(model.weights_dir, tmp_path, precision == "fp16", quiet=True)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["kind"] == "netdef" and manifest["precision"] == precision
    assert set(manifest["engines"]) == {"encoder", "decoder"}
    for name, entry in manifest["engines"].items():
        plan = tmp_path / entry["plan"]
        assert plan.stat().st_size == entry["plan_bytes"] > 0
        assert entry["layers"] > 0 and entry["build_s"] > 0
        assert hashlib.sha256(plan.read_bytes()).hexdigest() == entry["plan_sha256"]
    for f in ("config.json", "encoder.safetensors", "decoder.safetensors"):
        assert len(manifest["sources"][f]["sha256"]) == 64


def test_fp16_policy_types_layers(tiny_model):
    weights = load_weights(tiny_model.weights_dir)
    policy = PrecisionPolicy.fp16().with_overrides(fp32=["encoder.*.conv_module"])
    net = build_networks(weights, True, policy=policy, networks=("encoder",))["encoder"].network
    types = {}
    for i in range(net.num_layers):
        layer = net.get_layer(i)
        if layer.type == trt.LayerType.MATRIX_MULTIPLY:
            types[layer.name] = layer.get_output(0).dtype
    conv = [t for n, t in types.items() if ".conv_module." in n]
    ffn = [t for n, t in types.items() if ".feed_forward." in n]
    assert conv and all(t == trt.float32 for t in conv)
    assert ffn and all(t == trt.float16 for t in ffn)


def test_fp16_override_keeps_island_accurate(tiny_model):
    """Making everything FP32 through overrides gives FP32 accuracy: the policy really drives the types."""
    weights = load_weights(tiny_model.weights_dir)
    policy = PrecisionPolicy.fp16().with_overrides(fp32=["*"])
    report = verify_definitions(build_networks(weights, True, policy=policy, networks=("encoder",)), np.load(tiny_model.cases), progress=False)
    assert max(r["a"] for r in rows(report, "encoder_out")) < 1e-4


def test_fewer_layers_than_parser(model):
    from netdef.parser_baseline import parse_onnx

    definitions = build_networks(load_weights(model.weights_dir), False)
    for name, onnx_path in (("encoder", model.encoder_onnx), ("decoder", model.decoder_onnx)):
        builder, parsed, parser = parse_onnx(onnx_path, False)
        assert definitions[name].num_layers < parsed.num_layers / 2, (name, definitions[name].num_layers, parsed.num_layers)


def test_outputs_option_drops_ctc_head(tiny_model):
    weights = load_weights(tiny_model.weights_dir)
    net = build_networks(weights, False, outputs=["encoder_out", "encoder_out_lens"], networks=("encoder",))["encoder"].network
    names = {net.get_output(i).name for i in range(net.num_outputs)}
    assert names == {"encoder_out", "encoder_out_lens"}
    assert not any(net.get_layer(i).name.startswith("ctc.") for i in range(net.num_layers))


# ---- bad input: a clear one-line error, exit code 2, no plan written ---------------------------

def _cli_error(args, capsys, out_dir):
    code = build_main(args + ["--out", str(out_dir), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert not list(out_dir.glob("*.plan")) and not (out_dir / "manifest.json").exists()
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_unknown_output(tiny_model, tmp_path, capsys):
    (line,) = _cli_error(["--weights", str(tiny_model.weights_dir), "--outputs", "encoder_out,logits"], capsys, tmp_path)
    assert "unknown output 'logits'" in line


def test_inverted_profile_bounds(tiny_model, tmp_path, capsys):
    (line,) = _cli_error(["--weights", str(tiny_model.weights_dir), "--batch", "8,4,1"], capsys, tmp_path)
    assert "--batch" in line and "min <= opt <= max" in line


def test_frames_too_short_for_subsampling(tiny_model, tmp_path, capsys):
    (line,) = _cli_error(["--weights", str(tiny_model.weights_dir), "--frames", "5,64,128"], capsys, tmp_path)
    assert "too short" in line and "T'" in line


def test_missing_tensor(tiny_model, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    wdir = tmp_path / "w"
    wdir.mkdir()
    for f in ("config.json", "decoder.safetensors"):
        (wdir / f).write_bytes((tiny_model.weights_dir / f).read_bytes())
    tensors = load_file(tiny_model.weights_dir / "encoder.safetensors")
    del tensors["encoder.encoders.1.self_attn.linear_pos.weight"]
    save_file(tensors, wdir / "encoder.safetensors")
    (line,) = _cli_error(["--weights", str(wdir)], capsys, tmp_path / "out")
    assert "encoder.encoders.1.self_attn.linear_pos.weight" in line


def test_weights_of_another_config(tiny_model, aishell_model, tmp_path, capsys):
    wdir = tmp_path / "w"
    wdir.mkdir()
    (wdir / "config.json").write_bytes((aishell_model.weights_dir / "config.json").read_bytes())
    for f in ("encoder.safetensors", "decoder.safetensors"):
        (wdir / f).write_bytes((tiny_model.weights_dir / f).read_bytes())
    (line,) = _cli_error(["--weights", str(wdir)], capsys, tmp_path / "out")
    assert "encoder.safetensors" in line and "config.json" in line


def test_plugins_need_plugin_layers(tiny_model, tmp_path, capsys):
    """Without add_plugin_v3 (TensorRT-RTX) --plugins is refused; with full TensorRT the plan records them."""
    from netdef.backend import HAS_PLUGIN_V3

    args = ["--weights", str(tiny_model.weights_dir), "--plugins", "layernorm,attention"]
    if not HAS_PLUGIN_V3:
        (line,) = _cli_error(args, capsys, tmp_path)
        assert "plugin" in line and "full TensorRT" in line
    else:
        assert build_main(args + ["--out", str(tmp_path), "--quiet"]) == 0
        assert json.loads((tmp_path / "manifest.json").read_text())["plugins"] == ["layernorm", "attention"]


def test_wenet_default_decoder_export(tmp_path):
    """WeNet's default export (decoder outputs best_index only, ctc_weight baked in): the netdef decoder
    builds best_index and matches it; decoder_out stays available as an option."""
    from tools.export_wenet import export
    from tools.extract_weights import extract_to

    export("tiny", 3, tmp_path / "onnx", decoder="best_index")
    extract_to(tmp_path / "onnx" / "encoder.onnx", tmp_path / "onnx" / "decoder.onnx", tmp_path / "w")
    weights = load_weights(tmp_path / "w")
    definitions = build_networks(weights, False, networks=("decoder",))
    assert definitions["decoder"].outputs == ("best_index",)
    report = verify_definitions(definitions, np.load(tmp_path / "onnx" / "cases.npz"), progress=False)
    assert [r["a"] for r in rows(report, "best_index")] == [0.0] * len(HACKATHON_CASES)
    net = build_networks(weights, False, outputs=["decoder_out", "best_index"], networks=("decoder",))["decoder"].network
    assert {net.get_output(i).name for i in range(net.num_outputs)} == {"decoder_out", "best_index"}
