//! The connection over TLS: the handshake in the connection's task, the verified client
//! certificate's identity handed to the protocol, and failed handshakes closing only their
//! own connection.

use std::sync::Mutex;

use clap::Parser;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use tokio::net::TcpListener;
use tokio_rustls::TlsConnector;

use super::*;
use crate::config::{resolve, ConfigLayer};
use crate::tls::tests::TestCa;

/// Echoes each frame's payload and records what `opened` was told.
#[derive(Default)]
struct Echo {
    opened: Mutex<Vec<Option<String>>>,
}

impl Protocol for Echo {
    type Started = Bytes;
    type Connection = ();

    fn opened(&self, _peer: SocketAddr, _tls: bool, tls_identity: Option<String>) {
        self.opened.lock().unwrap().push(tls_identity);
    }

    async fn start(&self, _: &mut (), payload: Bytes, _: SocketAddr) -> Start<Bytes> {
        Start::Run(payload)
    }

    /// The payload back, shared into the answer (not copied) when it is long enough; an
    /// even-sized one of at least 20 bytes from a file as a fetch answer's batches can be:
    /// its first 7 bytes copied, the middle a range of a file, the last 9 shared.
    async fn finish(self: Arc<Self>, payload: Bytes) -> Answer {
        let mut out = SplicedFrame::new();
        if payload.len() < 20 || payload.len() % 2 == 1 {
            out.put_shared(&payload);
            return Some(out);
        }
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, b"xyz").unwrap();
        std::io::Write::write_all(&mut file, &payload).unwrap();
        let middle = payload.len() - 16;
        out.head_mut().extend_from_slice(&payload[..7]);
        out.put_file(&FileSlice::new(Arc::new(file), 3 + 7, middle));
        out.put_shared(&payload.slice(7 + middle..));
        Some(out)
    }

    fn refuse_frame(&self, _: &[u8], _: &ProtocolError) -> Answer {
        None
    }

    fn closed(&self, _: ()) {}

    fn api_name(&self, _: &[u8]) -> &'static str {
        "echo"
    }

    fn throttle<'a>(&self, _: &'a ()) -> Option<&'a Throttle> {
        None
    }
}

/// A TLS listener requiring client certificates of `ca`, serving `Echo` on 127.0.0.1:0.
async fn serve_mutual_tls(ca: &TestCa) -> (SocketAddr, Arc<Echo>, watch::Sender<bool>) {
    let (cert, key) = ca.issue("server", &["127.0.0.1"], Some("broker-1"));
    let flags = [
        "sluice-broker",
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-client-ca-file",
        ca.ca_file.to_str().unwrap(),
    ];
    let config = resolve(ConfigLayer::try_parse_from(flags).unwrap()).unwrap();
    serve_echo(Some(TlsAcceptor::from(Arc::clone(
        &config.tls.server.unwrap().0,
    ))))
    .await
}

/// A listener serving `Echo` on 127.0.0.1:0, over TLS when `acceptor` is given.
async fn serve_echo(acceptor: Option<TlsAcceptor>) -> (SocketAddr, Arc<Echo>, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = Arc::new(Echo::default());
    let (stop_tx, stopping) = watch::channel(false);
    let settings = Settings {
        max_in_flight: 4,
        max_frame_bytes: 8 << 20,
        stopping,
        metrics: Metrics::new(),
        listener: "native",
        handshake_timeout: std::time::Duration::from_millis(200),
    };
    let protocol = Arc::clone(&echo);
    tokio::spawn(async move {
        loop {
            let (socket, peer) = listener.accept().await.unwrap();
            let (protocol, settings) = (Arc::clone(&protocol), settings.clone());
            tokio::spawn(serve(protocol, settings, socket, peer, acceptor.clone()));
        }
    });
    (addr, echo, stop_tx)
}

fn connector(ca: &TestCa, client: Option<(&std::path::Path, &std::path::Path)>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::tls::certificates(&ca.ca_file, "--test").unwrap() {
        roots.add(cert).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain = crate::tls::certificates(cert, "--test").unwrap();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

use rustls::pki_types::pem::PemObject;

/// Sends one frame and reads the echoed frame back.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    payload: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream
        .write_all(&(payload.len() as u32).to_be_bytes())
        .await?;
    stream.write_all(payload).await?;
    stream.flush().await?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn mutual_tls_hands_the_client_certificate_identity_to_the_protocol() {
    let ca = TestCa::new();
    let (addr, echo, _stop) = serve_mutual_tls(&ca).await;
    let name = ServerName::try_from("127.0.0.1").unwrap();

    // No client certificate: the handshake fails and the protocol never sees a connection.
    let socket = TcpStream::connect(addr).await.unwrap();
    let refused = match connector(&ca, None).connect(name.clone(), socket).await {
        // TLS 1.3: the client finishes its side first and learns of the refusal on read.
        Ok(mut stream) => round_trip(&mut stream, b"hello").await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate was served");

    // A plaintext client on the TLS listener gets no answer frame, only a close (or an
    // alert), and the listener goes on.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    let answer = round_trip(&mut plain, b"hello").await;
    assert!(answer.is_err(), "{answer:?}");

    // A client certificate from the CA: served, and its CN reaches `opened`.
    let (cert, key) = ca.issue("alice", &["alice.example"], Some("alice"));
    let socket = TcpStream::connect(addr).await.unwrap();
    let mut stream = connector(&ca, Some((&cert, &key)))
        .connect(name.clone(), socket)
        .await
        .unwrap();
    assert_eq!(round_trip(&mut stream, b"hello").await.unwrap(), b"hello");
    // Without a CN the first DNS name is the identity.
    let (cert, key) = ca.issue("bob", &["bob.example"], None);
    let socket = TcpStream::connect(addr).await.unwrap();
    let mut stream = connector(&ca, Some((&cert, &key)))
        .connect(name, socket)
        .await
        .unwrap();
    assert_eq!(round_trip(&mut stream, b"again").await.unwrap(), b"again");
    assert_eq!(
        *echo.opened.lock().unwrap(),
        [Some("alice".to_owned()), Some("bob.example".to_owned())]
    );
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused() {
    let ca = TestCa::new();
    let (addr, echo, _stop) = serve_mutual_tls(&ca).await;
    let other = TestCa::new();
    let (cert, key) = other.issue("mallory", &["mallory.example"], Some("mallory"));
    let socket = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let refused = match connector(&ca, Some((&cert, &key)))
        .connect(name, socket)
        .await
    {
        Ok(mut stream) => round_trip(&mut stream, b"hello").await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a certificate of another CA was accepted");
    assert!(echo.opened.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_closed() {
    let ca = TestCa::new();
    let (addr, echo, _stop) = serve_mutual_tls(&ca).await;
    // Connects and sends nothing: the server closes it once the handshake time is up,
    // rather than holding its connection slot for ever.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = silent.read(&mut byte).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(echo.opened.lock().unwrap().is_empty());
}

/// Sends frames of `sizes` all at once (more than the connection serves at a time) and
/// checks that each comes back whole and in order.
async fn echo_pipelined<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S, sizes: &[usize]) {
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|k| (k * 7 + i) as u8).collect())
        .collect();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let sent = payloads.clone();
    let sending = tokio::spawn(async move {
        for payload in sent {
            writer
                .write_all(&(payload.len() as u32).to_be_bytes())
                .await
                .unwrap();
            writer.write_all(&payload).await.unwrap();
        }
        writer.flush().await.unwrap();
        writer
    });
    for (i, payload) in payloads.iter().enumerate() {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).await.unwrap();
        let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
        reader.read_exact(&mut answer).await.unwrap();
        assert!(
            answer == *payload,
            "answer {i} ({} bytes) differs",
            payload.len()
        );
    }
    sending.await.unwrap();
}

/// Answers whose payload is shared into the frame or a range of a file (as fetched record
/// batches are) are written with vectored writes and `sendfile` (plain TCP) or reads
/// (TLS), several frames at once, partly when the socket is full: every byte arrives, in
/// order, over plain TCP and over TLS.
#[tokio::test]
async fn answers_with_shared_pieces_and_file_ranges_arrive_whole_and_in_order() {
    let sizes = [
        0,
        5,
        4095,
        4096,
        70_000,
        3 << 20,
        10,
        1 << 20,
        4097,
        300,
        8000,
        2 << 20,
    ];
    let (addr, _echo, _stop) = serve_echo(None).await;
    echo_pipelined(TcpStream::connect(addr).await.unwrap(), &sizes).await;

    let ca = TestCa::new();
    let (addr, _echo, _stop) = serve_mutual_tls(&ca).await;
    let (cert, key) = ca.issue("alice", &["alice.example"], Some("alice"));
    let socket = TcpStream::connect(addr).await.unwrap();
    let stream = connector(&ca, Some((&cert, &key)))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), socket)
        .await
        .unwrap();
    echo_pipelined(stream, &sizes).await;
}

/// An answer whose file range was made before its log was truncated is not sent: the
/// writer fails (closing the connection) before a byte of the range goes out.
#[tokio::test]
async fn a_file_range_made_before_a_truncation_is_not_sent() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, &[7u8; 100]).unwrap();
    let truncations = Arc::new(AtomicU64::new(0));
    let slice = FileSlice::new(Arc::new(file), 0, 100).guarded(&truncations);
    let mut frame = SplicedFrame::new();
    frame.head_mut().extend_from_slice(b"head");
    frame.put_file(&slice);
    let mut outbox = Outbox::default();
    outbox.push(frame);
    truncations.fetch_add(1, Ordering::AcqRel);
    let (ours, mut theirs) = tokio::io::duplex(1 << 20);
    let (_, mut writer) = tokio::io::split(ours);
    assert!(outbox.flush(&mut writer).await.is_err());
    drop(writer);
    let mut got = Vec::new();
    theirs.read_to_end(&mut got).await.unwrap();
    assert!(!got.contains(&7), "none of the range was sent: {got:?}");
}
