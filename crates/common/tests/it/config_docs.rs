//! docs/configuration.md is the one list of the configuration keys outside the code: its table
//! names every key of `Config` with its environment variable, and the default listen address
//! of each service. These tests hold the table to the code (through serde, not by reading
//! Rust), so that scripts/check_deploy.py can take the variables and ports from the table.

use std::collections::BTreeSet;
use std::path::Path;

use common::config::{Config, Program};

/// The rows of the table: `(keys, environment variables, default)`, each cell's backticked
/// names.
fn rows() -> Vec<(Vec<String>, Vec<String>, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            assert!(cells.len() >= 4, "a row of four cells: {line}");
            let names = |cell: &str| -> Vec<String> {
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_string)
                    .collect()
            };
            let envs = names(cells[1])
                .into_iter()
                .filter(|n| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                .collect();
            (names(cells[0]), envs, cells[2].to_string())
        })
        .collect()
}

/// Every key of `Config`, dotted (`redis.url`), as serde sees it.
fn code_keys() -> BTreeSet<String> {
    let mut config = Config::defaults(Program::Voting);
    // Absent unless set: give them a value so that they are listed too.
    config.option_a = Some(String::new());
    config.option_b = Some(String::new());
    config.redis.password_file = Some("/run/secrets/redis".into());
    config.postgres.password_file = Some("/run/secrets/postgres".into());
    let value = serde_json::to_value(&config).expect("the configuration serializes");
    let mut keys = BTreeSet::new();
    fn walk(prefix: &str, value: &serde_json::Value, keys: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(fields) if !prefix.is_empty() || !fields.is_empty() => {
                for (name, field) in fields {
                    let key = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    match field {
                        serde_json::Value::Object(_) => walk(&key, field, keys),
                        _ => {
                            keys.insert(key);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    walk("", &value, &mut keys);
    keys
}

/// The variable a key is read from.
fn env_of(key: &str) -> String {
    match key {
        "option_a" | "option_b" => key.to_uppercase(),
        _ => format!("VOTING_{}", key.replace('.', "__").to_uppercase()),
    }
}

#[test]
fn the_table_lists_every_key_of_the_code_and_no_other() {
    let code = code_keys();
    assert!(code.contains("redis.url") && code.contains("worker.batch_size"));
    let documented: BTreeSet<String> = rows().into_iter().flat_map(|(keys, ..)| keys).collect();
    let missing: Vec<_> = code.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&code).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/configuration.md lacks {missing:?} and lists keys the code does not have: {stale:?}"
    );
}

#[test]
fn each_key_is_documented_with_its_variable() {
    for (keys, envs, _) in rows() {
        let wanted: Vec<String> = keys.iter().map(|k| env_of(k)).collect();
        assert_eq!(envs, wanted, "the variables of {keys:?}");
    }
}

#[test]
fn the_default_listen_addresses_are_the_codes() {
    let (_, _, default) = rows()
        .into_iter()
        .find(|(keys, ..)| keys == &["listen"])
        .expect("a row for listen");
    for service in [
        Program::Voting,
        Program::Vote,
        Program::Result,
        Program::Worker,
    ] {
        let said = format!("{} `{}`", service.name(), service.default_listen());
        assert!(
            default.contains(&said),
            "the listen row says {default:?}, not {said:?}"
        );
    }
}

#[test]
fn the_health_check_path_is_the_codes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let text = std::fs::read_to_string(&path).expect("docs/configuration.md");
    let said = format!(
        "asks `GET {}` on `listen`",
        common::healthcheck::DEFAULT_PATH
    );
    assert!(
        text.replace('\n', " ").contains(&said),
        "docs/configuration.md should say `healthcheck` {said}"
    );
}
