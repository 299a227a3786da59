//! A connection from this broker to another one, over the native protocol and the peer's
//! one listener: the transport of the controller's Raft messages, and later of replica
//! fetches, heartbeats, registrations and requests forwarded to the active controller.
//!
//! Why sequential (one request in flight) and not pipelined like the client crate's
//! connection: every broker-to-broker conversation is a loop that waits for each answer
//! before it sends the next request (a Raft replication stream, a follower's fetch loop, a
//! heartbeat), so a pipeline would only add a writer task, a pending map and their failure
//! modes. Whoever needs parallelism opens one `PeerConnection` per stream.
//!
//! TLS: when inter-broker TLS is on (`PeerConfig::tls`), every connection is a TLS
//! connection that verifies the peer's certificate against `tls_ca_file` for the host of the
//! peer's own address (an IP SAN for an IP, as in tests on 127.0.0.x), even when an override
//! sends the bytes elsewhere; the broker's own certificate goes out as a client certificate
//! when the peer requires one. The handshake counts against the connect timeout.
//!
//! Cancellation: the socket is taken out of the connection while a call uses it and put
//! back only when the call ends with the stream in a known state. If the caller drops the
//! future mid-call (openraft cancels RPCs that outlive their time to live), the half-used
//! socket is dropped with it and the next call dials again, so a late answer to an
//! abandoned request is never read as the answer to the next one.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_protocol::frame::FRAME_HEADER_LEN;
use sluice_protocol::messages::peek_correlation_id;
use sluice_protocol::{ApiKey, BrokerId, ErrorCode, FrameCodec, Request, RequestHeader, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Decoder;
use tokio_util::either::Either;

/// Initial capacity of a connection's read buffer; a larger frame grows it as it arrives.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// How this broker reaches its peers; one value serves every peer connection.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Names this broker in the peer's logs: `sluice-broker-<node id>`.
    pub client_id: String,
    /// Longest wait for the TCP connection to be established (a call's own timeout may cut
    /// it shorter).
    pub connect_timeout: Duration,
    /// Largest request payload sent and largest response payload accepted: the cluster's
    /// `max_frame_bytes`, which every broker applies to what it receives.
    pub max_frame_bytes: u32,
    /// The address to dial instead of a broker's own (`peer_overrides`, a testing aid that
    /// puts a fault-injecting proxy on each directed link); empty in production.
    pub overrides: BTreeMap<BrokerId, String>,
    /// The local address outgoing sockets are bound to: this node's listen IP, so a peer
    /// sees the connection come from the node's own address. `None`: the kernel chooses.
    pub bind_ip: Option<IpAddr>,
    /// Plain TCP, or TLS to the peers' native listeners (`inter_broker_tls`).
    pub tls: PeerTransport,
}

/// How peer connections are made.
#[derive(Clone, Debug, Default)]
pub enum PeerTransport {
    /// Plain TCP (inter-broker TLS off).
    #[default]
    Plain,
    /// TLS, verifying peers against the CA of `tls_ca_file`.
    Tls(crate::tls::PeerTls),
    /// Inter-broker TLS is on but no `tls_ca_file` was given (a single node needs none until
    /// another broker joins): dialling fails, saying so.
    TlsWithoutCa,
}

impl PeerConfig {
    /// The settings of broker `node_id`, whose client id is `sluice-broker-<node_id>`.
    pub fn new(
        node_id: impl fmt::Display,
        connect_timeout: Duration,
        max_frame_bytes: u32,
    ) -> PeerConfig {
        PeerConfig {
            client_id: format!("sluice-broker-{node_id}"),
            connect_timeout,
            max_frame_bytes,
            overrides: BTreeMap::new(),
            bind_ip: None,
            tls: PeerTransport::Plain,
        }
    }

    /// The address to dial to reach broker `peer`, whose own address (from the voters or
    /// its advertised listener) is `address`. Every broker-to-broker connection is dialled
    /// through here ([`PeerConnection::new`]), so an override covers all of them.
    pub fn dial_address(&self, peer: BrokerId, address: &str) -> String {
        self.overrides
            .get(&peer)
            .cloned()
            .unwrap_or_else(|| address.to_owned())
    }

    /// The local address to bind a socket to `target` to, if any. A loopback IP is not
    /// used for a target elsewhere (the kernel could not route it), nor an IP of the other
    /// family.
    fn bind_address(&self, target: SocketAddr) -> Option<SocketAddr> {
        let ip = self.bind_ip?;
        let usable = ip.is_ipv4() == target.is_ipv4()
            && !ip.is_unspecified()
            && (!ip.is_loopback() || target.ip().is_loopback());
        usable.then(|| SocketAddr::new(ip, 0))
    }
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No TCP connection could be established: the peer is down, unreachable, or the
    /// address is wrong.
    #[error("cannot connect to broker {addr}: {reason}")]
    Connect {
        /// The peer's `HOST:PORT`.
        addr: String,
        /// What went wrong, for a human.
        reason: String,
        /// The peer's host refused the connection: nothing listens at the address.
        refused: bool,
    },
    /// The connection failed while the request was being sent or its answer read (reset,
    /// closed by the peer).
    #[error("connection to broker {addr} failed during {api}: {reason}")]
    Io {
        /// The peer's `HOST:PORT`.
        addr: String,
        /// The api of the request.
        api: &'static str,
        /// What went wrong, for a human.
        reason: String,
    },
    /// No answer arrived in time; the request may or may not have been served.
    #[error("no answer to {api} from broker {addr} within {} ms", timeout.as_millis())]
    Timeout {
        /// The peer's `HOST:PORT`.
        addr: String,
        /// The api of the request.
        api: &'static str,
        /// The call's timeout.
        timeout: Duration,
    },
    /// The peer's answer could not be decoded or does not answer the request (wrong
    /// correlation id, a frame over the maximum): the two brokers disagree on the protocol.
    #[error("broker {addr} sent an unusable answer to {api}: {reason}; check that all brokers run the same version")]
    Protocol {
        /// The peer's `HOST:PORT`.
        addr: String,
        /// The api of the request.
        api: &'static str,
        /// What was wrong with the answer.
        reason: String,
    },
    /// The peer answered with a top-level error: it could not serve the request at all.
    #[error("{}: {message}", code.name())]
    Api {
        /// The peer's error code.
        code: ErrorCode,
        /// The peer's explanation (or the code's own message when it sent none).
        message: String,
    },
    /// The request's payload is larger than `max_frame_bytes`; nothing was sent.
    #[error("a {api} request of {bytes} bytes exceeds the maximum frame of {max} bytes")]
    RequestTooLarge {
        /// The api of the request.
        api: &'static str,
        /// The payload's size.
        bytes: u64,
        /// `max_frame_bytes`.
        max: u32,
    },
    /// The request could not be encoded (a field too long for its length prefix); nothing
    /// was sent.
    #[error("cannot encode a {api} request: {source}")]
    Encode {
        /// The api of the request.
        api: &'static str,
        /// The codec's refusal.
        source: sluice_protocol::Error,
    },
}

impl PeerError {
    /// Whether the same call may succeed if retried after a short wait: the peer was
    /// unreachable or slow, or answered with a retriable code. A protocol disagreement or a
    /// request that cannot be sent will fail the same way again.
    pub fn is_retriable(&self) -> bool {
        match self {
            PeerError::Connect { .. } | PeerError::Io { .. } | PeerError::Timeout { .. } => true,
            PeerError::Api { code, .. } => code.is_retriable(),
            PeerError::Protocol { .. }
            | PeerError::RequestTooLarge { .. }
            | PeerError::Encode { .. } => false,
        }
    }

    /// Whether the failure shows that no broker process serves at the peer's address: the
    /// connection was refused, or one just made was closed or reset before the answer
    /// (what a proxy in front of a dead process does). A timeout shows nothing: the peer
    /// may be hung, slow, or cut off.
    pub fn shows_peer_gone(&self) -> bool {
        matches!(
            self,
            PeerError::Connect { refused: true, .. } | PeerError::Io { .. }
        )
    }
}

/// A connection to a peer: plain TCP or TLS.
type PeerStream = Either<TcpStream, TlsStream<TcpStream>>;

/// An open socket and the bytes read from it that no answer has used yet.
struct Open {
    socket: PeerStream,
    read_buffer: BytesMut,
}

/// A sequential request/response client to one peer broker. It dials lazily, on the first
/// call and after any failure that left the stream in an unknown state.
pub struct PeerConnection {
    addr: String,
    /// The host of the peer's own address, which its TLS certificate must name.
    server_name: String,
    config: PeerConfig,
    /// `None` while disconnected and while a call holds the socket (see the module doc).
    open: Option<Open>,
    /// The correlation id of the next request; wraps around, which is harmless because
    /// only one request is ever in flight.
    next_correlation_id: u32,
}

impl PeerConnection {
    /// A connection to broker `peer`, whose address (`HOST:PORT`, from the voters or its
    /// advertised listener) is `addr`, unless `config` overrides it; nothing is dialled
    /// until the first call.
    pub fn new(peer: BrokerId, addr: &str, config: PeerConfig) -> PeerConnection {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        PeerConnection {
            server_name: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            addr: config.dial_address(peer, addr),
            config,
            open: None,
            next_correlation_id: 1,
        }
    }

    /// The address dialled: the peer's own, or its override.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether a socket is open (the next call will not dial).
    pub fn is_connected(&self) -> bool {
        self.open.is_some()
    }

    /// Sends `request` and returns the peer's answer. The whole call, dialling included,
    /// ends within `timeout`. A top-level error in the answer is [`PeerError::Api`] (the
    /// connection stays usable); any other failure closes the socket, so the next call
    /// dials again.
    pub async fn call(
        &mut self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, PeerError> {
        let deadline = Instant::now() + timeout;
        let api_key = request.api_key();
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = self.encode(&request, correlation_id)?;
        let mut open = match self.open.take() {
            Some(open) => open,
            None => self.connect(deadline, api_key).await?,
        };
        let mut codec = FrameCodec::new(self.config.max_frame_bytes);
        let payload = match tokio::time::timeout_at(
            deadline,
            exchange(&mut open, &frame, &mut codec),
        )
        .await
        {
            Ok(Ok(payload)) => payload,
            Ok(Err(failure)) => return Err(self.exchange_error(api_key, failure)),
            Err(_) => {
                return Err(PeerError::Timeout {
                    addr: self.addr.clone(),
                    api: api_key.name(),
                    timeout,
                })
            }
        };
        let answer = self.decode(api_key, correlation_id, payload);
        // A top-level error leaves the stream in step; an unusable answer, or bytes after
        // the one answer owed, mean it cannot be trusted any more.
        let in_step = !matches!(answer, Err(PeerError::Protocol { .. }));
        if in_step && open.read_buffer.is_empty() {
            self.open = Some(open);
        } else if in_step {
            tracing::debug!(addr = %self.addr, "peer sent bytes nobody asked for; reconnecting");
        }
        answer
    }

    /// Encodes the whole frame, length prefix included.
    fn encode(&self, request: &Request, correlation_id: u32) -> Result<Bytes, PeerError> {
        let api_key = request.api_key();
        let header = RequestHeader::new(api_key, correlation_id, self.config.client_id.clone());
        let mut frame = BytesMut::new();
        frame.put_u32(0);
        request
            .encode(&header, &mut frame)
            .map_err(|source| PeerError::Encode {
                api: api_key.name(),
                source,
            })?;
        let payload_len = (frame.len() - FRAME_HEADER_LEN) as u64;
        if payload_len > u64::from(self.config.max_frame_bytes) {
            return Err(PeerError::RequestTooLarge {
                api: api_key.name(),
                bytes: payload_len,
                max: self.config.max_frame_bytes,
            });
        }
        // Fits: at most max_frame_bytes, a u32.
        frame[..FRAME_HEADER_LEN].copy_from_slice(&(payload_len as u32).to_be_bytes());
        Ok(frame.freeze())
    }

    /// Dials the peer (and completes the TLS handshake, with TLS) within the connect timeout
    /// and what is left of the call's.
    async fn connect(&self, deadline: Instant, api_key: ApiKey) -> Result<Open, PeerError> {
        let limit = self
            .config
            .connect_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let fail = |reason, refused| PeerError::Connect {
            addr: self.addr.clone(),
            reason,
            refused,
        };
        let socket = match tokio::time::timeout(limit, self.dial()).await {
            Ok(Ok(socket)) => socket,
            Ok(Err(e)) => {
                let refused = e.kind() == std::io::ErrorKind::ConnectionRefused;
                return Err(fail(io_reason(&e), refused));
            }
            Err(_) => {
                let reason = format!("no answer within {} ms", limit.as_millis());
                return Err(fail(reason, false));
            }
        };
        // Requests between brokers are small and each waits for its answer: latency
        // matters more than packet count.
        let _ = socket.set_nodelay(true);
        let socket = match &self.config.tls {
            PeerTransport::Plain => Either::Left(socket),
            PeerTransport::TlsWithoutCa => {
                let reason = "inter-broker TLS is on, but this broker has no CA to verify the \
                              peer's certificate with; pass --tls-ca-file FILE"
                    .to_owned();
                return Err(fail(reason, false));
            }
            PeerTransport::Tls(tls) => {
                let handshake = self.handshake(tls, socket);
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(limit.min(left), handshake).await {
                    Ok(Ok(stream)) => Either::Right(stream),
                    Ok(Err(e)) => return Err(self.handshake_error(e, api_key)),
                    Err(_) => {
                        let reason = format!("no TLS handshake within {} ms", limit.as_millis());
                        return Err(fail(reason, false));
                    }
                }
            }
        };
        Ok(Open {
            socket,
            read_buffer: BytesMut::with_capacity(READ_BUFFER_BYTES),
        })
    }

    async fn handshake(
        &self,
        tls: &crate::tls::PeerTls,
        socket: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = rustls::pki_types::ServerName::try_from(self.server_name.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        TlsConnector::from(std::sync::Arc::clone(&tls.0))
            .connect(name, socket)
            .await
    }

    /// A failed handshake: a connection closed or reset during it is what a proxy in front
    /// of a dead process does (`PeerError::Io`, evidence the peer is gone, as for a plain
    /// connection closed before its answer); a refused certificate is a configuration
    /// error, said with the flags to check.
    fn handshake_error(&self, e: std::io::Error, api_key: ApiKey) -> PeerError {
        use std::io::ErrorKind;
        let closed = matches!(
            e.kind(),
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        );
        if closed {
            return PeerError::Io {
                addr: self.addr.clone(),
                api: api_key.name(),
                reason: format!("the peer closed the connection during the TLS handshake ({e})"),
            };
        }
        PeerError::Connect {
            addr: self.addr.clone(),
            reason: format!(
                "TLS handshake failed: {e}; check that --tls-ca-file names the CA of the peer's \
                 certificate, that the certificate names {:?}, and that the peer accepts this \
                 broker's certificate (--tls-client-ca-file)",
                self.server_name
            ),
            refused: false,
        }
    }

    /// Resolves the address and connects to the first of its IPs that accepts, from this
    /// node's own IP when one is configured.
    async fn dial(&self) -> std::io::Result<TcpStream> {
        let mut last_error = None;
        for target in tokio::net::lookup_host(&self.addr).await? {
            let attempt = match self.config.bind_address(target) {
                Some(local) => connect_from(local, target).await,
                None => TcpStream::connect(target).await,
            };
            match attempt {
                Ok(stream) => return Ok(stream),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| std::io::Error::other("the name resolved to no address")))
    }

    /// Checks that `payload` answers the request and decodes it.
    fn decode(
        &self,
        api_key: ApiKey,
        correlation_id: u32,
        payload: Bytes,
    ) -> Result<Response, PeerError> {
        let protocol = |reason: String| PeerError::Protocol {
            addr: self.addr.clone(),
            api: api_key.name(),
            reason,
        };
        let answered = peek_correlation_id(&payload).map_err(|e| protocol(e.to_string()))?;
        if answered != correlation_id {
            return Err(protocol(format!(
                "the answer carries correlation id {answered}, the request {correlation_id}"
            )));
        }
        let (header, body) = Response::decode(api_key, api_key.max_version(), payload)
            .map_err(|e| protocol(e.to_string()))?;
        body.ok_or_else(|| PeerError::Api {
            code: header.error_code,
            message: header
                .error_message
                .unwrap_or_else(|| header.error_code.message().to_owned()),
        })
    }

    fn exchange_error(&self, api_key: ApiKey, failure: ExchangeFailure) -> PeerError {
        let addr = self.addr.clone();
        let api = api_key.name();
        match failure {
            ExchangeFailure::Io(reason) => PeerError::Io { addr, api, reason },
            ExchangeFailure::Protocol(reason) => PeerError::Protocol { addr, api, reason },
        }
    }
}

impl fmt::Debug for PeerConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConnection")
            .field("addr", &self.addr)
            .field("connected", &self.open.is_some())
            .finish()
    }
}

/// Why one request/answer exchange failed.
enum ExchangeFailure {
    /// The socket failed or closed.
    Io(String),
    /// The peer sent a frame the codec refused.
    Protocol(String),
}

/// Writes one request frame and reads exactly one answer frame.
async fn exchange(
    open: &mut Open,
    frame: &[u8],
    codec: &mut FrameCodec,
) -> Result<Bytes, ExchangeFailure> {
    let io = |e: std::io::Error| ExchangeFailure::Io(io_reason(&e));
    open.socket.write_all(frame).await.map_err(io)?;
    loop {
        match codec.decode(&mut open.read_buffer) {
            Ok(Some(payload)) => return Ok(payload),
            Ok(None) => {}
            Err(e) => return Err(ExchangeFailure::Protocol(e.to_string())),
        }
        let read = open
            .socket
            .read_buf(&mut open.read_buffer)
            .await
            .map_err(io)?;
        if read == 0 {
            return Err(ExchangeFailure::Io(if open.read_buffer.is_empty() {
                "the peer closed the connection".to_owned()
            } else {
                format!(
                    "the peer closed the connection in the middle of a frame ({} bytes received)",
                    open.read_buffer.len()
                )
            }));
        }
    }
}

/// Connects to `target` from the local address `local` (port 0: any free port).
async fn connect_from(local: SocketAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(local)?;
    socket.connect(target).await
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::ConnectionReset => "connection reset by the peer".to_owned(),
        std::io::ErrorKind::InvalidInput => format!("not a HOST:PORT address ({e})"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
