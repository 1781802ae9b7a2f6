//! The harness: a real vote service on `127.0.0.1:0` backed by its own throwaway
//! `redis-server` (testkit's), plus a small hyper 1 client that speaks to it over real TCP,
//! with control of every header and of chunked bodies.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::config::Program;
use figment::Figment;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper_util::rt::TokioIo;
pub use testkit::eventually;
use testkit::{App, Infra};
use tokio::net::TcpStream;

pub const FORM: &str = "application/x-www-form-urlencoded";
pub const JSON: &str = "application/json";
/// The stream the service appends to by default.
pub const STREAM: &str = "ballots";
/// Longest any single request may take before the test fails instead of hanging.
const REQUEST_DEADLINE: Duration = Duration::from_secs(15);

/// A running vote service and the Redis behind it. Dropping it stops both.
pub struct TestApp {
    pub addr: SocketAddr,
    pub infra: Infra,
    service: App,
}

/// One stream entry: `(entry id, voter_id, vote)`.
pub type Entry = (String, String, String);

/// Starts the service with the defaults, the test Redis, then `customize` on top.
pub async fn spawn_app(customize: impl FnOnce(Figment) -> Figment) -> TestApp {
    let infra = Infra::redis_only();
    let service = App::spawn(vote::run, infra.config(Program::Vote, customize), None).await;
    TestApp {
        addr: service.addr,
        infra,
        service,
    }
}

impl TestApp {
    /// Asks the service to shut down and waits until `run` has returned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.service.stop().await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        self.request(Method::GET, path, headers, Bytes::new()).await
    }

    /// `POST /` with a form content type (overridable through `headers`).
    pub async fn post_form(
        &self,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let defaults = [("content-type", FORM)];
        let body = Full::new(body.into()).boxed();
        self.send(Method::POST, "/", &defaults, headers, body).await
    }

    /// `POST /api/vote` with a JSON content type (overridable through `headers`).
    pub async fn post_json(
        &self,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let defaults = [("content-type", JSON)];
        let body = Full::new(body.into()).boxed();
        self.send(Method::POST, "/api/vote", &defaults, headers, body)
            .await
    }

    /// One request with a body of known length (sent with `Content-Length` when not empty).
    ///
    /// `Host` defaults to the app's address; a header named in `headers` replaces the default of
    /// that name, and a name repeated in `headers` is sent once per entry.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        self.send(method, path, &[], headers, Full::new(body.into()).boxed())
            .await
    }

    /// One request whose body is sent with `Transfer-Encoding: chunked`, one chunk per item.
    pub async fn request_chunked(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        chunks: Vec<Bytes>,
    ) -> TestResponse {
        self.send(method, path, &[], headers, Chunked(chunks.into()).boxed())
            .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        defaults: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: BoxBody<Bytes, Infallible>,
    ) -> TestResponse {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .body(body)
            .expect("a valid request");
        let map = req.headers_mut();
        map.insert(
            header::HOST,
            HeaderValue::from_str(&self.addr.to_string()).expect("address is a header value"),
        );
        for (name, value) in defaults {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
                HeaderValue::from_str(value).expect("a valid header value"),
            );
        }
        let mut overridden: Vec<HeaderName> = Vec::new();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
            let value = HeaderValue::from_str(value).expect("a valid header value");
            if overridden.contains(&name) {
                map.append(name, value);
            } else {
                map.insert(name.clone(), value);
                overridden.push(name);
            }
        }

        let exchange = async {
            let stream = TcpStream::connect(self.addr).await.expect("connect");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("HTTP/1 handshake");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = sender
                .send_request(req)
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: no response: {e}"));
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: body not read: {e}"))
                .to_bytes();
            TestResponse {
                status: parts.status,
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        };
        tokio::time::timeout(REQUEST_DEADLINE, exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within {REQUEST_DEADLINE:?}"))
    }

    /// Every entry of the `ballots` stream (`XRANGE ballots - +`), oldest first.
    pub async fn stream_entries(&self) -> Vec<Entry> {
        let mut conn = self.infra.redis_conn().await;
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .expect("XRANGE");
        reply
            .ids
            .into_iter()
            .map(|entry| {
                assert_eq!(
                    entry.map.len(),
                    2,
                    "entry {} has fields voter_id and vote only: {:?}",
                    entry.id,
                    entry.map
                );
                let voter: String = entry.get("voter_id").expect("entry has a voter_id");
                let vote: String = entry.get("vote").expect("entry has a vote");
                (entry.id, voter, vote)
            })
            .collect()
    }
}

/// What the service answered.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl TestResponse {
    /// The (first) value of header `name`, if any and if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The whole `Set-Cookie` line that sets cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|line| {
                line.split(';')
                    .next()
                    .and_then(|pair| pair.split_once('='))
                    .is_some_and(|(n, _)| n.trim() == name)
            })
    }

    /// The value the response gives cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        let line = self.set_cookie(name)?;
        let pair = line.split(';').next()?;
        Some(pair.split_once('=')?.1.trim())
    }

    /// The `voter_id` the response sets; panics when it sets none.
    pub fn voter_id(&self) -> String {
        self.cookie("voter_id")
            .unwrap_or_else(|| panic!("no voter_id cookie in {self:?}"))
            .to_string()
    }

    /// A `Cookie` header value carrying every cookie this response sets, as a browser would.
    pub fn cookie_header(&self) -> String {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|line| line.split(';').next())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// Whether `s` is a well-formed voter id: exactly 32 lowercase hex characters.
pub fn is_voter_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Panics with the response unless it carries the hardening headers (see
/// [`testkit::http::assert_hardened`]).
pub fn assert_hardened(what: &str, resp: &TestResponse) {
    testkit::http::assert_hardened(what, &resp.headers);
}

/// A request body of unknown length, so hyper sends it chunked.
struct Chunked(VecDeque<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}
