//! Replays the fuzzers' seed corpus (`fuzz/corpus/<target>/`) and every input that ever made a
//! fuzz target fail (`fuzz/regressions/<target>/`) through the same invariant checks the
//! targets run (`fuzz/checks.rs`), in a normal `cargo test`, no nightly features needed.
#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// Runs `check` on every file under `fuzz/{corpus,regressions}/<target>/`; returns how many.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let dir = root.join(kind).join(target);
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "{} fails its invariants", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn request_framer_corpus_and_regressions_hold() {
    let n = replay("request_framer", checks::check_request_framer);
    assert!(n >= 10, "the seed corpus is there ({n} inputs)");
}

#[test]
fn reply_framer_corpus_and_regressions_hold() {
    let n = replay("reply_framer", checks::check_reply_framer);
    assert!(n >= 10, "the seed corpus is there ({n} inputs)");
}
