"""Blocks shared by the encoder and the decoder: weights access, LayerNorm, feed-forward, attention.

Activations are 2-D [rows, d_model] (rows = batch x time) everywhere outside attention, so every
linear layer is one 2-D matrix multiply against a constant.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from . import functional as F
from .backend import trt


class MissingWeightError(KeyError):
    def __str__(self):
        return self.args[0]


class Params:
    """Read-only view of a weights dict under a name prefix (`encoder.encoders.3.` ...)."""

    def __init__(self, tensors: Mapping[str, np.ndarray], prefix: str = "", source: str = "weights"):
        self._tensors = tensors
        self.prefix = prefix
        self.source = source

    def __getitem__(self, name: str) -> np.ndarray:
        full = self.prefix + name
        try:
            return np.asarray(self._tensors[full], dtype=np.float64)
        except KeyError:
            raise MissingWeightError(f"{self.source}: tensor '{full}' is missing") from None

    def __contains__(self, name: str) -> bool:
        return self.prefix + name in self._tensors

    def sub(self, name: str) -> "Params":
        return Params(self._tensors, f"{self.prefix}{name}.", self.source)


@dataclass
class Seq:
    """Runtime sizes of a batch of sequences: 1-element int64 shape tensors."""

    batch: F.Tensor
    frames: F.Tensor


def residual_add(x: F.Tensor, y: F.Tensor) -> F.Tensor:
    """x + y in the residual stream's dtype (a sub-block may have computed y in another)."""
    return x + F.cast(y, x.dtype)


def norm(x: F.Tensor, p: Params, name: str, eps: float) -> F.Tensor:
    """LayerNorm `name` (its own scope, so the policy can keep it FP32)."""
    with F.scope(name):
        if F.uses_plugin("layernorm"):
            return F.layer_norm_plugin(x, p[f"{name}.weight"], p[f"{name}.bias"], eps)[0]
        return F.layer_norm(x, p[f"{name}.weight"], p[f"{name}.bias"], eps)


def add_norm(x: F.Tensor, delta: F.Tensor, p: Params, name: str, eps: float) -> tuple[F.Tensor, F.Tensor]:
    """(x + delta, LayerNorm(x + delta)): the residual add and the next LayerNorm, which the
    WenetLayerNorm plugin computes as one layer under --plugins layernorm."""
    with F.scope(name):
        if F.uses_plugin("layernorm"):
            total, normed = F.layer_norm_plugin(delta, p[f"{name}.weight"], p[f"{name}.bias"], eps, residual=x)
            return F.cast(total, x.dtype), normed
        total = residual_add(x, delta)
        return total, F.layer_norm(total, p[f"{name}.weight"], p[f"{name}.bias"], eps)


def feed_forward(x: F.Tensor, p: Params, activation, scale: float = 1.0) -> F.Tensor:
    """w_2(act(w_1(x))), with a constant output scale (the macaron 0.5) folded into w_2."""
    x = activation(F.linear(x, p["w_1.weight"], p["w_1.bias"], op="w_1."))
    return F.linear(x, p["w_2.weight"] * scale, p["w_2.bias"] * scale, op="w_2.")


def attend(scores: F.Tensor, mask_bias: F.Tensor, v: F.Tensor) -> F.Tensor:
    """softmax(scores + mask) @ v, the softmax in its own scope so the policy can make it an island.

    mask_bias is 0 for visible keys and -inf for masked ones: exp(-inf) = 0 gives WeNet's
    masked_fill(-inf) + softmax + masked_fill(0) exactly, as long as a row has a visible key.
    """
    scores = scores + F.cast(mask_bias, scores.dtype)
    with F.scope("softmax"):
        probs = F.softmax(F.to_compute(scores), axis=-1)
    return F.matmul(F.cast(probs, v.dtype), v)


def split_heads(x: F.Tensor, batch: F.Tensor, frames: F.Tensor, heads: int, d_k: int) -> F.Tensor:
    """[batch*frames, heads*d_k] -> [batch, heads, frames, d_k] in one shuffle."""
    return F.reshape_transpose(x, [batch, frames, heads, d_k], (0, 2, 1, 3))


def merge_heads(x: F.Tensor, d_model: int) -> F.Tensor:
    """[batch, heads, frames, d_k] -> [batch*frames, heads*d_k] in one shuffle."""
    return F.transpose_reshape(x, (0, 2, 1, 3), [-1, d_model])


def head_slices(x: F.Tensor, parts: int, heads: int, size: F.Tensor) -> list[F.Tensor]:
    """Split [B, parts*heads, T, d_k] into `parts` tensors [B, heads, T, d_k] (size is their shape)."""
    return [F.slice(x, [0, i * heads, 0, 0], size) for i in range(parts)]


def additive_mask(visible: F.Tensor, dtype) -> F.Tensor:
    """0 where `visible` (bool), -inf elsewhere."""
    zero = F.constant(np.zeros((1,) * visible.ndim), dtype, op="mask_zero")
    neg_inf = F.constant(np.full((1,) * visible.ndim, -np.inf), dtype, op="mask_neg_inf")
    return F.where(visible, zero, neg_inf)


def length_mask(lengths: F.Tensor, frames: F.Tensor, step: int = 1) -> F.Tensor:
    """[N, T] bool: step * t < length[n], from int32 lengths [N] and a runtime T."""
    positions = F.arange(frames, trt.int32, 0, step)
    return F.reshape(positions, [1, -1]) < F.reshape(lengths, [-1, 1])
