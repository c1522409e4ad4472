//! Writing one account's collection into the snapshot, in one transaction.

use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::diff::{content_hash, field_changes, text_and_content_hash};
use super::{ChangeKind, ChangeRow, Result, Store, StoreError};
use crate::transform::strip_volatile;

/// A record ready for the store, identified by a hash of what it is built from. The record itself
/// (and its content hash and text) is built only when the row must be written: most users of a
/// re-sync are unchanged, and for them neither the OCSF record nor its JSON is ever made.
pub struct PreparedRecord<'a> {
    /// Borrowed from the collected user where it can be: an unchanged user then costs no copy.
    pub uid: Cow<'a, str>,
    pub user_name: Cow<'a, str>,
    pub path: Cow<'a, str>,
    /// Equal means nothing at all changed: the sha256 of the record without `time`
    /// ([`Self::from_record`]), or of what the record is built from, with the transform's own
    /// revision ([`Self::lazy`]).
    pub record_hash: String,
    record: Lazy<'a>,
}

enum Lazy<'a> {
    Built(Value),
    Later(
        Option<Box<dyn FnOnce() -> Value + Send + 'a>>,
        Option<Value>,
    ),
}

fn without_time(mut record: Value) -> Value {
    if let Value::Object(m) = &mut record {
        m.remove("time");
    }
    record
}

impl<'a> PreparedRecord<'a> {
    /// From a full OCSF record (as built by `transform::to_ocsf`).
    pub fn from_record(record: Value) -> PreparedRecord<'static> {
        let text = |v: &Value, p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let uid = text(&record, "/user/uid");
        let user_name = text(&record, "/user/name");
        let path = text(&record, "/unmapped/user/path");
        let record = without_time(record);
        PreparedRecord {
            uid: uid.into(),
            user_name: user_name.into(),
            path: path.into(),
            record_hash: content_hash(&record),
            record: Lazy::Built(record),
        }
    }

    /// A record known by its identity and input hash, built by `build` only if the store needs it.
    pub fn lazy(
        uid: impl Into<Cow<'a, str>>,
        user_name: impl Into<Cow<'a, str>>,
        path: impl Into<Cow<'a, str>>,
        input_hash: String,
        build: impl FnOnce() -> Value + Send + 'a,
    ) -> PreparedRecord<'a> {
        PreparedRecord {
            uid: uid.into(),
            user_name: user_name.into(),
            path: path.into(),
            record_hash: input_hash,
            record: Lazy::Later(Some(Box::new(build)), None),
        }
    }

    /// The record without `time`, built on first use.
    pub fn record(&mut self) -> &Value {
        match &mut self.record {
            Lazy::Built(v) => v,
            Lazy::Later(build, built) => {
                if built.is_none() {
                    let make = build.take().map(|f| without_time(f()));
                    *built = Some(make.unwrap_or(Value::Null));
                }
                built.as_ref().unwrap_or(&Value::Null)
            }
        }
    }
}

/// How many records the builder thread hands the writer at once (it runs at most two batches
/// ahead).
const BATCH: usize = 128;

/// A record on its way from the builder thread to the writer: its identity, and its text and
/// content hash unless its input hash matched the snapshot's (`None`: unchanged). The record's
/// JSON tree stays with the builder, which frees it: thousands of small allocations freed on
/// another thread make the two threads contend for the allocator (measured: no faster than one).
struct Ready {
    uid: String,
    user_name: String,
    path: String,
    record_hash: String,
    built: Option<(String, String)>,
}

/// A snapshot row as a write sees it before applying its records.
struct Known {
    content_hash: String,
    record_hash: String,
    /// Its record's row in `records`.
    record_id: i64,
    user_name: String,
    /// Under the write's path prefix (only such users can be deleted).
    under_prefix: bool,
}

/// What one account's write did.
#[derive(Debug, Default, Clone)]
pub struct AccountOutcome {
    pub users: usize,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// Users that left the collected scope (outside the path prefix): removed, not deleted.
    pub retired: usize,
    pub unchanged: usize,
    /// Dry run only: the change rows that would have been written (a real write keeps them in
    /// the store, not in memory).
    pub changes: Vec<ChangeRow>,
}

/// Identifies one account's write.
pub struct AccountWrite<'a> {
    pub run_id: i64,
    pub account_id: &'a str,
    pub role_arn: Option<&'a str>,
    /// Only users under this prefix can be deleted: users outside it were not asked about.
    pub path_prefix: &'a str,
    pub collected_ms: i64,
    /// Roll the transaction back instead of committing (`sync --dry-run`).
    pub dry_run: bool,
    /// `None`: the whole account was collected (users not seen are gone or retired). `Some`: only
    /// these user names were (an incremental refresh); of the account's other users nothing is
    /// known, and a listed name whose record is missing or has another ARN (renamed, moved) is
    /// gone.
    pub only_users: Option<&'a [String]>,
    /// Who made these changes (an [`crate::collect::events::Actor`] as JSON), when CloudTrail said.
    pub actor: Option<&'a str>,
}

impl Store {
    /// Upserts every record of a successfully collected account, records the changes, and deletes the
    /// users under the prefix that the collection did not see — all in one transaction.
    pub fn apply_account<'r, I>(&self, w: &AccountWrite<'_>, records: I) -> Result<AccountOutcome>
    where
        I: IntoIterator<Item = PreparedRecord<'r>>,
        I::IntoIter: Send,
    {
        self.bound_wal();
        let mut conn = self.lock();
        // A dry run only reads (its store may be opened read-only): a deferred transaction gives it a
        // consistent view without taking the write lock a running daemon needs.
        let write = !w.dry_run;
        let behavior = if write {
            rusqlite::TransactionBehavior::Immediate
        } else {
            rusqlite::TransactionBehavior::Deferred
        };
        let tx = conn.transaction_with_behavior(behavior).map_err(|e| {
            self.sql_err("cannot start a transaction (is it read-only or locked?)", e)
        })?;
        let mut outcome = AccountOutcome::default();
        let e = |what: &'static str| move |err: rusqlite::Error| self.sql_err(what, err);
        {
            // Hashes only: an unchanged user (most of a re-sync) costs a hash comparison and no
            // record text; the stored record is read only to diff a user whose content changed.
            let mut lookup = tx
                .prepare_cached(
                    "SELECT content_hash, record_hash, record_id FROM snapshot WHERE uid = ?1",
                )
                .map_err(e("cannot read the snapshot"))?;
            let mut stored = tx
                .prepare_cached("SELECT record FROM records WHERE id = ?1")
                .map_err(e("cannot read the snapshot"))?;
            // A full collection records its time once per account (`account_seen`); a refresh,
            // which saw only some users, stamps their rows.
            let mut touch = tx
                .prepare_cached(
                    "UPDATE snapshot SET last_seen = ?2, last_run_id = ?3 WHERE uid = ?1",
                )
                .map_err(e("cannot write the snapshot"))?;
            let mut rehash_acks = tx
                .prepare_cached(
                    // Keeps a sink's view suffix (`<hash>:<mapping fingerprint>`).
                    "UPDATE sink_acks SET content_hash = ?3 || substr(content_hash, length(?2) + 1)
                     WHERE uid = ?1 AND substr(content_hash, 1, length(?2)) = ?2",
                )
                .map_err(e("cannot write sink state"))?;
            // A created user's row, or a changed user's rewritten (`?10`: its content changed,
            // not only volatile fields).
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO snapshot (uid, account_id, user_name, path, content_hash, record_hash, record_id,
                       first_seen, last_seen, last_changed, last_run_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8, ?9)
                     ON CONFLICT (uid) DO UPDATE SET account_id = excluded.account_id,
                       user_name = excluded.user_name, path = excluded.path,
                       content_hash = excluded.content_hash, record_hash = excluded.record_hash,
                       record_id = excluded.record_id, last_seen = excluded.last_seen,
                       last_run_id = excluded.last_run_id,
                       last_changed = CASE WHEN ?10 THEN excluded.last_seen ELSE last_changed END",
                )
                .map_err(e("cannot write the snapshot"))?;
            let mut log = tx
                .prepare_cached(
                    "INSERT INTO changes (run_id, at, account_id, uid, user_name, kind, fields, record_id, actor)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(e("cannot write the change log"))?;
            // A record's text is stored once, in `records`, for the snapshot row and the change
            // row that point at it. The user's previous record is rewritten in place unless the
            // change log points at it (it is then the record of an earlier change, kept as is).
            let mut new_record = tx
                .prepare_cached("INSERT INTO records (record) VALUES (?1)")
                .map_err(e("cannot write the snapshot"))?;
            let mut reuse_record = tx
                .prepare_cached(
                    "UPDATE records SET record = ?2 WHERE id = ?1
                       AND NOT EXISTS (SELECT 1 FROM changes WHERE record_id = ?1)",
                )
                .map_err(e("cannot write the snapshot"))?;
            // Writes a created or changed user's row with its record (`previous`: the record the
            // row had); returns the record's id, `None` in a dry run (which writes nothing).
            let mut write_row = |rec: &Ready,
                                 previous: Option<i64>,
                                 text: &str,
                                 content_hash: &str,
                                 changed: bool|
             -> Result<Option<i64>> {
                if !write {
                    return Ok(None);
                }
                let id = match previous {
                    Some(id)
                        if reuse_record
                            .execute(params![id, text])
                            .map_err(e("cannot write the snapshot"))?
                            == 1 =>
                    {
                        id
                    }
                    _ => {
                        new_record
                            .execute(params![text])
                            .map_err(e("cannot write the snapshot"))?;
                        tx.last_insert_rowid()
                    }
                };
                upsert
                    .execute(params![
                        rec.uid,
                        w.account_id,
                        rec.user_name,
                        rec.path,
                        content_hash,
                        rec.record_hash,
                        id,
                        w.collected_ms,
                        w.run_id,
                        changed
                    ])
                    .map_err(e("cannot write the snapshot"))?;
                Ok(Some(id))
            };
            let actor: Option<crate::collect::events::Actor> =
                w.actor.and_then(|a| serde_json::from_str(a).ok());

            // `record_id`: the user's record at this change (the new one; for a deletion the last
            // known one), kept for the log so events can carry it; `shown`: its text, which only
            // a dry run (that writes no record) keeps.
            let mut push_change = |outcome: &mut AccountOutcome,
                                   uid: &str,
                                   user_name: &str,
                                   kind: ChangeKind,
                                   fields: Vec<super::FieldChange>,
                                   record_id: Option<i64>,
                                   shown: Option<&str>|
             -> Result<()> {
                let mut id = None;
                if write {
                    let fields_json =
                        serde_json::to_string(&fields).unwrap_or_else(|_| "[]".into());
                    log.execute(params![
                        w.run_id,
                        w.collected_ms,
                        w.account_id,
                        uid,
                        user_name,
                        kind.as_str(),
                        fields_json,
                        record_id,
                        w.actor
                    ])
                    .map_err(e("cannot write the change log"))?;
                    id = Some(tx.last_insert_rowid());
                }
                // A dry run shows what sinks would receive: it keeps the records of created and
                // updated users (a real sync reads them back from the log when it needs them).
                let shown = shown.filter(|_| {
                    w.dry_run && matches!(kind, ChangeKind::Created | ChangeKind::Updated)
                });
                // A real sync keeps nothing in memory per change (a first sync of a million
                // users is a million rows): the log is in the store, the counts in the outcome.
                if !w.dry_run {
                    return Ok(());
                }
                outcome.changes.push(ChangeRow {
                    id,
                    record: shown.and_then(|t| serde_json::from_str(t).ok()),
                    run_id: (!w.dry_run).then_some(w.run_id),
                    at: w.collected_ms,
                    account_id: w.account_id.to_string(),
                    uid: uid.to_string(),
                    user_name: user_name.to_string(),
                    kind,
                    fields,
                    actor: actor.clone(),
                });
                Ok(())
            };

            // Building a record (the OCSF mapping, its text, its content hash) and writing it are
            // about equal work: a builder thread runs ahead of the writer, so a first sync keeps two
            // cores busy. The builder also sorts out the users whose input hash says they are
            // unchanged (most of a re-sync): they never reach the writer, unless a refresh must
            // stamp their rows.
            //
            // What the snapshot holds for this write's scope (the account, or the names a refresh
            // read), hashes and identity only, is read in one pass while the builder already
            // draws records (and so computes their input hashes). What is left unseen after the
            // records are applied is gone.
            let known_cell: std::sync::OnceLock<HashMap<String, Known>> =
                std::sync::OnceLock::new();
            let refresh = w.only_users.is_some();
            let mut unseen = std::thread::scope(|scope| -> Result<_> {
                let known_ref = &known_cell;
                let (known_read, on_known) = std::sync::mpsc::sync_channel::<()>(1);
                // Handed over in batches: one hand-over per record costs more than the work of an
                // unchanged one.
                let (ready, arrivals) = std::sync::mpsc::sync_channel::<Vec<Ready>>(2);
                let mut records = records.into_iter();
                let builder = scope.spawn(move || {
                    // Drawn ahead until the writer has read the snapshot's hashes.
                    let mut ahead = Vec::new();
                    loop {
                        match on_known.try_recv() {
                            Ok(()) => break,
                            Err(std::sync::mpsc::TryRecvError::Empty) => match records.next() {
                                Some(rec) => ahead.push(rec),
                                None => {
                                    let _ = on_known.recv();
                                    break;
                                }
                            },
                            // The writer failed to read it (and returns its error).
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                                return (Vec::new(), 0, 0);
                            }
                        }
                    }
                    let empty = HashMap::new();
                    let known_ref = known_ref.get().unwrap_or(&empty);
                    // Which stored users were seen: borrowed from `known`, so an unchanged user
                    // costs no allocation. New users are remembered only to skip repeats.
                    let mut seen_known: HashSet<&str> = HashSet::with_capacity(known_ref.len());
                    let mut seen_new: HashSet<String> = HashSet::new();
                    let (mut users, mut unchanged) = (0usize, 0usize);
                    let mut batch = Vec::with_capacity(BATCH);
                    for mut rec in ahead.into_iter().chain(records) {
                        // A user listed twice (a list answer that repeated itself) is written once.
                        let same = match known_ref.get_key_value(rec.uid.as_ref()) {
                            Some((uid, k)) => {
                                if !seen_known.insert(uid.as_str()) {
                                    continue;
                                }
                                k.record_hash == rec.record_hash
                            }
                            None => {
                                if !seen_new.insert(rec.uid.to_string()) {
                                    continue;
                                }
                                false
                            }
                        };
                        users += 1;
                        if same && !refresh {
                            unchanged += 1;
                            continue;
                        }
                        let built = (!same).then(|| text_and_content_hash(rec.record()));
                        let PreparedRecord {
                            uid,
                            user_name,
                            path,
                            record_hash,
                            ..
                        } = rec;
                        batch.push(Ready {
                            uid: uid.into_owned(),
                            user_name: user_name.into_owned(),
                            path: path.into_owned(),
                            record_hash,
                            built,
                        });
                        if batch.len() == BATCH {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                            // The writer stopped (a store error): nothing more to build.
                            if ready.send(full).is_err() {
                                break;
                            }
                        }
                    }
                    let _ = ready.send(batch);
                    // Users of this account that this collection did not see: under the prefix
                    // they are gone from IAM (deleted); outside it they were not asked about (a
                    // narrower path_prefix) and are retired from the snapshot, never reported as
                    // deleted. A refresh asked only about some names: only their rows can be
                    // unseen.
                    let unseen: Vec<(String, String, bool, i64)> = known_ref
                        .iter()
                        .filter(|(uid, _)| !seen_known.contains(uid.as_str()))
                        .map(|(uid, k)| {
                            (
                                uid.clone(),
                                k.user_name.clone(),
                                k.under_prefix,
                                k.record_id,
                            )
                        })
                        .collect();
                    (unseen, users, unchanged)
                });
                let names = w
                    .only_users
                    .map(|n| serde_json::to_string(n).unwrap_or_else(|_| "[]".into()));
                let known: HashMap<String, Known> = {
                    let mut stmt = tx
                        .prepare_cached(
                            "SELECT uid, content_hash, record_hash, user_name,
                                    substr(path, 1, length(?2)) = ?2, record_id
                             FROM snapshot
                             WHERE account_id = ?1
                               AND (?3 IS NULL OR (user_name IN (SELECT value FROM json_each(?3))
                                                    AND uid NOT LIKE '%:root'))",
                        )
                        .map_err(e("cannot read the snapshot"))?;
                    let rows = stmt
                        .query_map(params![w.account_id, w.path_prefix, names], |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                Known {
                                    content_hash: r.get(1)?,
                                    record_hash: r.get(2)?,
                                    user_name: r.get(3)?,
                                    under_prefix: r.get(4)?,
                                    record_id: r.get(5)?,
                                },
                            ))
                        })
                        .map_err(e("cannot read the snapshot"))?;
                    rows.collect::<rusqlite::Result<_>>()
                        .map_err(e("cannot read the snapshot"))?
                };
                let known_ref = known_ref.get_or_init(|| known);
                let _ = known_read.send(());
                for mut rec in arrivals.into_iter().flatten() {
                    let known = known_ref.get(&rec.uid);
                    // A whole account's rows are all in `known`; a refresh's scope is its names,
                    // so a record outside them (none expected) is looked up.
                    let looked_up: Option<(String, String, i64)> = if known.is_none()
                        && w.only_users.is_some()
                    {
                        lookup
                            .query_row(params![rec.uid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                            .optional()
                            .map_err(e("cannot read the snapshot"))?
                    } else {
                        None
                    };
                    // (content hash, record hash, record id) stored for this user, if any.
                    let existing: Option<(&str, &str, i64)> = known
                        .map(|k| (k.content_hash.as_str(), k.record_hash.as_str(), k.record_id))
                        .or(looked_up
                            .as_ref()
                            .map(|(c, r, id)| (c.as_str(), r.as_str(), *id)));
                    // Not built: `known` had the same input hash. Built, the lookup may still have.
                    let unchanged =
                        existing.is_some_and(|(_, record_hash, _)| record_hash == rec.record_hash);
                    let Some((text, new_content_hash)) = rec.built.take().filter(|_| !unchanged)
                    else {
                        if write && w.only_users.is_some() {
                            touch
                                .execute(params![rec.uid, w.collected_ms, w.run_id])
                                .map_err(e("cannot write the snapshot"))?;
                        }
                        outcome.unchanged += 1;
                        continue;
                    };
                    let Some((content_hash, _, previous)) = existing else {
                        let record_id = write_row(&rec, None, &text, &new_content_hash, true)?;
                        outcome.created += 1;
                        push_change(
                            &mut outcome,
                            &rec.uid,
                            &rec.user_name,
                            ChangeKind::Created,
                            Vec::new(),
                            record_id,
                            Some(&text),
                        )?;
                        continue;
                    };
                    // Same content hash: only volatile fields (last-used times) moved. Kept fresh
                    // in the snapshot, but not a change.
                    let fields = if content_hash == new_content_hash {
                        Vec::new()
                    } else {
                        let old_record: String = stored
                            .query_row(params![previous], |r| r.get(0))
                            .map_err(e("cannot read the snapshot"))?;
                        let old: Value = serde_json::from_str(&old_record).unwrap_or(Value::Null);
                        let new: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        field_changes(&strip_volatile(&old), &strip_volatile(&new))
                    };
                    let record_id = write_row(
                        &rec,
                        Some(previous),
                        &text,
                        &new_content_hash,
                        !fields.is_empty(),
                    )?;
                    // The hash moved without any field changing (what counts as volatile changed
                    // between versions): carry the sinks' acknowledgements over, so nothing is
                    // re-sent for a change that is not one.
                    if write && fields.is_empty() && content_hash != new_content_hash {
                        rehash_acks
                            .execute(params![rec.uid, content_hash, new_content_hash])
                            .map_err(e("cannot write sink state"))?;
                    }
                    if fields.is_empty() {
                        outcome.unchanged += 1;
                    } else {
                        outcome.updated += 1;
                        push_change(
                            &mut outcome,
                            &rec.uid,
                            &rec.user_name,
                            ChangeKind::Updated,
                            fields,
                            record_id,
                            Some(&text),
                        )?;
                    }
                }
                let (unseen, users, unchanged) = builder
                    .join()
                    .map_err(|_| StoreError("internal error: the record builder failed".into()))?;
                outcome.users += users;
                outcome.unchanged += unchanged;
                Ok(unseen)
            })?;
            unseen.sort();
            for (uid, user_name, under_prefix, last) in unseen {
                // The last known record goes into the change log with the deletion (the change
                // row keeps pointing at it once the snapshot row is gone).
                if write {
                    let deleted = under_prefix.then_some((user_name.as_str(), w.collected_ms));
                    remove_user(&tx, &uid, deleted).map_err(e("cannot write the snapshot"))?;
                }
                let kind = if under_prefix {
                    outcome.deleted += 1;
                    ChangeKind::Deleted
                } else {
                    outcome.retired += 1;
                    ChangeKind::Retired
                };
                let last = write.then_some(last);
                push_change(&mut outcome, &uid, &user_name, kind, Vec::new(), last, None)?;
            }

            // A dry run has no run row to attach to (and rolls back anyway).
            if write && w.only_users.is_none() {
                tx.execute(
                    "INSERT INTO account_seen (account_id, collected_at, run_id) VALUES (?1, ?2, ?3)
                     ON CONFLICT (account_id) DO UPDATE SET collected_at = excluded.collected_at,
                       run_id = excluded.run_id",
                    params![w.account_id, w.collected_ms, w.run_id],
                )
                .map_err(e("cannot write the snapshot"))?;
            }
            if !w.dry_run {
                tx.execute(
                    // A refresh writes an account once per actor: the counts add up.
                    "INSERT INTO run_accounts
                   (run_id, account_id, role_arn, status, users, created, updated, deleted)
                 VALUES (?1, ?2, ?3, 'ok', ?4, ?5, ?6, ?7)
                 ON CONFLICT (run_id, account_id) DO UPDATE SET status = 'ok',
                   users = users + excluded.users, created = created + excluded.created,
                   updated = updated + excluded.updated, deleted = deleted + excluded.deleted",
                    params![
                        w.run_id,
                        w.account_id,
                        w.role_arn,
                        outcome.users as i64,
                        outcome.created as i64,
                        outcome.updated as i64,
                        outcome.deleted as i64
                    ],
                )
                .map_err(e("cannot record the account"))?;
            }
        }
        if w.dry_run {
            tx.rollback().map_err(e("cannot roll back"))?;
        } else {
            tx.commit().map_err(e("cannot commit"))?;
        }
        Ok(outcome)
    }
}

/// Removes a user from the snapshot with every sink's state about it. A user `deleted` from IAM (not
/// merely retired) is queued for deletion at every sink that had acknowledged it.
fn remove_user(
    tx: &rusqlite::Transaction<'_>,
    uid: &str,
    deleted: Option<(&str, i64)>,
) -> rusqlite::Result<()> {
    if let Some((user_name, at)) = deleted {
        tx.execute(
            "INSERT OR REPLACE INTO sink_deletes (sink, uid, user_name, deleted_at)
             SELECT sink, uid, ?2, ?3 FROM sink_acks WHERE uid = ?1",
            params![uid, user_name, at],
        )?;
    }
    tx.execute("DELETE FROM snapshot WHERE uid = ?1", params![uid])?;
    tx.execute("DELETE FROM sink_acks WHERE uid = ?1", params![uid])?;
    tx.execute("DELETE FROM sink_rejects WHERE uid = ?1", params![uid])?;
    Ok(())
}

impl Store {
    /// Retires every user of an account that is no longer in scope (not in `in_scope`): the
    /// account left the config, or the organization excluded it. One transaction; nothing is
    /// written in a dry run, but the rows that would be are returned.
    pub fn retire_accounts(
        &self,
        run_id: i64,
        in_scope: &std::collections::HashSet<String>,
        at_ms: i64,
        dry_run: bool,
    ) -> Result<Vec<ChangeRow>> {
        let mut conn = self.lock();
        let behavior = if dry_run {
            rusqlite::TransactionBehavior::Deferred
        } else {
            rusqlite::TransactionBehavior::Immediate
        };
        let e = |what: &'static str| move |err: rusqlite::Error| self.sql_err(what, err);
        let tx = conn
            .transaction_with_behavior(behavior)
            .map_err(e("cannot start a transaction (is it read-only or locked?)"))?;
        // Only the rows of accounts out of scope are read (with their record ids: the change log
        // keeps pointing at their records): the scope goes to SQLite as a JSON array.
        let scope = serde_json::to_string(&in_scope.iter().collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".into());
        let users: Vec<(String, String, String, i64)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT account_id, uid, user_name, record_id FROM snapshot
                     WHERE account_id NOT IN (SELECT value FROM json_each(?1))
                     ORDER BY account_id, uid",
                )
                .map_err(e("cannot read the snapshot"))?;
            let rows = stmt
                .query_map(params![scope], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .map_err(e("cannot read the snapshot"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(e("cannot read the snapshot"))?
        };
        let mut out = Vec::new();
        for (account_id, uid, user_name, record) in users {
            if !dry_run {
                remove_user(&tx, &uid, None).map_err(e("cannot write the snapshot"))?;
                tx.execute(
                    "INSERT INTO changes (run_id, at, account_id, uid, user_name, kind, fields, record_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'retired', '[]', ?6)",
                    params![run_id, at_ms, account_id, uid, user_name, record],
                )
                .map_err(e("cannot write the change log"))?;
            }
            out.push(ChangeRow {
                id: (!dry_run).then(|| tx.last_insert_rowid()),
                record: None,
                run_id: (!dry_run).then_some(run_id),
                at: at_ms,
                account_id,
                uid,
                user_name,
                kind: ChangeKind::Retired,
                fields: Vec::new(),
                actor: None,
            });
        }
        if !dry_run {
            tx.execute(
                "DELETE FROM account_seen WHERE account_id NOT IN (SELECT value FROM json_each(?1))",
                params![scope],
            )
            .map_err(e("cannot write the snapshot"))?;
        }
        if dry_run {
            tx.rollback().map_err(e("cannot roll back"))?;
        } else {
            tx.commit().map_err(e("cannot commit"))?;
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::SinkMode;
    use crate::store::{ChangeFilter, OpenMode};
    use serde_json::json;

    fn record(tag: &str) -> Value {
        json!({"time": 1_700_000_000_000_i64, "user": {"uid": "arn:aws:iam::1:user/a", "name": "a",
            "ldap_person": {"tags": [{"name": "team", "value": tag}]}},
            "unmapped": {"user": {"path": "/"}}})
    }

    /// A whole collection of account "1" under "/", as run `run_id` at `at`.
    pub(crate) fn full_write(run_id: i64, at: i64) -> AccountWrite<'static> {
        AccountWrite {
            run_id,
            account_id: "1",
            role_arn: None,
            path_prefix: "/",
            collected_ms: at,
            dry_run: false,
            only_users: None,
            actor: None,
        }
    }

    fn write(store: &Store, rec: Value) -> AccountOutcome {
        let run_id = store.begin_run(1).unwrap();
        let w = full_write(run_id, 1_700_000_000_000 + run_id);
        store
            .apply_account(&w, [PreparedRecord::from_record(rec)])
            .unwrap()
    }

    /// When what counts as volatile changes between versions, stored hashes move without any field
    /// changing: that is neither a change-log entry nor a reason to re-send to sinks.
    #[test]
    fn a_hash_that_moves_without_a_field_change_keeps_sink_acknowledgements() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), OpenMode::ReadWrite).unwrap();
        assert_eq!(write(&store, record("x")).created, 1);
        let pending = store
            .pending("siem", SinkMode::CreateUpdate, "", "", 10)
            .unwrap();
        store
            .ack("siem", &[(&pending[0].uid, &pending[0].content_hash)], 1)
            .unwrap();
        // What an older version stored: another hash for the same content, acknowledged as such.
        store
            .lock()
            .execute_batch(
                "UPDATE snapshot SET content_hash = 'old', record_hash = 'old';
                 UPDATE sink_acks SET content_hash = 'old';",
            )
            .unwrap();
        let out = write(&store, record("x"));
        assert_eq!((out.updated, out.unchanged, out.changes.len()), (0, 1, 0));
        assert!(
            store
                .pending("siem", SinkMode::CreateUpdate, "", "", 10)
                .unwrap()
                .is_empty()
        );
        // A real change still is one.
        let out = write(&store, record("y"));
        assert_eq!(out.updated, 1);
        assert_eq!(
            store
                .pending("siem", SinkMode::CreateUpdate, "", "", 10)
                .unwrap()
                .len(),
            1
        );
    }

    /// An unchanged user of a re-sync (same input hash) is recognised without building its record,
    /// and its time still moves to the new collection (one `account_seen` row, not a row rewrite).
    #[test]
    fn an_unchanged_user_is_not_built_and_its_time_follows_the_account() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), OpenMode::ReadWrite).unwrap();
        let write_lazy = |at: i64, build: Box<dyn FnOnce() -> Value + Send>| {
            let run_id = store.begin_run(at).unwrap();
            let w = full_write(run_id, at);
            let rec =
                PreparedRecord::lazy("arn:aws:iam::1:user/a", "a", "/", "in:same".into(), build);
            store.apply_account(&w, [rec]).unwrap()
        };
        assert_eq!(write_lazy(1_000, Box::new(|| record("x"))).created, 1);
        let out = write_lazy(2_000, Box::new(|| panic!("an unchanged user was built")));
        assert_eq!((out.unchanged, out.changes.len()), (1, 0));
        let pending = store
            .pending("siem", SinkMode::CreateUpdate, "", "", 10)
            .unwrap();
        assert_eq!(
            pending[0].time_ms, 2_000,
            "the record's time is the last collection"
        );
    }

    /// A record's text is stored once: a created user's snapshot row and change row share it; a
    /// record the log points at is never rewritten (events carry the user as it was at the
    /// change); one it does not is rewritten in place; pruning drops what nothing points at.
    #[test]
    fn a_record_is_stored_once_and_the_log_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), OpenMode::ReadWrite).unwrap();
        let with = |tag: &str, login: i64| {
            let mut r = record(tag);
            r["user"]["ldap_person"]["last_login_time"] = json!(login);
            r
        };
        let count = |sql: &str| -> i64 { store.lock().query_row(sql, [], |r| r.get(0)).unwrap() };
        let records = || count("SELECT COUNT(*) FROM records");
        let logged = || -> Vec<(String, i64)> {
            let all = ChangeFilter {
                with_records: true,
                ..ChangeFilter::default()
            };
            store
                .changes(&all)
                .unwrap()
                .into_iter()
                .map(|c| {
                    let r = c.record.expect("every row has its record");
                    let tag = r["user"]["ldap_person"]["tags"][0]["value"]
                        .as_str()
                        .unwrap();
                    let login = r["user"]["ldap_person"]["last_login_time"]
                        .as_i64()
                        .unwrap();
                    (format!("{}:{tag}", c.kind.as_str()), login)
                })
                .collect()
        };
        let exported = || {
            let mut out = Vec::new();
            store
                .export(&mut |t| {
                    out.push(serde_json::from_str::<Value>(t).unwrap());
                    Ok(())
                })
                .unwrap();
            out
        };

        assert_eq!(write(&store, with("x", 1)).created, 1);
        assert_eq!(
            records(),
            1,
            "the snapshot row and the created row share one record"
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM snapshot s JOIN changes c ON c.record_id = s.record_id"),
            1
        );
        // Only a last-login time moved: the log's record stays as created, the snapshot gets its
        // own; moving again rewrites that one in place.
        assert_eq!(write(&store, with("x", 2)).unchanged, 1);
        assert_eq!(records(), 2);
        assert_eq!(write(&store, with("x", 3)).unchanged, 1);
        assert_eq!(
            records(),
            2,
            "a record no change row points at is rewritten in place"
        );
        assert_eq!(exported()[0]["user"]["ldap_person"]["last_login_time"], 3);
        assert_eq!(logged(), [("created:x".to_string(), 1)]);
        // A real change: the snapshot's record (not in the log) becomes the updated one.
        assert_eq!(write(&store, with("y", 4)).updated, 1);
        assert_eq!(records(), 2);
        // Deleted: the change row points at the last known record, nothing is copied.
        let run_id = store.begin_run(1).unwrap();
        let out = store
            .apply_account(&full_write(run_id, 1_800_000_000_000), std::iter::empty())
            .unwrap();
        assert_eq!(out.deleted, 1);
        assert_eq!(count("SELECT COUNT(*) FROM snapshot"), 0);
        assert_eq!(records(), 2);
        assert_eq!(
            logged(),
            [
                ("created:x".to_string(), 1),
                ("updated:y".to_string(), 4),
                ("deleted:y".to_string(), 4)
            ]
        );
        // Pruning keeps the newest row (and so its record), and drops the created row's.
        let (pruned, _) = store.prune_changes(i64::MAX, &[]).unwrap();
        assert_eq!(pruned, 2);
        assert_eq!(records(), 1);
        assert_eq!(logged(), [("deleted:y".to_string(), 4)]);
    }

    /// Pruning the log keeps the records the snapshot still shares; a retirement points at the
    /// user's last record; a snapshot row without its record is an error naming the user, never a
    /// user silently left out of an export or a delivery.
    #[test]
    fn pruning_and_retiring_keep_the_records_still_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), OpenMode::ReadWrite).unwrap();
        let user = |name: &str| {
            let mut r = record("x");
            r["user"]["uid"] = json!(format!("arn:aws:iam::1:user/{name}"));
            r["user"]["name"] = json!(name);
            PreparedRecord::from_record(r)
        };
        let run_id = store.begin_run(1).unwrap();
        let out = store
            .apply_account(&full_write(run_id, 1_000), ["a", "b", "c"].map(user))
            .unwrap();
        assert_eq!(out.created, 3);
        let count = |sql: &str| -> i64 { store.lock().query_row(sql, [], |r| r.get(0)).unwrap() };
        // Two of the three created rows go (in batches of two here); their records are the
        // snapshot's, and stay.
        assert_eq!(store.prune_changes(i64::MAX, &[]).unwrap().0, 2);
        assert_eq!(count("SELECT COUNT(*) FROM records"), 3);
        let mut exported = 0;
        store
            .export(&mut |_| {
                exported += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(exported, 3);

        // The account leaves the scope: each retired row points at its user's last record.
        let run_id = store.begin_run(2).unwrap();
        let retired = store
            .retire_accounts(run_id, &HashSet::new(), 2_000, false)
            .unwrap();
        assert_eq!(retired.len(), 3);
        let all = ChangeFilter {
            with_records: true,
            ..ChangeFilter::default()
        };
        let log = store.changes(&all).unwrap();
        let retired_records: Vec<&str> = log
            .iter()
            .filter(|c| c.kind == ChangeKind::Retired)
            .map(|c| c.record.as_ref().unwrap()["user"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(retired_records, ["a", "b", "c"]);
        assert_eq!(
            count("SELECT COUNT(*) FROM records"),
            3,
            "shared, not copied"
        );

        // A damaged store: the error names the user.
        let run_id = store.begin_run(3).unwrap();
        store
            .apply_account(&full_write(run_id, 3_000), ["d"].map(user))
            .unwrap();
        store
            .lock()
            .execute_batch("DELETE FROM records WHERE id = (SELECT record_id FROM snapshot)")
            .unwrap();
        let err = store.export(&mut |_| Ok(())).unwrap_err().to_string();
        assert!(err.contains("arn:aws:iam::1:user/d has no record"), "{err}");
        let Err(err) = store.pending("siem", SinkMode::CreateUpdate, "", "", 10) else {
            panic!("an error, not a user left out");
        };
        let err = err.to_string();
        assert!(err.contains("arn:aws:iam::1:user/d has no record"), "{err}");
    }
}
