//! The network side: listeners accept connections, each connection reads frames and writes responses in order.
//! Connections are generic over the byte stream so TLS and SASL can wrap a socket later without touching the
//! handlers.

mod connection;
mod frame;
mod listener;

pub use frame::{read_frame, FrameError};
pub use listener::{bind_listeners, BoundListener};
