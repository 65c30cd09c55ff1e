//! The local metadata log: one JSON record per line in `meta/metadata.log`, fsynced before the change is applied,
//! replayed on start. A torn last line (crash mid-append) is dropped and truncated away.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{MetadataImage, MetadataRecord};

pub struct MetadataLog {
    path: PathBuf,
    file: File,
}

impl MetadataLog {
    /// Opens (creating if needed) the log in `meta_dir` and replays it into a fresh image.
    pub fn open(meta_dir: &Path) -> std::io::Result<(MetadataLog, MetadataImage, usize)> {
        std::fs::create_dir_all(meta_dir)?;
        let path = meta_dir.join("metadata.log");
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
        let mut image = MetadataImage::default();
        let mut good_len: u64 = 0;
        let mut count = 0;
        {
            let mut reader = BufReader::new(&file);
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader.read_line(&mut line)?;
                if n == 0 {
                    break;
                }
                if !line.ends_with('\n') {
                    break; // torn write
                }
                match serde_json::from_str::<MetadataRecord>(line.trim_end()) {
                    Ok(r) => {
                        image.apply(&r);
                        good_len += n as u64;
                        count += 1;
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), offset = good_len, error = %e, "unreadable metadata record; truncating the metadata log here");
                        break;
                    }
                }
            }
        }
        let len = file.metadata()?.len();
        if len != good_len {
            tracing::warn!(path = %path.display(), dropped_bytes = len - good_len, "truncating torn tail of the metadata log");
            file.set_len(good_len)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::End(0))?;
        File::open(meta_dir)?.sync_all()?;
        Ok((MetadataLog { path, file }, image, count))
    }

    /// Appends records durably (one write, one fsync).
    pub fn append(&mut self, records: &[MetadataRecord]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn replays_and_drops_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        {
            let (mut log, img, _) = MetadataLog::open(dir.path()).unwrap();
            assert!(img.topics.is_empty());
            log.append(&[MetadataRecord::TopicRecord { name: "a".into(), topic_id: id }]).unwrap();
        }
        // Simulate a torn append.
        let p = dir.path().join("metadata.log");
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"type\":\"RemoveTop").unwrap();
        drop(f);
        let (mut log, img, n) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(n, 1);
        assert!(img.topic("a").is_some());
        log.append(&[MetadataRecord::RemoveTopicRecord { topic_id: id }]).unwrap();
        let (_, img, n) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(n, 2);
        assert!(img.topic("a").is_none());
    }
}
