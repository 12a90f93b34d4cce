//! Tuning tables: the measured fastest plan for known problems on one GPU model.
//!
//! `im2win tune` (or [`Engine::autotune`](crate::Engine::autotune)) times every kernel that
//! can compute a problem and records the fastest here. [`Engine::plan`](crate::Engine::plan)
//! looks a problem up first and falls back to the dispatch heuristic ([`Plan::new`]) for
//! problems the table has not seen. A table applies only to the GPU it was measured on.
//!
//! Entries are keyed by problem (its layouts, element type and precision included, its
//! epilogue not: every kernel runs every epilogue at the same cost) and element type.
//! Problems written before they carried an element type and precision read as float32,
//! strict, so older tables of this format read unchanged. The file carries [`TUNING_FORMAT`]: a table written by another version is
//! refused with [`Error::BadTuningTable`] naming both formats, rather than half understood.

use serde::{Deserialize, Serialize};

use super::dispatch::Plan;
use crate::error::{Error, Result};
use crate::problem::Conv2dProblem;
use im2win_codegen::{Catalogue, DType};

/// The format of [`TuningTable`]'s JSON that this version reads and writes. 2: entries
/// keyed by problem with its layouts and element type (1: NCHW only, no layouts; tables
/// without a `format` field, written before it existed, count as 0).
pub const TUNING_FORMAT: u32 = 2;

/// The fastest measured plan for each of a set of problems on one GPU model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TuningTable {
    /// [`TUNING_FORMAT`] when written by this version.
    pub format: u32,
    /// The GPU's name as the driver reports it (e.g. `NVIDIA H200`). The table is used only
    /// on a GPU of exactly this name.
    pub device: String,
    /// One entry per problem, in the order they were tuned.
    pub entries: Vec<TuningEntry>,
}

/// The measured choice for one problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuningEntry {
    /// The problem, exactly (shape, stride, padding, dilation, layouts), with the plain
    /// epilogue.
    pub problem: Conv2dProblem,
    /// The element type it was measured in.
    pub dtype: DType,
    /// The fastest kernel's name ([`KernelSpec::name`](im2win_codegen::KernelSpec::name)).
    pub kernel: String,
    /// How many parts its reduction is split into ([`Plan::with_split`]); 1 for none.
    #[serde(default = "one")]
    pub splits: u32,
    /// Its median time in milliseconds, transforms included.
    pub median_ms: f64,
    /// The median time of the heuristic's choice, for comparison.
    pub heuristic_ms: f64,
}

impl TuningTable {
    /// An empty table for the GPU named `device`.
    pub fn new(device: impl Into<String>) -> Self {
        TuningTable {
            format: TUNING_FORMAT,
            device: device.into(),
            entries: Vec::new(),
        }
    }

    /// The entry for exactly this problem (whatever its epilogue) in this element type, if
    /// any.
    pub fn lookup(&self, problem: &Conv2dProblem, dtype: DType) -> Option<&TuningEntry> {
        let key = problem.without_epilogue();
        self.entries
            .iter()
            .find(|e| e.problem.without_epilogue() == key && e.dtype == dtype)
    }

    /// Adds `entry` (its problem's epilogue dropped), replacing an earlier entry for the
    /// same problem and element type.
    pub fn insert(&mut self, mut entry: TuningEntry) {
        entry.problem = entry.problem.without_epilogue();
        let same = |e: &&mut TuningEntry| e.problem == entry.problem && e.dtype == entry.dtype;
        match self.entries.iter_mut().find(same) {
            Some(old) => *old = entry,
            None => self.entries.push(entry),
        }
    }

    /// The tuned plan for `problem` from `catalogue`, or `None` when the table has no entry
    /// for it, or its kernel is not in `catalogue` or cannot run the problem (a table
    /// written for another catalogue): then the heuristic decides.
    pub fn plan(&self, problem: &Conv2dProblem, catalogue: &Catalogue) -> Option<Plan> {
        // The problem carries its element type and precision: an entry measured at another
        // precision is another problem.
        let entry = self.lookup(problem, problem.dtype)?;
        let spec = catalogue.find(&entry.kernel)?;
        Plan::for_spec(problem, *spec)
            .and_then(|plan| plan.with_split(entry.splits))
            .ok()
    }

    /// The table as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // A table of plain numbers and strings always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a table written by [`TuningTable::to_json`] of this format.
    ///
    /// # Errors
    /// [`Error::BadTuningTable`] with the parser's message, or naming the table's format
    /// and [`TUNING_FORMAT`] when they differ.
    pub fn from_json(text: &str) -> Result<Self> {
        /// Just the format, read first so that an old table is named as such.
        #[derive(Deserialize)]
        struct Format {
            #[serde(default)]
            format: u32,
        }
        let bad = |e: serde_json::Error| Error::BadTuningTable {
            reason: e.to_string(),
        };
        let Format { format } = serde_json::from_str(text).map_err(bad)?;
        if format != TUNING_FORMAT {
            return Err(Error::BadTuningTable {
                reason: format!(
                    "it has format {format}, this version reads format {TUNING_FORMAT}: measure it again with `im2win tune`"
                ),
            });
        }
        serde_json::from_str(text).map_err(bad)
    }
}

/// The split count of entries written before splits existed.
fn one() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Padding;
    use im2win_codegen::{DType, FixedGeometry, KernelSpec, TileConfig};

    fn entry(problem: Conv2dProblem, kernel: &str, ms: f64) -> TuningEntry {
        TuningEntry {
            problem,
            dtype: DType::F32,
            kernel: kernel.to_string(),
            splits: 1,
            median_ms: ms,
            heuristic_ms: ms,
        }
    }

    #[test]
    fn lookup_is_exact_and_insert_replaces() {
        let a = Conv2dProblem::new([1, 8, 9, 9], [4, 8, 3, 3]);
        let b = a.with_padding(Padding::uniform(1));
        let mut table = TuningTable::new("GPU");
        table.insert(entry(a, "x", 1.0));
        assert!(table.lookup(&b, DType::F32).is_none());
        table.insert(entry(a, "y", 0.5));
        assert_eq!(table.entries.len(), 1);
        assert_eq!(
            table.lookup(&a, DType::F32).map(|e| e.kernel.as_str()),
            Some("y")
        );
    }

    #[test]
    fn plan_uses_the_entry_only_when_the_catalogue_can_run_it() {
        let problem = Conv2dProblem::new([2, 8, 12, 12], [16, 8, 3, 3]);
        let catalogue = Catalogue::default_catalogue();
        let generic = KernelSpec::generic(DType::F32, TileConfig::PAPER);
        let mut table = TuningTable::new("GPU");
        table.insert(entry(problem, &generic.name(), 1.0));
        let plan = table.plan(&problem, &catalogue);
        assert_eq!(plan.map(|p| *p.kernel()), Some(generic));

        // A kernel of the wrong geometry, or one the catalogue lacks, is ignored.
        let wrong = KernelSpec::fixed(DType::F32, FixedGeometry::square(5, 1), TileConfig::PAPER);
        table.insert(entry(problem, &wrong.name(), 1.0));
        assert!(table.plan(&problem, &catalogue).is_none());
        table.insert(entry(problem, "im2win_f32_r9s9_s3x3_b128x128x8_t8x8", 1.0));
        assert!(table.plan(&problem, &catalogue).is_none());
    }

    #[test]
    fn entries_are_per_precision_and_old_problems_read_as_strict_f32() {
        use im2win_codegen::Precision;
        let problem = Conv2dProblem::new([2, 8, 12, 12], [16, 8, 3, 3]);
        let tf32 = problem.with_precision(Precision::Tf32);
        let bf16 = problem.with_dtype(DType::Bf16);
        let mut table = TuningTable::new("GPU");
        table.insert(TuningEntry {
            dtype: DType::Bf16,
            ..entry(bf16, "b", 1.0)
        });
        table.insert(entry(tf32, "t", 1.0));
        assert!(table.lookup(&problem, DType::F32).is_none());
        assert_eq!(
            table.lookup(&tf32, DType::F32).map(|e| e.kernel.as_str()),
            Some("t")
        );
        assert_eq!(
            table.lookup(&bf16, DType::Bf16).map(|e| e.kernel.as_str()),
            Some("b")
        );
        assert!(
            table
                .lookup(&problem.with_dtype(DType::F16), DType::F16)
                .is_none()
        );
        // A strict float32 entry never serves the TF32 problem, nor the other way round.
        let catalogue = Catalogue::default_catalogue();
        let generic = KernelSpec::generic(DType::F32, TileConfig::PAPER);
        table.insert(entry(tf32, &generic.name(), 1.0));
        assert!(table.plan(&tf32, &catalogue).is_none());
        assert!(table.plan(&problem, &catalogue).is_none());

        // A table whose problems predate the fields.
        let old = format!(
            r#"{{"format": {TUNING_FORMAT}, "device": "GPU", "entries": [{{
                "problem": {{"input": [2, 8, 12, 12], "filter": [16, 8, 3, 3], "stride": [1, 1],
                    "padding": {{"top": 0, "bottom": 0, "left": 0, "right": 0}},
                    "dilation": [1, 1], "groups": 1}},
                "dtype": "f32", "kernel": "{}", "median_ms": 1.0, "heuristic_ms": 1.0}}]}}"#,
            generic.name()
        );
        let table = TuningTable::from_json(&old).unwrap();
        assert_eq!(table.entries[0].problem, problem);
        assert_eq!(
            table.plan(&problem, &catalogue).map(|p| *p.kernel()),
            Some(generic)
        );
    }

    #[test]
    fn json_round_trips() {
        let mut table = TuningTable::new("NVIDIA H200");
        table.insert(entry(
            Conv2dProblem::new([1, 3, 5, 5], [2, 3, 1, 1]).with_stride([2, 1]),
            "k",
            0.25,
        ));
        let back = TuningTable::from_json(&table.to_json());
        assert_eq!(back.ok(), Some(table));
        assert!(matches!(
            TuningTable::from_json("{"),
            Err(Error::BadTuningTable { .. })
        ));
    }

    #[test]
    fn a_table_of_another_format_is_refused_by_name() {
        let old = r#"{"device": "NVIDIA H200", "entries": []}"#;
        match TuningTable::from_json(old) {
            Err(Error::BadTuningTable { reason }) => {
                assert!(reason.contains("format 0"), "{reason}");
                assert!(reason.contains("im2win tune"), "{reason}");
            }
            other => panic!("an old table was read: {other:?}"),
        }
        let new = format!(r#"{{"format": {TUNING_FORMAT}, "device": "GPU", "entries": []}}"#);
        assert_eq!(
            TuningTable::from_json(&new).ok(),
            Some(TuningTable::new("GPU"))
        );
    }
}
