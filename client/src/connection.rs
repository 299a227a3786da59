//! One TCP connection to one broker, with request pipelining (DESIGN §4, §8).
//!
//! A caller encodes its request into a frame, registers a oneshot under a fresh correlation
//! id, and hands the frame to the writer task through a bounded channel; the reader task
//! decodes response frames, matches each to its oneshot by correlation id and decodes the
//! body there (so a garbage frame is caught where the stream is read). Why a writer task and
//! not a lock around the socket: a caller's future may be dropped at any await, and a frame
//! half-written by a cancelled caller would corrupt the stream for everyone.
//!
//! In-flight requests are bounded by a semaphore. When either task fails (EOF, reset, a frame
//! over the maximum, an undecodable response) or a request goes unanswered for its timeout,
//! the connection is marked dead, every pending request fails with a retriable
//! [`Error::Network`], and both halves of the socket close. The owner ([`crate::Client`])
//! dials a new connection on next use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_protocol::{
    frame::{Piece, Pieces, SplicedFrame},
    messages::peek_correlation_id,
    ApiKey, ErrorCode, FrameCodec, Request, RequestHeader, Response,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::Decoder;

use crate::error::{Error, Result};

/// Settings of one connection, taken from [`crate::ClientConfig`].
#[derive(Clone, Debug)]
pub(crate) struct ConnectionConfig {
    pub client_id: String,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_frame_bytes: u32,
    pub max_in_flight: usize,
    pub sasl: Option<crate::sasl::SaslConfig>,
    pub tls: Option<crate::TlsConfig>,
}

/// What a pending request is waiting for.
struct Pending {
    api_key: ApiKey,
    api_version: u16,
    reply: oneshot::Sender<Result<Response>>,
}

/// A frame for the writer, as the pieces that go on the wire in order (a Produce
/// request's record batches are the producer's own bytes, not copies: see
/// [`SplicedFrame`]), with an optional notice once it is on the socket.
struct Outgoing {
    pieces: Vec<Piece>,
    written: Option<oneshot::Sender<Result<()>>>,
}

/// State shared by the handle and both tasks. The std mutex guards a map that is touched
/// only briefly (insert, remove, drain); it is never held across an await.
struct Shared {
    addr: String,
    pending: Mutex<PendingMap>,
    /// Flips to true when the connection dies, so both tasks stop and the socket closes.
    closed: watch::Sender<bool>,
    /// The next correlation id to issue; a response naming one at or above it is garbage.
    next_correlation_id: AtomicU32,
}

struct PendingMap {
    requests: HashMap<u32, Pending>,
    /// Set once the connection has died: why. New requests fail fast with it.
    dead: Option<Error>,
}

/// A pipelined connection to one broker. Cheap to share behind an `Arc`.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    config: ConnectionConfig,
    to_writer: mpsc::Sender<Outgoing>,
    in_flight: Arc<Semaphore>,
}

impl Connection {
    /// Dials `addr`, starts the reader and writer tasks, and logs in when SASL is
    /// configured.
    pub(crate) async fn connect(addr: &str, config: ConnectionConfig) -> Result<Connection> {
        let sasl = config.sasl.clone();
        let connection = Connection::dial(addr, config).await?;
        if let Some(sasl) = &sasl {
            crate::sasl::login(&connection, sasl).await?;
        }
        Ok(connection)
    }

    /// Dials `addr` (with TLS when configured) and starts the tasks; no login yet.
    async fn dial(addr: &str, config: ConnectionConfig) -> Result<Connection> {
        let connect = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr));
        let stream = match connect.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(Error::Connect {
                    addr: addr.to_owned(),
                    reason: io_reason(&e),
                })
            }
            Err(_) => {
                return Err(Error::Connect {
                    addr: addr.to_owned(),
                    reason: format!("no answer within {} ms", config.connect_timeout.as_millis()),
                })
            }
        };
        // Requests are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let Some(tls) = &config.tls else {
            let (read_half, write_half) = stream.into_split();
            return Ok(Connection::start(
                addr, config, read_half, write_half, false,
            ));
        };
        let handshake = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config))
            .connect(crate::tls::server_name(addr)?, stream);
        let stream = match tokio::time::timeout(config.connect_timeout, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(Error::Tls {
                    addr: addr.to_owned(),
                    reason: crate::tls::explain(&e, true).unwrap_or_else(|| e.to_string()),
                })
            }
            Err(_) => {
                return Err(Error::Tls {
                    addr: addr.to_owned(),
                    reason: format!(
                        "no TLS handshake within {} ms; is this a TLS listener? drop \
                         --tls-ca-file to connect without TLS",
                        config.connect_timeout.as_millis()
                    ),
                })
            }
        };
        let (read_half, write_half) = tokio::io::split(stream);
        Ok(Connection::start(addr, config, read_half, write_half, true))
    }

    /// Starts the reader and writer tasks over the two halves of a connected stream.
    fn start<R, W>(
        addr: &str,
        config: ConnectionConfig,
        read_half: R,
        write_half: W,
        tls: bool,
    ) -> Connection
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            addr: addr.to_owned(),
            pending: Mutex::new(PendingMap {
                requests: HashMap::new(),
                dead: None,
            }),
            closed: watch::channel(false).0,
            next_correlation_id: AtomicU32::new(1),
        });
        let (to_writer, from_callers) = mpsc::channel(config.max_in_flight);
        tokio::spawn(read_loop(
            read_half,
            shared.clone(),
            FrameCodec::new(config.max_frame_bytes),
            tls,
        ));
        tokio::spawn(write_loop(write_half, shared.clone(), from_callers));
        Connection {
            shared,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            to_writer,
        }
    }

    /// The broker's address.
    pub(crate) fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Whether the connection has died; a dead connection must be replaced.
    pub(crate) fn is_dead(&self) -> bool {
        lock(&self.shared.pending).dead.is_some()
    }

    /// Sends `request` and waits up to the configured request timeout for its response.
    /// A top-level error in the response header becomes [`Error::Broker`].
    pub(crate) async fn send(&self, request: &Request) -> Result<Response> {
        self.send_with_timeout(request, self.config.request_timeout)
            .await
    }

    /// Sends `request` and waits up to `timeout` for its response. When no response comes
    /// in time the connection is closed, failing every other request pending on it: a
    /// broker that stopped answering (hung, or its host gone without a TCP reset) would
    /// otherwise hold each later request for the whole timeout too, and a socket to a
    /// vanished host never fails by itself. The next use dials again.
    pub(crate) async fn send_with_timeout(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response> {
        self.submit(request).await?.response(timeout).await
    }

    /// Hands `request` to the writer and returns once it is queued there, so requests
    /// submitted one after another reach the broker in that order (the broker appends a
    /// connection's produce requests in the order it reads them). The response is awaited
    /// with [`Submitted::response`].
    pub(crate) async fn submit(&self, request: &Request) -> Result<Submitted> {
        let api_key = request.api_key();
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.dead_error())?;
        let (correlation_id, pieces) = self.encode(request)?;
        let (reply, response) = oneshot::channel();
        {
            let mut pending = lock(&self.shared.pending);
            if let Some(error) = &pending.dead {
                return Err(error.clone());
            }
            pending.requests.insert(
                correlation_id,
                Pending {
                    api_key,
                    api_version: api_key.max_version(),
                    reply,
                },
            );
        }
        // Removes the pending entry however the request ends (timeout, drop).
        let guard = PendingGuard {
            shared: self.shared.clone(),
            correlation_id,
        };
        let outgoing = Outgoing {
            pieces,
            written: None,
        };
        if self.to_writer.send(outgoing).await.is_err() {
            return Err(self.dead_error());
        }
        Ok(Submitted {
            api_key,
            response,
            guard,
            _permit: permit,
        })
    }

    /// Sends a request the broker does not answer (Produce with acks=0) and returns once
    /// it has been written to the socket.
    pub(crate) async fn send_without_response(&self, request: &Request) -> Result<()> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| self.dead_error())?;
        let (_, pieces) = self.encode(request)?;
        let (written, done) = oneshot::channel();
        let outgoing = Outgoing {
            pieces,
            written: Some(written),
        };
        if self.to_writer.send(outgoing).await.is_err() {
            return Err(self.dead_error());
        }
        match tokio::time::timeout(self.config.request_timeout, done).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.dead_error()),
            Err(_) => Err(Error::Timeout {
                addr: self.addr().to_owned(),
                api: request.api_key().name(),
                timeout: self.config.request_timeout,
            }),
        }
    }

    /// Encodes a whole frame (length prefix included) under a fresh correlation id, as the
    /// pieces to write.
    fn encode(&self, request: &Request) -> Result<(u32, Vec<Piece>)> {
        let correlation_id = self
            .shared
            .next_correlation_id
            .fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::new(
            request.api_key(),
            correlation_id,
            self.config.client_id.clone(),
        );
        let mut frame = SplicedFrame::new();
        request
            .encode_spliced(&header, &mut frame)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode the request: {e}")))?;
        let payload_len = frame.payload_len();
        if payload_len > self.config.max_frame_bytes as usize {
            return Err(Error::InvalidArgument(format!(
                "a {} request of {payload_len} bytes exceeds the maximum frame of {} bytes; send smaller batches",
                request.api_key().name(),
                self.config.max_frame_bytes
            )));
        }
        Ok((correlation_id, frame.into_pieces()))
    }

    fn dead_error(&self) -> Error {
        dead_error(&self.shared)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The writer also exits when its channel closes; this makes the reader stop too.
        kill(&self.shared, "the client closed the connection".to_owned());
    }
}

/// A request queued on a connection ([`Connection::submit`]), its response not yet in.
/// Dropping it abandons the request.
pub(crate) struct Submitted {
    api_key: ApiKey,
    response: oneshot::Receiver<Result<Response>>,
    /// Removes the pending entry however the request ends.
    guard: PendingGuard,
    /// Holds the request's place among the connection's in-flight requests.
    _permit: OwnedSemaphorePermit,
}

impl Submitted {
    /// Waits up to `timeout` for the response; closes the connection when none comes (see
    /// [`Connection::send_with_timeout`]).
    pub(crate) async fn response(self, timeout: Duration) -> Result<Response> {
        let shared = self.guard.shared.clone();
        match tokio::time::timeout(timeout, self.response).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(dead_error(&shared)),
            Err(_) => {
                let reason = format!(
                    "no response to a {} request within {} ms",
                    self.api_key.name(),
                    timeout.as_millis()
                );
                tracing::debug!(addr = %shared.addr, %reason, "closing the connection");
                kill(&shared, reason);
                Err(Error::Timeout {
                    addr: shared.addr.clone(),
                    api: self.api_key.name(),
                    timeout,
                })
            }
        }
    }
}

/// Removes a request's pending entry when its caller stops waiting.
struct PendingGuard {
    shared: Arc<Shared>,
    correlation_id: u32,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        lock(&self.shared.pending)
            .requests
            .remove(&self.correlation_id);
    }
}

fn lock(m: &Mutex<PendingMap>) -> std::sync::MutexGuard<'_, PendingMap> {
    // A panic while holding this lock cannot leave the map inconsistent (single inserts
    // and removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error of a request on a connection that died: why it died.
fn dead_error(shared: &Shared) -> Error {
    lock(&shared.pending)
        .dead
        .clone()
        .unwrap_or_else(|| Error::Network {
            addr: shared.addr.clone(),
            reason: "the connection closed".to_owned(),
        })
}

/// Marks the connection dead (first reason wins) and fails every pending request with a
/// retriable [`Error::Network`].
fn kill(shared: &Shared, reason: String) {
    kill_with(
        shared,
        Error::Network {
            addr: shared.addr.clone(),
            reason,
        },
    );
}

/// Marks the connection dead with `error` (the first one wins) and fails every pending
/// request with it.
fn kill_with(shared: &Shared, error: Error) {
    let drained: Vec<Pending> = {
        let mut pending = lock(&shared.pending);
        if pending.dead.is_none() {
            pending.dead = Some(error.clone());
        }
        pending.requests.drain().map(|(_, p)| p).collect()
    };
    for p in drained {
        let _ = p.reply.send(Err(error.clone()));
    }
    shared.closed.send_replace(true);
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::ConnectionReset => "connection reset by the broker".to_owned(),
        std::io::ErrorKind::UnexpectedEof => "the broker closed the connection".to_owned(),
        std::io::ErrorKind::InvalidInput => format!("not a HOST:PORT address ({e})"),
        _ => e.to_string(),
    }
}

/// Bytes of queued frames one pass of the writer takes.
const WRITE_BATCH_BYTES: usize = 1 << 20;
/// Writes `pieces` in order with vectored writes, then flushes (a TLS stream buffers what
/// it encrypts until flushed; a TCP socket's flush is a no-op). Written pieces are consumed.
async fn write_pieces<W: AsyncWrite + Unpin>(
    socket: &mut W,
    pieces: &mut Pieces,
) -> std::io::Result<()> {
    while !pieces.is_empty() {
        let written = socket.write_vectored(&pieces.io_slices()).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        pieces.advance(written);
    }
    socket.flush().await
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut socket: W,
    shared: Arc<Shared>,
    mut from_callers: mpsc::Receiver<Outgoing>,
) {
    let mut pieces = Pieces::default();
    let mut notices = Vec::new();
    let mut closed = shared.closed.subscribe();
    loop {
        let first = tokio::select! {
            next = from_callers.recv() => match next {
                Some(outgoing) => outgoing,
                None => break,
            },
            _ = closed.wait_for(|dead| *dead) => break,
        };
        // Take whatever else is already queued too, up to a bound, and write it together.
        let mut next = Some(first);
        while let Some(outgoing) = next.take() {
            outgoing.pieces.into_iter().for_each(|p| pieces.push(p));
            notices.extend(outgoing.written);
            if pieces.bytes() < WRITE_BATCH_BYTES {
                next = from_callers.try_recv().ok();
            }
        }
        let result = write_pieces(&mut socket, &mut pieces).await;
        match result {
            Ok(()) => notices.drain(..).for_each(|n| {
                let _ = n.send(Ok(()));
            }),
            Err(e) => {
                let reason = format!("write failed: {}", io_reason(&e));
                for n in notices.drain(..) {
                    let _ = n.send(Err(Error::Network {
                        addr: shared.addr.clone(),
                        reason: reason.clone(),
                    }));
                }
                kill(&shared, reason);
                break;
            }
        }
    }
    if lock(&shared.pending).dead.is_none() {
        kill(&shared, "the client closed the connection".to_owned());
    }
}

/// Reads response frames until the connection fails. `tls`: the stream is TLS, whose errors
/// are explained ([`crate::tls::explain`]); a plain stream whose first bytes are a TLS
/// record reached a TLS listener. Either ends the connection with [`Error::Tls`].
async fn read_loop<R: AsyncRead + Unpin>(
    mut socket: R,
    shared: Arc<Shared>,
    mut codec: FrameCodec,
    tls: bool,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut closed = shared.closed.subscribe();
    // A plain stream's first two bytes are checked once for a TLS record.
    let mut checked = tls;
    let tls_error = |reason: String| Error::Tls {
        addr: shared.addr.clone(),
        reason,
    };
    let reason = loop {
        if !checked && buf.len() >= 2 {
            checked = true;
            if crate::tls::looks_like_tls(&buf) {
                kill_with(&shared, tls_error(crate::tls::PLAIN_ON_TLS.to_owned()));
                return;
            }
        }
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => match dispatch(&shared, frame) {
                Ok(()) => continue,
                Err(reason) => break reason,
            },
            Ok(None) => {}
            Err(e) => break format!("refused a response frame: {e}"),
        }
        tokio::select! {
            read = socket.read_buf(&mut buf) => match read {
                Ok(0) if buf.is_empty() => break "the broker closed the connection".to_owned(),
                Ok(0) => break format!("the broker closed the connection in the middle of a {}-byte response frame", buf.len()),
                Ok(_) => {}
                Err(e) => match crate::tls::explain(&e, false).filter(|_| tls) {
                    Some(reason) => {
                        kill_with(&shared, tls_error(reason));
                        return;
                    }
                    None => break io_reason(&e),
                },
            },
            _ = closed.wait_for(|dead| *dead) => {
                break "the client closed the connection".to_owned();
            }
        }
    };
    tracing::debug!(addr = %shared.addr, %reason, "connection closed");
    kill(&shared, reason);
}

/// Matches one response frame to its request and decodes it. An error means the stream
/// cannot be trusted any more and the connection must close.
fn dispatch(shared: &Shared, frame: Bytes) -> std::result::Result<(), String> {
    let correlation_id = peek_correlation_id(&frame)
        .map_err(|e| format!("unreadable response frame of {} bytes: {e}", frame.len()))?;
    let Some(pending) = lock(&shared.pending).requests.remove(&correlation_id) else {
        if correlation_id >= shared.next_correlation_id.load(Ordering::Relaxed) {
            return Err(format!(
                "response with correlation id {correlation_id}, which no request carried"
            ));
        }
        // The caller gave up (timeout or cancellation), or the request was a Produce with
        // acks=0 that the broker answered anyway; the answer is dropped.
        tracing::debug!(addr = %shared.addr, correlation_id, "response to an abandoned request");
        return Ok(());
    };
    match Response::decode(pending.api_key, pending.api_version, frame) {
        Ok((header, body)) => {
            let result = match body {
                Some(response) => Ok(response),
                None => Err(top_level_error(
                    pending.api_key,
                    header.error_code,
                    header.error_message,
                )),
            };
            let _ = pending.reply.send(result);
            Ok(())
        }
        Err(e) => {
            let reason = format!("undecodable {} response: {e}", pending.api_key.name());
            let _ = pending.reply.send(Err(Error::Protocol {
                addr: shared.addr.clone(),
                reason: reason.clone(),
            }));
            Err(reason)
        }
    }
}

fn top_level_error(api_key: ApiKey, code: ErrorCode, message: Option<String>) -> Error {
    Error::broker(format!("{} request failed", api_key.name()), code, message)
}

#[cfg(test)]
mod tests;
