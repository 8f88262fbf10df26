"""The layer registry and the small helpers every layer implementation shares."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .core import UnsupportedLayerError
from .dtypes import is_float


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



def pad_axes(x: np.ndarray, pre, post, value) -> np.ndarray:
    """Pad (positive) or crop (negative) every axis by pre/post elements."""
    crop = tuple(slice(max(-a, 0), x.shape[i] - max(-b, 0)) for i, (a, b) in enumerate(zip(pre, post)))
    x = x[crop]
    widths = [(max(a, 0), max(b, 0)) for a, b in zip(pre, post)]
    if any(w != (0, 0) for w in widths):
        x = np.pad(x, widths, mode="constant", constant_values=value)
    return x
