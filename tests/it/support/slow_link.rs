//! A TCP link with latency: a proxy on 127.0.0.1 that passes the client's bytes to the server
//! at once and the server's bytes back after a fixed delay, in order, the way a database a
//! few regions away answers. Races that a local server always wins (a stray reply arriving
//! before the client sends its next request) are lost every time over it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

/// A running proxy; it stops with the test's runtime.
pub struct SlowLink {
    pub port: u16,
}

impl SlowLink {
    /// Proxy to `upstream`, delaying what the server sends by `delay`.
    pub async fn start(upstream: SocketAddr, delay: Duration) -> SlowLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, delay));
            }
        });
        SlowLink { port }
    }
}

async fn relay(client: TcpStream, server: TcpStream, delay: Duration) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
    // Each chunk is stamped when it arrives and written once its delay is over, so the delay
    // is latency, not a throughput limit.
    let (sender, mut receiver) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = server_read.read(&mut buf).await {
            if sender
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                return;
            }
        }
    });
    while let Some((due, chunk)) = receiver.recv().await {
        sleep_until(due).await;
        if client_write.write_all(&chunk).await.is_err() {
            return;
        }
    }
}
