//! `GET /ws`: the WebSocket handshake on hyper's upgrade, and one small task per socket that
//! sends the current snapshot, then every newer one.
//!
//! - Refused before upgrading: not a WebSocket request (426 with `Upgrade: websocket`), an
//!   unsupported version (426 with `Sec-WebSocket-Version: 13`), no key (400), an `Origin`
//!   that is not this scheme, `Host` and port (403; no `Origin` at all is a non-browser client
//!   and allowed), more than `result.max_sockets` open (503). The rule is vote's, in
//!   [`domain::origin`]: default ports filled in on both sides, and the scheme `http` unless
//!   a trusted proxy says `https` (`http.trust_proxy` and `X-Forwarded-Proto`).
//! - A socket's task waits on the feed's `watch` receiver and sends the newest snapshot's
//!   pre-serialized JSON: a slow client skips snapshots, never queues them. A send that
//!   does not complete within [`SEND_TIMEOUT`] drops the client, and the write buffer is
//!   capped, so a client that never reads holds one frame at most.
//! - What a client sends is read and ignored; a message or frame over [`MAX_MESSAGE`] bytes
//!   closes the socket with 1009, a protocol violation with 1002. Every [`PING_INTERVAL`] the
//!   server pings; a client that did not answer the previous ping is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::http::header::{self, HeaderMap, HeaderValue};
use ::http::{Request, Response, StatusCode};
use common::metrics::Counter;
use common::web::{self, Resp};
use domain::origin::{self, Origin};
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::snapshot::Snapshot;

/// Largest message or frame a client may send; anything larger closes the socket with 1009.
pub const MAX_MESSAGE: usize = 4096;
/// A frame not taken by the client within this time drops the client.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often every socket is pinged (keeps proxies from closing idle sockets, finds dead peers).
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// After a close for a bad message: how long unread input is drained so the close frame
/// reaches the client (instead of a reset), and how much of it at most.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// The open sockets: their cap, the signals they all follow, and their counters.
pub struct Hub {
    max: usize,
    open: AtomicUsize,
    /// Turns true when the service stops: every socket closes with 1001.
    stop: watch::Sender<bool>,
    /// Changed every [`PING_INTERVAL`] by one timer: every socket pings.
    heartbeat: watch::Sender<()>,
    pub opened: Counter,
    pub refused_full: Counter,
    pub refused_cross_origin: Counter,
    pub refused_not_websocket: Counter,
    pub frames: Counter,
    pub dropped_slow: Counter,
    pub dropped_dead: Counter,
    pub closed_too_large: Counter,
    pub closed_protocol: Counter,
}

impl Hub {
    pub fn new(max_sockets: usize) -> Hub {
        Hub {
            max: max_sockets,
            open: AtomicUsize::new(0),
            stop: watch::channel(false).0,
            heartbeat: watch::channel(()).0,
            opened: Counter::default(),
            refused_full: Counter::default(),
            refused_cross_origin: Counter::default(),
            refused_not_websocket: Counter::default(),
            frames: Counter::default(),
            dropped_slow: Counter::default(),
            dropped_dead: Counter::default(),
            closed_too_large: Counter::default(),
            closed_protocol: Counter::default(),
        }
    }

    /// Sockets open now (including those between the 101 and their first frame).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A receiver of the stop signal (the feed and the timers follow it too).
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Asks every socket to close, then waits (at most `grace`) until all have, along with
    /// everything else that follows [`Hub::stop_signal`].
    pub async fn shut_down(&self, grace: Duration) {
        self.stop.send_replace(true);
        if tokio::time::timeout(grace, self.stop.closed())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.open(),
                "sockets still open after the grace period"
            );
        }
    }

    /// Makes every socket ping (called by one timer).
    pub fn beat(&self) {
        self.heartbeat.send_replace(());
    }

    fn try_reserve(self: &Arc<Self>) -> Option<Permit> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Permit(self.clone()))
    }
}

/// One counted socket; dropping it frees the place.
struct Permit(Arc<Hub>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a request to `/ws` was refused before upgrading.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("this URL speaks WebSocket only")]
    NotWebSocket,
    #[error("unsupported WebSocket version; use 13")]
    Version,
    #[error("Sec-WebSocket-Key missing or malformed")]
    Key,
    #[error("cross-origin WebSocket refused")]
    CrossOrigin,
    #[error("too many open sockets; try again later")]
    Full,
}

impl Refusal {
    fn response(&self) -> Resp {
        let status = match self {
            Refusal::NotWebSocket | Refusal::Version => StatusCode::UPGRADE_REQUIRED,
            Refusal::Key => StatusCode::BAD_REQUEST,
            Refusal::CrossOrigin => StatusCode::FORBIDDEN,
            Refusal::Full => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut resp = web::text(status, self.to_string());
        let headers = resp.headers_mut();
        match self {
            Refusal::NotWebSocket | Refusal::Version => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            Refusal::Full => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Refusal::Key | Refusal::CrossOrigin => {}
        }
        resp
    }
}

/// Answers a `GET /ws`: `101 Switching Protocols` and a socket task, or a refusal.
/// `trust_proxy` (`http.trust_proxy`) says whether `X-Forwarded-Proto` names the scheme the
/// browser used.
pub fn upgrade(
    hub: &Arc<Hub>,
    snapshots: &watch::Receiver<Arc<Snapshot>>,
    trust_proxy: bool,
    mut req: Request<Incoming>,
) -> Resp {
    let accepted = check_handshake(req.headers(), trust_proxy).and_then(|accept| {
        let permit = hub.try_reserve().ok_or(Refusal::Full)?;
        Ok((accept, permit))
    });
    let (accept, permit) = match accepted {
        Ok(pair) => pair,
        Err(refusal) => {
            match refusal {
                Refusal::Full => &hub.refused_full,
                Refusal::CrossOrigin => &hub.refused_cross_origin,
                _ => &hub.refused_not_websocket,
            }
            .inc();
            return refusal.response();
        }
    };
    let upgrading = hyper::upgrade::on(&mut req);
    let socket = Socket {
        hub: hub.clone(),
        snapshots: snapshots.clone(),
        stop: hub.stop.subscribe(),
        heartbeat: hub.heartbeat.subscribe(),
        _permit: permit,
    };
    tokio::spawn(async move {
        match upgrading.await {
            Ok(upgraded) => socket.serve(upgraded).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut resp = Response::new(web::Body::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    resp
}

/// Checks an upgrade request (RFC 6455, section 4.2.1) and its origin; returns the value of
/// `Sec-WebSocket-Accept`.
fn check_handshake(headers: &HeaderMap, trust_proxy: bool) -> Result<HeaderValue, Refusal> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(Refusal::NotWebSocket);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refusal::Version);
    }
    // The key is 16 random bytes in base64: 24 characters ending in "==".
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| k.len() == 24 && k.as_bytes().ends_with(b"=="))
        .ok_or(Refusal::Key)?;
    if origin::check(headers, trust_proxy) == Origin::Foreign {
        return Err(Refusal::CrossOrigin);
    }
    let accept = derive_accept_key(key.as_bytes());
    Ok(HeaderValue::from_str(&accept).expect("base64 is a valid header value"))
}

/// The socket's configuration: tiny buffers, small messages, a capped write buffer.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Everything one socket's task holds.
struct Socket {
    hub: Arc<Hub>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    stop: watch::Receiver<bool>,
    heartbeat: watch::Receiver<()>,
    _permit: Permit,
}

/// How a socket's life ended.
enum End {
    /// The client left, or the connection broke.
    Gone,
    /// Close with this code and reason.
    Close(CloseCode, &'static str),
}

impl Socket {
    async fn serve(mut self, upgraded: Upgraded) {
        let mut ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(ws_config()),
        )
        .await;
        self.hub.opened.inc();
        let end = self.run(&mut ws).await;
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let closed = tokio::time::timeout(SEND_TIMEOUT, ws.close(Some(frame))).await;
            if matches!(closed, Ok(Ok(()))) && code != CloseCode::Away {
                linger(ws.get_mut()).await;
            }
        }
    }

    async fn run(&mut self, ws: &mut Ws) -> End {
        let first = self.snapshots.borrow_and_update().json().clone();
        if let Err(end) = send(&self.hub, ws, Message::Text(first)).await {
            return end;
        }
        let mut awaiting_pong = false;
        loop {
            tokio::select! {
                changed = self.snapshots.changed() => {
                    if changed.is_err() {
                        return End::Close(CloseCode::Away, "server shutting down");
                    }
                    let json = self.snapshots.borrow_and_update().json().clone();
                    if let Err(end) = send(&self.hub, ws, Message::Text(json)).await {
                        return end;
                    }
                }
                message = ws.next() => match message {
                    None => return End::Gone,
                    Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                    // A close is answered by the next read, which then ends the stream.
                    Some(Ok(_)) => {}
                    Some(Err(WsError::Capacity(_))) => {
                        self.hub.closed_too_large.inc();
                        return End::Close(CloseCode::Size, "message too big");
                    }
                    Some(Err(WsError::Protocol(_) | WsError::Utf8(_))) => {
                        self.hub.closed_protocol.inc();
                        return End::Close(CloseCode::Protocol, "protocol error");
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "socket read failed");
                        return End::Gone;
                    }
                },
                _ = self.heartbeat.changed() => {
                    if awaiting_pong {
                        self.hub.dropped_dead.inc();
                        return End::Gone;
                    }
                    awaiting_pong = true;
                    if let Err(end) = send(&self.hub, ws, Message::Ping(Default::default())).await {
                        return end;
                    }
                }
                _ = stopped(&mut self.stop) => {
                    return End::Close(CloseCode::Away, "server shutting down");
                }
            }
        }
    }
}

/// Sends one message, or ends the socket when the client does not take it in time.
async fn send(hub: &Hub, ws: &mut Ws, message: Message) -> Result<(), End> {
    let is_frame = message.is_text();
    match tokio::time::timeout(SEND_TIMEOUT, ws.send(message)).await {
        Ok(Ok(())) => {
            if is_frame {
                hub.frames.inc();
            }
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "socket write failed");
            Err(End::Gone)
        }
        Err(_) => {
            hub.dropped_slow.inc();
            Err(End::Gone)
        }
    }
}

/// Completes once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// After our close frame: stop writing and drain what the client still sends for a moment,
/// so the close frame reaches it rather than a connection reset.
async fn linger(io: &mut TokioIo<Upgraded>) {
    let _ = io.shutdown().await;
    // On the heap: a buffer in this future would make every socket's task 4 KiB larger.
    let mut buf = vec![0u8; 4096];
    let mut drained = 0;
    let deadline = tokio::time::Instant::now() + LINGER;
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let header = |(k, v): &(&str, &str)| (k.parse().unwrap(), v.parse().unwrap());
        pairs.iter().map(header).collect()
    }

    const UPGRADE: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn accept_key_is_the_rfc_example() {
        let mut h = headers(&UPGRADE);
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        let accept = check_handshake(&h, false).unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn refuses_what_is_not_an_upgrade() {
        assert!(matches!(
            check_handshake(&headers(&[]), false),
            Err(Refusal::NotWebSocket)
        ));
        let mut h = headers(&UPGRADE);
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(matches!(check_handshake(&h, false), Err(Refusal::Version)));
        let mut h = headers(&UPGRADE);
        h.remove(header::SEC_WEBSOCKET_KEY);
        assert!(matches!(check_handshake(&h, false), Err(Refusal::Key)));
    }

    /// The handshake applies [`domain::origin`]'s rule (its own tests cover each case).
    #[test]
    fn origin_must_name_the_host() {
        let check = |pairs: &[(&str, &str)], trust_proxy: bool| {
            let mut h = headers(&UPGRADE);
            h.extend(headers(pairs));
            match check_handshake(&h, trust_proxy) {
                Ok(_) => true,
                Err(Refusal::CrossOrigin) => false,
                Err(other) => panic!("{pairs:?}: {other}"),
            }
        };
        assert!(check(&[("host", "x")], false), "no Origin: allowed");
        let same = [
            ("origin", "http://127.0.0.1:8083"),
            ("host", "127.0.0.1:8083"),
        ];
        assert!(check(&same, false));
        assert!(check(
            &[("origin", "http://example.com"), ("host", "example.com:80")],
            false
        ));
        assert!(check(
            &[("origin", "http://Example.com"), ("host", "example.com")],
            false
        ));
        assert!(
            !check(
                &[("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1")],
                false
            ),
            "a Host without a port is port 80"
        );
        assert!(!check(
            &[
                ("origin", "http://evil.example"),
                ("host", "127.0.0.1:8083")
            ],
            false
        ));
        assert!(!check(
            &[("origin", "null"), ("host", "example.com")],
            false
        ));
        assert!(!check(&[("origin", "http://x")], false), "no Host");
        let secure = [
            ("origin", "https://example.com"),
            ("host", "example.com"),
            ("x-forwarded-proto", "https"),
        ];
        assert!(check(&secure, true));
        assert!(!check(&secure, false), "https only from a trusted proxy");
        let downgraded = [
            ("origin", "http://example.com"),
            ("host", "example.com"),
            ("x-forwarded-proto", "https"),
        ];
        assert!(!check(&downgraded, true));
    }

    proptest::proptest! {
        /// Whatever the handshake's headers hold, the check answers without panicking; an
        /// accepted handshake with an `Origin` names this host.
        #[test]
        fn handshake_check_never_panics(
            values in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)),
                6,
            ),
            trust_proxy in proptest::prelude::any::<bool>(),
        ) {
            let names = [
                header::CONNECTION,
                header::UPGRADE,
                header::SEC_WEBSOCKET_VERSION,
                header::SEC_WEBSOCKET_KEY,
                header::ORIGIN,
                header::HOST,
            ];
            let mut h = headers(&UPGRADE);
            for (name, value) in names.into_iter().zip(values) {
                match value.map(|v| HeaderValue::from_bytes(&v)) {
                    Some(Ok(v)) => { h.insert(name, v); }
                    Some(Err(_)) => {}
                    None => { h.remove(name); }
                }
            }
            if check_handshake(&h, trust_proxy).is_ok() && let Some(origin) = h.get(header::ORIGIN) {
                let origin = origin.to_str().unwrap();
                let host = h.get(header::HOST).unwrap().to_str().unwrap();
                proptest::prop_assert!(origin::same_origin(origin, "http", host), "{} vs {}", origin, host);
            }
        }

        /// A browser on this very host and port opens a socket; one on any other host or port
        /// does not.
        #[test]
        fn same_origin_means_this_host_and_port(
            name in "[a-z0-9][a-z0-9.-]{0,20}",
            port in proptest::option::of(1u16..),
            other in "[a-z0-9][a-z0-9.-]{0,20}",
        ) {
            let host = match port { Some(p) => format!("{name}:{p}"), None => name.clone() };
            let check = |origin: &str| {
                let mut h = headers(&UPGRADE);
                h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
                h.insert(header::HOST, HeaderValue::from_str(&host).unwrap());
                check_handshake(&h, false).is_ok()
            };
            let same = format!("http://{host}");
            proptest::prop_assert!(check(&same), "{}", same);
            if !other.eq_ignore_ascii_case(&name) {
                let foreign = format!("http://{other}");
                proptest::prop_assert!(!check(&foreign), "{}", foreign);
            }
            let effective = port.unwrap_or(80);
            let q = if effective == u16::MAX { 1 } else { effective + 1 };
            let elsewhere = format!("http://{name}:{q}");
            proptest::prop_assert!(!check(&elsewhere), "{}", elsewhere);
        }
    }
}
