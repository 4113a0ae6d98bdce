//! Records the git commit Sluice is built from, for the `commit` label of
//! `sluice_build_info`. `SLUICE_COMMIT` in the build's environment wins (a build without
//! `.git`, such as the container's, can pass it); otherwise git is asked. Without either
//! (no git, not a repository) nothing is recorded and the metric carries the version alone:
//! a build never fails for want of a commit.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SLUICE_COMMIT");
    if std::env::var("SLUICE_COMMIT").is_ok_and(|c| !c.trim().is_empty()) {
        // Already in the environment rustc sees: `option_env!` reads it as it is.
        return;
    }
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else { return };
    println!("cargo:rustc-env=SLUICE_COMMIT={commit}");
    // Run again when HEAD moves: a checkout rewrites HEAD, a commit the branch it names (a
    // loose ref, or packed-refs). Only files that exist: cargo reruns on a missing one
    // every time.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"]), git(&["rev-parse", "--git-path", "packed-refs"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    for path in watched.into_iter().flatten().filter(|p| Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={path}");
    }
}
