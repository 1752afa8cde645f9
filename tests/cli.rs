//! The `moechat-server` binary as a user runs it: defaults, flags and env vars,
//! the user subcommands, one-line errors, SIGTERM, and `kill -9` durability.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moechat::{Client, ClientOptions};

const BIN: &str = env!("CARGO_BIN_EXE_moechat-server");

/// Runs the binary to completion; returns (exit code, stdout, stderr).
fn run(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        // The default HTTP port is fixed: tests running at once would fight over it.
        .env("MOECHAT_HTTP", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a failure reported as exactly one line on stderr, with no panic.
fn assert_one_line_error(code: i32, stderr: &str, expected_code: i32, needle: &str) {
    assert_eq!(code, expected_code, "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line, got: {stderr:?}");
    assert!(stderr.starts_with("moechat-server: "), "{stderr}");
    assert!(
        stderr.contains(needle),
        "{stderr:?} should mention {needle:?}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

struct Running {
    child: Child,
    port: u16,
    /// What the log says after "chat page on ", once.
    page: std::sync::mpsc::Receiver<String>,
}

/// Starts the server and waits for its `listening on` line.
fn start(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Running {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("MOECHAT_HTTP", "off")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (page_tx, page) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on ").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
            if let Some(url) = line.split("chat page on ").nth(1) {
                let _ = page_tx.send(url.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server says it is listening");
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    Running { child, port, page }
}

fn terminate(mut r: Running) -> i32 {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(r.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = r.child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "server exits after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_flags_are_one_line_and_exit_2() {
    for args in [
        &["--bogus"][..],
        &["--port", "notaport"],
        &["--port", "70000"],
        &["--registration", "maybe"],
        &["--heartbeat", "0"],
        &["--heartbeat", "nan"],
        &["--max-frame-bytes", "-1"],
        &["--max-connections", "0"],
        &["--log-level", "loud"],
        &["--session-ttl", "0"],
        &["--rate-limit", "-2"],
        &["--tls-cert", "cert.pem"],
        &["--tls-key", "key.pem"],
    ] {
        let (code, _, err) = run(args, None);
        assert_one_line_error(code, &err, 2, "");
    }
    let (code, out, _) = run(&["--help"], None);
    assert_eq!(code, 0);
    for flag in [
        "--host",
        "--port",
        "--db",
        "--heartbeat",
        "--registration",
        "--max-frame-bytes",
        "--max-text-bytes",
        "--max-connections",
        "--session-ttl",
        "--rate-limit",
        "--login-rate",
        "--rate-burst",
        "--log-level",
        "--tls-cert",
        "--tls-key",
        "add-user",
        "del-user",
        "list-users",
    ] {
        assert!(out.contains(flag), "--help mentions {flag}");
    }
}

#[test]
fn a_port_in_use_is_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, _, err) = run(&["--port", &port, "--db", ":memory:"], None);
    assert_one_line_error(code, &err, 1, "cannot listen on 127.0.0.1:");
}

#[test]
fn a_corrupt_or_unwritable_db_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbage.db");
    std::fs::write(&bad, vec![b'x'; 4096]).unwrap();
    let (code, _, err) = run(&["--port", "0", "--db", bad.to_str().unwrap()], None);
    assert_one_line_error(code, &err, 1, "cannot open database");
    let (code, _, err) = run(&["--port", "0", "--db", "/nonexistent-dir/x.db"], None);
    assert_one_line_error(code, &err, 1, "cannot open database");
    let (code, _, err) = run(&["list-users", "--db", bad.to_str().unwrap()], None);
    assert_one_line_error(code, &err, 1, "cannot open database");
}

#[test]
fn unreadable_tls_material_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not PEM at all\n").unwrap();
    let junk = junk.to_str().unwrap();
    let serve = |cert: &str, key: &str| {
        let args = [
            "--port",
            "0",
            "--db",
            ":memory:",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ];
        run(&args, None)
    };
    let (code, _, err) = serve("/nonexistent/cert.pem", junk);
    assert_one_line_error(
        code,
        &err,
        1,
        "cannot read certificate /nonexistent/cert.pem",
    );
    let (code, _, err) = serve(junk, junk);
    assert_one_line_error(code, &err, 1, "no certificate in it");
}

#[test]
fn user_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let db = db.to_str().unwrap();
    let (code, _, err) = run(
        &["add-user", "alice", "--password-stdin", "--db", db],
        Some("wonderland\n"),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(
        &["--db", db, "add-user", "bob", "--password-stdin"],
        Some("builder\n"),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(
        &["add-user", "alice", "--password-stdin", "--db", db],
        Some("again\n"),
    );
    assert_one_line_error(code, &err, 1, "already exists");
    let (code, _, err) = run(
        &["add-user", "Not Valid", "--password-stdin", "--db", db],
        Some("pw\n"),
    );
    assert_one_line_error(code, &err, 2, "invalid name");
    let (code, _, err) = run(
        &["add-user", "carol", "--password-stdin", "--db", db],
        Some(""),
    );
    assert_one_line_error(code, &err, 2, "no password");
    // Without a terminal and without --password-stdin there is nobody to prompt.
    let (code, _, err) = run(&["add-user", "carol", "--db", db], None);
    assert_one_line_error(code, &err, 2, "--password-stdin");
    let (code, out, _) = run(&["list-users", "--db", db], None);
    assert_eq!(code, 0);
    assert_eq!(out, "alice\nbob\n");
    let (code, _, _) = run(&["del-user", "bob", "--db", db], None);
    assert_eq!(code, 0);
    let (code, _, err) = run(&["del-user", "bob", "--db", db], None);
    assert_one_line_error(code, &err, 1, "no such user");
    let (code, out, _) = run(&["list-users", "--db", db], None);
    assert_eq!((code, out.as_str()), (0, "alice\n"));
    let missing = dir.path().join("missing.db");
    let (code, _, err) = run(&["list-users", "--db", missing.to_str().unwrap()], None);
    assert_one_line_error(code, &err, 1, "no database at");
    assert!(!missing.exists(), "list-users does not create a database");
    // The password is stored as an argon2id hash, never as itself.
    let raw = std::fs::read(dir.path().join("users.db")).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(!text.contains("wonderland"));
}

/// Speaks the PROTOCOL.md section 5 session line by line, as `nc` would.
async fn walkthrough(port: u16) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (bob, _bob_in) = Client::connect("127.0.0.1", port).await.unwrap();
    let _ = bob.register("bob", "builder").await;
    bob.login("bob", "builder").await.unwrap();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (r, mut w) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(r).lines();
    let register = r#"{"status":"q","status_code":0,"info":{"req":"register","user":"alice","password":"wonderland"}}"#;
    w.write_all(format!("{register}\n").as_bytes())
        .await
        .unwrap();
    let _ = lines.next_line().await.unwrap().unwrap();
    let script = [
        (
            r#"{"status":"q","status_code":0,"info":{"req":"login","user":"alice","password":"wonderland"},"id":1}"#,
            r#""status_code":10"#,
        ),
        (
            r#"{"status":"q","status_code":0,"info":{"req":"users"}}"#,
            r#"{"status":"r","status_code":30,"info":{"users":["alice","bob"]}}"#,
        ),
        (
            r#"{"status":"m","status_code":80,"info":{"to":"bob","text":"hi bob"},"id":"a"}"#,
            r#""status_code":50"#,
        ),
        ("this is not json", r#"{"status":"e","status_code":62"#),
    ];
    for (send, expect) in script {
        w.write_all(format!("{send}\n").as_bytes()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            got.contains(expect),
            "sent {send}\n got {got}\n want {expect}"
        );
    }
    bob.broadcast("hello all").await.unwrap();
    let got = lines.next_line().await.unwrap().unwrap();
    assert!(
        got.contains(r#""status_code":90"#) && got.contains("hello all"),
        "{got}"
    );
}

#[test]
fn no_arguments_serves_the_seed_port_with_moechat_db() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(&[], dir.path(), &[]);
    assert_eq!(r.port, 3541);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(walkthrough(r.port));
    assert_eq!(terminate(r), 0, "SIGTERM is a clean exit");
    assert!(dir.path().join("moechat.db").exists());
}

#[test]
fn env_vars_set_flags() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(
        &[],
        dir.path(),
        &[
            ("MOECHAT_PORT", "0"),
            ("MOECHAT_DB", "env.db"),
            ("MOECHAT_REGISTRATION", "closed"),
        ],
    );
    assert_ne!(r.port, 3541);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (c, _in) = Client::connect("127.0.0.1", r.port).await.unwrap();
        let err = c.register("dave", "pw").await.unwrap_err();
        assert_eq!(err.code(), Some(44));
    });
    assert_eq!(terminate(r), 0);
    assert!(dir.path().join("env.db").exists());
}

#[test]
fn kill_9_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("durable.db");
    let db = db.to_str().unwrap().to_string();
    for (u, p) in [
        ("bob", "builder"),
        ("s0", "pw"),
        ("s1", "pw"),
        ("s2", "pw"),
        ("s3", "pw"),
    ] {
        let (code, _, err) = run(&["add-user", u, "--password-stdin", "--db", &db], Some(p));
        assert_eq!(code, 0, "{err}");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut acked = BTreeSet::new();
    for round in 0..2 {
        let mut server = start(&["--port", "0", "--db", &db], dir.path(), &[]);
        let port = server.port;
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..4)
            .map(|i| {
                let stop = stop.clone();
                rt.spawn(async move {
                    let mut mine = Vec::new();
                    // One connection each: a send cut short by the kill must fail, not wait
                    // for a server that comes back on another port.
                    let (c, _in) =
                        Client::connect_with("127.0.0.1", port, ClientOptions::no_reconnect())
                            .await
                            .unwrap();
                    c.login(&format!("s{i}"), "pw").await.unwrap();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        match c.send("bob", &format!("r{round} s{i} n{n}")).await {
                            Ok(sent) => {
                                assert!(sent.stored, "bob is offline");
                                mine.push(sent.msg_id);
                            }
                            Err(_) => break, // the server died mid-request: not acknowledged
                        }
                        n += 1;
                    }
                    mine
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        server.child.kill().unwrap(); // SIGKILL, mid-run
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            acked.extend(rt.block_on(s).unwrap());
        }
    }
    assert!(
        acked.len() > 20,
        "the senders got going ({} acknowledged)",
        acked.len()
    );
    eprintln!("{} messages acknowledged across two kill -9s", acked.len());
    let server = start(&["--port", "0", "--db", &db], dir.path(), &[]);
    let got = rt.block_on(async {
        let (bob, mut incoming) = Client::connect("127.0.0.1", server.port).await.unwrap();
        bob.login("bob", "builder").await.unwrap();
        let mut got = BTreeSet::new();
        while !acked.is_subset(&got) {
            match tokio::time::timeout(Duration::from_secs(10), incoming.recv()).await {
                Ok(Ok(m)) => {
                    assert!(got.insert(m.msg_id), "message {} delivered twice", m.msg_id);
                }
                _ => break,
            }
        }
        got
    });
    let missing: Vec<_> = acked.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(terminate(server), 0);
}

/// The command line and the Rust API give the same sentence for the same bad value
/// (the Python face is checked against the command line in test_server.py). Before,
/// a heartbeat of 1e19 seconds passed and panicked in every connection task.
#[test]
fn bad_settings_get_the_sentence_the_rust_api_gives() {
    use moechat::{Server, ServerConfig, ServerError};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cases: [(&[&str], ServerConfig); 3] = [
        (
            &["--heartbeat", "1e19"],
            ServerConfig {
                heartbeat: Duration::from_secs_f64(1e19),
                ..ServerConfig::ephemeral()
            },
        ),
        (
            &["--max-frame-bytes", "18446744073709551615"],
            ServerConfig {
                max_frame_bytes: usize::MAX,
                ..ServerConfig::ephemeral()
            },
        ),
        (
            &["--hash-workers", "0"],
            ServerConfig {
                hash_workers: 0,
                ..ServerConfig::ephemeral()
            },
        ),
    ];
    for (args, config) in cases {
        let (code, _, err) = run(args, None);
        assert_eq!(code, 2, "{err}");
        let Err(ServerError::Config(e)) = rt.block_on(Server::bind(config)) else {
            panic!("{args:?} is refused by the Rust API too");
        };
        assert_eq!(err, format!("moechat-server: {e}\n"));
    }
}

#[test]
fn the_http_listener_serves_the_page_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        &["--port", "0", "--db", ":memory:"],
        dir.path(),
        &[("MOECHAT_HTTP", "127.0.0.1:0")],
    );
    let url = server
        .page
        .recv_timeout(Duration::from_secs(20))
        .expect("server says where the page is");
    let addr = url
        .strip_prefix("http://")
        .and_then(|a| a.strip_suffix('/'))
        .expect("an http:// URL");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("ok\n"), "{reply}");
    assert_eq!(terminate(server), 0);
}

#[test]
fn a_bad_http_address_is_one_line_and_exit_2() {
    let (code, _, err) = run(&["--http", "localhost"], None);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "moechat-server: http must be HOST:PORT or off, not \"localhost\""
    );
    let (code, _, err) = run(&["--http-origins", "evil.example"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("http_origins must be"), "{err}");
}
