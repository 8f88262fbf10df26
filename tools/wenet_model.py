"""A faithful PyTorch reimplementation of WeNet's AISHELL-1 Conformer (encoder, CTC head, decoder).

Module and parameter names follow wenet/transformer/* exactly, so a state_dict uses the names in
docs/weights.md. Only inference paths are kept (no dropout, no chunking, no caches, no right-to-left
decoder). The export wrappers `Encoder` / `Decoder` follow wenet/bin/export_onnx_gpu.py, with the
hackathon's five decoder inputs (no r_hyps_pad_sos_eos).

The hyperparameters are one dict in the config.json schema of docs/weights.md (see `aishell_config`).
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
from torch import nn

IGNORE_ID = -1


def aishell_config() -> dict:
    """WeNet's AISHELL-1 `20210204_conformer_exp`, in the config.json schema (docs/weights.md)."""
    return {
        "format": "wenet-trt-weights/1",
        "encoder": {
            "input_dim": 80, "output_size": 256, "attention_heads": 4, "linear_units": 2048,
            "num_blocks": 12, "cnn_module_kernel": 15, "layer_norm_eps": 1e-05,
            "global_cmvn": True, "batch_norm": "folded", "batch_norm_eps": None,
            "subsampling": "conv2d4", "subsampled_feature_dim": 19, "pos_enc_max_len": 5000,
            "macaron": True, "activation": "swish",
        },
        "decoder": {
            "output_size": 256, "attention_heads": 4, "linear_units": 2048, "num_blocks": 6,
            "layer_norm_eps": 1e-05, "pos_enc_max_len": 5000, "outputs": ["decoder_out", "best_index"],
        },
        "vocab_size": 4233, "sos": 4232, "eos": 4232, "ctc_weight": 0.3, "beam_size": 10,
    }


def tiny_config() -> dict:
    """Same structure as aishell, small enough to export in seconds."""
    return merge_config(aishell_config(), {
        "encoder": {"output_size": 128, "attention_heads": 2, "linear_units": 256, "num_blocks": 2},
        "decoder": {"attention_heads": 2, "linear_units": 256, "num_blocks": 2},
        "vocab_size": 300,
    })


NAMED_CONFIGS = {"aishell": aishell_config, "tiny": tiny_config}

# Keys a user's JSON may set. The rest of config.json is derived (checked if given), fixed by this
# architecture (checked), or decided by the export mode (ignored: --no-fold-bn, --decoder).
_SETTABLE = {
    "encoder": {"input_dim": int, "output_size": int, "attention_heads": int, "linear_units": int,
                "num_blocks": int, "cnn_module_kernel": int, "layer_norm_eps": float, "global_cmvn": bool,
                "pos_enc_max_len": int},
    "decoder": {"attention_heads": int, "linear_units": int, "num_blocks": int, "layer_norm_eps": float,
                "pos_enc_max_len": int},
    "": {"vocab_size": int, "ctc_weight": float, "beam_size": int},
}
_EXPORT_MODE = {"encoder": {"batch_norm", "batch_norm_eps"}, "decoder": {"outputs"}, "": {"format", "sources"}}


def _check_value(where: str, value, kind: type) -> None:
    if kind is bool:
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or float(value).is_integer())
        ok = ok and (value >= 0 if where == "ctc_weight" else value > 0)
    if not ok:
        raise ValueError(f"config: {where} = {value!r} is not a {'boolean' if kind is bool else 'positive ' + kind.__name__}")


def merge_config(base: dict, override: dict) -> dict:
    """`base` with `override`'s settable keys replaced, derived fields recomputed and checked.

    `override` may be a whole config.json (e.g. one that extraction wrote): derived and fixed fields
    must then agree with what the settable ones imply."""
    cfg = copy.deepcopy(base)
    given: dict[str, dict] = {}
    for part in ("encoder", "decoder", ""):
        values = override.get(part, {}) if part else {k: v for k, v in override.items() if k not in ("encoder", "decoder")}
        if not isinstance(values, dict):
            raise ValueError(f"config: {part!r} must be a JSON object")
        target = cfg[part] if part else cfg
        for key, value in values.items():
            where = f"{part}.{key}" if part else key
            if key in _SETTABLE[part]:
                _check_value(where, value, _SETTABLE[part][key])
                target[key] = _SETTABLE[part][key](value)
            elif key in _EXPORT_MODE[part]:
                continue
            elif key in target:
                given[where] = value  # derived or fixed: checked below
            else:
                raise ValueError(f"config: unknown key {where!r}")
    enc, dec = cfg["encoder"], cfg["decoder"]
    enc["subsampled_feature_dim"] = ((enc["input_dim"] - 1) // 2 - 1) // 2
    dec["output_size"] = enc["output_size"]  # src_attn attends encoder_out directly
    cfg["sos"] = cfg["eos"] = cfg["vocab_size"] - 1  # WeNet's convention (wenet/utils/init_model.py)
    for where, value in given.items():
        part, _, key = where.rpartition(".")
        expected = (cfg[part] if part else cfg)[key]
        if value != expected:
            raise ValueError(f"config: {where} = {value!r} conflicts with the reference model ({expected!r})")
    for name, part in (("encoder", enc), ("decoder", dec)):
        if part["output_size"] % part["attention_heads"]:
            raise ValueError(f"config: {name} output_size {part['output_size']} is not divisible by attention_heads {part['attention_heads']}")
    if enc["subsampled_feature_dim"] < 1 or enc["cnn_module_kernel"] % 2 == 0 or cfg["beam_size"] > cfg["vocab_size"]:
        raise ValueError("config: needs input_dim >= 7, an odd cnn_module_kernel and beam_size <= vocab_size")
    return cfg


def load_config(spec: str) -> dict:
    """'aishell', 'tiny', or a JSON file of overrides on top of aishell (config.json schema)."""
    if spec in NAMED_CONFIGS:
        return NAMED_CONFIGS[spec]()
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--config: {spec!r} is neither 'aishell', 'tiny' nor an existing JSON file")
    try:
        override = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"--config {path}: not valid JSON ({err})") from None
    if not isinstance(override, dict):
        raise ValueError(f"--config {path}: expected a JSON object")
    return merge_config(aishell_config(), override)


# ----------------------------------------------------------------------------------------------
# wenet/utils/mask.py


def make_pad_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """True at padded positions: [B, max_len]."""
    batch_size = lengths.size(0)
    seq_range = torch.arange(0, max_len, dtype=torch.int64, device=lengths.device)
    seq_range_expand = seq_range.unsqueeze(0).expand(batch_size, max_len)
    seq_length_expand = lengths.unsqueeze(-1)
    return seq_range_expand >= seq_length_expand


def subsequent_mask(size: int, device: torch.device) -> torch.Tensor:
    """Causal mask [size, size]: True where key index <= query index."""
    arange = torch.arange(size, device=device)
    mask = arange.expand(size, size)
    arange = arange.unsqueeze(-1)
    return mask <= arange


# ----------------------------------------------------------------------------------------------
# wenet/transformer/cmvn.py, embedding.py, subsampling.py


class GlobalCMVN(nn.Module):
    def __init__(self, mean: torch.Tensor, istd: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("istd", istd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.istd


def sinusoid_table(max_len: int, d_model: int) -> torch.Tensor:
    pe = torch.zeros(max_len, d_model)
    position = torch.arange(0, max_len, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe.unsqueeze(0)


class PositionalEncoding(nn.Module):
    """x * sqrt(d_model) + pe[:, :T] (the decoder's absolute encoding)."""

    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        self.xscale = math.sqrt(d_model)
        # A buffer (WeNet keeps a plain attribute) so the ONNX initializer keeps a readable name;
        # the extractor finds the table by structure either way.
        self.register_buffer("pe", sinusoid_table(max_len, d_model))

    def forward(self, x: torch.Tensor, offset: int = 0):
        pos_emb = self.pe[:, offset:offset + x.size(1)]
        return x * self.xscale + pos_emb, pos_emb


class RelPositionalEncoding(PositionalEncoding):
    """x * sqrt(d_model); the table slice is returned for linear_pos, not added."""

    def forward(self, x: torch.Tensor, offset: int = 0):
        x = x * self.xscale
        pos_emb = self.pe[:, offset:offset + x.size(1)]
        return x, pos_emb


class Conv2dSubsampling4(nn.Module):
    def __init__(self, idim: int, odim: int, pos_enc: nn.Module):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, odim, 3, 2), nn.ReLU(), nn.Conv2d(odim, odim, 3, 2), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(odim * (((idim - 1) // 2 - 1) // 2), odim))
        self.pos_enc = pos_enc

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor):
        x = x.unsqueeze(1)  # (b, c=1, t, f)
        x = self.conv(x)
        b, c, t, f = x.size()
        x = self.out(x.transpose(1, 2).contiguous().view(b, t, c * f))
        x, pos_emb = self.pos_enc(x)
        return x, pos_emb, x_mask[:, :, :-2:2][:, :, :-2:2]


# ----------------------------------------------------------------------------------------------
# wenet/transformer/attention.py, positionwise_feed_forward.py, convolution.py


class MultiHeadedAttention(nn.Module):
    def __init__(self, n_head: int, n_feat: int):
        super().__init__()
        self.d_k = n_feat // n_head
        self.h = n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)

    def forward_qkv(self, query, key, value):
        n_batch = query.size(0)
        q = self.linear_q(query).view(n_batch, -1, self.h, self.d_k).transpose(1, 2)
        k = self.linear_k(key).view(n_batch, -1, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(value).view(n_batch, -1, self.h, self.d_k).transpose(1, 2)
        return q, k, v  # (batch, head, time, d_k)

    def forward_attention(self, value, scores, mask):
        """mask: (batch, 1 or time1, time2), True = keep. Masked scores are -inf before the
        softmax and 0 after it, as WeNet does (an all-masked row stays 0 rather than NaN)."""
        n_batch = value.size(0)
        mask = mask.unsqueeze(1).eq(0)  # (batch, 1, *, time2)
        mask = mask[:, :, :, :scores.size(-1)]
        scores = scores.masked_fill(mask, -float("inf"))
        attn = torch.softmax(scores, dim=-1).masked_fill(mask, 0.0)
        x = torch.matmul(attn, value)
        x = x.transpose(1, 2).contiguous().view(n_batch, -1, self.h * self.d_k)
        return self.linear_out(x)

    def forward(self, query, key, value, mask):
        q, k, v = self.forward_qkv(query, key, value)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k)
        return self.forward_attention(v, scores, mask)


class RelPositionMultiHeadedAttention(MultiHeadedAttention):
    """Transformer-XL style attention as in WeNet of this model's era: no rel_shift."""

    def __init__(self, n_head: int, n_feat: int):
        super().__init__(n_head, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(self.h, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.empty(self.h, self.d_k))

    def forward(self, query, key, value, mask, pos_emb):
        q, k, v = self.forward_qkv(query, key, value)
        q = q.transpose(1, 2)  # (batch, time1, head, d_k)
        n_batch_pos = pos_emb.size(0)
        p = self.linear_pos(pos_emb).view(n_batch_pos, -1, self.h, self.d_k).transpose(1, 2)
        q_with_bias_u = (q + self.pos_bias_u).transpose(1, 2)
        q_with_bias_v = (q + self.pos_bias_v).transpose(1, 2)
        matrix_ac = torch.matmul(q_with_bias_u, k.transpose(-2, -1))
        matrix_bd = torch.matmul(q_with_bias_v, p.transpose(-2, -1))
        scores = (matrix_ac + matrix_bd) / math.sqrt(self.d_k)
        return self.forward_attention(v, scores, mask)


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, idim: int, hidden_units: int, activation: nn.Module):
        super().__init__()
        self.w_1 = nn.Linear(idim, hidden_units)
        self.activation = activation
        self.w_2 = nn.Linear(hidden_units, idim)

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.activation(self.w_1(xs)))


class ConvolutionModule(nn.Module):
    """Pointwise conv -> GLU -> depthwise conv -> BatchNorm -> swish -> pointwise conv.

    `batch_norm=False` builds the module a BN-folded export describes: the depthwise conv already
    carries BN's scale and shift, and `norm` is an identity."""

    def __init__(self, channels: int, kernel_size: int, batch_norm: bool = True, bn_eps: float = 1e-5):
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(channels, 2 * channels, 1)
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2, groups=channels)
        self.norm = nn.BatchNorm1d(channels, eps=bn_eps) if batch_norm else nn.Identity()
        self.pointwise_conv2 = nn.Conv1d(channels, channels, 1)
        self.activation = Swish()

    def forward(self, x: torch.Tensor, mask_pad: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (batch, channels, time)
        x = x.masked_fill(~mask_pad, 0.0)
        x = self.pointwise_conv1(x)
        x = nn.functional.glu(x, dim=1)
        x = self.depthwise_conv(x)
        x = self.activation(self.norm(x))
        x = self.pointwise_conv2(x)
        x = x.masked_fill(~mask_pad, 0.0)
        return x.transpose(1, 2)


# ----------------------------------------------------------------------------------------------
# wenet/transformer/encoder_layer.py, encoder.py, ctc.py


class ConformerEncoderLayer(nn.Module):
    def __init__(self, size: int, self_attn, feed_forward, feed_forward_macaron, conv_module, eps: float):
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.feed_forward_macaron = feed_forward_macaron
        self.conv_module = conv_module
        self.norm_ff = nn.LayerNorm(size, eps=eps)
        self.norm_mha = nn.LayerNorm(size, eps=eps)
        self.norm_ff_macaron = nn.LayerNorm(size, eps=eps)
        self.norm_conv = nn.LayerNorm(size, eps=eps)
        self.norm_final = nn.LayerNorm(size, eps=eps)
        self.ff_scale = 0.5

    def forward(self, x, mask, pos_emb, mask_pad):
        x = x + self.ff_scale * self.feed_forward_macaron(self.norm_ff_macaron(x))
        y = self.norm_mha(x)
        x = x + self.self_attn(y, y, y, mask, pos_emb)
        x = x + self.conv_module(self.norm_conv(x), mask_pad)
        x = x + self.ff_scale * self.feed_forward(self.norm_ff(x))
        return self.norm_final(x)


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: dict, batch_norm: bool = True):
        super().__init__()
        enc = cfg["encoder"]
        d, eps = enc["output_size"], enc["layer_norm_eps"]
        if enc["global_cmvn"]:
            self.global_cmvn = GlobalCMVN(torch.zeros(enc["input_dim"]), torch.ones(enc["input_dim"]))
        else:
            self.global_cmvn = None
        self.embed = Conv2dSubsampling4(enc["input_dim"], d, RelPositionalEncoding(d, enc["pos_enc_max_len"]))
        bn_eps = enc["batch_norm_eps"] or 1e-5

        def ffn():
            return PositionwiseFeedForward(d, enc["linear_units"], Swish())

        self.encoders = nn.ModuleList(
            ConformerEncoderLayer(
                d, RelPositionMultiHeadedAttention(enc["attention_heads"], d), ffn(), ffn(),
                ConvolutionModule(d, enc["cnn_module_kernel"], batch_norm, bn_eps), eps)
            for _ in range(enc["num_blocks"]))
        self.after_norm = nn.LayerNorm(d, eps=eps)

    def forward(self, xs: torch.Tensor, xs_lens: torch.Tensor):
        masks = ~make_pad_mask(xs_lens, xs.size(1)).unsqueeze(1)  # (B, 1, T)
        if self.global_cmvn is not None:
            xs = self.global_cmvn(xs)
        xs, pos_emb, masks = self.embed(xs, masks)
        for layer in self.encoders:
            xs = layer(xs, masks, pos_emb, masks)
        return self.after_norm(xs), masks


class CTC(nn.Module):
    def __init__(self, odim: int, encoder_output_size: int):
        super().__init__()
        self.ctc_lo = nn.Linear(encoder_output_size, odim)

    def log_softmax(self, hs_pad: torch.Tensor) -> torch.Tensor:
        return nn.functional.log_softmax(self.ctc_lo(hs_pad), dim=2)


# ----------------------------------------------------------------------------------------------
# wenet/transformer/decoder_layer.py, decoder.py


class DecoderLayer(nn.Module):
    def __init__(self, size: int, self_attn, src_attn, feed_forward, eps: float):
        super().__init__()
        self.self_attn = self_attn
        self.src_attn = src_attn
        self.feed_forward = feed_forward
        self.norm1 = nn.LayerNorm(size, eps=eps)
        self.norm2 = nn.LayerNorm(size, eps=eps)
        self.norm3 = nn.LayerNorm(size, eps=eps)

    def forward(self, tgt, tgt_mask, memory, memory_mask):
        y = self.norm1(tgt)
        x = tgt + self.self_attn(y, y, y, tgt_mask)
        y = self.norm2(x)
        x = x + self.src_attn(y, memory, memory, memory_mask)
        return x + self.feed_forward(self.norm3(x))


class TransformerDecoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        dec, vocab = cfg["decoder"], cfg["vocab_size"]
        d, eps, heads = dec["output_size"], dec["layer_norm_eps"], dec["attention_heads"]
        self.embed = nn.Sequential(nn.Embedding(vocab, d), PositionalEncoding(d, dec["pos_enc_max_len"]))
        self.decoders = nn.ModuleList(
            DecoderLayer(d, MultiHeadedAttention(heads, d), MultiHeadedAttention(heads, d),
                         PositionwiseFeedForward(d, dec["linear_units"], nn.ReLU()), eps)
            for _ in range(dec["num_blocks"]))
        self.after_norm = nn.LayerNorm(d, eps=eps)
        self.output_layer = nn.Linear(d, vocab)

    def forward(self, memory, memory_mask, ys_in_pad, ys_in_lens):
        maxlen = ys_in_pad.size(1)
        tgt_mask = ~make_pad_mask(ys_in_lens, maxlen).unsqueeze(1)
        tgt_mask = tgt_mask & subsequent_mask(maxlen, tgt_mask.device).unsqueeze(0)
        x, _ = self.embed(ys_in_pad)
        for layer in self.decoders:
            x = layer(x, tgt_mask, memory, memory_mask)
        return self.output_layer(self.after_norm(x))


# ----------------------------------------------------------------------------------------------
# wenet/bin/export_onnx_gpu.py: the exported modules


class Encoder(nn.Module):
    """speech, speech_lengths -> encoder_out, encoder_out_lens, ctc_log_probs, beam_log_probs(_idx)."""

    def __init__(self, cfg: dict, batch_norm: bool = True):
        super().__init__()
        self.encoder = ConformerEncoder(cfg, batch_norm)
        self.ctc = CTC(cfg["vocab_size"], cfg["encoder"]["output_size"])
        self.beam_size = cfg["beam_size"]

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        encoder_out, encoder_mask = self.encoder(speech, speech_lengths)
        encoder_out_lens = encoder_mask.squeeze(1).sum(1).int()
        ctc_log_probs = self.ctc.log_softmax(encoder_out)
        beam_log_probs, beam_log_probs_idx = torch.topk(ctc_log_probs, self.beam_size, dim=2)
        return encoder_out, encoder_out_lens, ctc_log_probs, beam_log_probs, beam_log_probs_idx


class Decoder(nn.Module):
    """Attention rescoring of `beam` CTC prefix hypotheses per utterance.

    outputs: ("decoder_out", "best_index") as the hackathon / --decoder_fastertransformer export, or
    ("best_index",) as WeNet's default export."""

    def __init__(self, cfg: dict, outputs=("decoder_out", "best_index")):
        super().__init__()
        self.decoder = TransformerDecoder(cfg)
        self.ctc_weight = cfg["ctc_weight"]
        self.beam_size = cfg["beam_size"]
        self.return_decoder_out = "decoder_out" in outputs

    def forward(self, encoder_out, encoder_lens, hyps_pad_sos_eos, hyps_lens_sos, ctc_score):
        B, T, F = encoder_out.shape
        bz = self.beam_size
        B2 = B * bz
        encoder_out = encoder_out.repeat(1, bz, 1).view(B2, T, F)
        encoder_mask = ~make_pad_mask(encoder_lens, T).unsqueeze(1)
        encoder_mask = encoder_mask.repeat(1, bz, 1).view(B2, 1, T)
        T2 = hyps_pad_sos_eos.shape[2] - 1
        hyps_pad = hyps_pad_sos_eos.view(B2, T2 + 1)
        hyps_lens = hyps_lens_sos.view(B2,)
        hyps_pad_sos = hyps_pad[:, :-1].contiguous()
        hyps_pad_eos = hyps_pad[:, 1:].contiguous()
        if not torch.jit.is_tracing():
            # ONNX Gather wraps the -1 padding to the last embedding row; eager nn.Embedding
            # rejects negative ids, so do the wrap explicitly (not part of the exported graph).
            hyps_pad_sos = torch.remainder(hyps_pad_sos, self.decoder.output_layer.out_features)
        decoder_out = self.decoder(encoder_out, encoder_mask, hyps_pad_sos, hyps_lens)
        decoder_out = nn.functional.log_softmax(decoder_out, dim=-1)
        V = decoder_out.shape[-1]
        decoder_out = decoder_out.view(B2, T2, V)
        mask = ~make_pad_mask(hyps_lens, T2)  # B2 x T2
        index = torch.unsqueeze(hyps_pad_eos * mask, 2)  # -1 padding gathers index 0, then zeroed
        score = decoder_out.gather(2, index).squeeze(2)
        score = score * mask
        decoder_out = decoder_out.view(B, bz, T2, V)
        score = torch.sum(score, dim=1)
        score = torch.reshape(score, (B, bz)) + self.ctc_weight * ctc_score
        best_index = torch.argmax(score, dim=1)
        if self.return_decoder_out:
            return decoder_out, best_index
        return best_index


# ----------------------------------------------------------------------------------------------
# Seeded weights


def fbank_statistics(input_dim: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std shaped like Kaldi 80-dim log-mel fbank: means rising from ~9 to ~14 over the
    low bins then falling, std ~2..4."""
    bins = torch.linspace(0.0, 1.0, input_dim)
    mean = 9.0 + 5.0 * torch.sin(math.pi * bins ** 0.6) + 0.3 * torch.randn(input_dim, generator=generator)
    std = 2.0 + 2.0 * bins.flip(0) + 0.2 * torch.rand(input_dim, generator=generator)
    return mean, std


def init_seeded(model: nn.Module, seed: int) -> None:
    """Weights chosen so that a folding, transposition or ordering bug cannot hide: every LayerNorm
    and BatchNorm affine away from 1 and 0, non-trivial BN statistics, fbank-like CMVN, non-zero
    pos_bias, and Linear/Conv weights with std 1/sqrt(fan_in) so activations stay of order 1."""
    g = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g))

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) / math.sqrt(fan_in))
                if module.bias is not None:
                    uniform(module.bias, -0.1, 0.1)
            elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
                uniform(module.weight, 0.6, 1.4)
                uniform(module.bias, -0.2, 0.2)
                if isinstance(module, nn.BatchNorm1d):
                    module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=g))
                    uniform(module.running_var, 0.5, 2.0)
            elif isinstance(module, nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=g))
            elif isinstance(module, RelPositionMultiHeadedAttention):
                module.pos_bias_u.copy_(0.5 * torch.randn(module.pos_bias_u.shape, generator=g))
                module.pos_bias_v.copy_(0.5 * torch.randn(module.pos_bias_v.shape, generator=g))
            elif isinstance(module, GlobalCMVN):
                mean, std = fbank_statistics(module.mean.numel(), g)
                module.mean.copy_(mean)
                module.istd.copy_(1.0 / std)


def init_pytorch_defaults(model: nn.Module, seed: int) -> None:
    """PyTorch's own initialisation (LayerNorm 1/0, BN statistics 0/1, CMVN 0/1): value-identical
    tensors that the exporter de-duplicates into Identity nodes. For testing the extractor."""
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        if isinstance(module, RelPositionMultiHeadedAttention):
            nn.init.xavier_uniform_(module.pos_bias_u)
            nn.init.xavier_uniform_(module.pos_bias_v)


INITS = {"seeded": init_seeded, "pytorch": init_pytorch_defaults}


def build_models(cfg: dict, seed: int, init: str = "seeded", batch_norm: bool = True) -> tuple[Encoder, Decoder]:
    """The export modules with seeded weights, in eval mode. Encoder and decoder get distinct seeds."""
    encoder = Encoder(cfg, batch_norm)
    decoder = Decoder(cfg, cfg["decoder"]["outputs"])
    INITS[init](encoder, seed)
    INITS[init](decoder, seed + 1_000_003)
    return encoder.eval(), decoder.eval()


def models_from_weights(wdir) -> tuple[Encoder, Decoder]:
    """Encoder and Decoder built from WDIR/config.json and loaded (strictly) from its safetensors
    alone, through weights.loader's checks. A BN-folded export gives conv modules without BN."""
    from weights.loader import load_weights

    w = load_weights(wdir)
    cfg = w.config
    encoder = Encoder(cfg, batch_norm=cfg["encoder"]["batch_norm"] == "separate")
    decoder = Decoder(cfg, cfg["decoder"]["outputs"])
    for module, tensors in ((encoder, w.encoder), (decoder, w.decoder)):
        state = {name: torch.from_numpy(value.copy()) for name, value in tensors.items()}
        for name, value in list(state.items()):
            if name.endswith(".pe"):
                state[name] = value.unsqueeze(0)  # stored squeezed, as docs/weights.md says
        module.load_state_dict(state, strict=True)
    return encoder.eval(), decoder.eval()
