//! `[schedule]` and `[server]`: when `run` syncs, and where it answers `/healthz` and `/metrics`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::default_true;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Six fields: sec min hour day-of-month month day-of-week (UTC).
    #[serde(default = "default_cron")]
    pub cron: String,
    /// Sync once when `run` starts, before the first tick.
    #[serde(default = "default_true")]
    pub run_on_start: bool,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            cron: default_cron(),
            run_on_start: true,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port` for `GET /healthz` and `GET /metrics`; unset = no server.
    pub listen: Option<String>,
}

impl ServerConfig {
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|l| l.parse().ok())
    }
}

fn default_cron() -> String {
    "0 0 2 * * *".into()
}

impl ScheduleConfig {
    /// Checks that serde cannot express. Messages start with the key.
    pub fn validate(&self) -> Result<(), String> {
        crate::schedule::parse_cron(&self.cron)
            .map_err(|m| format!("schedule.cron: {:?} {m}", self.cron))?;
        Ok(())
    }
}

impl ServerConfig {
    /// Checks that serde cannot express. Messages start with the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(l) = self
            .listen
            .as_ref()
            .filter(|l| l.parse::<SocketAddr>().is_err())
        {
            return Err(format!(
                "server.listen: {l:?} is not host:port (e.g. \"127.0.0.1:9464\")"
            ));
        }
        Ok(())
    }
}
