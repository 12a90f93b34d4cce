//! The CPU side's prepared filters: a layer's filter packed once for im2win's CPU backend
//! ([`im2win::cpu::prepare_filter`]) and read by every later forward on CPU tensors, as the
//! GPU side keeps its prepared filters (`cuda.rs`).

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::Result;
use im2win::cpu::PreparedFilter;
use im2win::{Conv2dProblem, Element};

use crate::op::im2win_error;

/// A layer's prepared CPU filters: one per form the backend's plans for the layer read
/// (another batch or image size usually reads the same one), made on the first forward
/// that needs it.
#[derive(Default, Debug)]
pub(crate) struct PreparedFilters {
    filters: Mutex<Vec<Arc<PreparedFilter>>>,
}

impl PreparedFilters {
    /// The prepared filter that suits `problem`, prepared from `filter` now if none does.
    pub(crate) fn get<T: Element>(
        &self,
        problem: &Conv2dProblem,
        filter: &[T],
    ) -> Result<Arc<PreparedFilter>> {
        let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = filters.iter().find(|p| p.suits(problem)) {
            return Ok(found.clone());
        }
        let prepared =
            Arc::new(im2win::cpu::prepare_filter(problem, filter).map_err(im2win_error)?);
        filters.push(prepared.clone());
        Ok(prepared)
    }
}
