//! `<service> healthcheck [URL]`: one plain HTTP/1.1 `GET` with hyper's client, for the
//! health checks of container images that have no shell and no curl (distroless).
//!
//! Without a URL it asks for [`DEFAULT_PATH`] (`/readyz`) on the service's own listener: the
//! configured `listen` port, through loopback when `listen` is a wildcard address (`0.0.0.0`,
//! `[::]`). Readiness rather than liveness, so that compose's `depends_on: service_healthy`
//! waits until the service's own dependencies answer. The whole probe (connect, send, read)
//! gets [`TIMEOUT`]. The exit code is 0 for a `200` and 1 for anything else, whatever went
//! wrong: Docker reserves exit code 2 of a health check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};

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

/// Sends `GET url` (`http://` only) with hyper's HTTP/1.1 client and reads the answer, all
/// within `timeout`: a current-thread runtime of its own, since the subcommand runs before
/// any other. Once the status line and headers are in, the body is read only until the
/// deadline. The error says why no HTTP answer came (bad URL, refused, timed out, not HTTP).
pub fn probe(url: &str, timeout: Duration) -> Result<Answer, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("bad URL ({e})"))?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "only http:// URLs can be probed, not {}://",
            parsed.scheme()
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the probe: {e}"))?;
    runtime.block_on(get(&parsed, timeout))
}

async fn get(url: &url::Url, timeout: Duration) -> Result<Answer, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port().unwrap_or(80);
    let head = async {
        // An IPv6 host is written in brackets; resolution wants it bare.
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let addrs = tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        let mut failure = format!("{host} resolves to no address");
        let mut stream = None;
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => failure = format!("connecting to {addr}: {e}"),
            }
        }
        let stream = stream.ok_or(failure)?;
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .title_case_headers(true)
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| answer_error(&e))?;
        tokio::spawn(connection);
        let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let request = Request::get(target)
            .header(header::HOST, format!("{host}:{port}"))
            .header(header::USER_AGENT, "healthcheck")
            .header(header::ACCEPT, "*/*")
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("bad request: {e}"))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| answer_error(&e))
    };
    let response = tokio::time::timeout_at(deadline, head)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))??;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while bytes.len() < MAX_ANSWER {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            // The end, a broken body or the deadline: the status is known, the rest a nicety.
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let detail = shorten(
        text.lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default(),
    );
    Ok(Answer { status, detail })
}

/// Why no HTTP answer came, in the probe's words.
fn answer_error(e: &hyper::Error) -> String {
    if e.is_incomplete_message() {
        "the connection closed without an answer".to_string()
    } else if e.is_parse() {
        format!("not an HTTP answer ({e})")
    } else {
        format!("reading the answer: {e}")
    }
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
    fn only_http_urls() {
        assert!(
            probe("https://127.0.0.1:1/readyz", TIMEOUT)
                .unwrap_err()
                .contains("http://")
        );
        assert!(probe("not a url", TIMEOUT).unwrap_err().contains("bad URL"));
    }
}
