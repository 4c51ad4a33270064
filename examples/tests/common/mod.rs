//! Running the example's `geo` binary as a process, for the CLI and crash suites.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub const GEO: &str = env!("CARGO_BIN_EXE_geo");

/// Runs `geo <args>` with `GEO_CONFIG=config` and `env` (no inherited log level or fail points).
pub fn geo(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(GEO);
    cmd.args(args)
        .env("GEO_CONFIG", config)
        .env_remove("RUST_LOG")
        .env_remove("FAILPOINTS")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("geo runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Succeeds, or fails the test with what the command said; its stdout.
pub fn ok(config: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = geo(config, args, env);
    assert!(
        o.status.success(),
        "geo {args:?}: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Reads a child's stdout line by line until one starts with `prefix`; the rest of that line.
pub fn wait_for_line(child: &mut Child, prefix: &str) -> String {
    let out = child.stdout.as_mut().expect("piped stdout");
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read stdout");
        assert!(n > 0, "the process ended before printing {prefix:?}");
        if let Some(rest) = line.trim_end().strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
}
