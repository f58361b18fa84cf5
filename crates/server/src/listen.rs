//! Listeners and connections: the public HTTP listener and the admin listener, each with its
//! own connection cap, timeouts on every connection, and graceful shutdown.
//!
//! `axum::serve` sets no header-read timeout (hyper's needs a timer) and no connection cap,
//! so a few hundred anonymous connections that never finish their headers could exhaust the
//! process's file descriptors and silence every kill switch with it. Here:
//! - a connection waits for a permit **before** it is accepted: beyond the cap, clients wait
//!   in the kernel's backlog instead of holding a descriptor of ours; the cap is kept below
//!   the file-descriptor limit ([`effective_cap`]);
//! - hyper's header-read timeout (which also closes idle keep-alive connections), a write
//!   timeout for clients that stop reading, and hyper's own head-size limit set above
//!   Remit's (so Remit's JSON 414/431 answer first);
//! - an optional per-peer cap, off by default (behind a proxy every client shares one
//!   address), with `trusted_proxies` exempt;
//! - the **admin listener** (loopback TCP or a Unix socket, 0600) serves the same API with a
//!   small cap of its own, so a flood on the public listener cannot reach it.
//!
//! Body-read timeouts and the URI/header limits are request-level and live in [`crate::api`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use crate::config::{AdminListen, Config};

/// Connections the admin listener serves at once (it is for operators, not traffic).
pub const ADMIN_MAX_CONNECTIONS: usize = 32;
/// File descriptors kept free for everything but public connections: the admin listener's
/// connections, database files and pool connections, the listeners, logs.
const RESERVED_FDS: usize = 64 + ADMIN_MAX_CONNECTIONS;
/// How long shutdown waits for open connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The sockets `serve` accepts on.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: Option<AdminListener>,
    /// The SPIFFE Workload API's Unix socket.
    pub workload: Option<crate::workload::WorkloadListener>,
    /// TLS on the public listener; `None`: plain HTTP.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// The injecting tool proxy's listener, when `[proxy] listen` is set.
    pub proxy: Option<TcpListener>,
}

/// The admin listener, bound.
pub enum AdminListener {
    Tcp(TcpListener),
    /// The socket file is removed when this is dropped.
    Unix(UnixListener, UnixSocketFile),
}

impl AdminListener {
    /// How to reach it, for the start-up banner: `http://IP:PORT` or `unix:PATH`.
    pub fn describe(&self) -> String {
        match self {
            AdminListener::Tcp(l) => l.local_addr().map(|a| format!("http://{a}")).unwrap_or_default(),
            AdminListener::Unix(_, f) => format!("unix:{}", f.0.display()),
        }
    }
}

/// A Unix socket path we created; removed on drop.
pub struct UnixSocketFile(pub PathBuf);

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds the admin listener `cfg` asks for. The default socket (in the data directory) is
/// best effort: failing to bind it is logged, not fatal; an explicitly configured one must bind.
pub async fn bind_admin(cfg: &Config) -> std::io::Result<Option<AdminListener>> {
    let kind = cfg.admin_listen_kind().map_err(|e| std::io::Error::other(e.to_string()))?;
    let explicit = cfg.admin_listen.is_some();
    let bound = match kind {
        None => return Ok(None),
        Some(AdminListen::Tcp(addr)) => TcpListener::bind(addr).await.map(AdminListener::Tcp),
        Some(AdminListen::Unix(path)) => bind_unix(&path).map(|l| AdminListener::Unix(l, UnixSocketFile(path))),
    };
    match bound {
        Ok(l) => Ok(Some(l)),
        Err(e) if !explicit => {
            tracing::warn!(error = %e, "the default admin socket could not be bound; set `admin_listen`");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Binds a Unix socket readable and writable by the owner only. A stale socket file from a
/// previous run is replaced; a live one (another server answering) is an error.
pub(crate) fn bind_unix(path: &std::path::Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{} is in use by a running server", path.display()),
        ));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// The public listener's connection cap: the configured one, lowered to stay below the
/// process's file-descriptor limit (minus what everything else needs).
pub fn effective_cap(configured: usize) -> usize {
    let fds = fd_limit().unwrap_or(1024);
    let room = fds.saturating_sub(RESERVED_FDS).max(16);
    configured.clamp(1, room)
}

/// The soft limit on open files, from `/proc/self/limits` (no unsafe `getrlimit` needed).
fn fd_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Per-connection settings shared by every connection of a listener.
#[derive(Clone)]
pub struct ConnSettings {
    pub header_read_timeout: Duration,
    pub write_timeout: Duration,
    /// hyper's buffer for a request head; above Remit's own URI and header limits.
    pub max_buf_size: usize,
}

impl ConnSettings {
    pub fn from_config(cfg: &Config) -> Self {
        let l = &cfg.limits;
        // hyper answers a bare 431 past this; Remit's JSON limits must trigger first.
        let max_buf_size = (l.max_uri_bytes + l.max_header_bytes + 4096).max(8192) * 2;
        ConnSettings { header_read_timeout: l.header_read_timeout, write_timeout: l.write_timeout, max_buf_size }
    }
}

/// Tracks open connections per peer address.
struct PeerCap {
    max: usize,
    exempt: Vec<IpAddr>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its peer; released on drop.
struct PeerSlot {
    cap: Arc<PeerCap>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.cap.open.lock()
            && let Some(n) = m.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl PeerCap {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Option<PeerSlot>> {
        if self.max == 0 || self.exempt.contains(&ip) {
            return Some(None);
        }
        let mut m = self.open.lock().ok()?;
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Some(PeerSlot { cap: self.clone(), ip }))
    }
}

/// What one listener admits and how: its connection cap, the per-peer cap with its exempt
/// peers, and TLS (`None`: plain).
pub(crate) struct Admission {
    pub max_connections: usize,
    pub per_peer: (usize, Vec<IpAddr>),
    pub tls: Option<Arc<crate::tls::Tls>>,
}

/// Accepts connections on one listener until `stop` flips, serving each with `router`.
/// Returns once every connection has finished (or the drain timeout passed).
pub(crate) async fn accept_loop<L: Acceptor>(
    name: &'static str,
    listener: L,
    router: axum::Router,
    settings: ConnSettings,
    admission: Admission,
    mut stop: watch::Receiver<bool>,
) {
    let Admission { max_connections, per_peer, tls } = admission;
    let permits = Arc::new(Semaphore::new(max_connections));
    let peers = Arc::new(PeerCap { max: per_peer.0, exempt: per_peer.1, open: Mutex::new(HashMap::new()) });
    let graceful = GracefulShutdown::new();
    loop {
        let permit: OwnedSemaphorePermit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (io, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors or a connection reset before we took it: wait a moment
                // rather than spin, and keep serving.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match peer {
            Some(ip) => match peers.admit(ip) {
                Some(slot) => slot,
                None => {
                    tracing::debug!(listener = name, %ip, "per-peer connection cap reached");
                    continue;
                }
            },
            None => None,
        };
        let mut stream = tokio_io_timeout::TimeoutStream::new(io);
        stream.set_write_timeout(Some(settings.write_timeout));
        let (router, settings, tls, watcher) = (router.clone(), settings.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            // The TLS handshake runs here, on the connection's task, under the head deadline.
            let (io, svid): (BoxIo, _) = match tls {
                None => (Box::pin(stream), None),
                Some(t) => match crate::tls::accept(&t, Box::pin(stream), settings.header_read_timeout).await {
                    Some((s, svid)) => (Box::pin(s), svid),
                    None => return,
                },
            };
            let router = router.map_request(move |mut r: axum::http::Request<hyper::body::Incoming>| {
                if let Some(s) = &svid {
                    r.extensions_mut().insert(s.clone());
                }
                if let Some(ip) = peer {
                    r.extensions_mut().insert(PeerAddr(ip));
                }
                r
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_read_timeout)
                .max_buf_size(settings.max_buf_size)
                .keep_alive(true)
                .serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
            drop(permit);
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!(listener = name, "connections still open after the drain timeout; closing them");
    }
}

/// The TCP peer's address, on every request of the connection (none on a Unix socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

/// A connection's byte stream, plain or TLS.
trait IoStream: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> IoStream for T {}
type BoxIo = std::pin::Pin<Box<dyn IoStream>>;

/// A listener whose connections `accept_loop` can serve.
pub(crate) trait Acceptor: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// The next connection and, for TCP, the peer's address.
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, Option<IpAddr>)>> + Send;
}

impl Acceptor for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Option<IpAddr>)> {
        let (s, addr) = TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok((s, Some(addr.ip())))
    }
}

impl Acceptor for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Option<IpAddr>)> {
        let (s, _) = UnixListener::accept(self).await?;
        Ok((s, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_stays_below_the_descriptor_limit() {
        let fds = fd_limit().unwrap();
        assert!(effective_cap(usize::MAX) <= fds.saturating_sub(RESERVED_FDS).max(16));
        assert_eq!(effective_cap(5), 5.min(effective_cap(usize::MAX)));
    }

    #[test]
    fn per_peer_cap_counts_and_releases() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let cap = Arc::new(PeerCap { max: 2, exempt: vec![proxy], open: Mutex::new(HashMap::new()) });
        let a = cap.admit(ip).unwrap();
        let b = cap.admit(ip).unwrap();
        assert!(cap.admit(ip).is_none());
        drop(a);
        assert!(cap.admit(ip).is_some());
        drop(b);
        for _ in 0..10 {
            assert!(matches!(cap.admit(proxy), Some(None)));
        }
    }
}
