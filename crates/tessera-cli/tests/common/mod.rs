//! Helpers shared by the CLI's integration tests: run the real `tessera` binary.

use std::process::{Command, Output};

/// Runs `tessera` with `args` and returns its output, whatever the exit status.
pub fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().expect("run tessera")
}

/// Runs `tessera` with `args`, asserts success, returns standard output.
pub fn ok(args: &[&str]) -> String {
    let o = tessera(args);
    assert!(o.status.success(), "tessera {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Runs `tessera` with `args`, asserts success, and reads each line of its
/// standard output as JSON (what `--json` commands print).
#[allow(dead_code)] // not every test binary that shares this module reads JSON lines
pub fn json_lines(args: &[&str]) -> Vec<serde_json::Value> {
    ok(args).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
