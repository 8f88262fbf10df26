"""NumPy implementations of TensorRT layers, following TensorRT's documented layer semantics.

Each implementation takes the (downcast) layer and its input values and returns its output values.
Floating-point work happens in float32 (FP16/BF16 inputs are widened first, see dtypes.compute_float);
the caller stores each result in the output tensor's declared type, which rounds FP16 outputs.
Anything a layer does that is not implemented raises UnsupportedLayerError naming the attribute.
Importing this module registers every implementation (by LayerType name) in LAYER_IMPLEMENTATIONS.
"""
from . import attention, linear, movement, plugins, pointwise, reductions, spatial  # noqa: F401  (register)
from .registry import LAYER_IMPLEMENTATIONS

__all__ = ["LAYER_IMPLEMENTATIONS"]
