//! A fault-injecting TCP proxy for one directed link between two brokers: it forwards
//! every connection it accepts to its target, and at run time it can cut the link, heal
//! it, or delay it.
//!
//! Why a proxy and not iptables: the chaos tests must run wherever the other tests do,
//! without root or network namespaces. Each broker dials its peers through the proxies of
//! its own links (`peer_overrides`), so cutting the proxy of A→B cuts exactly what A sends
//! to B, answers included.
//!
//! How a cut behaves ([`Cut`]):
//! - [`Cut::Blackhole`] models a partition: nothing crosses, and nobody is told. Bytes of
//!   open connections stop where they are (the proxy stops reading, so they pile up in the
//!   kernel's buffers and then in the sender's), and so does a close or a failure of
//!   either end. New connections are accepted and held without a connection to the
//!   target. After [`Proxy::heal`] open connections go on where they stopped, as TCP
//!   retransmission delivers what was sent during a real partition once it heals (a
//!   close included, if an end gave up meanwhile); connections held since their accept
//!   are closed without reaching the target, as a connection whose SYN was lost never
//!   reached it (the dialler redials).
//! - [`Cut::Reset`] models a crashed host or a firewall that rejects: open connections
//!   are reset (RST, both ends) and new ones are accepted and reset at once.
//!
//! Invariant: while a link is cut, no byte crosses it in either direction.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Connections one proxy forwards at once; more wait in the accept queue. Brokers open a
/// handful per link (Raft streams, the controller client, one replica fetcher).
const MAX_CONNECTIONS: usize = 64;
/// Chunks read ahead of the writer per direction while a delay holds them.
const CHUNKS_IN_FLIGHT: usize = 64;
/// Largest chunk read at once.
const CHUNK_BYTES: usize = 64 * 1024;
/// Longest wait for the target to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How a cut link treats connections; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Nothing crosses and nobody is told (a partition).
    Blackhole,
    /// Every connection is reset (a rejecting firewall, a crashed host).
    Reset,
}

/// What the link does now; every connection watches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LinkState {
    /// The cut in force, if any.
    cut: Option<Cut>,
    /// Added to every chunk's trip in both directions.
    delay: Duration,
}

/// Where a proxy listens and what it forwards to.
#[derive(Clone, Copy, Debug)]
pub struct ProxyConfig {
    /// The address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Where connections are forwarded.
    pub target: SocketAddr,
    /// The local IP of connections to the target (the source broker's own address, so
    /// the target sees the connection come from it); `None`: the kernel chooses.
    pub source_ip: Option<IpAddr>,
}

impl ProxyConfig {
    /// A proxy on 127.0.0.1 (any port) forwarding to `target`.
    pub fn to(target: SocketAddr) -> ProxyConfig {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            target,
            source_ip: None,
        }
    }
}

/// Counters of what a proxy has seen, for tests and reports.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    bytes_forwarded: AtomicU64,
}

/// A running proxy; it stops (and drops every connection) when dropped. Must be created
/// inside a tokio runtime, which runs it; its controls may be called from any thread.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    state: watch::Sender<LinkState>,
    counters: Arc<Counters>,
    /// The accept loop; it owns every connection's task, so aborting it ends them all.
    task: JoinHandle<()>,
}

impl Proxy {
    /// Binds `config.listen` and starts forwarding to `config.target` (which need not be
    /// up yet: each connection dials it when it arrives).
    pub async fn start(config: ProxyConfig) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let (state, watched) = watch::channel(LinkState {
            cut: None,
            delay: Duration::ZERO,
        });
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(
            listener,
            config,
            watched,
            Arc::clone(&counters),
        ));
        Ok(Proxy {
            addr,
            target: config.target,
            state,
            counters,
            task,
        })
    }

    /// The address the proxy listens on: dial this instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Cuts the link as a partition does ([`Cut::Blackhole`]).
    pub fn cut(&self) {
        self.cut_with(Cut::Blackhole);
    }

    /// Cuts the link the way `cut` says.
    pub fn cut_with(&self, cut: Cut) {
        self.state.send_modify(|s| s.cut = Some(cut));
    }

    /// Lets bytes cross again; connections held by a blackhole go on.
    pub fn heal(&self) {
        self.state.send_modify(|s| s.cut = None);
    }

    /// Delays every chunk by `delay` in each direction from now on (zero: no delay).
    pub fn delay(&self, delay: Duration) {
        self.state.send_modify(|s| s.delay = delay);
    }

    /// The cut in force, if any.
    pub fn cut_state(&self) -> Option<Cut> {
        self.state.borrow().cut
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Bytes forwarded so far, both directions.
    pub fn bytes_forwarded(&self) -> u64 {
        self.counters.bytes_forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: ProxyConfig,
    state: watch::Receiver<LinkState>,
    counters: Arc<Counters>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Dropped with this task (when the proxy is dropped), which aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Reap finished connections while waiting, so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok((client, _)) => {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                let state = state.clone();
                let counters = Arc::clone(&counters);
                connections.spawn(async move {
                    serve(client, config, state, counters).await;
                    drop(permit);
                });
            }
            Err(e) => {
                warn(&format!("accept failed: {e}"));
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Reports a problem of the proxy itself on stderr, which the test's output shows.
fn warn(message: &str) {
    eprintln!("chaos proxy: {message}");
}

/// One connection: held while the link is blackholed, reset while it is reset, else
/// forwarded both ways until both ends close, either fails, or the link is reset.
async fn serve(
    client: TcpStream,
    config: ProxyConfig,
    mut state: watch::Receiver<LinkState>,
    counters: Arc<Counters>,
) {
    let held = state.borrow().cut == Some(Cut::Blackhole);
    match not_blackholed(&mut state).await {
        Some(Some(Cut::Reset)) => return reset(&client),
        // A connection held since its accept never reached the target: closed.
        Some(None) if !held => {}
        _ => return,
    }
    let upstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, connect(config.target, config.source_ip)).await
        {
            Ok(Ok(upstream)) => upstream,
            // The target is down: the client, whose connection cannot be refused once
            // accepted, sees it closed.
            _ => return,
        };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    forward(client, upstream, state, counters).await;
}

/// Pumps both directions until both are done, one fails, or the link is reset; a reset
/// resets both sockets.
async fn forward(
    mut client: TcpStream,
    mut upstream: TcpStream,
    state: watch::Receiver<LinkState>,
    counters: Arc<Counters>,
) {
    let mut watched = state.clone();
    let was_reset = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let both = async {
            tokio::try_join!(
                pump(client_read, upstream_write, state.clone(), &counters),
                pump(upstream_read, client_write, state.clone(), &counters),
            )
        };
        tokio::select! {
            _ = both => false,
            _ = watched.wait_for(|s| s.cut == Some(Cut::Reset)) => true,
        }
    };
    // The end of the connection (a close, a failure) must not cross a blackhole either.
    if was_reset || not_blackholed(&mut watched).await == Some(Some(Cut::Reset)) {
        reset(&client);
        reset(&upstream);
    }
}

/// Copies `from` to `to` chunk by chunk: no chunk is read nor written while the link is
/// cut, and each is written `delay` after it was read. At EOF the write side is shut
/// down, so a half-close crosses the proxy.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    state: watch::Receiver<LinkState>,
    counters: &Counters,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (chunks, mut arrived) = mpsc::channel::<(Instant, Bytes)>(CHUNKS_IN_FLIGHT);
    let mut read_state = state.clone();
    let read = async move {
        loop {
            wait_open(&mut read_state).await?;
            let mut buffer = BytesMut::with_capacity(CHUNK_BYTES);
            if from.read_buf(&mut buffer).await? == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if chunks
                .send((Instant::now(), buffer.freeze()))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    };
    let mut write_state = state;
    let write = async move {
        while let Some((read_at, chunk)) = arrived.recv().await {
            let delay = write_state.borrow().delay;
            tokio::time::sleep_until(read_at + delay).await;
            // A cut that started while the chunk was in flight holds it too.
            wait_open(&mut write_state).await?;
            to.write_all(&chunk).await?;
            counters
                .bytes_forwarded
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        // Nor may the half-close.
        wait_open(&mut write_state).await?;
        to.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}

/// Waits until the link is not cut. A reset while waiting is left to [`forward`], which
/// watches for it; an ended proxy is an error that ends the pump.
async fn wait_open(state: &mut watch::Receiver<LinkState>) -> std::io::Result<()> {
    state
        .wait_for(|s| s.cut.is_none())
        .await
        .map(|_| ())
        .map_err(|_| std::io::Error::other("the proxy stopped"))
}

/// Waits until the link is not blackholed and returns its cut then (`None`: open);
/// `None` if the proxy stopped.
async fn not_blackholed(state: &mut watch::Receiver<LinkState>) -> Option<Option<Cut>> {
    // The guard is not Send: copy the cut out before anything else awaits.
    let cut = state
        .wait_for(|s| s.cut != Some(Cut::Blackhole))
        .await
        .ok()
        .map(|now| now.cut);
    cut
}

/// Connects to `target`, from `source_ip` when given.
async fn connect(target: SocketAddr, source_ip: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = source_ip else {
        return TcpStream::connect(target).await;
    };
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(target).await
}

/// Makes the socket's close a reset (RST) instead of an orderly FIN; it is closed when
/// its owner drops it.
fn reset(socket: &TcpStream) {
    // Zero linger: the close does not block, it resets.
    let _ = socket.set_zero_linger();
}

#[cfg(test)]
mod tests;
