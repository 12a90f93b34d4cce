// im2win: the filter geometry of a kernel, fixed at compile time or read from the parameters.
//
// The loaders are written once against this interface: R, S, the strides SH, SW and the
// dilations DH, DW, and dividers by S, R and R*S. For a fixed geometry the sizes are
// constants (dilation 1), so the divisions become multiplies and shifts and the dilation terms
// vanish; the generic geometry reads them from ConvParams, for every valid problem.
#pragma once

#include "common.cuh"

namespace im2win {

template <int R_, int S_, int SH_, int SW_>
struct FixedGeometry {
    static constexpr bool FIXED = true;
    static constexpr int R = R_;
    static constexpr int S = S_;
    static constexpr int SH = SH_;
    static constexpr int SW = SW_;
    static constexpr int DH = 1;
    static constexpr int DW = 1;
    ConstDivider<S_> div_s;
    ConstDivider<R_> div_r;
    ConstDivider<R_ * S_> div_rs;
    __device__ __forceinline__ explicit FixedGeometry(const ConvParams&) {}
};

// R * S fits in an int because C * R * S does.
struct GenericGeometry {
    static constexpr bool FIXED = false;
    int R, S, SH, SW, DH, DW;
    Divider div_s;
    Divider div_r;
    Divider div_rs;
    __device__ __forceinline__ explicit GenericGeometry(const ConvParams& prm)
        : R(prm.r), S(prm.s), SH(prm.stride_h), SW(prm.stride_w), DH(prm.dil_h), DW(prm.dil_w),
          div_s(prm.s), div_r(prm.r), div_rs((long long)prm.r * prm.s) {}
};

}  // namespace im2win
