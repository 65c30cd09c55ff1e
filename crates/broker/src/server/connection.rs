//! One client connection: a reader task decodes and dispatches requests in arrival order, a writer sends the
//! responses in the same order. Slow replies (acks=all, fetch long-polls) run as their own tasks, so a connection
//! can have many requests in flight while their order on the wire stays Kafka's.
//!
//! What a connection holds is bounded: requests in flight (`MAX_IN_FLIGHT`), the broker's request budget
//! (`queued.max.requests`, `queued.max.request.bytes`), and bytes of responses not yet written (`fetch.max.bytes`):
//! at any of these limits the connection stops reading its socket. `connections.max.idle.ms` closes a connection
//! that has nothing in flight and reads no request for that long, and one whose request frame, once its size has
//! arrived, does not complete within it (a slowloris sender). A response that makes no write progress for that
//! long closes the connection too.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::budget::RequestBudget;
use super::frame::{read_body, read_size, FrameError};
use super::quotas::ConnectionSlot;
use crate::broker::Broker;
use crate::config::ListenerConfig;
use crate::dispatch::{dispatch, Answer, ConnectionContext, Reply};

/// How many requests one connection may have in flight before the broker stops reading from it.
const MAX_IN_FLIGHT: usize = 128;

/// The writer's buffer, so pipelined small responses share a write; allocated only while there is something to
/// write, so idle connections hold none.
const WRITE_BUFFER: usize = 64 * 1024;

/// Responses are written in pieces of at most this size, each of which must make progress within
/// `connections.max.idle.ms`.
const WRITE_PIECE: usize = 1024 * 1024;

/// What an accepted connection was admitted with.
pub struct Admission {
    pub slot: ConnectionSlot,
    pub budget: Arc<RequestBudget>,
}

/// A reply on its way to the writer, with the response budget it holds until written.
struct Queued {
    reply: Reply,
    budget: Option<OwnedSemaphorePermit>,
    /// Counted in `Activity::in_flight` (it will put an answer on the wire).
    counted: bool,
}

/// What the reader needs to know of the writer for `connections.max.idle.ms`.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
    answered: Notify,
}

impl Activity {
    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn answered(&self) {
        self.touch();
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.answered.notify_waiters();
    }
}

pub async fn serve<R, W>(
    broker: Arc<Broker>,
    advertised: Arc<ListenerConfig>,
    peer: SocketAddr,
    mut reader: R,
    writer: W,
    admission: Admission,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    tracing::debug!(%peer, "connection opened");
    let Admission { slot: _slot, budget } = admission;
    let response_budget = broker.config.fetch_max_bytes;
    let ctx = Arc::new(ConnectionContext::new(broker.clone(), advertised, peer));
    let idle = broker.config.connections_max_idle;
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        last: Mutex::new(Instant::now()),
        answered: Notify::new(),
    });
    let (tx, rx) = mpsc::channel::<Queued>(MAX_IN_FLIGHT);
    let writer_task = tokio::spawn(write_replies(rx, writer, peer, activity.clone(), idle));
    let max = broker.config.socket_request_max_bytes;
    loop {
        let size = match until_idle(read_size(&mut reader, max), &activity, idle, &tx).await {
            Some(Ok(size)) => size,
            Some(Err(FrameError::Closed)) => break,
            Some(Err(e)) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
            None => {
                tracing::debug!(%peer, "closing idle connection (connections.max.idle.ms)");
                break;
            }
        };
        let held = budget.acquire(size).await;
        activity.touch();
        let body = match idle {
            Some(idle) => tokio::time::timeout(idle, read_body(&mut reader, size)).await,
            None => Ok(read_body(&mut reader, size).await),
        };
        let frame = match body {
            Ok(Ok(frame)) => frame,
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
            Err(_) => {
                tracing::info!(%peer, size, "closing connection: request frame incomplete after connections.max.idle.ms");
                break;
            }
        };
        activity.touch();
        let reply = match dispatch(&ctx, frame, held).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection after a bad request");
                break;
            }
        };
        // Answers computed at once count against the response budget too (a large Metadata, say), up to all of it.
        let budget = match &reply.answer {
            Answer::Ready(Some(b)) => {
                let n = b.len().clamp(1, response_budget);
                ctx.response_budget.clone().acquire_many_owned(u32::try_from(n).unwrap_or(u32::MAX)).await.ok()
            }
            _ => None,
        };
        let counted = !matches!(reply.answer, Answer::Ready(None));
        if counted {
            activity.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        if tx.send(Queued { reply, budget, counted }).await.is_err() {
            break; // writer gone: the client went away
        }
    }
    drop(tx);
    let _ = writer_task.await;
    tracing::debug!(%peer, "connection closed");
}

/// Runs `read` (waiting for a request) until the connection has been idle for `idle`: nothing in flight and no
/// request or answer since. None when idle, or when the writer is gone.
async fn until_idle<F: Future>(
    read: F,
    activity: &Activity,
    idle: Option<Duration>,
    tx: &mpsc::Sender<Queued>,
) -> Option<F::Output> {
    tokio::pin!(read);
    loop {
        let answered = activity.answered.notified();
        tokio::pin!(answered);
        // Registered before the checks below, so an answer written in between is not missed.
        answered.as_mut().enable();
        let deadline = match idle {
            Some(idle) if activity.in_flight.load(Ordering::Acquire) == 0 => {
                let deadline = activity.last() + idle;
                if deadline <= Instant::now() {
                    return None;
                }
                Some(deadline)
            }
            _ => None,
        };
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            out = &mut read => return Some(out),
            _ = tx.closed() => return None,
            _ = &mut answered => {}
            _ = timer => {}
        }
    }
}

async fn write_replies<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Queued>,
    mut writer: W,
    peer: SocketAddr,
    activity: Arc<Activity>,
    idle: Option<Duration>,
) {
    'bursts: while let Some(first) = rx.recv().await {
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, &mut writer);
        let mut next = Some(first);
        while let Some(Queued { reply, budget, counted }) = next.take() {
            let bytes = match reply.answer {
                Answer::Ready(b) => b,
                Answer::Deferred(handle) => match handle.await {
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
                if let Err(e) = write_with_progress(&mut out, bytes, idle).await {
                    tracing::debug!(%peer, error = %e, "write failed");
                    return;
                }
            }
            drop(reply.budget);
            drop(budget);
            if counted {
                activity.answered();
            }
            match rx.try_recv() {
                Ok(q) => next = Some(q),
                // Flush when nothing else is ready, so pipelined responses share a write.
                Err(_) => {
                    if let Err(e) = with_progress(out.flush(), idle).await {
                        tracing::debug!(%peer, error = %e, "flush failed");
                        return;
                    }
                    continue 'bursts;
                }
            }
        }
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}

/// Writes `bytes` in pieces, each of which must go out within `idle`: a client that stops reading its responses is
/// closed as an idle one would be, while a slow one that keeps reading is not.
async fn write_with_progress<W: AsyncWrite + Unpin>(
    out: &mut W,
    bytes: Bytes,
    idle: Option<Duration>,
) -> std::io::Result<()> {
    for piece in bytes.chunks(WRITE_PIECE) {
        with_progress(out.write_all(piece), idle).await?;
    }
    Ok(())
}

async fn with_progress<F: Future<Output = std::io::Result<()>>>(op: F, idle: Option<Duration>) -> std::io::Result<()> {
    match idle {
        Some(idle) => tokio::time::timeout(idle, op)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no write progress"))?,
        None => op.await,
    }
}
