//! `moechat-soak`: a bounded soak of a real `moechat-server` process under faults.
//!
//! It starts the server binary, then holds `--connections` connections on loopback:
//! honest pairs exchanging timestamped direct messages, slow consumers that never
//! read, clients that send garbage, clients that hang up mid-frame, and idle ones.
//! A probe pings throughout. At the end it reports the honest clients' latency,
//! how many acknowledged messages never arrived (must be 0), server RSS before and
//! after, and whether the server ever stopped answering; it exits non-zero on a
//! loss or a failed probe. Every loop is bounded by `--seconds`; traffic goes to
//! 127.0.0.1 only.
//!
//! `--login-burst N` runs the login burst instead (`moechat_tools::burst`): N users
//! logging in at once, with `--burst-credential password` or `session`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use moechat::{Client, ClientOptions};
use moechat_tools::support::{self, percentile, rss_kib, ServerProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Soak a moechat-server under faults and report what happened.
#[derive(Debug, Parser)]
#[command(name = "moechat-soak", version)]
struct Args {
    /// Connections held at once, of every kind together
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// How long the faulty traffic runs
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Honest clients (in pairs) chatting throughout
    #[arg(long, default_value_t = 100)]
    honest: usize,
    /// Broadcasts per second from the honest clients (what slow consumers fail to read)
    #[arg(long, default_value_t = 200.0)]
    broadcast_rate: f64,
    /// The server binary (default: moechat-server next to this one)
    #[arg(long)]
    server_bin: Option<String>,
    /// Print only the JSON result line
    #[arg(long)]
    json: bool,
    /// Instead of the soak: this many users log in at once (docs/BENCHMARKS.md, "Login burst")
    #[arg(long, value_name = "USERS")]
    login_burst: Option<usize>,
    /// How the burst's users log in: password or session
    #[arg(long, default_value = "password", value_parser = ["password", "session"])]
    burst_credential: String,
    /// More flags for the server, one argument each (e.g. --server-arg=--hash-workers --server-arg=4)
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    server_args: Vec<String>,
}

fn main() {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    };
    if let Some(users) = args.login_burst {
        let burst = moechat_tools::burst::Burst {
            users,
            credential: if args.burst_credential == "session" {
                moechat_tools::burst::Credential::Session
            } else {
                moechat_tools::burst::Credential::Password
            },
            server_bin: support::server_bin(args.server_bin.as_deref(), "moechat-soak"),
            server_args: args.server_args,
        };
        let report = runtime.block_on(moechat_tools::burst::run(burst));
        println!("{report}");
        return;
    }
    let code = runtime.block_on(run(args));
    std::process::exit(code);
}

fn fail(msg: &str) -> ! {
    support::fail("moechat-soak", msg)
}

async fn logged_in(port: u16, user: &str) -> (Client, moechat::Incoming) {
    let (c, incoming) = Client::connect_with("127.0.0.1", port, ClientOptions::no_reconnect())
        .await
        .unwrap_or_else(|e| fail(&format!("connect: {e}")));
    if let Err(e) = c.register(user, "soak-password").await {
        fail(&format!("register {user}: {e}"));
    }
    if let Err(e) = c.login(user, "soak-password").await {
        fail(&format!("login {user}: {e}"));
    }
    (c, incoming)
}

async fn run(args: Args) -> i32 {
    let bin = support::server_bin(args.server_bin.as_deref(), "moechat-soak");
    let max = (args.connections + 200).to_string();
    let server = ServerProcess::start(
        &bin,
        &[
            "--db",
            ":memory:",
            "--heartbeat",
            "600",
            "--max-connections",
            &max,
            "--login-rate",
            "0",
        ],
        "moechat-soak",
    );
    let port = server.port;
    let pid = server.child.id();
    let honest = args.honest.max(2) & !1;
    let slow = (args.connections / 100).clamp(1, 50);
    let garbage = (args.connections / 50).max(1);
    let droppers = (args.connections / 50).max(1);
    let idle = args
        .connections
        .saturating_sub(honest + slow + garbage + droppers + 1);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));

    // Honest clients, in pairs; slow consumers log in and then never read.
    let mut honest_clients = Vec::new();
    for i in 0..honest {
        honest_clients.push(logged_in(port, &format!("honest{i}")).await);
    }
    let mut slow_clients = Vec::new();
    for i in 0..slow {
        slow_clients.push(logged_in(port, &format!("slow{i}")).await);
    }
    // Idle connections: connected, silent.
    let mut idle_conns = Vec::with_capacity(idle);
    for _ in 0..idle {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => idle_conns.push(s),
            Err(e) => fail(&format!("idle connection {}: {e}", idle_conns.len())),
        }
    }
    let rss_before = rss_kib(pid);
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);

    let mut tasks = Vec::new();
    // Garbage senders: a malformed line every 50 ms, replies read and dropped.
    for i in 0..garbage {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            let mut sink = vec![0u8; 4096];
            let lines: [&[u8]; 4] = [
                b"not json\n",
                b"[1,2]\n",
                b"\xff\xfe\n",
                b"{\"status\":\"x\"}\n",
            ];
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                if s.write_all(lines[n % lines.len()]).await.is_err() {
                    return;
                }
                n += 1;
                let _ = tokio::time::timeout(Duration::from_millis(50), s.read(&mut sink)).await;
            }
        }));
    }
    // Droppers: connect, half a frame, hang up; again.
    for _ in 0..droppers {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = s
                        .write_all(b"{\"status\":\"m\",\"status_code\":80,\"info\":{\"to\":\"hon")
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    // Probe: a ping every 100 ms; the worst round trip and any failure are the verdict.
    let probe_worst = Arc::new(AtomicU64::new(0));
    let probe_failures = Arc::new(AtomicU64::new(0));
    {
        let (stop, worst, failures) = (stop.clone(), probe_worst.clone(), probe_failures.clone());
        let (c, _incoming) = Client::connect_with("127.0.0.1", port, ClientOptions::no_reconnect())
            .await
            .unwrap_or_else(|e| fail(&format!("probe: {e}")));
        tasks.push(tokio::spawn(async move {
            let _keep = _incoming;
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_secs(5), c.ping()).await {
                    Ok(Ok(rtt)) => {
                        worst.fetch_max(rtt.as_micros() as u64, Ordering::Relaxed);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    // Honest traffic: each client sends to its partner every 20 ms, the text carrying
    // the send time; receivers record latency and which msg_ids arrived.
    let acked: Arc<Mutex<HashMap<u64, ()>>> = Arc::default();
    let received: Arc<Mutex<HashMap<u64, ()>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let broadcast_every = Duration::from_secs_f64(honest as f64 / args.broadcast_rate.max(0.001));
    let mut receivers = Vec::new();
    for (i, (client, mut incoming)) in honest_clients.into_iter().enumerate() {
        let partner = format!("honest{}", i ^ 1);
        let stop2 = stop.clone();
        let (stop, acked, received, latencies) = (
            stop.clone(),
            acked.clone(),
            received.clone(),
            latencies.clone(),
        );
        receivers.push(tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(3), incoming.recv()).await {
                    Ok(Ok(m)) => {
                        if m.to.is_some() {
                            if let Some(sent_us) = m
                                .text
                                .strip_prefix("t=")
                                .and_then(|t| t.parse::<u64>().ok())
                            {
                                let now_us = started.elapsed().as_micros() as u64;
                                latencies
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(now_us.saturating_sub(sent_us));
                            }
                            received
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(m.msg_id, ());
                        }
                    }
                    Ok(Err(_)) => return,
                    Err(_) if stop.load(Ordering::Relaxed) => return,
                    Err(_) => {}
                }
            }
        }));
        tasks.push(tokio::spawn(async move {
            let mut last_broadcast = Instant::now();
            while !stop2.load(Ordering::Relaxed) {
                let text = format!("t={}", started.elapsed().as_micros());
                if let Ok(sent) = client.send(&partner, &text).await {
                    if !sent.stored {
                        acked
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(sent.msg_id, ());
                    }
                }
                if last_broadcast.elapsed() >= broadcast_every {
                    let _ = client.broadcast(&"b".repeat(200)).await;
                    last_broadcast = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Keep the client until the receivers are done.
            tokio::time::sleep(Duration::from_secs(4)).await;
            drop(client);
        }));
    }
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for r in receivers {
        let _ = r.await;
    }
    let rss_after = rss_kib(pid);
    for t in tasks {
        t.abort();
    }
    drop(idle_conns);
    drop(slow_clients);
    server.stop();

    let acked = acked.lock().unwrap_or_else(|e| e.into_inner());
    let received = received.lock().unwrap_or_else(|e| e.into_inner());
    let lost = acked.keys().filter(|id| !received.contains_key(id)).count();
    let mut lat = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    lat.sort_unstable();
    let failures = probe_failures.load(Ordering::Relaxed);
    let json = serde_json::json!({
        "connections": honest + slow + garbage + droppers + idle + 1,
        "honest": honest, "slow": slow, "garbage": garbage, "droppers": droppers, "idle": idle,
        "seconds": args.seconds,
        "delivered": received.len(), "acknowledged": acked.len(), "lost": lost,
        "latency_us": {"p50": percentile(&lat, 0.5), "p99": percentile(&lat, 0.99), "max": lat.last().copied().unwrap_or(0)},
        "probe_worst_us": probe_worst.load(Ordering::Relaxed), "probe_failures": failures,
        "server_rss_kib": {"before": rss_before, "after": rss_after},
    });
    println!("{json}");
    if !args.json {
        println!("connections {} (honest {honest}, slow {slow}, garbage {garbage}, droppers {droppers}, idle {idle})",
            json["connections"]);
        println!(
            "honest direct messages: {} acknowledged as delivered, {} lost",
            acked.len(),
            lost
        );
        println!(
            "honest latency: p50 {} us, p99 {} us",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
        println!(
            "probe: worst ping {} us, {} failures",
            probe_worst.load(Ordering::Relaxed),
            failures
        );
        println!(
            "server RSS: {rss_before} KiB with all connections open, {rss_after} KiB at the end"
        );
    }
    if lost > 0 || failures > 0 {
        1
    } else {
        0
    }
}
