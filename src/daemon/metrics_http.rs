//! Optional HTTP exposition of the daemon's metrics (`[daemon] metrics_listen`),
//! for a Prometheus scraper. Every request gets the same text as `rch metrics`;
//! the listener is off unless configured.

use super::Shared;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Largest request head read before answering; scrapers send a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;

pub async fn serve(addr: String, shared: Arc<Shared>) {
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot serve metrics");
            return;
        }
    };
    tracing::info!(%addr, "serving metrics over HTTP");
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if read_head(&mut stream).await.is_err() {
                return;
            }
            let body = super::server::metrics(&shared);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Read until the blank line that ends an HTTP request head.
async fn read_head(stream: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(())
}
