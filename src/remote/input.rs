//! The build's stdin: whether it goes to the remote command, and how.
//!
//! A pipe or a file on rch's stdin is the build's input, as it would be for
//! the tool run here, so it is forwarded. A terminal is not (a build that
//! reads a terminal needs one, and there is none on the worker; the user's
//! keys stay with rch, so Ctrl-C works as ever), nor is /dev/null or a closed
//! stdin: the remote command then reads /dev/null, as before.
//!
//! Bytes are read here only while a remote command may want them (one
//! chunk ahead of what was sent), so a build that never reads its stdin
//! takes little of it and never waits for it. What was read is kept, up to
//! [`KEEP_LIMIT`], so a build run again (on another worker, or here) gets
//! the same input from its first byte; past that limit the input can no
//! longer be given again, and [`Input::whole`] says so.
//!
//! On the ssh channel, after the run's nonce line, the input travels as
//! frames the run script turns back into a pipe: `<len>\n` then `len`
//! bytes, and `0\n` at the end of the input (the remote command then reads
//! EOF). The channel itself stays open after that: its end is still what
//! tells the worker that the client is gone.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// How much is read at once (one frame at most).
const CHUNK: usize = 64 * 1024;
/// How many chunks may be read ahead of what a reader asked for.
const AHEAD: usize = 1;
/// How much input is kept for a build that runs again.
pub const KEEP_LIMIT: usize = 64 << 20;

/// This process's stdin, when it is the build's input. Clones share it.
#[derive(Clone)]
pub struct Input {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input(stdin)")
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when chunks arrive, the input ends, or a reader wants more.
    changed: Condvar,
    /// The number of chunks read so far, for readers that wait async.
    arrived: tokio::sync::watch::Sender<usize>,
}

#[derive(Default)]
struct State {
    /// The reading thread runs (from then on it owns reads of fd 0).
    started: bool,
    /// Chunks kept, `chunks[0]` being chunk number `first`.
    chunks: VecDeque<Arc<[u8]>>,
    first: usize,
    /// Chunks read so far.
    total: usize,
    /// Bytes in `chunks`.
    kept: usize,
    /// The chunk count the current reader waits for.
    wanted: usize,
    /// The next chunk the current reader takes; older ones may be dropped.
    position: usize,
    /// stdin reached its end (or could not be read any more).
    ended: bool,
}

impl Input {
    /// This process's stdin as a build's input, or `None` when it is not
    /// one: a terminal, /dev/null, or closed.
    pub fn detect() -> Option<Input> {
        use std::io::IsTerminal;
        let stdin = std::io::stdin();
        if stdin.is_terminal() || !is_data(&stdin) {
            return None;
        }
        Some(Input::new())
    }

    fn new() -> Input {
        Input {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                arrived: tokio::sync::watch::channel(0).0,
            }),
        }
    }

    /// Whether anything may have been taken from stdin (a command run here
    /// from now on must get its input from [`Input::copy_to`]).
    pub fn started(&self) -> bool {
        self.lock().started
    }

    /// Whether the input can still be given from its first byte.
    pub fn whole(&self) -> bool {
        self.lock().first == 0
    }

    /// A reader from the first byte, or `None` when it was not all kept.
    pub fn reader(&self) -> Option<Reader> {
        self.whole().then(|| Reader {
            input: self.clone(),
            next: 0,
        })
    }

    /// Copy the whole input to `to` (a local command's stdin), from its
    /// first byte; ends at the input's end or when `to` no longer takes it.
    pub fn copy_to(&self, mut to: impl Write) {
        let mut next = 0;
        loop {
            let chunk = {
                let mut state = self.want(next);
                loop {
                    if let Some(chunk) = state.chunk(next) {
                        break Some(chunk);
                    }
                    if state.ended || next < state.first {
                        break None;
                    }
                    state = self
                        .shared
                        .changed
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner());
                }
            };
            let Some(chunk) = chunk else { return };
            next += 1;
            if to.write_all(&chunk).and_then(|()| to.flush()).is_err() {
                return;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Say that chunk `next` is wanted (starting the reading thread on first
    /// use) and return the state.
    fn want(&self, next: usize) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        if !state.started {
            state.started = true;
            // Without a thread nothing will ever arrive: the input ends here.
            state.ended = !self.spawn_reader();
        }
        state.position = next;
        state.wanted = state.wanted.max(next + 1);
        self.shared.changed.notify_all();
        state
    }

    /// Start the reading thread; false when it cannot be started.
    fn spawn_reader(&self) -> bool {
        let shared = Arc::clone(&self.shared);
        let file = stdin_file();
        let spawned = std::thread::Builder::new()
            .name("rch-stdin".into())
            .spawn(move || read_stdin(&shared, file));
        if let Err(e) = &spawned {
            tracing::warn!(error = %e, "cannot read stdin");
        }
        spawned.is_ok()
    }
}

impl State {
    fn chunk(&self, index: usize) -> Option<Arc<[u8]>> {
        let at = index.checked_sub(self.first)?;
        self.chunks.get(at).cloned()
    }

    /// Keep at most [`KEEP_LIMIT`] bytes, never dropping what the current
    /// reader has yet to take.
    fn trim(&mut self) {
        while self.kept > KEEP_LIMIT && self.first < self.position {
            let Some(chunk) = self.chunks.pop_front() else {
                break;
            };
            self.kept -= chunk.len();
            self.first += 1;
        }
    }
}

/// One pass over the input from its first byte (one run of the build).
pub struct Reader {
    input: Input,
    next: usize,
}

impl Reader {
    /// The next chunk, or `None` at the end of the input.
    pub async fn next(&mut self) -> Option<Arc<[u8]>> {
        let mut arrived = self.input.shared.arrived.subscribe();
        loop {
            {
                let state = self.input.want(self.next);
                if let Some(chunk) = state.chunk(self.next) {
                    self.next += 1;
                    return Some(chunk);
                }
                if state.ended || self.next < state.first {
                    return None;
                }
            }
            if arrived.changed().await.is_err() {
                return None;
            }
        }
    }
}

/// Send the input to the run script as frames, ending with the end frame.
pub async fn send(mut reader: Reader, to: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
    while let Some(chunk) = reader.next().await {
        to.write_all(format!("{}\n", chunk.len()).as_bytes())
            .await?;
        to.write_all(&chunk).await?;
        to.flush().await?;
    }
    to.write_all(b"0\n").await?;
    to.flush().await
}

/// The reading thread: reads stdin while a reader wants more, until its end.
/// It blocks in `read` on a stdin that never ends; the process ends anyway.
fn read_stdin(shared: &Shared, mut file: Option<std::fs::File>) {
    let lock = || shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        {
            let mut state = lock();
            while state.total >= state.wanted + AHEAD {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        let mut buf = vec![0u8; CHUNK];
        let read = match file.as_mut() {
            Some(f) => read_some(f, &mut buf),
            None => Ok(0),
        };
        let mut state = lock();
        match read {
            Ok(0) => state.ended = true,
            Ok(n) => {
                buf.truncate(n);
                state.kept += n;
                state.chunks.push_back(buf.into());
                state.total += 1;
                state.trim();
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading stdin; taking it as ended");
                state.ended = true;
            }
        }
        let (total, ended) = (state.total, state.ended);
        drop(state);
        shared.changed.notify_all();
        shared.arrived.send_replace(total);
        if ended {
            return;
        }
    }
}

fn read_some(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// fd 0 as a file of its own (a duplicate: reads share its offset).
fn stdin_file() -> Option<std::fs::File> {
    use std::os::fd::AsFd;
    std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::fs::File::from)
}

/// Whether `stdin` is open and not /dev/null.
fn is_data(stdin: &std::io::Stdin) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(meta) = nix::sys::stat::fstat(stdin.as_raw_fd()) else {
        return false;
    };
    match nix::sys::stat::stat("/dev/null") {
        Ok(null) => !(meta.st_rdev == null.st_rdev && meta.st_ino == null.st_ino),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(chunks: &[&[u8]]) -> Input {
        let input = Input::new();
        {
            let mut state = input.lock();
            // Already read: no thread is needed.
            state.started = true;
            for c in chunks {
                state.kept += c.len();
                state.chunks.push_back(Arc::from(*c));
                state.total += 1;
            }
            state.ended = true;
        }
        input
    }

    #[tokio::test]
    async fn frames_carry_every_byte_and_end_with_an_empty_frame() {
        let input = filled(&[b"ab\n\x00\xff", b"c"]);
        let mut out = Vec::new();
        send(input.reader().unwrap(), &mut out).await.unwrap();
        assert_eq!(out, b"5\nab\n\x00\xff1\nc0\n");
        // A second pass gets it all again.
        let mut again = Vec::new();
        send(input.reader().unwrap(), &mut again).await.unwrap();
        assert_eq!(again, out);
        let mut local = Vec::new();
        input.copy_to(&mut local);
        assert_eq!(local, b"ab\n\x00\xffc");
    }

    #[test]
    fn input_past_the_limit_is_not_whole() {
        let input = filled(&[]);
        let mut state = input.lock();
        let big: Arc<[u8]> = vec![0u8; KEEP_LIMIT].into();
        for _ in 0..2 {
            state.chunks.push_back(Arc::clone(&big));
            state.kept += big.len();
            state.total += 1;
        }
        state.position = 1;
        state.trim();
        assert_eq!(state.first, 1);
        drop(state);
        assert!(!input.whole());
        assert!(input.reader().is_none());
    }
}
