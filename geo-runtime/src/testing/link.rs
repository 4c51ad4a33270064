//! A TCP proxy on loopback that stands for the network between two nodes: it can cap the
//! bandwidth of what flows back to the client (the secondary), and it records every connection,
//! so a test can see a transfer under way, and see it cut. The kernel's `netem` is not available
//! everywhere; this needs nothing but loopback.
//!
//! ```no_run
//! # async fn demo(primary: std::net::SocketAddr) -> std::io::Result<()> {
//! let link = geo_runtime::testing::link::LinkProxy::start(primary).await?;
//! link.set_rate(256 * 1024); // bytes per second towards the client, per connection
//! let url = link.url(); // give this to the secondary as its primary's URL
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Bytes read at a time; with a cap, the pause after each read keeps the pace.
const CHUNK: usize = 16 * 1024;

/// One connection through the link.
#[derive(Debug, Default)]
pub struct Connection {
    down: AtomicU64,
    up: AtomicU64,
    closed: AtomicBool,
}

impl Connection {
    /// Bytes forwarded to the client.
    pub fn bytes_down(&self) -> u64 {
        self.down.load(Ordering::Relaxed)
    }

    /// Bytes forwarded to the server.
    pub fn bytes_up(&self) -> u64 {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether the connection is over (either side closed it).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    /// Bytes per second towards the client, per connection; 0: no cap.
    rate: AtomicU64,
    connections: std::sync::Mutex<Vec<Arc<Connection>>>,
}

/// The proxy. Stops when dropped.
#[derive(Debug)]
pub struct LinkProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl LinkProxy {
    /// A proxy on a free loopback port forwarding to `upstream`, without a cap.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            rate: AtomicU64::new(0),
            connections: std::sync::Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        let (accepting, token) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                };
                let conn = Arc::new(Connection::default());
                accepting
                    .connections
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(conn.clone());
                tokio::spawn(forward(client, accepting.clone(), conn, token.clone()));
            }
        });
        Ok(LinkProxy { addr, shared, stop })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` and [`LinkProxy::addr`].
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Caps what each connection forwards to its client at `bytes_per_second` (0: no cap),
    /// from its next read on.
    pub fn set_rate(&self, bytes_per_second: u64) {
        self.shared.rate.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Every connection so far, oldest first.
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        self.shared
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Bytes forwarded to clients, all connections together.
    pub fn bytes_down(&self) -> u64 {
        self.connections().iter().map(|c| c.bytes_down()).sum()
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Forwards one connection both ways until either side closes it (or the proxy stops), then
/// closes both.
async fn forward(
    client: TcpStream,
    shared: Arc<Shared>,
    conn: Arc<Connection>,
    stop: CancellationToken,
) {
    if let Ok(server) = TcpStream::connect(shared.upstream).await {
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let up = async {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        conn.up.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
        };
        let down = async {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match server_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        conn.down.fetch_add(n as u64, Ordering::Relaxed);
                        let rate = shared.rate.load(Ordering::Relaxed);
                        if rate > 0 {
                            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64))
                                .await;
                        }
                    }
                }
            }
        };
        tokio::select! {
            () = up => {}
            () = down => {}
            () = stop.cancelled() => {}
        }
    }
    conn.closed.store(true, Ordering::Release);
}
