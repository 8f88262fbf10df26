"""The plugins' NumPy references registered in netdef's CPU evaluator, so that a network with plugin
layers evaluates on the CPU exactly as the kernels compute (float64 inside, cast to the input's type).

    from plugins.cpu_reference import register_cpu_references
    register_cpu_references()   # idempotent
"""
from __future__ import annotations

import numpy as np

from . import reference
from .names import (
    ATTENTION_FIELD_HEADS,
    ATTENTION_PLUGIN_NAME,
    LAYERNORM_FIELD_EPS,
    LAYERNORM_FIELD_HAS_RESIDUAL,
    LAYERNORM_PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)


def _scalar(fields: dict, name: str, plugin: str):
    if name not in fields:
        raise KeyError(f"{plugin}: field '{name}' missing from the plugin's serialized fields {sorted(fields)}")
    return np.asarray(fields[name]).reshape(-1)[0]


def layernorm_plugin_reference(inputs: list[np.ndarray], fields: dict) -> list[np.ndarray]:
    eps = float(_scalar(fields, LAYERNORM_FIELD_EPS, LAYERNORM_PLUGIN_NAME))
    has_residual = bool(_scalar(fields, LAYERNORM_FIELD_HAS_RESIDUAL, LAYERNORM_PLUGIN_NAME))
    dtype = inputs[0].dtype
    if has_residual:
        x, residual, gamma, beta = inputs
        # The kernel normalises the unrounded FP32 sum (exact for FP16 inputs) and stores both rounded.
        total, normed = reference.layernorm_residual_ref(x, residual, gamma, beta, eps)
        return [total.astype(dtype), normed.astype(dtype)]
    x, gamma, beta = inputs
    return [reference.layernorm_ref(x, gamma, beta, eps).astype(dtype)]


def rel_pos_attention_plugin_reference(inputs: list[np.ndarray], fields: dict) -> list[np.ndarray]:
    heads = int(_scalar(fields, ATTENTION_FIELD_HEADS, ATTENTION_PLUGIN_NAME))
    q, k, v, p, u, w, lengths = inputs
    return [reference.rel_pos_attention_ref(q, k, v, p, u, w, lengths, heads).astype(q.dtype)]


def register_cpu_references() -> None:
    from netdef.evaluator.plugins import register_plugin_reference  # re-registering the same function is a no-op

    for name, fn in ((LAYERNORM_PLUGIN_NAME, layernorm_plugin_reference),
                     (ATTENTION_PLUGIN_NAME, rel_pos_attention_plugin_reference)):
        register_plugin_reference(name, version=PLUGIN_VERSION, namespace=PLUGIN_NAMESPACE)(fn)
