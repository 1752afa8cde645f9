//! The login burst: many users logging in at once to a real `moechat-server`, all
//! from 127.0.0.1 (as from behind one NAT or gateway), with their passwords or with
//! session tokens. It reports logins a second, the answers that were not `r`/10
//! (`r`/24 busy, retried with backoff as the clients do; `r`/22 refused), and the
//! server's RSS with the connections open before the burst, at its peak during the
//! burst (sampled every 10 ms), and after it.
//!
//! Run once with passwords and once with session tokens, the difference in RSS after
//! the burst is what password hashing left behind: the session run is what the
//! connections themselves need.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moechat::Code;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::seed::{user, Seed, PASSWORD};
use crate::support::{self, rss_kib, ServerProcess};

const TOOL: &str = "moechat-soak";
/// How long the whole burst may take before the tool gives up.
const BURST_LIMIT: Duration = Duration::from_secs(300);

/// How the burst's users log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// With their passwords: one argon2id check each.
    Password,
    /// With a session token from an earlier login: no hashing.
    Session,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Burst {
    /// Users logging in at once, each on its own connection.
    pub users: usize,
    /// How they log in.
    pub credential: Credential,
    /// The server binary.
    pub server_bin: String,
    /// More flags for the server (to compare settings, or an older binary).
    pub server_args: Vec<String>,
}

/// How one connection's login ended.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    busy: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
}

/// Runs the burst and returns its report (one JSON object).
pub async fn run(burst: Burst) -> Value {
    let dir = std::env::temp_dir().join(format!("moechat-burst-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| support::fail(TOOL, &format!("{}: {e}", dir.display())));
    let _ = std::fs::remove_file(dir.join("template.db"));
    let seed = Seed::create(&dir, burst.users, TOOL).await;
    let db_arg = seed.db.to_string_lossy().into_owned();
    let max = (burst.users + 100).to_string();
    let mut args = vec!["--db", &db_arg, "--max-connections", &max];
    args.extend(burst.server_args.iter().map(String::as_str));
    let server = ServerProcess::start(&burst.server_bin, &args, TOOL);
    let pid = server.child.id();

    let mut conns = Vec::with_capacity(burst.users);
    for i in 0..burst.users {
        match TcpStream::connect(("127.0.0.1", server.port)).await {
            Ok(s) => conns.push(s),
            Err(e) => support::fail(TOOL, &format!("connection {i}: {e}")),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = rss_kib(pid);

    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_connected));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(burst.users);
    for (i, (stream, token)) in conns.into_iter().zip(seed.tokens.iter()).enumerate() {
        let tally = tally.clone();
        let login = match burst.credential {
            Credential::Password => {
                json!({"req": "login", "user": user(i), "password": PASSWORD})
            }
            Credential::Session => {
                json!({"req": "login", "user": user(i), "session": token})
            }
        };
        let line = format!(
            "{}\n",
            json!({"status": "q", "status_code": 0, "info": login})
        );
        tasks.push(tokio::spawn(async move {
            login_until_answered(stream, line.into_bytes(), i as u64, &tally).await
        }));
    }
    // Logged-in connections stay open until the end: their memory is part of the figure.
    let all = async {
        let mut held = Vec::with_capacity(tasks.len());
        for t in tasks {
            held.push(t.await.ok().flatten());
        }
        held
    };
    let Ok(_held) = tokio::time::timeout(BURST_LIMIT, all).await else {
        support::fail(TOOL, "the burst did not finish within 300 s");
    };
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    // Let the allocator give back what it will, as it would between bursts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let ok = tally.ok.load(Ordering::Relaxed);
    let mib = |kib: u64| (kib as f64 / 1024.0 * 10.0).round() / 10.0;
    json!({
        "users": burst.users,
        "credential": match burst.credential {
            Credential::Password => "password",
            Credential::Session => "session",
        },
        "server_args": burst.server_args,
        "logged_in": ok,
        "busy_answers": tally.busy.load(Ordering::Relaxed),
        "refused": tally.refused.load(Ordering::Relaxed),
        "other_failures": tally.other.load(Ordering::Relaxed),
        "seconds": (seconds * 100.0).round() / 100.0,
        "logins_per_s": (ok as f64 / seconds * 10.0).round() / 10.0,
        "rss_connected_mib": mib(rss_connected),
        "rss_peak_mib": mib(peak.load(Ordering::Relaxed)),
        "rss_after_mib": mib(rss_after),
    })
}

/// Logs in on `stream`, sending again after `r`/24 with the clients' backoff
/// (doubling from 50 ms to 1 s, jittered), until another answer comes; the
/// connection, if it logged in.
async fn login_until_answered(
    stream: TcpStream,
    login: Vec<u8>,
    seed: u64,
    tally: &Tally,
) -> Option<TcpStream> {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    let mut delay = Duration::from_millis(50);
    let mut noise = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    loop {
        if wr.write_all(&login).await.is_err() {
            tally.other.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let code = match lines.next_line().await {
            Ok(Some(line)) => serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["status_code"].as_u64())
                .and_then(|n| u8::try_from(n).ok())
                .and_then(Code::from_number),
            _ => None,
        };
        match code {
            Some(Code::LoginOk) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                return lines.into_inner().into_inner().reunite(wr).ok();
            }
            Some(Code::Busy) => {
                tally.busy.fetch_add(1, Ordering::Relaxed);
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                let half = delay / 2;
                let jitter = Duration::from_nanos(noise % (half.as_nanos() as u64).max(1));
                tokio::time::sleep(half + jitter).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Some(Code::TooManyAttempts) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            _ => {
                tally.other.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
    }
}
