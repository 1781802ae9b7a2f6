//! Benchmark: how fresh the live tally is, how many sockets one result process holds, and
//! how fast it answers `GET /api/tally`.
//!
//! ```text
//! cargo build --release -p vote -p worker -p result
//! ulimit -n 65536; cargo run --release -p result --example feed_bench -- [SOCKETS]
//! ```
//! Starts a throwaway redis-server and PostgreSQL on 127.0.0.1 and the release `vote`,
//! `worker` and `result` binaries as child processes, with three options: `a` and `b` carry
//! background load, `c` carries the probe votes, so a frame whose `c` count reaches k shows
//! that the k-th probe vote arrived. Measures:
//! 1. freshness: `202` of a probe vote -> the frame that shows it on an open socket, 200
//!    probes sent one at a time; then again while 5,000 other votes/s flow;
//! 2. SOCKETS (default 10,000) sockets on the result process: RSS, and the time from one
//!    vote's `202` to the frame on the last socket;
//! 3. `GET /api/tally` with 64 keep-alive connections for 5 s; idle RSS of result.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn release_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    match exe.parent().and_then(|p| p.parent()).map(|p| p.join(name)) {
        Some(p) if p.exists() => Ok(p),
        _ => anyhow::bail!(
            "{name} not found: run `cargo build --release -p vote -p worker -p result` first"
        ),
    }
}

const OPTIONS: &str = r#"[{key="a",label="A"},{key="b",label="B"},{key="c",label="Probe"}]"#;

fn spawn(name: &str, port: u16, redis: &str, pg: &str) -> anyhow::Result<Proc> {
    let child = Command::new(release_binary(name)?)
        .env("VOTING_LISTEN", format!("127.0.0.1:{port}"))
        .env("VOTING_REDIS__URL", redis)
        .env("VOTING_POSTGRES__URL", pg)
        .env("VOTING_OPTIONS", OPTIONS)
        .env("VOTING_RESULT__MAX_SOCKETS", "50000")
        .env("VOTING_HTTP__MAX_CONNECTIONS", "50000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(Proc(child))
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// A keep-alive HTTP/1.1 connection.
struct Conn(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn(sender))
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: &'static [u8],
    ) -> anyhow::Result<StatusCode> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body)))?;
        let resp = self.0.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        Ok(status)
    }

    async fn vote(&mut self, body: &'static [u8]) -> anyhow::Result<()> {
        let status = self.send(Method::POST, "/api/vote", body).await?;
        anyhow::ensure!(status == StatusCode::ACCEPTED, "vote answered {status}");
        Ok(())
    }
}

/// The `c` count of a snapshot frame.
fn probe_count(frame: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(frame).ok()?;
    v["options"].as_array()?.iter().find(|o| o["key"] == "c")?["count"].as_u64()
}

async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Conn::open(addr).await
            && c.send(Method::GET, "/readyz", b"").await.ok() == Some(StatusCode::OK)
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{addr} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens a socket that publishes the latest probe count it has seen, with the time.
async fn probe_socket(addr: SocketAddr) -> anyhow::Result<watch::Receiver<(u64, Instant)>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
    let (tx, rx) = watch::channel((0, Instant::now()));
    tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Some(n) = msg.to_text().ok().and_then(probe_count) {
                let _ = tx.send((n, Instant::now()));
            }
        }
    });
    Ok(rx)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Sends `count` probe votes one at a time; returns each one's 202 -> frame time.
async fn freshness(
    vote: SocketAddr,
    socket: &mut watch::Receiver<(u64, Instant)>,
    count: u64,
) -> anyhow::Result<Vec<Duration>> {
    let mut conn = Conn::open(vote).await?;
    let mut lags = Vec::new();
    for _ in 0..count {
        let target = socket.borrow().0 + 1;
        conn.vote(br#"{"vote":"c"}"#).await?;
        let accepted = Instant::now();
        let (_, seen) = *tokio::time::timeout(
            Duration::from_secs(10),
            socket.wait_for(|(n, _)| *n >= target),
        )
        .await??;
        lags.push(seen.saturating_duration_since(accepted));
    }
    lags.sort();
    Ok(lags)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sockets: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let redis = testkit::Redis::start()?;
    let pg = testkit::Postgres::start()?;
    let db = pg.create_database().await?;
    let ports = [
        testkit::free_port(),
        testkit::free_port(),
        testkit::free_port(),
    ];
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let (vote_addr, worker_addr, result_addr) = (addr(ports[0]), addr(ports[1]), addr(ports[2]));
    let _worker = spawn("worker", ports[1], &redis.url(), &db)?;
    let _vote = spawn("vote", ports[0], &redis.url(), &db)?;
    let result = spawn("result", ports[2], &redis.url(), &db)?;
    for a in [vote_addr, worker_addr, result_addr] {
        wait_ready(a).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_mb(result.0.id());

    // 1. Freshness, one vote at a time.
    let mut socket = probe_socket(result_addr).await?;
    freshness(vote_addr, &mut socket, 20).await?; // warm-up
    let quiet = freshness(vote_addr, &mut socket, 200).await?;

    // ... and under 5,000 other votes/s.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background_sent = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..16 {
        let (stop, sent) = (stop.clone(), background_sent.clone());
        load.push(tokio::spawn(async move {
            let mut conn = Conn::open(vote_addr).await?;
            let mut tick = tokio::time::interval(Duration::from_micros(16 * 200)); // 16 x 312.5/s
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                conn.vote(if n.is_multiple_of(2) {
                    br#"{"vote":"a"}"#
                } else {
                    br#"{"vote":"b"}"#
                })
                .await?;
                sent.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    let load_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = freshness(vote_addr, &mut socket, 200).await?;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await??;
    }
    let background_rate =
        background_sent.load(Ordering::Relaxed) as f64 / load_started.elapsed().as_secs_f64();

    // 2. Many sockets.
    let opened_at = Instant::now();
    let mut receivers = Vec::with_capacity(sockets);
    let mut opening = futures_util::stream::iter((0..sockets).map(|_| probe_socket(result_addr)))
        .buffer_unordered(256);
    while let Some(rx) = opening.next().await {
        receivers.push(rx?);
    }
    drop(opening);
    let open_secs = opened_at.elapsed().as_secs_f64();
    let target = socket.borrow().0 + 1;
    for rx in &mut receivers {
        rx.wait_for(|(n, _)| *n >= target - 1).await?;
    }
    let rss_sockets = rss_mb(result.0.id());
    let mut conn = Conn::open(vote_addr).await?;
    conn.vote(br#"{"vote":"c"}"#).await?;
    let accepted = Instant::now();
    let mut last = accepted;
    for rx in &mut receivers {
        let (_, seen) =
            *tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|(n, _)| *n >= target))
                .await??;
        last = last.max(seen);
    }
    let fan_out = last.saturating_duration_since(accepted);
    drop(receivers);

    // 3. GET /api/tally.
    let served = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(5);
    let mut getters = Vec::new();
    for _ in 0..64 {
        let served = served.clone();
        getters.push(tokio::spawn(async move {
            let mut conn = Conn::open(result_addr).await?;
            while Instant::now() < until {
                let status = conn.send(Method::GET, "/api/tally", b"").await?;
                anyhow::ensure!(status == StatusCode::OK, "tally answered {status}");
                served.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for g in getters {
        g.await??;
    }
    let tally_rate = served.load(Ordering::Relaxed) as f64 / 5.0;

    println!("result idle RSS                 {idle_rss:.1} MB");
    println!(
        "freshness, one at a time        p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} probes)",
        ms(percentile(&quiet, 0.5)),
        ms(percentile(&quiet, 0.99)),
        ms(*quiet.last().unwrap()),
        quiet.len()
    );
    println!(
        "freshness, under load           p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} probes, {background_rate:.0} other votes/s)",
        ms(percentile(&loaded, 0.5)),
        ms(percentile(&loaded, 0.99)),
        ms(*loaded.last().unwrap()),
        loaded.len()
    );
    println!(
        "sockets                         {sockets} opened in {open_secs:.1} s, result RSS {rss_sockets:.1} MB"
    );
    println!("vote 202 -> frame on all sockets {:.1} ms", ms(fan_out));
    println!("GET /api/tally, 64 connections  {tally_rate:.0} requests/s");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
