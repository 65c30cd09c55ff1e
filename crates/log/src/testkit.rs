//! Hand-built RecordBatch v2 bytes for tests. Self-contained (only `crc32c`) so integration tests
//! can include it with `#[path]` and it independently checks the crate's own parsing.
#![allow(dead_code)]

/// What to put in a batch. Records carry no key and a `value_len`-byte value.
#[derive(Clone, Debug)]
pub struct BatchSpec {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub attributes: i16,
    /// Overrides the computed `record_count - 1`.
    pub last_offset_delta: Option<i32>,
    pub record_count: i32,
    pub value_len: usize,
    pub base_timestamp: i64,
    /// Record i gets `base_timestamp + i * timestamp_step`.
    pub timestamp_step: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// Seed for value bytes, so batches are distinguishable.
    pub fill: u8,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            base_offset: 0,
            partition_leader_epoch: -1,
            magic: 2,
            attributes: 0,
            last_offset_delta: None,
            record_count: 1,
            value_len: 10,
            base_timestamp: 0,
            timestamp_step: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            fill: 0,
        }
    }
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Encodes a batch per the spec with a correct CRC-32C.
pub fn build(spec: &BatchSpec) -> Vec<u8> {
    let mut records = Vec::new();
    for i in 0..spec.record_count.max(0) as i64 {
        let mut body = Vec::new();
        body.push(0u8); // record attributes
        put_varint(&mut body, i * spec.timestamp_step);
        put_varint(&mut body, i);
        put_varint(&mut body, -1); // null key
        put_varint(&mut body, spec.value_len as i64);
        body.extend((0..spec.value_len).map(|j| spec.fill.wrapping_add(i as u8).wrapping_add(j as u8)));
        put_varint(&mut body, 0); // no headers
        put_varint(&mut records, body.len() as i64);
        records.extend(body);
    }
    let n = spec.record_count.max(1) as i64;
    let max_ts = spec.base_timestamp + (n - 1) * spec.timestamp_step.max(0);
    let mut b = Vec::with_capacity(61 + records.len());
    b.extend(spec.base_offset.to_be_bytes());
    b.extend(((49 + records.len()) as i32).to_be_bytes());
    b.extend(spec.partition_leader_epoch.to_be_bytes());
    b.push(spec.magic as u8);
    b.extend([0u8; 4]); // crc, filled below
    b.extend(spec.attributes.to_be_bytes());
    b.extend(spec.last_offset_delta.unwrap_or(spec.record_count - 1).to_be_bytes());
    b.extend(spec.base_timestamp.to_be_bytes());
    b.extend(max_ts.to_be_bytes());
    b.extend(spec.producer_id.to_be_bytes());
    b.extend(spec.producer_epoch.to_be_bytes());
    b.extend(spec.base_sequence.to_be_bytes());
    b.extend(spec.record_count.to_be_bytes());
    b.extend(records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// `records` records of `value_len` bytes, all stamped `timestamp`.
pub fn batch(records: i32, value_len: usize, timestamp: i64) -> Vec<u8> {
    build(&BatchSpec {
        record_count: records,
        value_len,
        base_timestamp: timestamp,
        fill: timestamp as u8,
        ..Default::default()
    })
}

/// Reads big-endian fields of a stored batch, for assertions.
pub fn base_offset_of(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[0..8].try_into().unwrap())
}
pub fn batch_len_of(b: &[u8]) -> usize {
    12 + i32::from_be_bytes(b[8..12].try_into().unwrap()) as usize
}
pub fn leader_epoch_of(b: &[u8]) -> i32 {
    i32::from_be_bytes(b[12..16].try_into().unwrap())
}
pub fn max_timestamp_of(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[35..43].try_into().unwrap())
}
pub fn record_count_of(b: &[u8]) -> i32 {
    i32::from_be_bytes(b[57..61].try_into().unwrap())
}
pub fn crc_ok(b: &[u8]) -> bool {
    u32::from_be_bytes(b[17..21].try_into().unwrap()) == crc32c::crc32c(&b[21..])
}

/// Splits stored bytes into whole batches.
pub fn split_batches(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = batch_len_of(bytes);
        out.push(&bytes[..len]);
        bytes = &bytes[len..];
    }
    out
}

/// Bytes the log is expected to store for `input` appended at `base_offset` with `epoch`.
pub fn stamped(input: &[u8], base_offset: i64, epoch: i32) -> Vec<u8> {
    let mut b = input.to_vec();
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[12..16].copy_from_slice(&epoch.to_be_bytes());
    b
}
