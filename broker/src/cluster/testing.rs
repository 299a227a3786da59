//! A fake peer broker on 127.0.0.1:0 for tests of the cluster transport: it decodes each
//! request with the protocol crate and answers however the test says, including the ways
//! a real peer fails (closing, hanging, garbage).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_protocol::{decode_request, ErrorCode, FrameCodec, Request, RequestHeader, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::codec::Decoder;

/// What the fake peer does with one request.
pub(crate) enum Reply {
    /// Answer with this body.
    Respond(Response),
    /// Answer with a top-level error.
    Error(ErrorCode, String),
    /// Close the connection without answering.
    Close,
    /// Never answer (the connection stays open).
    Hang,
    /// Write these bytes verbatim instead of an answer.
    Raw(Bytes),
    /// Wait, then reply.
    After(Duration, Box<Reply>),
}

/// Decides the reply to the `n`th request the fake has received (from 0, over all
/// connections).
pub(crate) type Script = dyn Fn(usize, &RequestHeader, Request) -> Reply + Send + Sync;

/// A fake broker serving until dropped.
pub(crate) struct FakePeer {
    /// Its `HOST:PORT`.
    pub addr: String,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FakePeer {
    /// Listens on an ephemeral port and answers every request by `script`.
    pub(crate) async fn start(
        script: impl Fn(usize, &RequestHeader, Request) -> Reply + Send + Sync + 'static,
    ) -> FakePeer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let requests = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            // Dropping the set (when the accept task is aborted) aborts every connection.
            let mut served = JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                served.spawn(serve(socket, Arc::clone(&script), Arc::clone(&requests)));
            }
        });
        FakePeer {
            addr,
            connections,
            task,
        }
    }

    /// How many connections it has accepted.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut socket: TcpStream, script: Arc<Script>, requests: Arc<AtomicUsize>) {
    let mut codec = FrameCodec::default();
    let mut buffer = BytesMut::new();
    loop {
        while let Some(payload) = codec.decode(&mut buffer).unwrap() {
            let (header, request) = decode_request(payload).unwrap();
            let n = requests.fetch_add(1, Ordering::SeqCst);
            let mut reply = script(n, &header, request);
            while let Reply::After(delay, then) = reply {
                tokio::time::sleep(delay).await;
                reply = *then;
            }
            let id = header.correlation_id;
            let mut payload = BytesMut::new();
            let out = match reply {
                Reply::Respond(response) => {
                    response.encode(id, &mut payload).unwrap();
                    frame(&payload)
                }
                Reply::Error(code, message) => {
                    Response::encode_error(id, code, Some(&message), &mut payload).unwrap();
                    frame(&payload)
                }
                Reply::Close => return,
                Reply::Hang => std::future::pending().await,
                Reply::Raw(bytes) => bytes.to_vec(),
                Reply::After(..) => unreachable!("unwrapped above"),
            };
            if socket.write_all(&out).await.is_err() {
                return;
            }
        }
        match socket.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// `payload` with its length prefix.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}
