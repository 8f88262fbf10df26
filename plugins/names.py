"""Names, versions and fields of the project's TensorRT plugins (importable without TensorRT).

| plugin | inputs | outputs | fields |
| --- | --- | --- | --- |
| WenetLayerNorm | x [..., D], residual [..., D] (if has_residual), gamma [D], beta [D] | sum, norm (has_residual) or norm | eps (float32), has_residual (int32 0/1) |
| WenetRelPosAttention | q, k, v [B, T, H*dk]; p [H, T, dk] or [1, H, T, dk]; pos_bias_u, pos_bias_v [H, dk]; lengths [B] int32 | out [B, T, H*dk] | heads (int32) |

Float tensors are all FP32 or all FP16 (one type per plugin instance); D a multiple of 32 up to 1024;
dk a multiple of 16.
"""
PLUGIN_NAMESPACE = "wenet_trt"
PLUGIN_VERSION = "1"

LAYERNORM_PLUGIN_NAME = "WenetLayerNorm"
LAYERNORM_FIELD_EPS = "eps"
LAYERNORM_FIELD_HAS_RESIDUAL = "has_residual"

ATTENTION_PLUGIN_NAME = "WenetRelPosAttention"
ATTENTION_FIELD_HEADS = "heads"

# What `--plugins` accepts, mapped to the plugin each choice swaps in.
PLUGIN_CHOICES = {"layernorm": LAYERNORM_PLUGIN_NAME, "attention": ATTENTION_PLUGIN_NAME}
