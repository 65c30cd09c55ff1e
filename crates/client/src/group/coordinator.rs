//! FindCoordinator, and the dedicated connection a group member uses for its coordinator: JoinGroup parks for a
//! whole rebalance, so it must not queue fetches behind it (the Java client opens a separate connection too).

use std::sync::Arc;

use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::StrBytes;

use crate::cluster::Cluster;
use crate::connection::Connection;
use crate::error::{check, Error, Result};

/// FindCoordinator's key types.
pub const GROUP: i8 = 0;
pub const TRANSACTION: i8 = 1;

/// The coordinator's (node id, host:port) for `group`.
pub async fn find(cluster: &Cluster, group: &str) -> Result<(i32, String)> {
    find_for(cluster, group, GROUP).await
}

/// The coordinator's (node id, host:port) for a key of `key_type` (a group id or a transactional id).
pub async fn find_for(cluster: &Cluster, key: &str, key_type: i8) -> Result<(i32, String)> {
    let group = key;
    let conn = cluster.any_connection().await?;
    let version = conn.version::<FindCoordinatorRequest>()?;
    if key_type != GROUP && version < 1 {
        return Err(Error::UnsupportedApi { addr: conn.addr().to_string(), api: "FindCoordinator v1", key: 10 });
    }
    let mut req = FindCoordinatorRequest::default().with_key_type(key_type);
    if version >= 4 {
        req.coordinator_keys = vec![StrBytes::from_string(key.to_string())];
    } else {
        req.key = StrBytes::from_string(key.to_string());
    }
    let resp = conn.call_version(&req, version).await?;
    let (code, message, node, host, port) = if version >= 4 {
        let c = resp
            .coordinators
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("FindCoordinator answered no key".into()))?;
        (c.error_code, c.error_message, c.node_id.0, c.host, c.port)
    } else {
        (resp.error_code, resp.error_message, resp.node_id.0, resp.host, resp.port)
    };
    let what = if key_type == GROUP { "group" } else { "transactional id" };
    check(code, || format!("FindCoordinator for {what} {group}"), message.as_deref())?;
    Ok((node, format!("{host}:{port}")))
}

/// Finds the coordinator, retrying while it is not available yet (the broker may be creating
/// `__consumer_offsets`), and opens a dedicated connection to it.
pub async fn connect(cluster: &Cluster, group: &str) -> Result<Arc<Connection>> {
    let mut last = None;
    for _ in 0..20 {
        match find(cluster, group).await {
            Ok((_, addr)) => return cluster.connect(&addr).await,
            Err(e) if e.is_retriable() => {
                last = Some(e);
                tokio::time::sleep(cluster.config().retry_backoff).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(Error::Closed))
}
