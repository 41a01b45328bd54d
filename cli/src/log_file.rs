//! The export file of `stay export` / `stay import`: the whole event log as JSON Lines.
//!
//! One line per event, in global (feed) order, each a JSON object with these fields in this order:
//!
//! ```text
//! {"aggregate_type":"Room","aggregate_id":"…","sequence":1,"event_type":"RoomListed","event_version":"1",
//!  "payload":{…},"metadata":{…},"recorded_at":"2026-01-02T03:04:05.123456Z","chain":"<64 hex>"}
//! ```
//!
//! `chain` locates damage: it is the SHA-256 (hex) of the previous line's `chain` (nothing for
//! the first line) followed by this line's bytes up to, not including, `,"chain":`. A line that
//! was edited, dropped or moved breaks the chain at that line, so the importer can name it.
//!
//! The last line closes the file: `{"end":true,"format":"stay-export/1","count":N,"sha256":"<hex>"}`,
//! where `sha256` is the SHA-256 of every event line's exact bytes, newlines included, so
//! `head -n -1 FILE | sha256sum` shows it. A file without it is truncated. The digest names the
//! export: an interrupted import resumes only with the same file.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use stay_store::{ImportedEvent, RecordedEvent};

/// The format named in the closing line.
pub const FORMAT: &str = "stay-export/1";

/// What ends every event line: `,"chain":"` + 64 hex digits + `"}`.
const CHAIN_PREFIX: &[u8] = b",\"chain\":\"";
const CHAIN_SUFFIX_LEN: usize = CHAIN_PREFIX.len() + 64 + 2;

/// One event line's fields before its chain, in file order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine {
    aggregate_type: String,
    aggregate_id: String,
    sequence: u64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
    recorded_at: String,
    /// Present when read (checked from the line's bytes); written after the other fields by [`LogWriter`].
    #[serde(default, skip_serializing, rename = "chain")]
    _chain: String,
}

/// The closing line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Closing {
    /// Always true: what tells the closing line from an event.
    pub end: bool,
    /// The file's format ([`FORMAT`]).
    pub format: String,
    /// Event lines before it.
    pub count: u64,
    /// SHA-256 (hex) of the event lines' bytes.
    pub sha256: String,
}

/// Writes an export: event lines, then the closing line.
pub struct LogWriter<W: Write> {
    out: W,
    chain: String,
    digest: Sha256,
    count: u64,
}

impl<W: Write> LogWriter<W> {
    /// A writer to `out` (buffer it).
    pub fn new(out: W) -> Self {
        Self { out, chain: String::new(), digest: Sha256::new(), count: 0 }
    }

    /// Writes one event as it is stored.
    pub fn event(&mut self, event: &RecordedEvent) -> anyhow::Result<()> {
        let line = EventLine {
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            event_type: event.event_type.clone(),
            event_version: event.event_version.clone(),
            payload: event.payload.clone(),
            metadata: event.metadata.clone(),
            recorded_at: event.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            _chain: String::new(),
        };
        let mut bytes = serde_json::to_vec(&line)?;
        // `{…}` without its closing brace, then the chain field and the brace.
        bytes.pop();
        self.chain = next_chain(&self.chain, &bytes);
        bytes.extend_from_slice(CHAIN_PREFIX);
        bytes.extend_from_slice(self.chain.as_bytes());
        bytes.extend_from_slice(b"\"}\n");
        self.digest.update(&bytes);
        self.out.write_all(&bytes)?;
        self.count += 1;
        Ok(())
    }

    /// Events written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Writes the closing line and flushes; answers it.
    pub fn finish(mut self) -> anyhow::Result<Closing> {
        let closing = Closing {
            end: true,
            format: FORMAT.to_owned(),
            count: self.count,
            sha256: hex::encode(self.digest.finalize()),
        };
        serde_json::to_writer(&mut self.out, &closing)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(closing)
    }
}

fn next_chain(previous: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(previous.as_bytes());
    hash.update(body);
    hex::encode(hash.finalize())
}

/// One line of an export file, checked.
pub enum Line {
    /// An event, ready to import.
    Event(Box<ImportedEvent>),
    /// The closing line (its digest checked against the lines before it).
    End(Closing),
}

/// Reads and checks an export file line by line: every line's JSON and fields, the chain, each
/// aggregate's sequences (1, 2, 3, … in file order), the closing line's count and digest.
/// Errors name the line (1-based).
pub struct LogReader<R: BufRead> {
    input: R,
    line_number: u64,
    chain: String,
    digest: Sha256,
    count: u64,
    /// Each aggregate's last sequence so far, when sequences are checked.
    sequences: Option<HashMap<(String, String), u64>>,
    ended: bool,
    buffer: Vec<u8>,
}

impl<R: BufRead> LogReader<R> {
    /// A reader of `input`; `check_sequences` keeps each aggregate's last sequence (memory grows
    /// with the number of aggregates).
    pub fn new(input: R, check_sequences: bool) -> Self {
        Self {
            input,
            line_number: 0,
            chain: String::new(),
            digest: Sha256::new(),
            count: 0,
            sequences: check_sequences.then(HashMap::new),
            ended: false,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// The next line, checked; `None` after the closing line (anything after it is refused).
    pub fn next_line(&mut self) -> anyhow::Result<Option<Line>> {
        self.buffer.clear();
        let read = self.input.read_until(b'\n', &mut self.buffer).context("cannot read the export file")?;
        if read == 0 {
            if self.ended {
                return Ok(None);
            }
            anyhow::bail!(
                "the export file ends after line {} without its closing line: it is truncated (or not a stay export)",
                self.line_number
            );
        }
        self.line_number += 1;
        let n = self.line_number;
        if self.ended {
            anyhow::bail!("line {n}: there is more after the closing line");
        }
        if self.buffer.last() != Some(&b'\n') {
            anyhow::bail!("line {n} is cut off (no newline at its end): the export file is truncated");
        }
        let line = &self.buffer[..self.buffer.len() - 1];
        if line.starts_with(b"{\"end\":") {
            let closing: Closing = serde_json::from_slice(line)
                .with_context(|| format!("line {n}: the closing line is not valid: {}", excerpt(line)))?;
            anyhow::ensure!(closing.end, "line {n}: the closing line must say \"end\":true");
            anyhow::ensure!(
                closing.format == FORMAT,
                "line {n}: the file's format is {:?}; this stay reads {FORMAT:?}",
                closing.format
            );
            anyhow::ensure!(
                closing.count == self.count,
                "line {n}: the closing line counts {} events, but the file holds {}",
                closing.count,
                self.count
            );
            let digest = hex::encode(std::mem::take(&mut self.digest).finalize());
            anyhow::ensure!(
                closing.sha256.eq_ignore_ascii_case(&digest),
                "line {n}: the closing line's sha256 {} does not match the events' {digest}",
                closing.sha256
            );
            self.ended = true;
            return Ok(Some(Line::End(closing)));
        }
        let fields: EventLine = serde_json::from_slice(line)
            .with_context(|| format!("line {n} is not a valid event line: {}", excerpt(line)))?;
        // The chain: over the bytes before `,"chain":"…"}`.
        let split = line.len().checked_sub(CHAIN_SUFFIX_LEN).filter(|&at| line[at..].starts_with(CHAIN_PREFIX));
        let Some(at) = split else {
            anyhow::bail!("line {n} has no chain field at its end: it was changed, or is not from stay export");
        };
        let expected = next_chain(&self.chain, &line[..at]);
        let written = &line[at + CHAIN_PREFIX.len()..line.len() - 2];
        if written != expected.as_bytes() || !line.ends_with(b"\"}") {
            anyhow::bail!(
                "line {n} was changed, or a line before it was removed or moved: its chain does not match (the file was tampered with or damaged)"
            );
        }
        self.chain = expected;
        self.digest.update(&self.buffer);
        self.count += 1;
        if let Some(sequences) = &mut self.sequences {
            let key = (fields.aggregate_type.clone(), fields.aggregate_id.clone());
            let last = sequences.get(&key).copied().unwrap_or(0);
            anyhow::ensure!(
                fields.sequence == last + 1,
                "line {n}: {} {} has sequence {} after {last}: each aggregate's events must follow 1, 2, 3, …",
                fields.aggregate_type,
                fields.aggregate_id,
                fields.sequence
            );
            sequences.insert(key, fields.sequence);
        }
        let recorded_at = DateTime::parse_from_rfc3339(&fields.recorded_at)
            .with_context(|| format!("line {n}: recorded_at {:?} is not an RFC 3339 time", fields.recorded_at))?
            .with_timezone(&Utc);
        anyhow::ensure!(fields.sequence > 0, "line {n}: sequences start at 1");
        anyhow::ensure!(
            !fields.aggregate_type.is_empty() && !fields.aggregate_id.is_empty() && !fields.event_type.is_empty(),
            "line {n}: aggregate_type, aggregate_id and event_type must not be empty"
        );
        Ok(Some(Line::Event(Box::new(ImportedEvent {
            aggregate_type: fields.aggregate_type,
            aggregate_id: fields.aggregate_id,
            sequence: fields.sequence,
            event_type: fields.event_type,
            event_version: fields.event_version,
            payload: fields.payload,
            metadata: fields.metadata,
            recorded_at,
        }))))
    }
}

/// The start of a line, for an error message.
fn excerpt(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(&line[..line.len().min(120)]);
    if line.len() > 120 {
        format!("{text}…")
    } else {
        text.into_owned()
    }
}

/// A progress display on standard error, drawn only when that is a terminal: a bar when the
/// total is known, else a running count.
pub fn stderr_progress(total: Option<u64>, prefix: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = match total {
        Some(_) => "{prefix} [{bar:30}] {percent:>3}% {pos}/{len} events ({per_sec}, {eta} left)",
        None => "{prefix} {spinner} {pos} events ({per_sec})",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("#>."));
    }
    bar.set_prefix(prefix.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stay_store::Position;

    fn event(id: &str, sequence: u64) -> RecordedEvent {
        RecordedEvent {
            position: Position::new(sequence, 0),
            aggregate_type: "Room".into(),
            aggregate_id: id.into(),
            sequence,
            event_type: "Noted".into(),
            event_version: "1".into(),
            payload: serde_json::json!({"text": "ä \"quoted\"\n", "n": sequence, "price": 12.5}),
            metadata: serde_json::json!({"actor": "someone"}),
            recorded_at: "2026-01-02T03:04:05.123456Z".parse().expect("time"),
        }
    }

    fn export(events: &[RecordedEvent]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = LogWriter::new(&mut out);
        for e in events {
            writer.event(e).expect("write");
        }
        writer.finish().expect("finish");
        out
    }

    fn read_all(bytes: &[u8]) -> anyhow::Result<Vec<ImportedEvent>> {
        let mut reader = LogReader::new(bytes, true);
        let mut events = Vec::new();
        while let Some(line) = reader.next_line()? {
            if let Line::Event(e) = line {
                events.push(*e);
            }
        }
        Ok(events)
    }

    fn sample() -> Vec<u8> {
        export(&[event("a", 1), event("b", 1), event("a", 2)])
    }

    #[test]
    fn an_export_reads_back_as_written() {
        let bytes = sample();
        let events = read_all(&bytes).expect("valid");
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].aggregate_id, "a");
        assert_eq!(events[2].sequence, 2);
        assert_eq!(events[0].payload["text"], "ä \"quoted\"\n");
        assert_eq!(events[0].recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true), "2026-01-02T03:04:05.123456Z");
        let text = String::from_utf8(bytes).expect("utf-8");
        let last = text.lines().last().expect("closing");
        let body: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert!(last.contains(&hex::encode(Sha256::digest(body.as_bytes()))), "{last}");
    }

    fn lines(bytes: &[u8]) -> Vec<String> {
        String::from_utf8(bytes.to_vec()).expect("utf-8").lines().map(str::to_owned).collect()
    }

    fn join(lines: &[String]) -> Vec<u8> {
        lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect()
    }

    #[test]
    fn a_changed_line_is_named() {
        let mut lines = lines(&sample());
        lines[1] = lines[1].replace("12.5", "13.5");
        let err = read_all(&join(&lines)).expect_err("tampered");
        assert!(err.to_string().starts_with("line 2 "), "{err}");
    }

    #[test]
    fn a_removed_or_moved_line_is_named() {
        let mut removed = lines(&sample());
        removed.remove(1);
        let err = read_all(&join(&removed)).expect_err("removed");
        assert!(err.to_string().starts_with("line 2 "), "{err}");

        let mut moved = lines(&sample());
        moved.swap(0, 1);
        let err = read_all(&join(&moved)).expect_err("moved");
        assert!(err.to_string().starts_with("line 1 "), "{err}");
    }

    #[test]
    fn a_line_that_is_not_json_is_named() {
        let mut lines = lines(&sample());
        lines[2] = "{not json".into();
        let err = read_all(&join(&lines)).expect_err("garbage");
        assert!(err.to_string().starts_with("line 3 "), "{err}");
    }

    #[test]
    fn a_missing_closing_line_means_truncated() {
        let mut lines = lines(&sample());
        lines.pop();
        let err = read_all(&join(&lines)).expect_err("truncated");
        assert!(err.to_string().contains("truncated"), "{err}");

        let mut cut = sample();
        cut.truncate(cut.len() - 10);
        let err = read_all(&cut).expect_err("cut");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn a_wrong_count_or_digest_in_the_closing_line_is_refused() {
        let mut lines = lines(&sample());
        lines[3] = lines[3].replace("\"count\":3", "\"count\":4");
        let err = read_all(&join(&lines)).expect_err("count");
        assert!(err.to_string().starts_with("line 4"), "{err}");
    }

    #[test]
    fn a_gap_in_an_aggregates_sequence_is_refused() {
        let bytes = export(&[event("a", 1), event("a", 3)]);
        let err = read_all(&bytes).expect_err("gap");
        assert!(err.to_string().starts_with("line 2: Room a has sequence 3 after 1"), "{err}");
    }
}
