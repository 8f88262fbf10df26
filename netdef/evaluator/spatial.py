"""Layers over spatial windows and coordinates: convolution, deconvolution, pooling, resize,
grid sample, non-max suppression."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .core import UnsupportedLayerError
from .dtypes import compute_float, is_float
from .registry import implements, enum_name, dims, values_of, optional_input, check_dtype, pad_axes


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


def _conv_operands(layer, ins, transposed: bool):
    """What (de)convolution share: the FP32 input, window, groups, kernel ([out, in/g, ...] or, transposed,
    [in, out/g, ...]), bias, stride, dilation and each dilated window's span."""
    x = compute_float(ins[0])
    check_dtype(layer, x, "f")
    window = dims(layer.kernel_size_nd)
    groups, out_maps = int(layer.num_groups), int(layer.num_output_maps)
    n, c = x.shape[:2]
    kernel_shape = (c, out_maps // groups, *window) if transposed else (out_maps, c // groups, *window)
    kernel, bias = _kernel_and_bias(layer, ins, kernel_shape)
    stride, dilation = dims(layer.stride_nd), dims(layer.dilation_nd)
    spans = [d * (w - 1) + 1 for w, d in zip(window, dilation)]
    return x, window, len(window), groups, out_maps, n, c, kernel, bias, stride, dilation, spans


@implements("CONVOLUTION")
def convolution(layer, ins):
    x, window, nd, groups, out_maps, n, c, kernel, bias, stride, dilation, spans = _conv_operands(layer, ins, transposed=False)
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
    x, window, nd, groups, out_maps, n, c, kernel, bias, stride, dilation, spans = _conv_operands(layer, ins, transposed=True)
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
