//! A kernel that only waits: the delayed producer of the stream-ordering tests.
//!
//! A missing cross-stream wait shows only when the work it should have waited for is still
//! running. So the tests queue this kernel first and the producer's real work (a copy into
//! an operand, or the engine's launches) behind it: anything not ordered after it runs tens
//! of milliseconds early, every time, instead of now and then.
//!
//! Written in PTX (the driver compiles it when the module loads), so that it needs neither
//! nvrtc nor a kernel in the library's fatbin, which holds only what dispatch can pick.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

/// One thread that sleeps in 1 µs naps until `ns` nanoseconds of `%globaltimer` passed.
const SPIN_PTX: &str = r#"
.version 7.0
.target sm_70
.address_size 64

.visible .entry im2win_test_spin(.param .u64 im2win_test_spin_param_0)
{
    .reg .pred %p<2>;
    .reg .b64 %rd<5>;
    ld.param.u64 %rd1, [im2win_test_spin_param_0];
    mov.u64 %rd2, %globaltimer;
$L_spin:
    nanosleep.u32 1000;
    mov.u64 %rd3, %globaltimer;
    sub.u64 %rd4, %rd3, %rd2;
    setp.lt.u64 %p1, %rd4, %rd1;
    @%p1 bra $L_spin;
    ret;
}
"#;

/// How long the tests hold a stream back: far longer than the host needs to queue
/// everything that follows (a few hundred microseconds).
pub const DELAY_MS: u64 = 50;

/// The spin kernel, loaded into one CUDA context (usable on every stream of it, through
/// any context object).
pub struct Spinner {
    function: CudaFunction,
}

impl Spinner {
    /// Loads the kernel into `ctx`'s CUDA context.
    pub fn new(ctx: &Arc<CudaContext>) -> Spinner {
        let module = ctx
            .load_module(Ptx::from_src(SPIN_PTX))
            .expect("the spin kernel's PTX loads");
        let function = module
            .load_function("im2win_test_spin")
            .expect("the spin kernel is in its module");
        Spinner { function }
    }

    /// Queues a wait of `ms` milliseconds on `stream`: the work queued after it on that
    /// stream starts only then.
    pub fn delay(&self, stream: &CudaStream, ms: u64) {
        let ns = ms * 1_000_000;
        let mut launch = stream.launch_builder(&self.function);
        launch.arg(&ns);
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `im2win_test_spin(unsigned long long ns)` reads only its parameter.
        unsafe { launch.launch(one) }.expect("the spin kernel launches");
    }
}
