//! `<service> healthcheck [URL]`: one plain HTTP/1.1 `GET` over a std `TcpStream`, for the
//! health checks of container images that have no shell and no curl (distroless).
//!
//! Without a URL it asks for [`DEFAULT_PATH`] (`/readyz`) on the service's own listener: the
//! configured `listen` port, through loopback when `listen` is a wildcard address (`0.0.0.0`,
//! `[::]`). Readiness rather than liveness, so that compose's `depends_on: service_healthy`
//! waits until the service's own dependencies answer. The whole probe (connect, send, read)
//! gets [`TIMEOUT`]. The exit code is 0 for a `200` and 1 for anything else, whatever went
//! wrong: Docker reserves exit code 2 of a health check.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The path probed when no URL is given.
pub const DEFAULT_PATH: &str = "/readyz";

/// The longest a whole probe may take: connecting, sending the request and reading the answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Most bytes of the answer read (the status line and the start of the body are all it needs).
const MAX_ANSWER: usize = 4096;

/// Most characters of the body shown with an unhealthy answer (`/readyz` says there why).
const MAX_DETAIL: usize = 200;

/// The URL probed when none is given: [`DEFAULT_PATH`] on `listen`, through loopback when
/// `listen` is a wildcard address.
pub fn default_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "http://{}{DEFAULT_PATH}",
        SocketAddr::new(ip, listen.port())
    )
}

/// An HTTP answer: its status code and the first line of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub detail: String,
}

/// Sends `GET url` (`http://` only) and reads the answer, all within `timeout`. The error says
/// why no HTTP answer came (bad URL, refused, timed out, not HTTP).
pub fn probe(url: &str, timeout: Duration) -> Result<Answer, String> {
    let deadline = Instant::now() + timeout;
    let parsed = url::Url::parse(url).map_err(|e| format!("bad URL ({e})"))?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "only http:// URLs can be probed, not {}://",
            parsed.scheme()
        ));
    }
    let host = parsed.host_str().ok_or("the URL has no host")?;
    let port = parsed.port().unwrap_or(80);
    // An IPv6 host is written in brackets; resolution wants it bare.
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (name, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut stream = None;
    let mut failure = format!("{host} resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left(deadline, timeout)?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => failure = format!("connecting to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(failure)?;

    let target = &parsed[url::Position::BeforePath..url::Position::AfterQuery];
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: healthcheck\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(left(deadline, timeout)?))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("sending the request: {e}"))?;

    let mut answer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while answer.len() < MAX_ANSWER {
        // Once the head is in, what is left of the body is a nicety: stop at the deadline.
        let remaining = match left(deadline, timeout) {
            Ok(remaining) => remaining,
            Err(_) if has_head(&answer) => break,
            Err(e) => return Err(e),
        };
        stream
            .set_read_timeout(Some(remaining))
            .map_err(|e| format!("reading the answer: {e}"))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) if has_head(&answer) => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(timed_out(timeout));
            }
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    parse_answer(&answer)
}

/// Probes `url` as the `healthcheck` subcommand does: one line of output, exit code 0 when it
/// answered `200`, else 1.
pub fn run(url: &str) -> ExitCode {
    let shown = crate::secret::redact(url);
    match probe(url, TIMEOUT) {
        Ok(answer) if answer.status == 200 => {
            println!("healthy: GET {shown}: 200");
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprintln!(
                "unhealthy: GET {shown}: {} {}",
                answer.status, answer.detail
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: GET {shown}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What is left of the time allowed, or the timeout error once it is spent.
fn left(deadline: Instant, timeout: Duration) -> Result<Duration, String> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        Err(timed_out(timeout))
    } else {
        Ok(remaining)
    }
}

fn timed_out(timeout: Duration) -> String {
    format!("no answer within {} ms", timeout.as_millis())
}

/// Whether the status line and the headers have arrived.
fn has_head(answer: &[u8]) -> bool {
    answer.windows(4).any(|w| w == b"\r\n\r\n")
}

/// The status code of `HTTP/1.x NNN reason`, and the first line of the body.
fn parse_answer(answer: &[u8]) -> Result<Answer, String> {
    let text = String::from_utf8_lossy(answer);
    let status_line = text.lines().next().unwrap_or_default();
    let mut words = status_line.split(' ');
    let status = match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") && code.len() == 3 => {
            code.parse::<u16>().ok()
        }
        _ => None,
    };
    let Some(status) = status else {
        return Err(if answer.is_empty() {
            "the connection closed without an answer".to_string()
        } else {
            format!("not an HTTP answer: {:?}", shorten(status_line))
        });
    };
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let detail = shorten(
        body.lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default(),
    );
    Ok(Answer { status, detail })
}

fn shorten(line: &str) -> String {
    line.trim().chars().take(MAX_DETAIL).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_goes_through_loopback_for_wildcards() {
        let url = |s: &str| default_url(s.parse().unwrap());
        assert_eq!(url("0.0.0.0:8082"), "http://127.0.0.1:8082/readyz");
        assert_eq!(url("[::]:8083"), "http://[::1]:8083/readyz");
        assert_eq!(url("127.0.0.1:8084"), "http://127.0.0.1:8084/readyz");
        assert_eq!(url("10.1.2.3:8081"), "http://10.1.2.3:8081/readyz");
    }

    #[test]
    fn status_and_detail_are_read() {
        let a = parse_answer(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 20\r\n\r\nredis: unreachable\n",
        )
        .unwrap();
        assert_eq!(a.status, 503);
        assert_eq!(a.detail, "redis: unreachable");
        let a = parse_answer(b"HTTP/1.0 200 OK\r\n\r\n").unwrap();
        assert_eq!((a.status, a.detail.as_str()), (200, ""));
    }

    #[test]
    fn anything_but_http_is_an_error() {
        assert!(parse_answer(b"").unwrap_err().contains("closed"));
        assert!(
            parse_answer(b"SSH-2.0-OpenSSH\r\n")
                .unwrap_err()
                .contains("not an HTTP answer")
        );
        assert!(parse_answer(b"HTTP/1.1 2000 X\r\n\r\n").is_err());
    }

    #[test]
    fn only_http_urls() {
        assert!(
            probe("https://127.0.0.1:1/readyz", TIMEOUT)
                .unwrap_err()
                .contains("http://")
        );
        assert!(probe("not a url", TIMEOUT).unwrap_err().contains("bad URL"));
    }
}
