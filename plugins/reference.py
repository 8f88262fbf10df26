"""NumPy reference implementations of the plugin kernels (float64 inside).

These define what the plugins compute. They check the CUDA kernels (tools/bench_kernels.py) and stand
in for the plugin layers when a network definition is evaluated on the CPU. Results are float64; the
caller casts to the tensor's type.
"""
from __future__ import annotations

import numpy as np


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def layernorm_ref(x, gamma, beta, eps: float) -> np.ndarray:
    """LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * gamma + beta (biased variance)."""
    x = _f64(x)
    if x.shape[-1:] != np.shape(gamma) or np.shape(gamma) != np.shape(beta):
        raise ValueError(
            f"layernorm_ref: gamma {np.shape(gamma)} and beta {np.shape(beta)} must match the last axis of x {x.shape}"
        )
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=-1, keepdims=True)
    return centered / np.sqrt(var + eps) * _f64(gamma) + _f64(beta)


def layernorm_residual_ref(x, residual, gamma, beta, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(x + residual, LayerNorm(x + residual)): the fused residual add and the norm that follows it."""
    if np.shape(x) != np.shape(residual):
        raise ValueError(f"layernorm_residual_ref: x {np.shape(x)} and residual {np.shape(residual)} differ")
    total = _f64(x) + _f64(residual)
    return total, layernorm_ref(total, gamma, beta, eps)


def rel_pos_attention_ref(q, k, v, p, pos_bias_u, pos_bias_v, lengths, heads: int) -> np.ndarray:
    """WeNet's relative-position attention before linear_out.

    q, k, v: [B, T, H*dk] or [B*T, H*dk] (batch taken from `lengths`); p: [H, T, dk] (or [1, H, T, dk]),
    the block's linear_pos projection shared by the batch; pos_bias_u/v: [H, dk]; lengths: [B] valid key
    frames. Returns float64 with q's shape:
        softmax_j(((q_i + u) . k_j + (q_i + v) . p_j) / sqrt(dk), keys j < lengths[b]) @ v
    Masked keys get probability 0; a sequence of length 0 gives zeros (WeNet's masked_fill after softmax).
    """
    lengths = np.asarray(lengths).reshape(-1)
    batch = lengths.shape[0]
    q_shape = np.shape(q)
    hidden = q_shape[-1]
    if hidden % heads:
        raise ValueError(f"rel_pos_attention_ref: q's last axis {hidden} is not a multiple of heads={heads}")
    dk = hidden // heads
    if np.prod(q_shape[:-1]) % max(batch, 1):
        raise ValueError(f"rel_pos_attention_ref: q {q_shape} does not split into {batch} sequences")
    seq = int(np.prod(q_shape[:-1])) // max(batch, 1)

    def split_heads(a, name):
        if np.shape(a) != q_shape:
            raise ValueError(f"rel_pos_attention_ref: {name} {np.shape(a)} differs from q {q_shape}")
        return _f64(a).reshape(batch, seq, heads, dk).transpose(0, 2, 1, 3)  # [B, H, T, dk]

    qh, kh, vh = split_heads(q, "q"), split_heads(k, "k"), split_heads(v, "v")
    ph = _f64(p).reshape(heads, seq, dk)
    u = _f64(pos_bias_u).reshape(heads, 1, dk)
    w = _f64(pos_bias_v).reshape(heads, 1, dk)
    scores = ((qh + u) @ kh.transpose(0, 1, 3, 2) + (qh + w) @ ph.transpose(0, 2, 1)[None]) / np.sqrt(dk)
    key_valid = np.arange(seq)[None, :] < np.minimum(lengths, seq)[:, None]  # [B, T]
    key_valid = key_valid[:, None, None, :]
    scores = np.where(key_valid, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    weights = np.where(key_valid, np.exp(scores - row_max), 0.0)
    total = weights.sum(axis=-1, keepdims=True)
    probs = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    out = probs @ vh  # [B, H, T, dk]
    return out.transpose(0, 2, 1, 3).reshape(q_shape)
