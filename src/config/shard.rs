//! `[shard]` (or `--shard I/N`): this process collects only the accounts whose id hashes to shard
//! `index` of `count`. Each shard has its own store, so shards share nothing but the sinks;
//! accounts that hash elsewhere are out of this shard's scope (their users, if this store had
//! them, are retired, never deleted).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// This shard, 0-based (Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX`).
    #[serde(default)]
    pub index: u32,
    /// How many shards; 1 = no sharding.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig { index: 0, count: 1 }
    }
}

impl ShardConfig {
    /// `I/N`, as `--shard` takes it.
    pub fn parse(text: &str) -> Result<ShardConfig, String> {
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("--shard: {text:?} is not I/N (e.g. 0/4)"))?;
        let parse = |s: &str, what: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("--shard: {what} {s:?} in {text:?} is not a number"))
        };
        let shard = ShardConfig {
            index: parse(i, "index")?,
            count: parse(n, "count")?,
        };
        shard
            .validate()
            .map_err(|e| e.replacen("shard.", "--shard ", 1))?;
        Ok(shard)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(1..=10_000).contains(&self.count) {
            return Err(format!(
                "shard.count: {} is out of range (1 to 10000)",
                self.count
            ));
        }
        if self.index >= self.count {
            return Err(format!(
                "shard.index: {} is out of range (0 to {}, one less than shard.count)",
                self.index,
                self.count - 1
            ));
        }
        Ok(())
    }

    pub fn is_sharded(&self) -> bool {
        self.count > 1
    }

    /// Whether this shard collects the account: the first 8 bytes of sha256(account id) modulo
    /// `count` (stable across versions, platforms and account lists).
    pub fn owns(&self, account_id: &str) -> bool {
        shard_of(account_id, self.count) == self.index
    }
}

pub fn shard_of(account_id: &str, count: u32) -> u32 {
    let digest = Sha256::digest(account_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(count.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_account_has_exactly_one_shard_and_they_spread() {
        let ids: Vec<String> = (0..1000)
            .map(|i| format!("{:012}", 100_000_000_000u64 + i))
            .collect();
        for n in [1u32, 2, 3, 7] {
            let mut sizes = vec![0usize; n as usize];
            for id in &ids {
                let owners: Vec<u32> = (0..n)
                    .filter(|&i| ShardConfig { index: i, count: n }.owns(id))
                    .collect();
                assert_eq!(owners.len(), 1, "{id} in {n} shards: {owners:?}");
                sizes[owners[0] as usize] += 1;
            }
            let expected = 1000 / n as usize;
            assert!(
                sizes
                    .iter()
                    .all(|s| s.abs_diff(expected) < expected / 4 + 10),
                "{n}: {sizes:?}"
            );
        }
    }

    #[test]
    fn parse_and_errors() {
        assert_eq!(
            ShardConfig::parse("2/4").unwrap(),
            ShardConfig { index: 2, count: 4 }
        );
        assert!(
            ShardConfig::parse("4/4")
                .unwrap_err()
                .starts_with("--shard index")
        );
        assert!(
            ShardConfig::parse("x/4")
                .unwrap_err()
                .starts_with("--shard:")
        );
        assert!(ShardConfig::parse("3").unwrap_err().contains("I/N"));
        assert!(
            ShardConfig::parse("0/0")
                .unwrap_err()
                .starts_with("--shard count")
        );
    }
}
