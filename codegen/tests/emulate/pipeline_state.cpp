// The ring bookkeeping of the warp-specialised main loop (mainloop_warp_specialized.cuh),
// compiled on the host: PipelineState::skip(n), which an MMA team uses to pass the other
// team's stages, must land where n advance() calls land (buffer, phase parity, count), from
// every starting point and for every ring depth the kernels could use. A wrong phase there
// makes a team wait on a barrier phase that has already completed (or never will).
#include "cuda_host.h"
#include "mainloop_warp_specialized.cuh"

#include <cstdio>

template <int STAGES>
int mismatches() {
    int bad = 0;
    for (int start = 0; start < 5 * STAGES; ++start) {
        for (int n = 0; n < 5 * STAGES; ++n) {
            im2win::PipelineState<STAGES> skipped, walked;
            for (int i = 0; i < start; ++i) {
                skipped.advance();
                walked.advance();
            }
            skipped.skip(n);
            for (int i = 0; i < n; ++i) {
                walked.advance();
            }
            if (skipped.buf != walked.buf || skipped.phase != walked.phase || skipped.count != walked.count) {
                std::printf("STAGES %d: skip(%d) after %d stages: buf %d phase %u, advancing gives buf %d phase %u\n",
                            STAGES, n, start, skipped.buf, skipped.phase, walked.buf, walked.phase);
                ++bad;
            }
        }
    }
    return bad;
}

int main() {
    const int bad = mismatches<2>() + mismatches<3>() + mismatches<4>() + mismatches<5>() + mismatches<8>();
    std::printf("pipeline state: %d mismatches\n", bad);
    return bad == 0 ? 0 : 1;
}
