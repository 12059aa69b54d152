//! One watcher of the event log: where it starts, what it wants, and the
//! pages it is sent. A watcher resumes after the last number it saw and is
//! sent every later event matching its filter exactly once, oldest first,
//! from this coordinator's [`Tail`] when it holds them and from the
//! database when the watcher is further behind.

use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::page::Page;
use super::tail::Tail;
use super::{Event, KINDS};
use crate::db;
use crate::error::{Error, Result};

/// Most events read for one page.
const PAGE: usize = 1000;
/// Most kinds one watch may name (each event is matched against every one).
const MAX_KINDS: usize = 64;

/// What a watcher wants to see.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// Only events of this swarm.
    pub swarm: Option<Uuid>,
    /// Only events of this task.
    pub task: Option<Uuid>,
    /// Only events of this worker.
    pub worker: Option<Uuid>,
    /// Only these kinds (`task.dead`) or families (`task.*`); empty: all.
    pub kinds: Vec<String>,
}

impl Filter {
    /// Every unknown kind or family, named; empty when all are known.
    pub(crate) fn problems(&self) -> Vec<String> {
        if self.kinds.len() > MAX_KINDS {
            return vec![format!("kinds: {} entries; the limit is {MAX_KINDS}", self.kinds.len())];
        }
        self.kinds
            .iter()
            .enumerate()
            .filter(|(_, kind)| match kind.strip_suffix(".*") {
                Some(family) => !KINDS.iter().any(|known| known.split_once('.').is_some_and(|(f, _)| f == family)),
                None => !KINDS.contains(&kind.as_str()),
            })
            .map(|(index, kind)| {
                format!("kinds[{index}]: `{kind}` is not a kind of event (a kind such as `task.dead`, or a family such as `task.*`)")
            })
            .collect()
    }

    fn matches(&self, event: &Event) -> bool {
        let kind = |wanted: &String| match wanted.strip_suffix('*') {
            Some(prefix) => event.kind.starts_with(prefix),
            None => event.kind == *wanted,
        };
        self.swarm.is_none_or(|swarm| event.swarm == Some(swarm))
            && self.task.is_none_or(|task| event.task == Some(task))
            && self.worker.is_none_or(|worker| event.worker == Some(worker))
            && (self.kinds.is_empty() || self.kinds.iter().any(kind))
    }
}

/// A watcher's place in the log.
#[derive(Debug)]
pub(crate) struct Watcher {
    /// The last event number it has been sent (or skipped by its filter).
    position: i64,
    filter: Filter,
    head: watch::Receiver<i64>,
}

impl Watcher {
    /// Starts after event `after` (`None`: after the newest, so only what
    /// happens from now on; 0: before the oldest kept, so every event kept).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown kind; [`Error::EventsOutOfRange`]
    /// when `after` is older than the oldest event kept, or newer than the newest.
    pub(crate) async fn start(pool: &PgPool, tail: &Tail, after: Option<i64>, filter: Filter) -> Result<Self> {
        let problems = filter.problems();
        if !problems.is_empty() {
            return Err(Error::InvalidArgument { problems });
        }
        let head = db::events::head(pool).await?;
        let position = match after {
            None => head.last_seq,
            Some(0) => head.first_seq - 1,
            Some(after) => after,
        };
        if position > head.last_seq {
            return Err(Error::EventsOutOfRange(format!(
                "event {position} is not in the log: the newest is {}; resync and watch from the newest",
                head.last_seq
            )));
        }
        check_kept(position, head.first_seq)?;
        Ok(Self { position, filter, head: tail.subscribe() })
    }

    /// The last event number this watcher has passed.
    pub(crate) fn position(&self) -> i64 {
        self.position
    }

    /// Waits for events after its position and returns the next page of
    /// those that match (possibly empty, when none of a page matched).
    ///
    /// # Errors
    /// [`Error::EventsOutOfRange`] when retention removed events it has not
    /// read yet; database failures.
    pub(crate) async fn next(&mut self, pool: &PgPool, tail: &Tail) -> Result<Page> {
        // The tail's head only moves forwards; a closed channel means the
        // coordinator is stopping, and the caller's shutdown ends the stream.
        let _ = self.head.wait_for(|head| *head > self.position).await;
        if let Some((page, last)) = tail.page(self.position, PAGE, |event| self.filter.matches(event)) {
            self.position = last;
            return Ok(page);
        }
        // Further behind than this coordinator's copy: from the database.
        let upto = *self.head.borrow();
        let limit = i64::try_from(PAGE).unwrap_or(i64::MAX);
        let rows = db::events::after(pool, self.position, upto, limit).await?;
        if rows.first().is_none_or(|first| first.seq != self.position + 1) {
            let first_seq = db::events::head(pool).await?.first_seq;
            check_kept(self.position, first_seq)?;
            // Kept, yet not there: the database is not the one these numbers came from.
            return Err(Error::EventsOutOfRange(format!(
                "event {} is missing from the log (was the database restored?); resync and watch from the newest",
                self.position + 1
            )));
        }
        let events = super::encode(rows);
        let mut page = Page::default();
        for event in &events {
            self.position = event.seq;
            if self.filter.matches(event) {
                page.push(event);
            }
        }
        Ok(page)
    }
}

/// Whether the events after `position` are all still kept.
fn check_kept(position: i64, first_seq: i64) -> Result<()> {
    if position + 1 < first_seq {
        return Err(Error::EventsOutOfRange(format!(
            "events after {position} are no longer kept (events.retention): the oldest is {first_seq}; \
             resync and watch from the newest"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(kinds: &[&str]) -> Filter {
        Filter { kinds: kinds.iter().map(|kind| (*kind).to_owned()).collect(), ..Filter::default() }
    }

    #[test]
    fn kinds_and_families_are_checked_and_their_number_capped() {
        assert!(kinds(&["task.dead", "worker.*", "admin.*"]).problems().is_empty());
        let problems = kinds(&["task.dead", "task.exploded", "robot.*"]).problems();
        assert_eq!(problems.len(), 2);
        assert!(problems[0].starts_with("kinds[1]: `task.exploded`"), "{problems:?}");
        assert!(problems[1].starts_with("kinds[2]: `robot.*`"), "{problems:?}");
        let many = kinds(&vec!["task.dead"; MAX_KINDS + 1]).problems();
        assert_eq!(many, [format!("kinds: {} entries; the limit is {MAX_KINDS}", MAX_KINDS + 1)]);
    }
}
