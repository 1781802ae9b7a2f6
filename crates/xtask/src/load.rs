//! The load generators: `loadgen`'s release binary (its `--json` summary) and `wrk`, the
//! independent check, driven by a Lua script that gives every request a voter of its own
//! and prints one summary line.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::Command;

/// What a load run reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Load {
    /// Answered with the expected status (202, 303; any 2xx or 3xx for wrk).
    pub accepted: u64,
    /// Answered with another status, or not answered at all.
    pub failed: u64,
    pub elapsed_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// With `--verify`: every accepted vote was found in PostgreSQL.
    pub verified: Option<bool>,
    /// With `--verify`: seconds from the last accepted vote until PostgreSQL held them all.
    pub drain_s: Option<f64>,
    /// With `--verify`: accepted votes missing from PostgreSQL or stored wrong, when the
    /// check completed.
    pub lost: Option<u64>,
    /// Of `failed`: requests whose keep-alive connection the proxy closed under them (no
    /// answer; loadgen's `broken`).
    pub broken: u64,
}

impl Load {
    /// Accepted answers per second.
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed_s.max(1e-9)
    }
}

/// Runs the `loadgen` binary in `bin` with `args` (`--json --quiet` added) and reads its
/// summary. A run with refused votes exits 1 but still reports.
pub async fn loadgen(bin: &Path, args: &[String]) -> anyhow::Result<Load> {
    let output = Command::new(bin.join("loadgen"))
        .args(args)
        .args(["--json", "--quiet"])
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run loadgen")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.code() != Some(2) && !stdout.trim().is_empty(),
        "loadgen {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    parse_loadgen(&stdout)
}

fn parse_loadgen(json: &str) -> anyhow::Result<Load> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).context("loadgen's summary")?;
    let num =
        |path: &[&str]| -> Option<f64> { path.iter().try_fold(&v, |v, k| v.get(k))?.as_f64() };
    let verify = v.get("verify").filter(|v| !v.is_null());
    Ok(Load {
        accepted: num(&["accepted"]).context("no accepted count")? as u64,
        failed: (num(&["refused"]).unwrap_or(0.0) + num(&["errors", "total"]).unwrap_or(0.0))
            as u64,
        elapsed_s: num(&["elapsed_s"]).unwrap_or(0.0),
        p50_ms: num(&["latency_ms", "p50"]).unwrap_or(f64::NAN),
        p99_ms: num(&["latency_ms", "p99"]).unwrap_or(f64::NAN),
        verified: verify.map(|_| v["ok"].as_bool().unwrap_or(false)),
        drain_s: verify.and_then(|x| x["drain_s"].as_f64()),
        broken: num(&["errors", "broken"]).unwrap_or(0.0) as u64,
        lost: verify
            .filter(|x| x["complete"].as_bool() == Some(true))
            .map(|x| x["missing"].as_u64().unwrap_or(0) + x["wrong"].as_u64().unwrap_or(0)),
    })
}

/// The Lua script for wrk: `-- post PREFIX` sends JSON votes, each with a new voter id
/// (`PREFIX` and a counter: 32 hex digits); without arguments it sends GETs. `done` prints
/// one line that [`parse_wrk`] reads.
const WRK_SCRIPT: &str = r#"-- Written by cargo xtask bench.
local mode, prefix, counter = "get", "000000000000000000000000", 0
local headers = { ["Content-Type"] = "application/json" }
function init(args)
  mode = args[1] or "get"
  prefix = args[2] or prefix
end
function request()
  if mode == "get" then
    return wrk.format("GET")
  end
  counter = counter + 1
  headers["Cookie"] = "voter_id=" .. prefix .. string.format("%08x", counter)
  return wrk.format("POST", nil, headers, '{"vote":"a"}')
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "xtask-wrk requests=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#;

/// What wrk sends.
pub enum WrkMode<'a> {
    Get,
    /// JSON votes, voter ids starting with this 24-hex-digit prefix.
    Vote(&'a str),
}

/// Runs `wrk -t1 -c<connections>` against `url` for `duration`.
pub async fn wrk(
    dir: &Path,
    url: &str,
    connections: usize,
    duration: Duration,
    mode: WrkMode<'_>,
) -> anyhow::Result<Load> {
    let script = dir.join("wrk.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let mut command = Command::new("wrk");
    command
        .arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(&script)
        .arg(url)
        .kill_on_drop(true);
    if let WrkMode::Vote(prefix) = mode {
        command.args(["--", "post", prefix]);
    }
    let output = match command.output().await {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("wrk not found on PATH: install it (apt-get install wrk)")
        }
        Err(e) => return Err(e).context("cannot run wrk"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "wrk failed ({}): {}{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    parse_wrk(&stdout).with_context(|| format!("wrk's output:\n{stdout}"))
}

/// Reads the `xtask-wrk` line of the script's `done`.
pub fn parse_wrk(output: &str) -> anyhow::Result<Load> {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("xtask-wrk "))
        .context("no summary line")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name}"))?
            .parse()
            .with_context(|| format!("{name} is not a number"))
    };
    let requests = field("requests")?;
    // Status errors are answered requests (counted in `requests`); the others are not.
    let status = field("status")?;
    let unanswered = field("connect")? + field("read")? + field("write")? + field("timeout")?;
    Ok(Load {
        accepted: requests.saturating_sub(status),
        failed: status + unanswered,
        elapsed_s: field("duration_us")? as f64 / 1e6,
        p50_ms: field("p50_us")? as f64 / 1000.0,
        p99_ms: field("p99_us")? as f64 / 1000.0,
        verified: None,
        drain_s: None,
        lost: None,
        broken: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_summary() {
        let out = "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n\
                   xtask-wrk requests=1000 duration_us=2000000 status=10 connect=0 read=2 \
                   write=0 timeout=1 p50_us=1500 p99_us=9000\n";
        let load = parse_wrk(out).unwrap();
        assert_eq!(load.accepted, 990);
        assert_eq!(load.failed, 13);
        assert_eq!(load.rate(), 495.0);
        assert_eq!((load.p50_ms, load.p99_ms), (1.5, 9.0));
        assert!(parse_wrk("no line").is_err());
    }

    #[test]
    fn reads_loadgen_summary() {
        let json = r#"{"accepted":900,"refused":5,"errors":{"total":1},"elapsed_s":2.0,
            "latency_ms":{"p50":1.0,"p99":4.0},"verify":{"drain_s":0.5},"ok":false}"#;
        let load = parse_loadgen(json).unwrap();
        assert_eq!((load.accepted, load.failed), (900, 6));
        assert_eq!(load.rate(), 450.0);
        assert_eq!(load.verified, Some(false));
        assert_eq!(load.drain_s, Some(0.5));
        let plain = parse_loadgen(r#"{"accepted":1,"elapsed_s":1.0,"verify":null}"#).unwrap();
        assert_eq!(plain.verified, None);
    }
}
