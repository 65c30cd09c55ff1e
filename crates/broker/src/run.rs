//! Starting and stopping a broker: open the data dir, bind listeners, run background work, shut down cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::log_cleaner::LogCleaner;
use crate::server::bind_listeners;

pub struct RunningBroker {
    pub broker: Arc<Broker>,
    /// Bound addresses, in the order of `listeners`.
    pub addresses: Vec<(String, SocketAddr)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    cleaner: Arc<LogCleaner>,
}

/// Opens the broker and starts serving. Returns once every listener is bound.
pub async fn run(config: BrokerConfig) -> anyhow::Result<RunningBroker> {
    for k in &config.ignored_keys {
        if crate::config::defs::IGNORED_KAFKA_KEYS.contains(&k.as_str()) {
            tracing::warn!(key = %k, "config key is a Kafka setting Strom does not use; ignored");
        } else {
            tracing::warn!(key = %k, "unknown config key (not a broker config Strom knows; see `strom server --help`); ignored");
        }
    }
    raise_open_files_limit();
    let dir = config.log_dir.clone();
    let broker = Arc::new(tokio::task::spawn_blocking(move || Broker::open(config)).await??);
    tracing::info!(
        data_dir = %dir.display(), cluster_id = %broker.cluster_id, node_id = broker.config.node_id,
        topics = broker.image().topics.len(), "data directory opened"
    );
    // Group coordinator shards load their __consumer_offsets partitions before clients arrive.
    broker.groups.start_hosted(&broker);
    // Transaction coordinator shards complete prepared transactions left by a crash.
    broker.txns.start_hosted(&broker);
    let listeners = bind_listeners(&broker).await?;
    let mut addresses = Vec::new();
    let mut tasks = Vec::new();
    for l in listeners {
        tracing::info!(
            listener = %l.config.name, address = %l.local_addr,
            advertised = %format!("{}:{}", l.advertised.host, l.advertised.port), "listening"
        );
        addresses.push((l.config.name.clone(), l.local_addr));
        tasks.push(tokio::spawn(l.serve(broker.clone())));
    }
    tasks.push(tokio::spawn(retention_loop(broker.clone())));
    tasks.push(tokio::spawn(time_flush_loop(broker.clone())));
    tasks.push(tokio::spawn(producer_expiry_loop(broker.clone())));
    let cleaner = LogCleaner::start(&broker);
    Ok(RunningBroker { broker, addresses, tasks, cleaner })
}

/// Every partition holds files open, and every connection a socket: take the soft RLIMIT_NOFILE up to the hard
/// limit, as Kafka's packaging expects operators to, so the default soft limit is not what stops the broker.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(from = ?limit.current, to = ?limit.maximum, "raised the open files limit"),
            Err(e) => {
                tracing::warn!(soft = ?limit.current, hard = ?limit.maximum, error = %e, "cannot raise the open files limit")
            }
        }
    }
}

impl RunningBroker {
    /// Stops accepting, flushes and closes every log so the next start needs no recovery.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.cleaner.shutdown();
        let broker = self.broker.clone();
        let _ = tokio::task::spawn_blocking(move || broker.replicas.shutdown()).await;
        tracing::info!("broker stopped cleanly");
    }
}

async fn retention_loop(broker: Arc<Broker>) {
    let interval = Duration::from_millis(broker.config.retention_check_interval_ms);
    loop {
        tokio::time::sleep(interval).await;
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.replicas.apply_retention(now_ms())).await;
    }
}

/// `producer.id.expiration.check.interval.ms`: drop the state of idle idempotent producers.
async fn producer_expiry_loop(broker: Arc<Broker>) {
    let interval = Duration::from_millis(broker.config.producer_id_expiration_check_interval_ms);
    loop {
        tokio::time::sleep(interval).await;
        let b = broker.clone();
        // Dynamic in Kafka (ProducerStateManagerConfig): read the effective value every round.
        let expiration_ms = (b.effective_config().broker_f64("producer.id.expiration.ms") as i64).max(1);
        let _ = tokio::task::spawn_blocking(move || b.replicas.expire_producers(now_ms(), expiration_ms)).await;
    }
}

/// `flush.ms`: partitions whose data has waited long enough in the page cache get an fsync.
async fn time_flush_loop(broker: Arc<Broker>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = now_ms();
        for p in broker.replicas.all() {
            p.maybe_flush_on_time(now);
        }
    }
}
