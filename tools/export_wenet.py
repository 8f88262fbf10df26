"""Export the reference WeNet conformer the way wenet/bin/export_onnx_gpu.py does, plus test cases.

    python tools/export_wenet.py --config {aishell,tiny,PATH.json} --seed N --out DIR
        [--decoder {hackathon,best_index}] [--no-fold-bn] [--init {seeded,pytorch}] [--no-cases]

writes DIR/encoder.onnx, DIR/decoder.onnx (TorchScript exporter, dynamo=False, opset 13, dynamic
B/T/T_OUT/T2), DIR/model_config.json (the hyperparameters, in config.json's schema, that extraction
must infer back) and DIR/cases.npz (hackathon-style inputs with ONNX Runtime's outputs).
Everything is written into a temporary folder and renamed into place at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netdef.files import atomic_dir  # noqa: E402

ENCODER_INPUTS = ["speech", "speech_lengths"]
ENCODER_OUTPUTS = ["encoder_out", "encoder_out_lens", "ctc_log_probs", "beam_log_probs", "beam_log_probs_idx"]
DECODER_INPUTS = ["encoder_out", "encoder_out_lens", "hyps_pad_sos_eos", "hyps_lens_sos", "ctc_score"]
DECODER_OUTPUTS = {"hackathon": ["decoder_out", "best_index"], "best_index": ["best_index"]}
CASE_BATCHES = (1, 4, 16)
CASE_FRAMES = (16, 64, 256)
HYP_LEN = 64  # sos + at most 62 tokens + eos, as the hackathon's decoder input
OPSET = 13


def subsampled_length(t: int) -> int:
    return ((t - 1) // 2 - 1) // 2


def export_config(spec: str | dict, decoder: str = "hackathon", fold_bn: bool = True) -> dict:
    """The model's hyperparameters plus what the export mode decides (BN folding, decoder outputs)."""
    from tools.wenet_model import load_config

    cfg = load_config(spec) if isinstance(spec, str) else json.loads(json.dumps(spec))
    if decoder not in DECODER_OUTPUTS:
        raise ValueError(f"--decoder: expected one of {sorted(DECODER_OUTPUTS)}, got {decoder!r}")
    cfg["encoder"]["batch_norm"] = "folded" if fold_bn else "separate"
    cfg["encoder"]["batch_norm_eps"] = None if fold_bn else 1e-05
    cfg["decoder"]["outputs"] = list(DECODER_OUTPUTS[decoder])
    return cfg


def _torch_export(module, args, path: Path, inputs, outputs, dynamic_axes, fold_bn: bool) -> None:
    import torch

    # The TorchScript exporter folds BatchNorm into the preceding Conv only in EVAL mode; PRESERVE on an
    # eval-mode module keeps a BatchNormalization node (inference form), as some WeNet exports have.
    training = torch.onnx.TrainingMode.EVAL if fold_bn else torch.onnx.TrainingMode.PRESERVE
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=OPSET, export_params=True,
            do_constant_folding=True, training=training, input_names=inputs, output_names=outputs,
            dynamic_axes=dynamic_axes, verbose=False)


def export_onnx(cfg: dict, seed: int, out: Path, init: str = "seeded") -> None:
    """Writes out/encoder.onnx and out/decoder.onnx for the model `cfg` with seeded weights."""
    import torch

    from tools.wenet_model import build_models

    fold_bn = cfg["encoder"]["batch_norm"] == "folded"
    encoder, decoder = build_models(cfg, seed, init=init, batch_norm=True)
    rng = np.random.default_rng(seed)
    speech, speech_lengths = fbank_like_inputs(cfg, 2, 67, rng)
    _torch_export(
        encoder, (torch.from_numpy(speech), torch.from_numpy(speech_lengths)), out / "encoder.onnx",
        ENCODER_INPUTS, ENCODER_OUTPUTS,
        {"speech": {0: "B", 1: "T"}, "speech_lengths": {0: "B"}, "encoder_out": {0: "B", 1: "T_OUT"},
         "encoder_out_lens": {0: "B"}, "ctc_log_probs": {0: "B", 1: "T_OUT"},
         "beam_log_probs": {0: "B", 1: "T_OUT"}, "beam_log_probs_idx": {0: "B", 1: "T_OUT"}},
        fold_bn)
    outputs = cfg["decoder"]["outputs"]
    d = cfg["encoder"]["output_size"]
    dec_inputs = decoder_inputs(cfg, rng.standard_normal((2, 16, d)).astype(np.float32),
                                np.array([16, 11], np.int32), rng)
    # Eager nn.Embedding rejects the -1 padding while tracing; the values do not shape the graph.
    dec_inputs["hyps_pad_sos_eos"] = np.maximum(dec_inputs["hyps_pad_sos_eos"], 0)
    axes = {"encoder_out": {0: "B", 1: "T"}, "encoder_out_lens": {0: "B"},
            "hyps_pad_sos_eos": {0: "B", 2: "T2"}, "hyps_lens_sos": {0: "B"}, "ctc_score": {0: "B"},
            "decoder_out": {0: "B", 2: "T2"}, "best_index": {0: "B"}}
    _torch_export(decoder, tuple(torch.from_numpy(dec_inputs[n]) for n in DECODER_INPUTS), out / "decoder.onnx",
                  DECODER_INPUTS, outputs, {k: v for k, v in axes.items() if k in DECODER_INPUTS + outputs}, fold_bn)


# ----------------------------------------------------------------------------------------------
# Cases


def fbank_like_inputs(cfg: dict, batch: int, frames: int, rng: np.random.Generator):
    """Features distributed like 80-dim log-mel fbank (per-bin mean ~9..14, std ~2..4, smooth over
    time) and random lengths in [7, frames] with at least one full-length row."""
    dim = cfg["encoder"]["input_dim"]
    bins = np.linspace(0.0, 1.0, dim)
    mean = 9.0 + 5.0 * np.sin(np.pi * bins ** 0.6)
    std = 2.0 + 2.0 * bins[::-1]
    noise = rng.standard_normal((batch, frames + 2, dim))
    smooth = (noise[:, :-2] + noise[:, 1:-1] + noise[:, 2:]) / np.sqrt(3.0)  # correlated frames
    speech = (mean + std * smooth).astype(np.float32)
    lengths = rng.integers(min(7, frames), frames + 1, size=batch).astype(np.int32)
    lengths[rng.integers(batch)] = frames
    return speech, lengths


def decoder_inputs(cfg: dict, encoder_out: np.ndarray, encoder_out_lens: np.ndarray, rng: np.random.Generator) -> dict:
    """Rescoring inputs as WeNet builds them: sos + tokens + eos then -1 padding, lengths = tokens + 1,
    negative CTC prefix scores. Token counts are random in [1, 62], at least one full per batch."""
    batch, beam, vocab, sos = encoder_out.shape[0], cfg["beam_size"], cfg["vocab_size"], cfg["sos"]
    max_tokens = HYP_LEN - 2
    n_tokens = rng.integers(1, max_tokens + 1, size=(batch, beam))
    n_tokens[:, 0] = max_tokens
    hyps = np.full((batch, beam, HYP_LEN), -1, np.int64)
    hyps[:, :, 0] = sos
    for b in range(batch):
        for k in range(beam):
            n = n_tokens[b, k]
            hyps[b, k, 1:n + 1] = rng.integers(1, vocab - 1, size=n)  # 0 is CTC blank, vocab-1 sos/eos
            hyps[b, k, n + 1] = sos  # eos == sos in WeNet
    return {
        "encoder_out": encoder_out.astype(np.float32),
        "encoder_out_lens": encoder_out_lens.astype(np.int32),
        "hyps_pad_sos_eos": hyps,
        "hyps_lens_sos": (n_tokens + 1).astype(np.int32),
        "ctc_score": (-rng.uniform(0.5, 30.0, size=(batch, beam))).astype(np.float32),
    }


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def make_cases(cfg: dict, onnx_dir: Path, seed: int) -> dict[str, np.ndarray]:
    """Inputs and ONNX Runtime outputs, keyed "{network}.b{B}.t{T}.{tensor}". The decoder's
    encoder_out is the encoder's real output on fbank-like features of 4T+3 frames (T' = T)."""
    rng = np.random.default_rng(seed + 7)
    encoder, decoder = ort_session(onnx_dir / "encoder.onnx"), ort_session(onnx_dir / "decoder.onnx")
    dec_outputs = [o.name for o in decoder.get_outputs()]
    cases: dict[str, np.ndarray] = {}
    for b in CASE_BATCHES:
        for t in CASE_FRAMES:
            speech, lengths = fbank_like_inputs(cfg, b, t, rng)
            enc_out = encoder.run(ENCODER_OUTPUTS, {"speech": speech, "speech_lengths": lengths})
            for name, value in zip(ENCODER_INPUTS + ENCODER_OUTPUTS, [speech, lengths, *enc_out]):
                cases[f"encoder.b{b}.t{t}.{name}"] = value
            frames = 4 * t + 3
            assert subsampled_length(frames) == t
            speech, lengths = fbank_like_inputs(cfg, b, frames, rng)
            encoder_out, encoder_out_lens = encoder.run(["encoder_out", "encoder_out_lens"],
                                                        {"speech": speech, "speech_lengths": lengths})
            feeds = decoder_inputs(cfg, encoder_out, encoder_out_lens, rng)
            dec_out = decoder.run(dec_outputs, feeds)
            for name, value in [*feeds.items(), *zip(dec_outputs, dec_out)]:
                cases[f"decoder.b{b}.t{t}.{name}"] = value
    return cases


# ----------------------------------------------------------------------------------------------


def export(spec: str | dict, seed: int, out: str | os.PathLike, *, decoder: str = "hackathon",
           fold_bn: bool = True, init: str = "seeded", cases: bool = True, log=None) -> dict:
    """Export into `out` (created; must not exist or be empty) atomically. Returns the config."""
    out = Path(out)
    cfg = export_config(spec, decoder, fold_bn)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out {out}: exists and is not empty")
    with atomic_dir(out) as tmp:
        if log:
            log("  onnx export")
        export_onnx(cfg, seed, tmp, init)
        (tmp / "model_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        if cases:
            if log:
                log("  cases (ONNX Runtime)")
            np.savez(tmp / "cases.npz", **make_cases(cfg, tmp, seed))
    return cfg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="aishell", help="aishell, tiny, or a JSON file of hyperparameters")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    parser.add_argument("--decoder", choices=sorted(DECODER_OUTPUTS), default="hackathon",
                        help="hackathon: decoder_out + best_index; best_index: WeNet's default export")
    parser.add_argument("--no-fold-bn", action="store_true", help="keep BatchNormalization nodes")
    parser.add_argument("--init", choices=["seeded", "pytorch"], default="seeded")
    parser.add_argument("--no-cases", action="store_true", help="skip cases.npz")
    args = parser.parse_args(argv)
    try:
        export(args.config, args.seed, args.out, decoder=args.decoder, fold_bn=not args.no_fold_bn,
               init=args.init, cases=not args.no_cases, log=lambda m: print(m, file=sys.stderr))
    except (ValueError, FileExistsError) as err:
        print(f"export_wenet: error: {err}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
