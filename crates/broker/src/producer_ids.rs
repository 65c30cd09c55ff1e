//! Producer id allocation for InitProducerId, as Kafka's ProducerIdManager: the broker takes blocks of ids from the
//! metadata log (a ProducerIdsRecord moves the cluster-wide high mark past the block, durably, before any id of the
//! block is used) and hands them out from memory, so an id is never given twice, even across restarts.

use std::sync::Mutex;

use kafka_protocol::ResponseError;

use crate::broker::{Broker, CommitError};
use crate::controller::ApiError;
use crate::metadata::MetadataRecord;

/// Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`.
pub const BLOCK_SIZE: i64 = 1000;

#[derive(Default)]
pub struct ProducerIdManager {
    /// The current block: next id to hand out and the end (exclusive); empty until the first request.
    block: Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    /// The next unused producer id. Blocking when a new block must be committed: call from a blocking thread.
    pub fn generate(&self, broker: &Broker) -> Result<i64, ApiError> {
        let mut block = self.block.lock().unwrap_or_else(|e| e.into_inner());
        if block.0 >= block.1 {
            let node_id = broker.config.node_id;
            let start = broker
                .commit(|image| {
                    let start = image.next_producer_id;
                    let end = start.checked_add(BLOCK_SIZE).ok_or_else(|| {
                        ApiError::new(
                            ResponseError::UnknownServerError,
                            "Exhausted all producerIds as the next block's end would overflow",
                        )
                    })?;
                    Ok((vec![MetadataRecord::ProducerIdsRecord { broker_id: node_id, next_producer_id: end }], start))
                })
                .map_err(|e| match e {
                    CommitError::Rejected(e) => e,
                    CommitError::Io(e) => {
                        ApiError::new(ResponseError::UnknownServerError, format!("metadata log write failed: {e}"))
                    }
                })?;
            *block = (start, start + BLOCK_SIZE);
            tracing::debug!(start, end = block.1, "allocated producer id block");
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::BrokerConfig;

    fn open(dir: &std::path::Path) -> Broker {
        let mut values = BTreeMap::new();
        values.insert("log.dirs".to_string(), dir.display().to_string());
        Broker::open(BrokerConfig::from_values(values).unwrap()).unwrap()
    }

    #[test]
    fn ids_are_unique_across_blocks_and_never_reused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path());
        let ids: Vec<i64> = (0..BLOCK_SIZE + 5).map(|_| broker.producer_ids.generate(&broker).unwrap()).collect();
        assert_eq!(ids, (0..BLOCK_SIZE + 5).collect::<Vec<_>>());
        assert_eq!(broker.image().next_producer_id, 2 * BLOCK_SIZE);
        drop(broker);
        // The rest of the second block is skipped, never handed out again.
        let broker = open(dir.path());
        assert_eq!(broker.producer_ids.generate(&broker).unwrap(), 2 * BLOCK_SIZE);
    }
}
