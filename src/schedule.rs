//! Cron expressions, parsed exactly as the scheduler parses them (six fields, seconds first).

use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// Parses a six-field cron expression (`sec min hour day-of-month month day-of-week`).
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    if expr.split_whitespace().count() != 6 && !expr.trim_start().starts_with('@') {
        return Err("must have six fields: sec min hour day-of-month month day-of-week (e.g. \"0 0 2 * * *\")".into());
    }
    CronParser::builder()
        .seconds(Seconds::Required)
        .build()
        .parse(expr)
        .map_err(|e| format!("is not a valid cron expression: {e}"))
}
