//! Locating server binaries on `PATH` (and in Debian's PostgreSQL layout).

use std::path::{Path, PathBuf};

use common::system::{DEBIAN_POSTGRES, is_executable, postgres_bin_dirs};

/// PostgreSQL programs that Debian/Ubuntu keep out of `PATH`, under
/// `/usr/lib/postgresql/<version>/bin`.
const POSTGRES_BINARIES: &[&str] = &["initdb", "postgres", "pg_ctl", "pg_isready"];

/// Where Debian puts programs that a user's `PATH` may lack (`/usr/sbin` is root's).
const FIXED_LOCATIONS: &[(&str, &str)] = &[
    ("nginx", "/usr/sbin/nginx"),
    ("chromium", "/usr/bin/chromium"),
    ("chromedriver", "/usr/bin/chromedriver"),
];

/// Finds the executable `name`.
///
/// Searches every directory of `PATH` in order. For the PostgreSQL server
/// programs (`initdb`, `postgres`, `pg_ctl`, `pg_isready`) it then also looks
/// in `/usr/lib/postgresql/*/bin`, highest version first; for `nginx`,
/// `chromium` and `chromedriver`, where Debian installs them.
///
/// # Errors
///
/// When the binary is nowhere to be found; the message names the package to
/// install, e.g. `redis-server not found on PATH: install it (apt-get install
/// redis-server, or nix develop)`.
pub fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }

    let is_postgres = POSTGRES_BINARIES.contains(&name);
    if is_postgres {
        for dir in postgres_bin_dirs() {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }

    let fixed = FIXED_LOCATIONS
        .iter()
        .find(|(program, _)| *program == name)
        .map(|(_, path)| Path::new(path));
    if let Some(path) = fixed
        && is_executable(path)
    {
        return Ok(path.to_path_buf());
    }

    let package = package_for(name);
    let searched = if is_postgres {
        format!("on PATH or in {DEBIAN_POSTGRES}/*/bin")
    } else if let Some(path) = fixed {
        format!("on PATH or at {}", path.display())
    } else {
        "on PATH".to_owned()
    };
    anyhow::bail!(
        "{name} not found {searched}: install it (apt-get install {package}, or nix develop)"
    )
}

/// The Debian package that provides the program `name`.
fn package_for(name: &str) -> &str {
    match name {
        "redis-server" => "redis-server",
        "redis-cli" => "redis-tools",
        n if POSTGRES_BINARIES.contains(&n) || n == "psql" => "postgresql",
        // The browser tests need both, whichever is missing.
        "chromium" | "chromedriver" => "chromium chromium-driver",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_package() {
        let err = find_binary("definitely-not-a-binary-xyz")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("definitely-not-a-binary-xyz not found on PATH"),
            "{err}"
        );
        assert!(
            err.contains("apt-get install definitely-not-a-binary-xyz"),
            "{err}"
        );
    }

    #[test]
    fn packages() {
        assert_eq!(package_for("initdb"), "postgresql");
        assert_eq!(package_for("pg_isready"), "postgresql");
        assert_eq!(package_for("redis-server"), "redis-server");
        assert_eq!(package_for("redis-cli"), "redis-tools");
        assert_eq!(package_for("nginx"), "nginx");
        assert_eq!(package_for("chromedriver"), "chromium chromium-driver");
        assert_eq!(package_for("chromium"), "chromium chromium-driver");
    }
}
