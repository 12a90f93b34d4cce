// im2win: the filter tile loader. Copies a stage's BK x BM tile of the transformed filter A into
// shared memory (As[kk][m]).
//
// A is the transformed filter in the workspace (support.cu.tera, filter transforms), row-major
// [C*R*S][K4] of ElementF with K4 = K rounded up to a multiple of K_ALIGN, the elements of 16
// bytes (4 floats; zeros past K): a stage's tile is BK rows of BM contiguous elements, copied as
// vectors of AV elements. Vector v = i*THREADS + tid of a stage
// (i < A_VECS) is A[k0 + v / (BM/AV)][m0 + v % (BM/AV) * AV]: a warp copies contiguous runs of a
// row and writes them to one row of As. Addressing only; the main loop decides when.
#pragma once

#include "copy.cuh"
#include "tile_shape.cuh"

namespace im2win {

template <class Tile>
struct FilterTileLoader {
    using Element = typename Tile::ElementF;
    // The row length of A is a multiple of this many elements (the filter transforms and the
    // runtime's WorkspaceLayout::FILTER_COLUMN_MULTIPLE pad it so), so that its rows stay
    // aligned for the vectors.
    static constexpr int K_ALIGN = access_elements<Element>();
    static_assert(K_ALIGN % Tile::AV == 0, "a vector never straddles the end of K");
    const Element* ft;   // A
    long long K4;      // row stride of A
    int K;
    unsigned int CRS;
    int m0;            // first output channel of the block
    // Thread tid's vector i is at row a_kk[i], column a_m[i] of the stage.
    int a_kk[Tile::A_VECS];
    int a_m[Tile::A_VECS];

    __device__ __forceinline__ FilterTileLoader(const Element* ft_, const ConvParams& prm, int m0_, int tid)
        : ft(ft_), K4(((long long)prm.k + K_ALIGN - 1) / K_ALIGN * K_ALIGN), K(prm.k), CRS((unsigned int)prm.crs),
          m0(m0_) {
#pragma unroll
        for (int i = 0; i < Tile::A_VECS; ++i) {
            const int v = i * Tile::THREADS + tid;
            a_kk[i] = v / Tile::A_ROW_VECS;
            a_m[i] = v % Tile::A_ROW_VECS * Tile::AV;
        }
    }

    // Issues the copies of the stage at reduction index k0 into `as` (As[BK][BM]). Columns past
    // K read nothing (zero fill); K4 - K columns of zeros pad each row, so a vector is either
    // wholly inside or wholly past K. CHECKED: the stage reaches past the reduction, whose rows
    // are zeros too.
    template <bool CHECKED>
    __device__ __forceinline__ void copy(Element* as, unsigned int k0) const {
        const Element* const a_stage = ft + (long long)k0 * K4 + m0;
#pragma unroll
        for (int i = 0; i < Tile::A_VECS; ++i) {
            // Columns past K4 lie in the next row (or past A): zero fills from the row start.
            const bool col_in = m0 + a_m[i] < K;
            const bool in = col_in && (!CHECKED || k0 + a_kk[i] < CRS);
            const Element* src = a_stage + a_kk[i] * K4 + (col_in ? a_m[i] : 0);
            im2win_cp_async<Tile::AV>(as + a_kk[i] * Tile::BM + a_m[i], CHECKED && !in ? ft : src, in, ft);
        }
    }
};

}  // namespace im2win
