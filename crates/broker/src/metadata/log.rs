//! The local metadata log, `meta/metadata.log`: fsynced before a change is applied, replayed on start.
//!
//! Format (version 1): a header of `MAGIC` and a big-endian u32 format version, then one frame per committed change
//! (all records of one `Broker::commit`):
//!
//! ```text
//! length: u32 BE | crc: u32 BE, CRC-32C of the length bytes and the payload | payload: JSON array of records
//! ```
//!
//! A frame is applied whole or not at all. Replay stops at the first frame that is incomplete or fails its CRC, and
//! tells a torn tail from corruption the way a crash can leave the file: a crash tears only the last append, so
//! nothing valid can follow a torn frame. If any later byte offset starts a frame whose CRC checks, the bad frame is
//! mid-file corruption and the broker refuses to start, naming the file and offset (truncating there would drop
//! committed changes, and the partitions they created would look like strays). Otherwise the bad bytes are a torn
//! tail and are truncated with a warning. A bit flip in the very last frame looks like a torn write and is dropped
//! the same way, as Kafka's log recovery does.
//!
//! The magic starts with a byte that is not UTF-8, so a broker from before this format, which read JSON lines,
//! fails on the file instead of truncating it. A JSON-lines log from such a broker is converted on start, and the
//! old file is kept beside the new one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{MetadataImage, MetadataRecord};

const MAGIC: [u8; 8] = [0x89, b'S', b'T', b'R', b'O', b'M', b'M', b'D'];
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = MAGIC.len() + 4;
const FRAME_HEADER_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum MetadataLogError {
    #[error("metadata log {}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "metadata log {} is corrupt at byte offset {offset}: {reason}; refusing to start (no partition directory \
         was changed; restore the file or repair it at that offset)",
        .path.display()
    )]
    Corrupt { path: PathBuf, offset: u64, reason: String },
}

pub struct MetadataLog {
    path: PathBuf,
    file: File,
    /// Length of the valid log; a failed append is cut back to it.
    len: u64,
    /// Set when a write or fsync failed and the file could not be restored: after a failed fsync the kernel may
    /// have dropped the pages, so nothing more is appended until a restart replays what is really on disk.
    failed: bool,
}

/// What replay found in a framed log.
struct Replay {
    image: MetadataImage,
    records: usize,
    /// Where the valid frames end; bytes after it are a torn tail.
    valid_len: usize,
}

impl MetadataLog {
    /// Opens (creating or converting if needed) the log in `meta_dir` and replays it into a fresh image; returns
    /// the image and the number of records replayed.
    pub fn open(meta_dir: &Path) -> Result<(MetadataLog, MetadataImage, usize), MetadataLogError> {
        let path = meta_dir.join("metadata.log");
        let io = |source| MetadataLogError::Io { path: path.clone(), source };
        std::fs::create_dir_all(meta_dir).map_err(io)?;
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;

        if bytes.len() < HEADER_LEN && header().starts_with(&bytes) {
            // New, or a header whose first write was torn: nothing was ever committed to it.
            file.set_len(0).map_err(io)?;
            file.write_all(&header()).map_err(io)?;
            file.sync_all().map_err(io)?;
            sync_dir(meta_dir).map_err(io)?;
            bytes = header();
        } else if bytes.first() == Some(&b'{') {
            bytes = convert_json_lines(meta_dir, &path, &bytes)?;
            file = OpenOptions::new().read(true).append(true).open(&path).map_err(io)?;
        }

        let replay = replay(&path, &bytes)?;
        if replay.valid_len < bytes.len() {
            tracing::warn!(
                path = %path.display(), offset = replay.valid_len, dropped_bytes = bytes.len() - replay.valid_len,
                "truncating a torn tail of the metadata log (an append interrupted by a crash)"
            );
            file.set_len(replay.valid_len as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let log = MetadataLog { path, file, len: replay.valid_len as u64, failed: false };
        Ok((log, replay.image, replay.records))
    }

    /// Appends one committed change durably (one frame, one write, one fsync).
    pub fn append(&mut self, records: &[MetadataRecord]) -> std::io::Result<()> {
        if self.failed {
            return Err(std::io::Error::other(
                "an earlier write to the metadata log failed; restart the broker to replay what is on disk",
            ));
        }
        let frame = encode_frame(records)?;
        if let Err(e) = self.file.write_all(&frame) {
            // A partial frame left in place would sit under the next append and read as mid-file corruption.
            if self.file.set_len(self.len).and_then(|()| self.file.sync_all()).is_err() {
                self.failed = true;
            }
            return Err(e);
        }
        if let Err(e) = self.file.sync_data() {
            // After a failed fsync the written pages cannot be trusted either way.
            self.failed = true;
            return Err(e);
        }
        self.len += frame.len() as u64;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn header() -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    h
}

fn encode_frame(records: &[MetadataRecord]) -> std::io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(records).map_err(std::io::Error::other)?;
    let len = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("metadata change too large"))?;
    let len = len.to_be_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &payload);
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    frame.extend_from_slice(&len);
    frame.extend_from_slice(&crc.to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// The payload of a frame starting at `pos` if it is complete and its CRC checks, and where the frame ends.
fn frame_at(bytes: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let head = bytes.get(pos..pos.checked_add(FRAME_HEADER_LEN)?)?;
    let len_bytes: [u8; 4] = head[..4].try_into().ok()?;
    let crc = u32::from_be_bytes(head[4..].try_into().ok()?);
    let start = pos + FRAME_HEADER_LEN;
    let end = start.checked_add(u32::from_be_bytes(len_bytes) as usize)?;
    let payload = bytes.get(start..end)?;
    (crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload) == crc).then_some((payload, end))
}

fn replay(path: &Path, bytes: &[u8]) -> Result<Replay, MetadataLogError> {
    let corrupt =
        |offset: usize, reason: String| MetadataLogError::Corrupt { path: path.into(), offset: offset as u64, reason };
    if !bytes.starts_with(&MAGIC) {
        return Err(corrupt(0, "not a Strom metadata log (unknown file header)".into()));
    }
    let version = bytes
        .get(MAGIC.len()..HEADER_LEN)
        .and_then(|v| v.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| corrupt(MAGIC.len(), "file header is incomplete".into()))?;
    if version != FORMAT_VERSION {
        return Err(corrupt(
            MAGIC.len(),
            format!("unknown metadata log format version {version} (this broker reads version {FORMAT_VERSION})"),
        ));
    }
    let mut image = MetadataImage::default();
    let mut records = 0;
    let mut pos = HEADER_LEN;
    while pos < bytes.len() {
        let Some((payload, end)) = frame_at(bytes, pos) else {
            if let Some(next) = (pos + 1..bytes.len()).find(|&q| frame_at(bytes, q).is_some()) {
                return Err(corrupt(
                    pos,
                    format!("frame fails its length or CRC check, and a valid frame follows at byte offset {next}"),
                ));
            }
            break; // a torn tail: nothing valid follows
        };
        let change: Vec<MetadataRecord> = serde_json::from_slice(payload)
            .map_err(|e| corrupt(pos, format!("frame passes its CRC but its records cannot be read: {e}")))?;
        for r in &change {
            image.apply(r);
        }
        records += change.len();
        pos = end;
    }
    Ok(Replay { image, records, valid_len: pos })
}

/// Converts a JSON-lines log (one record per line, written by brokers before the framed format) to the framed
/// format: the new file is written and fsynced beside it, the old one is kept as `metadata.log.v0`, then the new one
/// is renamed over `metadata.log`. A crash at any point leaves either the old file (converted again on the next
/// start) or the new one. Returns the new file's bytes.
fn convert_json_lines(meta_dir: &Path, path: &Path, bytes: &[u8]) -> Result<Vec<u8>, MetadataLogError> {
    let corrupt =
        |offset: usize, reason: String| MetadataLogError::Corrupt { path: path.into(), offset: offset as u64, reason };
    let mut out = header();
    let mut pos = 0;
    let mut count = 0;
    while pos < bytes.len() {
        let (line, next) = match bytes[pos..].iter().position(|&b| b == b'\n') {
            Some(n) => (&bytes[pos..pos + n], pos + n + 1),
            None => (&bytes[pos..], bytes.len()),
        };
        let complete = next <= bytes.len() && bytes.get(next - 1) == Some(&b'\n');
        let parsed = if complete { serde_json::from_slice::<MetadataRecord>(line).ok() } else { None };
        match parsed {
            Some(r) => {
                // One frame per old line: the old format did not record which records were one change.
                out.extend_from_slice(
                    &encode_frame(&[r]).map_err(|source| MetadataLogError::Io { path: path.into(), source })?,
                );
                count += 1;
            }
            None if next >= bytes.len() => {
                tracing::warn!(
                    path = %path.display(), offset = pos, dropped_bytes = bytes.len() - pos,
                    "dropping a torn last line of the JSON-lines metadata log"
                );
                break;
            }
            None => {
                return Err(corrupt(
                    pos,
                    "unreadable record in a JSON-lines metadata log, with more lines after it".into(),
                ))
            }
        }
        pos = next;
    }

    let io = |source| MetadataLogError::Io { path: path.into(), source };
    let tmp = meta_dir.join("metadata.log.tmp");
    {
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&out).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    let kept = (0..)
        .map(|i| meta_dir.join(if i == 0 { "metadata.log.v0".to_string() } else { format!("metadata.log.v0.{i}") }))
        .find(|p| !p.exists())
        .unwrap_or_else(|| meta_dir.join("metadata.log.v0"));
    // A second name for the old file before the rename replaces it: there is never a moment without either.
    if std::fs::hard_link(path, &kept).is_err() {
        std::fs::copy(path, &kept).map_err(io)?;
        File::open(&kept).and_then(|f| f.sync_all()).map_err(io)?;
    }
    sync_dir(meta_dir).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(meta_dir).map_err(io)?;
    tracing::info!(
        path = %path.display(), records = count, old_file = %kept.display(), format_version = FORMAT_VERSION,
        "converted the JSON-lines metadata log to the framed format; the old file is kept"
    );
    Ok(out)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::TopicRecord { name: name.into(), topic_id: Uuid::new_v4() }
    }

    fn partition(topic_id: Uuid, partition: i32) -> MetadataRecord {
        MetadataRecord::PartitionRecord {
            topic_id,
            partition,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
        }
    }

    /// A log of three changes (one per topic a, b, c); returns the file's path and the offsets where frames start.
    fn three_changes(dir: &Path) -> (PathBuf, Vec<u64>) {
        let (mut log, img, _) = MetadataLog::open(dir).unwrap();
        assert!(img.topics.is_empty());
        let mut starts = Vec::new();
        for name in ["a", "b", "c"] {
            starts.push(std::fs::metadata(log.path()).unwrap().len());
            let t = topic(name);
            let MetadataRecord::TopicRecord { topic_id, .. } = t else { unreachable!() };
            log.append(&[t, partition(topic_id, 0), partition(topic_id, 1)]).unwrap();
        }
        (log.path().to_path_buf(), starts)
    }

    fn names(img: &MetadataImage) -> Vec<&str> {
        img.topics.keys().map(String::as_str).collect()
    }

    #[test]
    fn replays_changes_whole() {
        let dir = tempfile::tempdir().unwrap();
        three_changes(dir.path());
        let (_, img, n) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(n, 9);
        assert_eq!(names(&img), ["a", "b", "c"]);
        assert!(img.topics.values().all(|t| t.partitions.len() == 2));
    }

    /// Any bytes after the last frame, valid UTF-8 or not, and any prefix of a frame, are a torn tail: truncated,
    /// and the log takes appends again.
    #[test]
    fn torn_tail_of_any_bytes_is_truncated() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let frame = encode_frame(&[topic("d")]).unwrap();
        for case in 0..60 {
            let dir = tempfile::tempdir().unwrap();
            let (path, _) = three_changes(dir.path());
            let good = std::fs::read(&path).unwrap();
            let tail: Vec<u8> = match case % 3 {
                0 => (0..next() % 300 + 1).map(|_| next() as u8).collect(),
                1 => frame[..(next() as usize % (frame.len() - 1)) + 1].to_vec(),
                _ => vec![0xff, 0xfe, b'{', 0x80, 0xc3],
            };
            std::fs::write(&path, [good.as_slice(), &tail].concat()).unwrap();
            let (mut log, img, n) = MetadataLog::open(dir.path()).unwrap();
            assert_eq!((n, names(&img)), (9, vec!["a", "b", "c"]), "case {case}");
            assert_eq!(std::fs::read(&path).unwrap(), good, "case {case}");
            log.append(&[topic("e")]).unwrap();
            let (_, img, _) = MetadataLog::open(dir.path()).unwrap();
            assert_eq!(names(&img), ["a", "b", "c", "e"]);
        }
    }

    /// Every single-bit flip in a frame that has a frame after it refuses to open, naming the file and the offset
    /// of the damaged frame, and leaves the file as it was.
    #[test]
    fn every_bit_flip_in_a_middle_frame_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = three_changes(dir.path());
        let good = std::fs::read(&path).unwrap();
        for byte in starts[1] as usize..starts[2] as usize {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                std::fs::write(&path, &bad).unwrap();
                let err = match MetadataLog::open(dir.path()) {
                    Ok(_) => panic!("flip of bit {bit} at byte {byte} was not detected"),
                    Err(e) => e,
                };
                match &err {
                    MetadataLogError::Corrupt { path: p, offset, .. } => {
                        assert_eq!((p, *offset), (&path, starts[1]), "bit {bit} at byte {byte}")
                    }
                    e => panic!("unexpected error {e}"),
                }
                let msg = err.to_string();
                assert!(msg.contains(&path.display().to_string()) && msg.contains(&format!("offset {}", starts[1])));
                assert_eq!(std::fs::read(&path).unwrap(), bad, "the file was changed");
            }
        }
        std::fs::write(&path, &good).unwrap();
        assert_eq!(MetadataLog::open(dir.path()).unwrap().2, 9);
    }

    #[test]
    fn unknown_version_and_header_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = three_changes(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MAGIC.len() + 3] = 2;
        std::fs::write(&path, &bytes).unwrap();
        let err = MetadataLog::open(dir.path()).err().unwrap();
        assert!(matches!(err, MetadataLogError::Corrupt { offset: 8, .. }), "{err}");
        assert!(err.to_string().contains("unknown metadata log format version 2"), "{err}");

        std::fs::write(&path, b"\x00\x01garbage that is no log at all").unwrap();
        let err = MetadataLog::open(dir.path()).err().unwrap();
        assert!(matches!(err, MetadataLogError::Corrupt { offset: 0, .. }), "{err}");
    }

    /// A record type this broker does not know, in a frame whose CRC checks, refuses.
    #[test]
    fn unknown_record_type_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = three_changes(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() as u64;
        let payload = br#"[{"type":"FeatureLevelRecord","name":"x","level":1}]"#;
        let len = (payload.len() as u32).to_be_bytes();
        bytes.extend_from_slice(&len);
        bytes.extend_from_slice(&crc32c::crc32c_append(crc32c::crc32c(&len), payload).to_be_bytes());
        bytes.extend_from_slice(payload);
        std::fs::write(&path, &bytes).unwrap();
        let err = MetadataLog::open(dir.path()).err().unwrap();
        assert!(matches!(err, MetadataLogError::Corrupt { offset, .. } if offset == at), "{err}");
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    /// A log written by the JSON-lines format (one record per line, a torn last line) is converted on open, the old
    /// file kept; a torn header of a new file is rewritten.
    #[test]
    fn converts_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        let mut old = Vec::new();
        for r in [topic("x"), MetadataRecord::TopicRecord { name: "y".into(), topic_id: id }, partition(id, 0)] {
            serde_json::to_writer(&mut old, &r).unwrap();
            old.push(b'\n');
        }
        old.extend_from_slice(b"{\"type\":\"RemoveTopicRecord\",\"topic_id\":\"\xff\xfe");
        let path = dir.path().join("metadata.log");
        std::fs::write(&path, &old).unwrap();
        let (mut log, img, n) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!((n, names(&img)), (3, vec!["x", "y"]));
        assert_eq!(img.topic("y").unwrap().partitions.len(), 1);
        assert_eq!(std::fs::read(dir.path().join("metadata.log.v0")).unwrap(), old);
        assert!(std::fs::read(&path).unwrap().starts_with(&MAGIC));
        log.append(&[MetadataRecord::RemoveTopicRecord { topic_id: id }]).unwrap();
        let (_, img, n) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!((n, names(&img)), (4, vec!["x"]));

        // A bad line with lines after it is not a torn tail.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        std::fs::write(&path, [&old[..20], b"\x01", &old[21..]].concat()).unwrap();
        let err = MetadataLog::open(dir.path()).err().unwrap();
        assert!(matches!(err, MetadataLogError::Corrupt { offset: 0, .. }), "{err}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metadata.log"), &header()[..5]).unwrap();
        let (_, img, n) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!((n, img.topics.len()), (0, 0));
        assert_eq!(std::fs::read(dir.path().join("metadata.log")).unwrap(), header());
    }
}
