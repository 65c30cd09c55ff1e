//! Property test over the request path: arbitrary frames (random bytes, and valid headers followed by random
//! bodies for every served API and version) must give a response or a clean connection-closing error, never a
//! panic, and must leave the broker serving.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use strom_broker::config::ListenerConfig;
use strom_broker::dispatch::{dispatch, Answer, ConnectionContext, Reply, SUPPORTED_APIS};
use strom_broker::{Broker, BrokerConfig};

fn context(dir: &std::path::Path) -> Arc<ConnectionContext> {
    let mut values = std::collections::BTreeMap::new();
    values.insert("log.dirs".to_string(), dir.display().to_string());
    let config = BrokerConfig::from_values(values).unwrap();
    let advertised = Arc::new(config.listeners[0].clone());
    let broker = Arc::new(Broker::open(config).unwrap());
    Arc::new(ConnectionContext::new(broker, advertised, "127.0.0.1:1".parse().unwrap()))
}

fn run(ctx: &Arc<ConnectionContext>, rt: &tokio::runtime::Runtime, frame: Bytes) {
    rt.block_on(async {
        if let Ok(Reply { answer: Answer::Deferred(h), .. }) = dispatch(ctx, frame, ()).await {
            let _ = h.await.expect("deferred handler must not panic");
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_frames_never_panic(
        api in 0usize..SUPPORTED_APIS.len(),
        version_offset in 0i16..20,
        body in proptest::collection::vec(any::<u8>(), 0..256),
        raw in proptest::collection::vec(any::<u8>(), 8..64),
    ) {
        thread_local! {
            static STATE: (tempfile::TempDir, tokio::runtime::Runtime, std::cell::OnceCell<Arc<ConnectionContext>>) = (
                tempfile::tempdir().unwrap(),
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap(),
                std::cell::OnceCell::new(),
            );
        }
        STATE.with(|(dir, rt, cell)| {
            let ctx = cell.get_or_init(|| rt.block_on(async { context(dir.path()) }));
            let (key, min, _max) = SUPPORTED_APIS[api];
            let mut frame = BytesMut::new();
            frame.put_i16(key as i16);
            frame.put_i16(min + version_offset);
            frame.put_i32(1);
            frame.put_slice(&body);
            run(ctx, rt, frame.freeze());
            run(ctx, rt, Bytes::from(raw.clone()));
        });
    }
}

/// Counts and lengths at their maxima, at every field position near the start of every served request: each must
/// be refused (or answered) without allocating for what the wire claims. Before kafka-protocol was patched, an
/// array count of 2^31-1 made the decoder reserve that many elements and the process aborted.
#[test]
fn wire_counts_never_allocate_past_the_frame() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let ctx = rt.block_on(async { context(dir.path()) });
    // Int32 count / Int16 length at their maximum, an unsigned varint at u32::MAX, and INT32 -2 (a negative length).
    let patterns: [&[u8]; 4] = [
        &[0x7f, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
        &[0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0xff, 0x0f],
        &[0x80, 0x80, 0x80, 0x80, 0x08],
        &[0xff, 0xff, 0xff, 0xfe],
    ];
    let mut frames = 0;
    for &(key, min, max) in SUPPORTED_APIS {
        for version in min..=max {
            for offset in 0..40 {
                for pattern in patterns {
                    let mut frame = BytesMut::new();
                    frame.put_i16(key as i16);
                    frame.put_i16(version);
                    frame.put_i32(7);
                    // Header fields (client id, tagged fields) are covered too: zeros are empty strings and arrays.
                    frame.put_bytes(0, offset);
                    frame.put_slice(pattern);
                    frame.put_bytes(0, 16);
                    run(&ctx, &rt, frame.freeze());
                    frames += 1;
                }
            }
        }
    }
    assert!(frames > 10_000, "the sweep covers every served API and version ({frames} frames)");
}

#[test]
fn listener_config_is_cloneable_for_contexts() {
    let l = ListenerConfig::parse_list("PLAINTEXT://127.0.0.1:0", "").unwrap();
    assert_eq!(l[0].port, 0);
}
