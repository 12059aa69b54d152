//! `hive.v1.WatchResponse`, written by hand instead of generated, so a
//! coordinator can send events it encoded once for all its watchers: a page
//! carries slices of shared buffers of already-encoded events, copied into
//! the stream as they are, where the generated type would clone and encode
//! every event again for every watcher. On the wire it is the message the
//! proto declares; clients decode it into [`WatchResponse::events`].

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType, message, uint64};
use prost::{DecodeError, Message};

use super::Event;

/// Field numbers, as in `admin.proto`.
const EVENTS: u32 = 1;
const POSITION: u32 = 2;

/// Events in order; a message may hold several. The first message of a
/// stream holds none and says where the stream starts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchResponse {
    /// The events, decoded (as a client receives them).
    pub events: Vec<Event>,
    /// The last event number this stream has passed: every event up to it
    /// that matches the filter has been sent. Resume after it.
    pub position: u64,
    /// More events, already encoded: each slice holds one or more
    /// records of the `events` field (see [`encode_record`]), sent as they
    /// are after `events`. Decoding never fills it.
    pub encoded: Vec<Bytes>,
}

/// Appends `event` to `buf` as a record of the `events` field (its tag,
/// its length and the message), for [`WatchResponse::encoded`].
pub fn encode_record(event: &Event, buf: &mut impl BufMut) {
    message::encode(EVENTS, event, buf);
}

impl Message for WatchResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        message::encode_repeated(EVENTS, &self.events, buf);
        for records in &self.encoded {
            buf.put_slice(records);
        }
        if self.position != 0 {
            uint64::encode(POSITION, &self.position, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            EVENTS => message::merge_repeated(wire_type, &mut self.events, buf, ctx),
            POSITION => uint64::merge(wire_type, &mut self.position, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let encoded: usize = self.encoded.iter().map(Bytes::len).sum();
        let position = if self.position == 0 { 0 } else { uint64::encoded_len(POSITION, &self.position) };
        message::encoded_len_repeated(EVENTS, &self.events) + encoded + position
    }

    fn clear(&mut self) {
        self.events.clear();
        self.position = 0;
        self.encoded.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Event {
        Event {
            seq,
            kind: "task.started".into(),
            task_id: format!("task-{seq}"),
            detail: "{}".into(),
            ..Event::default()
        }
    }

    fn records(events: &[Event]) -> Bytes {
        let mut buf = bytes::BytesMut::new();
        for event in events {
            encode_record(event, &mut buf);
        }
        buf.freeze()
    }

    #[test]
    fn encoded_records_decode_as_the_events_they_were_made_from() {
        let page = WatchResponse {
            events: vec![event(1)],
            position: 4,
            encoded: vec![records(&[event(2), event(3)]), records(&[event(4)])],
        };
        let bytes = page.encode_to_vec();
        assert_eq!(bytes.len(), page.encoded_len());
        let decoded = WatchResponse::decode(bytes.as_slice()).unwrap();
        let events = vec![event(1), event(2), event(3), event(4)];
        assert_eq!(decoded, WatchResponse { events, position: 4, encoded: vec![] });
    }

    #[test]
    fn an_empty_page_is_empty_on_the_wire_and_unknown_fields_are_skipped() {
        assert!(WatchResponse::default().encode_to_vec().is_empty());
        // Field 9, a varint: skipped.
        let decoded = WatchResponse::decode([0x48, 0x01, 0x10, 0x07].as_slice()).unwrap();
        assert_eq!(decoded.position, 7);
    }

    #[test]
    fn a_malformed_page_is_an_error_not_a_panic() {
        // Field 1 says 5 bytes follow; there is one.
        assert!(WatchResponse::decode([0x0a, 0x05, 0x08].as_slice()).is_err());
    }
}
