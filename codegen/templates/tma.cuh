// im2win: the tensor memory accelerator (TMA, sm_90): where a tile lies is described once, on
// the host, by a tensor map, and one thread copies a whole box of it into shared memory with
// one instruction, completing on an mbarrier (mbarrier.cuh). Why: the cp.async loaders spend
// an address, a bounds test and an instruction on every 16 bytes of every thread; the copy
// engine computes the addresses itself, fills what lies outside the tensor with zeros, and
// writes the box in the swizzled order that the warpgroup MMA's descriptors read (the map's
// 128-byte swizzle for 128-byte rows, tile_tensorop.cuh's 16-byte piece c of row r at
// c ^ (r % 8); its 64-byte swizzle for 64-byte rows, c ^ (r / 2 % 4)).
//
// The map travels by value, as a __grid_constant__ kernel parameter (its address is then a
// valid generic address for the copy engine). Like the wgmma kernels, everything here compiles
// to nothing before sm_90.
#pragma once

namespace im2win {

// A CUtensorMap (cuda.h), encoded by the host (cuTensorMapEncodeTiled): 128 opaque bytes,
// 64-byte aligned.
struct alignas(64) TensorMap {
    unsigned long long opaque[16];
};

// Copies the box at element coordinates (x, y) (x the contiguous dimension) of the 2-D tensor
// of `map` to shared memory at `dst` (1024-byte aligned for the 128-byte swizzle), counting its
// bytes on the mbarrier at `bar`, whose phase must expect them (mbarrier_arrive_expect_tx).
// Elements outside the tensor land as zeros.
__device__ __forceinline__ void tma_load_2d(unsigned int dst, const TensorMap* map, int x, int y, unsigned int bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
        "l"(map), "r"(x), "r"(y), "r"(bar)
        : "memory");
#else
    (void)dst;
    (void)map;
    (void)x;
    (void)y;
    (void)bar;
#endif
}

// Copies, in im2col mode, BM consecutive output pixels' values of `channels` channels from c
// on (the map's box: pixelsPerColumn x channelsPerPixel) for one filter tap into shared memory at
// `dst`, one 128-byte row a pixel, counting the bytes on the mbarrier at `bar`. (c, w, h, n) is
// where the first pixel's window starts in the NHWC input (w = q * stride - pad_left, and so on:
// negative in the padding), (tap_w, tap_h) the tap's offset in it (s * dilation, r * dilation).
// The copy engine walks the pixels like the output does, along W by the map's traversal stride
// within the map's bounding box (the window origins of the output's columns), then along H,
// then to the next image, and fills every element outside the tensor (the padding) with zeros.
__device__ __forceinline__ void tma_load_im2col_4d(unsigned int dst, const TensorMap* map, int c, int w, int h, int n,
    unsigned short tap_w, unsigned short tap_h, unsigned int bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6], {%7, %8};\n" ::"r"(dst),
        "l"(map), "r"(c), "r"(w), "r"(h), "r"(n), "r"(bar), "h"(tap_w), "h"(tap_h)
        : "memory");
#else
    (void)dst;
    (void)map;
    (void)c;
    (void)w;
    (void)h;
    (void)n;
    (void)tap_w;
    (void)tap_h;
    (void)bar;
#endif
}

// Fetches the map into the copy engine's cache ahead of its first use.
__device__ __forceinline__ void tma_prefetch(const TensorMap* map) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(map) : "memory");
#else
    (void)map;
#endif
}

}  // namespace im2win
