//! The README's main job, run small: both nodes for real, and the demo's own pass/fail line.

use geo_examples::demo::{Options, Progress, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_replicates_verifies_and_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        count: 90,
        dir: Some(dir.path().to_path_buf()),
        progress: Progress::Lines,
        ..Options::default()
    };
    let mut out = Vec::new();
    let outcome = run(&options, &mut out).await.expect("the demo runs");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(outcome.passed, "{text}");
    // Deleted: every 11th id, 5 of the 60 widgets and 2 of the 30 package files.
    assert_eq!(outcome.compared, 90 - 7, "{text}");
    let pass = text
        .lines()
        .find(|l| l.starts_with("PASS: "))
        .unwrap_or_else(|| panic!("no PASS line in:\n{text}"));
    assert!(
        pass.starts_with("PASS: 83 objects byte-identical"),
        "{pass}"
    );
    assert!(text.contains("node west (secondary) · healthy"), "{text}");
    assert!(
        text.contains(&format!("data in {}", dir.path().display())),
        "{text}"
    );
    // The data is where it said: both databases and both stores.
    for p in [
        "primary.db",
        "secondary.db",
        "primary-objects",
        "secondary-objects",
    ] {
        assert!(dir.path().join(p).exists(), "{p}");
    }
}
