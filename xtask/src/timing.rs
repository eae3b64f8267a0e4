// SPDX-License-Identifier: GPL-2.0-only
//! Wall-time measurement of the phases of a run (fetch, build, initramfs, boot+tests), per
//! kernel, printed as a table at the end so slow phases are visible.

use std::time::{Duration, Instant};

/// Measured phases; `subject` is a kernel series or `all` for shared work.
pub struct Timings {
    start: Instant,
    rows: Vec<(String, String, Duration)>,
}

impl Timings {
    /// Starts the wall clock of the whole run.
    pub fn new() -> Self {
        Timings {
            start: Instant::now(),
            rows: Vec::new(),
        }
    }

    /// Runs `f` and records its wall time under `subject` and `phase`, also on error.
    pub fn measure<T>(&mut self, subject: &str, phase: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.rows
            .push((subject.to_string(), phase.to_string(), start.elapsed()));
        out
    }

    /// Takes over the rows measured by another (e.g. per-kernel worker) `Timings`.
    pub fn append(&mut self, other: Timings) {
        self.rows.extend(other.rows);
    }

    /// Prints the table grouped by subject (nothing if no phase ran) and the run's wall time,
    /// which is less than the sum when kernels ran in parallel.
    pub fn print(&self) {
        if self.rows.is_empty() {
            return;
        }
        let mut subjects: Vec<&str> = Vec::new();
        for (subject, _, _) in &self.rows {
            if !subjects.contains(&subject.as_str()) {
                subjects.push(subject);
            }
        }
        let width = subjects.iter().map(|s| s.len()).max().unwrap_or(0);
        eprintln!("timings:");
        for subject in subjects {
            for (_, phase, time) in self.rows.iter().filter(|r| r.0 == subject) {
                eprintln!(
                    "  {subject:<width$}  {phase:<12} {:>7.2}s",
                    time.as_secs_f64()
                );
            }
        }
        eprintln!(
            "  {:<width$}  {:<12} {:>7.2}s",
            "",
            "wall time",
            self.start.elapsed().as_secs_f64()
        );
    }
}
