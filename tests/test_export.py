"""tools/export_wenet.py: the ONNX interface, the cases and the seeded weights.

References are independent of the exporter: the interface of ../shared/wenet.md, NumPy float64
recomputations (top-k, lengths, best_index) and the model's own statistics."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from weights.default_model import ensure_model, sources_hash

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
BATCHES, FRAMES = (1, 4, 16), (16, 64, 256)

F32, I32, I64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
ENCODER_IO = {
    "inputs": [("speech", F32, ["B", "T", 80]), ("speech_lengths", I32, ["B"])],
    "outputs": [("encoder_out", F32, ["B", "T_OUT", "d"]), ("encoder_out_lens", I32, ["B"]),
                ("ctc_log_probs", F32, ["B", "T_OUT", "V"]), ("beam_log_probs", F32, ["B", "T_OUT", 10]),
                ("beam_log_probs_idx", I64, ["B", "T_OUT", 10])],
}
DECODER_IO = {
    "inputs": [("encoder_out", F32, ["B", "T", "d"]), ("encoder_out_lens", I32, ["B"]),
               ("hyps_pad_sos_eos", I64, ["B", 10, "T2"]), ("hyps_lens_sos", I32, ["B", 10]),
               ("ctc_score", F32, ["B", 10])],
    "outputs": [("decoder_out", F32, None), ("best_index", I64, ["B"])],
}


def model_config(paths) -> dict:
    return json.loads((paths.dir / "model_config.json").read_text())


def io_signature(values):
    sig = []
    for v in values:
        tt = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in tt.shape.dim]
        sig.append((v.name, tt.elem_type, dims))
    return sig


@pytest.mark.parametrize("name", ["tiny", "aishell"])
def test_onnx_interface(name, request):
    paths = request.getfixturevalue(f"{name}_model")
    cfg = model_config(paths)
    d, vocab = cfg["encoder"]["output_size"], cfg["vocab_size"]
    subst = {"d": d, "V": vocab}
    for path, io in ((paths.encoder_onnx, ENCODER_IO), (paths.decoder_onnx, DECODER_IO)):
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13]
        assert model.ir_version == 7
        for kind in ("inputs", "outputs"):
            got = io_signature(model.graph.input if kind == "inputs" else model.graph.output)
            want = [(n, t, None if dims is None else [subst.get(x, x) for x in dims]) for n, t, dims in io[kind]]
            assert [(n, t) for n, t, _ in got] == [(n, t) for n, t, _ in want], path
            for (n, _, gd), (_, _, wd) in zip(got, want):
                if wd is not None:
                    assert gd == wd, f"{path}: {n} dims {gd} != {wd}"
    decoder_out = io_signature(onnx.load(str(paths.decoder_onnx)).graph.output)[0]
    assert decoder_out[2][0] == "B" and decoder_out[2][2] == "T2"


@pytest.mark.parametrize("name", ["tiny", "aishell"])
def test_graph_is_shaped_like_wenets_export(name, request):
    """What the 2022 parser tripped on and what extraction relies on: bool masks filled by Where
    with -inf, decomposed LayerNorm, BN folded away, anonymous transposed MatMul weights."""
    paths = request.getfixturevalue(f"{name}_model")
    cfg = model_config(paths)
    enc = onnx.load(str(paths.encoder_onnx)).graph
    ops = {n.op_type for n in enc.node}
    assert {"Not", "Where", "Sqrt", "Pow", "ReduceMean", "Conv", "Split", "Sigmoid", "TopK", "LogSoftmax"} <= ops
    assert not ops & {"LayerNormalization", "BatchNormalization", "Gemm"}
    constants = [numpy_helper.to_array(a.t) for n in enc.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    assert any(c.size == 1 and np.isneginf(c).all() for c in constants), "no -inf mask fill constant"
    # CMVN: the first two nodes, Sub(speech, mean) then Mul(istd)
    assert (enc.node[0].op_type, enc.node[1].op_type) in {("Sub", "Mul")} or any(
        n.op_type == "Sub" and "speech" in n.input and "encoder.global_cmvn.mean" in n.input for n in enc.node)
    inits = {t.name: t for t in enc.initializer}
    matmul_weights = [t for t in enc.initializer if t.name.startswith("onnx::MatMul")]
    d, ffn = cfg["encoder"]["output_size"], cfg["encoder"]["linear_units"]
    # per block: q k v out pos (d x d), 2 FFNs ([d, ffn], [ffn, d]); plus embed.out and ctc_lo
    assert len(matmul_weights) == cfg["encoder"]["num_blocks"] * 9 + 2
    assert sum(list(t.dims) == [d, ffn] for t in matmul_weights) == 2 * cfg["encoder"]["num_blocks"]
    assert "encoder.encoders.0.self_attn.linear_q.bias" in inits
    assert not any("depthwise_conv" in n for n in inits), "BN should be folded into an anonymous conv"
    dec = onnx.load(str(paths.decoder_onnx)).graph
    ctc_mul = [n for n in dec.node if n.op_type == "Mul" and "ctc_score" in n.input]
    assert len(ctc_mul) == 1


def wenet_subsampled_lengths(lengths: np.ndarray, frames: int) -> np.ndarray:
    """NumPy version of WeNet's mask subsampling: mask[:, :-2:2][:, :-2:2].sum()."""
    mask = np.arange(frames)[None, :] < lengths[:, None]
    return mask[:, :-2:2][:, :-2:2].sum(axis=1)


def log_softmax64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("name", ["tiny", "aishell"])
def test_cases_are_complete_and_consistent(name, request):
    paths = request.getfixturevalue(f"{name}_model")
    cfg = model_config(paths)
    sos, vocab, beam, d = cfg["sos"], cfg["vocab_size"], cfg["beam_size"], cfg["encoder"]["output_size"]
    cases = np.load(paths.cases)
    keys = set(cases.files)
    enc_names = [n for n, _, _ in ENCODER_IO["inputs"] + ENCODER_IO["outputs"]]
    dec_names = [n for n, _, _ in DECODER_IO["inputs"] + DECODER_IO["outputs"]]
    expected = {f"encoder.b{b}.t{t}.{n}" for b in BATCHES for t in FRAMES for n in enc_names}
    expected |= {f"decoder.b{b}.t{t}.{n}" for b in BATCHES for t in FRAMES for n in dec_names}
    assert keys == expected
    for b in BATCHES:
        for t in FRAMES:
            e = lambda n: cases[f"encoder.b{b}.t{t}.{n}"]  # noqa: E731
            speech, lengths = e("speech"), e("speech_lengths")
            assert speech.shape == (b, t, 80) and speech.dtype == np.float32
            assert lengths.dtype == np.int32 and (lengths == t).any() and (lengths >= 7).all() and (lengths <= t).all()
            assert 5.0 < speech.mean() < 16.0 and 1.5 < speech.std() < 5.0, "features should look like log-mel fbank"
            t_out = ((t - 1) // 2 - 1) // 2
            assert e("encoder_out").shape == (b, t_out, d)
            np.testing.assert_array_equal(e("encoder_out_lens"), wenet_subsampled_lengths(lengths, t))
            np.testing.assert_array_equal(e("encoder_out_lens"), np.minimum(-(-lengths // 4), t_out))
            ctc = e("ctc_log_probs").astype(np.float64)
            assert ctc.shape == (b, t_out, vocab)
            np.testing.assert_allclose(np.log(np.exp(ctc).sum(-1)), 0.0, atol=1e-5)
            top = -np.sort(-ctc, axis=-1)[..., :beam]
            np.testing.assert_allclose(e("beam_log_probs"), top, atol=1e-6)
            np.testing.assert_array_equal(np.take_along_axis(ctc, e("beam_log_probs_idx"), -1), e("beam_log_probs"))

            k = lambda n: cases[f"decoder.b{b}.t{t}.{n}"]  # noqa: E731
            hyps, hyp_lens, ctc_score = k("hyps_pad_sos_eos"), k("hyps_lens_sos"), k("ctc_score")
            assert k("encoder_out").shape == (b, t, d) and (k("encoder_out_lens") <= t).all()
            assert (k("encoder_out_lens") == t).any() and (k("encoder_out_lens") >= 1).all()
            assert hyps.shape == (b, beam, 64) and hyps.dtype == np.int64 and hyp_lens.dtype == np.int32
            assert (ctc_score < 0).all() and ctc_score.dtype == np.float32
            assert (hyp_lens == 63).any(axis=1).all(), "each batch row has a full-length hypothesis"
            pos = np.arange(64)
            assert (hyps[:, :, 0] == sos).all()
            assert (np.take_along_axis(hyps, hyp_lens[..., None].astype(np.int64), -1) == sos).all(), "eos after the tokens"
            tokens = (pos >= 1) & (pos < hyp_lens[..., None])
            assert ((hyps >= 1) & (hyps < vocab - 1))[tokens].all()
            assert (hyps[pos > hyp_lens[..., None]] == -1).all()
            if "decoder_out" in cfg["decoder"]["outputs"]:
                check_best_index(k("decoder_out"), hyps, hyp_lens, ctc_score, cfg["ctc_weight"], k("best_index"))


def check_best_index(decoder_out, hyps, hyp_lens, ctc_score, ctc_weight, best_index):
    """best_index recomputed in float64 from decoder_out, as ../shared/wenet.md defines it."""
    b, beam, t2, vocab = decoder_out.shape
    assert t2 == hyps.shape[2] - 1
    np.testing.assert_allclose(np.log(np.exp(decoder_out.astype(np.float64)).sum(-1)), 0.0, atol=1e-5)
    mask = np.arange(t2)[None, None, :] < hyp_lens[..., None]
    target = hyps[:, :, 1:] * mask
    score = np.take_along_axis(decoder_out.astype(np.float64), target[..., None], -1)[..., 0]
    total = (score * mask).sum(-1) + ctc_weight * ctc_score.astype(np.float64)
    np.testing.assert_array_equal(best_index, total.argmax(-1))


def test_seeded_weights_cannot_hide_folding_or_ordering_bugs(tmp_path):
    """LayerNorm/BN affine away from 1/0, non-trivial BN statistics, fbank-like CMVN, non-zero
    pos_bias, and activations of order 1 in every block."""
    import torch

    from tools.wenet_model import ConformerEncoderLayer, DecoderLayer, build_models, tiny_config

    cfg = tiny_config()
    encoder, decoder = build_models(cfg, seed=3)
    state = {**encoder.state_dict(), **decoder.state_dict()}
    norms = [v for n, v in state.items() if "norm" in n and n.endswith(".weight")]
    assert norms and all((v - 1).abs().mean() > 0.1 and v.min() > 0.5 for v in norms)
    assert all(state[n].abs().mean() > 0.05 for n in state if "norm" in n and n.endswith(".bias"))
    bn_mean = [v for n, v in state.items() if n.endswith("running_mean")]
    bn_var = [v for n, v in state.items() if n.endswith("running_var")]
    assert bn_mean and all(v.abs().mean() > 0.05 for v in bn_mean) and all((v - 1).abs().mean() > 0.1 for v in bn_var)
    mean, istd = state["encoder.global_cmvn.mean"], state["encoder.global_cmvn.istd"]
    assert 8 < mean.mean() < 15 and mean.std() > 1 and (1 / istd).min() > 1.5
    assert all(v.abs().mean() > 0.1 for n, v in state.items() if "pos_bias" in n)

    from tools.export_wenet import decoder_inputs, fbank_like_inputs

    rng = np.random.default_rng(0)
    speech, lengths = fbank_like_inputs(cfg, 2, 120, rng)
    sizes = []
    hooks = [m.register_forward_hook(lambda mod, i, o: sizes.append(float(o.abs().mean())))
             for m in [*encoder.modules(), *decoder.modules()]
             if isinstance(m, (ConformerEncoderLayer, DecoderLayer)) or type(m).__name__ in
             ("RelPositionMultiHeadedAttention", "MultiHeadedAttention", "PositionwiseFeedForward", "ConvolutionModule")]
    with torch.no_grad():
        enc_out, enc_lens = encoder(torch.from_numpy(speech), torch.from_numpy(lengths))[:2]
        feeds = decoder_inputs(cfg, enc_out.numpy(), enc_lens.numpy(), rng)
        decoder(*[torch.from_numpy(feeds[n]) for n, _, _ in DECODER_IO["inputs"]])
    for h in hooks:
        h.remove()
    assert len(sizes) == 2 * 5 + 2 * 4  # encoder blocks: layer, attn, 2 FFN, conv; decoder: layer, 2 attn, FFN
    assert all(0.05 < s < 20 for s in sizes), sizes


def test_export_cli_bad_config_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"encoder": {"output_size": 100, "attention_heads": 3}}')
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "tools/export_wenet.py", "--config", str(bad), "--out", str(out)],
                       cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "not divisible by attention_heads" in r.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_config_json_from_extraction_is_a_valid_export_config(aishell_model, tiny_model):
    """--config accepts a whole config.json (derived fields are checked, export-mode ones ignored)."""
    from tools.wenet_model import aishell_config, load_config, tiny_config

    assert load_config(str(aishell_model.weights_dir / "config.json")) == aishell_config()
    assert load_config(str(tiny_model.weights_dir / "config.json")) == tiny_config()


@pytest.mark.parametrize("override, message", [
    ({"encoder": {"num_blocks": 0}}, "encoder.num_blocks = 0 is not a positive int"),
    ({"encoder": {"global_cmvn": 1}}, "encoder.global_cmvn = 1 is not a boolean"),
    ({"encoder": {"macaron": False}}, "encoder.macaron = False conflicts with the reference model"),
    ({"sos": 3}, "sos = 3 conflicts"),
    ({"encoder": {"cnn_module_kernel": 8}}, "odd cnn_module_kernel"),
    ({"colour": "red"}, "unknown key 'colour'"),
])
def test_bad_config_values(override, message):
    from tools.wenet_model import aishell_config, merge_config

    with pytest.raises(ValueError, match=re.escape(message)):
        merge_config(aishell_config(), override)


def test_export_is_deterministic(tiny_model, tmp_path):
    """Same config and seed, same bytes: a cache entry can be rebuilt anywhere and compared by hash."""
    from tools.export_wenet import export

    export("tiny", tiny_model.seed, tmp_path / "again", cases=False)
    for name in ("encoder.onnx", "decoder.onnx"):
        assert (tmp_path / "again" / name).read_bytes() == (tiny_model.dir / name).read_bytes(), name


def test_export_refuses_non_empty_out(tmp_path):
    from tools.export_wenet import export

    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        export("tiny", 0, tmp_path, cases=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_ensure_model_caches_atomically(tmp_path, monkeypatch, capsys):
    """Two concurrent first calls build the entry once; the second call reuses it at once."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("WENET_TRT_CACHE", str(tmp_path))
    with ThreadPoolExecutor(2) as pool:
        first, other = pool.map(lambda _: ensure_model("tiny", seed=5, decoder="best_index"), range(2))
    assert first == other
    assert capsys.readouterr().err.count("exporting tiny (seed 5)...") == 1
    assert first.dir.parent == tmp_path and sources_hash() in first.dir.name
    entries = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert entries == [first.dir.name], "no temporary folders left behind"
    for p in (first.encoder_onnx, first.decoder_onnx, first.cases, first.weights_dir / "config.json"):
        assert p.is_file()
    assert json.loads((first.weights_dir / "config.json").read_text())["decoder"]["outputs"] == ["best_index"]
    start = time.monotonic()
    again = ensure_model("tiny", seed=5, decoder="best_index")
    assert again == first and time.monotonic() - start < 2.0
    assert "exporting" not in capsys.readouterr().err
    with pytest.raises(ValueError, match="name must be one of"):
        ensure_model("huge")


def test_weights_package_does_not_import_torch():
    code = ("import sys, weights.default_model, weights.loader, weights.extract; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0
