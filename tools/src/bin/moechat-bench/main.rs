//! `moechat-bench`: drives `moechat-server`, `redis-server` and `nats-server` over
//! loopback with the same workloads, in the same run, and prints one JSON line per
//! run plus a table of medians with MoeChat's ratio to each.
//!
//! The mapping is the natural one: a direct message is a publish to the
//! recipient's own channel (Redis) or subject (NATS); a broadcast is a publish to
//! one channel everyone subscribed to. MoeChat persists every message to SQLite
//! (`synchronous=FULL`) and acknowledges it only once it is durable; Redis pub/sub
//! and core NATS keep nothing. See docs/BENCHMARKS.md for the method and figures.

mod targets;
mod wire;
mod workloads;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

use clap::Parser;
use moechat_tools::support;
use serde_json::{json, Value};

use moechat_tools::seed::Seed;
use targets::{Binaries, Scratch};
use wire::Kind;
use workloads::Params;

const TOOL: &str = "moechat-bench";

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the bench started: the clock every payload carries.
fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Benchmark MoeChat against Redis pub/sub and NATS on this machine.
#[derive(Debug, Parser)]
#[command(name = TOOL, version)]
struct Args {
    /// Workloads to run, comma-separated: w1 (direct), w2 (fan-out), w3 (idle), w4 (logins)
    #[arg(long, default_value = "w1,w2,w3,w4", value_delimiter = ',')]
    workloads: Vec<String>,
    /// Servers to run them against, comma-separated: moechat, moechat-ws (MoeChat over
    /// WebSocket), redis, nats
    #[arg(long, default_value = "moechat,redis,nats", value_delimiter = ',')]
    targets: Vec<String>,
    /// Runs of every workload; the table shows medians
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// W1: sender/receiver pairs
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// W1: messages per sender
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// W1, W2: payload bytes
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// W1: unacknowledged sends per sender
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// W2: receivers of every broadcast
    #[arg(long, default_value_t = 1_000)]
    receivers: usize,
    /// W2: broadcasts sent
    #[arg(long, default_value_t = 2_000)]
    broadcasts: u64,
    /// W2: broadcasts a second (also run at a tenth of it)
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// W3: idle logged-in connections
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// W4: seconds of logins per mode
    #[arg(long, default_value_t = 5.0)]
    login_seconds: f64,
    /// W4: connections logging in in parallel
    #[arg(long, default_value_t = 4)]
    login_workers: usize,
    /// The moechat-server binary (default: the one next to this tool)
    #[arg(long)]
    server_bin: Option<String>,
    /// The redis-server binary
    #[arg(long, default_value = "redis-server")]
    redis_bin: String,
    /// The nats-server binary
    #[arg(long, default_value = "nats-server")]
    nats_bin: String,
    /// Print only the JSON lines
    #[arg(long)]
    json: bool,
}

fn main() {
    let args = Args::parse();
    EPOCH.get_or_init(Instant::now);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| support::fail(TOOL, &format!("cannot start the runtime: {e}")));
    runtime.block_on(run(args));
}

fn kinds(args: &Args) -> Vec<Kind> {
    let bins = binaries(args);
    let mut out = Vec::new();
    for t in &args.targets {
        let (kind, bin) = match t.as_str() {
            "moechat" => (Kind::MoeChat, &bins.moechat),
            "moechat-ws" => (Kind::MoeChatWs, &bins.moechat),
            "redis" => (Kind::Redis, &bins.redis),
            "nats" => (Kind::Nats, &bins.nats),
            other => support::fail(TOOL, &format!("unknown target {other:?}")),
        };
        if targets::available(bin) {
            out.push(kind);
        } else {
            eprintln!("{TOOL}: {bin} not found; skipping {t} (install it to compare)");
        }
    }
    out
}

fn binaries(args: &Args) -> Binaries {
    Binaries {
        moechat: support::server_bin(args.server_bin.as_deref(), TOOL),
        redis: args.redis_bin.clone(),
        nats: args.nats_bin.clone(),
    }
}

/// Workload names as they appear in the output: W2 runs at the rate and a tenth of it.
fn expand(workloads: &[String]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for w in workloads {
        match w.as_str() {
            "w1" => out.push("w1"),
            "w2" => out.extend(["w2", "w2_tenth"]),
            "w3" => out.push("w3"),
            "w4" => out.push("w4"),
            other => support::fail(TOOL, &format!("unknown workload {other:?}")),
        }
    }
    out
}

async fn run(args: Args) {
    let kinds = kinds(&args);
    let bins = binaries(&args);
    let workloads = expand(&args.workloads);
    let params = Params {
        pairs: args.pairs.max(1),
        messages: args.messages.max(1),
        size: args.size.max(24),
        window: args.window.max(2),
        receivers: args.receivers.max(1),
        broadcasts: args.broadcasts.max(1),
        rate: args.rate.max(1.0),
        idle: args.idle.max(1),
        login_seconds: args.login_seconds.max(0.5),
        login_workers: args.login_workers.max(1),
    };
    let users = (2 * params.pairs)
        .max(params.receivers + 1)
        .max(params.idle)
        .max(params.login_workers);
    let scratch = Scratch::new("seed");
    let seed = if kinds.iter().any(|k| k.is_moechat()) {
        let started = Instant::now();
        let seed = Seed::create(scratch.path(), users, TOOL).await;
        if !args.json {
            eprintln!(
                "{TOOL}: seeded {users} users in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        seed
    } else {
        Seed {
            db: scratch.path().join("none"),
            tokens: std::sync::Arc::new(vec![String::new(); users]),
        }
    };
    let mut results: BTreeMap<(&str, Kind), Vec<Value>> = BTreeMap::new();
    for run in 1..=args.runs.max(1) {
        for &w in &workloads {
            for &kind in &kinds {
                if w == "w4" && kind != Kind::MoeChat {
                    // Redis pub/sub and core NATS have no login to compare; a login
                    // over WebSocket costs what one over TCP does, plus a handshake.
                    continue;
                }
                let clients = match w {
                    "w1" => 2 * params.pairs,
                    "w2" | "w2_tenth" => params.receivers + 1,
                    "w3" => params.idle,
                    _ => params.login_workers * 2,
                };
                let server = targets::start(kind, &bins, &seed, clients);
                let figures = match w {
                    "w1" => workloads::direct(&server, &seed.tokens, &params).await,
                    "w2" => workloads::fan_out(&server, &seed.tokens, &params, params.rate).await,
                    "w2_tenth" => {
                        workloads::fan_out(&server, &seed.tokens, &params, params.rate / 10.0).await
                    }
                    "w3" => workloads::idle(&server, &seed.tokens, &params).await,
                    _ => workloads::logins(&server, &seed.tokens, &params).await,
                };
                server.stop();
                let line = json!({
                    "workload": w, "target": kind.name(), "run": run, "figures": figures,
                    "durable": kind.is_moechat(),
                });
                println!("{line}");
                let _ = std::io::stdout().flush();
                results.entry((w, kind)).or_default().push(figures);
            }
        }
    }
    if !args.json {
        print_table(&results, &kinds, &params);
    }
}

/// The headline figure of a workload and whether more is better.
fn headline(w: &str, f: &Value) -> Vec<(&'static str, f64, bool)> {
    let get = |ptr: &str| f.pointer(ptr).and_then(Value::as_f64).unwrap_or(f64::NAN);
    match w {
        "w1" => vec![
            ("msgs/s", get("/msgs_per_s"), true),
            ("p50 us", get("/latency/p50_us"), false),
            ("p99 us", get("/latency/p99_us"), false),
            ("p99.9 us", get("/latency/p999_us"), false),
            ("cpu us/msg", get("/server_cpu_us_per_msg"), false),
            ("lost", get("/lost"), false),
        ],
        "w2" | "w2_tenth" => vec![
            ("deliveries/s", get("/deliveries_per_s"), true),
            ("p50 us", get("/latency/p50_us"), false),
            ("p99 us", get("/latency/p99_us"), false),
            ("cpu us/delivery", get("/server_cpu_us_per_delivery"), false),
            ("lost", get("/lost"), false),
        ],
        "w3" => vec![("bytes/conn", get("/bytes_per_connection"), false)],
        _ => vec![
            ("password logins/s", get("/password/logins_per_s"), true),
            ("session logins/s", get("/session/logins_per_s"), true),
        ],
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn print_table(results: &BTreeMap<(&str, Kind), Vec<Value>>, kinds: &[Kind], p: &Params) {
    println!();
    println!(
        "medians of {} run(s) per cell; MoeChat persists and acknowledges every message, Redis pub/sub and NATS do not",
        results.values().map(Vec::len).max().unwrap_or(0)
    );
    println!(
        "w1: {} pairs x {} msgs of {} B, window {}; w2: {} receivers x {} broadcasts at {}/s (w2_tenth: {}/s); w3: {} idle connections",
        p.pairs, p.messages, p.size, p.window, p.receivers, p.broadcasts, p.rate, p.rate / 10.0, p.idle
    );
    let mut header = format!("{:<10} {:<18}", "workload", "figure");
    for k in kinds {
        header.push_str(&format!(" {:>12}", k.name()));
    }
    for k in kinds.iter().filter(|k| **k != Kind::MoeChat) {
        header.push_str(&format!(" {:>12}", format!("vs {}", k.name())));
    }
    println!("{header}");
    let mut workloads: Vec<&str> = results.keys().map(|(w, _)| *w).collect();
    workloads.dedup();
    for w in workloads {
        let rows = results
            .get(&(w, Kind::MoeChat))
            .or_else(|| kinds.iter().find_map(|k| results.get(&(w, *k))))
            .map(|v| headline(w, &v[0]).len())
            .unwrap_or(0);
        for row in 0..rows {
            let mut cells = Vec::new();
            let mut name = "";
            for k in kinds {
                let m = results
                    .get(&(w, *k))
                    .map(|runs| median(runs.iter().map(|f| headline(w, f)[row].1).collect()));
                if let Some(v) = results.get(&(w, *k)) {
                    name = headline(w, &v[0])[row].0;
                }
                cells.push(m);
            }
            let mut line = format!("{w:<10} {name:<18}");
            for c in &cells {
                match c {
                    Some(v) if !v.is_nan() && v.abs() < 100.0 => {
                        line.push_str(&format!(" {v:>12.2}"))
                    }
                    Some(v) if !v.is_nan() => line.push_str(&format!(" {v:>12.0}")),
                    _ => line.push_str(&format!(" {:>12}", "-")),
                }
            }
            let ours = kinds
                .iter()
                .position(|k| *k == Kind::MoeChat)
                .and_then(|i| cells[i]);
            for (i, k) in kinds.iter().enumerate() {
                if *k == Kind::MoeChat {
                    continue;
                }
                match (ours, cells[i]) {
                    (Some(a), Some(b)) if b > 0.0 && !a.is_nan() => {
                        line.push_str(&format!(" {:>11.2}x", a / b))
                    }
                    _ => line.push_str(&format!(" {:>12}", "-")),
                }
            }
            println!("{line}");
        }
    }
}
