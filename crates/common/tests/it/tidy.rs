//! Tidy: every Rust file opens with a `//!` line saying what it is for, and every crate root
//! forbids unsafe code.

use std::path::{Path, PathBuf};

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/common has a parent")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&crates_dir(), &mut files);
    assert!(
        files.len() > 10,
        "found the sources ({} files)",
        files.len()
    );
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .expect("readable file")
                .starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading `//!` doc line: {missing:?}"
    );
}

#[test]
fn every_crate_root_forbids_unsafe_code() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(crates_dir()).expect("crates dir") {
        let dir = entry.expect("entry").path();
        for root in ["src/lib.rs", "src/main.rs"] {
            let path = dir.join(root);
            let is_bin_of_lib = root == "src/main.rs" && dir.join("src/lib.rs").exists();
            if path.exists() && !is_bin_of_lib {
                let text = std::fs::read_to_string(&path).expect("readable");
                if !text.contains("#![forbid(unsafe_code)]") {
                    missing.push(path);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "crate roots without #![forbid(unsafe_code)]: {missing:?}"
    );
}
