"""netdef.runtime: everything decided before an engine runs, on real plans and manifests built here.

The engines are the tiny model's parser-built plans (TensorRT-RTX builds them on the CPU in seconds).
Output shapes for buffer sizing are checked against what ONNX Runtime computes on the same ONNX files
at the profile's largest T and hyp length, not against the runtime's own shape rules.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from netdef.backend import BACKEND_NAME, VERSION
from netdef.engine import MANIFEST_NAME, source_entry
from netdef.parser_baseline import build_parser_engines
from netdef.profiles import ProfileSpec
from netdef.runtime import (
    INTERFACE,
    EngineRunner,
    EngineSpec,
    InputError,
    ManifestError,
    RuntimeUnavailable,
    StaleEngineError,
    buffer_sizes,
    check_manifest,
    convert_outputs,
    gpu_runtime_status,
    load_manifest,
    max_output_shapes,
    validate_inputs,
)

PROFILE = ProfileSpec()


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model):
    """Parser engines of the tiny model, built from private copies of its ONNX files."""
    root = tmp_path_factory.mktemp("runtime")
    onnx_dir = root / "onnx"
    onnx_dir.mkdir()
    for name in ("encoder", "decoder"):
        shutil.copy(getattr(tiny_model, f"{name}_onnx"), onnx_dir / f"{name}.onnx")
    engine_dir = root / "engines"
    build_parser_engines(onnx_dir, engine_dir, fp16=False, profile=PROFILE, quiet=True)
    return onnx_dir, engine_dir


@pytest.fixture
def engine_copy(built, tmp_path):
    """A private copy of the engines and their ONNX sources, with the manifest pointing at the copy."""
    onnx_dir, engine_dir = built
    shutil.copytree(onnx_dir, tmp_path / "onnx")
    shutil.copytree(engine_dir, tmp_path / "engines")
    manifest_path = tmp_path / "engines" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["sources"] = {name: source_entry(tmp_path / "onnx" / name) for name in manifest["sources"]}
    manifest_path.write_text(json.dumps(manifest))
    return tmp_path / "onnx", tmp_path / "engines"


def specs(built):
    manifest = load_manifest(built[1])
    return EngineSpec.from_manifest(manifest, "encoder"), EngineSpec.from_manifest(manifest, "decoder")


def encoder_inputs(batch=2, frames=64, lengths=None):
    rng = np.random.default_rng(0)
    return {
        "speech": rng.standard_normal((batch, frames, 80), dtype=np.float32),
        "speech_lengths": np.array(lengths if lengths is not None else [frames] * batch, dtype=np.int32),
    }


def decoder_inputs(batch=2, frames=16, hyp_len=64):
    rng = np.random.default_rng(1)
    return {
        "encoder_out": rng.standard_normal((batch, frames, 128), dtype=np.float32),
        "encoder_out_lens": np.full(batch, frames, dtype=np.int32),
        "hyps_pad_sos_eos": rng.integers(0, 300, (batch, 10, hyp_len), dtype=np.int64),
        "hyps_lens_sos": np.full((batch, 10), 5, dtype=np.int32),
        "ctc_score": rng.standard_normal((batch, 10), dtype=np.float32),
    }


# ------------------------------------------------------------------------------------------- manifest


def test_fresh_engines_pass_the_manifest_check(built):
    manifest = check_manifest(built[1])
    assert manifest["kind"] == "parser"
    assert (manifest["backend"], manifest["backend_version"]) == (BACKEND_NAME, VERSION)


def test_changed_onnx_makes_the_engine_stale(engine_copy):
    onnx_dir, engine_dir = engine_copy
    with open(onnx_dir / "decoder.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(StaleEngineError, match=r"decoder\.onnx .* changed since the build"):
        check_manifest(engine_dir)


def test_other_tensorrt_version_makes_the_engine_stale(built):
    with pytest.raises(StaleEngineError, match=rf"built by {BACKEND_NAME} {VERSION}, this process runs tensorrt 10\.13\.0"):
        check_manifest(built[1], backend="tensorrt", version="10.13.0")


def test_changed_or_missing_plan_is_detected(engine_copy):
    _, engine_dir = engine_copy
    plan = engine_dir / "encoder.plan"
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0xFF
    plan.write_bytes(bytes(data))
    with pytest.raises(StaleEngineError, match=r"encoder: plan .* changed since the build"):
        check_manifest(engine_dir)
    plan.unlink()
    with pytest.raises(StaleEngineError, match=r"encoder: plan .* is missing"):
        check_manifest(engine_dir)


def test_netdef_engine_is_stale_when_weights_or_config_change(built, tmp_path):
    """A netdef manifest lists the weights and config.json as its sources; editing either is caught."""
    manifest = load_manifest(built[1])
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "encoder.safetensors").write_bytes(b"weights")
    (wdir / "config.json").write_text('{"encoder": {"layer_norm_eps": 1e-5}}')
    engine_dir = tmp_path / "engines"
    shutil.copytree(built[1], engine_dir)
    sources = {name: source_entry(wdir / name) for name in ("encoder.safetensors", "config.json")}
    manifest_path = engine_dir / MANIFEST_NAME
    manifest.update(kind="netdef", sources=sources)
    manifest_path.write_text(json.dumps(manifest))
    check_manifest(engine_dir)  # current
    (wdir / "config.json").write_text('{"encoder": {"layer_norm_eps": 1e-12}}')
    with pytest.raises(StaleEngineError, match=r"stale netdef engines: source config\.json .* changed since the build"):
        check_manifest(engine_dir)
    (wdir / "encoder.safetensors").unlink()
    with pytest.raises(StaleEngineError, match=r"source encoder\.safetensors .* is gone"):
        check_manifest(engine_dir)
    check_manifest(engine_dir, check_sources=False)  # the caller may choose not to check sources


def test_missing_or_malformed_manifest(tmp_path):
    with pytest.raises(ManifestError, match=r"no manifest; build the engines"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match=r"not valid JSON"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ManifestError, match=r"format 'something-else'"):
        load_manifest(tmp_path)


def test_manifest_sources_are_the_files_sha256(built):
    onnx_dir, engine_dir = built
    manifest = load_manifest(engine_dir)
    for name in ("encoder.onnx", "decoder.onnx"):
        assert manifest["sources"][name]["sha256"] == hashlib.sha256((onnx_dir / name).read_bytes()).hexdigest()
    with pytest.raises(ManifestError, match=r"no 'joiner' engine|expected one of"):
        EngineSpec.from_manifest(manifest, "joiner")


def test_netdef_engines_describe_their_io(tiny_model, tmp_path):
    """The runner reads netdef manifests as it reads parser ones: every interface tensor with its dtype."""
    from netdef.build import build_engines

    manifest = load_manifest(build_engines(tiny_model.weights_dir, tmp_path, fp16=True, profile=PROFILE, quiet=True).parent)
    cases = np.load(tiny_model.cases)
    for network in ("encoder", "decoder"):
        spec = EngineSpec.from_manifest(manifest, network)
        assert set(spec.outputs) <= set(INTERFACE[network]["outputs"]) and spec.outputs
        validate_inputs(spec, {name: cases[f"{network}.b4.t64.{name}"] for name in spec.inputs})


def test_manifest_without_io_description_is_refused(built):
    manifest = load_manifest(built[1])
    manifest["engines"]["encoder"]["outputs"] = ["encoder_out"]
    with pytest.raises(ManifestError, match=r"encoder engine: manifest field 'outputs' should map each tensor"):
        EngineSpec.from_manifest(manifest, "encoder")


# ------------------------------------------------------------------------------------------- validation


def test_valid_inputs_pass_unchanged(built):
    enc, dec = specs(built)
    for spec, inputs in ((enc, encoder_inputs()), (dec, decoder_inputs())):
        prepared = validate_inputs(spec, inputs)
        assert set(prepared) == set(inputs)
        for name, array in inputs.items():
            assert prepared[name].dtype == array.dtype and np.array_equal(prepared[name], array)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x: x.pop("speech_lengths"), r"missing inputs \['speech_lengths'\]"),
        (lambda x: x.update(extra=np.zeros(1, np.float32)), r"unexpected inputs \['extra'\]"),
        (lambda x: x.update(speech=x["speech"].astype(np.float64)), r"input 'speech': dtype float64, expected float32"),
        (lambda x: x.update(speech_lengths=x["speech_lengths"].astype(np.int64)), r"input 'speech_lengths': dtype int64, expected int32"),
        (lambda x: x.update(speech=x["speech"][0]), r"input 'speech': rank 2 .* expected rank 3"),
        (lambda x: x.update(speech=np.zeros((2, 8, 80), np.float32)), r"input 'speech': shape \(2, 8, 80\) outside the engine's profile \(min \(1, 16, 80\), max \(64, 1024, 80\)\)"),
        (lambda x: x.update(speech=np.zeros((2, 1025, 80), np.float32)), r"shape \(2, 1025, 80\) outside"),
        (lambda x: x.update(speech=np.zeros((2, 64, 40), np.float32)), r"shape \(2, 64, 40\) outside"),
        (lambda x: x.update(speech_lengths=np.array([64, 0], np.int32)), r"'speech_lengths': lengths must be in 1\.\.64 .* got 0\.\.64"),
        (lambda x: x.update(speech_lengths=np.array([65, 3], np.int32)), r"lengths must be in 1\.\.64 .* got 3\.\.65"),
        (lambda x: x.update(speech_lengths=np.array([64, 64, 64], np.int32)), r"'speech_lengths': batch 3, other inputs have batch 2"),
        (lambda x: x.update(speech=list(x["speech"])), r"'speech': expected a NumPy array, got list"),
    ],
)
def test_encoder_input_errors(built, change, message):
    enc, _ = specs(built)
    inputs = encoder_inputs()
    change(inputs)
    with pytest.raises(InputError, match=message):
        validate_inputs(enc, inputs)


def test_batch_above_profile_is_refused(built):
    enc, _ = specs(built)
    with pytest.raises(InputError, match=r"shape \(65, 16, 80\) outside"):
        validate_inputs(enc, encoder_inputs(batch=65, frames=16))


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("hyps_lens_sos", 64, r"'hyps_lens_sos': lengths must be in 1\.\.63"),
        ("hyps_lens_sos", 0, r"'hyps_lens_sos': lengths must be in 1\.\.63"),
        ("encoder_out_lens", 17, r"'encoder_out_lens': lengths must be in 1\.\.16"),
    ],
)
def test_decoder_length_errors(built, name, value, message):
    _, dec = specs(built)
    inputs = decoder_inputs()
    inputs[name] = np.full_like(inputs[name], value)
    with pytest.raises(InputError, match=message):
        validate_inputs(dec, inputs)


def test_decoder_hyp_length_must_match_profile(built):
    _, dec = specs(built)
    with pytest.raises(InputError, match=r"'hyps_pad_sos_eos': shape \(2, 10, 32\) outside .*\(min \(1, 10, 64\)"):
        validate_inputs(dec, decoder_inputs(hyp_len=32))


# ------------------------------------------------------------------------------------------- dtypes


def int32_engine_spec(built) -> EngineSpec:
    """The decoder as a netdef engine may bind it: token ids and best_index as int32, decoder_out FP16."""
    manifest = load_manifest(built[1])
    entry = manifest["engines"]["decoder"]
    entry["inputs"]["hyps_pad_sos_eos"]["dtype"] = "int32"
    entry["outputs"]["best_index"]["dtype"] = "int32"
    entry["outputs"]["decoder_out"]["dtype"] = "half"
    return EngineSpec.from_manifest(manifest, "decoder")


def test_int64_inputs_convert_to_an_int32_engine(built):
    spec = int32_engine_spec(built)
    inputs = decoder_inputs()
    inputs["hyps_pad_sos_eos"][0, 0, :3] = [299, -1, 0]  # -1 padding must survive the cast
    prepared = validate_inputs(spec, inputs)
    assert prepared["hyps_pad_sos_eos"].dtype == np.int32
    assert np.array_equal(prepared["hyps_pad_sos_eos"].astype(np.int64), inputs["hyps_pad_sos_eos"])
    assert prepared["hyps_pad_sos_eos"].flags.c_contiguous


def test_int64_values_beyond_int32_are_refused(built):
    spec = int32_engine_spec(built)
    inputs = decoder_inputs()
    inputs["hyps_pad_sos_eos"][1, 2, 3] = 2**31
    with pytest.raises(InputError, match=r"'hyps_pad_sos_eos': values .*2147483648 do not fit the engine's int32"):
        validate_inputs(spec, inputs)


def test_outputs_come_back_in_interface_dtypes(built):
    spec = int32_engine_spec(built)
    raw = {
        "best_index": np.array([3, 9], dtype=np.int32),
        "decoder_out": np.array([[-0.5, -1.25]], dtype=np.float16),
    }
    out = convert_outputs(spec, raw)
    assert out["best_index"].dtype == np.int64 and out["best_index"].tolist() == [3, 9]
    assert out["decoder_out"].dtype == np.float32 and out["decoder_out"].tolist() == [[-0.5, -1.25]]


# ------------------------------------------------------------------------------------------- buffers


def ort_output_shapes(path: Path, inputs: dict) -> dict[str, tuple]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, (r.shape for r in session.run(names, inputs))))


def test_buffers_are_sized_for_the_profile_maximum(built, tiny_model):
    """At batch 1 and the profile's largest T / hyp length, ONNX Runtime gives the output shapes; the
    runner's maximum shapes must be those with the batch at the profile's maximum."""
    enc, dec = specs(built)
    b_max = PROFILE.batch[2]
    t_max = PROFILE.frames[2]
    enc_ort = ort_output_shapes(tiny_model.encoder_onnx, encoder_inputs(batch=1, frames=t_max))
    dec_ort = ort_output_shapes(tiny_model.decoder_onnx, decoder_inputs(batch=1, hyp_len=PROFILE.hyp_len))
    for spec, ort_shapes in ((enc, enc_ort), (dec, dec_ort)):
        expected = {name: (b_max,) + shape[1:] for name, shape in ort_shapes.items()}
        assert max_output_shapes(spec) == expected
        sizes = buffer_sizes(spec)
        for name, shape in expected.items():
            assert sizes[name] == int(np.prod(shape)) * spec.outputs[name].engine_dtype.itemsize
    assert buffer_sizes(enc)["speech"] == b_max * t_max * 80 * 4
    assert buffer_sizes(dec)["hyps_pad_sos_eos"] == b_max * 10 * PROFILE.hyp_len * 8


def test_runner_matches_the_machine(built, tiny_model):
    """Where no GPU TensorRT runtime exists the runner refuses up front, saying why; where one does, it
    runs the tiny encoder and agrees with ONNX Runtime (this branch has not run on this project's machines)."""
    usable, why = gpu_runtime_status()
    if not usable:
        with pytest.raises(RuntimeUnavailable, match=r"cannot run .*encoder\.plan: " + why.split(" (")[0]):
            EngineRunner(built[1], "encoder")
        return
    inputs = encoder_inputs(batch=2, frames=64, lengths=[64, 40])
    import onnxruntime as ort

    session = ort.InferenceSession(str(tiny_model.encoder_onnx), providers=["CPUExecutionProvider"])
    reference = dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))
    with EngineRunner(built[1], "encoder") as runner:
        for cuda_graph in (False, True):
            out = runner.run(inputs, cuda_graph=cuda_graph)
            assert out["encoder_out"].dtype == np.float32 and out["beam_log_probs_idx"].dtype == np.int64
            np.testing.assert_allclose(out["encoder_out"], reference["encoder_out"], atol=1e-3)
            assert np.array_equal(out["encoder_out_lens"], reference["encoder_out_lens"])
