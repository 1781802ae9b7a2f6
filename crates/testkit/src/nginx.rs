//! A throwaway Nginx serving the project's own routes (`nginx/routes.conf`) in front of
//! services that a test started on 127.0.0.1.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use servers::StartError;
use tempfile::TempDir;

use crate::find_binary;
use crate::process::{
    current_uid, kill_and_wait, launch_on_a_free_port, log_len, log_since, log_stdio, log_tail,
    send_signal, signal_group, temp_dir, wait_group_gone, wait_timeout,
};

/// How long to wait for Nginx to accept connections.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// How long Nginx gets to stop after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The project's `nginx/` directory, which holds `routes.conf` and `http.conf`.
#[must_use]
pub fn project_nginx_dir() -> PathBuf {
    // testkit lives in crates/testkit, two levels below the workspace's root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("nginx")
}

/// A private Nginx on a free port of 127.0.0.1, in its own temp dir.
///
/// Its configuration is generated: the upstreams `vote` and `result` point at the addresses
/// given to [`Nginx::start`], and the `server` block includes the project's real
/// `nginx/routes.conf` (and the `http` block its `nginx/http.conf`) by absolute path, so the
/// tests exercise exactly the routes that docker compose and process-compose serve.
/// Nginx runs in the foreground (`daemon off`) as a child of the test; its error log, access
/// log, pid file and temp files stay in the temp dir. It is stopped on drop.
#[derive(Debug)]
pub struct Nginx {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    vote: Vec<SocketAddr>,
    result: Vec<SocketAddr>,
    dir: TempDir,
}

impl Nginx {
    /// Starts Nginx in front of `vote` and `result` and waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// When `nginx` is not installed (the message says `apt-get install nginx`), when the
    /// configuration is refused, or when Nginx does not listen within 10 s (the error includes
    /// the end of its error log).
    pub fn start(vote: SocketAddr, result: SocketAddr) -> anyhow::Result<Nginx> {
        Nginx::start_many(&[vote], &[result])
    }

    /// [`Nginx::start`] with several replicas of each service: each upstream block lists them
    /// all, and Nginx spreads the connections round-robin.
    ///
    /// # Errors
    ///
    /// As [`Nginx::start`].
    pub fn start_many(vote: &[SocketAddr], result: &[SocketAddr]) -> anyhow::Result<Nginx> {
        let binary = find_binary("nginx")?;
        let routes = project_nginx_dir().join("routes.conf");
        anyhow::ensure!(
            routes.is_file(),
            "the project's Nginx routes are missing: {}",
            routes.display()
        );
        let dir = temp_dir("nginx")?;
        let mut nginx = Nginx {
            child: None,
            port: 0, // chosen below
            binary,
            vote: vote.to_vec(),
            result: result.to_vec(),
            dir,
        };
        launch_on_a_free_port("nginx", |port| {
            nginx.port = port;
            nginx.launch()
        })?;
        Ok(nginx)
    }

    /// Points the upstreams at these replicas, as an operator scales a service: rewrites the
    /// configuration and reloads it (SIGHUP). Returns once the new worker runs and the old
    /// one accepts no more; it finishes the requests and WebSockets it holds, then exits.
    ///
    /// # Errors
    ///
    /// When Nginx is not running, the signal cannot be sent, or no new worker starts within
    /// 10 s.
    pub fn set_upstreams(
        &mut self,
        vote: &[SocketAddr],
        result: &[SocketAddr],
    ) -> anyhow::Result<()> {
        let pid = self.child.as_ref().context("nginx is not running")?.id();
        self.vote = vote.to_vec();
        self.result = result.to_vec();
        let conf = self.dir.path().join("nginx.conf");
        std::fs::write(&conf, self.config())
            .with_context(|| format!("cannot write {}", conf.display()))?;
        // A new worker started, and the old one stopped accepting (it finishes what it holds).
        let count = |log: &str| {
            (
                log.matches("start worker process ").count(),
                log.matches("gracefully shutting down").count(),
            )
        };
        let before = count(&std::fs::read_to_string(self.error_log()).unwrap_or_default());
        send_signal(pid, "HUP")?;
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let now = count(&std::fs::read_to_string(self.error_log()).unwrap_or_default());
            if now.0 > before.0 && now.1 > before.1 {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nginx started no new worker within {READY_DEADLINE:?} of the reload\n{}",
                log_tail(&self.error_log())
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The port Nginx listens on (127.0.0.1).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:<port><path>`; `path` starts with `/`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The end of Nginx's error log, for failure messages.
    #[must_use]
    pub fn error_log_tail(&self) -> String {
        log_tail(&self.error_log())
    }

    fn error_log(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    /// The generated top-level configuration.
    fn config(&self) -> String {
        let dir = self.dir.path().display();
        let project = project_nginx_dir();
        let project = project.display();
        let mut conf =
            String::from("# Generated by testkit for one test; see crates/testkit/src/nginx.rs.\n");
        // As root, the workers would switch to an unprivileged user that cannot write the
        // temp dir; a test's Nginx has no reason to drop privileges.
        if current_uid().unwrap_or(1) == 0 {
            conf.push_str("user root root;\n");
        }
        let _ = write!(
            conf,
            r#"worker_processes 1;
worker_rlimit_nofile 100000;
pid "{dir}/nginx.pid";
error_log "{dir}/error.log" info;

# As in nginx/native.conf.
events {{
    worker_connections 45000;
}}

http {{
    include "{project}/http.conf";
    access_log "{dir}/access.log";
    client_body_temp_path "{dir}/client_body_temp";
    proxy_temp_path "{dir}/proxy_temp";
    fastcgi_temp_path "{dir}/fastcgi_temp";
    uwsgi_temp_path "{dir}/uwsgi_temp";
    scgi_temp_path "{dir}/scgi_temp";

    # Idle upstream connections kept as in nginx/native.conf and nginx/nginx.conf.
    upstream vote {{
{vote}        keepalive 128;
        keepalive_timeout 5s;
    }}

    upstream result {{
{result}        keepalive 128;
        keepalive_timeout 5s;
    }}

    server {{
        listen 127.0.0.1:{port};
        set $vote_upstream vote;
        set $result_upstream result;
        include "{project}/routes.conf";
    }}
}}
"#,
            vote = servers(&self.vote),
            result = servers(&self.result),
            port = self.port,
        );
        conf
    }

    /// Writes the configuration for `self.port`, spawns Nginx and waits until it listens.
    fn launch(&mut self) -> Result<(), StartError> {
        let failed = |e: anyhow::Error| StartError::Failed(e);
        let conf = self.dir.path().join("nginx.conf");
        std::fs::write(&conf, self.config())
            .with_context(|| format!("cannot write {}", conf.display()))
            .map_err(failed)?;
        let error_log = self.error_log();
        let output = self.dir.path().join("nginx.out");
        let offset = log_len(&error_log);
        let output_offset = log_len(&output);
        let (stdout, stderr) = log_stdio(&output).map_err(failed)?;
        let mut prefix = self.dir.path().as_os_str().to_owned();
        prefix.push("/");
        let mut child = Command::new(&self.binary)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            // Its own process group, so that the workers can be stopped with the master.
            .process_group(0)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot spawn {}", self.binary.display()))
            .map_err(failed)?;
        tracing::debug!(port = self.port, pid = child.id(), dir = %self.dir.path().display(), "started nginx");

        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let said = format!(
                    "{}{}",
                    log_since(&output, output_offset),
                    log_since(&error_log, offset)
                );
                let error = anyhow::anyhow!(
                    "nginx on port {} exited during startup ({status})\n{}\n{}",
                    self.port,
                    said.trim(),
                    log_tail(&error_log)
                );
                return Err(StartError::from_log(error, &said));
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                stop(&mut child);
                return Err(failed(anyhow::anyhow!(
                    "nginx on port {} did not listen within {READY_DEADLINE:?}\n{}",
                    self.port,
                    log_tail(&error_log)
                )));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// One `server` line of an upstream block per address.
fn servers(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|addr| format!("        server {addr};\n"))
        .collect()
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }
}

/// SIGTERM (Nginx's fast shutdown) and a wait; then SIGKILL to the whole process group, so no
/// worker outlives its master.
fn stop(child: &mut Child) {
    let pid = child.id();
    if send_signal(pid, "TERM").is_err() || wait_timeout(child, STOP_DEADLINE).is_none() {
        signal_group(pid, "KILL");
        kill_and_wait(child);
    }
    // The master waits for its workers; this only matters after a SIGKILL.
    wait_group_gone(pid, STOP_DEADLINE);
}
