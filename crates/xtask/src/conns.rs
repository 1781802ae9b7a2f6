//! `cargo xtask conns`: the memory a service holds per open connection. It starts the release
//! binary of vote or result on 127.0.0.1 (its Redis and PostgreSQL unreachable: connections
//! need neither), opens N idle connections (connected, nothing sent), then N slow clients (a
//! request head begun and never finished) from child processes of this program (one process
//! holds at most `CLIENTS_PER_PROCESS`, under the open-file limit), and reads the service's
//! RSS from `/proc` before and with them open. The service's header timeout is raised for the
//! measurement so that nobody is cut off while it is read.

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Connections held by one client process.
const CLIENTS_PER_PROCESS: usize = 5_000;
/// How long the connections may take to show up in the service's descriptor table.
const DEADLINE: Duration = Duration::from_secs(120);

/// What a client process does with each of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Connect and send nothing.
    Idle,
    /// Send the start of a request head, never its end.
    Slow,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Idle => "idle",
            Mode::Slow => "slow",
        }
    }

    pub fn parse(name: &str) -> Option<Mode> {
        [Mode::Idle, Mode::Slow]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// `cargo xtask conns`: measures `service` ("vote" or "result") with `count` connections of
/// each mode; prints one line per measure.
pub fn run(service: &str, count: usize) -> anyhow::Result<()> {
    let binary = crate::workspace_root()
        .join("target")
        .join("release")
        .join(service);
    let binary = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| std::path::Path::new(&dir).join("release").join(service))
        .unwrap_or(binary);
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: cargo build --release -p {service}",
        binary.display()
    );
    let port = testkit::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut server = Command::new(&binary)
        .env_clear()
        .env("VOTING_LISTEN", addr.to_string())
        .env("VOTING_REDIS__URL", "redis://127.0.0.1:1")
        .env(
            "VOTING_POSTGRES__URL",
            "postgres://postgres@127.0.0.1:1/postgres",
        )
        .env("VOTING_HTTP__HEADER_TIMEOUT_MS", "3600000")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let outcome = measure(service, server.id(), addr, count);
    let _ = server.kill();
    let _ = server.wait();
    outcome
}

fn measure(service: &str, pid: u32, addr: SocketAddr, count: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(started.elapsed() < DEADLINE, "{service} does not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the probe connection above go.
    std::thread::sleep(Duration::from_millis(200));
    let base_fds = open_fds(pid)?;
    let base = rss_kib(pid)?;
    println!("{service}: RSS {base} KiB with no connection");
    // One mode at a time: both at once would pass the service's connection cap.
    for mode in [Mode::Idle, Mode::Slow] {
        let mut held: Vec<Child> = Vec::new();
        let mut left = count;
        while left > 0 {
            let n = left.min(CLIENTS_PER_PROCESS);
            held.push(client(addr, n, mode)?);
            left -= n;
        }
        let until = Instant::now() + DEADLINE;
        while open_fds(pid)? < base_fds + count {
            anyhow::ensure!(
                Instant::now() < until,
                "{service} holds {} connections, not {count}",
                open_fds(pid)?.saturating_sub(base_fds)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The slow clients' heads arrive just after their connections.
        std::thread::sleep(Duration::from_secs(2));
        let with = rss_kib(pid)?;
        println!(
            "{service}: RSS {with} KiB with {count} {} connections: +{} KiB, {:.1} KiB each",
            mode.name(),
            with.saturating_sub(base),
            with.saturating_sub(base) as f64 / count as f64,
        );
        for mut child in held {
            let _ = child.kill();
            let _ = child.wait();
        }
        let until = Instant::now() + DEADLINE;
        while open_fds(pid)? > base_fds {
            anyhow::ensure!(Instant::now() < until, "{service} keeps closed connections");
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("{service}: RSS {} KiB once they closed", rss_kib(pid)?);
    }
    Ok(())
}

/// Starts `xtask conns-client` holding `n` connections of `mode` to `addr`; returns once it
/// says they are all open.
fn client(addr: SocketAddr, n: usize, mode: Mode) -> anyhow::Result<Child> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "conns-client",
            &addr.to_string(),
            &n.to_string(),
            mode.name(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start a client process")?;
    let stdout = child.stdout.take().context("the client's stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    anyhow::ensure!(line.trim() == "open", "the client said {line:?}");
    Ok(child)
}

/// The client process: opens `n` connections of `mode`, says `open`, and holds them until its
/// stdin closes (slow clients add a header byte every 10 s meanwhile).
pub fn hold(addr: SocketAddr, n: usize, mode: Mode) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        use tokio::io::AsyncWriteExt;
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let mut stream = tokio::net::TcpStream::connect(addr)
                .await
                .context("connecting")?;
            if mode == Mode::Slow {
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    .await?;
            }
            streams.push(stream);
        }
        println!("open");
        std::io::stdout().flush()?;
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        });
        tokio::pin!(stdin_closed);
        loop {
            tokio::select! {
                _ = &mut stdin_closed => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(10)) => {
                    if mode == Mode::Slow {
                        for stream in &mut streams {
                            let _ = stream.write_all(b"x").await;
                        }
                    }
                }
            }
        }
    })
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// Descriptors open in `pid`.
fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}
