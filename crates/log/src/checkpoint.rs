//! Small single-value files in the partition directory, written atomically (temp file, fsync,
//! rename, directory fsync) so a crash leaves either the old or the new value.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Log start offset as advanced by DeleteRecords (retention's advances follow from the first
/// segment's base offset and need no file).
pub(crate) const LOG_START_OFFSET: &str = "log-start-offset";
/// Segments before this offset are fully durable (data and indexes), so crash recovery only
/// rescans segments from here on.
pub(crate) const RECOVERY_POINT: &str = "recovery-point";
/// Present only between a clean close and the next open; holds the log end offset at close.
pub(crate) const CLEAN_SHUTDOWN: &str = "clean-shutdown";

/// The log cleaner's progress on a compacted log: the first dirty offset and when each cleaned range was first
/// cleaned (for delete.retention.ms); see `cleaner::state`.
pub(crate) const CLEANER: &str = "cleaner-checkpoint";

pub(crate) const ALL: [&str; 4] = [LOG_START_OFFSET, RECOVERY_POINT, CLEAN_SHUTDOWN, CLEANER];
const TMP_SUFFIX: &str = ".tmp";

fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{TMP_SUFFIX}"))
}

/// Whether `file_name` is a temp file left by an interrupted `write_offset`.
pub(crate) fn is_leftover_temp(file_name: &str) -> bool {
    ALL.iter().any(|name| file_name.strip_suffix(TMP_SUFFIX) == Some(name))
}

/// Reads a checkpoint. Missing or unreadable content yields `None` (with a warning for the
/// latter): every checkpoint has a safe fallback.
pub(crate) fn read_offset(dir: &Path, name: &str) -> io::Result<Option<i64>> {
    match fs::read_to_string(dir.join(name)) {
        Ok(s) => match s.trim().parse::<i64>() {
            Ok(v) => Ok(Some(v)),
            Err(_) => {
                tracing::warn!(dir = %dir.display(), file = name, "ignoring unparsable checkpoint file");
                Ok(None)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn write_offset(dir: &Path, name: &str, value: i64) -> io::Result<()> {
    write_text(dir, name, &format!("{value}\n"))
}

/// Reads a whole checkpoint file; `None` if it does not exist.
pub(crate) fn read_text(dir: &Path, name: &str) -> io::Result<Option<String>> {
    match fs::read_to_string(dir.join(name)) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces a checkpoint file atomically and durably.
pub(crate) fn write_text(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    let tmp = tmp_path(dir, name);
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Removes a checkpoint durably (a resurrected clean-shutdown marker would skip recovery).
pub(crate) fn remove(dir: &Path, name: &str) -> io::Result<()> {
    match fs::remove_file(dir.join(name)) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes the creation or removal of `dir` itself durable.
pub(crate) fn sync_parent(dir: &Path) -> io::Result<()> {
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

/// Makes file creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_offset(dir.path(), RECOVERY_POINT).unwrap(), None);
        write_offset(dir.path(), RECOVERY_POINT, 42).unwrap();
        write_offset(dir.path(), RECOVERY_POINT, 43).unwrap();
        assert_eq!(read_offset(dir.path(), RECOVERY_POINT).unwrap(), Some(43));
        assert!(!tmp_path(dir.path(), RECOVERY_POINT).exists());
        remove(dir.path(), RECOVERY_POINT).unwrap();
        remove(dir.path(), RECOVERY_POINT).unwrap();
        assert_eq!(read_offset(dir.path(), RECOVERY_POINT).unwrap(), None);
        fs::write(dir.path().join(LOG_START_OFFSET), "garbage").unwrap();
        assert_eq!(read_offset(dir.path(), LOG_START_OFFSET).unwrap(), None);
        assert!(is_leftover_temp("clean-shutdown.tmp"));
        assert!(!is_leftover_temp("partition.metadata.tmp"));
    }
}
