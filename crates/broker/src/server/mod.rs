//! The network side: listeners accept connections, each connection reads frames and writes responses in order.
//! Connections are generic over the byte stream so TLS and SASL can wrap a socket later without touching the
//! handlers.

mod budget;
mod connection;
mod frame;
mod listener;
mod log_throttle;
mod quotas;

pub use frame::{read_frame, FrameError};
pub use listener::{bind_listeners, BoundListener};
