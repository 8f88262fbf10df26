"""Layers that reduce along axes: reduce, softmax, normalization, cumulative, top-k, LRN."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .core import UnsupportedLayerError
from .dtypes import compute_float
from .registry import implements, enum_name, values_of, axes_of, normalize_axis, optional_input, pad_axes


_REDUCE = {"SUM": np.sum, "PROD": np.prod, "MAX": np.max, "MIN": np.min, "AVG": np.mean}


@implements("REDUCE")
def reduce(layer, ins):
    x = compute_float(ins[0])
    op = enum_name(layer.op)
    if op not in _REDUCE:
        raise UnsupportedLayerError(layer, f"reduce operation {op}")
    axes = axes_of(layer.axes, x.ndim)
    if op == "AVG" and x.dtype.kind in "iu":
        return [np.sum(x, axis=axes, keepdims=layer.keep_dims) // int(np.prod([x.shape[a] for a in axes]))]
    return [_REDUCE[op](x, axis=axes, keepdims=layer.keep_dims)]


def softmax_along(x: np.ndarray, axis) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


@implements("SOFTMAX")
def softmax(layer, ins):
    x = compute_float(ins[0])
    return [softmax_along(x, axes_of(layer.axes, x.ndim))]


@implements("NORMALIZATION")
def normalization(layer, ins):
    x, gamma, beta = (compute_float(v) for v in ins)
    axes = axes_of(layer.axes, x.ndim)
    groups = int(layer.num_groups)
    eps = np.float32(layer.epsilon)
    if groups > 1:
        # channels (axis 1) split into groups; statistics per (sample, group) over the group's channels and `axes`
        n, c = x.shape[:2]
        xg = x.reshape((n, groups, c // groups) + x.shape[2:])
        group_axes = (2,) + tuple(a + 1 for a in axes if a >= 2)
        mean = np.mean(xg, axis=group_axes, keepdims=True)
        var = np.mean(np.square(xg - mean), axis=group_axes, keepdims=True)
        y = ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape)
    else:
        mean = np.mean(x, axis=axes, keepdims=True)
        var = np.mean(np.square(x - mean), axis=axes, keepdims=True)
        y = (x - mean) / np.sqrt(var + eps)
    return [y * gamma + beta]


@implements("CUMULATIVE")
def cumulative(layer, ins):
    x = compute_float(ins[0])
    op = enum_name(layer.op)
    if op != "SUM":
        raise UnsupportedLayerError(layer, f"cumulative operation {op}")
    axis = normalize_axis(values_of(ins[1])[0], x.ndim)
    if layer.reverse:
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis, dtype=x.dtype)
    if layer.exclusive:
        y = y - x
    if layer.reverse:
        y = np.flip(y, axis)
    return [y]


@implements("TOPK")
def topk(layer, ins):
    x = compute_float(ins[0])
    op = enum_name(layer.op)
    k = values_of(ins[1])[0] if optional_input(ins, 1) is not None else int(layer.k)
    (axis,) = axes_of(layer.axes, x.ndim)
    key = x.astype(np.float64) if x.dtype.kind in "iub" else x
    key = -key if op == "MAX" else key  # smallest key first
    index = _smallest_k(np.moveaxis(key, axis, -1), k)
    index = np.moveaxis(index, -1, axis)
    return [np.take_along_axis(x, index, axis=axis), index]


def _smallest_k(key: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest keys along the last axis, ascending; among equal keys the lower index
    first, as TensorRT and ONNX order ties. A partition finds the k-th key, so only the candidates
    (keys below it, and the first of those equal to it) are sorted, not the whole row."""
    n = key.shape[-1]
    if k >= n or 8 * k >= n:
        return np.argsort(key, axis=-1, kind="stable")[..., :k]
    kth = np.take(np.partition(key, k - 1, axis=-1), [k - 1], axis=-1)
    below = key < kth
    equal = key == kth
    room = k - below.sum(axis=-1, keepdims=True)
    chosen = below | (equal & (np.cumsum(equal, axis=-1) <= room))  # exactly k per row
    candidates = np.argsort(~chosen, axis=-1, kind="stable")[..., :k]  # ascending index order
    order = np.argsort(np.take_along_axis(key, candidates, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(candidates, order, axis=-1)


@implements("LRN")
def lrn(layer, ins):
    x = compute_float(ins[0])
    size = int(layer.window_size)
    square = np.square(x)
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    padded = pad_axes(square, [0, before] + [0] * (x.ndim - 2), [0, after] + [0] * (x.ndim - 2), 0)
    window_sum = sliding_window_view(padded, size, axis=1).sum(axis=-1)
    return [x / np.power(np.float32(layer.k) + np.float32(layer.alpha) / size * window_sum, np.float32(layer.beta))]
