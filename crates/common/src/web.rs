//! Serving HTTP/1.1 with hyper: a connection cap, header and body timeouts, a write deadline,
//! a body size limit, and graceful shutdown (stop accepting, let open requests finish within a
//! grace period). Plus the few response helpers the routers share.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Sleep;

use crate::config::HttpConfig;
use crate::metrics::{Counter, Registry};

pub type Body = Full<Bytes>;
pub type Resp = Response<Body>;

/// Largest request head (request line and headers) accepted; a larger one is answered
/// `431 Request Header Fields Too Large` and the connection is closed. Browsers send a few
/// hundred bytes; Nginx in front allows 8 KiB per line.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields in one request; more is answered `431` too.
pub const MAX_HEADERS: usize = 100;

/// Connections this process closed because their answer made no progress for
/// `http.write_timeout_ms`: every listener of the process counts here, and each service's
/// `/metrics` shows it.
pub static WRITE_TIMEOUTS: Counter = Counter::new();

/// A connection's socket with a deadline on writing: once a write has waited
/// `limit` without the client taking a byte (its receive window and our send buffer full), the
/// write fails with `TimedOut` and hyper closes the connection. Reading is not bounded here
/// (the header and body timeouts do that), and neither is a connection with nothing to send.
/// An upgraded connection (result's WebSocket) keeps it, under its own shorter bound.
struct WriteDeadline {
    io: TcpStream,
    limit: Duration,
    /// Started when a write first found the socket full; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    fn new(io: TcpStream, limit: Duration) -> WriteDeadline {
        WriteDeadline {
            io,
            limit,
            stalled: None,
        }
    }

    /// After a write: progress clears the deadline; `Pending` starts it, or fails the write
    /// once it has passed.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if stalled.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            WRITE_TIMEOUTS.inc();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no byte of the answer within http.write_timeout_ms",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

/// Serves `handler` on `listener` until `shutdown` completes, then drains. Every answer
/// leaves with [`harden`]'s headers, whichever handler or refusal made it.
///
/// Connections past `http.max_connections` wait in the listen backlog. Connections are served with
/// upgrades enabled (the result service's WebSocket). A header read timeout cuts off clients
/// that do not send a whole request head in time (a silent or trickling client, or an idle
/// keep-alive connection), which frees their place; a head over [`MAX_HEAD_BYTES`] or with
/// more than [`MAX_HEADERS`] fields gets `431`. An answer the client does not take for
/// `http.write_timeout_ms` closes the connection (see [`WRITE_TIMEOUTS`]).
pub async fn serve<H, F>(
    listener: TcpListener,
    http: HttpConfig,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(http.max_connections.get()));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone; when all are dropped, the drain is over.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, addr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let mut stop_rx = stop_rx.clone();
        let done_tx = done_tx.clone();
        let header_timeout = http.header_timeout_ms.get();
        let write_timeout = http.write_timeout_ms.get();
        tokio::spawn(async move {
            let _permit = permit;
            let _done = done_tx;
            // Until its first byte, a connection costs its task and socket only (1.4 KiB):
            // hyper's state and its two 8 KiB buffers come with the first byte (13 KiB more).
            // A client that sends nothing within the header timeout is closed, as hyper would.
            // A peek, not `readable()`: that one also wakes for a fresh socket with no data.
            let mut byte = [0u8; 1];
            let first_byte = tokio::time::timeout(header_timeout, stream.peek(&mut byte));
            let stopped = async { stop_rx.wait_for(|stop| *stop).await.map(|_| ()) };
            tokio::select! {
                ready = first_byte => {
                    if !matches!(ready, Ok(Ok(_))) {
                        return;
                    }
                }
                _ = stopped => return,
            }
            // Boxed, so that the task of a connection that has sent nothing holds only the
            // small future above, not room for hyper's connection state.
            Box::pin(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let refused = refuse_what_nginx_refuses(&req);
                    let handler = handler.clone();
                    async move {
                        let mut resp = match refused {
                            Some(resp) => resp,
                            None => handler(req).await,
                        };
                        harden(&mut resp);
                        Ok::<_, Infallible>(resp)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .max_header_size(MAX_HEAD_BYTES)
                    .max_headers(MAX_HEADERS)
                    .max_buf_size(64 * 1024)
                    .serve_connection(
                        TokioIo::new(WriteDeadline::new(stream, write_timeout)),
                        service,
                    )
                    .with_upgrades();
                tokio::pin!(conn);
                let result = tokio::select! {
                    r = conn.as_mut() => r,
                    _ = async { stop_rx.wait_for(|stop| *stop).await.map(|_| ()) } => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, %addr, "connection ended with an error");
                }
            })
            .await;
        });
    }

    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    if tokio::time::timeout(http.shutdown_grace_ms.get(), done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?http.shutdown_grace_ms.get(), "connections still open after the grace period");
    }
    Ok(())
}

/// What Nginx refuses and hyper lets through, refused the same way straight to a service,
/// before any handler sees the request: an HTTP/1.1 request without a `Host`, or any request
/// with two (`400`); a transfer coding other than `chunked` alone, such as `gzip, chunked`,
/// whose `gzip` hyper would ignore (`501`). The connection is closed after the answer, since
/// the body is left unread.
fn refuse_what_nginx_refuses<B>(req: &Request<B>) -> Option<Resp> {
    let hosts = req.headers().get_all(header::HOST).iter().count();
    let refusal = if hosts > 1 {
        Some((StatusCode::BAD_REQUEST, "more than one Host header"))
    } else if hosts == 0 && req.version() == http::Version::HTTP_11 {
        Some((
            StatusCode::BAD_REQUEST,
            "an HTTP/1.1 request needs a Host header",
        ))
    } else if !transfer_coding_is_plain(req.headers()) {
        Some((
            StatusCode::NOT_IMPLEMENTED,
            "no transfer coding but chunked is implemented",
        ))
    } else {
        None
    };
    let (status, reason) = refusal?;
    let mut resp = text(status, reason);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Some(resp)
}

/// Whether `Transfer-Encoding` is absent or exactly `chunked` (one coding, any case).
fn transfer_coding_is_plain(headers: &http::HeaderMap) -> bool {
    let mut codings = Vec::new();
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        codings.extend(value.split(',').map(str::trim).filter(|c| !c.is_empty()));
    }
    match codings.as_slice() {
        [] => headers.get(header::TRANSFER_ENCODING).is_none(),
        [only] => only.eq_ignore_ascii_case("chunked"),
        _ => false,
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body over {0} bytes")]
    TooLarge(usize),
    #[error("request body not received in time")]
    Timeout,
    #[error("request body could not be read")]
    Read,
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads the whole body, refusing more than `http.max_body_bytes` (checked against
/// `Content-Length` first, then while reading) or a body slower than `http.body_timeout_ms`.
pub async fn read_body(req: Request<Incoming>, http: &HttpConfig) -> Result<Bytes, BodyError> {
    let max = http.max_body_bytes.get();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge(max));
    }
    let collect = Limited::new(req.into_body(), max).collect();
    match tokio::time::timeout(http.body_timeout_ms.get(), collect).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(max)),
        Ok(Err(_)) => Err(BodyError::Read),
    }
}

/// The media type of a request, lowercased and without parameters.
pub fn content_type(req: &Request<Incoming>) -> Option<String> {
    let value = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next()?.trim().to_ascii_lowercase())
}

/// A response with a body and a content type.
pub fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A static asset of the binary (style sheet, script, icon), cacheable for an hour.
pub fn asset(content_type: &'static str, body: &'static str) -> Resp {
    let mut resp = respond(StatusCode::OK, content_type, body);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    resp
}

/// A plain-text answer, one line.
pub fn text(status: StatusCode, message: impl Into<String>) -> Resp {
    let mut body = message.into();
    body.push('\n');
    respond(status, "text/plain; charset=utf-8", body)
}

pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Resp {
    let body = serde_json::to_vec(value).expect("our response types always serialize");
    respond(status, "application/json", body)
}

pub fn html(status: StatusCode, body: String) -> Resp {
    respond(status, "text/html; charset=utf-8", body)
}

pub fn not_found() -> Resp {
    text(StatusCode::NOT_FOUND, "not found")
}

/// 405 with the `Allow` header listing what the path accepts.
pub fn method_not_allowed(allow: &'static str) -> Resp {
    let mut resp = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// `GET /metrics`: what `register` registers, then the process's open-file gauges
/// ([`crate::nofile::register`]), read now, as Prometheus text.
pub fn metrics(register: impl FnOnce(&mut Registry)) -> Resp {
    let mut registry = Registry::default();
    register(&mut registry);
    crate::nofile::register(&mut registry);
    respond(
        StatusCode::OK,
        crate::metrics::CONTENT_TYPE,
        crate::metrics::encode(&registry),
    )
}

/// `/readyz`: 200 "ready", or 503 naming what is down.
pub fn readiness(problems: &[String]) -> Resp {
    if problems.is_empty() {
        text(StatusCode::OK, "ready")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: {}",
                problems.join("; ").replace(['\r', '\n'], " ")
            ),
        )
    }
}

/// Headers every page and answer carries; [`serve`] adds them to each answer.
pub fn harden(resp: &mut Resp) {
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; \
             img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_nginx_refuses_are_refused() {
        let request = |version: http::Version, headers: &[(&str, &str)]| {
            let mut req = Request::builder().version(version).uri("/");
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            refuse_what_nginx_refuses(&req.body(()).unwrap()).map(|r| r.status())
        };
        use http::Version as V;
        assert_eq!(request(V::HTTP_11, &[("host", "x")]), None);
        assert_eq!(request(V::HTTP_10, &[]), None, "HTTP/1.0 needs no Host");
        assert_eq!(request(V::HTTP_11, &[]), Some(StatusCode::BAD_REQUEST));
        let two = [("host", "x"), ("host", "y")];
        assert_eq!(request(V::HTTP_11, &two), Some(StatusCode::BAD_REQUEST));
        assert_eq!(request(V::HTTP_10, &two), Some(StatusCode::BAD_REQUEST));
        for plain in ["chunked", "Chunked", " chunked "] {
            let h = [("host", "x"), ("transfer-encoding", plain)];
            assert_eq!(request(V::HTTP_11, &h), None, "{plain:?}");
        }
        for coded in [
            "gzip, chunked",
            "gzip",
            "chunked, chunked",
            "identity",
            "",
            ",",
        ] {
            let h = [("host", "x"), ("transfer-encoding", coded)];
            assert_eq!(
                request(V::HTTP_11, &h),
                Some(StatusCode::NOT_IMPLEMENTED),
                "{coded:?}"
            );
        }
        let split = [
            ("host", "x"),
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(
            request(V::HTTP_11, &split),
            Some(StatusCode::NOT_IMPLEMENTED)
        );
    }
}
