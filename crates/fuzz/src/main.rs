//! strom-fuzz: starts a broker process, asks it which APIs and versions it serves (ApiVersions), and sends it
//! mutated requests for every one of them over many connections, watching the process for crashes, hangs and
//! its peak memory. A frame that crashes the broker is narrowed down by replaying the recent frames one by one
//! against a fresh broker, and saved to the corpus, which every later run replays first.
//!
//!   strom-fuzz --broker-bin target/release/strom --frames 1000000 --seed 7 --corpus compat/fuzz-corpus

mod mutate;
mod seeds;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use clap::Parser;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use mutate::{mutate, Rng};

#[derive(Parser)]
#[command(about = "Fuzz a Strom broker with mutated requests for every API and version it advertises")]
struct Args {
    /// The broker binary to start (as `<bin> server --override ...`).
    #[arg(long)]
    broker_bin: PathBuf,
    /// Mutated frames to send in total.
    #[arg(long, default_value_t = 100_000)]
    frames: u64,
    /// Seed of the mutations: the same seed sends the same frames.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Frames sent on a connection before it is closed and a new one opened.
    #[arg(long, default_value_t = 16)]
    frames_per_connection: usize,
    /// Regression frames (one raw request per file, without the size prefix): replayed first; crashers are added.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Start a fresh broker with an empty data directory after this many frames, so state the fuzzer creates
    /// (topics, groups, configs) does not pile up over a long run.
    #[arg(long, default_value_t = 100_000)]
    restart_every: u64,
    /// Extra broker config overrides (key=value).
    #[arg(long = "override")]
    overrides: Vec<String>,
    /// Keep fuzzing after a crash (restarting the broker) instead of stopping.
    #[arg(long)]
    keep_going: bool,
}

struct Broker {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Broker {
    fn start(args: &Args) -> Result<Broker> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = dir.path().join("broker.log");
        let mut cmd = Command::new(&args.broker_bin);
        cmd.arg("server")
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://127.0.0.1:{port}"))
            .arg("--override")
            .arg(format!("log.dirs={}", dir.path().join("data").display()));
        for o in &args.overrides {
            cmd.arg("--override").arg(o);
        }
        let out = std::fs::File::create(&log)?;
        // No backtraces: an abort should end the process at once, not after symbolizing.
        cmd.stdout(Stdio::null()).stderr(out.try_clone()?).env("RUST_LOG", "warn").env("RUST_BACKTRACE", "0");
        let child = cmd.spawn().with_context(|| format!("starting {}", args.broker_bin.display()))?;
        let mut broker = Broker { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), _dir: dir, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while api_versions(broker.addr).is_err() {
            if let Some(status) = broker.child.try_wait()? {
                bail!("broker exited at start ({status}):\n{}", broker.log_tail());
            }
            if Instant::now() > deadline {
                bail!("broker did not answer ApiVersions within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's peak resident set (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn frame(key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let header_version = ApiKey::try_from(key).map(|k| k.request_header_version(version)).unwrap_or(1);
    let header = RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("strom-fuzz")));
    let mut buf = BytesMut::new();
    // A header always encodes; the fallback keeps the fuzzer going with a bare v1 header if it ever does not.
    if header.encode(&mut buf, header_version).is_err() {
        let _ = header.encode(&mut buf, 1);
    }
    buf.extend_from_slice(body);
    buf.to_vec()
}

fn send_framed(stream: &mut TcpStream, frame: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(4 + frame.len());
    out.extend_from_slice(&(frame.len() as i32).to_be_bytes());
    out.extend_from_slice(frame);
    stream.write_all(&out)
}

/// Reads one response body; Ok(None) when the broker closed the connection.
fn read_response(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = i32::from_be_bytes(size).max(0) as usize;
    let mut body = Vec::new();
    stream.take(n as u64).read_to_end(&mut body)?;
    Ok(Some(body))
}

/// The APIs the broker advertises, as (key, min, max).
fn api_versions(addr: SocketAddr) -> Result<Vec<(i16, i16, i16)>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut body = BytesMut::new();
    ApiVersionsRequest::default().encode(&mut body, 0)?;
    send_framed(&mut s, &frame(ApiKey::ApiVersions as i16, 0, 1, &body))?;
    let resp = read_response(&mut s)?.context("closed")?;
    let mut buf = bytes::Bytes::from(resp);
    let _ = ResponseHeader::decode(&mut buf, 0)?;
    let r = ApiVersionsResponse::decode(&mut buf, 0)?;
    Ok(r.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect())
}

/// Creates the topic the seeds name, so that mutated requests get past "unknown topic" into the handlers.
fn create_seed_topic(addr: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let req = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(seeds::TOPIC)))
            .with_num_partitions(1)
            .with_replication_factor(-1),
    ]);
    let mut body = BytesMut::new();
    req.encode(&mut body, 5)?;
    send_framed(&mut s, &frame(ApiKey::CreateTopics as i16, 5, 1, &body))?;
    read_response(&mut s)?.context("broker closed the connection on CreateTopics")?;
    Ok(())
}

/// One seed: an API key, a version (also one just outside the served range), and a well-formed body.
type Seed = (i16, i16, Vec<u8>);

fn seed_table(apis: &[(i16, i16, i16)]) -> Vec<Seed> {
    let mut out = Vec::new();
    for &(key, min, max) in apis {
        let Ok(api) = ApiKey::try_from(key) else { continue };
        for version in min..=max {
            for body in seeds::seeds(api, version) {
                out.push((key, version, body));
            }
        }
        // The version checks around the served range.
        for version in [min - 1, max + 1] {
            for body in seeds::seeds(api, max) {
                out.push((key, version, body));
            }
        }
    }
    out
}

/// Sends `frames` pipelined on one connection and reads what comes back. The broker handles a connection's
/// requests in order and closes it at the first one it refuses, so the frames after that one are sent again on a
/// new connection: every frame is handled. Stops waiting when nothing arrives for a moment (a long-poll, acks=0).
/// Returns how many frames the broker answered.
fn exchange(addr: SocketAddr, frames: &[Vec<u8>]) -> std::io::Result<usize> {
    let mut answered = 0;
    let mut start = 0;
    while start < frames.len() {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        for f in &frames[start..] {
            if send_framed(&mut s, f).is_err() {
                break; // closed by the broker after a refused frame: the rest go on a new connection
            }
        }
        let mut got = 0;
        let closed = loop {
            if start + got == frames.len() {
                break false;
            }
            match read_response(&mut s) {
                Ok(Some(_)) => got += 1,
                Ok(None) => break true,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    break false
                }
                Err(_) => break true,
            }
        };
        answered += got;
        if !closed {
            break;
        }
        // Frame `start + got` was refused (or, rarely, answered by nothing: acks=0); resume after it.
        start += got + 1;
    }
    Ok(answered)
}

struct Shared {
    sent: AtomicU64,
    /// Frames the broker answered (the rest it refused by closing the connection, or had not answered yet).
    answered: AtomicU64,
    stop: AtomicBool,
    /// Recent frames of every worker, the candidates when the broker dies.
    recent: Mutex<VecDeque<Vec<u8>>>,
}

const RECENT: usize = 512;

fn fuzz_round(
    args: &Args,
    broker_addr: SocketAddr,
    table: &Arc<Vec<Seed>>,
    shared: &Arc<Shared>,
    frames: u64,
    round: u64,
) {
    let per_worker = frames.div_ceil(args.connections as u64);
    let workers: Vec<_> = (0..args.connections)
        .map(|w| {
            let table = table.clone();
            let shared = shared.clone();
            let per_conn = args.frames_per_connection.max(1);
            let seed = args.seed ^ (round << 32) ^ (w as u64 + 1).wrapping_mul(0x1000_0001);
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed);
                let mut done = 0u64;
                let mut correlation = 0i32;
                while done < per_worker && !shared.stop.load(Ordering::Relaxed) {
                    let n = per_conn.min((per_worker - done) as usize);
                    let mut batch = Vec::with_capacity(n);
                    for _ in 0..n {
                        let (key, version, body) = &table[rng.below(table.len())];
                        let mut body = body.clone();
                        mutate(&mut rng, &mut body);
                        correlation = correlation.wrapping_add(1);
                        batch.push(frame(*key, *version, correlation, &body));
                    }
                    if let Ok(mut recent) = shared.recent.lock() {
                        for f in &batch {
                            if recent.len() == RECENT {
                                recent.pop_front();
                            }
                            recent.push_back(f.clone());
                        }
                    }
                    match exchange(broker_addr, &batch) {
                        Ok(n) => {
                            shared.answered.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            // Nothing listens any more: the broker is gone, and the watcher will say so.
                            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                                shared.stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    done += n as u64;
                    shared.sent.fetch_add(n as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

fn describe(frame: &[u8]) -> String {
    if frame.len() < 4 {
        return "short frame".into();
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}-v{version}"),
        Err(_) => format!("api{key}-v{version}"),
    }
}

/// FNV-1a: names a corpus file after its bytes, so the same crasher is saved once.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Sends one frame on its own connection to a running broker; true if the broker survived it.
fn survives(broker: &mut Broker, frame: &[u8]) -> bool {
    let _ = exchange(broker.addr, &[frame.to_vec()]);
    // The frame is decoded and handled on the broker's tasks while other connections are still served, so an
    // abort can land a moment after a new connection was answered: give it that moment before calling it safe.
    let answered = api_versions(broker.addr).is_ok();
    std::thread::sleep(CRASH_GRACE);
    answered && broker.alive()
}

/// How long a crash may take to show after the frame that caused it (an abort that prints a backtrace).
const CRASH_GRACE: Duration = Duration::from_millis(150);

fn replay_corpus(args: &Args, dir: &Path) -> Result<usize> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "bin"))
            .collect(),
        Err(_) => return Ok(0),
    };
    files.sort();
    let mut broker = Broker::start(args)?;
    create_seed_topic(broker.addr)?;
    for f in &files {
        let bytes = std::fs::read(f)?;
        if !survives(&mut broker, &bytes) {
            let tail = broker.log_tail();
            broker.stop();
            bail!("corpus frame {} ({}) crashes the broker:\n{tail}", f.display(), describe(&bytes));
        }
    }
    broker.stop();
    Ok(files.len())
}

/// After a crash: which of the recent frames kills a fresh broker on its own.
fn triage(args: &Args, candidates: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
    let mut crashers = Vec::new();
    let mut broker = Broker::start(args)?;
    create_seed_topic(broker.addr)?;
    for f in candidates.into_iter().rev() {
        if !survives(&mut broker, &f) {
            broker.stop();
            // Confirmed only if it kills a fresh broker on its own, not one that an earlier frame had doomed.
            broker = Broker::start(args)?;
            create_seed_topic(broker.addr)?;
            if !survives(&mut broker, &f) {
                crashers.push(f);
                broker.stop();
                broker = Broker::start(args)?;
                create_seed_topic(broker.addr)?;
            }
        }
    }
    broker.stop();
    Ok(crashers)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    if let Some(dir) = &args.corpus {
        let n = replay_corpus(&args, dir)?;
        println!("corpus: {n} regression frames replayed, broker survived all");
    }
    let shared = Arc::new(Shared {
        sent: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        recent: Mutex::new(VecDeque::new()),
    });
    let mut crashes = 0u64;
    let mut peak_kib = 0u64;
    let mut round = 0u64;
    let mut seeds_len = 0;
    while shared.sent.load(Ordering::Relaxed) < args.frames {
        let mut broker = Broker::start(&args)?;
        create_seed_topic(broker.addr)?;
        let table = Arc::new(seed_table(&api_versions(broker.addr)?));
        seeds_len = table.len();
        let frames = args.restart_every.min(args.frames - shared.sent.load(Ordering::Relaxed));
        // A watcher stops the workers as soon as the broker dies, so the recent frames still hold the culprit.
        let pid = broker.child.id();
        let watch_shared = shared.clone();
        let watcher_done = Arc::new(AtomicBool::new(false));
        let wd = watcher_done.clone();
        let watcher = std::thread::spawn(move || {
            while !wd.load(Ordering::Relaxed) {
                let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // A zombie ('Z') or a vanished process has crashed.
                let field = state.rsplit(')').next().unwrap_or("").split_whitespace().next().unwrap_or("Z");
                if field == "Z" || field == "X" {
                    watch_shared.stop.store(true, Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        fuzz_round(&args, broker.addr, &table, &shared, frames, round);
        watcher_done.store(true, Ordering::Relaxed);
        let _ = watcher.join();
        round += 1;
        // A hang is a failure as much as a crash: the broker must still answer a new connection.
        let answering = broker.alive() && api_versions(broker.addr).is_ok();
        peak_kib = peak_kib.max(broker.peak_rss_kib());
        if answering {
            broker.stop();
            continue;
        }
        crashes += 1;
        let status = broker.child.try_wait().ok().flatten().map(|s| s.to_string()).unwrap_or("hung".into());
        eprintln!(
            "broker crashed or hung ({status}) after {} frames:\n{}",
            shared.sent.load(Ordering::Relaxed),
            broker.log_tail()
        );
        broker.stop();
        let candidates: Vec<Vec<u8>> = shared.recent.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default();
        let crashers = triage(&args, candidates)?;
        for c in &crashers {
            let name = format!("{}-{:016x}.bin", describe(c), fnv(c));
            eprintln!("crasher: {name}");
            if let Some(dir) = &args.corpus {
                std::fs::create_dir_all(dir)?;
                std::fs::write(dir.join(&name), c)?;
            }
        }
        if crashers.is_empty() {
            eprintln!("no single recent frame crashes a fresh broker on its own (a sequence or concurrency bug)");
        }
        shared.stop.store(false, Ordering::Relaxed);
        if !args.keep_going {
            break;
        }
    }
    let sent = shared.sent.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "strom-fuzz: seed {} frames {sent} (answered {}) seeds {seeds_len} crashes {crashes} peak broker RSS {:.1} MiB, {:.0} s ({:.0} frames/s)",
        args.seed,
        shared.answered.load(Ordering::Relaxed),
        peak_kib as f64 / 1024.0,
        secs,
        sent as f64 / secs.max(0.001)
    );
    if crashes > 0 {
        std::process::exit(1);
    }
    Ok(())
}
