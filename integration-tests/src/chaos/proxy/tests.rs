//! The proxy in front of an echo server on 127.0.0.1:0: forwarding, both kinds of cut,
//! healing, delay. Waits for what must happen are generous; a check that something does
//! *not* cross a cut link waits a short while, which can only make it pass too easily,
//! never fail wrongly.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Cut, Proxy, ProxyConfig};

/// Long enough for anything that must arrive.
const ARRIVES: Duration = Duration::from_secs(10);
/// How long a check that nothing crosses watches.
const NOTHING_FOR: Duration = Duration::from_millis(300);

/// An echo server that records where each connection came from.
struct Echo {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<IpAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&peers);
        let task = tokio::spawn(async move {
            while let Ok((mut socket, from)) = listener.accept().await {
                seen.lock().unwrap().push(from.ip());
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                    let _ = write.shutdown().await;
                });
            }
        });
        Echo { addr, peers, task }
    }

    fn connections(&self) -> usize {
        self.peers.lock().unwrap().len()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_to(echo: &Echo) -> Proxy {
    Proxy::start(ProxyConfig::to(echo.addr)).await.unwrap()
}

/// Reads exactly `n` bytes within [`ARRIVES`].
async fn read_n(socket: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buffer = vec![0; n];
    tokio::time::timeout(ARRIVES, socket.read_exact(&mut buffer))
        .await
        .expect("the bytes arrive in time")
        .expect("the connection stays up");
    buffer
}

/// Whether nothing at all (not even EOF) arrives for [`NOTHING_FOR`].
async fn nothing_arrives(socket: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(NOTHING_FOR, socket.read(&mut byte))
        .await
        .is_err()
}

/// Whether the connection ends (EOF or an error such as a reset) within [`ARRIVES`].
async fn ends(socket: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    loop {
        match tokio::time::timeout(ARRIVES, socket.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn round_trip(socket: &mut TcpStream, text: &str) {
    socket.write_all(text.as_bytes()).await.unwrap();
    assert_eq!(read_n(socket, text.len()).await, text.as_bytes());
}

#[tokio::test]
async fn forwards_both_ways_from_the_source_ip_and_passes_a_half_close() {
    let echo = Echo::start().await;
    let proxy = Proxy::start(ProxyConfig {
        source_ip: Some("127.0.0.5".parse().unwrap()),
        ..ProxyConfig::to(echo.addr)
    })
    .await
    .unwrap();
    assert_eq!(proxy.target(), echo.addr);
    let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut socket, "hello").await;
    socket.write_all(b" world").await.unwrap();
    socket.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(ARRIVES, socket.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, b" world");
    assert_eq!(
        echo.peers.lock().unwrap().as_slice(),
        &["127.0.0.5".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(proxy.connections_accepted(), 1);
    assert_eq!(proxy.bytes_forwarded(), 2 * "hello world".len() as u64);
}

#[tokio::test]
async fn a_blackhole_holds_open_and_new_connections_until_healed() {
    let echo = Echo::start().await;
    let proxy = proxy_to(&echo).await;
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut open, "before").await;

    proxy.cut();
    assert_eq!(proxy.cut_state(), Some(Cut::Blackhole));
    open.write_all(b"during").await.unwrap();
    assert!(nothing_arrives(&mut open).await);
    // A new connection is accepted (a partition does not refuse) but goes nowhere.
    let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
    new.write_all(b"new").await.unwrap();
    assert!(nothing_arrives(&mut new).await);
    assert_eq!(
        echo.connections(),
        1,
        "the held connection reached the target"
    );

    proxy.heal();
    assert_eq!(proxy.cut_state(), None);
    assert_eq!(read_n(&mut open, 6).await, b"during");
    round_trip(&mut open, "after").await;
    // The connection accepted during the cut never reached the target: it is closed.
    assert!(ends(&mut new).await);
    assert_eq!(echo.connections(), 1);
}

#[tokio::test]
async fn a_close_does_not_cross_a_blackhole() {
    let echo = Echo::start().await;
    let proxy = proxy_to(&echo).await;
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut open, "before").await;
    proxy.cut();
    // The client half-closes during the cut; the echo would close in answer.
    open.shutdown().await.unwrap();
    assert!(nothing_arrives(&mut open).await);
    proxy.heal();
    assert!(ends(&mut open).await);
}

#[tokio::test]
async fn a_reset_cut_resets_open_and_new_connections_until_healed() {
    let echo = Echo::start().await;
    let proxy = proxy_to(&echo).await;
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut open, "before").await;

    proxy.cut_with(Cut::Reset);
    assert!(ends(&mut open).await, "the open connection is reset");
    let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(ends(&mut new).await, "a new connection is reset");
    assert_eq!(echo.connections(), 1);

    proxy.heal();
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut again, "after").await;
}

#[tokio::test]
async fn a_delay_holds_each_chunk_back_in_each_direction() {
    let echo = Echo::start().await;
    let proxy = proxy_to(&echo).await;
    let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut socket, "warm").await;
    let delay = Duration::from_millis(150);
    proxy.delay(delay);
    let started = std::time::Instant::now();
    round_trip(&mut socket, "slow").await;
    // A lower bound: the chunk waits once each way, however fast the machine is.
    assert!(started.elapsed() >= 2 * delay, "{:?}", started.elapsed());
    proxy.delay(Duration::ZERO);
    round_trip(&mut socket, "fast again").await;
}

#[tokio::test]
async fn a_target_that_is_down_closes_the_client() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = unused.local_addr().unwrap();
    drop(unused);
    let proxy = Proxy::start(ProxyConfig::to(down)).await.unwrap();
    let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(ends(&mut socket).await);
}

#[tokio::test]
async fn dropping_the_proxy_ends_its_connections() {
    let echo = Echo::start().await;
    let proxy = proxy_to(&echo).await;
    let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut socket, "hello").await;
    drop(proxy);
    assert!(ends(&mut socket).await);
}
