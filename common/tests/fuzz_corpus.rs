//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the same function
//! its `cargo fuzz` target runs (`warren_common::fuzzing`), on stable Rust: `cargo test` checks,
//! on every CI run and without nightly, that no input the fuzzers kept (every edge they reached)
//! panics or breaks a round trip. README "Fuzzing".

use std::path::{Path, PathBuf};

use warren_common::fuzzing::TARGETS;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_file_replays_without_a_panic() {
    for (target, body) in TARGETS {
        let dir = corpus_dir(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut files = 0;
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let outcome = std::panic::catch_unwind(|| body(&data));
            assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
            files += 1;
        }
        // An empty corpus would make this test pass without replaying anything.
        assert!(files >= 10, "{target}: only {files} corpus files in {}", dir.display());
    }
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    for (target, _) in TARGETS {
        let file = targets.join(format!("{target}.rs"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            text.contains(&format!("warren_common::fuzzing::{target}(")),
            "{}",
            file.display()
        );
    }
}
