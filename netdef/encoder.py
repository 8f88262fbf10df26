"""WeNet's Conformer encoder (+ CTC head), one function per module, as in wenet/transformer/.

Inputs `speech` [B, T, F] float32 and `speech_lengths` [B] int32; outputs as WeNet's
export_onnx_gpu.py: encoder_out, encoder_out_lens, ctc_log_probs, beam_log_probs, beam_log_probs_idx.
Build-time work, each a deliberate choice:
- every linear layer runs on [B*T', D] (2-D matrix multiplies);
- each block's relative-position projection pos_emb . W_pos, split into heads, is one constant
  [1, H, T'max, d_k], sliced to T' at run time;
- q, q, k, v come from one matrix multiply, with pos_bias_u / pos_bias_v and 1/sqrt(d_k) folded into
  the two query copies; the GLU's two halves are two projections (no slice);
- BatchNorm is folded into the depthwise convolution; the macaron 0.5 into w_2; sqrt(d) into the
  subsampling's output projection; CMVN's (x - mean) * istd into one multiply-add;
- the subsampled mask (WeNet's mask[:, :, :-2:2][:, :, :-2:2] keeps input frames 4t) and
  encoder_out_lens are computed once from speech_lengths and reused by every block.
"""
from __future__ import annotations

import math

import numpy as np

from . import functional as F
from .backend import trt
from .modules import (
    Params,
    Seq,
    add_norm,
    additive_mask,
    attend,
    feed_forward,
    head_slices,
    length_mask,
    merge_heads,
    norm,
    split_heads,
)

ENCODER_OUTPUTS = ("encoder_out", "encoder_out_lens", "ctc_log_probs", "beam_log_probs", "beam_log_probs_idx")

ACTIVATIONS = {"swish": F.swish, "relu": F.relu}


def global_cmvn(x: F.Tensor, p: Params) -> F.Tensor:
    """GlobalCMVN: (x - mean) * istd, as x * istd + (-mean * istd) with the shift precomputed."""
    with F.scope("encoder.global_cmvn"):
        istd = p["global_cmvn.istd"]
        x = F.to_compute(x)
        return x * F.constant(istd.reshape(1, 1, -1), op="istd") + F.constant((-p["global_cmvn.mean"] * istd).reshape(1, 1, -1), op="shift")


def subsampling(x: F.Tensor, p: Params, d_model: int) -> tuple[F.Tensor, F.Tensor]:
    """Conv2dSubsampling4: two 3x3 stride-2 convs + ReLU, then Linear(d*F', d) * sqrt(d).

    Returns the activation [B*T', d] and T' (a 1-element shape tensor).
    """
    with F.scope("encoder.embed"):
        x = F.reshape(F.to_compute(x), [0, 1, -1, x.shape[-1]])  # [B, 1, T, F]
        with F.scope("conv.0"):
            x = F.relu(F.conv2d(x, p["embed.conv.0.weight"], p["embed.conv.0.bias"], stride=(2, 2)))
        with F.scope("conv.2"):
            x = F.relu(F.conv2d(x, p["embed.conv.2.weight"], p["embed.conv.2.bias"], stride=(2, 2)))
        frames = F.dim(x, 2)
        sub_features = x.shape[3]
        x = F.transpose_reshape(x, (0, 2, 1, 3), [-1, d_model * sub_features])  # [B*T', d*F']
        xscale = math.sqrt(d_model)  # RelPositionalEncoding scales x; dropout is off at inference
        with F.scope("out.0"):
            x = F.linear(x, p["embed.out.0.weight"] * xscale, p["embed.out.0.bias"] * xscale)
        return x, frames


def rel_pos_attention(x: F.Tensor, p: Params, pos_table: np.ndarray, seq: Seq, masks: dict, heads: int) -> F.Tensor:
    """RelPositionMultiHeadedAttention without rel_shift (this WeNet version):

    scores = ((q + u) k^T + (q + v) p^T) / sqrt(d_k), p = linear_pos(pos_emb[:T']) per head.
    """
    d_model = x.shape[1]
    d_k = d_model // heads
    # This block's position projection, precomputed for T'max positions: [1, H, T'max, d_k].
    proj = (pos_table @ p["linear_pos.weight"].T).reshape(1, -1, heads, d_k).transpose(0, 2, 1, 3)
    pos = F.slice(F.constant(proj, op="pos_proj"), [0, 0, 0, 0], [1, heads, seq.frames, d_k])
    if F.uses_plugin("attention"):
        out = _rel_pos_attention_plugin(x, p, pos, seq, masks["lengths"], heads)
    else:
        s = 1.0 / math.sqrt(d_k)
        wq, bq = p["linear_q.weight"], p["linear_q.bias"]
        u, v = p["pos_bias_u"].reshape(-1), p["pos_bias_v"].reshape(-1)
        weight = np.concatenate([wq * s, wq * s, p["linear_k.weight"], p["linear_v.weight"]])
        bias = np.concatenate([(bq + u) * s, (bq + v) * s, p["linear_k.bias"], p["linear_v.bias"]])
        qkv = split_heads(F.linear(x, weight, bias, op="qkv."), seq.batch, seq.frames, 4 * heads, d_k)
        q_u, q_v, k, val = head_slices(qkv, 4, heads, F.shape_tensor([seq.batch, heads, seq.frames, d_k]))
        with F.scope("scores"):
            scores = F.matmul(q_u, k, transpose_b=True) + F.matmul(q_v, F.cast(pos, q_v.dtype), transpose_b=True)
        out = merge_heads(attend(scores, masks["attention"], val), d_model)
    return F.linear(out, p["linear_out.weight"], p["linear_out.bias"], op="linear_out.")


def _rel_pos_attention_plugin(x: F.Tensor, p: Params, pos: F.Tensor, seq: Seq, lengths: F.Tensor, heads: int) -> F.Tensor:
    """The same attention as one WenetRelPosAttention plugin layer (pos_bias and 1/sqrt(d_k) inside it)."""
    d_model = x.shape[1]
    weight = np.concatenate([p["linear_q.weight"], p["linear_k.weight"], p["linear_v.weight"]])
    bias = np.concatenate([p["linear_q.bias"], p["linear_k.bias"], p["linear_v.bias"]])
    qkv = F.reshape(F.linear(x, weight, bias, op="qkv."), [seq.batch, seq.frames, 3 * d_model])
    size = F.shape_tensor([seq.batch, seq.frames, d_model])
    q, k, v = (F.slice(qkv, [0, 0, i * d_model], size) for i in range(3))
    out = F.rel_pos_attention_plugin(q, k, v, pos, p["pos_bias_u"], p["pos_bias_v"], lengths, heads)
    return F.reshape(out, [-1, d_model])


def fold_batch_norm(p: Params, eps: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Depthwise conv weight and bias with BatchNorm folded in (as-is when the exporter folded it)."""
    w, b = p["depthwise_conv.weight"], p["depthwise_conv.bias"] if "depthwise_conv.bias" in p else 0.0
    if "norm.running_mean" not in p:
        return w, np.broadcast_to(b, w.shape[:1]).copy()
    if eps is None:
        raise ValueError(f"config.json: encoder.batch_norm_eps is not set, but {p.prefix}norm.* BatchNorm tensors are present")
    scale = p["norm.weight"] / np.sqrt(p["norm.running_var"] + eps)
    return w * scale[:, None, None], (b - p["norm.running_mean"]) * scale + p["norm.bias"]


def conv_module(x: F.Tensor, p: Params, seq: Seq, frame_mask: F.Tensor, bn_eps: float | None, activation) -> F.Tensor:
    """ConvolutionModule: mask -> pointwise conv + GLU -> depthwise conv (+BN) -> act -> pointwise conv -> mask."""
    d_model = x.shape[1]
    x = x * F.cast(frame_mask, x.dtype)  # padded frames must not leak into the depthwise conv
    with F.scope("glu"):
        w1, b1 = p["pointwise_conv1.weight"][:, :, 0], p["pointwise_conv1.bias"]
        x = F.linear(x, w1[:d_model], b1[:d_model], op="value.") * F.sigmoid(F.linear(x, w1[d_model:], b1[d_model:], op="gate."))
    with F.scope("depthwise_conv"):
        w, b = fold_batch_norm(p, bn_eps)
        kernel = w.shape[-1]
        x = F.reshape_transpose(x, [seq.batch, seq.frames, 1, d_model], (0, 3, 2, 1))  # [B, d, 1, T']
        x = F.conv2d(x, w[:, :, None, :], b, padding=(0, (kernel - 1) // 2), groups=d_model)
        x = F.transpose_reshape(activation(x), (0, 2, 3, 1), [-1, d_model])  # back to [B*T', d]
    x = F.linear(x, p["pointwise_conv2.weight"][:, :, 0], p["pointwise_conv2.bias"], op="pointwise_conv2.")
    return x * F.cast(frame_mask, x.dtype)


def conformer_block(x, p: Params, pos_table, seq: Seq, masks: dict, cfg: dict) -> F.Tensor:
    """ConformerEncoderLayer (macaron, normalize_before). Each residual add is fused with the
    LayerNorm that follows it (add_norm), which is what the LayerNorm plugin computes in one layer:

        x += 0.5 * ffn_macaron(norm_ff_macaron(x));  x += mhsa(norm_mha(x), pos);
        x += conv(norm_conv(x));  x += 0.5 * ffn(norm_ff(x));  return norm_final(x)
    """
    eps = cfg["layer_norm_eps"]
    act = ACTIVATIONS[cfg.get("activation", "swish")]
    macaron = cfg.get("macaron", True)
    x = F.to_compute(x)
    y = norm(x, p, "norm_ff_macaron" if macaron else "norm_mha", eps)
    if macaron:
        with F.scope("feed_forward_macaron"):
            delta = feed_forward(y, p.sub("feed_forward_macaron"), act, 0.5)
        x, y = add_norm(x, delta, p, "norm_mha", eps)
    with F.scope("self_attn"):
        delta = rel_pos_attention(y, p.sub("self_attn"), pos_table, seq, masks, cfg["attention_heads"])
    x, y = add_norm(x, delta, p, "norm_conv", eps)
    with F.scope("conv_module"):
        delta = conv_module(y, p.sub("conv_module"), seq, masks["frames"], cfg.get("batch_norm_eps"), act)
    x, y = add_norm(x, delta, p, "norm_ff", eps)
    with F.scope("feed_forward"):
        delta = feed_forward(y, p.sub("feed_forward"), act, 0.5 if macaron else 1.0)
    _, y = add_norm(x, delta, p, "norm_final", eps)
    return y


def encoder_network(weights: dict[str, np.ndarray], config: dict, max_frames_out: int, outputs=ENCODER_OUTPUTS) -> None:
    """Define the encoder in the current network (see functional.building)."""
    cfg = config["encoder"]
    d_model, beam = cfg["output_size"], config.get("beam_size", 10)
    p = Params(weights, "encoder.", "encoder.safetensors")

    speech = F.input("speech", trt.float32, (-1, -1, cfg["input_dim"]))
    speech_lengths = F.input("speech_lengths", trt.int32, (-1,))
    batch = F.dim(speech, 0)

    x = global_cmvn(speech, p) if cfg.get("global_cmvn", True) else speech
    x, frames = subsampling(x, p, d_model)
    seq = Seq(batch, frames)

    with F.scope("encoder.mask"):
        visible = length_mask(speech_lengths, frames, step=4)  # [B, T']: input frame 4t < length
        masks = {
            "frames": F.reshape(F.cast(visible, trt.float32), [-1, 1]),  # [B*T', 1]
            "attention": additive_mask(F.reshape(visible, [seq.batch, 1, 1, frames]), trt.float32),
        }
        lengths_out = F.minimum(F.floor_div(speech_lengths + 3, 4), F.cast(frames, trt.int32))
        masks["lengths"] = lengths_out  # what the attention plugin masks keys with

    # Sinusoidal table for T'max positions only: what the profile can reach, not max_len 5000.
    pos_table = p["embed.pos_enc.pe"].reshape(-1, d_model)
    if max_frames_out > pos_table.shape[0]:
        raise ValueError(f"profile: T' up to {max_frames_out} needs that many positions, but encoder.embed.pos_enc.pe has {pos_table.shape[0]}")
    pos_table = pos_table[:max_frames_out]
    for i in range(cfg["num_blocks"]):
        with F.scope(f"encoder.encoders.{i}"):
            x = conformer_block(x, p.sub(f"encoders.{i}"), pos_table, seq, masks, cfg)
    with F.scope("encoder"):
        x = norm(x, p, "after_norm", cfg["layer_norm_eps"])

    if "encoder_out" in outputs:
        F.output(F.reshape(x, [seq.batch, frames, d_model]), "encoder_out", trt.float32)
    if "encoder_out_lens" in outputs:
        F.output(lengths_out, "encoder_out_lens", trt.int32)
    if {"ctc_log_probs", "beam_log_probs", "beam_log_probs_idx"} & set(outputs):
        ctc = Params(weights, "ctc.", "encoder.safetensors")
        with F.scope("ctc"):
            logits = F.linear(x, ctc["ctc_lo.weight"], ctc["ctc_lo.bias"], op="ctc_lo.")
            with F.scope("log_softmax"):
                log_probs = F.reshape(F.log_softmax(F.to_compute(logits), axis=-1), [seq.batch, frames, -1])
            if "ctc_log_probs" in outputs:
                F.output(log_probs, "ctc_log_probs", trt.float32)
            if {"beam_log_probs", "beam_log_probs_idx"} & set(outputs):
                values, indices = F.topk(log_probs, beam, axis=-1)
                if "beam_log_probs" in outputs:
                    F.output(values, "beam_log_probs", trt.float32)
                if "beam_log_probs_idx" in outputs:
                    F.output(indices, "beam_log_probs_idx", trt.int64)
