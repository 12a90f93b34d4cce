// Checks the float32 grouped kernels (conv_grouped.cuh) of a rendered catalogue against a float64
// direct grouped convolution, on random grouped and depthwise problems (channel multipliers,
// padding, stride, dilation, both layouts and filter layouts, every epilogue), run on the host
// through cuda_host.h, with aligned operands (the NHWC depthwise kernels' vector path) and
// operands one float off (their element path). Built and run by ../emulate.rs
// (`grouped_kernels_compute_the_convolution`); the table comes from grouped_kernels.h.
//
// Usage: grouped_driver SEED. Exit status 0 when every check passes.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>
#include "grouped_kernels.h"

static double act(int a, double v) {
    switch (a) {
    case IM2WIN_RELU: return v > 0 ? v : 0;
    case IM2WIN_SILU: return v / (1 + std::exp(-v));
    case IM2WIN_GELU: return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
    case IM2WIN_GELU_TANH: return 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    default: return v;
    }
}

int main(int argc, char** argv) {
    std::mt19937 rng(argc > 1 ? atoi(argv[1]) : 1);
    auto U = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    auto R = [&]() { float v; do { v = std::uniform_real_distribution<float>(-1, 1)(rng); } while (v == 0); return v; };
    int runs = 0, fails = 0;
    for (int trial = 0; trial < 60; ++trial) {
        bool depthwise = trial % 2 == 0;
        int groups, c, k;
        if (depthwise) { c = U(0, 1) ? 4 * U(1, 6) : U(2, 13); groups = c; k = c * U(1, 3); }
        else { groups = U(2, 4); c = groups * U(1, 4); k = groups * U(1, 4); }
        int r = U(0, 1) ? 3 : 2 * U(0, 2) + 1, s = U(0, 1) ? 3 : 2 * U(0, 2) + 1;
        if (U(0, 1)) { r = s = 3; }
        int sh = U(1, 2), sw = sh; if (U(0, 3) == 0) sw = U(1, 3);
        int dh = U(0, 4) == 0 ? 2 : 1, dw = U(0, 4) == 0 ? 2 : 1;
        int n = U(1, 2), h = U(1, 17), w = U(0, 2) == 0 ? 4 * U(1, 9) : U(1, 19);   // often a multiple of 4: the vector rows
        int pt = U(0, 2), pb = U(0, 2), pl = U(0, 2), pr = U(0, 2);
        int P = (h + pt + pb - dh * (r - 1) - 1); int Q = (w + pl + pr - dw * (s - 1) - 1);
        if (P < 0 || Q < 0) { --trial; continue; }
        P = P / sh + 1; Q = Q / sw + 1;
        int cg = c / groups, kg = k / groups;
        for (int layout = 0; layout < 2; ++layout) {
            int fl = U(0, 1);
            ConvParams p{};
            p.n = n; p.c = c; p.h = h; p.w = w; p.k = k; p.r = r; p.s = s; p.p = P; p.q = Q;
            p.stride_h = sh; p.stride_w = sw; p.pad_top = pt; p.pad_left = pl; p.dil_h = dh; p.dil_w = dw;
            p.win_w = (Q - 1) * sw + (s - 1) * dw + 1; p.has_bias = U(0, 1); p.layout = layout; p.filter_layout = fl;
            p.activation = U(0, 4); p.has_residual = U(0, 1); p.alpha = 0.5f + U(0, 3) * 0.25f; p.beta = -0.75f;
            p.crs = (long long)cg * r * s; p.npq = (long long)n * P * Q;
            std::vector<float> x((size_t)n * c * h * w), f((size_t)k * cg * r * s), b(k), res((size_t)n * k * P * Q);
            for (auto& v : x) v = R(); for (auto& v : f) v = R(); for (auto& v : b) v = R(); for (auto& v : res) v = R();
            auto xo = [&](int nn, int cc, int yy, int xx) -> long long { return layout ? (((long long)nn * h + yy) * w + xx) * c + cc : (((long long)nn * c + cc) * h + yy) * w + xx; };
            auto yo = [&](int nn, int kk, int yy, int xx) -> long long { return layout ? (((long long)nn * P + yy) * Q + xx) * k + kk : (((long long)nn * k + kk) * P + yy) * Q + xx; };
            auto fo = [&](int kk, int cc, int rr, int ss) -> long long { return fl ? (((long long)kk * r + rr) * s + ss) * cg + cc : (((long long)kk * cg + cc) * r + rr) * s + ss; };
            std::vector<double> ref((size_t)n * k * P * Q);
            for (int nn = 0; nn < n; ++nn) for (int kk = 0; kk < k; ++kk) for (int yy = 0; yy < P; ++yy) for (int xx = 0; xx < Q; ++xx) {
                double sum = 0; int first = kk / kg * cg;
                for (int cc = 0; cc < cg; ++cc) for (int rr = 0; rr < r; ++rr) for (int ss = 0; ss < s; ++ss) {
                    int iy = yy * sh - pt + rr * dh, ix = xx * sw - pl + ss * dw;
                    if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                    sum += (double)x[xo(nn, first + cc, iy, ix)] * f[fo(kk, cc, rr, ss)];
                }
                long long at = yo(nn, kk, yy, xx);
                double v = p.alpha * sum + (p.has_bias ? b[kk] : 0.0);
                if (p.has_residual) v += (double)p.beta * res[at];
                ref[at] = act(p.activation, v);
            }
            for (const Spec& sp : kernels) {
                if (sp.layout != layout) continue;
                if (sp.depthwise && groups != c) continue;
                if (sp.fixed && !(sp.r == r && sp.s == s && sp.sh == sh && sp.sw == sw && (dh == 1 || r == 1) && (dw == 1 || s == 1))) continue;
                long long items = (long long)n * P * ((Q + sp.tn - 1) / sp.tn) * ((k + sp.tm - 1) / sp.tm);
                unsigned blocks = (unsigned)((items + sp.threads - 1) / sp.threads);
                // Operands at the start of their vectors (16-byte aligned: the vector path) or one
                // float past it (the element path), the output between guard zones.
                const int o = trial % 4 == 1 ? 1 : 0;
                std::vector<float> xs(o + x.size()), rs(o + res.size()), y(o + ref.size() + 32, NAN);
                std::copy(x.begin(), x.end(), xs.begin() + o);
                std::copy(res.begin(), res.end(), rs.begin() + o);
                for (int g = 0; g < o; ++g) y[g] = 12345.f;
                for (int g = 0; g < 32; ++g) y[o + ref.size() + g] = 12345.f;
                launch(dim3{blocks, 1, 1}, sp.threads, [&] { sp.fn(xs.data() + o, f.data(), p.has_bias ? b.data() : nullptr, p.has_residual ? rs.data() + o : nullptr, y.data() + o, p); });
                double diff = 0, norm = 0; bool bad = false;
                for (size_t i = 0; i < ref.size(); ++i) { float v = y[o + i]; if (!std::isfinite(v)) bad = true; diff += (v - ref[i]) * (v - ref[i]); norm += ref[i] * ref[i]; }
                for (int g = 0; g < o; ++g) if (y[g] != 12345.f) bad = true;
                for (int g = 0; g < 32; ++g) if (y[o + ref.size() + g] != 12345.f) bad = true;
                double err = norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
                ++runs;
                if (bad || err > 1e-5) { ++fails; printf("FAIL %s err %g bad %d: n%d c%d h%d w%d k%d g%d r%d s%d st%dx%d d%dx%d pad %d %d %d %d fl%d\n", sp.name, err, bad, n, c, h, w, k, groups, r, s, sh, sw, dh, dw, pt, pb, pl, pr, fl); }
            }
        }
    }
    printf("%d runs, %d failures\n", runs, fails);
    return fails != 0;
}
