//! `iam-inventory run`: not implemented yet (issue: daemon). Refuses clearly rather than pretending.

use crate::config::Config;

pub async fn run(_config: Config) -> anyhow::Result<i32> {
    anyhow::bail!(
        "`run` (the scheduled daemon) is not available in this build yet; schedule `iam-inventory sync` with cron or a systemd timer"
    )
}
