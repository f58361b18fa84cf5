//! The SPIFFE Workload API on a Unix socket: attestation without a secret zero.
//!
//! A process connects to the socket; the kernel says who it is ([`attest`]); a registration
//! entry says which agent that is; it gets an instance identity ([`sessions`]) and, through
//! the standard gRPC service ([`api`], `proto/workloadapi.proto`), its X.509-SVID, JWT-SVIDs
//! and the trust bundles — with no token in hand. Any SPIFFE client library works unchanged.
//!
//! The listener has limits like every other: a connection cap (waiting connections stay in
//! the kernel's backlog), per-connection stream limits, HTTP/2 keepalive pings that drop dead
//! peers, and a timeout on unary calls. Streams end when the server shuts down.

pub mod api;
pub mod attest;
pub mod authority;
pub mod sessions;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::transport::server::Connected;

use crate::app::App;
use crate::listen::UnixSocketFile;

/// The generated gRPC types of `proto/workloadapi.proto` (the service has no package).
#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used, missing_docs)]
pub mod proto {
    tonic::include_proto!("_");
}

/// Workload API connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Concurrent calls (streams) on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// A unary call's deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 pings: how often, and how long a peer has to answer before it is dropped.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often exited processes' instances are ended.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// The socket, bound.
pub struct WorkloadListener {
    pub listener: UnixListener,
    pub file: UnixSocketFile,
}

impl WorkloadListener {
    /// The value for `SPIFFE_ENDPOINT_SOCKET`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.file.0.display())
    }
}

/// Binds the configured socket, world-connectable (attestation, not file permissions, tells
/// callers apart). A stale socket file is replaced; a live one is an error.
pub fn bind(app: &App) -> std::io::Result<Option<WorkloadListener>> {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = app.cfg.workload_socket() else { return Ok(None) };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let listener = crate::listen::bind_unix(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
    Ok(Some(WorkloadListener { listener, file: UnixSocketFile(path) }))
}

/// One accepted connection as tonic sees it: the server end of a pipe whose other end the
/// [`authority`] shim feeds from the socket. It holds a slot of the cap (and of its user's)
/// and knows its peer.
pub struct Conn {
    io: DuplexStream,
    _permit: OwnedSemaphorePermit,
    _user_slot: Option<UserSlot>,
    info: PeerInfo,
}

/// Connections one Unix user may hold at once: a user who opens many cannot take every slot.
pub const MAX_CONNECTIONS_PER_USER: usize = 64;
/// Attestations (reading `/proc`, hashing an executable) run at once.
const MAX_ATTESTING: usize = 8;

/// Open connections per uid.
#[derive(Default)]
struct PerUser(std::sync::Mutex<std::collections::HashMap<u32, usize>>);

/// One connection counted against its user; released on drop.
struct UserSlot(Arc<PerUser>, u32);

impl Drop for UserSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = (self.0).0.lock()
            && let Some(n) = m.get_mut(&self.1)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

impl PerUser {
    fn admit(self: &Arc<Self>, uid: u32) -> Option<UserSlot> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(uid).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_USER {
            return None;
        }
        *n += 1;
        Some(UserSlot(self.clone(), uid))
    }
}

/// Buffer of the pipe between the socket and tonic.
const PIPE_BYTES: usize = 64 * 1024;

impl Conn {
    /// Wraps an accepted socket: its attestation starts at once, before any of the client's
    /// bytes are read (the RPCs wait for it); the shim copies the client's bytes in (rewriting
    /// invalid `:authority` values) and the server's bytes out.
    fn new(
        sock: UnixStream,
        permit: OwnedSemaphorePermit,
        user_slot: Option<UserSlot>,
        attesting: &Arc<Semaphore>,
        digests: &Arc<attest::Digests>,
    ) -> Conn {
        let cred = sock.peer_cred().ok();
        let accepted_ticks = attest::uptime_ticks();
        let (tx, rx) = watch::channel(None);
        let peer = cred.map(|c| attest::Peer { uid: c.uid(), gid: c.gid(), pid: c.pid().unwrap_or(0), accepted_ticks });
        let (attesting, digests) = (attesting.clone(), digests.clone());
        tokio::spawn(async move {
            let result = match peer {
                None => Err(attest::AttestError::NoPeer),
                Some(p) => match attesting.acquire_owned().await {
                    Ok(slot) => tokio::task::spawn_blocking(move || {
                        let r = attest::attest(&p, &digests);
                        drop(slot);
                        r
                    })
                    .await
                    .unwrap_or(Err(attest::AttestError::NoPeer)),
                    Err(_) => Err(attest::AttestError::NoPeer),
                },
            };
            let _ = tx.send(Some(Arc::new(result)));
        });
        let info = PeerInfo { peer, attested: rx };
        let (server, shim) = tokio::io::duplex(PIPE_BYTES);
        let (sock_r, mut sock_w) = sock.into_split();
        let (shim_r, shim_w) = tokio::io::split(shim);
        // The client closing (or sending garbage) ends `up`, which closes tonic's input;
        // tonic closing the connection ends `down`, which ends `up` too.
        let up = tokio::spawn(async move {
            if let Err(e) = authority::client_to_server(sock_r, shim_w).await {
                tracing::debug!(error = %e, "workload API connection closed");
            }
        });
        tokio::spawn(async move {
            let mut shim_r = shim_r;
            let _ = tokio::io::copy(&mut shim_r, &mut sock_w).await;
            let _ = sock_w.shutdown().await;
            up.abort();
        });
        Conn { io: server, _permit: permit, _user_slot: user_slot, info }
    }
}

/// The attestation of a connection's peer, once it is done.
pub type Attestation = Option<Arc<Result<attest::Attested, attest::AttestError>>>;

/// What tonic hands each call about its connection: the kernel's view of the peer and its
/// attestation, made when the connection was accepted.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub peer: Option<attest::Peer>,
    pub attested: watch::Receiver<Attestation>,
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves the Workload API on `l` until `stop` flips, and sweeps exited processes.
pub async fn serve(app: Arc<App>, l: WorkloadListener, mut stop: watch::Receiver<bool>) {
    let sessions = Arc::new(sessions::Sessions::new(Some(app.cfg.data_dir.join(sessions::LEDGER_FILE))));
    let ended = sessions.recover(&app).await;
    if ended > 0 {
        tracing::info!(ended, "ended the instances a previous run attested; their processes attest again");
    }
    let sweeper = {
        let (app, sessions, mut stop) = (app.clone(), sessions.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let n = sessions.sweep(&app).await;
                if n > 0 {
                    tracing::info!(ended = n, "ended the instances of exited workload processes");
                }
            }
        })
    };
    let cap = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let listener = l.listener;
    let incoming = async_stream_of(listener, cap, Arc::new(Semaphore::new(MAX_ATTESTING)), sessions.digests());
    let svc = proto::spiffe_workload_api_server::SpiffeWorkloadApiServer::with_interceptor(
        api::WorkloadApi::new(app.clone(), sessions),
        api::require_header,
    );
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let r = tonic::transport::Server::builder()
        .timeout(CALL_TIMEOUT)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "the Workload API server failed");
    }
    sweeper.abort();
    drop(l.file);
}

/// Accepted connections, each taking a permit first (beyond the cap, callers wait in the
/// kernel's backlog).
fn async_stream_of(
    listener: UnixListener,
    cap: Arc<Semaphore>,
    attesting: Arc<Semaphore>,
    digests: Arc<attest::Digests>,
) -> impl futures_util::Stream<Item = std::io::Result<Conn>> {
    let users = Arc::new(PerUser::default());
    futures_util::stream::unfold((listener, cap, users), move |(listener, cap, users)| {
        let (attesting, digests) = (attesting.clone(), digests.clone());
        async move {
            let permit = match cap.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return None,
            };
            let r = match listener.accept().await {
                Ok((io, _)) => {
                    let uid = io.peer_cred().ok().map(|c| c.uid());
                    match uid.map(|u| users.admit(u)) {
                        // Over its user's cap: closed at once (tonic skips the error).
                        Some(None) => Err(std::io::Error::other("the user's connection cap is reached")),
                        Some(slot) => Ok(Conn::new(io, permit, slot, &attesting, &digests)),
                        None => Ok(Conn::new(io, permit, None, &attesting, &digests)),
                    }
                }
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning on the error.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err(e)
                }
            };
            Some((r, (listener, cap, users)))
        }
    })
}
