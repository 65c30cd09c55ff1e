//! Reads that never wait for the disk. A fetch at the tail of a partition is served on the runtime thread that
//! decoded it, which is only right while its bytes are in the page cache: a consumer far behind in a large active
//! segment, or one whose pages were evicted, would otherwise stall every connection of that thread on disk I/O.
//! Inside [`without_blocking`] the segment reads use `preadv2(RWF_NOWAIT)`, which fails instead of waiting, and the
//! caller retries the whole read on a blocking thread.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::error::LogError;

thread_local! {
    static NOWAIT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread's segment reads refusing to wait for the disk: such a read fails with an error for
/// which [`would_block`] is true.
pub fn without_blocking<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            NOWAIT.set(self.0);
        }
    }
    let _reset = Reset(NOWAIT.replace(true));
    f()
}

/// Whether `e` is a read that [`without_blocking`] refused because its bytes were not in memory.
pub fn would_block(e: &LogError) -> bool {
    matches!(e, LogError::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

/// `read_exact_at`, which under [`without_blocking`] reads only what the page cache holds.
pub(crate) fn read_exact_at(file: &File, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
    if !NOWAIT.get() {
        return file.read_exact_at(buf, pos);
    }
    while !buf.is_empty() {
        match rustix::io::preadv2(file, &mut [io::IoSliceMut::new(buf)], pos, rustix::io::ReadWriteFlags::NOWAIT) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                pos += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            // EAGAIN: not cached. Anything else (a filesystem or kernel without RWF_NOWAIT) cannot promise not
            // to wait either; the blocking retry reports real errors.
            Err(e) => return Err(io::Error::new(io::ErrorKind::WouldBlock, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_bytes_read_without_blocking_and_the_flag_is_scoped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello page cache").unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = [0u8; 4];
        // Just written, so cached (tmpfs or disk alike).
        without_blocking(|| read_exact_at(&file, &mut buf, 6)).unwrap();
        assert_eq!(&buf, b"page");
        assert!(!NOWAIT.get());
        // Past the end is an EOF, not a refusal.
        let e = without_blocking(|| read_exact_at(&file, &mut buf, 14)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn uncached_bytes_are_refused_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let file = File::open(&path).unwrap();
        file.sync_all().unwrap();
        // Drop the file's pages (possible once they are clean); where the filesystem keeps them anyway (tmpfs),
        // there is nothing to show.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        let mut buf = vec![0u8; 4096];
        match without_blocking(|| read_exact_at(&file, &mut buf, 512 * 1024)) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            Ok(()) => eprintln!("pages stayed cached here (tmpfs?): refusal not observable"),
        }
        // Outside the scope the same read waits and succeeds.
        read_exact_at(&file, &mut buf, 512 * 1024).unwrap();
        assert!(buf.iter().all(|b| *b == 7));
    }
}
