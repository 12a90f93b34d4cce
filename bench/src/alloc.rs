//! Heap bytes in use, and their high-water mark: how the benchmark measures the extra host
//! memory of one `im2win-cpu` call (everything it allocates beyond the caller's input,
//! filter and output).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting.
pub struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` needs.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grow(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grow(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        }
        new
    }
}

fn grow(bytes: usize) {
    let now = IN_USE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

/// The most heap bytes in use at once while `f` ran, beyond those in use when it started.
pub fn extra_bytes<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let value = f();
    let peak = PEAK.load(Ordering::Relaxed);
    (value, peak.saturating_sub(before) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_a_closure_allocates_at_most() {
        // The counters are the process's: other test threads allocate and free at the same
        // time, which can move one measurement either way (a free elsewhere lowered one to
        // 1048526 in CI). Measured up to five times, the largest must cover the 1 MiB peak.
        let mut most = 0;
        for _ in 0..5 {
            let (len, extra) = extra_bytes(|| {
                let a = vec![0u8; 1 << 20];
                drop(a);
                let b = vec![0u8; 1 << 19];
                b.len()
            });
            assert_eq!(len, 1 << 19);
            most = most.max(extra);
            if most >= 1 << 20 {
                break;
            }
        }
        assert!(most >= 1 << 20, "{most}");
    }
}
