//! A tiny HTTP/1.1 client for tests: one request per connection, the whole answer in memory.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// An answer: status, headers and body as text (lossy).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The first value of header `name`, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// `name=value` pairs of every `Set-Cookie`, joined for a `Cookie` header.
    pub fn cookies(&self) -> String {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Sends one request to `addr`.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> anyhow::Result<Answer> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = sender
        .send_request(req.body(Full::new(body.into()))?)
        .await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Answer> {
    send(addr, Method::GET, path, &[], Bytes::new()).await
}

/// [`send`] for a test: panics when there is no answer within [`crate::DEADLINE`].
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let exchange = send(addr, method.clone(), path, headers, body);
    tokio::time::timeout(crate::DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer in time"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
}

/// Panics unless `headers` carry what every answer of the services carries: `nosniff`,
/// `Referrer-Policy: same-origin`, and a Content-Security-Policy that confines everything to
/// the page's own origin, allows no inline code or `eval`, and forbids framing.
pub fn assert_hardened(what: &str, headers: &HeaderMap) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(
        header("x-content-type-options"),
        Some("nosniff"),
        "{what}: {headers:?}"
    );
    assert_eq!(
        header("referrer-policy"),
        Some("same-origin"),
        "{what}: {headers:?}"
    );
    let csp = header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no content-security-policy in {headers:?}"));
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for expected in ["default-src 'self'", "frame-ancestors 'none'"] {
        assert!(
            directives.contains(&expected),
            "{what}: {expected} in CSP {csp:?}"
        );
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: CSP {csp:?}"
    );
}
