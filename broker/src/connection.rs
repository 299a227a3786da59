//! One client connection: read frames, serve requests concurrently, answer in order. The
//! framing (a big-endian `u32` length, then the payload) is the same for the native and the
//! Kafka protocol; what a frame means is the [`Protocol`]'s business.
//!
//! Shape: the reading half decodes frames from a `BytesMut` ("incomplete frame" is the
//! normal state between reads) and hands each to the protocol's ordered phase
//! ([`Protocol::start`], awaited before the next frame is read: produce appends and topic
//! administration happen in request order), then spawns the rest ([`Protocol::finish`])
//! as a task. Each task's answer travels through a oneshot whose receiver is queued, in
//! request order, on a bounded channel to the writing half. The writer awaits the
//! receivers in order, so responses leave in request order however the tasks finish
//! (pipelining), and the channel's bound is the connection's in-flight limit: when it is
//! full the reader stops reading, pushing back on the client through TCP.
//!
//! Transport: plain TCP (the socket's owned halves) or TLS (`tokio_rustls`, the stream split
//! with `tokio::io::split`); the serving code is generic over the two halves, so the plain
//! path pays nothing for TLS. A TLS handshake runs in the connection's own task within
//! `tls::HANDSHAKE_TIMEOUT`; one that fails or times out closes only its connection. The
//! protocol's per-connection state is made by [`Protocol::opened`] with what the transport
//! knows: the peer's address and, under mutual TLS, the verified client certificate's
//! identity.
//!
//! Bad input only ends its own connection: an undecodable body gets an error response
//! (the header gave a correlation id); an undecodable header, an oversized frame or a
//! stream cut mid-frame closes the connection after the answers already owed are sent.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sluice_protocol::frame::{Pieces, SplicedFrame, FRAME_HEADER_LEN, WRITE_PIECES_MAX};
use sluice_protocol::{Error as ProtocolError, FileSlice, FrameCodec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Decoder;

use crate::metrics::Metrics;

/// A response frame owed to the client (its length prefix is filled in when written), or
/// nothing (acks=0).
pub type Answer = Option<SplicedFrame>;

/// How long a refused frame's request header is waited for.
const REFUSED_HEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a refused connection is drained before it closes.
const REFUSED_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);
/// Most bytes drained from a refused connection.
const REFUSED_DRAIN_BYTES_MAX: usize = 16 << 20;
/// Initial capacity of the read buffer; frames larger than this grow it as they arrive.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Bytes of a request header a refused frame's answer may need (api key, version,
/// correlation id).
const REQUEST_HEADER_PEEK: usize = 8;

/// What the ordered phase of a request decided.
pub enum Start<S> {
    /// Run the rest of the request concurrently.
    Run(S),
    /// Already answered (a request refused when decoded).
    Answered(Answer),
    /// The frame makes no sense: close the connection (after the answers owed).
    Close,
}

/// A listener's protocol: what its request frames mean.
pub trait Protocol: Send + Sync + 'static {
    /// A request after its ordered phase.
    type Started: Send + 'static;
    /// What the protocol remembers about one connection.
    type Connection: Send;

    /// The state of a connection just opened from `peer`, over TLS or not (`tls`).
    /// `tls_identity` is the verified
    /// client certificate's identity under mutual TLS (its subject CN, else its first DNS
    /// name: `tls::identity`), `None` on a plain listener or a TLS one without client
    /// certificates. The seam through which authentication learns who is connected.
    fn opened(&self, peer: SocketAddr, tls: bool, tls_identity: Option<String>)
        -> Self::Connection;

    /// Decodes a frame's payload and runs the request's ordered phase.
    fn start(
        &self,
        connection: &mut Self::Connection,
        payload: Bytes,
        peer: SocketAddr,
    ) -> impl Future<Output = Start<Self::Started>> + Send;

    /// The rest of a request, run concurrently with later ones; its answer.
    fn finish(self: Arc<Self>, started: Self::Started) -> impl Future<Output = Answer> + Send;

    /// The answer to a frame refused for its size, given the start of its payload
    /// (`REQUEST_HEADER_PEEK` bytes when they arrived), if the protocol can give one.
    fn refuse_frame(&self, payload_start: &[u8], error: &ProtocolError) -> Answer;

    /// The connection closed, after every answer owed was sent.
    fn closed(&self, connection: Self::Connection);

    /// The metrics label of a request's api (`produce`, `join_group`...), from the start
    /// of its payload (both protocols begin with the api key); `unknown` if none.
    fn api_name(&self, payload: &[u8]) -> &'static str;

    /// The connection's throttle: no further request of it is read before it has passed.
    fn throttle<'a>(&self, connection: &'a Self::Connection) -> Option<&'a Throttle>;
}

/// When a connection's client may send its next request: a client over its quota
/// ([`crate::services::quotas`]) is held back, as Kafka mutes its channel. Shared between
/// the connection and the requests it is serving, which may extend it.
#[derive(Clone, Debug, Default)]
pub struct Throttle(Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl Throttle {
    /// Holds the connection back for `wait` from now, unless it already is for longer.
    pub fn extend(&self, wait: std::time::Duration) {
        if wait.is_zero() {
            return;
        }
        let until = std::time::Instant::now() + wait;
        let mut held = self.0.lock().expect("throttle lock");
        if held.is_none_or(|h| h < until) {
            *held = Some(until);
        }
    }

    /// Until when the connection is held back, if it is.
    fn until(&self) -> Option<std::time::Instant> {
        let held = *self.0.lock().expect("throttle lock");
        held.filter(|h| *h > std::time::Instant::now())
    }
}

/// The settings a connection runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Requests of one connection being served at once.
    pub max_in_flight: usize,
    /// Largest frame accepted.
    pub max_frame_bytes: u32,
    /// Turns true when the broker shuts down: the connection stops reading.
    pub stopping: watch::Receiver<bool>,
    /// Where connections and requests are counted.
    pub metrics: Arc<Metrics>,
    /// The listener's name in the metrics (`native`, `kafka`).
    pub listener: &'static str,
    /// How long a TLS client may take to complete its handshake (`tls::HANDSHAKE_TIMEOUT`).
    pub handshake_timeout: std::time::Duration,
}

/// Serves one connection until the client closes it, it misbehaves, or shutdown begins;
/// with `tls`, after a TLS handshake (which must complete within
/// `settings.handshake_timeout`).
pub async fn serve<P: Protocol>(
    protocol: Arc<P>,
    settings: Settings,
    socket: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
) {
    let _ = socket.set_nodelay(true);
    let Some(acceptor) = tls else {
        let (reader, writer) = socket.into_split();
        let connection = protocol.opened(peer, false, None);
        return serve_stream(protocol, settings, reader, writer, peer, connection).await;
    };
    let mut stopping = settings.stopping.clone();
    let handshake = tokio::time::timeout(settings.handshake_timeout, acceptor.accept(socket));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::info!(%peer, listener = settings.listener, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::info!(
                    %peer,
                    listener = settings.listener,
                    "TLS handshake not completed within {:?}; closing",
                    settings.handshake_timeout
                );
                return;
            }
        },
        _ = stopping.wait_for(|s| *s) => return,
    };
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(crate::tls::identity);
    if let Some(identity) = &identity {
        tracing::debug!(%peer, listener = settings.listener, "TLS client certificate of {identity:?}");
    }
    let connection = protocol.opened(peer, true, identity);
    let (reader, writer) = tokio::io::split(stream);
    serve_stream(protocol, settings, reader, writer, peer, connection).await;
}

/// Serves one connection over its two halves (see [`serve`]).
async fn serve_stream<P, R, W>(
    protocol: Arc<P>,
    settings: Settings,
    mut reader: R,
    writer: W,
    peer: SocketAddr,
    mut connection: P::Connection,
) where
    P: Protocol,
    R: AsyncRead + Unpin,
    W: AnswerWriter,
{
    let _open = settings.metrics.connection_opened(settings.listener);
    let (answers_tx, answers_rx) =
        mpsc::channel::<oneshot::Receiver<Answer>>(settings.max_in_flight);
    let writing = tokio::spawn(write_answers(writer, answers_rx));
    let mut codec = FrameCodec::new(settings.max_frame_bytes);
    let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut stopping = settings.stopping;
    let mut refused = false;
    'read: loop {
        loop {
            if let Some(until) = protocol.throttle(&connection).and_then(Throttle::until) {
                tokio::select! {
                    () = tokio::time::sleep_until(until.into()) => {}
                    _ = stopping.wait_for(|s| *s) => break 'read,
                }
            }
            match codec.decode(&mut buffer) {
                Ok(Some(payload)) => {
                    let served = serve_frame(
                        &protocol,
                        &mut connection,
                        payload,
                        peer,
                        &answers_tx,
                        &settings.metrics,
                    )
                    .await;
                    if !served {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    refuse_frame(&*protocol, &mut reader, &mut buffer, &e, peer, &answers_tx).await;
                    refused = true;
                    break 'read;
                }
            }
        }
        if buffer.capacity() - buffer.len() < 4096 {
            buffer.reserve(READ_BUFFER_BYTES);
        }
        tokio::select! {
            read = reader.read_buf(&mut buffer) => match read {
                Ok(0) => {
                    if !buffer.is_empty() {
                        tracing::debug!(%peer, "connection closed mid-frame ({} bytes buffered)", buffer.len());
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(%peer, "read failed: {e}");
                    break;
                }
            },
            _ = stopping.wait_for(|s| *s) => break,
        }
    }
    drop(answers_tx);
    // Answers already owed are still sent before the connection closes.
    let _ = writing.await;
    protocol.closed(connection);
    if refused {
        drain(&mut reader).await;
    }
}

/// A frame of a request: its ordered phase now, the rest on a task whose answer is queued
/// in request order. Returns false when the connection must close (the writer is gone, or
/// the protocol gave up on the frame).
async fn serve_frame<P: Protocol>(
    protocol: &Arc<P>,
    connection: &mut P::Connection,
    payload: Bytes,
    peer: SocketAddr,
    answers: &mpsc::Sender<oneshot::Receiver<Answer>>,
    metrics: &Arc<Metrics>,
) -> bool {
    let (tx, rx) = oneshot::channel();
    if answers.send(rx).await.is_err() {
        return false; // The writer failed: the client is gone.
    }
    let api = protocol.api_name(&payload);
    let started_at = std::time::Instant::now();
    match protocol.start(connection, payload, peer).await {
        Start::Run(started) => {
            let protocol = Arc::clone(protocol);
            let metrics = Arc::clone(metrics);
            tokio::spawn(async move {
                let answer = protocol.finish(started).await;
                metrics.request(api, started_at.elapsed());
                let _ = tx.send(answer);
            });
            true
        }
        Start::Answered(answer) => {
            metrics.request(api, started_at.elapsed());
            let _ = tx.send(answer);
            true
        }
        Start::Close => {
            let _ = tx.send(None);
            false
        }
    }
}

/// A frame refused from its length alone (too large): queues the protocol's answer, if it
/// has one. The request header that follows may not have arrived yet; it is waited for
/// briefly, so the refusal carries its correlation id and the client can read it.
async fn refuse_frame<P: Protocol, R: AsyncRead + Unpin>(
    protocol: &P,
    reader: &mut R,
    buffer: &mut BytesMut,
    error: &ProtocolError,
    peer: SocketAddr,
    answers: &mpsc::Sender<oneshot::Receiver<Answer>>,
) {
    let _ = tokio::time::timeout(REFUSED_HEADER_WAIT, async {
        while buffer.len() < FRAME_HEADER_LEN + REQUEST_HEADER_PEEK {
            match reader.read_buf(buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    if buffer.starts_with(&[0x16, 0x03]) {
        // A TLS ClientHello read as a frame length: a TLS client on a plain listener.
        tracing::info!(%peer, "closing connection: a TLS handshake on a plain listener");
    } else {
        tracing::warn!(%peer, "closing connection: {error}");
    }
    let start = buffer.get(FRAME_HEADER_LEN..).unwrap_or_default();
    let peek = &start[..start.len().min(REQUEST_HEADER_PEEK)];
    if let Some(answer) = protocol.refuse_frame(peek, error) {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Some(answer));
        let _ = answers.send(rx).await;
    }
}

/// Closing a socket with unread input sends a reset, which can destroy the error answer
/// before the client reads it. Once the writer has sent FIN, reads and drops what the
/// client still sends, for a bounded time and amount, before the socket closes.
async fn drain<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut scratch = vec![0u8; 64 * 1024];
    let mut drained = 0usize;
    let _ = tokio::time::timeout(REFUSED_DRAIN_TIME, async {
        while drained < REFUSED_DRAIN_BYTES_MAX {
            match reader.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// Writes answers in request order, several frames' pieces per vectored write: queued
/// answers go out together before waiting on one that is not ready yet (a long poll must
/// not hold back the answers queued before it) and whenever no further answer is queued.
/// Record batches shared into a frame ([`SplicedFrame`]) go from the log's read buffer to
/// the socket without another copy.
async fn write_answers<W: AnswerWriter>(
    mut writer: W,
    mut answers: mpsc::Receiver<oneshot::Receiver<Answer>>,
) {
    use tokio::sync::oneshot::error::TryRecvError;
    let mut outbox = Outbox::default();
    while let Some(mut answer) = answers.recv().await {
        let answer = match answer.try_recv() {
            Ok(ready) => ready,
            Err(TryRecvError::Empty) => {
                if outbox.flush(&mut writer).await.is_err() {
                    return;
                }
                match answer.await {
                    Ok(ready) => ready,
                    Err(_) => return,
                }
            }
            // The request task died (a bug, already logged by tokio); the order is broken.
            Err(TryRecvError::Closed) => return,
        };
        if let Some(frame) = answer {
            outbox.push(frame);
        }
        if (answers.is_empty() || outbox.full()) && outbox.flush(&mut writer).await.is_err() {
            return;
        }
    }
    let _ = outbox.flush(&mut writer).await;
    let _ = writer.shutdown().await;
}

/// Frames' pieces waiting to be written.
#[derive(Default)]
struct Outbox {
    pieces: Pieces,
}

/// Bytes an outbox holds before it is written whatever else is queued.
const OUTBOX_BYTES_MAX: usize = 1 << 20;

impl Outbox {
    fn push(&mut self, frame: SplicedFrame) {
        self.pieces.push_frame(frame);
    }

    fn full(&self) -> bool {
        self.pieces.bytes() >= OUTBOX_BYTES_MAX || self.pieces.len() >= WRITE_PIECES_MAX
    }

    /// Writes every piece, then flushes the writer (a TLS stream holds what it encrypted
    /// until then).
    async fn flush<W: AnswerWriter>(&mut self, writer: &mut W) -> std::io::Result<()> {
        while !self.pieces.is_empty() {
            let written = match self.pieces.front_file() {
                Some(slice) if !slice.is_current() => {
                    // Truncated in place since it was read: it may hold other bytes now.
                    return Err(std::io::Error::other(
                        "the log was truncated under an answer's records; closing the \
                         connection rather than sending what the file holds now",
                    ));
                }
                Some(slice) => writer.write_file(slice).await?,
                None => {
                    let more = self.pieces.file_follows();
                    writer.write_pieces(&self.pieces.io_slices(), more).await?
                }
            };
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.pieces.advance(written);
        }
        writer.flush().await
    }
}

/// The writing half of a connection: bytes, and record batches in a segment file
/// ([`FileSlice`]), which plain TCP sends from the page cache (`sendfile`: no read into
/// memory, no copy into the socket) and TLS, which encrypts in user space, reads first.
pub(crate) trait AnswerWriter: AsyncWrite + Unpin + Send + 'static {
    /// Writes from the front of `slice`; how many bytes went.
    fn write_file(
        &mut self,
        slice: &FileSlice,
    ) -> impl Future<Output = std::io::Result<usize>> + Send {
        async move {
            let bytes = slice.first(FILE_READ_CHUNK_BYTES_MAX).read()?;
            self.write_all(&bytes).await?;
            Ok(bytes.len())
        }
    }

    /// Writes `slices` with one vectored write; `more`: a file range follows at once.
    fn write_pieces(
        &mut self,
        slices: &[std::io::IoSlice<'_>],
        more: bool,
    ) -> impl Future<Output = std::io::Result<usize>> + Send {
        let _ = more;
        async move { self.write_vectored(slices).await }
    }
}

/// Most of a file range a TLS writer reads into memory at once.
const FILE_READ_CHUNK_BYTES_MAX: usize = 256 << 10;

impl<S: AsyncRead + AsyncWrite + Send + 'static> AnswerWriter for tokio::io::WriteHalf<S> {}

impl AnswerWriter for tokio::net::tcp::OwnedWriteHalf {
    /// `sendfile(2)` from the segment file: its pages go to the socket without being read
    /// into memory. A file that ends before the range (truncated under the answer) fails
    /// the connection: its frame can no longer be completed.
    async fn write_file(&mut self, slice: &FileSlice) -> std::io::Result<usize> {
        let socket: &TcpStream = self.as_ref();
        let sent = write_when_ready(socket, || {
            let mut offset = slice.position() as libc::off_t;
            // SAFETY: both descriptors are open for the call (the socket is borrowed, the
            // file held by the slice); sendfile reads `offset` and writes it back.
            let n = unsafe {
                libc::sendfile(
                    socket.as_raw_fd(),
                    slice.file().as_raw_fd(),
                    &mut offset,
                    slice.len(),
                )
            };
            written(n)
        })
        .await?;
        if sent == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "a segment file ends before the records an answer sends from it (the log \
                 was truncated)",
            ));
        }
        Ok(sent)
    }

    /// `sendmsg` with `MSG_MORE` when a file range follows, so the frame's head and its
    /// records leave in full segments rather than the head alone (`TCP_NODELAY` is on).
    async fn write_pieces(
        &mut self,
        slices: &[std::io::IoSlice<'_>],
        more: bool,
    ) -> std::io::Result<usize> {
        if !more {
            return self.write_vectored(slices).await;
        }
        let socket: &TcpStream = self.as_ref();
        write_when_ready(socket, || {
            // SAFETY: an all-zero msghdr is valid; the iovecs point at `slices`, which
            // outlive the call (IoSlice is ABI-compatible with iovec on Unix).
            let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
            message.msg_iov = slices.as_ptr() as *mut libc::iovec;
            message.msg_iovlen = slices.len() as _;
            // SAFETY: `message` is valid for the call.
            let n = unsafe {
                libc::sendmsg(
                    socket.as_raw_fd(),
                    &message,
                    libc::MSG_MORE | libc::MSG_NOSIGNAL,
                )
            };
            written(n)
        })
        .await
    }
}

/// Runs a non-blocking write system call on `socket` until it goes through: waits while
/// the socket is full, retries when interrupted.
async fn write_when_ready(
    socket: &TcpStream,
    mut write: impl FnMut() -> std::io::Result<usize>,
) -> std::io::Result<usize> {
    loop {
        socket.writable().await?;
        match socket.try_io(tokio::io::Interest::WRITABLE, &mut write) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            done => return done,
        }
    }
}

/// A write system call's result: bytes written, or the OS error.
fn written(n: isize) -> std::io::Result<usize> {
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

#[cfg(test)]
mod tests;
