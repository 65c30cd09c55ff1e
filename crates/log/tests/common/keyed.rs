//! Keyed, optionally compressed RecordBatch v2 for compaction tests, and an independent decoder that turns what
//! the log serves back into records (so the tests check the cleaner's output, not its own parser).
#![allow(dead_code)]

use std::io::{Read, Write};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What to write: key, value (None = tombstone), timestamp, headers.
#[derive(Clone, Debug)]
pub struct In {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

pub fn rec(key: &str, value: Option<&str>, timestamp: i64) -> In {
    In {
        key: Some(key.as_bytes().to_vec()),
        value: value.map(|v| v.as_bytes().to_vec()),
        timestamp,
        headers: vec![("h".to_string(), Some(format!("{key}@{timestamp}").into_bytes()))],
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

fn put_bytes(out: &mut Vec<u8>, b: &Option<Vec<u8>>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

pub fn compress(codec: u8, data: &[u8]) -> Vec<u8> {
    match codec {
        0 => data.to_vec(),
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        2 => snap::raw::Encoder::new().compress_vec(data).unwrap(),
        3 => {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
            e.write_all(data).unwrap();
            let (out, r) = e.finish();
            r.unwrap();
            out
        }
        4 => zstd::stream::encode_all(data, 1).unwrap(),
        _ => panic!("codec"),
    }
}

fn decompress(codec: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match codec {
        0 => out.extend_from_slice(data),
        1 => {
            flate2::read::GzDecoder::new(data).read_to_end(&mut out).unwrap();
        }
        2 => {
            if data.starts_with(b"\x82SNAPPY\x00") {
                let mut pos = 16;
                while pos < data.len() {
                    let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
                    out.extend(snap::raw::Decoder::new().decompress_vec(&data[pos + 4..pos + 4 + len]).unwrap());
                    pos += 4 + len;
                }
            } else {
                out = snap::raw::Decoder::new().decompress_vec(data).unwrap();
            }
        }
        3 => {
            lz4::Decoder::new(data).unwrap().read_to_end(&mut out).unwrap();
        }
        4 => out = zstd::stream::decode_all(data).unwrap(),
        _ => panic!("codec"),
    }
    out
}

/// One batch holding `records` (timestamps relative to the first), compressed with `codec`.
pub fn keyed_batch(records: &[In], codec: u8) -> Vec<u8> {
    let base_ts = records[0].timestamp;
    let mut body = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut rb = vec![0u8];
        put_varint(&mut rb, r.timestamp - base_ts);
        put_varint(&mut rb, i as i64);
        put_bytes(&mut rb, &r.key);
        put_bytes(&mut rb, &r.value);
        put_varint(&mut rb, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut rb, &Some(k.as_bytes().to_vec()));
            put_bytes(&mut rb, v);
        }
        put_varint(&mut body, rb.len() as i64);
        body.extend(rb);
    }
    let section = compress(codec, &body);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap();
    let mut b = Vec::new();
    b.extend(0i64.to_be_bytes());
    b.extend(((49 + section.len()) as i32).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.push(2);
    b.extend([0u8; 4]);
    b.extend(i16::from(codec).to_be_bytes());
    b.extend((records.len() as i32 - 1).to_be_bytes());
    b.extend(base_ts.to_be_bytes());
    b.extend(max_ts.to_be_bytes());
    b.extend((-1i64).to_be_bytes());
    b.extend((-1i16).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.extend((records.len() as i32).to_be_bytes());
    b.extend(section);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn varint(buf: &[u8], pos: &mut usize) -> i64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[*pos];
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

fn bytes(buf: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
    let n = varint(buf, pos);
    if n < 0 {
        return None;
    }
    let out = buf[*pos..*pos + n as usize].to_vec();
    *pos += n as usize;
    Some(out)
}

/// A batch as served: its header fields of interest.
#[derive(Clone, Debug)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub codec: u8,
    pub record_count: i32,
    pub max_timestamp: i64,
}

/// Decodes concatenated batches (checking each CRC) into batch infos and records.
pub fn decode(mut data: &[u8]) -> (Vec<BatchInfo>, Vec<Rec>) {
    let (mut batches, mut recs) = (Vec::new(), Vec::new());
    while !data.is_empty() {
        let base = i64::from_be_bytes(data[0..8].try_into().unwrap());
        let len = i32::from_be_bytes(data[8..12].try_into().unwrap()) as usize;
        let b = &data[..12 + len];
        assert_eq!(crc32c::crc32c(&b[21..]), u32::from_be_bytes(b[17..21].try_into().unwrap()), "CRC of batch {base}");
        let attributes = i16::from_be_bytes(b[21..23].try_into().unwrap());
        let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
        let base_ts = i64::from_be_bytes(b[27..35].try_into().unwrap());
        let max_ts = i64::from_be_bytes(b[35..43].try_into().unwrap());
        let count = i32::from_be_bytes(b[57..61].try_into().unwrap());
        let codec = (attributes & 7) as u8;
        let section = decompress(codec, &b[61..]);
        let mut pos = 0;
        for _ in 0..count {
            let rlen = varint(&section, &mut pos) as usize;
            let end = pos + rlen;
            pos += 1;
            let ts_delta = varint(&section, &mut pos);
            let off_delta = varint(&section, &mut pos);
            let key = bytes(&section, &mut pos);
            let value = bytes(&section, &mut pos);
            let nh = varint(&section, &mut pos);
            let mut headers = Vec::new();
            for _ in 0..nh {
                let k = String::from_utf8(bytes(&section, &mut pos).unwrap()).unwrap();
                headers.push((k, bytes(&section, &mut pos)));
            }
            assert_eq!(pos, end);
            recs.push(Rec { offset: base + off_delta, timestamp: base_ts + ts_delta, key, value, headers });
        }
        assert_eq!(pos, section.len());
        batches.push(BatchInfo {
            base_offset: base,
            last_offset: base + i64::from(last_delta),
            codec,
            record_count: count,
            max_timestamp: max_ts,
        });
        data = &data[12 + len..];
    }
    (batches, recs)
}
