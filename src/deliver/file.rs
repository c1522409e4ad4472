//! `type = "file"`: NDJSON appended to `path`, synced to disk before it counts as acknowledged (for
//! agents that tail files).
//!
//! A process killed mid-write (SIGKILL, power loss) can leave a torn last line. Before the first
//! append of a sync the file is repaired — cut back to its last newline — so every line in it is one
//! whole record; the records of the torn write were never acknowledged and are written again.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::batch::Batch;
use super::{Outcome, SinkReport};

pub struct File {
    pub path: PathBuf,
    /// Whether this sync has checked the file's tail yet.
    repaired: AtomicBool,
}

impl File {
    pub fn new(path: PathBuf) -> File {
        File {
            path,
            repaired: AtomicBool::new(false),
        }
    }
}

impl super::Kind for File {
    async fn send(&self, batch: &Batch<'_>, report: &mut SinkReport) -> Outcome {
        report.requests += 1;
        let mut buf = Vec::with_capacity(batch.records.iter().map(|r| r.record.len() + 1).sum());
        for r in &batch.records {
            buf.extend_from_slice(r.record.as_bytes());
            buf.push(b'\n');
        }
        let path = self.path.clone();
        let repair = !self.repaired.load(Ordering::Relaxed);
        // fsync can take long on a busy disk: keep it off the async runtime's threads.
        let written = tokio::task::spawn_blocking(move || append(&path, &buf, repair))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        match written {
            Ok(()) => {
                self.repaired.store(true, Ordering::Relaxed);
                Outcome::all_acked(batch)
            }
            Err(e) => {
                report.failed_requests += 1;
                Outcome::Down(format!("cannot append to {}: {e}", self.path.display()))
            }
        }
    }
}

fn append(path: &Path, buf: &[u8], repair: bool) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    if repair {
        repair_tail(&mut file, path)?;
    }
    file.write_all(buf)?;
    file.sync_data()
}

/// Cuts a torn last line (no trailing newline) off the file.
fn repair_tail(file: &mut std::fs::File, path: &Path) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Walk back in blocks to the last newline.
    let mut end = len;
    let mut keep = 0;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block[..n])?;
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    tracing::warn!(path = %path.display(), torn_bytes = len - keep, "file sink: cut a torn last line left by an interrupted write");
    file.set_len(keep)?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_tail_is_cut_back_to_the_last_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        append(&path, b"{\"d\":4}\n", true).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n{\"d\":4}\n"
        );
        // A file that is one torn line is emptied; a whole file is left alone.
        std::fs::write(&path, b"{\"c\":").unwrap();
        append(&path, b"{\"e\":5}\n", true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"e\":5}\n");
        append(&path, b"{\"f\":6}\n", true).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"e\":5}\n{\"f\":6}\n"
        );
    }
}
