//! Test support: start the real `strom` binary on a free loopback port with a temporary data dir, and speak the
//! Kafka protocol to it with the kafka-protocol crate's client-side encoding.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

pub struct Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub extra: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let mut s = Server {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strom"));
        cmd.arg("server")
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://127.0.0.1:{}", self.port))
            .arg("--override")
            .arg(format!("log.dirs={}", self.data_dir().display()));
        for e in &self.extra {
            cmd.arg("--override").arg(e);
        }
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("broker.log")).unwrap();
        cmd.stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("start strom"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "broker did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    pub fn restart_after_kill9(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn connect(&self) -> Conn {
        Conn::new(TcpStream::connect(("127.0.0.1", self.port)).unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Conn {
    pub stream: TcpStream,
    correlation: i32,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Conn { stream, correlation: 0 }
    }

    /// Sends a typed request at `version` and decodes the typed response.
    pub fn send<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        self.correlation += 1;
        let key = ApiKey::try_from(R::KEY).unwrap();
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("strom-test")));
        let mut body = BytesMut::new();
        header.encode(&mut body, key.request_header_version(version)).unwrap();
        req.encode(&mut body, version).unwrap();
        self.write_frame(&body);
        let mut resp = self.read_frame().expect("response");
        let rh = ResponseHeader::decode(&mut resp, key.response_header_version(version)).unwrap();
        assert_eq!(rh.correlation_id, self.correlation);
        R::Response::decode(&mut resp, version).unwrap()
    }

    pub fn write_frame(&mut self, body: &[u8]) {
        let mut out = BytesMut::new();
        out.put_i32(body.len() as i32);
        out.put_slice(body);
        self.stream.write_all(&out).unwrap();
    }

    /// Reads one frame; `None` when the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        if self.stream.read_exact(&mut size).is_err() {
            return None;
        }
        let n = i32::from_be_bytes(size) as usize;
        let mut buf = vec![0u8; n];
        self.stream.read_exact(&mut buf).ok()?;
        Some(Bytes::from(buf))
    }

    /// True when the broker closed this connection (EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

pub fn get_i16(b: &mut Bytes) -> i16 {
    b.get_i16()
}

/// Polls `check` until it holds, failing after 10 s: a broker may answer CreateTopics and CreatePartitions before
/// its own metadata shows the change (Apache Kafka's brokers learn it from the metadata log a moment later).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "never true: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every partition of a just-created topic has a leader in the broker's metadata.
pub async fn topic_is_ready(admin: &strom_client::Admin, topic: &str, partitions: i32) {
    eventually(&format!("topic {topic} has {partitions} partitions with leaders"), || async {
        match admin.describe_topics(&[topic.to_string()]).await {
            Ok(d) => d[0].partitions.len() == partitions as usize && d[0].partitions.iter().all(|p| p.leader >= 0),
            Err(_) => false,
        }
    })
    .await;
}
