//! What travels on one agent connection.
//!
//! The client opens it with a [`Request`]: the program and its arguments.
//! Everything the client writes after
//! the request is the command's stdin, byte for byte (rsync's protocol, the
//! run script's archive and input frames). The agent answers in
//! [`Frame`]s: `Started` once the command runs, its stdout and stderr as
//! they come, then `Exit`; or `Refused` when it could not start it.
//! Arguments are bytes and are never parsed by a shell on the way.

use std::io::{self, Read, Write};

/// Opens every request; a peer speaking anything else is refused.
const MAGIC: &[u8; 4] = b"RCHA";
/// Bumped when the request or the frames change; an agent of another
/// version refuses, and the client installs and starts its own.
pub const VERSION: u8 = 1;
/// Bounds on what a request may claim, so a garbled one cannot make the
/// agent allocate without limit.
const MAX_ITEMS: u32 = 1 << 16;
const MAX_ITEM_LEN: u32 = 16 << 20;

/// A command to run: `argv[0]` is looked up in the agent's PATH; it gets
/// the agent's environment (what a build adds travels in its arguments).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub argv: Vec<Vec<u8>>,
}

impl Request {
    /// The request as bytes, ready to write in one piece.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.argv.iter().map(Vec::len).sum::<usize>());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        put_len(&mut out, self.argv.len());
        for arg in &self.argv {
            put_bytes(&mut out, arg);
        }
        out
    }

    /// Reads exactly one request and nothing after it: what follows on the
    /// stream is the command's stdin.
    pub fn read_from(r: &mut impl Read) -> Result<Request, RequestError> {
        let mut head = [0u8; 5];
        r.read_exact(&mut head).map_err(RequestError::Io)?;
        if &head[..4] != MAGIC {
            return Err(RequestError::NotRch);
        }
        if head[4] != VERSION {
            return Err(RequestError::Version(head[4]));
        }
        let argc = read_count(r)?;
        let mut argv = Vec::with_capacity(argc as usize);
        for _ in 0..argc {
            argv.push(read_bytes(r)?);
        }
        if argv.is_empty() {
            return Err(RequestError::Empty);
        }
        Ok(Request { argv })
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub enum RequestError {
    Io(io::Error),
    NotRch,
    Version(u8),
    TooLarge,
    Empty,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Io(e) => write!(f, "reading the request: {e}"),
            RequestError::NotRch => f.write_str("not an rch request"),
            RequestError::Version(v) => {
                write!(f, "request version {v}, this agent speaks {VERSION}")
            }
            RequestError::TooLarge => f.write_str("request too large"),
            RequestError::Empty => f.write_str("empty command"),
        }
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn read_u32(r: &mut impl Read) -> Result<u32, RequestError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(RequestError::Io)?;
    Ok(u32::from_be_bytes(b))
}

fn read_count(r: &mut impl Read) -> Result<u32, RequestError> {
    let n = read_u32(r)?;
    if n > MAX_ITEMS {
        return Err(RequestError::TooLarge);
    }
    Ok(n)
}

fn read_bytes(r: &mut impl Read) -> Result<Vec<u8>, RequestError> {
    let n = read_u32(r)?;
    if n > MAX_ITEM_LEN {
        return Err(RequestError::TooLarge);
    }
    let mut buf = vec![0u8; n as usize];
    r.read_exact(&mut buf).map_err(RequestError::Io)?;
    Ok(buf)
}

/// One message from the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The command runs; from now on the client's bytes are its stdin.
    Started,
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command's exit code, 128+N when signal N ended it.
    Exit(i32),
    /// The command did not start, and why.
    Refused(String),
}

const STARTED: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const EXIT: u8 = 3;
const REFUSED: u8 = 4;

impl Frame {
    /// Writes the frame's header and body (one `write_all` each).
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let (kind, body): (u8, std::borrow::Cow<'_, [u8]>) = match self {
            Frame::Started => (STARTED, (&[][..]).into()),
            Frame::Stdout(b) => (STDOUT, b.as_slice().into()),
            Frame::Stderr(b) => (STDERR, b.as_slice().into()),
            Frame::Exit(code) => (EXIT, code.to_be_bytes().to_vec().into()),
            Frame::Refused(why) => (REFUSED, why.as_bytes().into()),
        };
        let mut head = [0u8; 5];
        head[0] = kind;
        head[1..].copy_from_slice(&(body.len() as u32).to_be_bytes());
        let mut msg = Vec::with_capacity(5 + body.len());
        msg.extend_from_slice(&head);
        msg.extend_from_slice(&body);
        w.write_all(&msg)
    }

    /// Reads one frame; `Ok(None)` at a clean end of stream.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 5];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let (kind, len) = Frame::parse_header(head)?;
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        Frame::decode(kind, body).map(Some)
    }

    /// The frame of kind `kind` with `body`.
    pub fn decode(kind: u8, body: Vec<u8>) -> io::Result<Frame> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        Ok(match kind {
            STARTED => Frame::Started,
            STDOUT => Frame::Stdout(body),
            STDERR => Frame::Stderr(body),
            EXIT => {
                let code: [u8; 4] = body.try_into().map_err(|_| bad("bad exit frame"))?;
                Frame::Exit(i32::from_be_bytes(code))
            }
            REFUSED => Frame::Refused(String::from_utf8_lossy(&body).into_owned()),
            _ => return Err(bad("unknown frame kind")),
        })
    }

    /// Length of a frame's header: kind, then the body's length.
    pub const HEADER_LEN: usize = 5;

    /// The kind and body length in a frame header.
    pub fn parse_header(head: [u8; Frame::HEADER_LEN]) -> io::Result<(u8, usize)> {
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len > MAX_ITEM_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        Ok((head[0], len as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_and_leaves_what_follows_unread() {
        let req = Request {
            argv: vec![
                b"sh".to_vec(),
                b"-c".to_vec(),
                b"echo \"$1\" 'x'\n".to_vec(),
            ],
        };
        let mut bytes = req.encode();
        bytes.extend_from_slice(b"stdin bytes");
        let mut r = &bytes[..];
        assert_eq!(Request::read_from(&mut r).unwrap(), req);
        assert_eq!(r, b"stdin bytes");
    }

    #[test]
    fn another_version_or_garbage_is_refused_not_run() {
        let mut bytes = Request {
            argv: vec![b"true".to_vec()],
        }
        .encode();
        bytes[4] = VERSION + 1;
        assert!(matches!(
            Request::read_from(&mut &bytes[..]),
            Err(RequestError::Version(_))
        ));
        assert!(matches!(
            Request::read_from(&mut &b"GET / HTTP/1.1\r\n"[..]),
            Err(RequestError::NotRch)
        ));
        let huge = [&MAGIC[..], &[VERSION], &u32::MAX.to_be_bytes()].concat();
        assert!(matches!(
            Request::read_from(&mut &huge[..]),
            Err(RequestError::TooLarge)
        ));
    }

    #[test]
    fn frames_read_back_in_order_and_end_cleanly() {
        let frames = [
            Frame::Started,
            Frame::Stdout(b"out".to_vec()),
            Frame::Stderr(vec![0x1e, b'x']),
            Frame::Exit(130),
            Frame::Refused("sh: not found".into()),
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            f.write_to(&mut bytes).unwrap();
        }
        let mut r = &bytes[..];
        for f in &frames {
            assert_eq!(Frame::read_from(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(Frame::read_from(&mut r).unwrap(), None);
    }
}
