"""WeNet's TransformerDecoder for attention rescoring, as exported by export_onnx_gpu.py.

Inputs: encoder_out [B, T, d] float32, encoder_out_lens [B] int32, hyps_pad_sos_eos [B, beam, L]
int64 (sos, tokens, eos, then -1), hyps_lens_sos [B, beam] int32, ctc_score [B, beam] float32.
Outputs: decoder_out [B, beam, L-1, vocab] (log-softmax) and best_index [B] int64.
Build-time choices:
- the B*beam hypotheses share their utterance's encoder_out: cross-attention keys and values are
  computed once per utterance ([B*T, d] matrix multiply), and the queries of all beam hypotheses
  attend as one [B, H, beam*(L-1), T] batch instead of repeating encoder_out beam times;
- the token embedding is pre-scaled by sqrt(d); the absolute position table is a constant sliced
  to L-1 at run time; q/k/v (self) and k/v (cross) are single matrix multiplies with 1/sqrt(d_k)
  folded into the query weights.
"""
from __future__ import annotations

import math

import numpy as np

from . import functional as F
from .backend import trt
from .modules import Params, add_norm, additive_mask, attend, feed_forward, head_slices, length_mask, merge_heads, norm, residual_add, split_heads

DECODER_OUTPUTS = ("decoder_out", "best_index")


def _scaled_query(p: Params, d_k: int):
    s = 1.0 / math.sqrt(d_k)
    return p["linear_q.weight"] * s, p["linear_q.bias"] * s


def self_attention(x: F.Tensor, p: Params, hyps: int, length: F.Tensor, mask_bias: F.Tensor, heads: int) -> F.Tensor:
    """Causal multi-head self-attention over each hypothesis: [hyps*(L-1), d] -> same."""
    d_model = x.shape[1]
    d_k = d_model // heads
    wq, bq = _scaled_query(p, d_k)
    weight = np.concatenate([wq, p["linear_k.weight"], p["linear_v.weight"]])
    bias = np.concatenate([bq, p["linear_k.bias"], p["linear_v.bias"]])
    qkv = split_heads(F.linear(x, weight, bias, op="qkv."), hyps, length, 3 * heads, d_k)
    q, k, v = head_slices(qkv, 3, heads, F.shape_tensor([hyps, heads, length, d_k]))
    with F.scope("scores"):
        scores = F.matmul(q, k, transpose_b=True)
    out = merge_heads(attend(scores, mask_bias, v), d_model)
    return F.linear(out, p["linear_out.weight"], p["linear_out.bias"], op="linear_out.")


def source_attention(x: F.Tensor, memory: F.Tensor, p: Params, batch: F.Tensor, queries: F.Tensor, frames: F.Tensor, mask_bias: F.Tensor, heads: int) -> F.Tensor:
    """Cross-attention: every hypothesis of utterance b attends to encoder_out[b].

    x is [B*beam*(L-1), d] (rows grouped by utterance), memory is [B*T, d]; `queries` = beam*(L-1).
    """
    d_model = x.shape[1]
    d_k = d_model // heads
    wq, bq = _scaled_query(p, d_k)
    q = split_heads(F.linear(x, wq, bq, op="linear_q."), batch, queries, heads, d_k)
    weight = np.concatenate([p["linear_k.weight"], p["linear_v.weight"]])
    bias = np.concatenate([p["linear_k.bias"], p["linear_v.bias"]])
    kv = split_heads(F.linear(memory, weight, bias, op="kv."), batch, frames, 2 * heads, d_k)
    k, v = head_slices(kv, 2, heads, F.shape_tensor([batch, heads, frames, d_k]))
    with F.scope("scores"):
        scores = F.matmul(q, k, transpose_b=True)
    out = merge_heads(attend(scores, mask_bias, v), d_model)
    return F.linear(out, p["linear_out.weight"], p["linear_out.bias"], op="linear_out.")


def decoder_layer(x, memory, p: Params, dims: dict, masks: dict, cfg: dict) -> F.Tensor:
    """DecoderLayer (normalize_before, no concat_after), residual adds fused with the next LayerNorm:

        x += self_attn(norm1(x));  x += src_attn(norm2(x), encoder_out);  x += ffn(norm3(x))
    """
    eps, heads = cfg["layer_norm_eps"], cfg["attention_heads"]
    x = F.to_compute(x)
    y = norm(x, p, "norm1", eps)
    with F.scope("self_attn"):
        delta = self_attention(y, p.sub("self_attn"), dims["hyps"], dims["length"], masks["self"], heads)
    x, y = add_norm(x, delta, p, "norm2", eps)
    with F.scope("src_attn"):
        delta = source_attention(y, F.to_compute(memory), p.sub("src_attn"), dims["batch"], dims["queries"], dims["frames"], masks["source"], heads)
    x, y = add_norm(x, delta, p, "norm3", eps)
    with F.scope("feed_forward"):
        delta = feed_forward(y, p.sub("feed_forward"), F.relu)
    return residual_add(x, delta)


def rescoring_score(log_probs: F.Tensor, hyps_pad: F.Tensor, visible: F.Tensor, ctc_score: F.Tensor, dims: dict, beam: int, ctc_weight: float) -> F.Tensor:
    """best_index = argmax over hyps of sum_{t < len} log p(hyps[t+1]) + ctc_weight * ctc_score.

    As WeNet does it: targets are multiplied by the length mask first (so -1 gathers index 0),
    and the gathered scores are multiplied by the mask.
    """
    length = dims["length"]
    targets = F.slice(hyps_pad, [0, 0, 1], F.shape_tensor([dims["batch"], beam, length]))
    targets = F.reshape(targets, [-1, 1]) * F.reshape(F.cast(visible, trt.int64), [-1, 1])  # [hyps*(L-1), 1]
    picked = F.gather_elements(log_probs, targets, axis=1)  # [hyps*(L-1), 1]
    picked = F.reshape(picked * F.reshape(F.cast(visible, log_probs.dtype), [-1, 1]), [dims["hyps"], length])
    score = F.reshape(F.reduce_sum(picked, [1], keepdims=False), [-1, beam])
    score = score + F.to_compute(ctc_score) * ctc_weight
    _, best = F.topk(score, 1, axis=1)
    return F.reshape(best, [-1])


def decoder_network(weights: dict[str, np.ndarray], config: dict, max_hyp_len: int, outputs=DECODER_OUTPUTS) -> None:
    """Define the decoder in the current network (see functional.building)."""
    cfg = config["decoder"]
    d_model, vocab, beam = cfg["output_size"], config["vocab_size"], config.get("beam_size", 10)
    p = Params(weights, "decoder.", "decoder.safetensors")

    encoder_out = F.input("encoder_out", trt.float32, (-1, -1, d_model))
    encoder_out_lens = F.input("encoder_out_lens", trt.int32, (-1,))
    hyps_pad = F.input("hyps_pad_sos_eos", trt.int64, (-1, beam, -1))
    hyps_lens = F.input("hyps_lens_sos", trt.int32, (-1, beam))
    ctc_score = F.input("ctc_score", trt.float32, (-1, beam))

    with F.scope("decoder.dims"):
        batch, frames = F.dim(encoder_out, 0), F.dim(encoder_out, 1)
        length = F.dim(hyps_pad, 2) - 1  # the decoder reads hyps[:, :, :-1]
        hyps = batch * beam
        dims = {"batch": batch, "frames": frames, "length": length, "hyps": hyps, "queries": length * beam}

    with F.scope("decoder.mask"):
        visible = length_mask(F.reshape(hyps_lens, [-1]), length)  # [hyps, L-1]
        # key j visible to query i when j < i + 1 (subsequent_mask)
        causal = F.reshape(F.arange(length, trt.int32), [1, -1]) < F.reshape(F.arange(length, trt.int32, 1), [-1, 1])
        masks = {
            # ~pad_mask & subsequent_mask: key j visible to query i if j < len and j <= i
            "self": additive_mask(F.logical_and(F.reshape(visible, [hyps, 1, 1, length]), F.reshape(causal, [1, 1, length, length])), trt.float32),
            "source": additive_mask(F.reshape(length_mask(encoder_out_lens, frames), [batch, 1, 1, frames]), trt.float32),
        }

    with F.scope("decoder.embed"):
        tokens = F.reshape(F.slice(hyps_pad, [0, 0, 0], F.shape_tensor([batch, beam, length])), [-1])
        tokens = F.where(tokens < 0, tokens + vocab, tokens)  # ONNX Gather wraps negative ids: -1 embeds row vocab-1
        table = p["embed.0.weight"] * math.sqrt(d_model)  # PositionalEncoding's xscale, folded
        x = F.gather(F.constant(table, op="table"), tokens, axis=0)  # [hyps*(L-1), d]
        pe_table = p["embed.1.pe"].reshape(-1, d_model)
        if max_hyp_len > pe_table.shape[0]:
            raise ValueError(f"profile: hyps of {max_hyp_len} tokens need that many positions, but decoder.embed.1.pe has {pe_table.shape[0]}")
        pe = F.slice(F.constant(pe_table[:max_hyp_len][None], op="pe"), [0, 0, 0], F.shape_tensor([1, length, d_model]))
        x = F.reshape(F.reshape(x, [hyps, length, d_model]) + pe, [-1, d_model])

    memory = F.reshape(encoder_out, [-1, d_model])
    for i in range(cfg["num_blocks"]):
        with F.scope(f"decoder.decoders.{i}"):
            x = decoder_layer(x, memory, p.sub(f"decoders.{i}"), dims, masks, cfg)
    with F.scope("decoder"):
        x = norm(x, p, "after_norm", cfg["layer_norm_eps"])
    with F.scope("decoder.output_layer"):
        logits = F.linear(x, p["output_layer.weight"], p["output_layer.bias"])
    with F.scope("decoder.log_softmax"):
        log_probs = F.log_softmax(F.to_compute(logits), axis=-1)  # [hyps*(L-1), vocab]
    if "decoder_out" in outputs:
        F.output(F.reshape(log_probs, [batch, beam, length, vocab]), "decoder_out", trt.float32)
    if "best_index" in outputs:
        with F.scope("decoder.score"):
            best = rescoring_score(F.to_compute(log_probs), hyps_pad, visible, ctc_score, dims, beam, config["ctc_weight"])
        F.output(best, "best_index", trt.int64)
