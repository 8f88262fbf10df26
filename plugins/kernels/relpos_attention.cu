// WeNet's relative-position self-attention, one kernel per call, flash-attention style. Three kernels
// compute the same function: relpos_attention_kernel (FP32 on the CUDA cores),
// relpos_attention_mma_kernel (FP16 on the tensor cores, FP32 accumulation and softmax) and
// relpos_attention_tf32x3_kernel (FP32 on the tensor cores, each product as three TF32 products);
// plugins/launch.py picks one by type and size.
//
// For batch b, head h, query i and key j (all heads of q/k/v interleaved as [B*T, H*DK], row-major):
//   score(i, j) = ((q_i + pos_bias_u) . k_j + (q_i + pos_bias_v) . p_j) / sqrt(DK)
//   out_i       = sum_j softmax_j(score(i, .) masked to j < length_b) * v_j
// p is the block's linear_pos projection of the positional table, [H, T, DK], shared by the batch
// (WeNet's RelPositionMultiHeadedAttention without rel_shift). The mask covers keys only, as WeNet's
// encoder mask [B, 1, T] does: padded query rows (i >= length_b) still attend to the valid keys, and a
// sequence of length 0 gives zeros (WeNet fills masked probabilities with 0 after the softmax).
//
// Tiling: a block owns a tile of queries of one (b, h) and walks key tiles of kAttnBlockN with an
// online softmax (running max and sum per row), so the T x T scores never leave the chip. Key tiles past
// length_b are skipped entirely. Both score terms are one dot product of length 2*DK:
// [q+u, q+v] . [k, p].
//
// FP32 kernel: threads form a 16 x 16 grid: thread (ty, tx) owns score rows ty*R..ty*R+R-1 and key columns
// tx*4..tx*4+3 of the tile, and output columns tx*(DK/16).. of the same rows, so the row statistics it
// needs come from the 16 lanes sharing ty (one half-warp: a shuffle, no shared memory). R (rows per
// thread: 4, 2 or 1) sets the block's 16*R queries: R = 4 reuses shared loads best, smaller R gives
// small batches more blocks than the GPU has multiprocessors.
#include "common.cuh"

namespace wenet {

constexpr int kAttnBlockN = 64;   // keys per tile
constexpr int kAttnThreads = 256; // 16 x 16
constexpr int kAttnPad = 4;       // floats of padding per shared row: keeps float4 alignment, spreads banks

// Shared-memory bytes the kernel needs for head size DK and R rows per thread (the launcher passes it as
// dynamic shared memory). The probabilities tile reuses k^T's space: k^T is dead once the tile's scores
// are in registers. For DK 64, R 4 that is 87 KB, under the 99 KB a block may have on sm_86/sm_89.
__host__ __device__ constexpr int relpos_attention_kprob_floats(int dk, int rows_per_thread) {
    return dk * (kAttnBlockN + kAttnPad) > kAttnBlockN * (16 * rows_per_thread + kAttnPad)
               ? dk * (kAttnBlockN + kAttnPad)
               : kAttnBlockN * (16 * rows_per_thread + kAttnPad);
}
__host__ __device__ constexpr int relpos_attention_smem_bytes(int dk, int rows_per_thread) {
    return static_cast<int>(sizeof(float)) *
           (2 * dk * (16 * rows_per_thread + kAttnPad)              // (q+u)^T and (q+v)^T: [DK][BlockM]
            + relpos_attention_kprob_floats(dk, rows_per_thread)    // k^T, then probabilities^T [BlockN][BlockM]
            + dk * (kAttnBlockN + kAttnPad)                         // p^T: [DK][BlockN]
            + kAttnBlockN * (dk + kAttnPad));                       // v: [BlockN][DK]
}

// Copies rows [row0, row0 + kRows) x [0, DK) of a row-major matrix (row stride `ld` elements) into
// shared memory as FP32, adding `bias` (per column, may be null); rows past `rows` become 0.
// kTranspose stores dst[d * dst_ld + r], else dst[r * dst_ld + d].
template <typename T, int DK, int kRows, bool kTranspose, int kThreads = kAttnThreads>
__device__ __forceinline__ void load_tile(const T* __restrict__ src, size_t ld, int row0, int rows,
                                          const T* __restrict__ bias, float* __restrict__ dst, int dst_ld) {
    constexpr int kVec = 16 / sizeof(T) <= DK ? 16 / sizeof(T) : DK;  // 16-byte global loads
    static_assert(DK % kVec == 0, "DK must be a multiple of the vector width");
    constexpr int kChunksPerRow = DK / kVec;
    for (int chunk = threadIdx.x; chunk < kRows * kChunksPerRow; chunk += kThreads) {
        const int r = chunk / kChunksPerRow;
        const int d0 = (chunk % kChunksPerRow) * kVec;
        float values[kVec];
        if (row0 + r < rows) {
            load_as_float(src + static_cast<size_t>(row0 + r) * ld + d0, values);
            if (bias != nullptr) {
                float b[kVec];
                load_as_float(bias + d0, b);
#pragma unroll
                for (int e = 0; e < kVec; ++e) values[e] += b[e];
            }
        } else {
#pragma unroll
            for (int e = 0; e < kVec; ++e) values[e] = 0.f;
        }
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
            if constexpr (kTranspose) dst[(d0 + e) * dst_ld + r] = values[e];
            else dst[r * dst_ld + d0 + e] = values[e];
        }
    }
}

template <typename T, int DK, int R>
__global__ void __launch_bounds__(kAttnThreads, 2)
relpos_attention_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                        const T* __restrict__ p, const T* __restrict__ pos_bias_u,
                        const T* __restrict__ pos_bias_v, const int* __restrict__ lengths,
                        T* __restrict__ out, int seq_len, int heads) {
    static_assert(DK % 16 == 0, "head size must be a multiple of 16");
    static_assert(R == 1 || R == 2 || R == 4, "rows per thread: 1, 2 or 4");
    constexpr int kM = 16 * R, kN = kAttnBlockN;
    constexpr int kLdM = kM + kAttnPad, kLdN = kN + kAttnPad, kLdD = DK + kAttnPad;
    constexpr int kOutCols = DK / 16;  // output columns per thread

    extern __shared__ float4 smem_f4[];
    float* s_qu = reinterpret_cast<float*>(smem_f4);  // [DK][kLdM]
    float* s_qv = s_qu + DK * kLdM;                  // [DK][kLdM]
    float* s_k = s_qv + DK * kLdM;                   // [DK][kLdN]
    float* s_prob = s_k;                             // [kN][kLdM], written once s_k is consumed
    float* s_p = s_k + relpos_attention_kprob_floats(DK, R);  // [DK][kLdN]
    float* s_v = s_p + DK * kLdN;                    // [kN][kLdD]

    const int m0 = blockIdx.x * kM;
    const int h = blockIdx.y;
    const int b = blockIdx.z;
    const int tx = threadIdx.x % 16;
    const int ty = threadIdx.x / 16;
    const size_t ld = static_cast<size_t>(heads) * DK;  // row stride of q, k, v, out
    const size_t batch_row0 = static_cast<size_t>(b) * seq_len;
    const int length = min(max(lengths[b], 0), seq_len);
    // Scores are kept in log2 units so that the softmax uses exp2.
    const float score_scale = rsqrtf(static_cast<float>(DK)) * 1.4426950408889634f;

    const T* q_bh = q + batch_row0 * ld + h * DK;
    const T* k_bh = k + batch_row0 * ld + h * DK;
    const T* v_bh = v + batch_row0 * ld + h * DK;
    const T* p_h = p + static_cast<size_t>(h) * seq_len * DK;

    load_tile<T, DK, kM, true>(q_bh, ld, m0, seq_len, pos_bias_u + h * DK, s_qu, kLdM);
    load_tile<T, DK, kM, true>(q_bh, ld, m0, seq_len, pos_bias_v + h * DK, s_qv, kLdM);

    float row_max[R], row_sum[R], acc[R][kOutCols];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        row_max[r] = neg_inf();
        row_sum[r] = 0.f;
#pragma unroll
        for (int c = 0; c < kOutCols; ++c) acc[r][c] = 0.f;
    }

    for (int n0 = 0; n0 < length; n0 += kN) {
        __syncthreads();  // the previous tile's k/p/v/probabilities are no longer read
        load_tile<T, DK, kN, true>(k_bh, ld, n0, length, nullptr, s_k, kLdN);
        load_tile<T, DK, kN, true>(p_h, DK, n0, length, nullptr, s_p, kLdN);
        load_tile<T, DK, kN, false>(v_bh, ld, n0, length, nullptr, s_v, kLdD);
        __syncthreads();

        float score[R][4];
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int c = 0; c < 4; ++c) score[r][c] = 0.f;
#pragma unroll 8
        for (int d = 0; d < DK; ++d) {
            float qu_r[R], qv_r[R], k_c[4], p_c[4];
            load_as_float(s_qu + d * kLdM + ty * R, qu_r);
            load_as_float(s_qv + d * kLdM + ty * R, qv_r);
            load_as_float(s_k + d * kLdN + tx * 4, k_c);
            load_as_float(s_p + d * kLdN + tx * 4, p_c);
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int c = 0; c < 4; ++c) score[r][c] = fmaf(qu_r[r], k_c[c], fmaf(qv_r[r], p_c[c], score[r][c]));
        }

        // Online softmax over this tile: masked keys (j >= length) get probability 0.
#pragma unroll
        for (int r = 0; r < R; ++r) {
            float tile_max = neg_inf();
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                score[r][c] = (n0 + tx * 4 + c < length) ? score[r][c] * score_scale : neg_inf();
                tile_max = fmaxf(tile_max, score[r][c]);
            }
            // The first tile holds key 0 < length, so the new max is finite from the first tile on.
            const float new_max = fmaxf(row_max[r], group_max<16>(tile_max));
            const float rescale = exp2f(row_max[r] - new_max);  // exp2(-inf) = 0 on the first tile
            row_max[r] = new_max;
            float tile_sum = 0.f;
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                score[r][c] = exp2f(score[r][c] - new_max);
                tile_sum += score[r][c];
            }
            row_sum[r] = row_sum[r] * rescale + group_sum<16>(tile_sum);
#pragma unroll
            for (int c = 0; c < kOutCols; ++c) acc[r][c] *= rescale;
        }
        __syncthreads();  // every thread is done reading s_k, whose space s_prob takes
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            float column[R];
#pragma unroll
            for (int r = 0; r < R; ++r) column[r] = score[r][c];
            store_from_float(s_prob + (tx * 4 + c) * kLdM + ty * R, column);
        }
        __syncthreads();

#pragma unroll 4
        for (int j = 0; j < kN; ++j) {
            float prob_r[R], v_c[kOutCols];
            load_as_float(s_prob + j * kLdM + ty * R, prob_r);
            load_as_float(s_v + j * kLdD + tx * kOutCols, v_c);  // one 16-byte load for DK 64
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int c = 0; c < kOutCols; ++c) acc[r][c] = fmaf(prob_r[r], v_c[c], acc[r][c]);
        }
    }

#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int i = m0 + ty * R + r;
        if (i >= seq_len) continue;
        const float inv_sum = row_sum[r] > 0.f ? 1.f / row_sum[r] : 0.f;  // length 0: zeros
        float o[kOutCols];
#pragma unroll
        for (int c = 0; c < kOutCols; ++c) o[c] = acc[r][c] * inv_sum;
        T* dst = out + (batch_row0 + i) * ld + h * DK + tx * kOutCols;
        if constexpr (kOutCols * sizeof(T) % 8 == 0 && kOutCols % 2 == 0) {
            store_from_float(dst, o);
        } else {
#pragma unroll
            for (int c = 0; c < kOutCols; ++c) dst[c] = from_float<T>(o[c]);
        }
    }
}


// ------------------------------------------------------------------------------------------------------
// FP16 inputs: the same computation on the tensor cores (mma.sync m16n8k16, FP16 operands, FP32
// accumulation), flash-attention-2 style. Each warp owns 16 query rows; (q+u) and (q+v) live in
// registers as A fragments for the whole kernel; k, p and v^T tiles are shared by the block's warps.
// The scores' accumulator layout is reused as the A operand of probabilities x v, so probabilities never
// touch shared memory. Softmax statistics are FP32; probabilities are rounded to FP16 for the second
// product, as FP16 flash attention does. Key tiles are double-buffered: cp.async fetches tile i+1 while
// the tensor cores work on tile i; v stays row-major and ldmatrix.trans transposes it into B fragments.
constexpr int kMmaWarps = 4;
constexpr int kMmaBlockN = 64;
constexpr int kMmaPad = 8;  // halves of padding per shared row: conflict-free fragment loads

constexpr int kMmaStages = 2;

__host__ __device__ constexpr int relpos_attention_mma_smem_bytes(int dk) {
    return static_cast<int>(sizeof(__half)) * kMmaStages * 3 * kMmaBlockN * (dk + kMmaPad);  // k, p, v
}

// 16 bytes global -> shared without passing through registers; src_bytes 0 writes zeros (masked rows).
__device__ __forceinline__ void cp_async_16(void* smem, const void* global, bool valid) {
    const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending)); }

// B fragments of two adjacent 8-column tiles from a row-major [k][n] tile (ldmatrix .trans):
// lanes 0-15 address rows k0..k0+15 at column n0, lanes 16-31 the same rows at column n0 + 8.
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&b)[4], const __half* row_address) {
    const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row_address));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(addr));
}

__device__ __forceinline__ void mma_16816(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned pack_half2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&h);
}

// (row's q + bias) at columns d, d+1 as one packed half2; 0 past the sequence.
__device__ __forceinline__ unsigned biased_q_pair(const __half* q_row, bool valid, const __half* bias, int d) {
    if (!valid) return 0u;
    const float2 qq = __half22float2(*reinterpret_cast<const __half2*>(q_row + d));
    const float2 bb = __half22float2(*reinterpret_cast<const __half2*>(bias + d));
    return pack_half2(qq.x + bb.x, qq.y + bb.y);
}

// One key tile's online-softmax step on mma accumulator fragments (rows g and g+8 of a warp's 16
// queries; lane t = lane % 4 holds keys 2t, 2t+1 of each 8-key tile): scale the scores into log2 units,
// mask keys >= length (probability 0), update the running max and sum, turn the scores into
// probabilities and rescale the output accumulators. Shared by the FP16 and the 3xTF32 kernels.
template <int kScoreTiles, int kOutTiles>
__device__ __forceinline__ void online_softmax_step(float (&score)[kScoreTiles][4], float (&acc)[kOutTiles][4],
                                                    float (&row_max)[2], float (&row_sum)[2], int n0, int t,
                                                    int length, float score_scale) {
    float tile_max[2] = {neg_inf(), neg_inf()};
#pragma unroll
    for (int nt = 0; nt < kScoreTiles; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int key = n0 + nt * 8 + 2 * t + (i & 1);
            score[nt][i] = key < length ? score[nt][i] * score_scale : neg_inf();
            tile_max[i / 2] = fmaxf(tile_max[i / 2], score[nt][i]);
        }
    float rescale[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const float new_max = fmaxf(row_max[r], group_max<4>(tile_max[r]));  // finite: key n0 < length
        rescale[r] = exp2f(row_max[r] - new_max);
        row_max[r] = new_max;
        row_sum[r] *= rescale[r];
    }
#pragma unroll
    for (int nt = 0; nt < kScoreTiles; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            score[nt][i] = exp2f(score[nt][i] - row_max[i / 2]);
            row_sum[i / 2] += score[nt][i];
        }
#pragma unroll
    for (int dt = 0; dt < kOutTiles; ++dt) {
        acc[dt][0] *= rescale[0];
        acc[dt][1] *= rescale[0];
        acc[dt][2] *= rescale[1];
        acc[dt][3] *= rescale[1];
    }
}

template <int DK>
__global__ void __launch_bounds__(32 * kMmaWarps)
relpos_attention_mma_kernel(const __half* __restrict__ q, const __half* __restrict__ k, const __half* __restrict__ v,
                            const __half* __restrict__ p, const __half* __restrict__ pos_bias_u,
                            const __half* __restrict__ pos_bias_v, const int* __restrict__ lengths,
                            __half* __restrict__ out, int seq_len, int heads) {
    static_assert(DK % 16 == 0, "head size must be a multiple of 16");
    constexpr int kN = kMmaBlockN;
    constexpr int kKSteps = DK / 16;   // k-steps of the score products (per term)
    constexpr int kScoreTiles = kN / 8;
    constexpr int kOutTiles = DK / 8;
    constexpr int kLd = DK + kMmaPad;   // row stride of the k, p and v tiles: [kN][kLd]
    constexpr int kTile = kN * kLd;
    constexpr int kStage = 3 * kTile;

    extern __shared__ float4 smem_f4[];
    __half* smem = reinterpret_cast<__half*>(smem_f4);  // stage s: k at s*kStage, p at +kTile, v at +2*kTile

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;  // fragment row group and column pair
    const int h = blockIdx.y, b = blockIdx.z;
    const int row0 = blockIdx.x * (16 * kMmaWarps) + warp * 16;
    const size_t ld = static_cast<size_t>(heads) * DK;
    const size_t batch_row0 = static_cast<size_t>(b) * seq_len;
    const int length = min(max(lengths[b], 0), seq_len);
    const float score_scale = rsqrtf(static_cast<float>(DK)) * 1.4426950408889634f;  // log2 units

    const __half* q_bh = q + batch_row0 * ld + h * DK;
    const __half* k_bh = k + batch_row0 * ld + h * DK;
    const __half* v_bh = v + batch_row0 * ld + h * DK;
    const __half* p_h = p + static_cast<size_t>(h) * seq_len * DK;
    const __half* u_h = pos_bias_u + h * DK;
    const __half* w_h = pos_bias_v + h * DK;

    // A fragments: a0 (row g, cols 2t..), a1 (row g+8), a2 (row g, cols 2t+8..), a3 (row g+8, cols 2t+8..).
    unsigned qu[kKSteps][4], qv[kKSteps][4];
    {
        const bool valid_lo = row0 + g < seq_len, valid_hi = row0 + g + 8 < seq_len;
        const __half* q_lo = q_bh + static_cast<size_t>(row0 + g) * ld;
        const __half* q_hi = q_bh + static_cast<size_t>(row0 + g + 8) * ld;
#pragma unroll
        for (int ks = 0; ks < kKSteps; ++ks) {
            const int d = ks * 16 + 2 * t;
            qu[ks][0] = biased_q_pair(q_lo, valid_lo, u_h, d);
            qu[ks][1] = biased_q_pair(q_hi, valid_hi, u_h, d);
            qu[ks][2] = biased_q_pair(q_lo, valid_lo, u_h, d + 8);
            qu[ks][3] = biased_q_pair(q_hi, valid_hi, u_h, d + 8);
            qv[ks][0] = biased_q_pair(q_lo, valid_lo, w_h, d);
            qv[ks][1] = biased_q_pair(q_hi, valid_hi, w_h, d);
            qv[ks][2] = biased_q_pair(q_lo, valid_lo, w_h, d + 8);
            qv[ks][3] = biased_q_pair(q_hi, valid_hi, w_h, d + 8);
        }
    }

    float acc[kOutTiles][4];
#pragma unroll
    for (int dt = 0; dt < kOutTiles; ++dt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[dt][i] = 0.f;
    float row_max[2] = {neg_inf(), neg_inf()};  // rows g and g+8
    float row_sum[2] = {0.f, 0.f};             // this lane's partial sums; reduced over the 4 lanes at the end

    auto fetch_tile = [&](int n0, int stage) {
        constexpr int kChunksPerRow = DK / 8;  // 16-byte chunks
        __half* s_k = smem + stage * kStage;
        for (int chunk = threadIdx.x; chunk < kN * kChunksPerRow; chunk += 32 * kMmaWarps) {
            const int r = chunk / kChunksPerRow, d0 = (chunk % kChunksPerRow) * 8;
            const bool valid = n0 + r < length;
            const size_t key = valid ? static_cast<size_t>(n0 + r) : 0;  // a valid address even when zero-filling
            cp_async_16(s_k + r * kLd + d0, k_bh + key * ld + d0, valid);
            cp_async_16(s_k + kTile + r * kLd + d0, p_h + key * DK + d0, valid);
            cp_async_16(s_k + 2 * kTile + r * kLd + d0, v_bh + key * ld + d0, valid);
        }
        cp_async_commit();
    };

    if (length > 0) fetch_tile(0, 0);
    for (int n0 = 0, stage = 0; n0 < length; n0 += kN, stage ^= 1) {
        if (n0 + kN < length) {
            fetch_tile(n0 + kN, stage ^ 1);  // that stage was released by the barrier closing the last tile
            cp_async_wait<1>();              // this tile has landed; the next may still be in flight
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const __half* s_k = smem + stage * kStage;
        const __half* s_p = s_k + kTile;
        const __half* s_v = s_k + 2 * kTile;

        // Scores: C fragments c0,c1 (row g, keys 8*nt + 2t, +1) and c2,c3 (row g+8, same keys).
        float score[kScoreTiles][4];
#pragma unroll
        for (int nt = 0; nt < kScoreTiles; ++nt) {
#pragma unroll
            for (int i = 0; i < 4; ++i) score[nt][i] = 0.f;
            const __half* k_row = s_k + (nt * 8 + g) * kLd + 2 * t;
            const __half* p_row = s_p + (nt * 8 + g) * kLd + 2 * t;
#pragma unroll
            for (int ks = 0; ks < kKSteps; ++ks) {
                mma_16816(score[nt], qu[ks], *reinterpret_cast<const unsigned*>(k_row + ks * 16),
                          *reinterpret_cast<const unsigned*>(k_row + ks * 16 + 8));
                mma_16816(score[nt], qv[ks], *reinterpret_cast<const unsigned*>(p_row + ks * 16),
                          *reinterpret_cast<const unsigned*>(p_row + ks * 16 + 8));
            }
        }

        online_softmax_step(score, acc, row_max, row_sum, n0, t, length, score_scale);

        // out += probabilities x v: score tiles 2j, 2j+1 are the A fragment of key step j.
#pragma unroll
        for (int j = 0; j < kN / 16; ++j) {
            const unsigned a[4] = {pack_half2(score[2 * j][0], score[2 * j][1]),
                                   pack_half2(score[2 * j][2], score[2 * j][3]),
                                   pack_half2(score[2 * j + 1][0], score[2 * j + 1][1]),
                                   pack_half2(score[2 * j + 1][2], score[2 * j + 1][3])};
#pragma unroll
            for (int dt = 0; dt < kOutTiles; dt += 2) {
                unsigned b[4];
                ldmatrix_x4_trans(b, s_v + (j * 16 + lane % 16) * kLd + (dt + lane / 16) * 8);
                mma_16816(acc[dt], a, b[0], b[1]);
                mma_16816(acc[dt + 1], a, b[2], b[3]);
            }
        }
        __syncthreads();  // every warp is done with this stage before it is refilled
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const float total = group_sum<4>(row_sum[r]);
        const float inv_sum = total > 0.f ? 1.f / total : 0.f;  // length 0: zeros
        const int row = row0 + g + 8 * r;
        if (row >= seq_len) continue;
        __half* dst = out + (batch_row0 + row) * ld + h * DK + 2 * t;
#pragma unroll
        for (int dt = 0; dt < kOutTiles; ++dt)
            *reinterpret_cast<__half2*>(dst + dt * 8) =
                __floats2half2_rn(acc[dt][2 * r] * inv_sum, acc[dt][2 * r + 1] * inv_sum);
    }
}


// ------------------------------------------------------------------------------------------------------
// FP32 inputs on the tensor cores at FP32 accuracy ("3xTF32"): each operand x is split into
// hi = tf32(x) and lo = tf32(x - hi), and a*b is accumulated as a_lo*b_hi + a_hi*b_lo + a_hi*b_hi in
// FP32 (the dropped lo*lo term is ~2^-22 relative). Same flash-attention-2 structure as the FP16 kernel:
// 4 warps of 16 queries, key tiles double-buffered with cp.async, softmax in FP32 on the accumulator
// layout. (q+u) and (q+v) stay in shared memory in FP32 and are split per k-step.
constexpr int kTf32Warps = 4;
constexpr int kTf32BlockN = 32;
constexpr int kTf32Pad = 4;  // floats: rows stay 16-byte aligned, fragment loads conflict-free
constexpr int kTf32Stages = 2;

__host__ __device__ constexpr int relpos_attention_tf32x3_smem_bytes(int dk) {
    return static_cast<int>(sizeof(float)) *
           (2 * 16 * kTf32Warps * (dk + kTf32Pad)                  // q+u, q+v: [BlockM][DK]
            + kTf32Stages * 3 * kTf32BlockN * (dk + kTf32Pad));    // k, p, v per stage: [BlockN][DK]
}

__device__ __forceinline__ unsigned to_tf32(float x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}

template <int N>
__device__ __forceinline__ void split_tf32(const float (&x)[N], unsigned (&hi)[N], unsigned (&lo)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
        hi[i] = to_tf32(x[i]);
        lo[i] = to_tf32(x[i] - __uint_as_float(hi[i]));
    }
}

__device__ __forceinline__ void mma_1688_tf32(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// c += a * b at about FP32 accuracy, small terms first.
__device__ __forceinline__ void mma_3xtf32(float (&c)[4], const unsigned (&a_hi)[4], const unsigned (&a_lo)[4],
                                           const unsigned (&b_hi)[2], const unsigned (&b_lo)[2]) {
    mma_1688_tf32(c, a_lo, b_hi[0], b_hi[1]);
    mma_1688_tf32(c, a_hi, b_lo[0], b_lo[1]);
    mma_1688_tf32(c, a_hi, b_hi[0], b_hi[1]);
}



template <int DK>
__global__ void __launch_bounds__(32 * kTf32Warps)
relpos_attention_tf32x3_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                               const float* __restrict__ p, const float* __restrict__ pos_bias_u,
                               const float* __restrict__ pos_bias_v, const int* __restrict__ lengths,
                               float* __restrict__ out, int seq_len, int heads) {
    static_assert(DK % 16 == 0, "head size must be a multiple of 16");
    constexpr int kM = 16 * kTf32Warps, kN = kTf32BlockN;
    constexpr int kLd = DK + kTf32Pad;  // row stride of every shared tile
    constexpr int kKSteps = DK / 8;
    constexpr int kScoreTiles = kN / 8;
    constexpr int kOutTiles = DK / 8;
    constexpr int kTile = kN * kLd;
    constexpr int kStage = 3 * kTile;

    extern __shared__ float4 smem_f4[];
    float* s_qu = reinterpret_cast<float*>(smem_f4);  // [kM][kLd]
    float* s_qv = s_qu + kM * kLd;
    float* s_kpv = s_qv + kM * kLd;                   // stage s: k at s*kStage, p at +kTile, v at +2*kTile

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    const int h = blockIdx.y, b = blockIdx.z;
    const int m0 = blockIdx.x * kM;
    const size_t ld = static_cast<size_t>(heads) * DK;
    const size_t batch_row0 = static_cast<size_t>(b) * seq_len;
    const int length = min(max(lengths[b], 0), seq_len);
    const float score_scale = rsqrtf(static_cast<float>(DK)) * 1.4426950408889634f;  // log2 units

    const float* q_bh = q + batch_row0 * ld + h * DK;
    const float* k_bh = k + batch_row0 * ld + h * DK;
    const float* v_bh = v + batch_row0 * ld + h * DK;
    const float* p_h = p + static_cast<size_t>(h) * seq_len * DK;

    auto fetch_tile = [&](int n0, int stage) {
        constexpr int kChunksPerRow = DK / 4;  // 16-byte chunks
        float* s_k = s_kpv + stage * kStage;
        for (int chunk = threadIdx.x; chunk < kN * kChunksPerRow; chunk += 32 * kTf32Warps) {
            const int r = chunk / kChunksPerRow, d0 = (chunk % kChunksPerRow) * 4;
            const bool valid = n0 + r < length;
            const size_t key = valid ? static_cast<size_t>(n0 + r) : 0;
            cp_async_16(s_k + r * kLd + d0, k_bh + key * ld + d0, valid);
            cp_async_16(s_k + kTile + r * kLd + d0, p_h + key * DK + d0, valid);
            cp_async_16(s_k + 2 * kTile + r * kLd + d0, v_bh + key * ld + d0, valid);
        }
        cp_async_commit();
    };

    if (length > 0) fetch_tile(0, 0);
    load_tile<float, DK, kM, false, 32 * kTf32Warps>(q_bh, ld, m0, seq_len, pos_bias_u + h * DK, s_qu, kLd);
    load_tile<float, DK, kM, false, 32 * kTf32Warps>(q_bh, ld, m0, seq_len, pos_bias_v + h * DK, s_qv, kLd);
    const float* qu_w = s_qu + warp * 16 * kLd;  // this warp's 16 rows
    const float* qv_w = s_qv + warp * 16 * kLd;

    float acc[kOutTiles][4];
#pragma unroll
    for (int dt = 0; dt < kOutTiles; ++dt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[dt][i] = 0.f;
    float row_max[2] = {neg_inf(), neg_inf()};
    float row_sum[2] = {0.f, 0.f};

    for (int n0 = 0, stage = 0; n0 < length; n0 += kN, stage ^= 1) {
        if (n0 + kN < length) {
            fetch_tile(n0 + kN, stage ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();  // this tile (and, the first time, q) is visible to every warp
        const float* s_k = s_kpv + stage * kStage;
        const float* s_p = s_k + kTile;
        const float* s_v = s_k + 2 * kTile;

        // Scores: A fragments (row g / g+8, dims ks*8 + t / + 4); B (key nt*8 + g, dims ks*8 + t / + 4).
        float score[kScoreTiles][4];
#pragma unroll
        for (int nt = 0; nt < kScoreTiles; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) score[nt][i] = 0.f;
#pragma unroll
        for (int ks = 0; ks < kKSteps; ++ks) {
            const int d = ks * 8 + t;
            const float qu_f[4] = {qu_w[g * kLd + d], qu_w[(g + 8) * kLd + d], qu_w[g * kLd + d + 4],
                                   qu_w[(g + 8) * kLd + d + 4]};
            const float qv_f[4] = {qv_w[g * kLd + d], qv_w[(g + 8) * kLd + d], qv_w[g * kLd + d + 4],
                                   qv_w[(g + 8) * kLd + d + 4]};
            unsigned qu_hi[4], qu_lo[4], qv_hi[4], qv_lo[4];
            split_tf32(qu_f, qu_hi, qu_lo);
            split_tf32(qv_f, qv_hi, qv_lo);
#pragma unroll
            for (int nt = 0; nt < kScoreTiles; ++nt) {
                const int key = nt * 8 + g;
                const float k_f[2] = {s_k[key * kLd + d], s_k[key * kLd + d + 4]};
                const float p_f[2] = {s_p[key * kLd + d], s_p[key * kLd + d + 4]};
                unsigned k_hi[2], k_lo[2], p_hi[2], p_lo[2];
                split_tf32(k_f, k_hi, k_lo);
                split_tf32(p_f, p_hi, p_lo);
                mma_3xtf32(score[nt], qu_hi, qu_lo, k_hi, k_lo);
                mma_3xtf32(score[nt], qv_hi, qv_lo, p_hi, p_lo);
            }
        }

        online_softmax_step(score, acc, row_max, row_sum, n0, t, length, score_scale);

        // out += probabilities x v, summed per key tile from zero and then added to the running output
        // with FP32 adds: the tensor cores' accumulation truncates, and one chain over all T' keys into
        // the large running sum was 3x less accurate at T' = 1024 (7e-6 against 2e-6). Score tile j holds
        // keys j*8 + 2t, 2t+1 where an A fragment wants k-indices t, t+4: map k-index t -> key 2t and
        // t+4 -> key 2t+1 in both operands (a sum over keys does not care about their order).
        float tile_out[kOutTiles][4];
#pragma unroll
        for (int dt = 0; dt < kOutTiles; ++dt)
#pragma unroll
            for (int i = 0; i < 4; ++i) tile_out[dt][i] = 0.f;
#pragma unroll
        for (int j = 0; j < kScoreTiles; ++j) {
            const float prob[4] = {score[j][0], score[j][2], score[j][1], score[j][3]};
            unsigned prob_hi[4], prob_lo[4];
            split_tf32(prob, prob_hi, prob_lo);
            const float* v_rows = s_v + (j * 8 + 2 * t) * kLd;
#pragma unroll
            for (int dt = 0; dt < kOutTiles; ++dt) {
                const float v_f[2] = {v_rows[dt * 8 + g], v_rows[kLd + dt * 8 + g]};
                unsigned v_hi[2], v_lo[2];
                split_tf32(v_f, v_hi, v_lo);
                mma_3xtf32(tile_out[dt], prob_hi, prob_lo, v_hi, v_lo);
            }
        }
#pragma unroll
        for (int dt = 0; dt < kOutTiles; ++dt)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[dt][i] += tile_out[dt][i];
        __syncthreads();  // every warp is done with this stage before it is refilled
    }

    const int row0 = m0 + warp * 16;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const float total = group_sum<4>(row_sum[r]);
        const float inv_sum = total > 0.f ? 1.f / total : 0.f;  // length 0: zeros
        const int row = row0 + g + 8 * r;
        if (row >= seq_len) continue;
        float* dst = out + (batch_row0 + row) * ld + h * DK + 2 * t;
#pragma unroll
        for (int dt = 0; dt < kOutTiles; ++dt)
            *reinterpret_cast<float2*>(dst + dt * 8) = make_float2(acc[dt][2 * r] * inv_sum, acc[dt][2 * r + 1] * inv_sum);
    }
}

}  // namespace wenet

#ifdef WENET_INSTANTIATE_ALL
#define WENET_ATTN_INSTANTIATE(T, DK, R)                                                                     \
    template __global__ void wenet::relpos_attention_kernel<T, DK, R>(const T*, const T*, const T*, const T*, \
                                                                      const T*, const T*, const int*, T*,   \
                                                                      int, int);
#define WENET_ATTN_INSTANTIATE_DK(DK)                                                                        \
    WENET_ATTN_INSTANTIATE(float, DK, 4) WENET_ATTN_INSTANTIATE(float, DK, 2) WENET_ATTN_INSTANTIATE(float, DK, 1) \
    WENET_ATTN_INSTANTIATE(__half, DK, 4)
WENET_ATTN_INSTANTIATE_DK(16) WENET_ATTN_INSTANTIATE_DK(32) WENET_ATTN_INSTANTIATE_DK(48)
WENET_ATTN_INSTANTIATE_DK(64) WENET_ATTN_INSTANTIATE_DK(80) WENET_ATTN_INSTANTIATE_DK(96)
WENET_ATTN_INSTANTIATE_DK(112) WENET_ATTN_INSTANTIATE_DK(128)
#define WENET_ATTN_MMA_INSTANTIATE(DK)                                                                       \
    template __global__ void wenet::relpos_attention_mma_kernel<DK>(const __half*, const __half*,            \
                                                                    const __half*, const __half*,            \
                                                                    const __half*, const __half*,            \
                                                                    const int*, __half*, int, int);
WENET_ATTN_MMA_INSTANTIATE(16) WENET_ATTN_MMA_INSTANTIATE(32) WENET_ATTN_MMA_INSTANTIATE(48)
WENET_ATTN_MMA_INSTANTIATE(64) WENET_ATTN_MMA_INSTANTIATE(80) WENET_ATTN_MMA_INSTANTIATE(96)
WENET_ATTN_MMA_INSTANTIATE(112) WENET_ATTN_MMA_INSTANTIATE(128)
#define WENET_ATTN_TF32_INSTANTIATE(DK)                                                                     \
    template __global__ void wenet::relpos_attention_tf32x3_kernel<DK>(const float*, const float*,          \
                                                                       const float*, const float*,          \
                                                                       const float*, const float*,          \
                                                                       const int*, float*, int, int);
WENET_ATTN_TF32_INSTANTIATE(16) WENET_ATTN_TF32_INSTANTIATE(32) WENET_ATTN_TF32_INSTANTIATE(48)
WENET_ATTN_TF32_INSTANTIATE(64) WENET_ATTN_TF32_INSTANTIATE(80) WENET_ATTN_TF32_INSTANTIATE(96)
WENET_ATTN_TF32_INSTANTIATE(112) WENET_ATTN_TF32_INSTANTIATE(128)
#endif
