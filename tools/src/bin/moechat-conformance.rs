//! `moechat-conformance`: the runners of `conformance/` (see its README).
//!
//! - `transcripts`: replays the server transcripts against a server, either one at
//!   `--addr` (any implementation of the protocol) or a fresh `moechat-server` per
//!   transcript, started with the settings the transcript requires.
//! - `play SCRIPT`: the scripted fake server of a client script, for a client's own
//!   test driver to connect its client to.

use std::path::{Path, PathBuf};
use std::process::Child;

use clap::{Parser, Subcommand};
use moechat_tools::support::{self, ServerProcess};
use moechat_tools::{play, transcript};

const TOOL: &str = "moechat-conformance";

#[derive(Debug, Parser)]
#[command(name = TOOL, version, about = "Runs MoeChat's conformance vectors")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replays server transcripts (default: every conformance/server/*.jsonl)
    Transcripts {
        /// A running server to check; its settings must match each transcript's `requires`
        #[arg(long, conflicts_with = "server_bin")]
        addr: Option<String>,
        /// Start this moechat-server for each transcript instead (default: the one
        /// built beside this tool)
        #[arg(long)]
        server_bin: Option<String>,
        /// Transcript files or folders
        paths: Vec<PathBuf>,
    },
    /// Plays the server's side of a client script; prints `listening on 127.0.0.1:PORT`
    /// and exits 0 once every step happened as the script says
    Play {
        /// Speak WebSocket (one frame per text message) instead of TCP lines
        #[arg(long)]
        ws: bool,
        /// The client script (conformance/client/*.jsonl)
        script: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Transcripts {
            addr,
            server_bin,
            paths,
        } => transcripts(addr, server_bin, paths),
        Command::Play { ws, script } => {
            if let Err(e) = play::play(&script, ws, |addr| {
                println!("listening on {addr}");
                use std::io::Write;
                let _ = std::io::stdout().flush();
            }) {
                support::fail(TOOL, &e);
            }
        }
    }
}

/// The conformance folder of the source tree this tool was built from.
fn default_folder(sub: &str) -> PathBuf {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("conformance")
        .join(sub);
    folder.canonicalize().unwrap_or(folder)
}

fn files(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    let paths = if paths.is_empty() {
        vec![default_folder("server")]
    } else {
        paths
    };
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(&p)
                .unwrap_or_else(|e| support::fail(TOOL, &format!("{}: {e}", p.display())))
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            inside.sort();
            out.extend(inside);
        } else {
            out.push(p);
        }
    }
    out
}

/// A server this tool started and may stop.
struct Managed(Option<Child>);

impl transcript::ServerControl for Managed {
    fn stop(&mut self) -> Result<(), String> {
        let child = self.0.as_mut().ok_or("the server is already stopped")?;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        Ok(())
    }
}

/// A server at an address this tool does not control.
struct Foreign;

impl transcript::ServerControl for Foreign {
    fn stop(&mut self) -> Result<(), String> {
        Err("this transcript stops the server: run it with --server-bin".into())
    }
}

fn transcripts(addr: Option<String>, server_bin: Option<String>, paths: Vec<PathBuf>) {
    let files = files(paths);
    if files.is_empty() {
        support::fail(TOOL, "no transcripts found");
    }
    let bin = support::server_bin(server_bin.as_deref(), TOOL);
    let mut failed = 0;
    for file in &files {
        let outcome = match &addr {
            Some(addr) => transcript::run(file, addr, &mut Foreign),
            None => run_managed(file, &bin),
        };
        match outcome {
            Ok(steps) => println!("ok   {} ({steps} steps)", file.display()),
            Err(e) => {
                failed += 1;
                println!("FAIL {e}");
            }
        }
    }
    println!(
        "{} of {} transcripts passed",
        files.len() - failed,
        files.len()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}

/// Runs `file` against a fresh server with the settings it requires.
fn run_managed(file: &Path, bin: &str) -> Result<usize, String> {
    let flags = transcript::requirements(file)?;
    let dir = std::env::temp_dir().join(format!(
        "moechat-conformance-{}-{}",
        std::process::id(),
        moechat_tools::conformance::run_token()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let db = dir.join("conformance.db").to_string_lossy().into_owned();
    let mut args: Vec<&str> = vec!["--db", &db];
    args.extend(flags.iter().map(String::as_str));
    let server = ServerProcess::start(bin, &args, TOOL);
    let addr = format!("127.0.0.1:{}", server.port);
    let mut managed = Managed(Some(server.child));
    let result = transcript::run(file, &addr, &mut managed);
    if let Some(mut child) = managed.0.take() {
        support::terminate(&mut child);
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}
