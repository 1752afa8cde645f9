//! Criterion micro-benchmarks of the pure protocol layer: the line codec cutting a
//! socket's bytes into frames, the envelope and request parsers, and the push
//! encoder, each reported as frames per second on one core.
//!
//! `cargo bench --bench protocol` runs them; docs/BENCHMARKS.md has the figures.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use moechat::protocol::fast::{self, Fast};
use moechat::protocol::{ChatMessage, Envelope, LineCodec, Request, RequestKind};
use tokio_util::codec::Decoder;

/// A direct message as a client sends it, with a 100-byte text.
fn direct_frame() -> Vec<u8> {
    let text = "x".repeat(100);
    format!(
        "{{\"status\":\"m\",\"status_code\":80,\"info\":{{\"to\":\"bob\",\"text\":\"{text}\",\"nonce\":\"n3VQ0sTq1f9mXc2LrB7a\"}},\"id\":42}}"
    )
    .into_bytes()
}

fn codec(c: &mut Criterion) {
    let frame = direct_frame();
    const FRAMES: usize = 1_000;
    let mut stream = Vec::with_capacity((frame.len() + 1) * FRAMES);
    for _ in 0..FRAMES {
        stream.extend_from_slice(&frame);
        stream.push(b'\n');
    }
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.bench_function("decode 1000 frames", |b| {
        b.iter(|| {
            let mut codec = LineCodec::new(65_536);
            let mut buf = BytesMut::from(&stream[..]);
            let mut n = 0;
            while let Ok(Some(line)) = codec.decode(&mut buf) {
                black_box(&line);
                n += 1;
            }
            assert_eq!(n, FRAMES);
        })
    });
    group.finish();
}

fn parse(c: &mut Criterion) {
    let frame = direct_frame();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("envelope", |b| {
        b.iter(|| Envelope::parse(black_box(&frame)).unwrap())
    });
    group.bench_function("envelope + request", |b| {
        b.iter(|| {
            let env = Envelope::parse(black_box(&frame)).unwrap();
            let kind = RequestKind::of(&env).unwrap();
            Request::parse(kind, &env.info, 8_192).unwrap()
        })
    });
    group.bench_function("shortcut + request", |b| {
        b.iter(|| match fast::read(black_box(&frame)) {
            Some(Fast::Direct {
                to, text, nonce, ..
            }) => Request::direct(Some(to), Some(text), Ok(nonce), 8_192).unwrap(),
            other => panic!("the shortcut did not read the frame: {other:?}"),
        })
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let message = ChatMessage {
        msg_id: 123_456,
        from: "alice".into(),
        to: Some("bob".into()),
        text: "x".repeat(100),
        ts: 1_764_125_000_000,
    };
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("push", |b| b.iter(|| black_box(&message).encode_push()));
    group.finish();
    // What every receiving client does per message (the Rust client, and so Python's).
    let frame = message.encode_push();
    let line = &frame[..frame.len() - 1];
    let mut group = c.benchmark_group("client");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse push", |b| {
        b.iter(|| ChatMessage::parse_push(black_box(line)))
    });
    group.finish();
}

criterion_group!(benches, codec, parse, encode);
criterion_main!(benches);
