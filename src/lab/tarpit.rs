//! A TCP tarpit: holds a worker's port, accepts connections and never speaks,
//! so clients wait for an SSH banner that does not come.
//!
//! It lives in a thread of the current process and ends when its [`Tarpit`]
//! guard is dropped or when the lab revives the worker.

use anyhow::Context;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the accept loop looks whether it should end.
const POLL: Duration = Duration::from_millis(25);

/// A running tarpit; dropping it frees the port.
pub struct Tarpit {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Tarpit {
    /// Bind the port and start swallowing connections.
    pub fn start(port: u16) -> anyhow::Result<Tarpit> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .with_context(|| format!("holding port {port} for a tarpit"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("rch-lab-tarpit-{port}"))
            .spawn(move || swallow_connections(listener, &thread_stop))
            .context("starting the tarpit thread")?;
        Ok(Tarpit {
            port,
            stop,
            thread: Some(thread),
        })
    }

    /// The port it holds.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that ends this tarpit from elsewhere (the lab's revive).
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Whether it still holds its port.
    pub fn is_running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    /// Free the port and close every held connection, waiting until done.
    pub fn end(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        self.end();
    }
}

/// Accept and hold connections without a byte of reply until told to stop;
/// the listener and the held connections close when this returns.
fn swallow_connections(listener: TcpListener, stop: &AtomicBool) {
    let mut held: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => held.push(stream),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Wait until a tarpit ended from elsewhere has let go of its port.
pub fn wait_until_released(port: u16, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok() {
            return;
        }
        std::thread::sleep(POLL);
    }
}
