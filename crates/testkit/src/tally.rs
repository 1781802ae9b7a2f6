//! The results as a client sees them: the tally JSON (`/api/tally` and every WebSocket
//! message) and a WebSocket client that reads it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper::StatusCode;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use std::net::SocketAddr;

use crate::DEADLINE;
use crate::http::Answer;

/// The snapshot JSON.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Tally {
    pub options: Vec<TallyOption>,
    pub total: u64,
    pub stale: bool,
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TallyOption {
    pub key: String,
    pub label: String,
    pub count: u64,
}

impl Tally {
    /// The tally in `answer`, which must be a 200 with a JSON body.
    #[must_use]
    pub fn parse(answer: &Answer) -> Tally {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.header("content-type"), "application/json");
        serde_json::from_str(&answer.body).expect("the tally is JSON")
    }

    /// `GET path` on `addr`, parsed.
    pub async fn get(addr: SocketAddr, path: &str) -> Tally {
        Tally::parse(&crate::http::request(addr, hyper::Method::GET, path, &[], "").await)
    }

    /// Polls `GET path` on `addr` until `pred` holds, for at most `limit`.
    pub async fn when(
        addr: SocketAddr,
        path: &str,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Tally) -> bool,
    ) -> Tally {
        crate::eventually(limit, what, || async {
            let tally = Tally::get(addr, path).await;
            pred(&tally).then_some(tally)
        })
        .await
    }

    /// The count of option `key`.
    #[must_use]
    pub fn count(&self, key: &str) -> u64 {
        self.options
            .iter()
            .find(|o| o.key == key)
            .unwrap_or_else(|| panic!("option {key} is in the tally"))
            .count
    }

    /// Non-zero counts by key.
    #[must_use]
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.options
            .iter()
            .filter(|o| o.count > 0)
            .map(|o| (o.key.clone(), o.count))
            .collect()
    }
}

/// A WebSocket client.
pub struct Socket {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a read from the socket gave.
#[derive(Debug)]
pub enum Received {
    Tally(Tally),
    Closed(Option<CloseFrame>),
}

impl Socket {
    /// Opens a WebSocket to `url` with extra request headers; the error is the refusal.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Result<Socket, tungstenite::Error> {
        let mut req = url.into_client_request()?;
        for (name, value) in headers {
            req.headers_mut().insert(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                value.parse().expect("a header value"),
            );
        }
        let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(req))
            .await
            .expect("the handshake finishes in time")?;
        Ok(Socket { ws })
    }

    /// The next snapshot or close, skipping control frames.
    pub async fn receive(&mut self) -> Received {
        let read = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let tally = serde_json::from_str(text.as_str())
                            .unwrap_or_else(|e| panic!("a snapshot: {e}: {text}"));
                        return Received::Tally(tally);
                    }
                    Some(Ok(Message::Close(frame))) => return Received::Closed(frame),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("socket failed: {e}"),
                    None => return Received::Closed(None),
                }
            }
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .expect("a frame arrives in time")
    }

    /// The next snapshot.
    pub async fn next_tally(&mut self) -> Tally {
        match self.receive().await {
            Received::Tally(t) => t,
            Received::Closed(frame) => panic!("socket closed: {frame:?}"),
        }
    }

    /// Reads snapshots until one satisfies `pred`.
    pub async fn tally_where(&mut self, what: &str, pred: impl Fn(&Tally) -> bool) -> Tally {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let tally = self.next_tally().await;
            if pred(&tally) {
                return tally;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        }
    }

    /// Closes politely and waits for the server's answer.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(DEADLINE, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: String) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::Text(text.into())).await
    }
}
