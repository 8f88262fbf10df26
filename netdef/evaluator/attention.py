"""Attention and the layers around it: the attention boundaries, rotary embedding, KV-cache update."""
from __future__ import annotations

import numpy as np

from .core import EvaluationError, UnsupportedLayerError
from .dtypes import compute_float
from .reductions import softmax_along
from .registry import implements, enum_name, optional_input


@implements("ATTENTION_INPUT")
def attention_input(layer, ins):
    # The boundary layer only marks where an attention starts (TensorRT gives its output the
    # query's shape); ATTENTION_OUTPUT computes the attention from the attention's own inputs.
    return [ins[0]]


@implements("ATTENTION_OUTPUT")
def attention_output(layer, ins):
    # ins: the boundary's own input, then the attention's query, key, value and mask (core.layer_reads)
    attention = layer.attention
    q, k, v = (compute_float(x).astype(np.float32) for x in ins[-4:-1])
    norm = enum_name(attention.norm_op)
    if k.shape[1] != q.shape[1]:  # grouped-query attention: each K/V head serves several query heads
        repeat = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, repeat, axis=1), np.repeat(v, repeat, axis=1)
    scores = np.matmul(q, np.swapaxes(k, -1, -2))
    m = ins[-1]
    if m is not None:
        scores = np.where(m, scores, -np.inf) if m.dtype == np.bool_ else scores + compute_float(m)
    causal = enum_name(attention.causal_kind) if hasattr(attention, "causal_kind") else ("UPPER_LEFT" if attention.causal else "NONE")
    if causal != "NONE":
        sq, skv = scores.shape[-2:]
        offset = skv - sq if causal == "LOWER_RIGHT" else 0
        allowed = np.arange(skv)[None, :] <= np.arange(sq)[:, None] + offset
        scores = np.where(allowed, scores, -np.inf)
    if norm == "SOFTMAX":
        probs = softmax_along(scores, -1)
    elif norm == "NONE":
        probs = scores
    else:
        raise UnsupportedLayerError(layer, f"attention normalization {norm}")
    if attention.normalization_quantize_scale is not None:
        raise UnsupportedLayerError(layer, "quantized attention normalization")
    return [np.matmul(probs, v)]




@implements("ROTARY_EMBEDDING")
def rotary_embedding(layer, ins):
    """RoPE on x [B, H, S, D]: cos/sin [B, S, R/2], or [positions, R/2] gathered at position_ids [B, S]."""
    x, cos, sin = (compute_float(v) for v in ins[:3])
    positions = optional_input(ins, 3)
    if positions is not None:
        cos, sin = cos[positions], sin[positions]
    cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
    rotary = int(layer.rotary_embedding_dim) or x.shape[-1]
    part, rest = x[..., :rotary], x[..., rotary:]
    if layer.interleaved:  # pairs are adjacent elements
        first, second = part[..., 0::2], part[..., 1::2]
    else:  # pairs are the two halves
        first, second = part[..., : rotary // 2], part[..., rotary // 2:]
    out_first = first * cos - second * sin
    out_second = second * cos + first * sin
    if layer.interleaved:
        rotated = np.stack([out_first, out_second], axis=-1).reshape(part.shape)
    else:
        rotated = np.concatenate([out_first, out_second], axis=-1)
    return [np.concatenate([rotated, rest], axis=-1)]



@implements("KV_CACHE_UPDATE")
def kv_cache_update(layer, ins):
    """Write update [B, H, S_new, D] into cache [B, H, S_max, D] at each sequence's write index."""
    cache, update, write_at = ins[0], ins[1], ins[2].astype(np.int64)
    mode = enum_name(layer.cache_mode)
    form = enum_name(layer.update_form) if hasattr(layer, "update_form") else "PADDED_BHND"
    if mode != "LINEAR" or form != "PADDED_BHND":
        raise UnsupportedLayerError(layer, f"cache mode {mode} with update form {form}")
    out = cache.copy()
    steps = update.shape[2]
    for b in range(cache.shape[0]):  # one slice assignment per sequence
        start = int(write_at[b])
        if not 0 <= start <= cache.shape[2] - steps:
            raise EvaluationError(f"layer '{layer.name}': write index {start} of sequence {b} leaves the cache")
        out[b, :, start:start + steps] = update[b]
    return [out]
