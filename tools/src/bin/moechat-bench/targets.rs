//! The servers under test, as child processes on loopback: `moechat-server` on a
//! file database (durable, as in production), `redis-server` and `nats-server`
//! with their defaults except for what a benchmark needs (no snapshots, enough
//! clients). Each workload run gets a fresh process so memory figures start clean.
//!
//! MoeChat's users and their session tokens are seeded once into a template
//! database ([`moechat_tools::seed`]); each run copies the template.

use moechat_tools::seed::Seed;
use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::wire::Kind;
use super::TOOL;
use moechat_tools::support::{self, ServerProcess};

/// Where the binaries are.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub moechat: String,
    pub redis: String,
    pub nats: String,
}

/// A running server under test.
pub(crate) struct Running {
    pub kind: Kind,
    pub port: u16,
    child: Child,
    _db: Option<Scratch>,
}

/// A directory of the bench's own under the system's temporary directory, removed on drop.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(label: &str) -> Scratch {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("moechat-bench-{}-{label}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| support::fail(TOOL, &format!("{}: {e}", dir.display())));
        Scratch(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Running {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        support::rss_kib(self.pid())
    }

    /// CPU seconds (user + system) the server has used so far.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        support::cpu_seconds(self.pid())
    }

    pub(crate) fn stop(mut self) {
        support::terminate(&mut self.child);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| support::fail(TOOL, &format!("no free port: {e}")))
}

/// Starts a server that is not ours on `port` (also in `args`) and waits until it listens.
fn external(kind: Kind, bin: &str, args: &[&str], port: &str) -> Running {
    let child = spawn(bin, args);
    let port = port.parse().unwrap_or(0);
    wait_listening(port, bin);
    Running {
        kind,
        port,
        child,
        _db: None,
    }
}

fn spawn(bin: &str, args: &[&str]) -> Child {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| support::fail(TOOL, &format!("cannot start {bin}: {e}")))
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            support::fail(TOOL, &format!("{what} did not start listening"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `bin` can be run at all (so a missing Redis or NATS is skipped, not fatal).
pub(crate) fn available(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Starts a fresh server of `kind`, ready for `max_clients` connections.
pub(crate) fn start(kind: Kind, bins: &Binaries, seed: &Seed, max_clients: usize) -> Running {
    let clients = (max_clients + 100).to_string();
    match kind {
        Kind::MoeChat | Kind::MoeChatWs => {
            let dir = Scratch::new("run");
            let db = dir.path().join("bench.db");
            std::fs::copy(&seed.db, &db).unwrap_or_else(|e| support::fail(TOOL, &e.to_string()));
            let db = db.to_string_lossy().into_owned();
            let mut args = vec![
                "--db",
                &db,
                "--heartbeat",
                "600",
                "--max-connections",
                &clients,
                "--login-rate",
                "0",
                "--rate-limit",
                "0",
            ];
            if kind == Kind::MoeChatWs {
                args.extend(["--http", "127.0.0.1:0"]);
            }
            let server = ServerProcess::start(&bins.moechat, &args, TOOL);
            Running {
                kind,
                // WebSocket clients connect to the HTTP listener.
                port: server.http_port.unwrap_or(server.port),
                child: server.child,
                _db: Some(dir),
            }
        }
        Kind::Redis => {
            let port = free_port().to_string();
            let args = [
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                &clients,
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ];
            external(kind, &bins.redis, &args, &port)
        }
        Kind::Nats => {
            let port = free_port().to_string();
            external(kind, &bins.nats, &["-a", "127.0.0.1", "-p", &port], &port)
        }
    }
}
