// Shared helpers for the plugin kernels: FP16/FP32 loads and stores as FP32, warp reductions.
// Kept free of host headers so that NVRTC compiles it with no include path beyond CUDA's own.
#pragma once
#include <cuda_fp16.h>

namespace wenet {

// -inf without <cmath> (NVRTC has no INFINITY macro).
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }

// N contiguous elements moved as one aligned access (16 bytes when N * sizeof(T) == 16); the
// alignment is the largest power of two dividing the size, so odd sizes fall back to narrower accesses.
__host__ __device__ constexpr int pow2_alignment(int bytes) { return bytes & -bytes; }

template <typename T, int N>
struct alignas(pow2_alignment(sizeof(T) * N)) Vec {
    T v[N];
};

template <typename T, int N>
__device__ __forceinline__ void load_as_float(const T* src, float (&dst)[N]) {
    const Vec<T, N> packed = *reinterpret_cast<const Vec<T, N>*>(src);
#pragma unroll
    for (int i = 0; i < N; ++i) dst[i] = to_float(packed.v[i]);
}

template <typename T, int N>
__device__ __forceinline__ void store_from_float(T* dst, const float (&src)[N]) {
    Vec<T, N> packed;
#pragma unroll
    for (int i = 0; i < N; ++i) packed.v[i] = from_float<T>(src[i]);
    *reinterpret_cast<Vec<T, N>*>(dst) = packed;
}

// Sum over the lanes of a group of `Width` consecutive lanes (Width a power of two <= 32).
template <int Width = 32>
__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
    for (int offset = Width / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset, Width);
    return x;
}

template <int Width = 32>
__device__ __forceinline__ float group_max(float x) {
#pragma unroll
    for (int offset = Width / 2; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset, Width));
    return x;
}

}  // namespace wenet
