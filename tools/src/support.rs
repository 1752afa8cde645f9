//! What the test instruments (`moechat-soak`, `moechat-bench`) share: starting a
//! real `moechat-server` process and reading its port, process memory from
//! /proc, and percentiles.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A one-line failure on stderr and exit status 1: the tools' only way to fail.
pub fn fail(tool: &str, msg: &str) -> ! {
    eprintln!("{tool}: {msg}");
    std::process::exit(1);
}

/// The `moechat-server` binary next to the running tool, unless one is named.
pub fn server_bin(named: Option<&str>, tool: &str) -> String {
    if let Some(bin) = named {
        return bin.to_string();
    }
    let me = std::env::current_exe().unwrap_or_else(|e| fail(tool, &e.to_string()));
    me.with_file_name("moechat-server")
        .to_string_lossy()
        .into_owned()
}

/// The `moechat-server` that the workspace built beside `tool` (the path of a tool's
/// binary, as a test gets it from `CARGO_BIN_EXE_*`): `cargo test --workspace`
/// builds both into one folder. Panics with what to do when it is missing: only tests
/// call it.
pub fn server_beside(tool: &str) -> String {
    let bin = std::path::Path::new(tool).with_file_name("moechat-server");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

/// Runs the tool `bin` (a test's `CARGO_BIN_EXE_*`) with `args`, plus `--server-bin`
/// naming the `moechat-server` built beside it; returns what it printed on stdout.
/// Panics, showing both of its streams, unless it exited 0: only tests call it.
pub fn run_beside(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .args(["--server-bin", &server_beside(bin)])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{bin} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A started `moechat-server` and the ports it reported.
pub struct ServerProcess {
    /// The server process (the tools read its memory by PID and stop it by signal).
    pub child: Child,
    /// The port it said it listens on.
    pub port: u16,
    /// The HTTP listener's port, when `args` turned it on with `--http`.
    pub http_port: Option<u16>,
}

impl ServerProcess {
    /// Starts `bin` with `args` (plus `--port 0`, and `--http off` unless `args` name
    /// an `--http` of their own) and waits for its `listening on` line (and its `chat
    /// page on` line, with HTTP on).
    pub fn start(bin: &str, args: &[&str], tool: &str) -> ServerProcess {
        let http = args.contains(&"--http");
        // The default HTTP port is fixed, and the tools start several servers.
        let http_off: &[&str] = if http { &[] } else { &["--http", "off"] };
        let mut child = Command::new(bin)
            .args(["--port", "0", "--log-level", "info"])
            .args(http_off)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| fail(tool, &format!("cannot start {bin}: {e}")));
        let stderr = child
            .stderr
            .take()
            .unwrap_or_else(|| fail(tool, "no server stderr"));
        // Room for the two lines that matter; later ones are dropped, not queued.
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        // Keeps draining stderr for the server's whole life, so it never blocks on a pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for marker in ["listening on ", "chat page on "] {
                    if let Some(addr) = line.split(marker).nth(1) {
                        let _ = tx.try_send(addr.trim().trim_end_matches('/').to_string());
                    }
                }
            }
        });
        let mut next_port = || {
            let addr = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| fail(tool, "the server did not start"));
            addr.rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| fail(tool, "cannot read the server's port"))
        };
        let port = next_port();
        let http_port = http.then(&mut next_port);
        ServerProcess {
            child,
            port,
            http_port,
        }
    }

    /// SIGTERM, then waits: a graceful stop, as an operator would do it.
    pub fn stop(mut self) {
        terminate(&mut self.child);
    }
}

/// SIGTERM to `child`, then wait for it.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

/// Resident memory of a process, KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used, seconds, from /proc; 0 if unreadable.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces, hence the last ')').
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the ')'.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / clock_ticks() as f64
}

/// The kernel's clock ticks a second (USER_HZ), asked of `getconf` once.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// The `p` quantile (0..=1) of sorted values, nearest rank; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
