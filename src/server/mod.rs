//! The tokio server: the accept loop and its limits, graceful shutdown, and the
//! shared [`Context`] every connection task reads.
//!
//! [`Server::bind`] opens the store and binds the port (port 0 picks a free
//! one, which tests rely on); [`Server::run`] serves until
//! [`ServerHandle::shutdown`] is called. Shutdown stops accepting, tells every
//! connection `e`/65, waits for the connection tasks (with a deadline), then
//! closes the store, which commits what is pending: every message that was
//! answered `r`/50 or `r`/51 was durable before its answer left.

pub mod accounts;
pub(crate) mod connection;
pub mod hasher;
pub mod hub;
pub(crate) mod limits;
pub(crate) mod queue;
pub(crate) mod session;
pub(crate) mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::metrics::{Gauges, Metrics};
use crate::protocol::code::Code;
use crate::store::{CommitSink, SqliteStore, Store, StoreError};
use crate::sync::lock;
use accounts::{AccountError, Accounts};
use hub::{Conn, Hub, LocalHub};

/// Connections over `max_connections` told `e`/68 at once; past it they are just closed.
pub const REFUSALS_AT_ONCE: usize = 64;

/// What can stop a server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A thread the server needs could not be started.
    #[error("cannot start the server's threads: {0}")]
    Threads(std::io::Error),
    /// The server's task ended abnormally (a panic in it: a bug).
    #[error("the server stopped abnormally: {0}")]
    Stopped(String),
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `host:port` as configured.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An account operation failed.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// What every connection task shares.
pub struct Context {
    /// The settings the server was started with.
    pub config: ServerConfig,
    /// Users and the message log.
    pub store: Arc<dyn Store>,
    /// Presence and routing.
    pub hub: Arc<dyn Hub>,
    /// Password checks and user creation.
    pub accounts: Accounts,
    /// Cancelled once, when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// The caps on failed logins, per address and per account.
    pub logins: limits::LoginLimits,
    /// Set when every connection speaks TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Every connection past its handshake, for shutdown to close.
    pub connections: Connections,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
    /// One per connection served (TCP and WebSocket alike), `max_connections` in all.
    pub(crate) permits: Arc<Semaphore>,
    /// Refusals in progress (see [`REFUSALS_AT_ONCE`]).
    pub(crate) refusals: Arc<Semaphore>,
    /// Every task serving a client (on either listener), for shutdown to wait on.
    pub(crate) tasks: TaskTracker,
    conn_ids: AtomicU64,
}

/// The connections being served, so that shutdown can close each one with `e`/65.
///
/// A connection waits on its own [`Conn`] signal alone, not on the shutdown token as
/// well: one waiter less in every idle connection's task (W3 in docs/BENCHMARKS.md).
#[derive(Debug, Default)]
pub struct Connections {
    live: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // Each step leaves the map whole, so a poisoned lock is still usable.
        lock(&self.live)
    }

    /// Adds `conn`; closes it at once if shutdown has already begun (it may have
    /// missed [`Connections::close_all`]).
    pub fn add(&self, conn: Arc<Conn>, shutdown: &CancellationToken) {
        self.lock().insert(conn.id, conn.clone());
        if shutdown.is_cancelled() {
            conn.close(Code::ShuttingDown);
        }
    }

    /// Forgets the connection `id` (it has ended).
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Asks every connection to close with `code`.
    pub fn close_all(&self, code: Code) {
        let all: Vec<Arc<Conn>> = self.lock().values().cloned().collect();
        for conn in all {
            conn.close(code);
        }
    }
}

impl Context {
    fn next_conn_id(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The metrics in the Prometheus text format, as `/metrics` serves them.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(Gauges {
            hash_queue: self.accounts.hash_queued(),
            users_online: self.hub.online_count(),
        })
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    http: Option<crate::web::Listener>,
    ctx: Arc<Context>,
}

/// A cloneable handle to a running server: presence, accounts and shutdown.
#[derive(Clone)]
pub struct ServerHandle {
    ctx: Arc<Context>,
    local_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
}

impl Server {
    /// Validates `config`, opens its store and binds its address.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let db = config.db.clone();
        Server::bind_with_store(config, move |sink| {
            Ok(Arc::new(SqliteStore::open(&db, sink)?) as Arc<dyn Store>)
        })
        .await
    }

    /// Like [`Server::bind`], with the store made by `open`: the seam for another
    /// [`Store`] implementation, on the in-process hub ([`LocalHub`]). `open` runs on
    /// the blocking pool and must route every committed message through the sink it
    /// is given (the server's hub).
    pub async fn bind_with_store<F>(config: ServerConfig, open: F) -> Result<Server, ServerError>
    where
        F: FnOnce(Arc<dyn CommitSink>) -> Result<Arc<dyn Store>, StoreError> + Send + 'static,
    {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(LocalHub::with_metrics(metrics.clone()));
        Server::bind_with(config, hub, metrics, open).await
    }

    /// The full seam: a server on `hub` (presence and routing, which another
    /// implementation may spread over machines) and the store `open` makes, which
    /// must route every committed message through the hub it is handed, in the order
    /// of the store contract (`store` module). `metrics` is what `/metrics` reports;
    /// the hub counts into it too, if it was given the same.
    pub async fn bind_with<F>(
        config: ServerConfig,
        hub: Arc<dyn Hub>,
        metrics: Arc<Metrics>,
        open: F,
    ) -> Result<Server, ServerError>
    where
        F: FnOnce(Arc<dyn CommitSink>) -> Result<Arc<dyn Store>, StoreError> + Send + 'static,
    {
        config.validate()?;
        let hasher = hasher::Hasher::new(config.hash_workers, config.hash_queue, config.hash_wait)
            .map_err(ServerError::Threads)?;
        // Before the store opens: a bad certificate should not leave a half-started server.
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
            _ => None,
        };
        let sink: Arc<dyn CommitSink> = hub.clone();
        let store = tokio::task::spawn_blocking(move || open(sink))
            .await
            .map_err(|e| StoreError::Open {
                path: config.db.clone(),
                reason: e.to_string(),
            })??;
        let addr = format!("{}:{}", config.host, config.port);
        let listener = match TcpListener::bind((config.host.as_str(), config.port)).await {
            Ok(l) => l,
            Err(source) => {
                let _ = store.close().await;
                return Err(ServerError::Bind { addr, source });
            }
        };
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let http = match &config.http {
            Some(listen) => match crate::web::Listener::bind(listen).await {
                Ok(l) => Some(l),
                Err(e) => {
                    let _ = store.close().await;
                    return Err(e);
                }
            },
            None => None,
        };
        let config_max_connections = config.max_connections;
        let ctx = Arc::new(Context {
            accounts: Accounts::new(store.clone(), config.session_ttl, hasher),
            logins: limits::LoginLimits::new(
                config.login_rate,
                config.account_failures,
                crate::config::ACCOUNT_WINDOW,
            ),
            tls,
            config,
            store,
            hub,
            shutdown: CancellationToken::new(),
            connections: Connections::default(),
            metrics,
            permits: Arc::new(Semaphore::new(config_max_connections)),
            refusals: Arc::new(Semaphore::new(REFUSALS_AT_ONCE)),
            tasks: TaskTracker::new(),
            conn_ids: AtomicU64::new(0),
        });
        Ok(Server {
            listener,
            local_addr,
            http,
            ctx,
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The HTTP listener's bound address, if it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(crate::web::Listener::local_addr)
    }

    /// A handle for presence, accounts and shutdown.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            ctx: self.ctx.clone(),
            local_addr: self.local_addr,
            http_addr: self.http_addr(),
        }
    }

    /// Serves until [`ServerHandle::shutdown`], then shuts down gracefully.
    pub async fn run(self) -> Result<(), ServerError> {
        let Server {
            listener,
            http,
            ctx,
            ..
        } = self;
        let tracker = ctx.tasks.clone();
        if let Some(http) = http {
            tracker.spawn(http.serve(ctx.clone()));
        }
        // Refusals say why (`e`/68) but are capped too: past the cap a connection is
        // just closed, so a flood over the limit cannot spawn tasks without end.
        let (permits, refusals) = (&ctx.permits, &ctx.refusals);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, _peer)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tracker.spawn(connection::serve(stream, ctx.clone(), permit));
                    }
                    Err(_) => match refusals.clone().try_acquire_owned() {
                        Ok(permit) => {
                            tracker.spawn(connection::refuse_full(stream, ctx.clone(), permit));
                        }
                        Err(_) => drop(stream),
                    },
                },
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(listener);
        // After the token is cancelled: a connection added later sees it and closes itself.
        ctx.connections.close_all(Code::ShuttingDown);
        tracker.close();
        if tokio::time::timeout(ctx.config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within the shutdown grace period");
        }
        ctx.store.close().await?;
        Ok(())
    }
}

impl ServerHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The HTTP listener's bound address, if it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The metrics in the Prometheus text format, as `/metrics` serves them.
    pub fn metrics(&self) -> String {
        self.ctx.render_metrics()
    }

    /// Online users, sorted.
    pub fn online_users(&self) -> Vec<String> {
        self.ctx.hub.online_users()
    }

    /// Creates a user (the same rules as `register`, whether or not registration is open).
    pub async fn add_user(&self, name: &str, password: &str) -> Result<(), ServerError> {
        Ok(self.ctx.accounts.create(name, password).await?)
    }

    /// Starts a graceful shutdown; [`Server::run`] returns once it is done.
    pub fn shutdown(&self) {
        self.ctx.shutdown.cancel();
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.ctx.shutdown.is_cancelled()
    }
}
