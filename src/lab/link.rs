//! A link-shaped path to a lab worker: a small userspace TCP proxy in front
//! of its sshd that delays every byte by a one-way latency and limits each
//! direction to a rate, so tests and benchmarks see a worker "on a LAN" or
//! "in a cloud region" on one machine (no kernel `netem` needed).
//!
//! Each direction is a reader and a writer joined by a bounded queue of
//! chunks stamped with their arrival: the writer sends a chunk once its
//! latency has passed and the rate allows (the previous chunk's transmit
//! time is over). The bounded queue is the link's buffer: when it is full
//! the reader stops reading, and TCP's own flow control pushes back on the
//! sender, as on a real bottleneck.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// What the link does to each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Added to every byte, each way (a round trip costs twice this).
    pub one_way: Duration,
    /// Bytes per second in each direction; `None`: no limit.
    pub rate: Option<u64>,
}

impl Shape {
    /// `rtt_ms` of round trip and `mbit` Mbit/s each way (0: unlimited).
    pub fn new(rtt_ms: u64, mbit: u64) -> Shape {
        Shape {
            one_way: Duration::from_micros(rtt_ms * 500),
            rate: (mbit > 0).then_some(mbit * 1_000_000 / 8),
        }
    }

    /// How long `bytes` take on the wire at this rate.
    pub fn transmit(&self, bytes: usize) -> Duration {
        match self.rate {
            Some(rate) => Duration::from_secs_f64(bytes as f64 / rate as f64),
            None => Duration::ZERO,
        }
    }
}

/// Chunks read at once; also the pacing granularity.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction (the link's buffer: 1 MiB).
const IN_FLIGHT: usize = 64;

/// A running proxy; it stops when dropped.
pub struct LinkProxy {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LinkProxy {
    /// Listen on a free port of 127.0.0.1 and forward every connection to
    /// `127.0.0.1:target`, shaped by `shape`.
    pub fn start(target: u16, shape: Shape) -> std::io::Result<LinkProxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("rch-lab-link".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    let to = SocketAddr::from(([127, 0, 0, 1], target));
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept_loop(listener, to, shape) => {}
                    }
                });
            })?;
        Ok(LinkProxy {
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The port to connect to instead of the worker's.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, to: SocketAddr, shape: Shape) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(to).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                direction(client_read, server_write, shape),
                direction(server_read, client_write, shape),
            );
        });
    }
}

/// One direction: read, queue with the arrival time, send when due.
async fn direction(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shape: Shape,
) {
    let (queue, mut queued) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || queue
                    .send((Instant::now(), buf[..n].to_vec()))
                    .await
                    .is_err()
            {
                break;
            }
        }
    };
    let writer = async move {
        // When the wire is free again after the last chunk.
        let mut free_at = Instant::now();
        while let Some((arrived, chunk)) = queued.recv().await {
            let start = free_at.max(arrived);
            free_at = start + shape.transmit(chunk.len());
            tokio::time::sleep_until(free_at + shape.one_way).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

impl super::Lab {
    /// An ssh alias (in the lab's ssh config) that reaches worker `id`
    /// through a proxy listening on `port`, its host key checked as the
    /// worker's own (`HostKeyAlias`).
    pub fn alias_via(&self, id: &str, port: u16) -> anyhow::Result<String> {
        let worker = self.worker(id)?;
        let alias = format!("{}-via-{port}", worker.alias);
        let text = self.host_block(&alias, port, Some(worker.port));
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.ssh_config())?;
        file.write_all(text.as_bytes())?;
        Ok(alias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// An echo server on a free port.
    fn echo() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    #[test]
    fn a_round_trip_costs_the_latency_and_bytes_the_rate() {
        let proxy = LinkProxy::start(echo(), Shape::new(40, 8)).unwrap();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        stream.set_nodelay(true).unwrap();
        let started = std::time::Instant::now();
        stream.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        stream.read_exact(&mut back).unwrap();
        let rtt = started.elapsed();
        assert_eq!(&back, b"ping");
        assert!(rtt >= Duration::from_millis(40), "{rtt:?}");
        // 200 kB at 1 MB/s each way: about 0.2 s, more than the latency alone.
        let data = vec![7u8; 200_000];
        let started = std::time::Instant::now();
        let mut writer = stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || writer.write_all(&data).unwrap());
        let mut got = vec![0u8; 200_000];
        stream.read_exact(&mut got).unwrap();
        sender.join().unwrap();
        let took = started.elapsed();
        assert!(got.iter().all(|b| *b == 7));
        assert!(took >= Duration::from_millis(190), "{took:?}");
    }
}
