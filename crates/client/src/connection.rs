//! One TCP connection to one broker: pipelined requests matched to responses by correlation id, a bounded
//! number in flight (`max.in.flight.requests.per.connection`), and the API versions negotiated at connect.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::config::ClientConfig;
use crate::error::{Error, Result};

/// Largest response frame accepted; a bigger length prefix means the stream is not Kafka.
const MAX_RESPONSE: usize = 512 << 20;

struct Pending {
    tx: oneshot::Sender<Result<Bytes>>,
    // Held until the response arrives, so it counts against max.in.flight.
    _permit: Option<OwnedSemaphorePermit>,
}

struct Shared {
    addr: String,
    pending: Mutex<HashMap<i32, Pending>>,
    closed: AtomicBool,
}

impl Shared {
    /// Marks the connection dead and fails every waiting request, so callers retry elsewhere.
    fn close(&self, reason: &str) {
        let drained: Vec<Pending> = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            self.closed.store(true, Ordering::SeqCst);
            p.drain().map(|(_, v)| v).collect()
        };
        for p in drained {
            let _ = p.tx.send(Err(Error::Disconnected { addr: self.addr.clone(), reason: reason.to_string() }));
        }
    }
}

/// The feature levels a broker finalizes (ApiVersions v3+ tagged fields): each feature's finalized max version
/// level, and the epoch of that answer (-1: none known), as Java's ApiVersions keeps them.
#[derive(Debug, Clone)]
pub struct FinalizedFeatures {
    pub epoch: i64,
    pub levels: HashMap<String, i16>,
}

impl Default for FinalizedFeatures {
    fn default() -> Self {
        FinalizedFeatures { epoch: -1, levels: HashMap::new() }
    }
}

impl FinalizedFeatures {
    /// The finalized level of `feature` (e.g. `transaction.version`), when the broker finalizes it.
    pub fn level(&self, feature: &str) -> Option<i16> {
        self.levels.get(feature).copied()
    }
}

pub struct Connection {
    shared: Arc<Shared>,
    frames: mpsc::UnboundedSender<Bytes>,
    correlation: AtomicI32,
    in_flight: Arc<Semaphore>,
    versions: OnceLock<HashMap<i16, (i16, i16)>>,
    features: OnceLock<FinalizedFeatures>,
    client_id: StrBytes,
    request_timeout: Duration,
}

impl Connection {
    /// Connects, starts the reader and writer tasks and negotiates API versions.
    pub async fn connect(addr: &str, config: &ClientConfig) -> Result<Arc<Connection>> {
        let stream = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Error::Connect { addr: addr.to_string(), reason: e.to_string() }),
            Err(_) => {
                let reason =
                    format!("no answer within {:?} (socket.connection.setup.timeout.ms)", config.connect_timeout);
                return Err(Error::Connect { addr: addr.to_string(), reason });
            }
        };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared {
            addr: addr.to_string(),
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let (frames, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(write, rx, shared.clone()));
        tokio::spawn(read_loop(read, shared.clone()));
        let conn = Arc::new(Connection {
            shared,
            frames,
            correlation: AtomicI32::new(0),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            versions: OnceLock::new(),
            features: OnceLock::new(),
            client_id: StrBytes::from_string(config.client_id.clone()),
            request_timeout: config.request_timeout,
        });
        conn.negotiate_versions().await?;
        Ok(conn)
    }

    async fn negotiate_versions(&self) -> Result<()> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("strom-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut resp = self.call_version(&req, 3).await?;
        if resp.error_code == 35 {
            // UNSUPPORTED_VERSION: an older broker; v0 is understood by all.
            resp = self.call_version(&req, 0).await?;
        }
        crate::error::check(resp.error_code, || format!("ApiVersions to {}", self.addr()), None)?;
        let map = resp.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        let _ = self.versions.set(map);
        let levels = resp.finalized_features.iter().map(|f| (f.name.to_string(), f.max_version_level)).collect();
        let _ = self.features.set(FinalizedFeatures { epoch: resp.finalized_features_epoch, levels });
        Ok(())
    }

    /// The features the broker finalized in its ApiVersions answer.
    pub fn finalized_features(&self) -> FinalizedFeatures {
        self.features.get().cloned().unwrap_or_default()
    }

    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// True when the broker advertises any version of the API.
    pub fn supports(&self, key: ApiKey) -> bool {
        self.versions.get().is_some_and(|v| v.contains_key(&(key as i16)))
    }

    /// The highest version both sides speak for request type `R`, at most `cap` (a protocol generation the caller
    /// speaks, e.g. transactions v1).
    pub fn version_at_most<R: Request>(&self, cap: i16) -> Result<i16> {
        let v = self.version::<R>()?;
        let min = self.versions.get().and_then(|m| m.get(&R::KEY)).map_or(0, |r| r.0).max(R::VERSIONS.min);
        if cap < min {
            return Err(Error::UnsupportedApi { addr: self.addr().to_string(), api: api_name(R::KEY), key: R::KEY });
        }
        Ok(v.min(cap))
    }

    /// The highest version both sides speak for request type `R`.
    pub fn version<R: Request>(&self) -> Result<i16> {
        let ours = (R::VERSIONS.min, R::VERSIONS.max.min(client_cap(R::KEY)));
        let theirs = self.versions.get().and_then(|v| v.get(&R::KEY).copied());
        match theirs {
            Some((min, max)) if max.min(ours.1) >= min.max(ours.0) => Ok(max.min(ours.1)),
            _ => Err(Error::UnsupportedApi { addr: self.addr().to_string(), api: api_name(R::KEY), key: R::KEY }),
        }
    }

    /// Sends at the negotiated version and waits for the response.
    pub async fn call<R: Request>(&self, req: &R) -> Result<R::Response> {
        let v = self.version::<R>()?;
        self.call_version(req, v).await
    }

    pub async fn call_version<R: Request>(&self, req: &R, version: i16) -> Result<R::Response> {
        let permit = self.in_flight.clone().acquire_owned().await.map_err(|_| Error::Closed)?;
        self.send(req, version, Some(permit))?.await
    }

    /// A slot for one more pipelined request, if fewer than max.in.flight are outstanding.
    pub fn try_reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// Queues the request now (so requests leave in call order) and returns a future for its response.
    pub fn send<R: Request>(
        &self,
        req: &R,
        version: i16,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<impl Future<Output = Result<R::Response>> + Send + 'static> {
        let correlation = self.correlation.fetch_add(1, Ordering::Relaxed);
        let frame = self.encode(req, version, correlation)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            if self.is_closed() {
                return Err(self.disconnected());
            }
            pending.insert(correlation, Pending { tx, _permit: permit });
        }
        if self.frames.send(frame).is_err() {
            self.shared.close("writer stopped");
        }
        let shared = self.shared.clone();
        let timeout = self.request_timeout;
        Ok(async move {
            let body = match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(r)) => r?,
                Ok(Err(_)) => return Err(Error::Disconnected { addr: shared.addr.clone(), reason: "closed".into() }),
                Err(_) => {
                    shared.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&correlation);
                    return Err(Error::Timeout(format!("{} request to {}", api_name(R::KEY), shared.addr), timeout));
                }
            };
            decode_response::<R>(body, version)
        })
    }

    /// Queues a request that gets no response (Produce with acks=0).
    pub fn send_oneway<R: Request>(&self, req: &R, version: i16) -> Result<()> {
        if self.is_closed() {
            return Err(self.disconnected());
        }
        let correlation = self.correlation.fetch_add(1, Ordering::Relaxed);
        let frame = self.encode(req, version, correlation)?;
        self.frames.send(frame).map_err(|_| self.disconnected())
    }

    fn disconnected(&self) -> Error {
        Error::Disconnected { addr: self.addr().to_string(), reason: "connection closed".into() }
    }

    fn encode<R: Request>(&self, req: &R, version: i16, correlation: i32) -> Result<Bytes> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i32(0);
        header.encode(&mut buf, R::header_version(version)).map_err(|e| Error::Protocol(e.to_string()))?;
        req.encode(&mut buf, version).map_err(|e| Error::Protocol(format!("encode {}: {e}", api_name(R::KEY))))?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok(buf.freeze())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The writer task ends when `frames` is dropped; closing here also ends the reader's waiters.
        self.shared.close("connection dropped");
    }
}

fn decode_response<R: Request>(mut body: Bytes, version: i16) -> Result<R::Response> {
    // The correlation id was consumed by the reader; the rest of the header is only tagged fields (v1).
    if R::Response::header_version(version) >= 1 {
        let mut with_id = BytesMut::with_capacity(body.len() + 4);
        with_id.put_i32(0);
        with_id.put_slice(&body);
        let mut b = with_id.freeze();
        ResponseHeader::decode(&mut b, 1).map_err(|e| Error::Protocol(e.to_string()))?;
        body = b;
    }
    R::Response::decode(&mut body, version)
        .map_err(|e| Error::Protocol(format!("decode {} v{version}: {e}", api_name(R::KEY))))
}

async fn write_loop(write: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Bytes>, shared: Arc<Shared>) {
    let mut w = BufWriter::with_capacity(64 * 1024, write);
    while let Some(frame) = rx.recv().await {
        let mut result = w.write_all(&frame).await;
        // Coalesce whatever else is queued into the same syscalls before flushing.
        while result.is_ok() {
            match rx.try_recv() {
                Ok(f) => result = w.write_all(&f).await,
                Err(_) => break,
            }
        }
        if let Err(e) = result.and(w.flush().await) {
            shared.close(&format!("write failed: {e}"));
            return;
        }
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
    }
}

async fn read_loop(mut read: OwnedReadHalf, shared: Arc<Shared>) {
    let reason = loop {
        let len = match read.read_i32().await {
            Ok(n) if n >= 4 && (n as usize) <= MAX_RESPONSE => n as usize,
            Ok(n) => break format!("invalid response size {n}"),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break "closed by the broker".to_string(),
            Err(e) => break e.to_string(),
        };
        let mut buf = BytesMut::zeroed(len);
        if let Err(e) = read.read_exact(&mut buf).await {
            break e.to_string();
        }
        let mut body = buf.freeze();
        let correlation = body.get_i32();
        let waiter = shared.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&correlation);
        match waiter {
            Some(p) => {
                let _ = p.tx.send(Ok(body));
            }
            None => tracing::debug!(addr = %shared.addr, correlation, "response for a request nobody waits for"),
        }
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
    };
    tracing::debug!(addr = %shared.addr, %reason, "connection closed");
    shared.close(&reason);
}

/// Highest version this client speaks per API where the newest versions changed shape it does not use
/// (Produce and Fetch v13 address topics by id only).
fn client_cap(key: i16) -> i16 {
    match key {
        0 | 1 => 12,
        _ => i16::MAX,
    }
}

pub(crate) fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(k) => match k {
            ApiKey::Produce => "Produce",
            ApiKey::Fetch => "Fetch",
            ApiKey::ListOffsets => "ListOffsets",
            ApiKey::Metadata => "Metadata",
            ApiKey::ApiVersions => "ApiVersions",
            ApiKey::CreateTopics => "CreateTopics",
            ApiKey::DeleteTopics => "DeleteTopics",
            ApiKey::CreatePartitions => "CreatePartitions",
            ApiKey::DescribeConfigs => "DescribeConfigs",
            ApiKey::AlterConfigs => "AlterConfigs",
            ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
            ApiKey::DescribeCluster => "DescribeCluster",
            ApiKey::InitProducerId => "InitProducerId",
            ApiKey::FindCoordinator => "FindCoordinator",
            ApiKey::AddPartitionsToTxn => "AddPartitionsToTxn",
            ApiKey::AddOffsetsToTxn => "AddOffsetsToTxn",
            ApiKey::EndTxn => "EndTxn",
            ApiKey::TxnOffsetCommit => "TxnOffsetCommit",
            ApiKey::DescribeTransactions => "DescribeTransactions",
            ApiKey::ListTransactions => "ListTransactions",
            _ => "API",
        },
        Err(_) => "unknown API",
    }
}
