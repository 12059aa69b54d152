//! Id newtypes: a task, an attempt (the fencing token), a worker, a swarm.
//!
//! All are UUIDs on the wire (as strings) and in PostgreSQL. Task and swarm
//! ids are UUIDv7, so sorting by id sorts by age.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// An id string that is not a UUID.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("`{value}` is not a valid {kind} id (expected a UUID)")]
pub struct BadId {
    /// Which kind of id was expected.
    pub kind: &'static str,
    /// The text that failed to parse (cut to 64 characters).
    pub value: String,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the wire form, naming the id kind in the error.
            ///
            /// # Errors
            /// [`BadId`] when `text` is not a UUID.
            pub fn parse(text: &str) -> Result<Self, BadId> {
                Uuid::parse_str(text.trim()).map(Self).map_err(|_| BadId {
                    kind: $kind,
                    value: text.chars().take(64).collect(),
                })
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = BadId;
            fn from_str(text: &str) -> Result<Self, BadId> {
                Self::parse(text)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

uuid_id!(
    /// Identifies a task.
    TaskId,
    "task"
);
uuid_id!(
    /// Identifies one attempt of a task: the fencing token for every call about that run.
    AttemptId,
    "attempt"
);
uuid_id!(
    /// Identifies a worker process (chosen by the worker, kept across reconnects).
    WorkerId,
    "worker"
);
uuid_id!(
    /// Identifies a swarm (one submission).
    SwarmId,
    "swarm"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_wire_form() {
        let id = TaskId::new();
        assert_eq!(TaskId::parse(&id.to_string()).unwrap(), id);
    }

    #[test]
    fn a_bad_id_names_its_kind_and_value() {
        let err = AttemptId::parse("nope").unwrap_err();
        assert_eq!(err.to_string(), "`nope` is not a valid attempt id (expected a UUID)");
    }

    #[test]
    fn newer_ids_sort_after_older_ones() {
        let first = TaskId::new();
        let second = TaskId::new();
        assert!(first < second);
    }
}
