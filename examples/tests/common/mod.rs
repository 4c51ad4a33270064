//! Running the example's `geo` binary as a process, for the CLI and crash suites.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    wait_for_lines(child, &[prefix]).remove(0)
}

/// Reads a child's stdout until a line starting with each prefix was seen, in order; the rest of
/// each. One reader for all: a second reader would lose what the first had buffered.
pub fn wait_for_lines(child: &mut Child, prefixes: &[&str]) -> Vec<String> {
    let out = child.stdout.as_mut().expect("piped stdout");
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    let mut found = Vec::new();
    for prefix in prefixes {
        loop {
            line.clear();
            let n = reader.read_line(&mut line).expect("read stdout");
            assert!(n > 0, "the process ended before printing {prefix:?}");
            if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                found.push(rest.to_owned());
                break;
            }
        }
    }
    found
}

/// Runs `geo <role>` as a node, logging to `log`, its stdout piped (for [`wait_for_line`]).
pub fn spawn(config: &Path, role: &str, env: &[(&str, &str)], log: &Path) -> Child {
    let mut cmd = Command::new(GEO);
    cmd.arg(role)
        .env("GEO_CONFIG", config)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn geo")
}

pub fn terminate(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "a node stopped by SIGTERM exits cleanly: {status:?}"
            );
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the node did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if start.elapsed() > Duration::from_secs(90) => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `geo status --json`, healthy or not (exit 0 or 1 with the status on stdout).
pub fn status_json(config: &Path, env: &[(&str, &str)]) -> serde_json::Value {
    let o = geo(config, &["status", "--json"], env);
    assert!(
        matches!(o.status.code(), Some(0 | 1)) && !o.stdout.is_empty(),
        "geo status: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    serde_json::from_str(&stdout(&o)).expect("status json")
}

/// Writes a configuration file; its path.
pub fn write(path: &Path, text: &str) -> std::path::PathBuf {
    std::fs::write(path, text).expect("write config");
    path.to_owned()
}

/// The value of `GEO_<NAME>=…` in what `geo nodes add` printed (`name`: `access_key`, `secret`).
pub fn credential(creds: &str, name: &str) -> String {
    let prefix = format!("GEO_{}=", name.to_ascii_uppercase());
    creds
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} in {creds}"))
        .to_owned()
}
