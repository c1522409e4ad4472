//! `type = "stdout"` (and the default with no `[[sinks]]`): NDJSON on standard output, for pipes.
//!
//! A closed pipe (`sync | head -1`) is not a crash: the write fails, the records stay pending,
//! and the sink stops for this sync.

use std::io::Write;

use super::batch::Batch;
use super::{Outcome, SinkReport};

pub struct Stdout;

impl super::Kind for Stdout {
    async fn send(&self, batch: &Batch<'_>, report: &mut SinkReport) -> Outcome {
        report.requests += 1;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let written = batch
            .records
            .iter()
            .try_for_each(|r| writeln!(out, "{}", r.record))
            .and_then(|_| out.flush());
        match written {
            Ok(()) => Outcome::all_acked(batch),
            Err(e) => {
                report.failed_requests += 1;
                Outcome::Down(format!("cannot write to stdout: {e}"))
            }
        }
    }
}
