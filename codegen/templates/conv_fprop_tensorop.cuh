// im2win: the tensor-core forward convolution (NHWC input and output, KRSC filter), composed
// from its building blocks:
//   tile shape      tile_tensorop.cuh: block, warp and stage sizes; swizzled shared rows;
//   tile loaders    tile_gather_tensorop.cuh: the window gather from X (A) and the filter rows
//                   (B): where a stage's data is;
//   main loop       when it moves: mainloop_multistage.cuh (STAGES deep, cp.async groups, every
//                   warp copies and multiplies) or mainloop_warp_specialized.cuh (one warpgroup
//                   copies, the MMA warpgroups multiply; persistent blocks, mbarrier hand-off);
//   MMA             how it is multiplied, FP32 sums: mma_tensorop.cuh (ldmatrix + mma.sync,
//                   sm_80 and later) or mma_warpgroup.cuh (wgmma from shared memory, sm_90a);
//   epilogue        epilogue_tensorop.cuh: what is written (staged through shared memory).
//
// Implicit GEMM over output pixels x output channels (tile_tensorop.cuh):
//   Y[j][k] = epilogue(sum over kk of Act[j][kk] * F[k][kk]),
// the window of pixel j gathered straight from the NHWC input: no im2win buffer, no filter
// transform. Element types come from Config::Types (a Conv2dTypes, numeric.cuh): BF16 or FP16
// operands and outputs with FP32 sums, or float everywhere, multiplied as TF32.
//
// Launch: block (Tile::BLOCK_THREADS, 1, 1); grid (ceil(N*P*Q / BM) * ceil(K / BN), 1, 1), the
// channel tile fastest (so blocks that share a pixel tile, which read the same windows, run
// together); dynamic shared memory Tile::SMEM_BYTES, which needs
// cudaFuncSetAttribute(MaxDynamicSharedMemorySize) above 48 KiB. A warp-specialised kernel
// (Tile::WARP_SPECIALIZED) takes any grid.x: its blocks are persistent, block b taking tiles
// b, b + gridDim.x, ...; launched with as many blocks as fit on the GPU at once.
// Split reduction (SPLITS kernels only; the others take gridDim.z = 1): with gridDim.z = Z > 1,
// block z takes a contiguous share of the stages and
// writes alpha times its partial sums (float), without the rest of the epilogue, to slice
// z * N*K*P*Q of the partial buffer that `y` then points to, each at its output's index in
// ConvParams::layout; the split reduction (support.cu.tera) adds the slices and applies the
// epilogue. Why: a small grid (batch 1, deep layers: 4-16 blocks on 132 SMs) otherwise runs
// its whole reduction on a few SMs, latency-bound stage after stage.
// Requirements: ConvParams::layout NHWC, filter_layout KRSC. VECTOR = true additionally needs
// C % Tile::CHUNK_ELEMENTS == 0 (8 for two-byte types, 4 for float) and X and F aligned to 16
// bytes; VECTOR = false runs any C.
#pragma once

#include "common.cuh"
#include "epilogue_tensorop.cuh"
#include "geometry.cuh"
#include "mainloop_multistage.cuh"
#include "mainloop_warp_specialized.cuh"
#include "mma_tensorop.cuh"
#include "mma_warpgroup.cuh"
#include "tma.cuh"
#include "tile_gather_tensorop.cuh"
#include "tile_tensorop.cuh"

namespace im2win {

// One member of the family: every compile-time choice.
// Mma: WarpMmaTensorOp (mma.sync, sm_80 and later) or WarpgroupMmaTensorOp (wgmma, sm_90a).
// SPLITS: whether the kernel can split its reduction over gridDim.z (KernelSpec::splits_reduction:
// not the warp tiles of 128 sums a thread, where the split's code costs spills on sm_80).
// FILTER_TMA (warp-specialised only): the filter's stage rows come by TMA (tma.cuh), one box a
// stage issued by one copying thread, from the tensor map the kernel is given, instead of
// through the copying warps' cp.async (KrscFilterRows). ACT_TMA (with FILTER_TMA): the windows
// too, in im2col mode (one filter tap and BK channels a stage: C % BK == 0, BK 64 or 32), so that one thread
// issues every copy.
template <class Tile_, class Geometry_, bool VECTOR_, template <class> class Mma_ = WarpMmaTensorOp,
    bool SPLITS_ = false, bool FILTER_TMA_ = false, bool ACT_TMA_ = false>
struct Conv2dFpropTensorOp {
    using Tile = Tile_;
    using Types = typename Tile::Types;
    using ElementX = typename Types::ElementX;
    using ElementF = typename Types::ElementF;
    using ElementY = typename Types::ElementY;
    using Geometry = Geometry_;
    static constexpr bool VECTOR = VECTOR_;
    using ActLoader = NhwcWindowGather<Tile, Geometry, VECTOR>;
    using FilterLoader = KrscFilterRows<Tile, VECTOR>;
    using Mma = Mma_<Tile>;
    static constexpr bool SPLITS = SPLITS_;
    static constexpr bool FILTER_TMA = FILTER_TMA_;
    static constexpr bool ACT_TMA = ACT_TMA_;
    static_assert(!ACT_TMA || FILTER_TMA, "the copy engine moves both operands or the filter alone");
    static_assert(!FILTER_TMA || Tile::WARP_SPECIALIZED, "the bulk copies complete on the warp-specialised loop's barriers");
    // The boxes land in the swizzle of the stage's rows (the map's 128- or 64-byte swizzle).
    static_assert(!FILTER_TMA || Tile::ROW_BYTES == 128 || Tile::ROW_BYTES == 64, "a TMA swizzle of the rows' width");
};

// 1024-byte alignment: a whole 128-byte swizzle pattern (8 rows) for the warpgroup MMA's
// descriptors (mma_warpgroup.cuh); every stage and operand size is a multiple of it.
extern __shared__ __align__(1024) unsigned char im2win_tensorop_smem[];

// This block's share of the reduction, BK indices a stage (the last stage's excess is
// zero-filled by the loaders): stages [first, last), split over gridDim.z when the kernel
// SPLITS, in equal shares but for the last (a share may be empty when Z exceeds the stage
// count: the block then writes zeros, so that the reduction still sees a complete slice).
template <class Tile, bool SPLITS>
struct ReductionShare {
    int first;
    int last;
    __device__ __forceinline__ explicit ReductionShare(const ConvParams& prm) {
        const int stages = (int)((prm.crs + Tile::BK - 1) / Tile::BK);
        first = 0;
        last = stages;
        if constexpr (SPLITS) {
            const int per_split = (stages + (int)gridDim.z - 1) / (int)gridDim.z;
            first = min(stages, (int)blockIdx.z * per_split);
            last = min(stages, first + per_split);
        }
    }
};

// Shared addresses of stage buffer `buf`'s A rows and B rows (`smem`: the dynamic shared
// memory's).
template <class Tile>
__device__ __forceinline__ unsigned int stage_a(unsigned int smem, int buf) {
    return smem + buf * Tile::STAGE_BYTES;
}
template <class Tile>
__device__ __forceinline__ unsigned int stage_b(unsigned int smem, int buf) {
    return smem + buf * Tile::STAGE_BYTES + Tile::A_STAGE_BYTES;
}

// Every warp copies and multiplies (mainloop_multistage.cuh); block b computes tile b.
template <class Config>
__device__ __forceinline__ void conv2d_fprop_tensorop_multistage(const typename Config::ElementX* __restrict__ x,
    const typename Config::ElementF* __restrict__ f, const typename Config::ElementY* __restrict__ bias,
    const typename Config::ElementX* __restrict__ residual, typename Config::ElementY* __restrict__ y,
    const ConvParams& prm) {
    using Tile = typename Config::Tile;
    const unsigned int smem = (unsigned int)__cvta_generic_to_shared(im2win_tensorop_smem);

    const int tid = threadIdx.x;
    const int lane = tid % 32;
    const int warp = tid / 32;
    const int tiles_n = (prm.k + Tile::BN - 1) / Tile::BN;
    const int tile_n = (int)(blockIdx.x % (unsigned int)tiles_n);
    const long long tile_m = blockIdx.x / (unsigned int)tiles_n;
    const long long j0 = tile_m * Tile::BM;   // first output pixel of the block
    const int n0 = tile_n * Tile::BN;          // first output channel

    typename Config::ActLoader act(x, prm, j0, tid);
    typename Config::FilterLoader filter(f, prm, n0, tid);
    typename Config::Mma mma(warp, lane);

    const ReductionShare<Tile, Config::SPLITS> share(prm);
    const int first = share.first;
    const int last = share.last;
    auto a_at = [&](int buf) { return stage_a<Tile>(smem, buf); };
    auto b_at = [&](int buf) { return stage_b<Tile>(smem, buf); };
    // A stage's copies: A_PASSES rows of the window tile, then B_PASSES of the filter tile;
    // copy t of them goes with k-step t * KSTEPS / COPIES of the multiply (all with the first
    // k-step when they are loads into registers, whose latency the whole stage then covers).
    constexpr int A_COPIES = Tile::A_PASSES;
    constexpr int COPIES = A_COPIES + Tile::B_PASSES;
    constexpr int KSTEPS = Config::Mma::KSTEPS;
    auto copies = [&](int stage, int buf, int ks, bool all) {
        if (all || ks == 0) {
            const unsigned int k0 = (unsigned int)stage * Tile::BK;
            act.prepare(k0);
            filter.prepare(k0);
        }
#pragma unroll
        for (int t = 0; t < COPIES; ++t) {
            const bool now = all || (Config::VECTOR ? t * KSTEPS / COPIES == ks : ks == 0);
            if (now) {
                if (t < A_COPIES) {
                    act.copy(t, a_at(buf));
                } else {
                    filter.copy(t - A_COPIES, b_at(buf));
                }
            }
        }
    };
    MultistageMainloop<Tile::STAGES, Config::Mma::ASYNC_PROXY_FENCE>::run(
        first, last,
        [&](int stage, int buf) { copies(stage, buf, 0, true); },
        [&](int read, int stage, int write) {
            mma.multiply(a_at(read), b_at(read), [&](int ks) { copies(stage, write, ks, false); });
        },
        [&](int buf) {
            act.complete(a_at(buf));
            filter.complete(b_at(buf));
        });

    mma.finish();
    write_outputs_tensorop<Tile, Config::SPLITS>(mma, im2win_tensorop_smem, y, bias, residual, prm, j0, n0);
}

// One warpgroup copies, the MMA teams multiply (mainloop_warp_specialized.cuh); blocks are
// persistent.
template <class Config>
__device__ __forceinline__ void conv2d_fprop_tensorop_warp_specialized(const typename Config::ElementX* __restrict__ x,
    const typename Config::ElementF* __restrict__ f, const typename Config::ElementY* __restrict__ bias,
    const typename Config::ElementX* __restrict__ residual, typename Config::ElementY* __restrict__ y,
    const ConvParams& prm, const TensorMap* act_map, const TensorMap* filter_map) {
    using Tile = typename Config::Tile;
    const unsigned int smem = (unsigned int)__cvta_generic_to_shared(im2win_tensorop_smem);
    static_assert(Config::VECTOR, "the copying warps only issue cp.async (mainloop_warp_specialized.cuh)");
    static_assert(Config::Mma::ASYNC_PROXY_FENCE, "the MMA warps issue wgmma groups (mma_warpgroup.cuh)");

    const int tid = threadIdx.x;
    const int tiles_n = (prm.k + Tile::BN - 1) / Tile::BN;
    const ReductionShare<Tile, Config::SPLITS> reduction(prm);
    const int first = reduction.first;
    const int last = reduction.last;
    auto a_at = [&](int buf) { return stage_a<Tile>(smem, buf); };
    auto b_at = [&](int buf) { return stage_b<Tile>(smem, buf); };

    using Pipeline = WarpSpecializedMainloop<Tile::STAGES, Tile::THREADS, Config::ACT_TMA ? 0 : Tile::PRODUCER_THREADS,
        Config::FILTER_TMA ? 1 : 0>;
    const Pipeline pipeline(smem + Tile::OPERAND_BYTES + Tile::MMA_GROUPS * Tile::STAGING_BYTES);
    typename Pipeline::State state;
    // Persistent: tiles blockIdx.x, + gridDim.x, ... (the channel tile fastest); the block's
    // i-th tile goes to MMA team i % MMA_GROUPS.
    const long long tiles = (long long)tiles_n * ((prm.npq + Tile::BM - 1) / Tile::BM);
    if (tid >= Tile::MMA_THREADS) {
        // The copying warpgroup: every copy of every stage of every tile, then it leaves.
        if constexpr (Tile::REALLOCATES_REGISTERS) {
            warpgroup_registers<Tile::PRODUCER_REGISTERS, false>();   // its few go to the MMA warps
        }
        const int copier = tid - Tile::MMA_THREADS;
        if constexpr (Config::FILTER_TMA) {
            if (copier == 0) {
                tma_prefetch(filter_map);
            }
        }
        if constexpr (Config::ACT_TMA) {
            // One thread issues every copy: per stage one im2col box of the windows (BM pixels x
            // BK channels of one tap) and one box of the filter.
            if (copier == 0) {
                tma_prefetch(act_map);
                const long long pq = (long long)prm.p * prm.q;
                for (long long tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
                    const long long j0 = (tile / tiles_n) * Tile::BM;
                    const int n0 = (int)(tile % tiles_n) * Tile::BN;
                    // Where the tile's first pixel's window starts (the copy engine walks on from it).
                    const int image = (int)(j0 / pq);
                    const int rest = (int)(j0 - image * pq);
                    const int p = rest / prm.q;
                    const int w = (rest - p * prm.q) * prm.stride_w - prm.pad_left;
                    const int h = p * prm.stride_h - prm.pad_top;
                    // The first stage's tap (r, s) and channel c (stages go in order: a stage is
                    // BK channels of one tap, C % BK == 0).
                    const int taps_in = first * Tile::BK / prm.c;
                    int c = first * Tile::BK - taps_in * prm.c;
                    int r = taps_in / prm.s;
                    int s = taps_in - r * prm.s;
                    pipeline.produce(state, first, last, [&](int stage, int buf) {
                        const unsigned int full = pipeline.full(buf);
                        mbarrier_arrive_expect_tx(full, Tile::STAGE_BYTES);
                        tma_load_im2col_4d(a_at(buf), act_map, c, w, h, image, (unsigned short)(s * prm.dil_w),
                            (unsigned short)(r * prm.dil_h), full);
                        tma_load_2d(b_at(buf), filter_map, stage * Tile::BK, n0, full);
                        c += Tile::BK;
                        if (c == prm.c) {
                            c = 0;
                            if (++s == prm.s) {
                                s = 0;
                                ++r;
                            }
                        }
                    });
                }
            }
        } else {
            for (long long tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
                const long long j0 = (tile / tiles_n) * Tile::BM;
                const int n0 = (int)(tile % tiles_n) * Tile::BN;
                typename Config::ActLoader act(x, prm, j0, copier);
                typename Config::FilterLoader filter(f, prm, n0, copier);
                pipeline.produce(state, first, last, [&](int stage, int buf) {
                    const unsigned int k0 = (unsigned int)stage * Tile::BK;
                    act.prepare(k0);
#pragma unroll
                    for (int t = 0; t < Tile::A_PASSES; ++t) {
                        act.copy(t, a_at(buf));
                    }
                    if constexpr (Config::FILTER_TMA) {
                        // The filter's rows n0 .. n0 + BN of reduction k0 .. k0 + BK, a KRSC filter
                        // being a K x CRS matrix (rows past K and columns past CRS land as zeros).
                        if (copier == 0) {
                            mbarrier_arrive_expect_tx(pipeline.full(buf), Tile::B_STAGE_BYTES);
                            tma_load_2d(b_at(buf), filter_map, (int)k0, n0, pipeline.full(buf));
                        }
                    } else {
                        filter.prepare(k0);
#pragma unroll
                        for (int t = 0; t < Tile::B_PASSES; ++t) {
                            filter.copy(t, b_at(buf));
                        }
                    }
                });
            }
            pipeline.produced();
        }
        return;
    }
    // An MMA team: each stage's group queued behind the one before; the outputs of a tile
    // written while the copying warps fill the stages of the next (and, with two teams,
    // while the other team multiplies).
    if constexpr (Tile::REALLOCATES_REGISTERS) {
        warpgroup_registers<Tile::CONSUMER_REGISTERS, true>();
    }
    const int team = tid / Tile::THREADS;
    typename Config::Mma mma((tid % Tile::THREADS) / 32, tid % 32);   // the warp within its team
    const int share = last - first;   // stages per tile
    state.skip(team * share);
    unsigned char* staging = im2win_tensorop_smem + Tile::STAGING_OFFSET + team * Tile::STAGING_BYTES;
    // Teams take turns at the main loop (the block's tiles in order): team t waits for the
    // other's main loop of the tile before. Besides keeping the tensor cores to one team at a
    // time, this keeps each team's barrier waits unambiguous: when a team starts a tile, every
    // stage before it has been multiplied, so each buffer's last completed fill is the one
    // before the awaited (mbarrier.cuh: a waiter is never more than one phase behind).
    bool first_tile = true;
    for (long long tile = blockIdx.x + (long long)team * gridDim.x; tile < tiles;
         tile += (long long)Tile::MMA_GROUPS * gridDim.x) {
        const long long j0 = (tile / tiles_n) * Tile::BM;
        const int n0 = (int)(tile % tiles_n) * Tile::BN;
        if constexpr (Tile::MMA_GROUPS > 1) {
            if (!first_tile || team > 0) {
                named_barrier_sync(TEAM_TURN_BARRIER + team, 2 * Tile::THREADS);
            }
        }
        first_tile = false;
        mma.clear();
        pipeline.consume(
            state, first, last,
            [&](int buf) {
                mma.issue(a_at(buf), b_at(buf));
                mma.template wait<1>();
            },
            [&] { mma.finish(); });
        if constexpr (Tile::MMA_GROUPS > 1) {
            static_assert(Tile::MMA_GROUPS == 2, "two teams take turns");
            if (tile + gridDim.x < tiles) {   // the other team's next tile
                named_barrier_arrive(TEAM_TURN_BARRIER + (1 - team), 2 * Tile::THREADS);
            }
        }
        state.skip((Tile::MMA_GROUPS - 1) * share);
        write_outputs_tensorop<Tile, Config::SPLITS>(mma, staging, y, bias, residual, prm, j0, n0);
    }
}

template <class Config>
__device__ __forceinline__ void conv2d_fprop_tensorop(const typename Config::ElementX* __restrict__ x,
    const typename Config::ElementF* __restrict__ f, const typename Config::ElementY* __restrict__ bias,
    const typename Config::ElementX* __restrict__ residual, typename Config::ElementY* __restrict__ y,
    const ConvParams& prm) {
    if constexpr (Config::Tile::WARP_SPECIALIZED) {
        static_assert(!Config::FILTER_TMA, "a kernel with a filter TMA takes the filter's tensor map");
        conv2d_fprop_tensorop_warp_specialized<Config>(x, f, bias, residual, y, prm, nullptr, nullptr);
    } else {
        conv2d_fprop_tensorop_multistage<Config>(x, f, bias, residual, y, prm);
    }
}

// The same with tensor maps (Config::FILTER_TMA): the filter's, a K x CRS matrix of ElementF,
// boxes of BK x BN; with Config::ACT_TMA the input's, an im2col map of the NHWC input (corners
// -pad and pad - (R - 1) * dilation, traversal strides the convolution's), boxes of BM pixels x
// BK channels; both with the 128-byte swizzle and zero fill. `act_map` is unused without ACT_TMA.
template <class Config>
__device__ __forceinline__ void conv2d_fprop_tensorop(const typename Config::ElementX* __restrict__ x,
    const typename Config::ElementF* __restrict__ f, const typename Config::ElementY* __restrict__ bias,
    const typename Config::ElementX* __restrict__ residual, typename Config::ElementY* __restrict__ y,
    const ConvParams& prm, const TensorMap* act_map, const TensorMap* filter_map) {
    static_assert(Config::FILTER_TMA, "the tensor maps are the copy engine's");
    conv2d_fprop_tensorop_warp_specialized<Config>(x, f, bias, residual, y, prm, act_map, filter_map);
}

}  // namespace im2win
