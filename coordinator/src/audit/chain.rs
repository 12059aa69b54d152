//! The audit log's hash chain. A row's `hash` is SHA-256 over this
//! encoding (version 1), with every integer big-endian:
//!
//! ```text
//! "hive-audit-v1"
//! field(prev_hash)           absent for the first row
//! i64 at                     microseconds since the Unix epoch
//! field(actor) field(role) field(action) field(canonical JSON of target)
//! i64 affected
//! field(outcome) field(reason) field(peer)
//! ```
//!
//! where `field(x)` is one byte, 0 when x is absent, else 1 followed by the
//! byte length of x as a u64 and its bytes. The canonical JSON of a value
//! has no whitespace, object keys sorted by their UTF-8 bytes, and strings
//! and numbers as serde_json writes them; it survives a trip through
//! `jsonb`, which reorders keys and changes spacing. `seq` is not hashed:
//! the `prev_hash` links already fix the order, and a deleted or moved row
//! breaks the link after it.

use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::db::audit::{AuditFields, AuditRow};

/// Tells the encoding's version apart from any other use of SHA-256.
const DOMAIN: &[u8] = b"hive-audit-v1";

/// The hash of a row with `fields` following the row whose hash is `prev`.
pub(crate) fn hash(prev: Option<&[u8]>, fields: &AuditFields<'_>) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(256);
    bytes.extend_from_slice(DOMAIN);
    field(&mut bytes, prev);
    bytes.extend_from_slice(&fields.at.timestamp_micros().to_be_bytes());
    field(&mut bytes, Some(fields.actor.as_bytes()));
    field(&mut bytes, fields.role.map(str::as_bytes));
    field(&mut bytes, Some(fields.action.as_bytes()));
    let mut target = String::new();
    canonical_json(fields.target, &mut target);
    field(&mut bytes, Some(target.as_bytes()));
    bytes.extend_from_slice(&fields.affected.to_be_bytes());
    field(&mut bytes, Some(fields.outcome.as_bytes()));
    field(&mut bytes, fields.reason.map(str::as_bytes));
    field(&mut bytes, fields.peer.map(str::as_bytes));
    Sha256::digest(&bytes).into()
}

fn field(bytes: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(value) = value else {
        bytes.push(0);
        return;
    };
    bytes.push(1);
    bytes.extend_from_slice(&(value.len() as u64).to_be_bytes());
    bytes.extend_from_slice(value);
}

/// Appends the canonical JSON text of `value` to `out`.
fn canonical_json(value: &Json, out: &mut String) {
    match value {
        Json::Object(map) => {
            let mut entries: Vec<(&String, &Json)> = map.iter().collect();
            entries.sort_unstable_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String(key.clone()).to_string());
                out.push(':');
                canonical_json(value, out);
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The first thing wrong with the chain, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Break {
    /// The row that does not check out.
    pub seq: i64,
    /// What is wrong with it.
    pub problem: String,
}

/// Walks a chain page by page, each page in seq order.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// Hash of the last row checked.
    last_hash: Option<Vec<u8>>,
    /// Rows checked so far.
    pub checked: u64,
}

impl Walk {
    /// Checks the next `rows`: each links to the row before it and its hash
    /// matches its fields.
    ///
    /// # Errors
    /// The first row that does not check out.
    pub(crate) fn check(&mut self, rows: &[AuditRow]) -> Result<(), Break> {
        for row in rows {
            if row.prev_hash != self.last_hash {
                let problem = match (&self.last_hash, &row.prev_hash) {
                    (None, _) => "the first row names a previous row".to_owned(),
                    (Some(_), None) => "the row names no previous row, but follows one".to_owned(),
                    (Some(_), Some(_)) => "prev_hash is not the hash of the row before it \
                        (a row was removed, reordered or rewritten)"
                        .to_owned(),
                };
                return Err(Break { seq: row.seq, problem });
            }
            if hash(row.prev_hash.as_deref(), &row.fields()).as_slice() != row.hash.as_slice() {
                let problem = "the hash does not match the row's fields (the row was changed)".to_owned();
                return Err(Break { seq: row.seq, problem });
            }
            self.last_hash = Some(row.hash.clone());
            self.checked += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use serde_json::json;

    fn row(seq: i64, prev: Option<&[u8]>) -> AuditRow {
        let mut row = AuditRow {
            seq,
            at: DateTime::from_timestamp_micros(1_765_000_000_123_456).expect("a valid time"),
            actor: "ci".into(),
            role: Some("admin".into()),
            action: "CancelTasks".into(),
            target: json!({"filter": {"swarm_id": "s", "task_ids": ["a", "b"]}, "reason": "x"}),
            affected: 2,
            outcome: "ok".into(),
            reason: None,
            peer: Some("127.0.0.1:5000".into()),
            prev_hash: prev.map(<[u8]>::to_vec),
            hash: Vec::new(),
        };
        row.hash = hash(prev, &row.fields()).to_vec();
        row
    }

    #[test]
    fn a_row_hashed_twice_gets_the_same_hash() {
        let first = row(1, None);
        assert_eq!(hash(None, &first.fields()).as_slice(), first.hash.as_slice());
    }

    #[test]
    fn key_order_and_spacing_of_the_target_do_not_change_the_hash() {
        let first = row(1, None);
        let mut reordered = first.clone();
        reordered.target =
            serde_json::from_str(r#"{ "reason" : "x", "filter": {"task_ids": ["a","b"], "swarm_id":"s"} }"#)
                .expect("valid JSON");
        assert_eq!(hash(None, &reordered.fields()).as_slice(), first.hash.as_slice());
    }

    #[test]
    fn changing_any_field_changes_the_hash() {
        let base = row(1, None);
        type Change = Box<dyn Fn(&mut AuditRow)>;
        let changes: Vec<(&str, Change)> = vec![
            ("at", Box::new(|row| row.at += chrono::Duration::microseconds(1))),
            ("actor", Box::new(|row| row.actor.push('x'))),
            ("role", Box::new(|row| row.role = None)),
            ("action", Box::new(|row| row.action = "RetryTasks".into())),
            ("target", Box::new(|row| row.target = json!({"filter": {"swarm_id": "t"}}))),
            ("affected", Box::new(|row| row.affected = 3)),
            ("outcome", Box::new(|row| row.outcome = "refused".into())),
            ("reason", Box::new(|row| row.reason = Some(String::new()))),
            ("peer", Box::new(|row| row.peer = None)),
            ("prev_hash", Box::new(|row| row.prev_hash = Some(vec![0; 32]))),
        ];
        for (name, change) in changes {
            let mut changed = base.clone();
            change(&mut changed);
            let rehashed = hash(changed.prev_hash.as_deref(), &changed.fields());
            assert_ne!(rehashed.as_slice(), base.hash.as_slice(), "changing {name} must change the hash");
        }
    }

    #[test]
    fn fields_cannot_run_into_each_other() {
        let mut left = row(1, None);
        left.actor = "ab".into();
        left.role = Some("c".into());
        let mut right = left.clone();
        right.actor = "a".into();
        right.role = Some("bc".into());
        assert_ne!(hash(None, &left.fields()), hash(None, &right.fields()));
    }

    #[test]
    fn a_walk_finds_the_first_changed_or_missing_row() {
        let first = row(1, None);
        let second = row(2, Some(&first.hash));
        let third = row(5, Some(&second.hash));
        let mut walk = Walk::default();
        assert_eq!(walk.check(&[first.clone(), second.clone()]), Ok(()));
        assert_eq!(walk.check(std::slice::from_ref(&third)), Ok(()), "pages carry on; seq gaps are fine");
        assert_eq!(walk.checked, 3);

        let mut changed = second.clone();
        changed.affected = 0;
        let broken = Walk::default().check(&[first.clone(), changed, third.clone()]).unwrap_err();
        assert_eq!(broken.seq, 2);
        assert!(broken.problem.contains("changed"), "{}", broken.problem);

        let broken = Walk::default().check(&[first, third]).unwrap_err();
        assert_eq!(broken.seq, 5, "the row after a removed one breaks");
        let broken = Walk::default().check(&[second]).unwrap_err();
        assert_eq!(broken.seq, 2, "a chain cut at its start breaks");
    }
}
