// Checks every kernel of a rendered catalogue against a float64 CPU convolution, on random
// problems (padding, stride, dilation, bias, sizes that cross tile edges, the kernel's
// layout with either filter layout, every epilogue: alpha, residual, activation), run on the host
// through cuda_host.h. Built and run by ../emulate.rs; the kernels and their table come from
// the including compile (-include of the rendered unit and the generated table).
//
// Usage: driver SEED TRIALS. Exit status 0 when every check passes.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

// The generated table: struct Spec { name, fn, bm, bn, bk, threads, fixed, r, s, sh, sw, fused,
// layout }.
#include "kernels.h"

// Offsets of X(n, c, h, w) / Y(n, k, p, q) in the layout, and of F(k, c, r, s).
static long long at4(int layout, long long n, long long c, long long h, long long w, long long C, long long H,
                     long long W) {
    return layout == IM2WIN_NHWC ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
}
static long long at_f(int filter_layout, long long k, long long c, long long r, long long s, const ConvParams& p) {
    return filter_layout == IM2WIN_KRSC ? ((k * p.r + r) * p.s + s) * p.c + c : ((k * p.c + c) * p.r + r) * p.s + s;
}

static double activate(int act, double v) {
    switch (act) {
    case IM2WIN_RELU: return v > 0 ? v : 0;
    case IM2WIN_SILU: return v / (1 + std::exp(-v));
    case IM2WIN_GELU: return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
    case IM2WIN_GELU_TANH: return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    default: return v;
    }
}

// The epilogue's value at output (n, k, op, oq), stored at `i` (its offset in the layout).
static double reference(const std::vector<float>& x, const std::vector<float>& f,
                        const std::vector<float>& bias, const std::vector<float>& residual, const ConvParams& p,
                        long long n, long long k, long long op, long long oq, long long i) {
    double acc = 0.0;
    for (long long c = 0; c < p.c; ++c)
        for (long long r = 0; r < p.r; ++r)
            for (long long s = 0; s < p.s; ++s) {
                long long ih = op * p.stride_h + r * p.dil_h - p.pad_top;
                long long iw = oq * p.stride_w + s * p.dil_w - p.pad_left;
                if (ih < 0 || ih >= p.h || iw < 0 || iw >= p.w) continue;
                acc += (double)x[at4(p.layout, n, c, ih, iw, p.c, p.h, p.w)] * f[at_f(p.filter_layout, k, c, r, s, p)];
            }
    double v = (double)p.alpha * acc + (p.has_bias ? bias[k] : 0.0);
    if (p.has_residual) v += (double)p.beta * residual[i];
    return activate(p.activation, v);
}

int main(int argc, char** argv) {
    if (argc != 3) return 2;
    std::mt19937 rng(atoi(argv[1]));
    const int trials = atoi(argv[2]);
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    std::uniform_real_distribution<float> value(-1.0f, 1.0f);
    int failures = 0;
    for (const Spec& spec : kernels) {
        for (int trial = 0; trial < trials; ++trial) {
            ConvParams p{};
            p.n = pick(1, 3);
            p.c = pick(1, 9);
            // The NHWC input transform's two paths: the gather (C < 8) and the shared-memory tiles
            // of 8 channels (C >= 8, with a partial last tile when C is not a multiple of 8).
            if (!spec.fused && spec.layout == IM2WIN_NHWC && trial % 2 == 1) p.c = pick(8, 19);
            p.k = pick(1, spec.bm + 20);  // often more than one block of channels
            if (spec.fixed) {
                p.r = spec.r, p.s = spec.s, p.stride_h = spec.sh, p.stride_w = spec.sw;
                p.dil_h = p.dil_w = 1;
            } else {
                p.r = pick(1, 5), p.s = pick(1, 5), p.stride_h = pick(1, 3), p.stride_w = pick(1, 3);
                p.dil_h = pick(1, 2), p.dil_w = trial == 0 ? 1 : pick(1, 2);
            }
            const bool padded = trial % 3 != 1;
            const int top = padded ? pick(0, 2) : 0, bottom = padded ? pick(0, 2) : 0;
            const int left = padded ? pick(0, 2) : 0, right = padded ? pick(0, 2) : 0;
            const int span_h = p.dil_h * (p.r - 1) + 1, span_w = p.dil_w * (p.s - 1) + 1;
            // Up to about 17 x 18 outputs of up to 3 images: past a 128-pixel tile edge often
            // enough, and small, since every block of threads runs on OS threads here (with
            // twice these sizes the driver ran 75 s instead of 43 on the 2-core machine).
            p.h = std::max(1, span_h - top - bottom) + pick(0, 14);
            p.w = std::max(1, span_w - left - right) + pick(0, 15);
            p.pad_top = top, p.pad_left = left;
            p.p = (p.h + top + bottom - span_h) / p.stride_h + 1;
            p.q = (p.w + left + right - span_w) / p.stride_w + 1;
            p.win_w = (p.q - 1) * p.stride_w + (p.s - 1) * p.dil_w + 1;
            p.has_bias = trial % 2;
            p.layout = spec.layout;
            p.filter_layout = pick(0, 1);
            // The plain epilogue in trial 0, then random ones.
            p.activation = trial == 0 ? IM2WIN_IDENTITY : pick(0, 4);
            p.has_residual = trial == 0 ? 0 : pick(0, 1);
            p.alpha = trial == 0 ? 1.0f : std::uniform_real_distribution<float>(0.5f, 2.0f)(rng);
            p.beta = p.has_residual ? value(rng) : 0.0f;
            const bool plain = p.layout == 0 && p.filter_layout == 0 && p.activation == 0 && !p.has_residual &&
                               p.alpha == 1.0f;
            p.crs = (long long)p.c * p.r * p.s;
            p.npq = (long long)p.n * p.p * p.q;

            std::vector<float> x((size_t)p.n * p.c * p.h * p.w), f((size_t)p.k * p.crs);
            std::vector<float> bias(p.has_bias ? p.k : 0);
            std::vector<float> residual(p.has_residual ? (size_t)p.n * p.k * p.p * p.q : 0);
            for (std::vector<float>* v : {&x, &f, &bias, &residual})
                for (float& e : *v) e = value(rng);
            // The transformed filter: C*R*S rows of K rounded up to 4 (docs/DESIGN.md).
            const long long k4 = (p.k + 3) / 4 * 4;
            std::vector<float> t((size_t)p.n * p.c * p.p * p.win_w * p.r), ft((size_t)(p.crs * k4));
            std::vector<float> y((size_t)p.n * p.k * p.p * p.q, NAN), direct(y.size(), NAN);
            std::vector<double> oracle(y.size(), NAN);
            const float* b = p.has_bias ? bias.data() : nullptr;
            const float* res = p.has_residual ? residual.data() : nullptr;

            // Odd grid sizes: the grid-stride loops must not depend on them.
            if (!spec.fused && p.layout == IM2WIN_NCHW) {
                launch({3}, 64, [&] { im2win_input_transform_f32(x.data(), t.data(), p); });
            } else if (!spec.fused) {
                // The NHWC transform (its shared-memory tiles for C >= 8, its gather below) must
                // build, bit for bit, the buffer that the NCHW transform builds from the same
                // input in NCHW; odd grid sizes, and a block size the tiles do not divide.
                launch({3}, 96, [&] { im2win_input_transform_nhwc_f32(x.data(), t.data(), p); });
                std::vector<float> x_nchw(x.size()), t_nchw(t.size(), NAN);
                for (long long n = 0; n < p.n; ++n)
                    for (long long c = 0; c < p.c; ++c)
                        for (long long h = 0; h < p.h; ++h)
                            for (long long w = 0; w < p.w; ++w)
                                x_nchw[at4(IM2WIN_NCHW, n, c, h, w, p.c, p.h, p.w)] =
                                    x[at4(IM2WIN_NHWC, n, c, h, w, p.c, p.h, p.w)];
                ConvParams q = p;
                q.layout = IM2WIN_NCHW;
                launch({2}, 64, [&] { im2win_input_transform_f32(x_nchw.data(), t_nchw.data(), q); });
                if (std::memcmp(t_nchw.data(), t.data(), t.size() * sizeof(float)) != 0) {
                    printf("FAIL %s: im2win_input_transform_nhwc_f32 (C %d) differs from the NCHW transform\n",
                           spec.name, p.c);
                    ++failures;
                }
            }
            launch({2}, 256, [&] { im2win_filter_transform_f32(f.data(), ft.data(), p); });
            std::vector<float> ft_fused(ft.size());
            launch({3}, 128, [&] { im2win_filter_transform_fused_f32(f.data(), ft_fused.data(), p); });
            launch({5}, 32, [&] { im2win_direct_reference_f64(x.data(), f.data(), b, res, oracle.data(), p); });
            // The benchmark's direct baseline knows NCHW and the plain epilogue only.
            if (plain) {
                launch({4}, 32, [&] { im2win_direct_f32(x.data(), f.data(), b, direct.data(), p); });
            }
            // A fused kernel reads its windows from X itself, and its filter in channels-fastest
            // order; a materialised one reads T and the window-order filter.
            const float* windows = spec.fused ? x.data() : t.data();
            const float* filter = spec.fused ? ft_fused.data() : ft.data();
            const dim3 grid{(unsigned)((p.npq + spec.bn - 1) / spec.bn),
                            (unsigned)((p.k + spec.bm - 1) / spec.bm), 1};
            launch(grid, spec.threads, [&] { spec.fn(windows, filter, b, res, y.data(), p); });
            // The same kernel with its reduction split (as many splits as stages, or more, in
            // some trials: empty shares), then the reduction kernel.
            const int stages = (int)((p.crs + spec.bk - 1) / spec.bk);
            const int splits = trial % 3 == 2 ? stages + 1 : pick(2, std::max(2, std::min(stages, 5)));
            std::vector<float> part((size_t)splits * y.size(), NAN), y_split(y.size(), NAN);
            launch({grid.x, grid.y, (unsigned)splits}, spec.threads,
                   [&] { spec.fn(windows, filter, b, res, part.data(), p); });
            launch({3}, 64, [&] { im2win_split_reduce_f32(part.data(), b, res, y_split.data(), p, splits); });

            // float32 sums of up to C*R*S products of values in [-1, 1], scaled by alpha <= 2.
            const double tolerance = 2e-5 * (1.0 + (double)p.crs);
            long long bad = 0;
            double worst = 0.0;
            for (long long n = 0; n < p.n; ++n)
                for (long long k = 0; k < p.k; ++k)
                    for (long long op = 0; op < p.p; ++op)
                        for (long long oq = 0; oq < p.q; ++oq) {
                            const size_t i = (size_t)at4(p.layout, n, k, op, oq, p.k, p.p, p.q);
                            const double want = reference(x, f, bias, residual, p, n, k, op, oq, i);
                            const double error = std::fabs(y[i] - want);
                            worst = std::max(worst, error);
                            const double split_error = std::fabs(y_split[i] - want);
                            worst = std::max(worst, split_error);
                            if (!(error <= tolerance) || !(split_error <= tolerance) ||
                                !(std::fabs(oracle[i] - want) <= 1e-9) ||
                                !(!plain || std::fabs(direct[i] - want) <= tolerance)) {
                                if (bad++ < 3)
                                    printf("  at n=%lld k=%lld p=%lld q=%lld: kernel %g, split %g, f64 oracle %g, "
                                           "direct_f32 %g, want %g\n",
                                           n, k, op, oq, y[i], y_split[i], oracle[i], direct[i], want);
                            }
                        }
            failures += bad != 0;
            printf("%s %s N%d C%d H%d W%d K%d R%d S%d stride %dx%d dil %dx%d pad %d,%d,%d,%d bias %d "
                   "filter %s act %d alpha %g residual %d beta %g splits %d -> P%d Q%d, max error %.1e\n",
                   bad ? "FAIL" : "ok  ", spec.name, p.n, p.c, p.h, p.w, p.k, p.r, p.s, p.stride_h,
                   p.stride_w, p.dil_h, p.dil_w, top, bottom, left, right, p.has_bias,
                   p.filter_layout ? "krsc" : "kcrs", p.activation, p.alpha, p.has_residual, p.beta, splits, p.p,
                   p.q, worst);
        }
    }
    // The channels-last transposes (dst[b][i][c] = src[b][c][i]) of both element sizes: below
    // 32 pixels element-wise, from 32 on in 64 x 64 tiles; sizes that leave partial tiles, and
    // odd grids (grid-stride loops).
    const int shapes[][3] = {{2, 5, 9}, {3, 70, 1}, {1, 3, 49}, {2, 67, 100}, {1, 130, 33}, {2, 64, 64}};
    for (const auto& shape : shapes) {
        const long long batches = shape[0], spatial = shape[2];
        const int channels = shape[1];
        const size_t len = (size_t)(batches * channels * spatial);
        std::vector<unsigned short> s16(len), d16(len, 0xFFFF);
        std::vector<unsigned int> s32(len), d32(len, 0xFFFFFFFFu);
        for (size_t e = 0; e < len; ++e) {
            s16[e] = (unsigned short)(rng() & 0x7FFF);
            s32[e] = (unsigned int)(rng() & 0x7FFFFFFF);
        }
        for (unsigned grid : {1u, 3u}) {
            launch({grid}, 256, [&] { im2win_channels_last_b16(s16.data(), d16.data(), batches, channels, spatial); });
            launch({grid}, 256, [&] { im2win_channels_last_b32(s32.data(), d32.data(), batches, channels, spatial); });
            long long bad = 0;
            for (long long b = 0; b < batches; ++b)
                for (long long c = 0; c < channels; ++c)
                    for (long long i = 0; i < spatial; ++i) {
                        const size_t from = (size_t)((b * channels + c) * spatial + i);
                        const size_t to = (size_t)((b * spatial + i) * channels + c);
                        bad += d16[to] != s16[from] || d32[to] != s32[from];
                    }
            failures += bad != 0;
            printf("%s im2win_channels_last_b16/_b32 batches %lld channels %d spatial %lld grid %u: %lld wrong\n",
                   bad ? "FAIL" : "ok  ", batches, channels, spatial, grid, bad);
        }
    }
    printf("%d failure(s)\n", failures);
    return failures != 0;
}
