"""NumPy implementations of TensorRT layers, following TensorRT's documented layer semantics.

Each implementation takes the (downcast) layer and its input values and returns its output values.
Floating-point work happens in float32 (FP16/BF16 inputs are widened first, see dtypes.compute_float);
the caller stores each result in the output tensor's declared type, which rounds FP16 outputs.
Anything a layer does that is not implemented raises UnsupportedLayerError naming the attribute.
"""
from __future__ import annotations

import math
from typing import Callable

import ml_dtypes
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..backend import trt
from .core import EvaluationError, UnsupportedLayerError, layer_type_name
from .dtypes import compute_float, is_float, np_dtype, to_dtype, trt_type_name
from .plugins import lookup_plugin_reference, plugin_fields, plugin_identity

LAYER_IMPLEMENTATIONS: dict[str, Callable] = {}
NARROW_QUANTIZED = ("FP8", "FP4", "INT4")


def implements(*kinds: str):
    def register(fn):
        for kind in kinds:
            LAYER_IMPLEMENTATIONS[kind] = fn
        return fn

    return register


def enum_name(value) -> str:
    return str(value).split(".")[-1]


def dims(d) -> list[int]:
    return [int(v) for v in d]


def values_of(x: np.ndarray) -> list[int]:
    """A shape tensor's values as Python ints."""
    return [int(v) for v in np.asarray(x).reshape(-1)]


def axes_of(mask: int, rank: int) -> tuple[int, ...]:
    return tuple(i for i in range(rank) if (int(mask) >> i) & 1)


def normalize_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def optional_input(ins: list, index: int):
    return ins[index] if len(ins) > index else None


def check_dtype(layer, x: np.ndarray, allowed: str) -> None:
    """`allowed` is a set of kinds: f float (any width), i signed int, b bool, u unsigned int."""
    kind = "f" if is_float(x) else x.dtype.kind
    if kind not in allowed:
        raise UnsupportedLayerError(layer, f"input data type {x.dtype.name}")


# ---------------------------------------------------------------- data movement


@implements("CONSTANT")
def constant(layer, ins):
    weights = layer.weights
    shape = dims(layer.shape)
    if weights is None:
        raise UnsupportedLayerError(layer, "constant without NumPy-readable weights")
    return [np.asarray(weights).reshape(shape)]


@implements("IDENTITY")
def identity(layer, ins):
    return [ins[0]]  # storing converts when the output type differs (an identity used as a cast)


@implements("CAST")
def cast(layer, ins):
    target = np_dtype(layer.to_type)
    if target is None or trt_type_name(layer.to_type) in NARROW_QUANTIZED:
        # TensorRT produces FP8/FP4/INT4 only in IQuantizeLayer: its builder refuses a cast to them,
        # so there is no TensorRT result to follow (and ONNX's saturate attribute has no equivalent)
        raise UnsupportedLayerError(layer, f"cast to {trt_type_name(layer.to_type)} (use a quantize layer)")
    x = ins[0]
    if is_float(x) and target.kind in "iu":
        # float -> int truncates toward zero (C conversion), as ONNX Cast and TensorRT's cast do
        x = np.trunc(compute_float(x))
    return [to_dtype(x, target)]


@implements("SHAPE")
def shape(layer, ins):
    return [np.array(ins[0].shape, dtype=np.int64)]


@implements("SHUFFLE")
def shuffle(layer, ins):
    x = ins[0]
    y = np.transpose(x, list(layer.first_transpose)[: x.ndim])
    reshape = ins[1] if len(ins) > 1 and ins[1] is not None else layer.reshape_dims
    if reshape is not None:
        target = values_of(reshape) if isinstance(reshape, np.ndarray) else dims(reshape)
        if layer.zero_is_placeholder:
            target = [y.shape[i] if v == 0 else v for i, v in enumerate(target)]
        y = y.reshape(target)
    return [np.transpose(y, list(layer.second_transpose)[: y.ndim])]


@implements("SQUEEZE")
def squeeze(layer, ins):
    x = ins[0]
    if optional_input(ins, 1) is None:  # no axes tensor: every unit dimension goes
        return [np.squeeze(x)]
    axes = tuple(normalize_axis(a, x.ndim) for a in values_of(ins[1]))
    return [np.squeeze(x, axis=axes)]


@implements("UNSQUEEZE")
def unsqueeze(layer, ins):
    x = ins[0]
    axes = values_of(ins[1])
    rank = x.ndim + len(axes)
    return [np.expand_dims(x, tuple(normalize_axis(a, rank) for a in axes))]


@implements("CONCATENATION")
def concatenation(layer, ins):
    return [np.concatenate(ins, axis=normalize_axis(layer.axis, ins[0].ndim))]


def _slice_indices(layer, mode: str, start: int, size: int, stride: int, extent: int):
    """Source coordinates of one dimension of a slice and, for FILL mode, which of them are inside."""
    idx = start + stride * np.arange(size, dtype=np.int64)
    inside = (idx >= 0) & (idx < extent)
    if mode == "STRICT_BOUNDS":
        if not inside.all():
            raise EvaluationError(
                f"layer '{layer.name}' (SLICE): start {start}, size {size}, stride {stride} leave the extent {extent}"
            )
    elif mode == "WRAP":
        idx = np.mod(idx, extent)
    elif mode in ("CLAMP", "FILL"):
        idx = np.clip(idx, 0, max(extent - 1, 0))
    elif mode == "REFLECT":
        if extent == 1:
            idx = np.zeros_like(idx)
        else:
            period = 2 * (extent - 1)
            idx = np.mod(idx, period)
            idx = np.where(idx >= extent, period - idx, idx)
    else:
        raise UnsupportedLayerError(layer, f"slice mode {mode}")
    return idx, inside


@implements("SLICE")
def slice_(layer, ins):
    x = ins[0]
    rank = x.ndim
    given = lambda i, attr: values_of(ins[i]) if optional_input(ins, i) is not None else dims(getattr(layer, attr))
    start, size, stride = given(1, "start"), given(2, "shape"), given(3, "stride")
    axes_value = optional_input(ins, 5)
    axes_attr = getattr(layer, "axes", None)  # TensorRT 10 before 10.? has no slice axes
    axes = values_of(axes_value) if axes_value is not None else (dims(axes_attr) if axes_attr is not None else None)
    if axes is not None:  # start/size/stride name only these axes; the others are kept whole
        full_start, full_size, full_stride = [0] * rank, list(x.shape), [1] * rank
        for a, s0, n, st in zip(axes, start, size, stride):
            a = normalize_axis(a, rank)
            full_start[a], full_size[a], full_stride[a] = s0, n, st
        start, size, stride = full_start, full_size, full_stride
    mode = enum_name(layer.mode)
    fill = optional_input(ins, 4)
    fill = np.asarray(0 if fill is None else fill, dtype=x.dtype).reshape(())
    if 0 in size:
        return [np.zeros(size, dtype=x.dtype)]
    if x.size == 0:  # a non-empty slice of an empty tensor: only FILL has values to give
        if mode != "FILL":
            raise EvaluationError(f"layer '{layer.name}' (SLICE): {mode} slice of size {size} from an empty tensor")
        return [np.full(size, fill, dtype=x.dtype)]
    per_dim = [_slice_indices(layer, mode, start[d], size[d], stride[d], x.shape[d]) for d in range(rank)]
    if mode == "STRICT_BOUNDS" and all(st != 0 for st in stride):
        # in bounds (checked) with non-zero strides: a basic slice, a view instead of a gathered copy
        basic = tuple(slice(s0, s0 + st * (n - 1) + 1 if st > 0 else (s0 + st * (n - 1) - 1 if s0 + st * (n - 1) > 0 else None), st)
                      for s0, n, st in zip(start, size, stride))
        return [x[basic]]
    y = x[np.ix_(*[idx for idx, _ in per_dim])] if rank else x.copy()
    if mode == "FILL":
        inside = np.ones(size, dtype=bool)
        for d, (_, ok) in enumerate(per_dim):
            inside &= ok.reshape([-1 if i == d else 1 for i in range(rank)])
        y = np.where(inside, y, fill)
    return [y]


@implements("PADDING")
def padding(layer, ins):
    x = ins[0]
    pre, post = dims(layer.pre_padding_nd), dims(layer.post_padding_nd)
    lead = x.ndim - len(pre)
    return [pad_axes(x, [0] * lead + pre, [0] * lead + post, 0)]


def pad_axes(x: np.ndarray, pre, post, value) -> np.ndarray:
    """Pad (positive) or crop (negative) every axis by pre/post elements."""
    crop = tuple(slice(max(-a, 0), x.shape[i] - max(-b, 0)) for i, (a, b) in enumerate(zip(pre, post)))
    x = x[crop]
    widths = [(max(a, 0), max(b, 0)) for a, b in zip(pre, post)]
    if any(w != (0, 0) for w in widths):
        x = np.pad(x, widths, mode="constant", constant_values=value)
    return x


@implements("GATHER")
def gather(layer, ins):
    data, indices = ins[0], ins[1].astype(np.int64)
    mode = enum_name(layer.mode)
    batch = int(layer.num_elementwise_dims)
    axis = normalize_axis(int(layer.axis), data.ndim)
    if mode == "DEFAULT":
        extent = data.shape[axis]
        indices = _wrap_indices(layer, indices, extent)
        if batch == 0:
            return [np.take(data, indices, axis=axis)]
        # one leading dimension shared by data and indices
        return [np.stack([np.take(data[b], indices[b], axis=axis - 1) for b in range(data.shape[0])])]
    if mode == "ELEMENT":
        return [np.take_along_axis(data, _wrap_indices(layer, indices, data.shape[axis]), axis=axis)]
    if mode == "ND":
        return [_gather_nd(layer, data, indices, batch)]
    raise UnsupportedLayerError(layer, f"gather mode {mode}")


def _wrap_indices(layer, indices: np.ndarray, extent: int) -> np.ndarray:
    """Negative indices count from the end (TensorRT's gather accepts [-extent, extent))."""
    if indices.size and (indices.min() < -extent or indices.max() >= extent):
        raise EvaluationError(f"layer '{layer.name}': index out of range [-{extent}, {extent})")
    return np.where(indices < 0, indices + extent, indices)


def _gather_nd(layer, data, indices, batch: int):
    depth = indices.shape[-1]
    batch_shape = data.shape[:batch]
    nb = int(np.prod(batch_shape, dtype=np.int64))
    data_b = data.reshape((nb,) + data.shape[batch:])
    idx_b = indices.reshape((nb,) + indices.shape[batch:])
    coords = [
        _wrap_indices(layer, idx_b[..., j], data_b.shape[1 + j]) for j in range(depth)
    ]
    b = np.arange(nb).reshape((nb,) + (1,) * (idx_b.ndim - 2))
    out = data_b[(b, *coords)]
    return out.reshape(batch_shape + out.shape[1:])


@implements("SCATTER")
def scatter(layer, ins):
    data, indices, updates = ins
    out = data.copy()
    mode = enum_name(layer.mode)
    indices = indices.astype(np.int64)
    if mode == "ELEMENT":
        axis = normalize_axis(int(layer.axis), data.ndim)
        np.put_along_axis(out, _wrap_indices(layer, indices, data.shape[axis]), updates, axis=axis)
        return [out]
    if mode == "ND":
        depth = indices.shape[-1]
        coords = tuple(_wrap_indices(layer, indices[..., j], data.shape[j]) for j in range(depth))
        out[coords] = updates
        return [out]
    raise UnsupportedLayerError(layer, f"scatter mode {mode}")


@implements("SELECT")
def select(layer, ins):
    condition, a, b = ins
    return [np.where(condition, a, b)]


@implements("NON_ZERO")
def non_zero(layer, ins):
    return [np.array(np.nonzero(ins[0]), dtype=np.int64).reshape(ins[0].ndim, -1)]


@implements("ONE_HOT")
def one_hot(layer, ins):
    indices, values, depth = ins[0].astype(np.int64), ins[1], int(values_of(ins[2])[0])
    indices = np.where(indices < 0, indices + depth, indices)  # out-of-range rows stay all "off"
    hot = indices[..., None] == np.arange(depth)
    axis = normalize_axis(int(layer.axis), indices.ndim + 1)
    hot = np.moveaxis(hot, -1, axis)
    return [np.where(hot, values[1], values[0])]


@implements("REVERSE_SEQUENCE")
def reverse_sequence(layer, ins):
    x, lengths = ins
    batch_axis, seq_axis = int(layer.batch_axis), int(layer.sequence_axis)
    t = np.arange(x.shape[seq_axis])
    lengths = lengths.astype(np.int64)
    # source position of each (batch, time): reversed inside the sequence's length, kept after it
    src = np.where(t[None, :] < lengths[:, None], lengths[:, None] - 1 - t[None, :], t[None, :])
    shape = [1] * x.ndim
    shape[batch_axis], shape[seq_axis] = x.shape[batch_axis], x.shape[seq_axis]
    order = (batch_axis, seq_axis) if batch_axis < seq_axis else (seq_axis, batch_axis)
    src = src if order == (batch_axis, seq_axis) else src.T
    return [np.take_along_axis(x, np.broadcast_to(src.reshape(shape), x.shape), axis=seq_axis)]


@implements("FILL")
def fill(layer, ins):
    op = enum_name(layer.operation)
    if op != "LINSPACE":
        raise UnsupportedLayerError(layer, f"fill operation {op} (random values cannot be reproduced)")
    shape = values_of(ins[0]) if optional_input(ins, 0) is not None else dims(layer.shape)
    alpha = ins[1] if optional_input(ins, 1) is not None else np.asarray(layer.alpha)
    beta = ins[2] if optional_input(ins, 2) is not None else np.asarray(layer.beta)
    target = np_dtype(layer.to_type)
    wide = np.int64 if target.kind in "iu" else np.float64
    alpha = np.asarray(alpha, wide).reshape(())
    beta = np.asarray(beta, wide).reshape(-1)
    beta = np.broadcast_to(beta, (len(shape),)) if beta.size == 1 else beta
    out = np.full(shape, alpha, dtype=wide)
    for d, delta in enumerate(beta):  # value = alpha + sum_d beta[d] * index_d
        out = out + delta * np.arange(shape[d], dtype=wide).reshape([-1 if i == d else 1 for i in range(len(shape))])
    return [out.astype(target)]


@implements("CONDITION")
def condition(layer, ins):
    return []  # its condition is read by the conditional's output layers (core._link_conditionals)


@implements("CONDITIONAL_INPUT")
def conditional_input(layer, ins):
    return [ins[0]]


@implements("CONDITIONAL_OUTPUT")
def conditional_output(layer, ins):
    true_value, false_value, cond = ins
    return [true_value if bool(np.asarray(cond).reshape(())) else false_value]


@implements("ASSERTION")
def assertion(layer, ins):
    if not np.all(ins[0]):
        raise EvaluationError(f"layer '{layer.name}' (ASSERTION) failed: {layer.message}")
    return []


# ---------------------------------------------------------------- pointwise


def _int_div(a, b):
    """Integer division truncating toward zero (C semantics), as TensorRT's DIV on integers."""
    q = np.floor_divide(a, b)
    adjust = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return q + adjust.astype(q.dtype)


_ELEMENTWISE = {
    "SUM": np.add, "PROD": np.multiply, "SUB": np.subtract, "MAX": np.maximum, "MIN": np.minimum,
    "AND": np.logical_and, "OR": np.logical_or, "XOR": np.logical_xor,
    "EQUAL": np.equal, "GREATER": np.greater, "LESS": np.less,
}


@implements("ELEMENTWISE")
def elementwise(layer, ins):
    a, b = (compute_float(v) for v in ins)
    op = enum_name(layer.op)
    with np.errstate(all="ignore"):
        if op in _ELEMENTWISE:
            return [_ELEMENTWISE[op](a, b)]
        integer = a.dtype.kind in "iu"
        if op == "DIV":
            return [_int_div(a, b) if integer else np.divide(a, b)]
        if op == "FLOOR_DIV":
            return [np.floor_divide(a, b) if integer else np.floor(np.divide(a, b))]
        if op == "POW":
            return [np.power(a, b)]
    raise UnsupportedLayerError(layer, f"elementwise operation {op}")


def _erf(x: np.ndarray) -> np.ndarray:
    # NumPy has no erf; math.erf is exact to double precision and these tensors are small.
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64)).astype(x.dtype)


_UNARY = {
    "EXP": np.exp, "LOG": np.log, "SQRT": np.sqrt, "ABS": np.abs, "NEG": np.negative, "SIN": np.sin, "COS": np.cos,
    "TAN": np.tan, "SINH": np.sinh, "COSH": np.cosh, "ASIN": np.arcsin, "ACOS": np.arccos, "ATAN": np.arctan,
    "ASINH": np.arcsinh, "ACOSH": np.arccosh, "ATANH": np.arctanh, "CEIL": np.ceil, "FLOOR": np.floor,
    "ERF": _erf, "NOT": np.logical_not, "SIGN": np.sign, "ROUND": np.rint,  # rint: half to even
    "ISINF": np.isinf, "ISNAN": np.isnan, "RECIP": lambda x: np.divide(1, x).astype(x.dtype),
}


@implements("UNARY")
def unary(layer, ins):
    op = enum_name(layer.op)
    if op not in _UNARY:
        raise UnsupportedLayerError(layer, f"unary operation {op}")
    with np.errstate(all="ignore"):
        return [_UNARY[op](compute_float(ins[0]))]


def _sigmoid(x):
    return 0.5 * (np.tanh(0.5 * x) + 1)  # stable for large |x|


_ACTIVATIONS = {
    "RELU": lambda x, a, b: np.maximum(x, 0),
    "SIGMOID": lambda x, a, b: _sigmoid(x),
    "TANH": lambda x, a, b: np.tanh(x),
    "LEAKY_RELU": lambda x, a, b: np.where(x >= 0, x, a * x),
    "ELU": lambda x, a, b: np.where(x >= 0, x, a * np.expm1(x)),
    "SELU": lambda x, a, b: b * np.where(x >= 0, x, a * np.expm1(x)),
    "SOFTSIGN": lambda x, a, b: x / (1 + np.abs(x)),
    "SOFTPLUS": lambda x, a, b: a * np.logaddexp(0, b * x),
    "CLIP": lambda x, a, b: np.clip(x, a, b),
    "HARD_SIGMOID": lambda x, a, b: np.clip(a * x + b, 0, 1),
    "SCALED_TANH": lambda x, a, b: a * np.tanh(b * x),
    "THRESHOLDED_RELU": lambda x, a, b: np.where(x > a, x, 0),
    "GELU_ERF": lambda x, a, b: 0.5 * x * (1 + _erf(x / np.sqrt(2).astype(x.dtype))),
    "GELU_TANH": lambda x, a, b: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi).astype(x.dtype) * (x + 0.044715 * x**3))),
}


@implements("ACTIVATION")
def activation(layer, ins):
    kind = enum_name(layer.type)  # IActivationLayer.type is the ActivationType
    x = compute_float(ins[0])
    check_dtype(layer, x, "f")
    if kind not in _ACTIVATIONS:
        raise UnsupportedLayerError(layer, f"activation {kind}")
    alpha, beta = np.float32(layer.alpha), np.float32(layer.beta)
    with np.errstate(over="ignore"):
        return [_ACTIVATIONS[kind](x, alpha, beta)]


@implements("PARAMETRIC_RELU")
def parametric_relu(layer, ins):
    x, slope = (compute_float(v) for v in ins)
    return [np.where(x >= 0, x, slope * x)]


@implements("SCALE")
def scale(layer, ins):
    x = compute_float(ins[0])
    mode = enum_name(layer.mode)
    axis = normalize_axis(int(layer.channel_axis), x.ndim)

    def param(weights, default):
        w = np.asarray(weights if weights is not None else [], dtype=np.float32).reshape(-1)
        if w.size == 0:
            return np.float32(default)
        if mode == "UNIFORM":
            return w.reshape(())
        if mode == "CHANNEL":
            return w.reshape([-1 if i == axis else 1 for i in range(x.ndim)])
        if mode == "ELEMENTWISE":
            return w.reshape(x.shape[axis:])
        raise UnsupportedLayerError(layer, f"scale mode {mode}")

    with np.errstate(all="ignore"):
        return [np.power(x * param(layer.scale, 1) + param(layer.shift, 0), param(layer.power, 1))]


@implements("QUANTIZE", "DEQUANTIZE")
def quantize(layer, ins):
    x, scale_ = compute_float(ins[0]), compute_float(ins[1])
    zero_point = optional_input(ins, 2)
    target = np_dtype(layer.to_type)
    if target is None:
        raise UnsupportedLayerError(layer, f"to_type {trt_type_name(layer.to_type)}")
    try:
        block = dims(layer.block_shape)
    except (RuntimeError, TypeError):  # raised when no block shape is set
        block = []
    if any(v > 1 for v in block):
        raise UnsupportedLayerError(layer, "block quantization (block_shape)")
    if scale_.ndim == 1 and scale_.size > 1 and x.ndim > 1:  # per-axis
        axis = normalize_axis(int(layer.axis), x.ndim)
        reshape = [-1 if i == axis else 1 for i in range(x.ndim)]
        scale_ = scale_.reshape(reshape)
        zero_point = None if zero_point is None else zero_point.reshape(reshape)
    elif scale_.ndim == x.ndim and scale_.shape != x.shape:  # blocked: one scale per block of elements
        for a in range(x.ndim):
            if scale_.shape[a] not in (1, x.shape[a]):
                scale_ = np.repeat(scale_, x.shape[a] // scale_.shape[a], axis=a)
                if zero_point is not None:
                    zero_point = np.repeat(zero_point, x.shape[a] // zero_point.shape[a], axis=a)
    zp = np.float32(0) if zero_point is None else compute_float(zero_point).astype(np.float32)
    if layer_type_name(layer) == "DEQUANTIZE":
        return [(compute_float(x).astype(np.float32) - zp) * scale_]
    q = x / scale_
    if target.kind in "iu" or target == np.dtype(ml_dtypes.int4):
        info = ml_dtypes.iinfo(target)
        return [np.clip(np.rint(q) + zp, int(info.min), int(info.max))]
    return [q + zp]  # FP8: the store rounds to nearest


# ---------------------------------------------------------------- reductions and normalization

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


# ---------------------------------------------------------------- matrix products


@implements("MATRIX_MULTIPLY")
def matrix_multiply(layer, ins):
    a, b = (compute_float(v) for v in ins)
    check_dtype(layer, a, "f")
    op0, op1 = enum_name(layer.op0), enum_name(layer.op1)
    if op0 == "VECTOR":
        a = a[..., None, :]
    elif op0 == "TRANSPOSE":
        a = np.swapaxes(a, -1, -2)
    if op1 == "VECTOR":
        b = b[..., :, None]
    elif op1 == "TRANSPOSE":
        b = np.swapaxes(b, -1, -2)
    y = _batched_matmul(a, b)
    if op0 == "VECTOR":
        y = y[..., 0, :]
    if op1 == "VECTOR":
        y = y[..., 0]
    return [y]


def _batched_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.matmul, but a weight shared by every batch ([1, ..., K, N]) makes one large GEMM instead of
    one small GEMM per batch: NumPy loops over broadcast batches in Python-level C code, one call each."""
    if b.ndim >= 2 and all(d == 1 for d in b.shape[:-2]) and a.ndim >= 2:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        flat = np.broadcast_to(a, batch + a.shape[-2:]).reshape(-1, a.shape[-1])
        return (flat @ b.reshape(b.shape[-2:])).reshape(batch + (a.shape[-2], b.shape[-1]))
    # NumPy hands stacked matrices to BLAS only when each is contiguous; transposed views (shuffle
    # layers return views) would take its slow generic loop, ~100x slower
    return np.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))


@implements("EINSUM")
def einsum(layer, ins):
    return [np.einsum(layer.equation, *(compute_float(v) for v in ins))]


def _spatial_padding(layer, mode: str, spatial, window, stride, pre, post, transposed: bool = False):
    """(pre, post, output size) per spatial dimension for TensorRT's padding modes."""
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        out = [s * st if transposed else -(-s // st) for s, st in zip(spatial, stride)]
        if transposed:
            total = [max(0, (s - 1) * st + w - o) for s, st, w, o in zip(spatial, stride, window, out)]
        else:
            total = [max(0, (o - 1) * st + w - s) for s, st, w, o in zip(spatial, stride, window, out)]
        first = [t // 2 if mode == "SAME_UPPER" else t - t // 2 for t in total]
        return first, [t - f for t, f in zip(total, first)], out
    if transposed:
        out = [(s - 1) * st + w - a - b for s, st, w, a, b in zip(spatial, stride, window, pre, post)]
        return pre, post, out
    if mode == "EXPLICIT_ROUND_DOWN":
        out = [(s + a + b - w) // st + 1 for s, a, b, w, st in zip(spatial, pre, post, window, stride)]
    elif mode == "EXPLICIT_ROUND_UP":
        out = [-(-(s + a + b - w) // st) + 1 for s, a, b, w, st in zip(spatial, pre, post, window, stride)]
    else:
        raise UnsupportedLayerError(layer, f"padding mode {mode}")
    return pre, post, out


def _windows(x: np.ndarray, window, stride, dilation, out) -> np.ndarray:
    """[N, C, *out, *window] view of the (already padded) input's sliding windows."""
    nd = len(window)
    spans = [d * (w - 1) + 1 for w, d in zip(window, dilation)]
    view = sliding_window_view(x, spans, axis=tuple(range(2, 2 + nd)))
    index = (slice(None), slice(None))
    index += tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, stride))
    index += tuple(slice(None, None, d) for d in dilation)
    return view[index]


def _pad_for_windows(x, pre, post, out, window, stride, dilation, value):
    """Pad/crop to exactly the extent the output's windows read (round-up modes read past `post`)."""
    spans = [d * (w - 1) + 1 for w, d in zip(window, dilation)]
    need = [(o - 1) * s + sp for o, s, sp in zip(out, stride, spans)]
    nd = len(window)
    post = [n - (sz + a) for n, sz, a in zip(need, x.shape[2:], pre)]
    return pad_axes(x, [0, 0] + list(pre), [0, 0] + post, value), post


def _kernel_and_bias(layer, ins, kernel_shape):
    kernel = ins[1] if optional_input(ins, 1) is not None else np.asarray(layer.kernel)
    kernel = compute_float(np.asarray(kernel)).astype(np.float32).reshape(kernel_shape)
    bias = ins[2] if optional_input(ins, 2) is not None else np.asarray(layer.bias)
    bias = None if bias is None or np.asarray(bias).size == 0 else compute_float(np.asarray(bias)).astype(np.float32)
    return kernel, bias


@implements("CONVOLUTION")
def convolution(layer, ins):
    x = compute_float(ins[0])
    check_dtype(layer, x, "f")
    window = dims(layer.kernel_size_nd)
    nd = len(window)
    groups, out_maps = int(layer.num_groups), int(layer.num_output_maps)
    n, c = x.shape[:2]
    kernel, bias = _kernel_and_bias(layer, ins, (out_maps, c // groups, *window))
    stride, dilation = dims(layer.stride_nd), dims(layer.dilation_nd)
    spans = [d * (w - 1) + 1 for w, d in zip(window, dilation)]
    pre, post, out = _spatial_padding(
        layer, enum_name(layer.padding_mode), x.shape[2:], spans, stride, dims(layer.pre_padding), dims(layer.post_padding)
    )
    padded, _ = _pad_for_windows(x, pre, post, out, window, stride, dilation, 0)
    cols = _windows(padded, window, stride, dilation, out)  # [N, C, *out, *window]
    positions = int(np.prod(out, dtype=np.int64))
    taps = int(np.prod(window, dtype=np.int64))
    # im2col per group: [G, N*positions, C/G*taps] @ [G, C/G*taps, M/G]
    cols = cols.reshape(n, groups, c // groups, positions, taps).transpose(1, 0, 3, 2, 4)
    cols = cols.reshape(groups, n * positions, (c // groups) * taps)
    weights = kernel.reshape(groups, out_maps // groups, (c // groups) * taps).transpose(0, 2, 1)
    y = np.matmul(cols, weights)  # [G, N*positions, M/G]
    y = y.reshape(groups, n, positions, out_maps // groups).transpose(1, 0, 3, 2).reshape(n, out_maps, *out)
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * nd)
    return [y]


@implements("DECONVOLUTION")
def deconvolution(layer, ins):
    x = compute_float(ins[0])
    check_dtype(layer, x, "f")
    window = dims(layer.kernel_size_nd)
    nd = len(window)
    groups, out_maps = int(layer.num_groups), int(layer.num_output_maps)
    n, c = x.shape[:2]
    kernel, bias = _kernel_and_bias(layer, ins, (c, out_maps // groups, *window))
    stride, dilation = dims(layer.stride_nd), dims(layer.dilation_nd)
    spans = [d * (w - 1) + 1 for w, d in zip(window, dilation)]
    spatial = list(x.shape[2:])
    pre, post, out = _spatial_padding(
        layer, enum_name(layer.padding_mode), spatial, spans, stride,
        dims(layer.pre_padding), dims(layer.post_padding), transposed=True,
    )
    full = [(s - 1) * st + sp for s, st, sp in zip(spatial, stride, spans)]
    y = np.zeros((n, groups, out_maps // groups, *full), dtype=np.float32)
    xg = x.reshape(n, groups, c // groups, *spatial)
    kg = kernel.reshape(groups, c // groups, out_maps // groups, *window)
    # every kernel tap scatters x * w into the output at stride spacing
    for tap in np.ndindex(*window):
        contribution = np.einsum("ngc...,gcm->ngm...", xg, kg[(slice(None), slice(None), slice(None)) + tap])
        target = tuple(slice(t * d, t * d + (s - 1) * st + 1, st) for t, d, s, st in zip(tap, dilation, spatial, stride))
        y[(slice(None), slice(None), slice(None)) + target] += contribution
    y = y.reshape(n, out_maps, *full)
    y = pad_axes(y, [0, 0] + [-p for p in pre], [0, 0] + [-p for p in post], 0)
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * nd)
    return [y]


@implements("POOLING")
def pooling(layer, ins):
    x = compute_float(ins[0])
    check_dtype(layer, x, "f")
    kind = enum_name(layer.type)  # IPoolingLayer.type is the PoolingType
    window = dims(layer.window_size_nd)
    nd = len(window)
    stride = dims(layer.stride_nd)
    pre, post, out = _spatial_padding(
        layer, enum_name(layer.padding_mode), x.shape[2:], window, stride, dims(layer.pre_padding), dims(layer.post_padding)
    )
    ones = [1] * nd
    window_axes = tuple(range(2 + nd, 2 + 2 * nd))
    if kind == "MAX":
        padded, _ = _pad_for_windows(x, pre, post, out, window, stride, ones, -np.inf)
        return [_windows(padded, window, stride, ones, out).max(axis=window_axes)]
    if kind != "AVERAGE":
        raise UnsupportedLayerError(layer, f"pooling type {kind}")
    padded, _ = _pad_for_windows(x, pre, post, out, window, stride, ones, 0)
    sums = _windows(padded, window, stride, ones, out).sum(axis=window_axes)
    # the divisor counts input cells, plus explicit padding unless excluded; never the
    # extra cells a round-up output reads past the padding
    count = np.ones((1, 1) + x.shape[2:], dtype=np.float32)
    pad_value = 0 if layer.average_count_excludes_padding else 1
    count = pad_axes(count, [0, 0] + list(pre), [0, 0] + list(post), pad_value)
    count, _ = _pad_for_windows(count, [0] * nd, [0] * nd, out, window, stride, ones, 0)
    divisor = _windows(count, window, stride, ones, out).sum(axis=window_axes)
    return [sums / divisor]


# ---------------------------------------------------------------- resize


def _source_coordinates(layer, n_in: int, n_out: int, scale: float) -> np.ndarray:
    """Where each output position samples the input, by the layer's coordinate transformation."""
    o = np.arange(n_out, dtype=np.float64)
    transform = enum_name(layer.coordinate_transformation)
    if n_out == 1 and enum_name(layer.selector_for_single_pixel) == "UPPER":
        return np.zeros(1)  # e.g. pytorch_half_pixel: a single output pixel samples the first input pixel
    if transform == "HALF_PIXEL":
        return (o + 0.5) / scale - 0.5
    if transform == "ASYMMETRIC":
        return o / scale
    if transform == "ALIGN_CORNERS":
        return o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(1)
    raise UnsupportedLayerError(layer, f"coordinate transformation {transform}")


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution weights of the four taps at offsets -1, 0, 1, 2 for fraction t."""
    d = np.abs(np.stack([t + 1, t, 1 - t, 2 - t], axis=-1))
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _resize_matrix(layer, n_in: int, n_out: int, scale: float) -> np.ndarray:
    """[n_out, n_in] interpolation weights of one axis."""
    x = _source_coordinates(layer, n_in, n_out, scale)
    mode = enum_name(layer.resize_mode)
    matrix = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if mode == "NEAREST":
        rounding = enum_name(layer.nearest_rounding)
        index = {"FLOOR": np.floor, "CEIL": np.ceil, "HALF_DOWN": lambda v: np.ceil(v - 0.5),
                 "HALF_UP": lambda v: np.floor(v + 0.5)}[rounding](x)
        matrix[rows, np.clip(index, 0, n_in - 1).astype(np.int64)] = 1
        return matrix
    if mode == "LINEAR":
        x = np.clip(x, 0, n_in - 1)
        low = np.floor(x).astype(np.int64)
        high = np.minimum(low + 1, n_in - 1)
        np.add.at(matrix, (rows, low), 1 - (x - low))
        np.add.at(matrix, (rows, high), x - low)
        return matrix
    if mode == "CUBIC":
        base = np.floor(x).astype(np.int64)
        weights = _cubic_weights(x - base, float(layer.cubic_coeff))
        taps = base[:, None] + np.arange(-1, 3)
        if layer.exclude_outside:  # taps outside the input get no weight; the rest renormalized
            weights = np.where((taps >= 0) & (taps < n_in), weights, 0)
            weights = weights / weights.sum(axis=1, keepdims=True)
        np.add.at(matrix, (np.repeat(rows, 4), np.clip(taps, 0, n_in - 1).reshape(-1)), weights.reshape(-1))
        return matrix
    raise UnsupportedLayerError(layer, f"resize mode {mode}")


@implements("RESIZE")
def resize(layer, ins):
    x = compute_float(ins[0])
    if optional_input(ins, 1) is not None:  # a shape tensor (output size) or float scales
        given = np.asarray(ins[1])
        scales = given.astype(np.float64).tolist() if is_float(given) else None
        out = [int(np.floor(n * s)) for n, s in zip(x.shape, scales)] if scales else values_of(given)
    elif len(layer.scales):
        scales = [float(v) for v in layer.scales]
        out = [int(np.floor(n * s)) for n, s in zip(x.shape, scales)]
    else:
        scales, out = None, dims(layer.shape)
    y = x.astype(np.float64)
    for axis, (n_in, n_out) in enumerate(zip(x.shape, out)):
        scale = scales[axis] if scales else n_out / n_in
        if n_in == n_out and scale == 1:
            continue
        matrix = _resize_matrix(layer, n_in, n_out, scale)
        y = np.moveaxis(np.tensordot(matrix, np.moveaxis(y, axis, 0), axes=1), 0, axis)
    return [y.astype(np.float32) if x.dtype != np.float64 else y]


def _reflect(v: np.ndarray, low: float, high: float) -> np.ndarray:
    """Reflect coordinates at the borders until they fall inside [low, high]."""
    span = high - low
    below, above = low - v, v - high
    dx = np.where(v < low, below, np.where(v > high, above, 0.0))
    bounces = np.floor(dx / span)
    rest = dx - bounces * span
    even = bounces % 2 == 0
    from_low = np.where(even, low + rest, high - rest)
    from_high = np.where(even, high - rest, low + rest)
    return np.where(v < low, from_low, np.where(v > high, from_high, v))


@implements("GRID_SAMPLE")
def grid_sample(layer, ins):
    """Sample x [N, C, *spatial] at grid [N, *out, nd] (normalized x, y[, z] in [-1, 1])."""
    x, grid = compute_float(ins[0]).astype(np.float64), compute_float(ins[1]).astype(np.float64)
    mode, padding = enum_name(layer.interpolation_mode), enum_name(layer.sample_mode)
    align = bool(layer.align_corners)
    if padding not in ("FILL", "CLAMP", "REFLECT"):
        raise UnsupportedLayerError(layer, f"sample mode {padding}")
    spatial = x.shape[2:]
    nd = len(spatial)
    coords = []
    for d, size in enumerate(spatial):
        g = grid[..., nd - 1 - d]  # the grid's last coordinate indexes the first spatial dimension
        v = (g + 1) / 2 * (size - 1) if align else ((g + 1) * size - 1) / 2
        if mode == "NEAREST":
            v = np.rint(v)
        low, high = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
        if padding == "CLAMP":
            v = np.where((v < low) | (v > high), np.clip(v, 0, size - 1), v)
        elif padding == "REFLECT":
            v = _reflect(v, low, high)
        coords.append((v, low, high))

    def taps(v):
        """(index, weight) pairs of one dimension's interpolation."""
        if mode == "NEAREST":
            return [(v.astype(np.int64), np.ones_like(v))]
        base = np.floor(v)
        t = v - base
        if mode == "LINEAR":
            return [(base.astype(np.int64), 1 - t), (base.astype(np.int64) + 1, t)]
        if mode == "CUBIC":
            weights = _cubic_weights(t, -0.75)
            return [(base.astype(np.int64) + k, weights[..., k + 1]) for k in range(-1, 3)]
        raise UnsupportedLayerError(layer, f"interpolation mode {mode}")

    n = x.shape[0]
    batch = np.arange(n).reshape((n,) + (1,) * (grid.ndim - 2))
    out = np.zeros((n,) + grid.shape[1:-1] + (x.shape[1],))
    per_dim = [taps(v) for v, _, _ in coords]
    for combination in np.ndindex(*[len(t) for t in per_dim]):
        weight = np.ones(grid.shape[:-1])
        index, inside = [], np.ones(grid.shape[:-1], dtype=bool)
        for d, k in enumerate(combination):
            i, w = per_dim[d][k]
            size, (_, low, high) = spatial[d], coords[d]
            weight = weight * w
            if padding == "FILL":
                inside &= (i >= 0) & (i < size)
                i = np.clip(i, 0, size - 1)
            elif padding == "CLAMP":
                i = np.clip(i, 0, size - 1)
            else:
                i = np.clip(_reflect(i.astype(np.float64), low, high).astype(np.int64), 0, size - 1)
            index.append(i)
        values = np.moveaxis(x, 1, -1)[(batch, *index)]  # [N, *out, C]
        out += np.where(inside[..., None], values, 0) * weight[..., None]
    return [np.moveaxis(out, -1, 1)]


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


def _iou_matrix(boxes: np.ndarray, center_sizes: bool) -> np.ndarray:
    """Pairwise IoU of [N, 4] boxes: corner pairs in either order, or (x, y, w, h) centers."""
    if center_sizes:
        xc, yc, w, h = boxes.T
        x1, x2, y1, y2 = xc - w / 2, xc + w / 2, yc - h / 2, yc + h / 2
    else:
        a1, b1, a2, b2 = boxes.T  # (y1, x1, y2, x2); any diagonal pair
        y1, y2 = np.minimum(a1, a2), np.maximum(a1, a2)
        x1, x2 = np.minimum(b1, b2), np.maximum(b1, b2)
    area = (x2 - x1) * (y2 - y1)
    ix = np.clip(np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]), 0, None)
    iy = np.clip(np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]), 0, None)
    inter = ix * iy
    union = area[:, None] + area[None] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@implements("NMS")
def nms(layer, ins):
    """Greedy per (batch, class) suppression; rows ordered by batch, then by decreasing score
    (TensorRT's documented order: classes interleave by score, not class after class)."""
    boxes, scores = compute_float(ins[0]).astype(np.float64), compute_float(ins[1]).astype(np.float64)
    limit = int(np.asarray(ins[2]).reshape(()))
    iou_threshold = float(np.asarray(ins[3]).reshape(())) if optional_input(ins, 3) is not None else 0.0
    score_threshold = float(np.asarray(ins[4]).reshape(())) if optional_input(ins, 4) is not None else 0.0
    center = enum_name(layer.bounding_box_format) == "CENTER_SIZES"
    rows = []
    for b in range(scores.shape[0]):
        picked = []
        for c in range(scores.shape[2]):
            class_boxes = boxes[b] if boxes.ndim == 3 else boxes[b, :, c]
            iou = _iou_matrix(class_boxes, center)
            order = np.argsort(-scores[b, :, c], kind="stable")
            chosen: list[int] = []
            for i in order:
                if len(chosen) >= limit or scores[b, i, c] <= score_threshold:
                    break
                if all(iou[i, j] <= iou_threshold for j in chosen):
                    chosen.append(int(i))
            picked += [(-scores[b, i, c], c, rank, i) for rank, i in enumerate(chosen)]
        rows += [(b, c, i) for _, c, _, i in sorted(picked)]
    selected = np.array(rows, dtype=np.int64).reshape(-1, 3)
    return [selected, np.array(len(rows), dtype=np.int32)]


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


# ---------------------------------------------------------------- attention and plugins


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



@implements("PLUGIN_V3", "PLUGIN_V2")
def plugin_layer(layer, ins):
    name, version, namespace = plugin_identity(layer.plugin)
    try:
        reference = lookup_plugin_reference(name, version, namespace)
    except KeyError as exc:
        raise UnsupportedLayerError(layer, exc.args[0]) from None
    return list(reference(list(ins), plugin_fields(layer.plugin)))
