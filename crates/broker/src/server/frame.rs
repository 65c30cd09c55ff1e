//! Kafka framing: a 4-byte big-endian size, then the request. Sizes over `socket.request.max.bytes` or negative
//! close the connection, as in Kafka, before any body is buffered.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

/// What a frame body's buffer starts with before more bytes arrive.
const FIRST_READ: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("request size {size} is out of range (socket.request.max.bytes = {max})")]
    BadSize { size: i32, max: usize },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one request frame (without its size prefix). `Closed` on a clean EOF between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<Bytes, FrameError> {
    let size = read_size(reader, max).await?;
    read_body(reader, size).await
}

/// Reads a frame's size prefix and checks it. `Closed` on a clean EOF between frames.
pub async fn read_size<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<usize, FrameError> {
    let mut size_buf = [0u8; 4];
    match reader.read_exact(&mut size_buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(size_buf);
    // A request header is at least api key, version and correlation id.
    if size < 8 || size as usize > max {
        return Err(FrameError::BadSize { size, max });
    }
    Ok(size as usize)
}

/// Reads a frame's body of `size` bytes (checked by `read_size`).
pub async fn read_body<R: AsyncRead + Unpin>(reader: &mut R, size: usize) -> Result<Bytes, FrameError> {
    // Read into spare capacity (no zero-fill of large produce frames), never past this frame. The buffer grows with
    // the bytes that arrived (at most doubling), so a size prefix alone never allocates the size it claims.
    let mut buf: Vec<u8> = Vec::with_capacity(size.min(FIRST_READ));
    let mut limited = reader.take(size as u64);
    while buf.len() < size {
        if buf.len() == buf.capacity() {
            buf.reserve_exact(buf.len().max(FIRST_READ).min(size - buf.len()));
        }
        if limited.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_oversize_and_negative() {
        let mut data: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(read_frame(&mut data, 100).await, Err(FrameError::BadSize { .. })));
        let mut data: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(read_frame(&mut data, 100).await, Err(FrameError::BadSize { .. })));
        let mut data: &[u8] = &[];
        assert!(matches!(read_frame(&mut data, 100).await, Err(FrameError::Closed)));
        let mut data: &[u8] = &[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(read_frame(&mut data, 100).await.unwrap().len(), 8);
    }
}
