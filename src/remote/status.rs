//! The remote run script's out-of-band status: what it tells rch about the
//! run, kept apart from anything the build prints.
//!
//! Every run gets a fresh random nonce, sent to the script as the first line
//! of the ssh channel's stdin (never in argv or the environment, where the
//! command could read it). The script reports on stderr in records
//! `\x1erch-<nonce>\x1e<body>\n`; [`StatusFilter`] takes those records out of
//! the stream and passes every other byte through unchanged. Bodies:
//!
//! - `exit:<code>`: the command ran and ended with `<code>` (128+N on signal N);
//! - `setup:<kind>:<detail>`: the script did not start the command ([`SetupFault`]);
//! - `file:`, `gone:`, `list:ok|bad`: what the build left in the directory
//!   that comes back ([`super::outputs`]), sent before `exit`;
//! - `env:<line>`: a line of the build's dep-info naming a variable it read.
//!
//! A run without either record never finished on the worker: the channel or
//! the connection was lost. Checks the script makes before the command add a
//! [`SetupFault`] variant and a `setup_failed <kind> <detail>` call there.

/// A fresh per-run secret: 16 hex digits from the system's random source.
pub fn nonce() -> String {
    crate::random::hex::<8>()
}

/// Why the run script did not start the command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetupFault {
    /// The remote project directory is missing or unusable (`dir`).
    Dir(String),
    /// The worker does not have the command's program (`tool`).
    Tool(String),
    /// The build's tree is not the one the client last pushed there (`tree`):
    /// push it in full and run again.
    StaleTree,
    /// Any other check of the script, e.g. `setsid` missing (`other`).
    Other(String),
}

/// One record of the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The command ended with this exit code.
    Exit(i32),
    /// The command was not started.
    Setup(SetupFault),
    /// A file of the listed directory: `<size> <mtime> <path>`.
    File(String),
    /// A path the build deleted: `<type> <size> <mtime> <path>`.
    Gone(String),
    /// The listing ended: complete (`true`) or impossible (`false`).
    List(bool),
    /// A dep-info or build-script line naming a variable the build read.
    Env(String),
}

impl Record {
    /// Parses a record body; `None` for a body this version does not know.
    fn parse(body: &str) -> Option<Record> {
        let (tag, rest) = body.split_once(':')?;
        match tag {
            "exit" => rest.trim().parse().ok().map(Record::Exit),
            "setup" => {
                let (kind, detail) = rest.split_once(':').unwrap_or((rest, ""));
                let detail = detail.to_string();
                Some(Record::Setup(match kind {
                    "dir" => SetupFault::Dir(detail),
                    "tool" => SetupFault::Tool(detail),
                    "tree" => SetupFault::StaleTree,
                    _ => SetupFault::Other(detail),
                }))
            }
            "file" => Some(Record::File(rest.to_string())),
            "gone" => Some(Record::Gone(rest.to_string())),
            "list" => Some(Record::List(rest == "ok")),
            "env" => Some(Record::Env(rest.to_string())),
            _ => None,
        }
    }
}

/// Shell function definitions for the script: `report_exit CODE` and
/// `setup_failed KIND DETAIL` (which also exits). `$RCH_nonce` must be set
/// (the script's own names start with `RCH_`, which no forwarded variable
/// may: the build's environment cannot overwrite them).
pub const SCRIPT_FUNCTIONS: &str = r#"report_exit() { printf '\036rch-%s\036exit:%s\n' "$RCH_nonce" "$1" >&2; }
setup_failed() { printf '\036rch-%s\036setup:%s:%s\n' "$RCH_nonce" "$1" "$2" >&2; exit 125; }"#;

/// Separates the script's records from the build's own stderr bytes.
pub struct StatusFilter {
    marker: Vec<u8>,
    /// Bytes that may still turn out to be (part of) a record.
    held: Vec<u8>,
    records: Vec<Record>,
}

impl StatusFilter {
    pub fn new(nonce: &str) -> StatusFilter {
        StatusFilter {
            marker: format!("\x1erch-{nonce}\x1e").into_bytes(),
            held: Vec::new(),
            records: Vec::new(),
        }
    }

    /// Feeds the next chunk of stderr; returns the bytes that are the build's
    /// output. Only a tail that could start a record is held back.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            match find(&self.held, &self.marker) {
                Some(at) => {
                    out.extend_from_slice(&self.held[..at]);
                    let body_start = at + self.marker.len();
                    let Some(nl) = self.held[body_start..].iter().position(|&b| b == b'\n') else {
                        self.held.drain(..at);
                        return out;
                    };
                    let body = String::from_utf8_lossy(&self.held[body_start..body_start + nl]);
                    if let Some(record) = Record::parse(&body) {
                        self.records.push(record);
                    }
                    self.held.drain(..body_start + nl + 1);
                }
                None => {
                    let keep = partial_prefix_len(&self.held, &self.marker);
                    let cut = self.held.len() - keep;
                    out.extend(self.held.drain(..cut));
                    return out;
                }
            }
        }
    }

    /// End of stream: whatever is still held is output after all.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// The records seen so far, in order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Length of the longest tail of `data` that is a proper prefix of `marker`.
fn partial_prefix_len(data: &[u8], marker: &[u8]) -> usize {
    let max = (marker.len() - 1).min(data.len());
    (1..=max)
        .rev()
        .find(|&n| marker.starts_with(&data[data.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_filter(nonce: &str, chunks: &[&[u8]]) -> (Vec<u8>, Vec<Record>) {
        let mut f = StatusFilter::new(nonce);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(f.feed(c));
        }
        out.extend(f.finish());
        (out, f.records().to_vec())
    }

    #[test]
    fn records_are_taken_out_and_output_passes_byte_exact() {
        let (out, records) = run_filter(
            "abc",
            &[b"warn: x\n\x1erch-a", b"bc\x1eexit:101\n", b"tail \xff"],
        );
        assert_eq!(out, b"warn: x\ntail \xff");
        assert_eq!(records, vec![Record::Exit(101)]);
    }

    #[test]
    fn a_record_with_another_nonce_is_plain_output() {
        let forged = b"\x1erch-setup\x1edir:x\n\x1erch-zzz\x1eexit:0\n";
        let (out, records) = run_filter("abc", &[forged]);
        assert_eq!(out, forged);
        assert!(records.is_empty());
    }

    #[test]
    fn setup_records_parse_kind_and_detail() {
        let (out, records) = run_filter("n1", &[b"\x1erch-n1\x1esetup:dir:Permission denied\n"]);
        assert!(out.is_empty());
        assert_eq!(
            records,
            vec![Record::Setup(SetupFault::Dir("Permission denied".into()))]
        );
    }

    #[test]
    fn only_a_possible_marker_prefix_is_held_back() {
        let mut f = StatusFilter::new("n1");
        assert_eq!(f.feed(b"abc\x1erch"), b"abc");
        assert_eq!(f.feed(b"!"), b"\x1erch!");
        assert_eq!(f.finish(), b"");
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
        assert_eq!(nonce().len(), 16);
    }
}
