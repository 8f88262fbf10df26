// LayerNorm over the last dimension, optionally fused with the residual add before it.
//
//   sum  = x + residual            (only when kResidual; written out, since the next block adds to it)
//   norm = (sum - mean(sum)) / sqrt(var(sum) + eps) * gamma + beta
//
// One warp per row: the row stays in registers between the mean, the variance and the output, so each
// element is read once and written once (the bandwidth floor). Loads and stores are 16 bytes wide when
// D allows it. The variance is the mean of squared deviations (two passes over registers), not
// E[x^2] - E[x]^2, which loses digits when |mean| >> std. FP16 or FP32 in and out, FP32 arithmetic.
#include "common.cuh"

namespace wenet {

constexpr int kLayerNormRowsPerBlock = 4;  // 4 warps: 128 threads

template <int A, int B> struct Gcd { static constexpr int value = Gcd<B, A % B>::value; };
template <int A> struct Gcd<A, 0> { static constexpr int value = A; };

// D: the normalised size, a multiple of 32. T: float or __half (inputs, gamma/beta and outputs).
template <typename T, int D, bool kResidual>
__global__ void __launch_bounds__(32 * kLayerNormRowsPerBlock)
layernorm_kernel(const T* __restrict__ x, const T* __restrict__ residual, const T* __restrict__ gamma,
                 const T* __restrict__ beta, T* __restrict__ out_sum, T* __restrict__ out_norm, int rows,
                 float eps) {
    static_assert(D % 32 == 0 && D <= 1024, "D must be a multiple of 32, at most 1024");
    constexpr int kPerLane = D / 32;
    constexpr int kVec = Gcd<kPerLane, 16 / sizeof(T)>::value;  // elements per access
    constexpr int kChunks = kPerLane / kVec;

    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * kLayerNormRowsPerBlock + threadIdx.x / 32;
    if (row >= rows) return;
    const size_t row_offset = static_cast<size_t>(row) * D;

    // Chunk c of this lane covers elements [(c * 32 + lane) * kVec, +kVec): a warp reads 32 adjacent chunks.
    float values[kChunks][kVec];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
        const int col = (c * 32 + lane) * kVec;
        load_as_float(x + row_offset + col, values[c]);
        if constexpr (kResidual) {
            float res[kVec];
            load_as_float(residual + row_offset + col, res);
#pragma unroll
            for (int i = 0; i < kVec; ++i) values[c][i] += res[i];
            store_from_float(out_sum + row_offset + col, values[c]);
        }
    }

    float sum = 0.f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c)
#pragma unroll
        for (int i = 0; i < kVec; ++i) sum += values[c][i];
    const float mean = group_sum(sum) * (1.f / D);

    float squares = 0.f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c)
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
            const float d = values[c][i] - mean;
            squares += d * d;
        }
    const float inv_std = rsqrtf(group_sum(squares) * (1.f / D) + eps);

#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
        const int col = (c * 32 + lane) * kVec;
        float g[kVec], b[kVec], out[kVec];
        load_as_float(gamma + col, g);
        load_as_float(beta + col, b);
#pragma unroll
        for (int i = 0; i < kVec; ++i) out[i] = (values[c][i] - mean) * inv_std * g[i] + b[i];
        store_from_float(out_norm + row_offset + col, out);
    }
}

}  // namespace wenet

#ifdef WENET_INSTANTIATE_ALL
// Every supported configuration, for an ahead-of-time build (nvcc -cubin) and the CI compile check.
// NVRTC builds instantiate only what they use, through name expressions (plugins/loader.py).
#define WENET_LN_INSTANTIATE(T, D)                                                                          \
    template __global__ void wenet::layernorm_kernel<T, D, true>(const T*, const T*, const T*, const T*, T*, \
                                                                 T*, int, float);                          \
    template __global__ void wenet::layernorm_kernel<T, D, false>(const T*, const T*, const T*, const T*, T*, \
                                                                  T*, int, float);
#define WENET_LN_INSTANTIATE_D(D) WENET_LN_INSTANTIATE(float, D) WENET_LN_INSTANTIATE(__half, D)
WENET_LN_INSTANTIATE_D(32) WENET_LN_INSTANTIATE_D(64) WENET_LN_INSTANTIATE_D(96) WENET_LN_INSTANTIATE_D(128)
WENET_LN_INSTANTIATE_D(160) WENET_LN_INSTANTIATE_D(192) WENET_LN_INSTANTIATE_D(224) WENET_LN_INSTANTIATE_D(256)
WENET_LN_INSTANTIATE_D(288) WENET_LN_INSTANTIATE_D(320) WENET_LN_INSTANTIATE_D(352) WENET_LN_INSTANTIATE_D(384)
WENET_LN_INSTANTIATE_D(416) WENET_LN_INSTANTIATE_D(448) WENET_LN_INSTANTIATE_D(480) WENET_LN_INSTANTIATE_D(512)
WENET_LN_INSTANTIATE_D(544) WENET_LN_INSTANTIATE_D(576) WENET_LN_INSTANTIATE_D(608) WENET_LN_INSTANTIATE_D(640)
WENET_LN_INSTANTIATE_D(672) WENET_LN_INSTANTIATE_D(704) WENET_LN_INSTANTIATE_D(736) WENET_LN_INSTANTIATE_D(768)
WENET_LN_INSTANTIATE_D(800) WENET_LN_INSTANTIATE_D(832) WENET_LN_INSTANTIATE_D(864) WENET_LN_INSTANTIATE_D(896)
WENET_LN_INSTANTIATE_D(928) WENET_LN_INSTANTIATE_D(960) WENET_LN_INSTANTIATE_D(992) WENET_LN_INSTANTIATE_D(1024)
#endif
