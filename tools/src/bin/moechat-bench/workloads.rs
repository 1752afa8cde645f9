//! The workloads: W1 pipelined direct messages between pairs, W2 fan-out of
//! rate-limited broadcasts, W3 idle connections' memory, W4 logins. Each runs
//! against one freshly started server and returns its figures as JSON.
//!
//! Latency is measured end to end inside this one process: the sender writes
//! its clock (microseconds since the bench started) into the payload and the
//! receiver subtracts it on arrival. Every receiver checks that each sender's
//! sequence numbers arrive exactly once and in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::targets::Running;
use super::wire::{self, Event, Kind, BROADCAST};
use super::{now_us, TOOL};
use moechat_tools::seed::{user, PASSWORD};
use moechat_tools::support::{self, percentile};

/// How long a connection may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Publishes written per socket write, at most.
const MAX_BATCH: usize = 64;
/// Connections opened at once while setting up.
const SETUP_CONCURRENCY: usize = 128;

/// What every workload may be told.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub pairs: usize,
    pub messages: u64,
    pub size: usize,
    pub window: usize,
    pub receivers: usize,
    pub broadcasts: u64,
    pub rate: f64,
    pub idle: usize,
    pub login_seconds: f64,
    pub login_workers: usize,
}

/// A connection's reading side: protocol bytes land in `buf` (over WebSocket, each
/// text frame's payload as one line).
struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    /// WebSocket only: received bytes not yet unframed.
    raw: Option<BytesMut>,
}

impl Reader {
    /// Reads more protocol bytes into `buf`; `Ok(0)` at the end of the stream.
    async fn read_more(&mut self) -> std::io::Result<usize> {
        let Some(raw) = &mut self.raw else {
            return self.rd.read_buf(&mut self.buf).await;
        };
        let before = self.buf.len();
        loop {
            if !wire::ws_unframe(raw, &mut self.buf) {
                return Ok(0);
            }
            if self.buf.len() > before {
                return Ok(self.buf.len() - before);
            }
            if self.rd.read_buf(raw).await? == 0 {
                return Ok(0);
            }
        }
    }
}

/// A connection's writing side (over WebSocket, one masked text frame per line).
struct Writer {
    wr: OwnedWriteHalf,
    /// WebSocket only: where frames are built.
    frames: Option<Vec<u8>>,
}

impl Writer {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.frames {
            None => self.wr.write_all(bytes).await,
            Some(frames) => {
                frames.clear();
                wire::ws_frames(frames, bytes);
                self.wr.write_all(frames).await
            }
        }
    }
}

/// One connection with its read buffer.
struct Conn {
    kind: Kind,
    rd: Reader,
    wr: Writer,
}

impl Conn {
    /// Connects (with the WebSocket handshake for `moechat-ws`), sends `hello` and
    /// waits until the server says the connection is ready.
    async fn open(kind: Kind, port: u16, hello: &[u8]) -> Conn {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| support::fail(TOOL, &format!("connect to {port}: {e}")));
        let _ = stream.set_nodelay(true);
        let ws = kind == Kind::MoeChatWs;
        let raw = if ws {
            Some(ws_upgrade(&mut stream, port).await)
        } else {
            None
        };
        let (rd, wr) = stream.into_split();
        let mut conn = Conn {
            kind,
            rd: Reader {
                rd,
                buf: BytesMut::with_capacity(16 * 1024),
                raw,
            },
            wr: Writer {
                wr,
                frames: ws.then(Vec::new),
            },
        };
        conn.wr
            .write_all(hello)
            .await
            .unwrap_or_else(|e| support::fail(TOOL, &format!("hello: {e}")));
        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            loop {
                let mut ready = false;
                let mut other = false;
                wire::drain(kind, &mut conn.rd.buf, |e| match e {
                    Event::Ready => ready = true,
                    // NATS's readiness is the PONG to the PING after CONNECT/SUB.
                    Event::Ack if kind == Kind::Nats => ready = true,
                    Event::Other if kind.is_moechat() => other = true,
                    _ => {}
                });
                if ready {
                    return Ok(());
                }
                if other {
                    return Err("the server refused the login".to_string());
                }
                match conn.rd.read_more().await {
                    Ok(0) => return Err("the server closed the connection".into()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await;
        match ready {
            Ok(Ok(())) => conn,
            Ok(Err(e)) => support::fail(TOOL, &format!("{} setup: {e}", kind.name())),
            Err(_) => support::fail(TOOL, &format!("{} setup timed out", kind.name())),
        }
    }
}

/// The WebSocket handshake on `stream`; returns the bytes read past its answer.
async fn ws_upgrade(stream: &mut TcpStream, port: u16) -> BytesMut {
    stream
        .write_all(&wire::ws_handshake(port))
        .await
        .unwrap_or_else(|e| support::fail(TOOL, &format!("WebSocket handshake: {e}")));
    let mut raw = BytesMut::with_capacity(16 * 1024);
    loop {
        if let Some((len, upgraded)) = wire::ws_handshake_answer(&raw) {
            if !upgraded {
                let status = String::from_utf8_lossy(&raw[..len.min(40)]).into_owned();
                support::fail(TOOL, &format!("WebSocket refused: {status}"));
            }
            let _ = raw.split_to(len);
            return raw;
        }
        match stream.read_buf(&mut raw).await {
            Ok(n) if n > 0 => {}
            _ => support::fail(TOOL, "the server closed the WebSocket handshake"),
        }
    }
}

/// Opens `n` connections, `SETUP_CONCURRENCY` at a time; `hello(i)` is connection i's.
async fn open_many(kind: Kind, port: u16, n: usize, hello: impl Fn(usize) -> Vec<u8>) -> Vec<Conn> {
    let hellos: Vec<Vec<u8>> = (0..n).map(hello).collect();
    let mut conns: Vec<(usize, Conn)> = stream::iter(hellos.into_iter().enumerate())
        .map(|(i, h)| async move { (i, Conn::open(kind, port, &h).await) })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    conns.sort_by_key(|(i, _)| *i);
    conns.into_iter().map(|(_, c)| c).collect()
}

/// What one receiver saw.
#[derive(Default)]
struct Received {
    count: u64,
    duplicates: u64,
    gaps: u64,
    latencies_us: Vec<u64>,
    last_us: u64,
    errors: u64,
}

/// Reads until `expected` messages arrived or `deadline`; checks order per sender.
async fn receive(mut conn: Conn, expected: u64, deadline: tokio::time::Instant) -> Received {
    let mut got = Received {
        latencies_us: Vec::with_capacity(expected as usize),
        ..Received::default()
    };
    let mut next_seq = 0u64;
    loop {
        let mut pong = false;
        wire::drain(conn.kind, &mut conn.rd.buf, |e| match e {
            Event::Message(p) => {
                let now = now_us();
                match wire::parse_payload(p) {
                    Some((seq, sent)) => {
                        got.latencies_us.push(now.saturating_sub(sent));
                        got.last_us = now;
                        if seq == next_seq {
                            got.count += 1;
                            next_seq += 1;
                        } else if seq < next_seq {
                            got.duplicates += 1;
                        } else {
                            got.count += 1;
                            got.gaps += seq - next_seq;
                            next_seq = seq + 1;
                        }
                    }
                    None => got.errors += 1,
                }
            }
            Event::Ping => pong = true,
            Event::Other => got.errors += 1,
            _ => {}
        });
        if pong && conn.wr.write_all(wire::NATS_PONG).await.is_err() {
            return got;
        }
        if got.count >= expected {
            return got;
        }
        let read = tokio::time::timeout_at(deadline, conn.rd.read_more()).await;
        match read {
            Ok(Ok(n)) if n > 0 => {}
            _ => return got,
        }
    }
}

/// Acknowledgements read by a publisher: returns window permits as acks arrive.
async fn read_acks(
    kind: Kind,
    mut rd: Reader,
    window: Arc<Semaphore>,
    total: u64,
    chunk: u64,
    deadline: tokio::time::Instant,
) -> u64 {
    let mut acked = 0u64;
    let mut errors = 0u64;
    while acked < total {
        wire::drain(kind, &mut rd.buf, |e| match e {
            Event::Ack => {
                let n = if kind == Kind::Nats {
                    chunk.min(total - acked)
                } else {
                    1
                };
                acked += n;
                window.add_permits(n as usize);
            }
            Event::Other => errors += 1,
            _ => {}
        });
        if acked >= total {
            break;
        }
        match tokio::time::timeout_at(deadline, rd.read_more()).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    errors
}

/// Writes `total` publishes to `to`, never more than `window` unacknowledged;
/// `pace` (messages a second) spaces them out, `None` sends as fast as allowed.
#[allow(clippy::too_many_arguments)]
async fn publish(
    kind: Kind,
    mut wr: Writer,
    to: String,
    total: u64,
    size: usize,
    window: Arc<Semaphore>,
    chunk: u64,
    pace: Option<(f64, Instant)>,
) {
    let mut out = Vec::with_capacity(MAX_BATCH * (size + 128));
    let mut payload = Vec::with_capacity(size + 32);
    let mut sent = 0u64;
    while sent < total {
        let mut room = (total - sent).min(MAX_BATCH as u64);
        if let Some((rate, start)) = pace {
            // Message k is due at start + k / rate: send what is due, then sleep.
            let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
            if due <= sent {
                let at = start + Duration::from_secs_f64(sent as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                continue;
            }
            room = room.min(due - sent);
        }
        let Ok(first) = window.acquire().await else {
            return;
        };
        first.forget();
        let mut k = 1;
        while k < room {
            match window.try_acquire() {
                Ok(p) => {
                    p.forget();
                    k += 1;
                }
                Err(_) => break,
            }
        }
        out.clear();
        for j in 0..k {
            let seq = sent + j;
            wire::payload(&mut payload, seq, now_us(), size);
            wire::publish(kind, &mut out, &to, &payload);
            if (seq + 1).is_multiple_of(chunk) || seq + 1 == total {
                wire::flush_marker(kind, &mut out);
            }
        }
        if wr.write_all(&out).await.is_err() {
            return;
        }
        sent += k;
    }
    // Keep the writing half open until the acks are in: dropping it would end the session.
    std::future::pending::<()>().await;
}

/// A publisher: its connection split into a paced or windowed writer and an ack reader.
async fn run_publisher(
    conn: Conn,
    to: String,
    total: u64,
    size: usize,
    window: usize,
    pace: Option<(f64, Instant)>,
    deadline: tokio::time::Instant,
) -> u64 {
    let chunk = (window as u64 / 2).max(1);
    let permits = Arc::new(Semaphore::new(window));
    let Conn { kind, rd, wr } = conn;
    let writer = publish(kind, wr, to, total, size, permits.clone(), chunk, pace);
    let reader = read_acks(kind, rd, permits, total, chunk, deadline);
    tokio::select! {
        errors = reader => errors,
        _ = writer => 0,
    }
}

/// `seconds` spread over `n` events, in microseconds each.
fn per_million(seconds: f64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        seconds * 1e6 / n as f64
    }
}

fn latency_json(mut all: Vec<u64>) -> Value {
    all.sort_unstable();
    json!({
        "p50_us": percentile(&all, 0.50),
        "p99_us": percentile(&all, 0.99),
        "p999_us": percentile(&all, 0.999),
        "max_us": all.last().copied().unwrap_or(0),
    })
}

fn merge(results: Vec<Received>) -> (u64, u64, u64, u64, Vec<u64>, u64) {
    let (mut count, mut dups, mut gaps, mut errors, mut last) = (0, 0, 0, 0, 0);
    let mut lat = Vec::new();
    for r in results {
        count += r.count;
        dups += r.duplicates;
        gaps += r.gaps;
        errors += r.errors;
        last = last.max(r.last_us);
        lat.extend(r.latencies_us);
    }
    (count, dups, gaps, errors, lat, last)
}

/// W1: `pairs` senders each pipeline `messages` direct messages to their partner.
pub(crate) async fn direct(target: &Running, tokens: &[String], p: &Params) -> Value {
    let kind = target.kind;
    let receivers = open_many(kind, target.port, p.pairs, |i| {
        let name = user(2 * i + 1);
        wire::hello(kind, &name, &tokens[2 * i + 1], &name)
    })
    .await;
    let senders = open_many(kind, target.port, p.pairs, |i| {
        wire::publisher_hello(kind, &user(2 * i), &tokens[2 * i])
    })
    .await;
    let budget = Duration::from_secs(60) + Duration::from_micros(p.messages * p.pairs as u64 * 20);
    let deadline = tokio::time::Instant::now() + budget;
    let cpu_before = target.cpu_seconds();
    let start_us = now_us();
    let mut tasks = Vec::new();
    for conn in receivers {
        tasks.push(tokio::spawn(receive(conn, p.messages, deadline)));
    }
    let mut pubs = Vec::new();
    for (i, conn) in senders.into_iter().enumerate() {
        pubs.push(tokio::spawn(run_publisher(
            conn,
            user(2 * i + 1),
            p.messages,
            p.size,
            p.window,
            None,
            deadline,
        )));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap_or_default());
    }
    let mut send_errors = 0;
    for t in pubs {
        send_errors += t.await.unwrap_or(0);
    }
    let cpu = target.cpu_seconds() - cpu_before;
    let (count, dups, gaps, errors, lat, last) = merge(results);
    let expected = p.messages * p.pairs as u64;
    let secs = (last.saturating_sub(start_us)) as f64 / 1e6;
    json!({
        "delivered": count, "expected": expected, "lost": expected - count.min(expected),
        "duplicates": dups, "out_of_order_gaps": gaps, "errors": errors + send_errors,
        "seconds": secs, "msgs_per_s": if secs > 0.0 { count as f64 / secs } else { 0.0 },
        "latency": latency_json(lat),
        "server_cpu_s": cpu, "server_cpu_us_per_msg": per_million(cpu, count),
    })
}

/// W2: one sender broadcasts `broadcasts` messages at `rate` a second to `receivers`.
pub(crate) async fn fan_out(target: &Running, tokens: &[String], p: &Params, rate: f64) -> Value {
    let kind = target.kind;
    let receivers = open_many(kind, target.port, p.receivers, |i| {
        wire::hello(kind, &user(i + 1), &tokens[i + 1], BROADCAST)
    })
    .await;
    let sender = Conn::open(
        kind,
        target.port,
        &wire::publisher_hello(kind, &user(0), &tokens[0]),
    )
    .await;
    let budget = Duration::from_secs_f64(p.broadcasts as f64 / rate + 30.0);
    let deadline = tokio::time::Instant::now() + budget;
    let cpu_before = target.cpu_seconds();
    let start = Instant::now();
    let start_us = now_us();
    let mut tasks = Vec::new();
    for conn in receivers {
        tasks.push(tokio::spawn(receive(conn, p.broadcasts, deadline)));
    }
    // The window only bounds runaway queues here; the rate sets the pace.
    let publisher = tokio::spawn(run_publisher(
        sender,
        BROADCAST.to_string(),
        p.broadcasts,
        p.size,
        4096,
        Some((rate, start)),
        deadline,
    ));
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap_or_default());
    }
    let send_errors = publisher.await.unwrap_or(0);
    let cpu = target.cpu_seconds() - cpu_before;
    let (count, dups, gaps, errors, lat, last) = merge(results);
    let expected = p.broadcasts * p.receivers as u64;
    let secs = (last.saturating_sub(start_us)) as f64 / 1e6;
    json!({
        "rate": rate, "offered_deliveries_per_s": rate * p.receivers as f64,
        "delivered": count, "expected": expected, "lost": expected - count.min(expected),
        "duplicates": dups, "out_of_order_gaps": gaps, "errors": errors + send_errors,
        "seconds": secs, "deliveries_per_s": if secs > 0.0 { count as f64 / secs } else { 0.0 },
        "latency": latency_json(lat),
        "server_cpu_s": cpu, "server_cpu_us_per_delivery": per_million(cpu, count),
    })
}

/// W3: `idle` logged-in (subscribed) connections that then do nothing.
pub(crate) async fn idle(target: &Running, tokens: &[String], p: &Params) -> Value {
    let kind = target.kind;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = target.rss_kib();
    let conns = open_many(kind, target.port, p.idle, |i| {
        let name = user(i);
        wire::hello(kind, &name, &tokens[i], &name)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = target.rss_kib();
    let per = (after.saturating_sub(before) * 1024) as f64 / p.idle as f64;
    drop(conns);
    json!({
        "connections": p.idle, "rss_before_kib": before, "rss_after_kib": after,
        "bytes_per_connection": per,
    })
}

/// W4: logins a second, with a password (argon2) and with a session token, from
/// `login_workers` connections in parallel, each a new connection per login.
pub(crate) async fn logins(target: &Running, tokens: &[String], p: &Params) -> Value {
    let mut out = json!({});
    for mode in ["password", "session"] {
        let deadline = Instant::now() + Duration::from_secs_f64(p.login_seconds);
        let mut workers = Vec::new();
        for (w, token) in tokens.iter().take(p.login_workers).enumerate() {
            let (name, token, port) = (user(w), token.clone(), target.port);
            workers.push(tokio::spawn(async move {
                let mut n = 0u64;
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let hello = if mode == "password" {
                        format!("{{\"status\":\"q\",\"status_code\":0,\"info\":{{\"req\":\"login\",\"user\":\"{name}\",\"password\":\"{PASSWORD}\"}}}}\n").into_bytes()
                    } else {
                        wire::hello(Kind::MoeChat, &name, &token, "")
                    };
                    let started = Instant::now();
                    let mut conn = Conn::open(Kind::MoeChat, port, &hello).await;
                    lat.push(started.elapsed().as_micros() as u64);
                    let _ = conn.wr.wr.shutdown().await;
                    n += 1;
                }
                (n, lat)
            }));
        }
        let started = Instant::now();
        let mut total = 0;
        let mut lat = Vec::new();
        for w in workers {
            if let Ok((n, l)) = w.await {
                total += n;
                lat.extend(l);
            }
        }
        let secs = started.elapsed().as_secs_f64();
        out[mode] = json!({
            "logins": total, "seconds": secs, "logins_per_s": total as f64 / secs,
            "latency": latency_json(lat),
        });
    }
    out
}
