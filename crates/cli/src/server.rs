//! `strom server`: configuration from Kafka-style properties and overrides, logging, signals.

use std::path::PathBuf;

use clap::Args;
use strom_broker::config::defs::{broker_defs, topic_defs};
use strom_broker::BrokerConfig;

#[derive(Args)]
#[command(after_long_help = config_help(), after_help = "Run `strom server --help` for every config key with its default.")]
pub struct ServerArgs {
    /// A Kafka-style server.properties file (key=value lines).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set a config key, overriding the file: --override log.retention.ms=60000 (repeatable).
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Shorthand for --override listeners=... (default PLAINTEXT://127.0.0.1:9092).
    #[arg(long, value_name = "LISTENERS")]
    listeners: Option<String>,
    /// Shorthand for --override log.dirs=... (default ./strom-data).
    #[arg(long = "log-dirs", value_name = "DIR")]
    log_dirs: Option<String>,
    /// Log filter in tracing-subscriber syntax (e.g. info, strom_broker=debug).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn config_help() -> String {
    let mut s = String::from("Broker configs (Kafka names; set in --config FILE or with --override KEY=VALUE):\n");
    for d in broker_defs() {
        s.push_str(&format!("  {:<40} default: {:<22} {}\n", d.name, d.default.unwrap_or("(none)"), d.doc));
    }
    s.push_str("\nTopic configs (per topic via CreateTopics; the default comes from the broker config in brackets):\n");
    for d in topic_defs() {
        s.push_str(&format!(
            "  {:<40} default: {:<22} [{}] {}\n",
            d.name,
            d.default.unwrap_or("(none)"),
            d.broker_synonym.unwrap_or(""),
            d.doc
        ));
    }
    s
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut overrides = args.overrides.clone();
    if let Some(l) = &args.listeners {
        overrides.push(format!("listeners={l}"));
    }
    if let Some(d) = &args.log_dirs {
        overrides.push(format!("log.dirs={d}"));
    }
    let config = BrokerConfig::load(args.config.as_deref(), &overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let running = strom_broker::run(config).await?;
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await;
        anyhow::Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
