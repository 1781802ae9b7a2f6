//! The live tally from the outside: WebSockets that record when each probe vote shows up,
//! and the probe votes themselves (option `c`, each from a new voter, one at a time).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

/// The latest count of option `c` a socket saw, and when.
pub type Seen = watch::Receiver<(u64, Instant)>;

/// The `c` count of a snapshot frame.
fn probe_count(frame: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(frame).ok()?;
    v["options"].as_array()?.iter().find(|o| o["key"] == "c")?["count"].as_u64()
}

/// Opens a WebSocket at `url` whose frames are read by a task of their own.
pub async fn probe_socket(url: &str) -> anyhow::Result<Seen> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("opening {url}"))?;
    let (tx, rx) = watch::channel((0, Instant::now()));
    // Reads until the server closes or the receiver is dropped, which closes the socket:
    // no socket outlives its scenario.
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                msg = ws.next() => msg,
                () = tx.closed() => break,
            };
            let Some(Ok(msg)) = msg else { break };
            if let Some(n) = msg.to_text().ok().and_then(probe_count) {
                let _ = tx.send((n, Instant::now()));
            }
        }
    });
    Ok(rx)
}

/// A keep-alive connection that sends probe votes, without a cookie: each is a new voter.
pub struct Prober {
    sender: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    path: String,
}

impl Prober {
    /// `path`: the JSON vote route at `addr`, e.g. `/vote/api/vote` through Nginx.
    pub async fn open(addr: SocketAddr, path: &str) -> anyhow::Result<Prober> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Prober {
            sender,
            addr,
            path: path.to_string(),
        })
    }

    /// Sends one vote for `c`; returns when its `202` is in.
    pub async fn vote(&mut self) -> anyhow::Result<()> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(&self.path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"vote":"c"}"#)))?;
        // The service closes a keep-alive connection left idle past its header timeout (as
        // while many sockets open): a new one then.
        if self.sender.ready().await.is_err() {
            *self = Prober::open(self.addr, &self.path).await?;
        }
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        anyhow::ensure!(
            status == StatusCode::ACCEPTED,
            "probe vote answered {status}"
        );
        Ok(())
    }
}

/// Sends up to `count` probe votes one at a time (stopping early at `until`); returns each
/// one's time from `202` to the frame that shows it on `socket`, sorted.
pub async fn freshness(
    prober: &mut Prober,
    socket: &mut Seen,
    count: usize,
    until: Option<Instant>,
) -> anyhow::Result<Vec<Duration>> {
    let mut lags = Vec::with_capacity(count);
    for _ in 0..count {
        if until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        let target = socket.borrow().0 + 1;
        prober.vote().await?;
        let accepted = Instant::now();
        let (_, seen) = *tokio::time::timeout(
            Duration::from_secs(10),
            socket.wait_for(|(n, _)| *n >= target),
        )
        .await
        .context("no frame within 10 s of a probe vote")??;
        lags.push(seen.saturating_duration_since(accepted));
    }
    lags.sort();
    Ok(lags)
}

/// The value at quantile `q` of sorted durations, in ms.
pub fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

/// What many sockets on one result process showed.
#[derive(Debug)]
pub struct Fanout {
    pub sockets: usize,
    pub open_s: f64,
    /// Sockets that showed the probe vote within 10 s.
    pub updated: usize,
    /// From the probe's `202` to its frame on the last socket that showed it.
    pub last_ms: f64,
}

/// Opens `count` sockets at `url`, waits for each one's first frame, then sends one probe
/// vote and times its frame on every socket. `while_open` runs once all are open (to read
/// the server's memory).
pub async fn fanout(
    url: &str,
    count: usize,
    prober: &mut Prober,
    while_open: impl FnOnce(),
) -> anyhow::Result<Fanout> {
    let opened_at = Instant::now();
    let mut sockets = Vec::with_capacity(count);
    let mut opening =
        futures_util::stream::iter((0..count).map(|_| probe_socket(url))).buffer_unordered(256);
    while let Some(socket) = opening.next().await {
        sockets.push(socket?);
    }
    drop(opening);
    let open_s = opened_at.elapsed().as_secs_f64();
    let mut current = 0;
    for s in &mut sockets {
        // Every socket gets the current snapshot at once.
        let (n, _) = *tokio::time::timeout(Duration::from_secs(30), s.wait_for(|_| true))
            .await
            .context("a socket got no first frame within 30 s")?
            .context("a socket closed before its first frame")?;
        current = current.max(n);
    }
    while_open();
    let target = current + 1;
    prober.vote().await?;
    let accepted = Instant::now();
    let deadline = accepted + Duration::from_secs(10);
    let (mut updated, mut last) = (0, accepted);
    for s in &mut sockets {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(Ok(seen)) = tokio::time::timeout(left, s.wait_for(|(n, _)| *n >= target)).await {
            updated += 1;
            last = last.max(seen.1);
        }
    }
    Ok(Fanout {
        sockets: count,
        open_s,
        updated,
        last_ms: last.saturating_duration_since(accepted).as_secs_f64() * 1000.0,
    })
}
