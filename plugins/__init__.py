"""CUDA kernels for LayerNorm(+residual) and WeNet's relative-position attention, their TensorRT IPluginV3
wrappers (plugins.trt_plugins, needs full TensorRT to build networks with them) and NumPy references
(plugins.reference). Importing this package imports neither TensorRT nor CUDA.
"""
from .names import (  # noqa: F401
    ATTENTION_FIELD_HEADS,
    ATTENTION_PLUGIN_NAME,
    LAYERNORM_FIELD_EPS,
    LAYERNORM_FIELD_HAS_RESIDUAL,
    LAYERNORM_PLUGIN_NAME,
    PLUGIN_CHOICES,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)
