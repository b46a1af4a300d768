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
