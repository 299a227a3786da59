//! One client connection: read frames, serve requests concurrently, answer in order.
//!
//! Shape: the reading half decodes frames from a `BytesMut` ("incomplete frame" is the
//! normal state between reads) and spawns one task per request. Each task's answer travels
//! through a oneshot whose receiver is queued, in request order, on a bounded channel to
//! the writing half. The writer awaits the receivers in order, so responses leave in
//! request order however the tasks finish (pipelining), and the channel's bound is the
//! connection's in-flight limit: when it is full the reader stops reading, pushing back on
//! the client through TCP.
//!
//! Bad input only ends its own connection: an undecodable body gets an error response
//! (the header gave a correlation id); an undecodable header, an oversized frame or a
//! stream cut mid-frame closes the connection after the answers already owed are sent.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use sluice_protocol::frame::FRAME_HEADER_LEN;
use sluice_protocol::{decode_request, Error as ProtocolError, ErrorCode, FrameCodec, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Decoder;

use crate::broker::Broker;
use crate::error::ApiError;
use crate::handlers::{self, Outcome};

/// A response payload owed to the client, or nothing (acks=0).
type Answer = oneshot::Receiver<Option<BytesMut>>;

/// How long a refused frame's request header is waited for.
const REFUSED_HEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a refused connection is drained before it closes.
const REFUSED_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);
/// Most bytes drained from a refused connection.
const REFUSED_DRAIN_BYTES_MAX: usize = 16 << 20;

/// Initial capacity of the read buffer; frames larger than this grow it as they arrive.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Serves one connection until the client closes it, it misbehaves, or shutdown begins.
pub async fn serve(broker: Arc<Broker>, socket: TcpStream, peer: SocketAddr) {
    let _ = socket.set_nodelay(true);
    let (mut reader, writer) = socket.into_split();
    let depth = broker.config.max_in_flight_per_connection as usize;
    let (answers_tx, answers_rx) = mpsc::channel::<Answer>(depth);
    let writing = tokio::spawn(write_answers(writer, answers_rx));
    let mut codec = FrameCodec::new(broker.config.max_frame_bytes);
    let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut stopping = broker.stopping();
    let mut refused = false;
    // The broker whose heartbeats arrive on this connection: when it closes, the
    // controller shortens that broker's session (see `cluster::controller`).
    let mut heartbeats_from = None;
    'read: loop {
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(payload)) => {
                    let (tx, rx) = oneshot::channel();
                    if answers_tx.send(rx).await.is_err() {
                        break 'read; // The writer failed: the client is gone.
                    }
                    match decode_request(payload) {
                        Ok((header, request)) => {
                            let id = header.correlation_id;
                            if let sluice_protocol::Request::BrokerHeartbeat(h) = &request {
                                heartbeats_from = Some(h.broker_id);
                            }
                            let started = handlers::start(&broker, request).await;
                            let broker = Arc::clone(&broker);
                            let caller = handlers::Caller {
                                client_id: header.client_id,
                                host: peer.ip().to_string(),
                            };
                            tokio::spawn(async move {
                                let outcome = match started {
                                    Ok(started) => {
                                        handlers::finish(&broker, started, &caller).await
                                    }
                                    Err(e) => Err(e),
                                };
                                let _ = tx.send(encode(id, outcome));
                            });
                        }
                        Err(e) => {
                            let Some(id) = e.correlation_id else {
                                tracing::debug!(%peer, "closing connection: {e}");
                                break 'read;
                            };
                            tracing::debug!(%peer, "refusing a request: {e}");
                            let message =
                                format!("{}; check the client's protocol version", e.error);
                            let _ =
                                tx.send(encode(id, Err(ApiError::new(e.error_code(), message))));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The frame is refused from its length alone; the request header
                    // that follows may not have arrived yet. Wait for it briefly, so the
                    // refusal carries its correlation id and the client can read it.
                    let _ = tokio::time::timeout(REFUSED_HEADER_WAIT, async {
                        while buffer.len() < FRAME_HEADER_LEN + 8 {
                            match reader.read_buf(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(_) => {}
                            }
                        }
                    })
                    .await;
                    refuse_frame(&broker, &buffer, &e, &answers_tx, peer).await;
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
    // Only now: a heartbeat still being handled when the connection closed would
    // otherwise grant a full session after the shortened one was set.
    if let (Some(id), Some(controller)) = (heartbeats_from, &broker.cluster.controller) {
        controller.connection_lost(id);
    }
    if refused {
        // Closing a socket with unread input sends a reset, which can destroy the error
        // answer before the client reads it. The writer has sent FIN; read and drop what
        // the client still sends, for a bounded time and amount, before closing.
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
}

/// Encodes a request's outcome as a response payload, with room for the length prefix at
/// the front; `None` when no response is owed (acks=0).
fn encode(correlation_id: u32, outcome: Result<Outcome, ApiError>) -> Option<BytesMut> {
    let mut out = BytesMut::new();
    out.put_u32(0);
    let encoded = match outcome {
        Ok(Outcome::Silent) => return None,
        Ok(Outcome::Respond(response)) => response.encode(correlation_id, &mut out),
        Err(e) => Response::encode_error(correlation_id, e.code, Some(&e.message), &mut out),
    };
    if let Err(e) = encoded {
        tracing::error!("encoding a response failed: {e}");
        out.truncate(FRAME_HEADER_LEN);
        let _ = Response::encode_error(
            correlation_id,
            ErrorCode::UnknownServerError,
            Some("the broker could not encode its response"),
            &mut out,
        );
    }
    Some(out)
}

/// Answers a frame the codec refused (too large) with an error response when its header is
/// readable, so the client learns why the connection closes.
async fn refuse_frame(
    broker: &Broker,
    buffer: &BytesMut,
    error: &ProtocolError,
    answers: &mpsc::Sender<Answer>,
    peer: SocketAddr,
) {
    tracing::warn!(%peer, "closing connection: {error}");
    // Payload: api_key u16, api_version u16, correlation_id u32, ...
    let Some(id) = buffer.get(FRAME_HEADER_LEN + 4..FRAME_HEADER_LEN + 8) else {
        return;
    };
    let correlation_id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
    let message = format!(
        "{error}; send requests of at most {} bytes (broker setting max_frame_bytes)",
        broker.config.max_frame_bytes
    );
    let mut out = BytesMut::new();
    out.put_u32(0);
    if Response::encode_error(
        correlation_id,
        ErrorCode::MessageTooLarge,
        Some(&message),
        &mut out,
    )
    .is_ok()
    {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Some(out));
        let _ = answers.send(rx).await;
    }
}

/// Writes answers in request order. Buffered answers are flushed before waiting on one
/// that is not ready yet (a long poll must not hold back the answers queued before it) and
/// whenever no further answer is queued.
async fn write_answers(writer: OwnedWriteHalf, mut answers: mpsc::Receiver<Answer>) {
    use tokio::sync::oneshot::error::TryRecvError;
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(mut answer) = answers.recv().await {
        let answer = match answer.try_recv() {
            Ok(ready) => ready,
            Err(TryRecvError::Empty) => {
                if writer.flush().await.is_err() {
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
        if let Some(mut frame) = answer {
            let payload_len = (frame.len() - FRAME_HEADER_LEN) as u32;
            frame[..FRAME_HEADER_LEN].copy_from_slice(&payload_len.to_be_bytes());
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
        if answers.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.flush().await;
    let _ = writer.into_inner().shutdown().await;
}
