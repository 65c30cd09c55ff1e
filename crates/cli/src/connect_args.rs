//! Arguments every client command shares: where the brokers are, and `key=value` settings.

use clap::Args;

#[derive(Args, Clone, Debug)]
pub struct Bootstrap {
    /// Broker(s) to bootstrap from, host:port[,host:port...].
    #[arg(long = "bootstrap-server", default_value = "127.0.0.1:9092")]
    pub bootstrap_server: String,
}

impl Bootstrap {
    pub fn client_config(&self) -> strom_client::ClientConfig {
        let mut c = strom_client::ClientConfig::new(&self.bootstrap_server);
        c.client_id = "strom-cli".into();
        c
    }
}

/// Parses `key=value` (the value may contain '=').
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got '{s}'")),
    }
}

/// A tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
