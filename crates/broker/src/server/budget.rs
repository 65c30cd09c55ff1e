//! What the broker holds for its clients, bounded: `queued.max.requests` (requests read but not yet processed,
//! across the broker) and `queued.max.request.bytes` (their bytes: a memory pool a connection takes room from
//! before it reads a request's body). A connection waits for both, so it stops reading its socket when the broker is
//! at its limits, as Kafka's network threads do.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::BrokerConfig;

pub struct RequestBudget {
    requests: Arc<Semaphore>,
    bytes: Option<Arc<Semaphore>>,
}

/// A request's share of the budget, given back when the request has been processed (its response computed).
pub struct RequestPermit {
    _request: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

impl RequestBudget {
    pub fn new(config: &BrokerConfig) -> RequestBudget {
        RequestBudget {
            requests: Arc::new(Semaphore::new(config.queued_max_requests.min(Semaphore::MAX_PERMITS))),
            bytes: config.queued_max_request_bytes.map(|b| Arc::new(Semaphore::new(b.min(Semaphore::MAX_PERMITS)))),
        }
    }

    /// Waits for room for one request of `size` bytes. `socket.request.max.bytes` (at most
    /// `queued.max.request.bytes`, which the config checks) bounds the size, so one request always fits.
    pub async fn acquire(&self, size: usize) -> RequestPermit {
        // The semaphores are never closed.
        let request = self.requests.clone().acquire_owned().await.expect("request budget open");
        let bytes = match &self.bytes {
            Some(pool) => {
                let n = u32::try_from(size).unwrap_or(u32::MAX);
                Some(pool.clone().acquire_many_owned(n).await.expect("request byte budget open"))
            }
            None => None,
        };
        RequestPermit { _request: request, _bytes: bytes }
    }
}
