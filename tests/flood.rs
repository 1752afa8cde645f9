//! A flood from one client must not slow anyone else down: this measures another
//! pair's direct-message latency without and then during a flood past the rate
//! limit, in the same run, and checks the flood really happened.
//!
//! The bound is deliberately loose (the test machines are shared and noisy): it
//! catches a flood that stalls other connections, not a few percent of slowdown.
//! The figures are printed; `cargo test --test flood -- --nocapture` shows them.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{direct, TestServer};
use moechat::ServerConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const SAMPLES: usize = 200;

/// Median and 90th percentile of carol → bob direct messages, send to push.
async fn latency(carol: &mut common::Raw, bob: &mut common::Raw) -> (Duration, Duration) {
    let mut took = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let started = Instant::now();
        carol.send_json(direct("bob", &format!("m{i}"))).await;
        // The push to bob and the receipt to carol, in either order.
        let push = bob.recv().await;
        took.push(started.elapsed());
        assert_eq!(push["info"]["text"], format!("m{i}"), "{push}");
        let receipt = carol.recv().await;
        assert_eq!(receipt["status_code"], 50, "{receipt}");
    }
    took.sort();
    (took[SAMPLES / 2], took[SAMPLES * 9 / 10])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_leaves_other_clients_latency_alone() {
    let config = ServerConfig {
        // Room for carol's samples; the flooder is past its burst within a moment.
        rate_limit: 100.0,
        rate_burst: 1_000,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let mut carol = s.logged_in("carol").await;
    let mut bob = s.logged_in("bob").await;
    let (quiet_p50, quiet_p90) = latency(&mut carol, &mut bob).await;

    // alice writes message frames as fast as the socket takes them and reads every answer.
    let stream = TcpStream::connect(s.addr).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    wr.write_all(b"{\"status\":\"q\",\"status_code\":0,\"info\":{\"req\":\"login\",\"user\":\"alice\",\"password\":\"wonderland\"}}\n")
        .await
        .unwrap();
    let mut line = String::new();
    rd.read_line(&mut line).await.unwrap();
    assert!(line.contains("\"status_code\":10"), "{line}");
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let batch: Vec<u8> = direct("dave", "flood")
        .to_string()
        .bytes()
        .chain(std::iter::once(b'\n'))
        .cycle()
        .take(64 * 1024)
        .collect();
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            while !stop.load(Ordering::Relaxed) {
                if wr.write_all(&batch).await.is_err() {
                    break;
                }
            }
        }
    });
    let reader = tokio::spawn({
        let refused = refused.clone();
        async move {
            let mut line = String::new();
            loop {
                line.clear();
                match rd.read_line(&mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.contains("\"status_code\":74") => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                }
            }
        }
    });
    // Let the flood get going before measuring under it.
    while refused.load(Ordering::Relaxed) < 1_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = refused.load(Ordering::Relaxed);
    let started = Instant::now();
    let (flood_p50, flood_p90) = latency(&mut carol, &mut bob).await;
    let flood_rate =
        (refused.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    println!(
        "carol -> bob latency: quiet p50 {quiet_p50:?} p90 {quiet_p90:?}; \
         under a flood of {flood_rate:.0} refused frames/s: p50 {flood_p50:?} p90 {flood_p90:?}"
    );
    assert!(
        flood_rate > 1_000.0,
        "the flood ran at only {flood_rate:.0} frames/s"
    );
    let allowed = (quiet_p50 * 10).max(quiet_p50 + Duration::from_millis(25));
    assert!(
        flood_p50 <= allowed,
        "under the flood carol's median latency went from {quiet_p50:?} to {flood_p50:?}"
    );
    // The flooder is still served (it is refused, not dropped), and so is everyone else.
    carol.assert_serving().await;
    writer.abort();
    reader.abort();
    s.stop().await;
}
