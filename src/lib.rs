//! iam-inventory keeps a live, diffable inventory of AWS IAM users as OCSF 1.6.0 class 5003
//! (User Inventory Info) records, and pushes the changes to sinks.
//!
//! # Layout
//! One sync is one pass of data through five stages ([`pipeline::run_once`]):
//!
//! ```text
//! config ─► collect (IAM, per account) ─► transform (pure) ─► store (SQLite snapshot + diff) ─► deliver (per sink)
//! ```
//!
//! - [`config`]: TOML + `IAM_INVENTORY__SECTION__KEY` overrides + `${VAR}` expansion, validated;
//!   secrets wrapped so they cannot be logged.
//! - [`collect`]: AWS only. Credentials and accounts ([`collect::accounts`]), ListUsers
//!   ([`collect::users`]), per-user enrichment ([`collect::enrich`]), call/throttle counting
//!   ([`collect::calls`]). A failed call fails its account, never becomes a "no".
//! - [`transform`]: IAM user → OCSF record, no IO, no clock.
//! - [`store`]: SQLite; migrations, one transaction per account, content-hash diff with field-level
//!   change rows, the change log, per-sink acknowledged state.
//! - [`deliver`]: the sink seam — one file per kind (HTTP, file, stdout…) that encodes a batch and
//!   reads the answer into per-record outcomes; batching, splitting, retries, modes and
//!   acknowledged state written once for all kinds.
//! - [`daemon`]: `run` — the cron schedule, `/healthz`, `/metrics` ([`metrics`], fed from each run's
//!   report) and graceful shutdown.
//! - [`mapping`]: `[sinks.fields]` expressions, shared by config validation and delivery.
//! - [`summary`] renders a run's report for `sync` and the daemon; [`text`] holds the message
//!   helpers every stage shares.
//! - [`app`] dispatches the CLI ([`cli`]); `main.rs` only parses and sets up [`telemetry`].

/// mimalloc as the process's allocator (default feature `mimalloc`). A sync builds a JSON tree per
/// user and frees it on one thread while SQLite allocates on another; with glibc's malloc a fifth of
/// a first sync's CPU went to malloc and free, and a 100k first sync took 2.75–3.11 s against
/// 1.92–2.13 s with mimalloc (`cargo bench --bench store`, with and without
/// `--no-default-features`). Declared here, not in `main.rs`, so the tests and benchmarks run on
/// the allocator the binary ships with.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Which allocator this build uses, for benchmark headers.
pub const ALLOCATOR_NAME: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "system malloc"
};

pub mod app;
pub mod cli;
pub mod clock;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod mapping;
pub mod metrics;
pub mod pipeline;
pub mod refresh;
pub mod schedule;
pub mod store;
pub mod summary;
pub mod telemetry;
pub mod text;
pub mod transform;
