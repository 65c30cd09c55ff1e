//! Binding the configured listeners and accepting connections.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::connection;
use crate::broker::Broker;
use crate::config::{ListenerConfig, SecurityProtocol};

pub struct BoundListener {
    pub config: ListenerConfig,
    /// What Metadata tells clients to connect to for this listener.
    pub advertised: ListenerConfig,
    pub local_addr: SocketAddr,
    socket: TcpListener,
}

/// Binds every listener up front, so a port conflict fails the start instead of a later accept.
pub async fn bind_listeners(broker: &Broker) -> std::io::Result<Vec<BoundListener>> {
    let mut out = Vec::new();
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
        out.push(BoundListener { config: l.clone(), advertised, local_addr, socket });
    }
    Ok(out)
}

impl BoundListener {
    /// Accepts connections until the task is dropped; every connection runs in its own task.
    pub async fn serve(self, broker: Arc<Broker>) {
        let advertised = Arc::new(self.advertised);
        loop {
            match self.socket.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let broker = broker.clone();
                    let advertised = advertised.clone();
                    match self.config.protocol {
                        SecurityProtocol::Plaintext => {
                            tokio::spawn(async move {
                                let (r, w) = stream.into_split();
                                connection::serve(broker, advertised, peer, r, w).await;
                            });
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and similar: keep serving existing connections.
                    tracing::warn!(listener = %self.config.name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}
