//! Splitting pending records into request batches and encoding them.

use sha2::{Digest, Sha256};

use crate::config::SinkFormat;
use crate::store::acks::PendingRecord;

/// What a batch asks of the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// 5003 records the sink never acknowledged.
    Create,
    /// 5003 records the sink acknowledged in another content.
    Update,
    /// OCSF 3001 change events; each record's `uid` is the event's `metadata.uid`.
    Event,
    /// Users deleted from IAM (`on_delete = "delete"`); records carry only `uid` and `user_name`.
    Delete,
}

/// Records of one op, at most `batch_size` of them.
pub struct Batch<'a> {
    pub op: Op,
    pub records: Vec<&'a PendingRecord>,
}

/// Creates first, then updates; each split into chunks of `batch_size`, ARN order kept.
pub fn batches(page: &[PendingRecord], batch_size: usize) -> Vec<Batch<'_>> {
    let mut out = Vec::new();
    for (op, is_update) in [(Op::Create, false), (Op::Update, true)] {
        let of_kind: Vec<&PendingRecord> =
            page.iter().filter(|r| r.is_update == is_update).collect();
        for chunk in of_kind.chunks(batch_size.max(1)) {
            out.push(Batch {
                op,
                records: chunk.to_vec(),
            });
        }
    }
    out
}

impl Batch<'_> {
    /// The request body: NDJSON lines or one JSON array.
    pub fn encode(&self, format: SinkFormat) -> Vec<u8> {
        let size: usize = self
            .records
            .iter()
            .map(|r| r.record.len() + 1)
            .sum::<usize>()
            + 2;
        let mut body = Vec::with_capacity(size);
        match format {
            SinkFormat::Ndjson => {
                for r in &self.records {
                    body.extend_from_slice(r.record.as_bytes());
                    body.push(b'\n');
                }
            }
            SinkFormat::Json => {
                body.push(b'[');
                for (i, r) in self.records.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(r.record.as_bytes());
                }
                body.push(b']');
            }
        }
        body
    }

    /// Which kind of change the batch carries (`X-IAM-Inventory-Change`).
    pub fn change_kind(&self) -> &'static str {
        match self.op {
            Op::Create => "create",
            Op::Update => "update",
            Op::Event => "event",
            Op::Delete => "delete",
        }
    }

    /// Stable for the same sink, kind and record versions (user, content hash and the time that
    /// content appeared): a receiver can drop a batch it has already stored when a retry (or the next
    /// sync, after a lost response) sends it again, while a later change back to an earlier content
    /// gets a new key.
    pub fn idempotency_key(&self, sink: &str) -> String {
        let mut h = Sha256::new();
        h.update(sink.as_bytes());
        h.update(b"\n");
        h.update(self.change_kind().as_bytes());
        for r in &self.records {
            h.update(b"\n");
            h.update(r.uid.as_bytes());
            h.update(b":");
            h.update(r.content_hash.as_bytes());
            h.update(b"@");
            h.update(r.last_changed.to_string().as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(uid: &str, is_update: bool) -> PendingRecord {
        PendingRecord {
            uid: uid.into(),
            user_name: uid.into(),
            content_hash: format!("h-{uid}"),
            record: format!("{{\"u\":\"{uid}\"}}"),
            time_ms: 1,
            is_update,
            last_changed: 1,
        }
    }

    #[test]
    fn batches_split_by_kind_and_size() {
        let page = vec![
            rec("a", false),
            rec("b", true),
            rec("c", false),
            rec("d", false),
        ];
        let b = batches(&page, 2);
        let shape: Vec<(bool, Vec<&str>)> = b
            .iter()
            .map(|b| {
                (
                    b.op == Op::Update,
                    b.records.iter().map(|r| r.uid.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (false, vec!["a", "c"]),
                (false, vec!["d"]),
                (true, vec!["b"])
            ]
        );
    }

    #[test]
    fn encodings() {
        let page = vec![rec("a", false), rec("b", false)];
        let b = &batches(&page, 10)[0];
        assert_eq!(
            b.encode(SinkFormat::Ndjson),
            b"{\"u\":\"a\"}\n{\"u\":\"b\"}\n"
        );
        assert_eq!(b.encode(SinkFormat::Json), b"[{\"u\":\"a\"},{\"u\":\"b\"}]");
    }

    #[test]
    fn idempotency_key_depends_on_content_and_sink() {
        let page = vec![rec("a", false)];
        let b = &batches(&page, 10)[0];
        assert_eq!(b.idempotency_key("s"), b.idempotency_key("s"));
        assert_ne!(b.idempotency_key("s"), b.idempotency_key("t"));
        let other = vec![PendingRecord {
            content_hash: "x".into(),
            ..rec("a", false)
        }];
        assert_ne!(
            b.idempotency_key("s"),
            batches(&other, 10)[0].idempotency_key("s")
        );
    }
}
