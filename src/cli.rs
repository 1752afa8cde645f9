//! The `moechat-server` command line: flags (each also read from `MOECHAT_<NAME>`),
//! the user-management subcommands, logging and signals. No chat logic lives
//! here; [`run`] is public so other front ends (the Python package) can offer
//! exactly the same command.
//!
//! Every failure is one line on stderr and a non-zero exit: 2 for a usage
//! error, 1 for anything else. Never a panic or a backtrace.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, ServerConfig, DEFAULT_DB, DEFAULT_HOST, DEFAULT_PORT, MEMORY_DB};
use crate::server::accounts::{AccountError, Accounts};
use crate::server::hasher::Hasher;
use crate::server::Server;
use crate::store::{NoRouting, SqliteStore, Store, StoreError};

const NAME: &str = "moechat-server";

/// MoeChat server: newline-delimited JSON chat over TCP, with an embedded SQLite store.
#[derive(Debug, Parser)]
#[command(name = NAME, version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
    /// SQLite database file, or :memory:
    #[arg(long, env = "MOECHAT_DB", default_value = DEFAULT_DB, global = true, value_name = "PATH")]
    db: String,
    /// Log level: error, warn, info, debug or trace
    #[arg(
        long,
        env = "MOECHAT_LOG_LEVEL",
        default_value = "info",
        global = true,
        value_name = "LEVEL"
    )]
    log_level: LogLevel,
}

// Defaults and bounds come from `config`'s tables: the help shows them, and
// `ServerConfig::validate` judges every value, as it does for the Python `Server`.
#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on
    #[arg(long, env = "MOECHAT_HOST", default_value = DEFAULT_HOST)]
    host: String,
    /// Port to listen on (0 = any free port)
    #[arg(long, env = "MOECHAT_PORT", default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Seconds of client silence before a ping; twice that closes the connection
    #[arg(long, env = "MOECHAT_HEARTBEAT", default_value_t = config::HEARTBEAT.default, value_name = "SECS")]
    heartbeat: f64,
    /// Whether anyone may register a user
    #[arg(long, env = "MOECHAT_REGISTRATION", value_enum, default_value = "open")]
    registration: Registration,
    /// Longest accepted frame, bytes
    #[arg(long, env = "MOECHAT_MAX_FRAME_BYTES", default_value_t = config::MAX_FRAME_BYTES.default_usize(), value_name = "BYTES")]
    max_frame_bytes: usize,
    /// Longest message text, bytes
    #[arg(long, env = "MOECHAT_MAX_TEXT_BYTES", default_value_t = config::MAX_TEXT_BYTES.default_usize(), value_name = "BYTES")]
    max_text_bytes: usize,
    /// Connections served at once
    #[arg(long, env = "MOECHAT_MAX_CONNECTIONS", default_value_t = config::MAX_CONNECTIONS.default_usize(), value_name = "N")]
    max_connections: usize,
    /// Pushes queued for one connection before it is closed as a slow consumer (e/67)
    #[arg(long, env = "MOECHAT_OUTBOUND_QUEUE", default_value_t = config::OUTBOUND_QUEUE.default_usize(), value_name = "N")]
    outbound_queue: usize,
    /// Messages a connection may send per second (e/74 past it); 0 = no limit
    #[arg(long, env = "MOECHAT_RATE_LIMIT", default_value_t = config::RATE_LIMIT_DEFAULT, value_name = "MSGS_PER_SEC")]
    rate_limit: f64,
    /// Messages a connection may send at once before the rate applies
    #[arg(long, env = "MOECHAT_RATE_BURST", default_value_t = config::RATE_BURST.default_u32(), value_name = "N")]
    rate_burst: u32,
    /// Failed logins allowed from one address per minute (r/22 past it); 0 = no cap
    #[arg(long, env = "MOECHAT_LOGIN_RATE", default_value_t = config::LOGIN_RATE.default_u32(), value_name = "PER_MIN")]
    login_rate: u32,
    /// Failed password logins allowed for one account per 15 minutes (r/22 past it); 0 = no cap
    #[arg(long, env = "MOECHAT_ACCOUNT_FAILURES", default_value_t = config::ACCOUNT_FAILURES.default_u32(), value_name = "N")]
    account_failures: u32,
    /// Password hashes computed at once [default: the number of cores]
    #[arg(long, env = "MOECHAT_HASH_WORKERS", value_name = "N")]
    hash_workers: Option<usize>,
    /// Logins that may wait for a hashing slot (r/24 past it)
    #[arg(long, env = "MOECHAT_HASH_QUEUE", default_value_t = config::HASH_QUEUE.default_usize(), value_name = "N")]
    hash_queue: usize,
    /// Seconds a login may wait for a hashing slot before r/24
    #[arg(long, env = "MOECHAT_HASH_WAIT", default_value_t = config::HASH_WAIT.default, value_name = "SECS")]
    hash_wait: f64,
    /// Seconds a session token stays valid for resuming a login
    #[arg(long, env = "MOECHAT_SESSION_TTL", default_value_t = config::SESSION_TTL.default, value_name = "SECS")]
    session_ttl: f64,
    /// TLS certificate chain, PEM, leaf first (needs --tls-key); every connection then speaks TLS
    #[arg(long, env = "MOECHAT_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// TLS private key of the certificate, PEM (needs --tls-cert)
    #[arg(long, env = "MOECHAT_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// HTTP listener for the chat page, /ws, /metrics and /healthz (HTTPS with --tls-cert), or off
    #[arg(long, env = "MOECHAT_HTTP", default_value = config::DEFAULT_HTTP, value_name = "HOST:PORT|off")]
    http: String,
    /// Origins besides the page's own allowed to open /ws, comma-separated (* = any)
    #[arg(
        long,
        env = "MOECHAT_HTTP_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    http_origins: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Registration {
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a user (the password is prompted for, or read from stdin)
    AddUser {
        /// The user's name: 1-32 characters from a-z 0-9 _ . -
        name: String,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user and its direct messages
    DelUser {
        /// The user's name
        name: String,
    },
    /// List users, one per line
    ListUsers,
}

/// A failure worth one line on stderr.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> CliError {
        CliError::Failed(e.to_string())
    }
}

impl From<AccountError> for CliError {
    fn from(e: AccountError) -> CliError {
        CliError::Failed(e.to_string())
    }
}

/// Runs the command line with `args` (the first is the program name); returns the exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                print!("{e}");
                return 0;
            }
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("{NAME}: {first} (see --help)");
            return 2;
        }
    };
    match execute(cli) {
        Ok(()) => 0,
        Err(CliError::Usage(msg)) => {
            eprintln!("{NAME}: {msg}");
            2
        }
        Err(CliError::Failed(msg)) => {
            eprintln!("{NAME}: {msg}");
            1
        }
    }
}

fn execute(cli: Cli) -> Result<(), CliError> {
    init_logging(cli.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the runtime: {e}")))?;
    match cli.command {
        None => {
            let config = server_config(&cli.serve, cli.db)?;
            runtime.block_on(serve(config))
        }
        Some(Command::AddUser {
            name,
            password_stdin,
        }) => {
            let password = read_password(&name, password_stdin)?;
            let store = open_store(&cli.db, false)?;
            runtime.block_on(async {
                // One user, one hash: a single worker, and all the time it needs.
                let hasher = Hasher::new(1, 0, Duration::from_secs(1))
                    .map_err(|e| CliError::Failed(format!("cannot start a thread: {e}")))?;
                let result = Accounts::new(store.clone(), Duration::from_secs(1), hasher)
                    .create(&name, &password)
                    .await;
                store.close().await?;
                match result {
                    Ok(()) => {
                        eprintln!("{NAME}: created user {name:?}");
                        Ok(())
                    }
                    Err(AccountError::Store(StoreError::UserExists(_))) => {
                        Err(CliError::Failed(format!("user {name:?} already exists")))
                    }
                    Err(e @ (AccountError::InvalidName(_) | AccountError::InvalidPassword)) => {
                        Err(CliError::Usage(e.to_string()))
                    }
                    Err(e) => Err(e.into()),
                }
            })
        }
        Some(Command::DelUser { name }) => {
            let store = open_store(&cli.db, true)?;
            runtime.block_on(async {
                let deleted = store.delete_user(name.clone()).await;
                store.close().await?;
                if deleted? {
                    eprintln!("{NAME}: deleted user {name:?}");
                    Ok(())
                } else {
                    Err(CliError::Failed(format!("no such user {name:?}")))
                }
            })
        }
        Some(Command::ListUsers) => {
            let store = open_store(&cli.db, true)?;
            runtime.block_on(async {
                let users = store.list_users().await;
                store.close().await?;
                for u in users? {
                    println!("{u}");
                }
                Ok(())
            })
        }
    }
}

fn server_config(a: &ServeArgs, db: String) -> Result<ServerConfig, CliError> {
    let usage = |e: config::ConfigError| CliError::Usage(e.to_string());
    let defaults = ServerConfig::default();
    let config = ServerConfig {
        host: a.host.clone(),
        port: a.port,
        db,
        heartbeat: config::HEARTBEAT.duration(a.heartbeat).map_err(usage)?,
        registration_open: matches!(a.registration, Registration::Open),
        max_frame_bytes: a.max_frame_bytes,
        max_text_bytes: a.max_text_bytes,
        max_connections: a.max_connections,
        outbound_queue: a.outbound_queue,
        rate_limit: a.rate_limit,
        rate_burst: a.rate_burst,
        login_rate: a.login_rate,
        account_failures: a.account_failures,
        hash_workers: a.hash_workers.unwrap_or(defaults.hash_workers),
        hash_queue: a.hash_queue,
        hash_wait: config::HASH_WAIT.duration(a.hash_wait).map_err(usage)?,
        session_ttl: config::SESSION_TTL.duration(a.session_ttl).map_err(usage)?,
        tls_cert: a.tls_cert.clone(),
        tls_key: a.tls_key.clone(),
        http: config::HttpListen::parse(&a.http).map_err(usage)?,
        http_origins: a
            .http_origins
            .iter()
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect(),
        ..defaults
    };
    config.validate().map_err(usage)?;
    Ok(config)
}

async fn serve(config: ServerConfig) -> Result<(), CliError> {
    let tls = config.tls_cert.clone();
    let server = Server::bind(config)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let handle = server.handle();
    if let Some(cert) = &tls {
        tracing::info!("TLS on, with the certificate {}", cert.display());
    }
    tracing::info!("listening on {}", server.local_addr());
    if let Some(http) = server.http_addr() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!("chat page on {scheme}://{http}/");
    }
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        handle.shutdown();
    });
    server
        .run()
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Opens the store for a subcommand (before any runtime work: opening blocks);
/// `must_exist` refuses to create an empty file by accident.
fn open_store(db: &str, must_exist: bool) -> Result<Arc<dyn Store>, CliError> {
    if must_exist && db != MEMORY_DB && !Path::new(db).exists() {
        return Err(CliError::Failed(format!("no database at {db}")));
    }
    Ok(Arc::new(SqliteStore::open(db, Arc::new(NoRouting))?))
}

fn read_password(name: &str, from_stdin: bool) -> Result<String, CliError> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::Failed(format!("cannot read the password from stdin: {e}")))?;
        let password = line.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            return Err(CliError::Usage("no password on stdin".into()));
        }
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "no terminal to prompt for a password; use --password-stdin".into(),
        ));
    }
    let first = rpassword::prompt_password(format!("Password for {name}: "))
        .map_err(|e| CliError::Failed(format!("cannot read the password: {e}")))?;
    let again = rpassword::prompt_password("Repeat the password: ")
        .map_err(|e| CliError::Failed(format!("cannot read the password: {e}")))?;
    if first != again {
        return Err(CliError::Usage("the passwords do not match".into()));
    }
    Ok(first)
}

fn init_logging(level: LogLevel) {
    let level = match level {
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Trace => tracing::Level::TRACE,
    };
    // A second front end in the same process may have installed one already: keep it.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
