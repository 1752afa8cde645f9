//! The HTTP listener: the chat page at `/`, the protocol over WebSocket at `/ws`,
//! `/metrics` and `/healthz`.
//!
//! HTTP is parsed by hyper and routed by axum; this module only accepts sockets
//! (with the TLS handshake first when the server has a certificate), bounds them,
//! and decides who may open a WebSocket. An accepted WebSocket becomes a connection
//! like any TCP one (`server::connection`), under the same `max_connections` permits,
//! and shutdown waits for it the same way.

mod assets;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tower::ServiceExt;

use crate::config::HttpListen;
use crate::server::{connection, Context, ServerError};

/// HTTP connections served at once, WebSockets not counted (they hold a
/// connection permit instead): past it a new socket is closed at once.
const HTTP_CONNECTIONS: usize = 1024;
/// How long a client may take to send a request's headers (and its TLS handshake).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Buffer sizes of one WebSocket: tungstenite allocates its read buffer up front,
/// 128 KiB by default, which an idle chat connection should not carry.
const WS_READ_BUFFER: usize = 4 * 1024;
const WS_WRITE_BUFFER: usize = 64 * 1024;

/// A bound HTTP listener, ready to serve.
pub(crate) struct Listener {
    listener: TcpListener,
    local_addr: SocketAddr,
}

/// Where a request came in: what the WebSocket handler needs of the socket.
#[derive(Debug, Clone, Copy)]
struct Peer {
    ip: IpAddr,
    local_port: u16,
}

impl Listener {
    pub(crate) async fn bind(listen: &HttpListen) -> Result<Listener, ServerError> {
        let bind_error = |source| ServerError::Bind {
            addr: listen.to_string(),
            source,
        };
        let listener = TcpListener::bind((listen.host.as_str(), listen.port))
            .await
            .map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Listener {
            listener,
            local_addr,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accepts until shutdown; each connection is served on its own task.
    pub(crate) async fn serve(self, ctx: Arc<Context>) {
        let router = router(ctx.clone());
        let slots = Arc::new(Semaphore::new(HTTP_CONNECTIONS));
        loop {
            let accepted = tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let peer = Peer {
                ip: peer.ip(),
                local_port: self.local_addr.port(),
            };
            ctx.tasks
                .spawn(serve_http(stream, peer, ctx.clone(), router.clone(), slot));
        }
    }
}

/// Serves one HTTP connection (keep-alive, and an upgrade to WebSocket).
async fn serve_http(
    stream: TcpStream,
    peer: Peer,
    ctx: Arc<Context>,
    router: Router,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    match &ctx.tls {
        None => serve_on(TokioIo::new(stream), peer, &ctx, router).await,
        Some(acceptor) => {
            let handshake = timeout(HEADER_TIMEOUT, acceptor.accept(stream));
            let tls = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                t = handshake => t,
            };
            match tls {
                Ok(Ok(tls)) => serve_on(TokioIo::new(tls), peer, &ctx, router).await,
                Ok(Err(e)) => tracing::debug!("HTTPS handshake failed: {e}"),
                Err(_) => tracing::debug!("HTTPS handshake timed out"),
            }
        }
    }
}

async fn serve_on<I>(io: I, peer: Peer, ctx: &Context, router: Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(peer);
        let router = router.clone();
        async move { Ok::<_, Infallible>(router.oneshot(request.map(Body::new)).await.into_response()) }
    });
    let http = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(http);
    tokio::select! {
        _ = http.as_mut() => return,
        _ = ctx.shutdown.cancelled() => {}
    }
    // Finish the request in progress, if any, then close.
    http.as_mut().graceful_shutdown();
    let _ = timeout(HEADER_TIMEOUT, http).await;
}

fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/moechat.js", get(assets::client_module))
        .route("/app.js", get(assets::app))
        .route("/style.css", get(assets::style))
        .route("/ws", get(websocket))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(ctx)
}

/// Upgrades to a WebSocket served as a protocol connection, if the origin may.
async fn websocket(
    State(ctx): State<Arc<Context>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response<Body> {
    let secure = ctx.tls.is_some();
    if let Err(origin) = origin_allowed(&headers, secure, &ctx.config.http_origins) {
        let body = format!(
            "WebSocket refused: origin {origin} is neither this page's nor in --http-origins\n"
        );
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    // A message one byte over the frame limit still reaches the codec, which answers
    // it as it would a TCP line (`e`/61); anything longer tungstenite refuses unread.
    let limit = ctx.config.max_frame_bytes + 1;
    let upgrade = upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit);
    if let Ok(permit) = ctx.permits.clone().try_acquire_owned() {
        // axum serves the upgraded socket on a task of its own; the token, taken before
        // the answer leaves, makes shutdown wait for it like any connection task.
        let tracked = ctx.tasks.token();
        return upgrade.on_upgrade(move |ws| async move {
            let _tracked = tracked;
            connection::serve_ws(ws, ctx, permit, peer.ip, peer.local_port).await;
        });
    }
    match ctx.refusals.clone().try_acquire_owned() {
        Ok(permit) => upgrade.on_upgrade(move |ws| async move {
            connection::refuse_full_ws(ws, permit).await;
        }),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "server full\n").into_response(),
    }
}

/// `Ok` when the request may open a WebSocket; the refused origin otherwise.
///
/// Browsers always send `Origin` on a WebSocket handshake, and a page cannot forge
/// it: that is what makes cross-site WebSocket hijacking detectable. A request
/// without one comes from a program, not a page of another site, and is allowed.
fn origin_allowed(headers: &HeaderMap, secure: bool, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let Ok(origin) = origin.to_str() else {
        return Err(format!("{origin:?}"));
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    let scheme = if secure { "https" } else { "http" };
    let own = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| origin.eq_ignore_ascii_case(&format!("{scheme}://{host}")));
    if own {
        Ok(())
    } else {
        Err(origin.to_string())
    }
}

async fn metrics(State(ctx): State<Arc<Context>>) -> Response<Body> {
    let mut response = ctx.render_metrics().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

async fn healthz(State(ctx): State<Arc<Context>>) -> Response<Body> {
    if ctx.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if ctx.store.writable() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is not accepting writes\n",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn only_the_pages_own_origin_or_a_listed_one_may_connect() {
        let host = "127.0.0.1:3542";
        let own = headers(Some("http://127.0.0.1:3542"), host);
        assert!(origin_allowed(&own, false, &[]).is_ok());
        // The same host over the other scheme is another origin.
        assert!(origin_allowed(&own, true, &[]).is_err());
        let evil = headers(Some("https://evil.example"), host);
        assert_eq!(
            origin_allowed(&evil, false, &[]),
            Err("https://evil.example".into())
        );
        let listed = ["https://evil.example".to_string()];
        assert!(origin_allowed(&evil, false, &listed).is_ok());
        assert!(origin_allowed(&evil, false, &["*".to_string()]).is_ok());
        // A port is part of the origin.
        let other_port = headers(Some("http://127.0.0.1:8080"), host);
        assert!(origin_allowed(&other_port, false, &[]).is_err());
        // No Origin: not a browser page.
        assert!(origin_allowed(&headers(None, host), false, &[]).is_ok());
    }
}
