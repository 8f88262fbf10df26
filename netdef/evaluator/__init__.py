"""Evaluate a TensorRT network definition on the CPU with NumPy (see docs/evaluator.md).

    from netdef.evaluator import evaluate
    outputs = evaluate(network, {"speech": speech, "speech_lengths": lengths})
    every_tensor = evaluate(network, inputs, return_all=True)
"""
from .core import EvaluationError, UnsupportedLayerError, evaluate
from .plugins import register_plugin_reference, unregister_plugin_reference
from . import layers as _layers  # noqa: F401  (registers the layer implementations)

__all__ = [
    "evaluate",
    "EvaluationError",
    "UnsupportedLayerError",
    "register_plugin_reference",
    "unregister_plugin_reference",
]
