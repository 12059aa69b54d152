//! A page of a watch as it is sent: the records of the events that matched
//! its filter, each run of consecutive records of one batch as one slice of
//! the batch's buffer. A page costs a watcher a reference count per run,
//! however many events it holds; nothing is copied until the stream writes
//! it.

use bytes::Bytes;

use super::Event;

/// Records to send, in order.
#[derive(Debug, Default)]
pub(crate) struct Page {
    runs: Vec<Bytes>,
    /// Events in it.
    events: usize,
    /// The run being gathered: its batch's buffer and its range there.
    open: Option<(Bytes, usize, usize)>,
}

impl Page {
    /// Adds `event`'s record after the others.
    pub(crate) fn push(&mut self, event: &Event) {
        self.events += 1;
        if let Some((batch, _, end)) = &mut self.open
            && batch.as_ptr() == event.batch.as_ptr()
            && *end == event.record.start
        {
            *end = event.record.end;
            return;
        }
        self.close();
        self.open = Some((event.batch.clone(), event.record.start, event.record.end));
    }

    /// How many events it holds.
    pub(crate) fn len(&self) -> usize {
        self.events
    }

    /// Its records, each slice one or more of them (`WatchResponse.encoded`).
    pub(crate) fn into_records(mut self) -> Vec<Bytes> {
        self.close();
        self.runs
    }

    fn close(&mut self) {
        if let Some((batch, start, end)) = self.open.take() {
            self.runs.push(batch.slice(start..end));
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use hive_shared::pb;
    use prost::Message;

    use super::*;
    use crate::db::events::EventRow;

    fn rows(seqs: std::ops::RangeInclusive<i64>) -> Vec<EventRow> {
        seqs.map(|seq| EventRow {
            seq,
            at: Utc::now(),
            kind: "task.started".into(),
            swarm_id: None,
            task_id: Some(uuid::Uuid::new_v4()),
            worker_id: None,
            attempt: Some(1),
            detail: None,
        })
        .collect()
    }

    fn sent(page: Page) -> (usize, Vec<u64>) {
        let records = page.into_records();
        let runs = records.len();
        let response = pb::WatchResponse { encoded: records, ..pb::WatchResponse::default() };
        let decoded = pb::WatchResponse::decode(response.encode_to_vec().as_slice()).unwrap();
        (runs, decoded.events.iter().map(|event| event.seq).collect())
    }

    #[test]
    fn consecutive_records_of_a_batch_go_as_one_slice_and_gaps_or_batches_split_them() {
        let (first, second) = (super::super::encode(rows(1..=4)), super::super::encode(rows(5..=6)));
        let mut page = Page::default();
        for event in first.iter().chain(&second).filter(|event| event.seq != 3) {
            page.push(event);
        }
        assert_eq!(page.len(), 5);
        // 1-2, 4 (after the gap), 5-6 (another batch).
        assert_eq!(sent(page), (3, vec![1, 2, 4, 5, 6]));
    }
}
