//! Connection quotas, as Kafka's ConnectionQuotas: `max.connections` across the broker and
//! `max.connections.per.ip` (with `max.connections.per.ip.overrides`). At the broker-wide limit a listener stops
//! accepting until a connection closes, so new ones wait in the listen backlog (Kafka blocks its acceptor the same
//! way); a connection over its address's limit is closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::config::{BrokerConfig, ConnectionLimits};

pub struct ConnectionQuotas {
    /// Dynamic: an altered limit applies to new connections; existing ones stay open, as in Kafka.
    limits: Mutex<ConnectionLimits>,
    counts: Mutex<Counts>,
    /// Signalled when a connection closes, for a listener waiting at the broker-wide limit.
    closed: Notify,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts one open connection until dropped.
pub struct ConnectionSlot {
    quotas: Arc<ConnectionQuotas>,
    ip: IpAddr,
}

#[derive(Debug, thiserror::Error)]
#[error("address {ip} already has the configured maximum of {max} connections")]
pub struct TooManyConnections {
    pub ip: IpAddr,
    pub max: usize,
}

impl ConnectionQuotas {
    pub fn new(config: &BrokerConfig) -> ConnectionQuotas {
        ConnectionQuotas {
            limits: Mutex::new(config.connection_limits()),
            counts: Mutex::new(Counts::default()),
            closed: Notify::new(),
        }
    }

    /// Applies altered limits; a listener waiting at the broker-wide limit looks again.
    pub fn reconfigure(&self, limits: ConnectionLimits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
        self.closed.notify_waiters();
    }

    pub fn max_connections(&self) -> usize {
        self.limits.lock().unwrap_or_else(|e| e.into_inner()).max_connections
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the broker-wide limit leaves room for one more connection.
    pub fn slot_available(&self) -> bool {
        let max = self.max_connections();
        self.counts().total < max
    }

    /// Waits until the broker-wide limit leaves room for one more connection.
    pub async fn wait_for_slot(&self) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            // Registered before the check, so a close between the check and the wait is not missed.
            closed.as_mut().enable();
            if self.slot_available() {
                return;
            }
            closed.await;
        }
    }

    /// Counts a new connection from `ip`, or refuses it when its address is at its limit.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, TooManyConnections> {
        let max = {
            let limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
            limits.per_ip_overrides.get(&ip).copied().unwrap_or(limits.max_per_ip)
        };
        let mut counts = self.counts();
        let n = counts.per_ip.entry(ip).or_insert(0);
        if *n >= max {
            if *n == 0 {
                counts.per_ip.remove(&ip);
            }
            return Err(TooManyConnections { ip, max });
        }
        *n += 1;
        counts.total += 1;
        Ok(ConnectionSlot { quotas: self.clone(), ip })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        {
            let mut counts = self.quotas.counts();
            counts.total = counts.total.saturating_sub(1);
            if let Some(n) = counts.per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    counts.per_ip.remove(&self.ip);
                }
            }
        }
        self.quotas.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(values: &[(&str, &str)]) -> Arc<ConnectionQuotas> {
        let values = values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Arc::new(ConnectionQuotas::new(&BrokerConfig::from_values(values).unwrap()))
    }

    #[test]
    fn per_ip_limit_and_overrides() {
        let q =
            quotas(&[("max.connections.per.ip", "2"), ("max.connections.per.ip.overrides", "10.0.0.1:0,10.0.0.2:3")]);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let s1 = q.acquire(a).unwrap();
        let _s2 = q.acquire(a).unwrap();
        assert!(q.acquire(a).is_err());
        drop(s1);
        let _s3 = q.acquire(a).unwrap();
        assert!(q.acquire("10.0.0.1".parse().unwrap()).is_err());
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| q.acquire(b).unwrap()).collect();
        assert!(q.acquire(b).is_err());
        assert_eq!(held.len(), 3);
    }

    #[tokio::test]
    async fn broker_limit_waits_for_a_close() {
        let q = quotas(&[("max.connections", "1")]);
        let s = q.acquire("127.0.0.1".parse().unwrap()).unwrap();
        assert!(!q.slot_available());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.wait_for_slot().await }
        });
        drop(s);
        waiter.await.unwrap();
        assert!(q.slot_available());
    }
}
