//! The backend's working buffers (strips, filter panels, the packed filter), kept between
//! calls: once a call of a given size has run, later calls of that size allocate none of
//! them.
//!
//! Why: a strip or a packed filter is hundreds of KiB to MiB, above glibc's threshold for
//! fresh pages (`mmap`), so allocating them per call costs a page fault per 4 KiB on every
//! call, and a layer of a millisecond paid a third of its time for it (measured on Zen 4:
//! 512 → 512 channels at 7 × 7, 1.6 ms with buffers allocated per call, 0.9 ms without).
//!
//! The cache is one process-wide list of buffers behind a mutex, taken at the start of a
//! call and given back at its end, so concurrent calls each get buffers of their own. It
//! keeps at most [`KEPT`] buffers; [`workspace_bytes`] says how much it holds (what a
//! memory comparison must count), [`release_workspace`] frees it.

use std::sync::Mutex;

use crate::error::{Error, Result};

/// Buffers kept at most: a call takes 2 per thread and one packed filter.
const KEPT: usize = 64;

static CACHE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A buffer of `len` floats, from the cache when one there is large enough (its contents
/// are whatever the last call left: every user writes what it reads), else newly
/// allocated (zeros).
///
/// # Errors
/// [`Error::OutOfMemory`] naming `what` when the host cannot provide it.
pub(super) fn take(what: &'static str, len: usize) -> Result<Vec<f32>> {
    let cached = {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest buffer that is large enough, so that large ones stay for large needs.
        let best = cache
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        best.map(|i| cache.swap_remove(i))
    };
    let mut buffer = match cached {
        Some(buffer) => buffer,
        None => {
            let mut v = Vec::new();
            v.try_reserve_exact(len).map_err(|_| Error::OutOfMemory {
                what,
                bytes: len as u128 * size_of::<f32>() as u128,
                on_device: false,
            })?;
            v
        }
    };
    // Within the capacity: no allocation, and only floats never written before are zeroed.
    buffer.resize(len, 0.0);
    Ok(buffer)
}

/// Gives `buffer` back for later calls (dropped when the cache is full).
pub(super) fn give_back(buffer: Vec<f32>) {
    if buffer.capacity() == 0 {
        return;
    }
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() < KEPT {
        cache.push(buffer);
    }
}

/// Bytes the CPU backend keeps between calls for its working buffers (strips, filter
/// panels, packed filters): memory a call does not allocate because an earlier one did.
pub fn workspace_bytes() -> usize {
    let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.iter().map(|b| b.capacity() * size_of::<f32>()).sum()
}

/// Frees the working buffers the CPU backend keeps between calls ([`workspace_bytes`]).
pub fn release_workspace() {
    CACHE.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_at_the_length_asked() {
        let a = take("test", 1000).unwrap();
        assert_eq!(a.len(), 1000);
        give_back(a);
        let b = take("test", 10).unwrap();
        assert_eq!(b.len(), 10);
        let c = take("test", 5000).unwrap();
        assert_eq!(c.len(), 5000);
        give_back(b);
        give_back(c);
        assert!(workspace_bytes() >= 10 * size_of::<f32>());
    }
}
