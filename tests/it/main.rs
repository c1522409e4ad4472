//! Black-box tests: the real binary against a real moto server, real HTTP receivers and a real
//! SQLite file. One test binary (faster to link than one per file).

#[path = "../support/mod.rs"]
mod support;

mod accounts;
mod assets;
mod cli;
mod daemon;
mod events;
mod fixtures;
mod hardening;
mod paging;
mod permissions;
mod refresh;
mod shards;
mod siem;
mod sinks;
mod store;
mod strategies;
