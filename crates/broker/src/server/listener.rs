//! Binding the configured listeners and accepting connections, within the connection quotas.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::budget::RequestBudget;
use super::connection::{self, Admission};
use super::log_throttle::LogThrottle;
use super::quotas::ConnectionQuotas;
use crate::broker::Broker;
use crate::config::{ListenerConfig, SecurityProtocol};

pub struct BoundListener {
    pub config: ListenerConfig,
    /// What Metadata tells clients to connect to for this listener.
    pub advertised: ListenerConfig,
    pub local_addr: SocketAddr,
    socket: TcpListener,
    /// Shared by every listener of the broker.
    quotas: Arc<ConnectionQuotas>,
    budget: Arc<RequestBudget>,
}

/// How often a repeated accept-side event (a refused connection, an accept failure) is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Back-off after a failed accept (out of file descriptors, say), doubling up to the maximum while it keeps failing:
/// the pending connection stays in the backlog, so retrying at once would spin.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Binds every listener up front, so a port conflict fails the start instead of a later accept.
pub async fn bind_listeners(broker: &Broker) -> std::io::Result<Vec<BoundListener>> {
    let mut out = Vec::new();
    let quotas = Arc::new(ConnectionQuotas::new(&broker.effective_config()));
    let mut changes = broker.subscribe_config();
    let follower = Arc::downgrade(&quotas);
    tokio::spawn(async move {
        // Ends when the broker or the listeners are gone.
        while changes.changed().await.is_ok() {
            let Some(quotas) = follower.upgrade() else { break };
            let limits = changes.borrow_and_update().connection_limits();
            quotas.reconfigure(limits);
        }
    });
    let budget = Arc::new(RequestBudget::new(&broker.config));
    for l in &broker.config.listeners {
        let socket = TcpListener::bind((l.host.as_str(), l.port)).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot bind listener {}://{}:{}: {e}", l.name, l.host, l.port))
        })?;
        let local_addr = socket.local_addr()?;
        let mut advertised =
            broker.config.advertised_listeners.iter().find(|a| a.name == l.name).cloned().unwrap_or_else(|| l.clone());
        // Port 0 binds an ephemeral port: advertise the real one.
        if advertised.port == 0 {
            advertised.port = local_addr.port();
        }
        if advertised.host == "0.0.0.0" || advertised.host == "::" {
            advertised.host = "127.0.0.1".into();
        }
        out.push(BoundListener {
            config: l.clone(),
            advertised,
            local_addr,
            socket,
            quotas: quotas.clone(),
            budget: budget.clone(),
        });
    }
    Ok(out)
}

impl BoundListener {
    /// Accepts connections until the task is dropped; every connection runs in its own task.
    pub async fn serve(self, broker: Arc<Broker>) {
        let advertised = Arc::new(self.advertised);
        let listener = self.config.name.as_str();
        let at_limit = LogThrottle::new(LOG_INTERVAL);
        let refused = LogThrottle::new(LOG_INTERVAL);
        let failed = LogThrottle::new(LOG_INTERVAL);
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            if !self.quotas.slot_available() {
                if let Some(suppressed) = at_limit.check() {
                    tracing::warn!(
                        listener,
                        max_connections = self.quotas.max_connections(),
                        times_since_last_logged = suppressed,
                        "max.connections reached: new connections wait until one closes"
                    );
                }
                self.quotas.wait_for_slot().await;
            }
            let (stream, peer) = match self.socket.accept().await {
                Ok(accepted) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    accepted
                }
                Err(e) => {
                    // Out of file descriptors and similar: keep serving existing connections, retry later.
                    if let Some(suppressed) = failed.check() {
                        tracing::warn!(listener, error = %e, failures_since_last_logged = suppressed, "accept failed");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let slot = match self.quotas.acquire(peer.ip()) {
                Ok(slot) => slot,
                Err(e) => {
                    // As Kafka: closed at once.
                    if let Some(suppressed) = refused.check() {
                        tracing::info!(listener, error = %e, refused_since_last_logged = suppressed, "rejected connection");
                    }
                    drop(stream);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let broker = broker.clone();
            let advertised = advertised.clone();
            let admission = Admission { slot, budget: self.budget.clone() };
            match self.config.protocol {
                SecurityProtocol::Plaintext => {
                    tokio::spawn(async move {
                        let (r, w) = stream.into_split();
                        connection::serve(broker, advertised, peer, r, w, admission).await;
                    });
                }
            }
        }
    }
}
