"""TensorRT data types as NumPy dtypes (the table lives in netdef.backend), and FP32 widening."""
from __future__ import annotations

import ml_dtypes
import numpy as np


from ..backend import np_dtype, trt_type_name  # noqa: E402,F401 - the one TensorRT -> NumPy table


FP8_E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
LOW_PRECISION_FLOATS = (
    np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16), np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float4_e2m1fn)
)


def compute_float(x: np.ndarray) -> np.ndarray:
    """FP16/BF16/FP8 values widened to float32: TensorRT's kernels compute (accumulate) in FP32."""
    if x.dtype in LOW_PRECISION_FLOATS:
        return x.astype(np.float32)
    return x


def is_float(x: np.ndarray) -> bool:
    return x.dtype.kind == "f" or x.dtype in LOW_PRECISION_FLOATS


def to_dtype(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """x converted to dtype. Conversion to FP8 E4M3 saturates (infinities and out-of-range values to
    +-448, NaN stays NaN), the `.satfinite` conversion of NVIDIA GPUs (PTX ISA, cvt) that E4M3 has to
    use: the format has no infinity."""
    if dtype == FP8_E4M3 and x.dtype != FP8_E4M3:
        x = np.clip(x.astype(np.float32), -448, 448)  # clip keeps NaN
    return x.astype(dtype)
