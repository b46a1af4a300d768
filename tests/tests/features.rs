//! Issue #30 item 7: `cargo run --release -p tessera-cli -- demo` after
//! `cargo build --release --workspace` must not rebuild anything. It did (13
//! crates, candle among them) because the Python package's numpy turned on
//! features of num-complex and num-integer that the CLI alone does not: a
//! crate built with other features is another build. Each package the CLI
//! builds must resolve to the same features alone as with the whole workspace.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Every package `cargo tree` resolves for `selection`, with its features.
fn features(selection: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .arg("tree")
        .args(selection)
        .args(["-e", "normal,build", "--prefix", "none", "-f", "{p} [{f}]"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let line = line.trim_end_matches(" (*)");
        if let Some((package, rest)) = line.split_once(" [") {
            map.entry(package.to_string()).or_default().insert(rest.trim_end_matches(']').to_string());
        }
    }
    map
}

#[test]
fn the_cli_resolves_the_features_the_workspace_build_does() {
    let (cli, workspace) = (features(&["-p", "tessera-cli"]), features(&["--workspace"]));
    assert!(cli.len() > 50, "cargo tree listed the CLI's packages: {}", cli.len());
    let differ: Vec<String> = cli
        .iter()
        .filter(|(p, f)| workspace.get(*p).is_some_and(|w| w != *f))
        .map(|(p, f)| format!("{p}: alone {f:?}, in the workspace {:?}", workspace[p]))
        .collect();
    assert!(differ.is_empty(), "built twice, once per selection:\n{}", differ.join("\n"));
}
