"""Matrix products: matrix multiply (one GEMM for shared weights) and einsum."""
from __future__ import annotations

import numpy as np

from .dtypes import compute_float
from .registry import implements, enum_name, check_dtype


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
