"""Pointer-level launchers for the plugin kernels, shared by the plugins' `enqueue` and the benchmark.

Each takes raw device pointers (ints), the sizes, the element type (numpy float32 or float16) and a
CUDA stream handle (int, 0 for the legacy default stream), checks the sizes against what the kernel
supports, and launches asynchronously on that stream.
"""
from __future__ import annotations

import numpy as np

from .loader import FLOAT, INT, POINTER, get_kernel, multiprocessor_count

LAYERNORM_FILE = "layernorm.cu"
ATTENTION_FILE = "relpos_attention.cu"
LAYERNORM_ROWS_PER_BLOCK = 4  # kLayerNormRowsPerBlock in layernorm.cu
ATTENTION_BLOCK_N = 64        # kAttnBlockN in relpos_attention.cu; FP32 blocks hold 16 * R queries
ATTENTION_THREADS = 256
ATTENTION_PAD = 4
ATTENTION_MMA_WARPS = 4       # kMmaWarps: FP16 kernel, 16 query rows per warp
ATTENTION_MMA_BLOCK_N = 64    # kMmaBlockN
ATTENTION_MMA_PAD = 8         # kMmaPad (halves)
ATTENTION_MMA_STAGES = 2      # kMmaStages: double-buffered key tiles
ATTENTION_TF32_WARPS = 4      # kTf32Warps: FP32 on the tensor cores (3xTF32), 16 query rows per warp
ATTENTION_TF32_BLOCK_N = 32   # kTf32BlockN
ATTENTION_TF32_PAD = 4        # kTf32Pad (floats)
ATTENTION_TF32_STAGES = 2     # kTf32Stages
FP32_ATTENTION_KERNELS = ("tf32x3", "simt")
MAX_LAYERNORM_DIM = 1024

_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float16): "__half"}


def _ctype(dtype) -> str:
    try:
        return _CTYPE[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise ValueError(f"plugin kernels take float32 or float16 tensors, got {dtype}") from None


def check_layernorm_dim(dim: int) -> None:
    if dim <= 0 or dim % 32 != 0 or dim > MAX_LAYERNORM_DIM:
        raise ValueError(f"LayerNorm plugin: last dimension must be a multiple of 32 up to {MAX_LAYERNORM_DIM}, got {dim}")


def check_head_dim(head_dim: int) -> None:
    if head_dim <= 0 or head_dim % 16 != 0:
        raise ValueError(f"attention plugin: head size (d_k) must be a positive multiple of 16, got {head_dim}")


def attention_smem_bytes(head_dim: int, rows_per_thread: int = 4) -> int:
    """Mirror of relpos_attention_smem_bytes() in relpos_attention.cu."""
    m, n, pad = 16 * rows_per_thread, ATTENTION_BLOCK_N, ATTENTION_PAD
    kprob = max(head_dim * (n + pad), n * (m + pad))
    return 4 * (2 * head_dim * (m + pad) + kprob + head_dim * (n + pad) + n * (head_dim + pad))


def attention_mma_smem_bytes(head_dim: int) -> int:
    """Mirror of relpos_attention_mma_smem_bytes() in relpos_attention.cu."""
    n, pad = ATTENTION_MMA_BLOCK_N, ATTENTION_MMA_PAD
    return 2 * ATTENTION_MMA_STAGES * 3 * n * (head_dim + pad)


def attention_tf32x3_smem_bytes(head_dim: int) -> int:
    """Mirror of relpos_attention_tf32x3_smem_bytes() in relpos_attention.cu."""
    rows, n, pad = 16 * ATTENTION_TF32_WARPS, ATTENTION_TF32_BLOCK_N, ATTENTION_TF32_PAD
    return 4 * (2 * rows * (head_dim + pad) + ATTENTION_TF32_STAGES * 3 * n * (head_dim + pad))


def fp32_attention_kernel(batch: int, seq_len: int, heads: int) -> str:
    """The faster FP32 kernel for this size (measured on the H100, docs/kernels.md): the CUDA-core kernel
    while there is little work (its blocks start sooner), 3xTF32 on the tensor cores from 16x256x4 heads."""
    return "tf32x3" if batch * heads * seq_len * seq_len >= 1 << 22 else "simt"


def attention_rows_per_thread(batch: int, seq_len: int, heads: int, multiprocessors: int) -> int:
    """R for the FP32 kernel: the largest of 4, 2, 1 whose grid fills at least half the multiprocessors
    (measured on the H100, tools/bench_kernels.py's sweep: R = 4 reuses shared loads best, but a small
    batch needs the blocks; 1x256 -> R 1, 4x256 and 16x64 -> R 2, 16x256 and 64x1024 -> R 4)."""
    for rows in (4, 2):
        if 2 * batch * heads * -(-seq_len // (16 * rows)) >= multiprocessors:
            return rows
    return 1


def layernorm(x, residual, gamma, beta, out_sum, out_norm, *, rows: int, dim: int, eps: float, dtype, stream: int = 0):
    """out_norm = LN(x [+ residual]) over the last `dim`; with a residual, out_sum = x + residual too.

    `residual` and `out_sum` are 0 (null) for the plain LayerNorm.
    """
    check_layernorm_dim(dim)
    has_residual = bool(residual)
    if has_residual != bool(out_sum):
        raise ValueError("LayerNorm plugin: residual and out_sum must be given together")
    if rows == 0:
        return
    expr = f"wenet::layernorm_kernel<{_ctype(dtype)},{dim},{'true' if has_residual else 'false'}>"
    kernel = get_kernel(LAYERNORM_FILE, expr)
    grid = ((rows + LAYERNORM_ROWS_PER_BLOCK - 1) // LAYERNORM_ROWS_PER_BLOCK, 1, 1)
    kernel.launch(
        grid,
        (32 * LAYERNORM_ROWS_PER_BLOCK, 1, 1),
        stream,
        [
            (int(x), POINTER), (int(residual or 0), POINTER), (int(gamma), POINTER), (int(beta), POINTER),
            (int(out_sum or 0), POINTER), (int(out_norm), POINTER), (rows, INT), (float(eps), FLOAT),
        ],
    )


def relpos_attention(q, k, v, p, pos_bias_u, pos_bias_v, lengths, out, *, batch: int, seq_len: int, heads: int,
                     head_dim: int, dtype, stream: int = 0, rows_per_thread: int | None = None,
                     fp32_kernel: str | None = None):
    """out [B*T, H*dk] = softmax(((q+u)k^T + (q+v)p^T)/sqrt(dk), keys < lengths[b]) v, per batch and head."""
    check_head_dim(head_dim)
    if heads <= 0:
        raise ValueError(f"attention plugin: heads must be positive, got {heads}")
    if batch == 0 or seq_len == 0:
        return
    if np.dtype(dtype) == np.float16:
        # Tensor cores: FP16 operands, FP32 accumulation and softmax.
        smem = attention_mma_smem_bytes(head_dim)
        kernel = get_kernel(ATTENTION_FILE, f"wenet::relpos_attention_mma_kernel<{head_dim}>", smem)
        rows_per_block, threads = 16 * ATTENTION_MMA_WARPS, 32 * ATTENTION_MMA_WARPS
    else:
        _ctype(dtype)  # FP32 from here on
        fp32_kernel = fp32_kernel or fp32_attention_kernel(batch, seq_len, heads)
        if fp32_kernel == "tf32x3":
            # Tensor cores, each product split into three TF32 products (FP32 accuracy).
            smem = attention_tf32x3_smem_bytes(head_dim)
            kernel = get_kernel(ATTENTION_FILE, f"wenet::relpos_attention_tf32x3_kernel<{head_dim}>", smem)
            rows_per_block, threads = 16 * ATTENTION_TF32_WARPS, 32 * ATTENTION_TF32_WARPS
        elif fp32_kernel == "simt":
            rows = rows_per_thread or attention_rows_per_thread(batch, seq_len, heads, multiprocessor_count())
            smem = attention_smem_bytes(head_dim, rows)
            kernel = get_kernel(ATTENTION_FILE, f"wenet::relpos_attention_kernel<float,{head_dim},{rows}>", smem)
            rows_per_block, threads = 16 * rows, ATTENTION_THREADS
        else:
            raise ValueError(f"attention: fp32_kernel must be one of {FP32_ATTENTION_KERNELS}, got {fp32_kernel!r}")
    grid = ((seq_len + rows_per_block - 1) // rows_per_block, heads, batch)
    kernel.launch(
        grid,
        (threads, 1, 1),
        stream,
        [
            (int(q), POINTER), (int(k), POINTER), (int(v), POINTER), (int(p), POINTER),
            (int(pos_bias_u), POINTER), (int(pos_bias_v), POINTER), (int(lengths), POINTER), (int(out), POINTER),
            (seq_len, INT), (heads, INT),
        ],
    )
