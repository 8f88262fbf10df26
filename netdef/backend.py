"""Which TensorRT is installed: full TensorRT first (what users run), TensorRT-RTX otherwise.

Everything in the project imports `trt` from here, never `tensorrt` directly, so one process uses one
backend and logs say which.
"""
from __future__ import annotations

import importlib
import logging

import ml_dtypes
import numpy as np

log = logging.getLogger("netdef")

_CANDIDATES = ("tensorrt", "tensorrt_rtx")


def _import_backend():
    errors = []
    for name in _CANDIDATES:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # a stub wheel raises at import, not ImportError only
            errors.append(f"{name}: {exc}")
            continue
        if hasattr(module, "Builder"):
            return name, module
        errors.append(f"{name}: imported but has no Builder (lean/dispatch runtime only)")
    raise ImportError(
        "no TensorRT builder found; install full TensorRT (`pip install tensorrt`) or TensorRT-RTX "
        "(`pip install tensorrt-rtx`). Tried: " + "; ".join(errors)
    )


BACKEND_NAME, trt = _import_backend()
VERSION: str = trt.__version__
IS_RTX: bool = BACKEND_NAME == "tensorrt_rtx"
# TensorRT 11 and TensorRT-RTX networks are always strongly typed; TensorRT 10 needs the flag.
MAJOR = int(VERSION.split(".")[0])
HAS_PLUGIN_V3 = hasattr(trt.INetworkDefinition, "add_plugin_v3")


# One logger for the whole process: TensorRT keeps the first logger a process hands it, so a
# short-lived second logger that is later freed can crash a later builder or parser.
LOGGER = trt.Logger(trt.Logger.WARNING)


# TensorRT DataType name -> NumPy dtype (bfloat16 and the FP8/FP4/INT4 types through ml_dtypes).
_NUMPY_TYPES = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "INT8": np.dtype(np.int8),
    "UINT8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
    "FP8": np.dtype(ml_dtypes.float8_e4m3fn),
    "INT4": np.dtype(ml_dtypes.int4),
    "FP4": np.dtype(ml_dtypes.float4_e2m1fn),
}


def trt_type_name(trt_dtype) -> str:
    return str(trt_dtype).split(".")[-1]


def np_dtype(trt_dtype) -> np.dtype | None:
    """NumPy dtype for a TensorRT DataType, None for types NumPy cannot hold (E8M0)."""
    return _NUMPY_TYPES.get(trt_type_name(trt_dtype))


def describe() -> str:
    return f"{BACKEND_NAME} {VERSION}"


def create_network(builder):
    """A strongly typed network: FP16 comes only from FP16 constants and explicit casts."""
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") and MAJOR < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return builder.create_network(flags)
