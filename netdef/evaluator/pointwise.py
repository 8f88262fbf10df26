"""Pointwise layers: elementwise, unary, activation, parametric ReLU, scale, quantize / dequantize."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from .core import UnsupportedLayerError, layer_type_name
from .dtypes import compute_float, np_dtype, trt_type_name
from .registry import implements, enum_name, dims, normalize_axis, optional_input, check_dtype


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
