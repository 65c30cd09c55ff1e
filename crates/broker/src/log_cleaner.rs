//! The broker's log cleaner threads (Kafka's LogCleaner / LogCleanerManager): `log.cleaner.threads` threads each
//! pick the dirtiest compacted partition nobody else is cleaning (a log whose cleaning is forced by
//! max.compaction.lag.ms or an expired tombstone first, then the highest dirty ratio), run one pass of
//! `strom_log::Log::clean` on it, and sleep `log.cleaner.backoff.ms` when nothing needs cleaning. All threads share
//! one I/O throttle (`log.cleaner.io.max.bytes.per.second`). The settings are read on every round, so dynamic broker
//! config changes apply without a restart.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;

use strom_log::{CleanerConfig, Throttler};

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::partition::Partition;

/// After a failed pass, the partition is left alone this long (Kafka marks it uncleanable until restart).
const RETRY_AFTER_FAILURE_MS: i64 = 60_000;

pub struct LogCleaner {
    broker: Weak<Broker>,
    stop: AtomicBool,
    wake: (Mutex<()>, Condvar),
    throttler: Throttler,
    /// Partitions being cleaned right now, so two threads never clean the same log.
    in_progress: Mutex<HashSet<(String, i32)>>,
    /// Partitions whose last pass failed, and when they may be tried again.
    failed: Mutex<HashMap<(String, i32), i64>>,
    spawned: Mutex<usize>,
}

struct Settings {
    enabled: bool,
    threads: usize,
    backoff: Duration,
    io_rate: f64,
    pass: CleanerConfig,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LogCleaner {
    /// Starts the cleaner threads for `broker` (they stop when `shutdown` is called or the broker is dropped).
    pub fn start(broker: &Arc<Broker>) -> Arc<LogCleaner> {
        let cleaner = Arc::new(LogCleaner {
            broker: Arc::downgrade(broker),
            stop: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
            throttler: Throttler::new(f64::MAX),
            in_progress: Mutex::new(HashSet::new()),
            failed: Mutex::new(HashMap::new()),
            spawned: Mutex::new(0),
        });
        if let Some(s) = cleaner.settings() {
            if !s.enabled {
                tracing::info!(
                    "log cleaner disabled (log.cleaner.enable=false): compacted topics will not be compacted"
                );
                return cleaner;
            }
            cleaner.ensure_threads(s.threads.max(1));
        }
        cleaner
    }

    /// Stops the threads after their current pass (a pass in progress notices the closed logs at its swap).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake.1.notify_all();
    }

    pub fn throttler(&self) -> &Throttler {
        &self.throttler
    }

    fn settings(&self) -> Option<Settings> {
        let broker = self.broker.upgrade()?;
        let c = broker.effective_config();
        let threads = c.broker_f64("log.cleaner.threads").max(0.0) as usize;
        let per_thread = threads.max(1);
        Some(Settings {
            enabled: c.broker_value("log.cleaner.enable").0.is_none_or(|v| v.eq_ignore_ascii_case("true")),
            threads,
            backoff: Duration::from_millis(c.broker_f64("log.cleaner.backoff.ms").max(1.0) as u64),
            io_rate: c.broker_f64("log.cleaner.io.max.bytes.per.second"),
            pass: CleanerConfig {
                dedupe_buffer_bytes: (c.broker_f64("log.cleaner.dedupe.buffer.size") as usize / per_thread)
                    .max(1 << 20),
                io_buffer_bytes: (c.broker_f64("log.cleaner.io.buffer.size") as usize / per_thread / 2).max(4096),
            },
        })
    }

    fn ensure_threads(self: &Arc<Self>, wanted: usize) {
        let mut spawned = lock(&self.spawned);
        while *spawned < wanted {
            let id = *spawned;
            let me = self.clone();
            let started = std::thread::Builder::new().name(format!("log-cleaner-{id}")).spawn(move || me.run(id));
            match started {
                Ok(_) => *spawned += 1,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a log cleaner thread");
                    break;
                }
            }
        }
    }

    fn sleep(&self, d: Duration) {
        let guard = lock(&self.wake.0);
        if !self.stop.load(Ordering::Acquire) {
            let _ = self.wake.1.wait_timeout(guard, d);
        }
    }

    fn run(self: Arc<Self>, id: usize) {
        tracing::debug!(thread = id, "log cleaner thread started");
        while !self.stop.load(Ordering::Acquire) {
            let Some(settings) = self.settings() else { return };
            self.throttler.set_rate(settings.io_rate);
            if id == 0 {
                self.ensure_threads(settings.threads);
            }
            if !settings.enabled || id >= settings.threads {
                self.sleep(settings.backoff);
                continue;
            }
            let Some(partition) = self.choose() else {
                self.sleep(settings.backoff);
                continue;
            };
            self.clean(&partition, &settings.pass);
        }
        tracing::debug!(thread = id, "log cleaner thread stopped");
    }

    /// The dirtiest compacted partition that is free to clean, marked in progress.
    fn choose(&self) -> Option<Arc<Partition>> {
        let broker = self.broker.upgrade()?;
        let now = now_ms();
        let mut in_progress = lock(&self.in_progress);
        let failed = lock(&self.failed);
        let mut best: Option<(bool, f64, Arc<Partition>)> = None;
        for p in broker.replicas.all() {
            let key = (p.topic.clone(), p.index);
            if p.is_closed() || in_progress.contains(&key) || failed.get(&key).is_some_and(|t| *t > now) {
                continue;
            }
            match p.log().cleanability(now, &p.log().transaction_state()) {
                Ok(Some(c)) if c.needs_cleaning => {
                    if best.as_ref().is_none_or(|(f, r, _)| (c.forced, c.dirty_ratio) > (*f, *r)) {
                        best = Some((c.forced, c.dirty_ratio, p));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "cannot assess log for cleaning")
                }
            }
        }
        let (_, _, p) = best?;
        in_progress.insert((p.topic.clone(), p.index));
        Some(p)
    }

    fn clean(&self, p: &Arc<Partition>, pass: &CleanerConfig) {
        let key = (p.topic.clone(), p.index);
        match p.log().clean(now_ms(), pass, &self.throttler, &p.log().transaction_state()) {
            Ok(Some(stats)) => tracing::debug!(
                topic = %p.topic, partition = p.index, segments = stats.segments_cleaned,
                bytes_read = stats.bytes_read, bytes_written = stats.bytes_written, elapsed_ms = stats.elapsed_ms,
                "cleaner pass done"
            ),
            Ok(None) => {}
            Err(e) if p.is_closed() => {
                tracing::debug!(topic = %p.topic, partition = p.index, error = %e, "cleaning stopped: partition closed")
            }
            Err(e) => {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "log cleaning failed; retrying later");
                lock(&self.failed).insert(key.clone(), now_ms() + RETRY_AFTER_FAILURE_MS);
            }
        }
        lock(&self.in_progress).remove(&key);
    }
}
