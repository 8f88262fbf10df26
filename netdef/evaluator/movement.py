"""Layers that move, select or generate values: constant, cast, shuffle, slice, gather, scatter,
concatenation, padding, fill, one-hot, conditionals, assertion ..."""
from __future__ import annotations

import numpy as np

from .core import EvaluationError, UnsupportedLayerError
from .dtypes import compute_float, is_float, np_dtype, to_dtype, trt_type_name
from .registry import implements, enum_name, dims, values_of, normalize_axis, optional_input, pad_axes, NARROW_QUANTIZED


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
