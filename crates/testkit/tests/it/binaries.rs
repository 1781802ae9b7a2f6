//! `find_binary`, `free_port` and `init_logging`.

use std::collections::HashSet;

#[test]
fn missing_binary_error_names_what_to_install() {
    let err = testkit::find_binary("definitely-not-a-binary-xyz").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("definitely-not-a-binary-xyz not found"),
        "{text}"
    );
    assert!(
        text.contains("apt-get install definitely-not-a-binary-xyz"),
        "{text}"
    );
}

#[test]
fn finds_installed_servers() {
    for name in ["redis-server", "initdb", "postgres", "pg_ctl"] {
        let path = testkit::find_binary(name).unwrap();
        assert!(
            path.is_absolute() || path.exists(),
            "{name}: {}",
            path.display()
        );
        assert!(path.ends_with(name), "{name}: {}", path.display());
    }
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports: Vec<u16> = (0..20).map(|_| testkit::free_port()).collect();
    let unique: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(unique.len(), ports.len(), "{ports:?}");
    for port in ports {
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}

#[test]
fn init_logging_can_be_called_repeatedly() {
    testkit::init_logging();
    testkit::init_logging();
    std::thread::spawn(testkit::init_logging).join().unwrap();
    tracing::info!("logging initialised (visible with TEST_LOG=1)");
}

#[test]
fn finds_nginx_and_the_browser() {
    for name in ["nginx", "chromium", "chromedriver"] {
        let path = testkit::find_binary(name).unwrap_or_else(|e| panic!("{e}"));
        assert!(path.ends_with(name), "{name}: {}", path.display());
    }
}
