//! Reading an agent's stdout or stderr in bounded chunks: each chunk is
//! streamed to the coordinator as it arrives; stdout's last JSON-object line
//! is kept (the fallback result) and stderr's tail (for error messages).
//! Nothing reads a whole stream into memory.

use hive_shared::convert::JsonObject;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::shipper::LogSink;

/// Longest stdout line considered as a JSON result; longer lines are skipped.
pub(crate) const MAX_RESULT_LINE: usize = 1024 * 1024;
/// How much of stderr's end is kept for error messages.
pub(crate) const TAIL_BYTES: usize = 2048;

/// What a finished pump learned about its stream.
#[derive(Debug, Default)]
pub(crate) struct Pumped {
    /// The last complete line that parsed as a JSON object.
    pub last_json: Option<JsonObject>,
    /// The first capture group of the last line the session regex matched.
    pub session: Option<String>,
    /// The stream's last bytes.
    pub tail: Vec<u8>,
}

/// What to look for in each complete line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watch {
    /// Keep the last JSON-object line.
    pub json: bool,
    /// Keep the session id this regex finds.
    pub session: Option<regex::Regex>,
    /// Counts the bytes read (shared by an agent's streams; stall watching reads it).
    pub received: super::stall::OutputBytes,
}

/// Tracks complete lines across chunk boundaries, within a bound.
#[derive(Debug, Default)]
struct LineTracker {
    watch: Watch,
    line: Vec<u8>,
    overlong: bool,
    last_json: Option<JsonObject>,
    session: Option<String>,
}

impl LineTracker {
    fn feed(&mut self, mut data: &[u8]) {
        while let Some(newline) = data.iter().position(|byte| *byte == b'\n') {
            self.extend(&data[..newline]);
            self.end_line();
            data = &data[newline + 1..];
        }
        self.extend(data);
    }

    fn extend(&mut self, data: &[u8]) {
        if self.overlong || self.line.len() + data.len() > MAX_RESULT_LINE {
            self.overlong = true;
            self.line.clear();
        } else {
            self.line.extend_from_slice(data);
        }
    }

    fn end_line(&mut self) {
        let line = self.line.trim_ascii();
        if !self.overlong
            && self.watch.json
            && line.first() == Some(&b'{')
            && let Ok(object) = serde_json::from_slice::<JsonObject>(line)
        {
            self.last_json = Some(object);
        }
        if !self.overlong
            && let Some(pattern) = &self.watch.session
            && let Some(found) = pattern.captures(&String::from_utf8_lossy(line)).and_then(|groups| groups.get(1))
        {
            self.session = Some(found.as_str().to_owned());
        }
        self.line.clear();
        self.overlong = false;
    }
}

/// Reads `reader` to its end, shipping every chunk through `sink`.
pub(crate) async fn pump(mut reader: impl AsyncRead + Unpin, sink: LogSink, chunk_size: usize, watch: Watch) -> Pumped {
    let mut buffer = vec![0_u8; chunk_size];
    let track = watch.json || watch.session.is_some();
    let received = std::sync::Arc::clone(&watch.received);
    let mut lines = LineTracker { watch, ..LineTracker::default() };
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let read = match reader.read(&mut buffer).await {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) => {
                tracing::debug!(error = %err, "agent output pipe failed");
                break;
            }
        };
        let data = &buffer[..read];
        received.fetch_add(read as u64, std::sync::atomic::Ordering::Relaxed);
        if track {
            lines.feed(data);
        }
        tail.extend_from_slice(data);
        if tail.len() > TAIL_BYTES {
            tail.drain(..tail.len() - TAIL_BYTES);
        }
        sink.send(data.to_vec()).await;
    }
    if track {
        lines.end_line();
    }
    Pumped { last_json: lines.last_json, session: lines.session, tail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_json(chunks: &[&[u8]]) -> Option<JsonObject> {
        let mut lines = LineTracker { watch: Watch { json: true, ..Watch::default() }, ..LineTracker::default() };
        for chunk in chunks {
            lines.feed(chunk);
        }
        lines.end_line();
        lines.last_json
    }

    #[test]
    fn the_last_json_object_line_wins_across_chunk_boundaries() {
        let found = last_json(&[b"progress 1\n{\"a\":", b"1}\nmore text\n{\"b\"", b":2}\ntrailing words"]);
        assert_eq!(found.unwrap()["b"], 2);
    }

    #[test]
    fn a_final_line_without_newline_counts() {
        assert_eq!(last_json(&[b"x\n{\"done\":true}"]).unwrap()["done"], true);
    }

    #[test]
    fn arrays_scalars_and_broken_json_are_ignored() {
        assert!(last_json(&[b"[1,2]\n42\n{broken\n"]).is_none());
    }

    #[test]
    fn the_last_session_id_the_regex_finds_is_kept() {
        let watch = Watch { session: Some(regex::Regex::new(r"session: (\S+)").unwrap()), ..Watch::default() };
        let mut lines = LineTracker { watch, ..LineTracker::default() };
        lines.feed(b"session: first\nworking\nsess");
        lines.feed(b"ion: second\nmore\n");
        lines.end_line();
        assert_eq!(lines.session.as_deref(), Some("second"));
    }

    #[test]
    fn an_overlong_line_is_skipped_without_growing_memory() {
        let big = vec![b'{'; MAX_RESULT_LINE + 10];
        let found = last_json(&[b"{\"ok\":1}\n", &big, b"\n"]);
        assert_eq!(found.unwrap()["ok"], 1);
    }

    proptest::proptest! {
        #[test]
        fn a_json_line_after_any_output_is_the_last_json_however_it_is_cut(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            cuts in proptest::collection::vec(0_usize..4200, 0..8),
        ) {
            let mut stream = noise;
            stream.extend_from_slice(b"\n{\"done\": true}\n");
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut.min(stream.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                chunks.push(&stream[start..cut]);
                start = cut;
            }
            let found = last_json(&chunks);
            proptest::prop_assert_eq!(found, serde_json::json!({"done": true}).as_object().cloned());
        }
    }
}
