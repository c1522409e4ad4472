//! The command line (see the README's "Commands" section; `../shared/contract.md` is the contract).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "iam-inventory",
    version,
    about = "A live, diffable OCSF 5003 inventory of AWS IAM users, pushed to your sinks",
    long_about = None
)]
pub struct Cli {
    /// Config file (TOML).
    #[arg(long, global = true, env = "IAM_INVENTORY_CONFIG", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// Collect only the accounts of shard I of N (0-based; overrides `[shard]`). Each shard needs
    /// its own store.
    #[arg(long, global = true, value_name = "I/N", env = "IAM_INVENTORY_SHARD")]
    pub shard: Option<String>,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChangesFormat {
    Table,
    Json,
    /// OCSF 1.6.0 class 3001 Account Change events, one per line (what `events = ["changes"]`
    /// sinks receive).
    Ocsf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One full sync now, then exit (0 = all ok, 2 = partial, 1 = fatal).
    Sync {
        /// Collect, transform and diff; write nothing, send nothing. Prints the would-be changes.
        #[arg(long)]
        dry_run: bool,
    },
    /// The daemon: syncs on `[schedule] cron`, serves /healthz and /metrics on `[server] listen`.
    Run,
    /// Prints the change log from the store.
    Changes {
        /// Only changes at or after this time: RFC 3339, or a duration back from now (24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Only this account id.
        #[arg(long)]
        account: Option<String>,
        /// Only this user (name or ARN).
        #[arg(long)]
        user: Option<String>,
        /// `table` for people, `json` (one object per line) for scripts, `ocsf` for OCSF 3001 events.
        #[arg(long, value_enum, default_value_t = ChangesFormat::Table)]
        format: ChangesFormat,
    },
    /// Prints the current snapshot as OCSF 5003 NDJSON.
    Export {
        /// Print what this sink would receive instead (its `[sinks.fields]` mapping applied).
        #[arg(long)]
        sink: Option<String>,
    },
    /// Validates the config and prints it resolved, secrets redacted.
    CheckConfig {
        /// Also connect: the AWS credentials and each role (GetCallerIdentity, AssumeRole, one
        /// ListUsers) and each sink (a probe that sends no record); one line per target on
        /// stderr, exit 1 if any failed.
        #[arg(long)]
        connect: bool,
    },
}
