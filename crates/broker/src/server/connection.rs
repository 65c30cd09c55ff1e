//! One client connection: a reader task decodes and dispatches requests in arrival order, a writer sends the
//! responses in the same order. Slow replies (acks=all, fetch long-polls) run as their own tasks, so a connection
//! can have many requests in flight while their order on the wire stays Kafka's.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use super::frame::{read_frame, FrameError};
use crate::broker::Broker;
use crate::config::ListenerConfig;
use crate::dispatch::{dispatch, ConnectionContext, Reply};

/// How many requests one connection may have in flight before the broker stops reading from it.
const MAX_IN_FLIGHT: usize = 128;

pub async fn serve<R, W>(
    broker: Arc<Broker>,
    advertised: Arc<ListenerConfig>,
    peer: SocketAddr,
    mut reader: R,
    writer: W,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    tracing::debug!(%peer, "connection opened");
    let ctx = Arc::new(ConnectionContext { broker: broker.clone(), advertised, peer });
    let (tx, rx) = mpsc::channel::<Reply>(MAX_IN_FLIGHT);
    let writer_task = tokio::spawn(write_replies(rx, writer, peer));
    let max = broker.config.socket_request_max_bytes;
    loop {
        let frame = match read_frame(&mut reader, max).await {
            Ok(f) => f,
            Err(FrameError::Closed) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        match dispatch(&ctx, frame).await {
            Ok(reply) => {
                if tx.send(reply).await.is_err() {
                    break; // writer gone: the client went away
                }
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection after a bad request");
                break;
            }
        }
    }
    drop(tx);
    let _ = writer_task.await;
    tracing::debug!(%peer, "connection closed");
}

async fn write_replies<W: AsyncWrite + Unpin>(mut rx: mpsc::Receiver<Reply>, writer: W, peer: SocketAddr) {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(reply) = rx.recv().await {
        let bytes = match reply {
            Reply::Ready(b) => b,
            Reply::Deferred(handle) => match handle.await {
                Ok(Some(b)) => Some(b),
                // A deferred request always has an answer; none means it could not be encoded (logged there).
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(%peer, error = %e, "request task failed; closing connection");
                    return;
                }
            },
        };
        if let Some(bytes) = bytes {
            if let Err(e) = out.write_all(&bytes).await {
                tracing::debug!(%peer, error = %e, "write failed");
                return;
            }
        }
        // Flush when nothing else is ready, so pipelined responses share a write.
        if rx.is_empty() {
            if let Err(e) = out.flush().await {
                tracing::debug!(%peer, error = %e, "flush failed");
                return;
            }
        }
    }
    let _ = out.flush().await;
    let _ = out.shutdown().await;
}
