//! `scripts/native-run`, the process-compose native run, as process-compose runs it: its
//! readiness probes accept only the servers it started, never whatever else answers on the
//! port, and PostgreSQL runs when the checkout is in a directory the `postgres` user cannot
//! enter (as root in `/root`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `scripts/native-run ARGS` from the repository's root, with `env`.
fn native_run(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(repo().join("scripts/native-run"));
    command
        .args(args)
        .current_dir(repo())
        .env_remove("REDIS_PORT")
        .env_remove("POSTGRES_PORT")
        .env_remove("HTTP_PORT")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null());
    command
}

fn probe(what: &str, env: &[(&str, String)]) -> Output {
    native_run(&["ready", what], env)
        .output()
        .expect("native-run runs")
}

/// A server started by `scripts/native-run`, stopped with `signal` when dropped.
struct Started(Child, &'static str);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = common::system::send_signal(self.0.id(), self.1);
        let _ = self.0.wait();
    }
}

async fn until_ready(what: &str, env: &[(&str, String)], server: &mut Started) {
    testkit::eventually(Duration::from_secs(60), what, || {
        let exited = server.0.try_wait();
        async move {
            if let Ok(Some(status)) = exited {
                panic!("native-run {what} exited: {status}");
            }
            probe(what, env).status.success().then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn redis_ready_means_the_redis_it_started() {
    let data = tempfile::tempdir().unwrap();
    // Something else answers on the port: not ready, and it says why.
    let foreign = testkit::Redis::start().expect("redis-server starts");
    let env = [
        ("NATIVE_DATA_DIR", data.path().display().to_string()),
        ("REDIS_PORT", foreign.port().to_string()),
    ];
    let out = probe("redis", &env);
    assert_eq!(out.status.code(), Some(1));
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("has not been started"), "{why}");

    let env = [
        ("NATIVE_DATA_DIR", data.path().display().to_string()),
        ("REDIS_PORT", testkit::free_port().to_string()),
    ];
    let child = native_run(&["redis"], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Started(child, "TERM");
    until_ready("redis", &env, &mut server).await;
    // Its pid file, pointed at the foreign server's port: not the one started here.
    let elsewhere = [env[0].clone(), ("REDIS_PORT", foreign.port().to_string())];
    let out = probe("redis", &elsewhere);
    assert_eq!(out.status.code(), Some(1));
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("not the one started here"), "{why}");
}

/// As root, the checkout in a directory only root may enter: the cluster goes where the
/// `postgres` user can reach it, `.data/postgres` links to it, and deleting `.data/` starts
/// afresh. As another user, the cluster is in `.data/postgres` itself.
#[tokio::test]
async fn postgres_runs_from_a_private_checkout() {
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = private.path().join(".data");
    let env = [
        ("NATIVE_DATA_DIR", data.display().to_string()),
        ("POSTGRES_PORT", testkit::free_port().to_string()),
    ];
    let root = common::system::is_root();
    let mut cluster = None;
    for run in ["first", "after .data/ was deleted"] {
        let child = native_run(&["postgres"], &env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Started(child, "INT");
        until_ready("postgres", &env, &mut server).await;
        let link = data.join("postgres");
        let target = std::fs::canonicalize(&link).unwrap();
        assert_eq!(link.is_symlink(), root, "{run}: {}", link.display());
        if root {
            assert!(
                target.starts_with("/var/lib/voting-native/"),
                "{run}: {target:?}"
            );
        }
        // A table made in the first run is not there after the reset.
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", env[1].1);
        let client = testkit::pg_client(&url).await.unwrap();
        let rows = client
            .query("SELECT 1 FROM pg_tables WHERE tablename = 'kept'", &[])
            .await
            .unwrap();
        assert!(rows.is_empty(), "{run}: the cluster is fresh");
        client
            .batch_execute("CREATE TABLE kept (n int)")
            .await
            .unwrap();
        drop(client);
        drop(server);
        std::fs::remove_dir_all(&data).unwrap();
        cluster = Some(target);
    }
    if let Some(target) = cluster
        && root
    {
        let _ = std::fs::remove_dir_all(target);
        // Only when no other checkout's cluster is there.
        let _ = std::fs::remove_dir("/var/lib/voting-native");
    }
}
