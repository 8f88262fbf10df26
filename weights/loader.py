"""Reads WDIR/{encoder,decoder}.safetensors and config.json back, checked against each other.

    w = load_weights(wdir)
    w.config["encoder"]["num_blocks"]
    w.get("encoder.encoders.3.self_attn.linear_q.weight")   # np.ndarray, PyTorch layout [out, in]

Every name, shape and dtype is checked against the layout that config.json implies
(docs/weights.md); any mismatch raises WeightsError with one line naming the file and tensor.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netdef.files import sha256_file  # noqa: F401 - extract_weights imports it from here

CONFIG_FORMAT = "wenet-trt-weights/1"
CONFIG_NAME = "config.json"
REPORT_NAME = "report.json"
FILES = {"encoder": "encoder.safetensors", "decoder": "decoder.safetensors"}


class WeightsError(KeyError, ValueError):
    """A weights folder that does not match its config.json (or is missing, or unreadable)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _linear(prefix: str, n_out: int, n_in: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    shapes = {f"{prefix}.weight": (n_out, n_in)}
    if bias:
        shapes[f"{prefix}.bias"] = (n_out,)
    return shapes


def _norm(prefix: str, d: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (d,), f"{prefix}.bias": (d,)}


def encoder_layout(config: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in encoder.safetensors, for this config (docs/weights.md)."""
    enc, vocab = config["encoder"], config["vocab_size"]
    d, ffn, h, k = enc["output_size"], enc["linear_units"], enc["attention_heads"], enc["cnn_module_kernel"]
    shapes: dict[str, tuple[int, ...]] = {}
    if enc["global_cmvn"]:
        shapes["encoder.global_cmvn.mean"] = (enc["input_dim"],)
        shapes["encoder.global_cmvn.istd"] = (enc["input_dim"],)
    shapes["encoder.embed.conv.0.weight"] = (d, 1, 3, 3)
    shapes["encoder.embed.conv.0.bias"] = (d,)
    shapes["encoder.embed.conv.2.weight"] = (d, d, 3, 3)
    shapes["encoder.embed.conv.2.bias"] = (d,)
    shapes.update(_linear("encoder.embed.out.0", d, d * enc["subsampled_feature_dim"]))
    shapes["encoder.embed.pos_enc.pe"] = (enc["pos_enc_max_len"], d)
    for i in range(enc["num_blocks"]):
        p = f"encoder.encoders.{i}"
        for lin in ("linear_q", "linear_k", "linear_v", "linear_out"):
            shapes.update(_linear(f"{p}.self_attn.{lin}", d, d))
        shapes.update(_linear(f"{p}.self_attn.linear_pos", d, d, bias=False))
        shapes[f"{p}.self_attn.pos_bias_u"] = (h, d // h)
        shapes[f"{p}.self_attn.pos_bias_v"] = (h, d // h)
        ffns = ("feed_forward", "feed_forward_macaron") if enc["macaron"] else ("feed_forward",)
        for ff in ffns:
            shapes.update(_linear(f"{p}.{ff}.w_1", ffn, d))
            shapes.update(_linear(f"{p}.{ff}.w_2", d, ffn))
        c = f"{p}.conv_module"
        shapes[f"{c}.pointwise_conv1.weight"] = (2 * d, d, 1)
        shapes[f"{c}.pointwise_conv1.bias"] = (2 * d,)
        shapes[f"{c}.depthwise_conv.weight"] = (d, 1, k)
        shapes[f"{c}.depthwise_conv.bias"] = (d,)
        if enc["batch_norm"] == "separate":
            for stat in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{c}.norm.{stat}"] = (d,)
        shapes[f"{c}.pointwise_conv2.weight"] = (d, d, 1)
        shapes[f"{c}.pointwise_conv2.bias"] = (d,)
        norms = ("norm_ff_macaron", "norm_mha", "norm_conv", "norm_ff", "norm_final")
        for norm in norms if enc["macaron"] else norms[1:]:
            shapes.update(_norm(f"{p}.{norm}", d))
    shapes.update(_norm("encoder.after_norm", d))
    shapes.update(_linear("ctc.ctc_lo", vocab, d))
    return shapes


def decoder_layout(config: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in decoder.safetensors, for this config (docs/weights.md)."""
    dec, vocab = config["decoder"], config["vocab_size"]
    d, ffn = dec["output_size"], dec["linear_units"]
    shapes: dict[str, tuple[int, ...]] = {
        "decoder.embed.0.weight": (vocab, d),
        "decoder.embed.1.pe": (dec["pos_enc_max_len"], d),
    }
    for i in range(dec["num_blocks"]):
        p = f"decoder.decoders.{i}"
        for attn in ("self_attn", "src_attn"):
            for lin in ("linear_q", "linear_k", "linear_v", "linear_out"):
                shapes.update(_linear(f"{p}.{attn}.{lin}", d, d))
        shapes.update(_linear(f"{p}.feed_forward.w_1", ffn, d))
        shapes.update(_linear(f"{p}.feed_forward.w_2", d, ffn))
        for norm in ("norm1", "norm2", "norm3"):
            shapes.update(_norm(f"{p}.{norm}", d))
    shapes.update(_norm("decoder.after_norm", d))
    shapes.update(_linear("decoder.output_layer", vocab, d))
    return shapes


LAYOUTS = {"encoder": encoder_layout, "decoder": decoder_layout}


@dataclass
class ModelWeights:
    dir: Path
    config: dict
    encoder: dict[str, np.ndarray]
    decoder: dict[str, np.ndarray]
    sha256: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        """The tensor `name` (a WeNet state_dict name); WeightsError names the file it should be in."""
        part = "decoder" if name.startswith("decoder.") else "encoder"
        try:
            return getattr(self, part)[name]
        except KeyError:
            raise WeightsError(f"{self.dir / FILES[part]}: no tensor {name!r}") from None


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file():
        raise WeightsError(f"{path}: missing (run tools/extract_weights.py)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0]})") from None


def check_tensors(path: Path, tensors: dict[str, np.ndarray], layout: dict[str, tuple[int, ...]]) -> None:
    """Names, shapes and dtypes of `tensors` against `layout`; one line naming the first problem."""
    missing = [n for n in layout if n not in tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(f"{path}: missing tensor {missing[0]!r}{more} required by config.json")
    extra = [n for n in tensors if n not in layout]
    if extra:
        raise WeightsError(f"{path}: unexpected tensor {extra[0]!r} not in the layout config.json implies")
    for name, shape in layout.items():
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise WeightsError(f"{path}: tensor {name!r} has shape {list(t.shape)}, config.json implies {list(shape)}")
        if t.dtype != np.float32:
            raise WeightsError(f"{path}: tensor {name!r} has dtype {t.dtype}, expected float32")


def load_config(wdir: Path) -> dict:
    path = Path(wdir) / CONFIG_NAME
    if not path.is_file():
        raise WeightsError(f"{path}: missing (run tools/extract_weights.py)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
        raise WeightsError(f"{path}: 'format' is not {CONFIG_FORMAT!r}")
    return config


def load_weights(wdir: str | Path) -> ModelWeights:
    wdir = Path(wdir)
    config = load_config(wdir)
    parts = {}
    try:
        for part, fname in FILES.items():
            tensors = _read_safetensors(wdir / fname)
            check_tensors(wdir / fname, tensors, LAYOUTS[part](config))
            parts[part] = tensors
    except KeyError as err:  # a config.json without a field the layout needs
        if isinstance(err, WeightsError):
            raise
        raise WeightsError(f"{wdir / CONFIG_NAME}: missing field {err}") from None
    sha = {name: sha256_file(wdir / name) for name in (*FILES.values(), CONFIG_NAME)}
    return ModelWeights(dir=wdir, config=config, encoder=parts["encoder"], decoder=parts["decoder"], sha256=sha)


def main(argv=None) -> int:
    """python -m weights.loader WDIR: check a weights folder; exit 1 with one line if it is bad."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Check WDIR's safetensors against its config.json.")
    parser.add_argument("wdir")
    args = parser.parse_args(argv)
    try:
        w = load_weights(args.wdir)
    except WeightsError as err:
        print(f"weights: error: {err}", file=sys.stderr)
        return 1
    print(f"{w.dir}: {len(w.encoder)} encoder + {len(w.decoder)} decoder tensors match config.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
