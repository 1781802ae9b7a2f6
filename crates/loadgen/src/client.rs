//! One keep-alive HTTP/1.1 connection per concurrency slot, on hyper 1's client over a tokio
//! `TcpStream`: reconnects when the server closed it, and says whether a failed request may
//! have reached the server.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, HOST, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::args::{Config, Target};

/// What every vote request shares, built once.
pub struct Endpoint {
    addrs: Vec<SocketAddr>,
    path: http::Uri,
    host: HeaderValue,
    content_type: HeaderValue,
    user_agent: HeaderValue,
    /// The body for each option, by option index.
    bodies: Vec<Bytes>,
    /// 202 for JSON, 303 for a form.
    pub expected: StatusCode,
}

impl Endpoint {
    /// `addrs`: where `target.authority` resolves to (tried in order on each connect).
    pub fn new(config: &Config, addrs: Vec<SocketAddr>) -> anyhow::Result<Endpoint> {
        let Target {
            host_header,
            vote_path,
            ..
        } = &config.target;
        let (content_type, expected, body): (_, _, fn(&str) -> String) = if config.form {
            (
                "application/x-www-form-urlencoded",
                StatusCode::SEE_OTHER,
                |key| format!("vote={key}"),
            )
        } else {
            ("application/json", StatusCode::ACCEPTED, |key| {
                format!(r#"{{"vote":"{key}"}}"#)
            })
        };
        Ok(Endpoint {
            addrs,
            path: vote_path.parse()?,
            host: HeaderValue::from_str(host_header)?,
            content_type: HeaderValue::from_static(content_type),
            user_agent: HeaderValue::from_static(concat!("loadgen/", env!("CARGO_PKG_VERSION"))),
            bodies: config.mix.keys().map(|k| Bytes::from(body(k))).collect(),
            expected,
        })
    }

    fn request(&self, cookie: &HeaderValue, option: u8) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.bodies[usize::from(option)].clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.path.clone();
        let h = req.headers_mut();
        h.insert(HOST, self.host.clone());
        h.insert(CONTENT_TYPE, self.content_type.clone());
        h.insert(USER_AGENT, self.user_agent.clone());
        h.insert(COOKIE, cookie.clone());
        req
    }
}

/// Why a request got no status.
#[derive(Debug)]
pub enum Failure {
    /// No connection: the request was never sent.
    Connect(std::io::Error),
    /// The connection broke after the request was (maybe) sent.
    Broken(hyper::Error),
}

/// Where a request was when it stopped: what a timeout means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    Sent,
}

/// One connection, opened on first use and reopened after it breaks or the server closes it.
pub struct Conn {
    sender: Option<SendRequest<Full<Bytes>>>,
    phase: Phase,
}

impl Default for Conn {
    fn default() -> Self {
        Conn::new()
    }
}

impl Conn {
    pub fn new() -> Conn {
        Conn {
            sender: None,
            phase: Phase::Connecting,
        }
    }

    /// Where the last request was; after a timeout, whether it may have reached the server.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Forgets the connection (after a timeout: its state is unknown).
    pub fn reset(&mut self) {
        self.sender = None;
    }

    /// Sends one vote and reads the whole answer; returns its status, and whether the vote
    /// service said the vote is unconfirmed (`Vote-Outcome: unconfirmed`: it may be counted).
    pub async fn vote(
        &mut self,
        endpoint: &Endpoint,
        cookie: &HeaderValue,
        option: u8,
    ) -> Result<(StatusCode, bool), Failure> {
        let mut req = endpoint.request(cookie, option);
        // A request that a dead keep-alive connection gives back unsent is retried once on a
        // fresh connection: it cannot have been queued.
        for _ in 0..2 {
            self.phase = Phase::Connecting;
            self.ready(endpoint).await?;
            self.phase = Phase::Sent;
            let sender = self.sender.as_mut().expect("ready opened a connection");
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let unconfirmed = resp
                        .headers()
                        .get("vote-outcome")
                        .is_some_and(|v| v.as_bytes() == b"unconfirmed");
                    let body = resp.into_body().collect().await;
                    if let Err(e) = body {
                        self.sender = None;
                        return Err(Failure::Broken(e));
                    }
                    return Ok((status, unconfirmed));
                }
                Err(mut e) => {
                    self.sender = None;
                    match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(Failure::Broken(e.into_error())),
                    }
                }
            }
        }
        self.phase = Phase::Connecting;
        Err(Failure::Connect(std::io::Error::other(
            "the server closed two fresh connections before the request was sent",
        )))
    }

    /// A connection ready for a request: the open one, or a new one.
    async fn ready(&mut self, endpoint: &Endpoint) -> Result<(), Failure> {
        if let Some(sender) = &mut self.sender
            && sender.ready().await.is_err()
        {
            self.sender = None;
        }
        if self.sender.is_none() {
            let stream = TcpStream::connect(&endpoint.addrs[..])
                .await
                .map_err(Failure::Connect)?;
            stream.set_nodelay(true).map_err(Failure::Connect)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| Failure::Connect(std::io::Error::other(e)))?;
            tokio::spawn(async move {
                // Ends when the server closes or the sender is dropped; errors surface on the
                // request that was in flight.
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        Ok(())
    }
}
