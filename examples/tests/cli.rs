//! The operator CLI as an operator uses it: separate processes for the primary and the
//! secondary, configured by files and environment, checked with `status`, `check`, `resync`,
//! `reverify`, `nodes` and the metrics endpoint; and its errors on bad input, one line each.

use std::path::Path;
use std::process::Output;

mod common;

use common::{
    credential, eventually, geo, ok, spawn, status_json, stderr, stdout, terminate, wait_for_line,
    write,
};
const ADMIN_TOKEN: &str = "an-admin-token-of-some-length";
/// The primary's key for the secondaries' secrets (32 bytes, hex).
const SECRETS_KEY: &str = "7a1c0e5b9d3f42a68c1e0b7d5f3a29c4e6b8d0f2a4c6e8b0d2f4a6c8e0b2d4f6";

/// Fails with exit code `code` and exactly one line on stderr, which is returned.
fn one_line_error(o: &Output, code: i32) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {err}",
        stdout(o)
    );
    assert_eq!(err.lines().count(), 1, "one line, not:\n{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    err.trim_end().to_owned()
}

#[test]
fn bad_input_gets_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(
        &dir.path().join("geo.toml"),
        &format!(
            "role = \"secondary\"\nname = \"west\"\ndatabase_url = \"sqlite://{}/s.db\"\nstorage_root = \"{}/objects\"\nprimary_url = \"http://127.0.0.1:1\"\naccess_key = \"key\"\n",
            dir.path().display(),
            dir.path().display()
        ),
    );

    // A bad value names its source.
    let err = one_line_error(
        &geo(&config, &["primary"], &[("GEO_LISTEN", "nonsense")]),
        1,
    );
    assert_eq!(
        err,
        "error: invalid listen \"nonsense\" (from environment variable GEO_LISTEN): invalid socket address syntax"
    );
    let typo = write(
        &dir.path().join("typo.toml"),
        "databse_url = \"sqlite://x\"\n",
    );
    let err = one_line_error(&geo(&typo, &["status"], &[]), 1);
    assert!(
        err.starts_with(&format!(
            "error: unknown key `databse_url` in {}: did you mean `database_url`? (known keys: role, name, database_url",
            typo.display()
        )),
        "{err}"
    );
    // A secret's value is never echoed.
    let err = one_line_error(&geo(&config, &["check"], &[]), 1);
    assert_eq!(
        err,
        "error: secret is not set: set it in the configuration file or with GEO_SECRET; needed by a secondary"
    );

    // An unknown replicable.
    let err = one_line_error(&geo(&config, &["resync", "gadget", "--id", "1"], &[]), 1);
    assert_eq!(
        err,
        "error: unknown replicable `gadget`: this binary knows package_file, upload, widget"
    );

    // An unreachable primary (on a migrated tracking database).
    ok(&config, &["migrations", "apply"], &[]);
    let err = one_line_error(
        &geo(
            &config,
            &["check"],
            &[("GEO_SECRET", "a-secret-value-for-this-test")],
        ),
        1,
    );
    assert!(
        err.starts_with("error: asking the primary failed: "),
        "{err}"
    );
    assert!(!err.contains("a-secret-value-for-this-test"));

    // A tracking database inside the store: `check` would take it for an extra file.
    let inside = write(
        &dir.path().join("inside.toml"),
        &format!(
            "role = \"secondary\"\nname = \"west\"\ndatabase_url = \"sqlite://{d}/objects/s.db\"\nstorage_root = \"{d}/objects\"\nprimary_url = \"http://127.0.0.1:1\"\naccess_key = \"key\"\nsecret = \"s\"\n",
            d = dir.path().display()
        ),
    );
    for command in ["check", "secondary"] {
        let err = one_line_error(&geo(&inside, &[command], &[]), 1);
        assert!(
            err.starts_with("error: the tracking database ")
                && err.contains("is inside storage_root")
                && err.contains("the store must hold the objects only"),
            "{command}: {err}"
        );
    }

    // Usage errors are clap's, with exit code 2.
    let o = geo(&config, &["resync", "widget"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--id"), "{}", stderr(&o));

    // The schema, for review.
    let sql = ok(
        &config,
        &[
            "migrations",
            "print",
            "--dialect",
            "postgres",
            "--role",
            "primary",
        ],
        &[],
    );
    assert!(sql.contains("CREATE TABLE \"geo_events\""), "{sql}");
    assert!(sql.contains("CREATE TABLE \"widget_states\""), "{sql}");
    assert!(
        sql.contains("-- replicable:package_file/primary v1"),
        "{sql}"
    );
    let sql = ok(
        &config,
        &["migrations", "print", "--dialect", "sqlite"],
        &[],
    );
    assert!(sql.contains("CREATE TABLE \"widget_registry\""), "{sql}");
}

#[test]
fn operators_run_nodes_and_check_them_with_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let primary = write(
        &d.join("primary.toml"),
        &format!(
            "role = \"primary\"\nname = \"east\"\ndatabase_url = \"sqlite://{d}/primary.db\"\nstorage_root = \"{d}/primary-objects\"\nlisten = \"127.0.0.1:0\"\nstatus_interval_secs = 1\n",
            d = d.display()
        ),
    );
    ok(&primary, &["app-schema"], &[]);
    let applied = ok(&primary, &["migrations", "apply"], &[]);
    assert!(
        applied.contains("applied geo_runtime/primary v1"),
        "{applied}"
    );
    let again = ok(&primary, &["migrations", "apply"], &[]);
    assert!(again.starts_with("0 applied, "), "{again}");

    // The secondaries' secrets are sealed with the primary's key.
    let keyed = [("GEO_SECRETS_KEY", SECRETS_KEY)];
    let creds = ok(
        &primary,
        &["nodes", "add", "west", "--url", "http://west.example"],
        &keyed,
    );
    let field = |name: &str| credential(&creds, name);
    let (access_key, secret) = (field("access_key"), field("secret"));
    // Shown once, as environment settings rather than TOML, and stored sealed.
    assert!(
        creds.contains("its secret is stored sealed with secrets_key")
            && creds.contains("through\nits environment")
            && !creds.contains("secret = "),
        "{creds}"
    );
    let stored: String = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}/primary.db", d.display()))
                .await
                .expect("open");
            sqlx::query_scalar("SELECT secret FROM geo_nodes WHERE name = 'west'")
                .fetch_one(&pool)
                .await
                .expect("row")
        });
    assert!(!stored.contains(&secret), "the secret is stored in clear");
    let listed = ok(&primary, &["nodes", "list"], &[]);
    assert!(
        listed.contains("west") && listed.contains(&access_key),
        "{listed}"
    );
    assert!(!listed.contains(&secret), "nodes list never shows a secret");
    ok(
        &primary,
        &["nodes", "add", "spare", "--url", "http://spare.example"],
        &keyed,
    );
    let removed = ok(&primary, &["nodes", "remove", "spare"], &[]);
    assert!(removed.contains("secondary `spare` removed"), "{removed}");
    assert!(!ok(&primary, &["nodes", "list"], &[]).contains("spare"));
    let again = geo(&primary, &["nodes", "remove", "spare"], &[]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("no secondary named `spare`"),
        "{}",
        stderr(&again)
    );

    ok(&primary, &["app-create", "widget", "1", "40"], &[]);
    ok(&primary, &["app-create", "package_file", "1", "20"], &[]);

    let primary_log = d.join("primary.log");
    let mut primary_node = spawn(&primary, "primary", &keyed, &primary_log);
    let url = wait_for_line(&mut primary_node, "primary API listening on ");

    let secondary = write(
        &d.join("secondary.toml"),
        &format!(
            "role = \"secondary\"\nname = \"west\"\ndatabase_url = \"sqlite://{d}/secondary.db\"\nstorage_root = \"{d}/secondary-objects\"\nprimary_url = \"{url}\"\naccess_key = \"{access_key}\"\nadmin_listen = \"127.0.0.1:0\"\nstatus_interval_secs = 1\n",
            d = d.display()
        ),
    );
    // Secrets from the environment, not the file.
    let env = [
        ("GEO_SECRET", secret.as_str()),
        ("GEO_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let secondary_log = d.join("secondary.log");
    let mut secondary_node = spawn(&secondary, "secondary", &env, &secondary_log);
    let admin = wait_for_line(&mut secondary_node, "admin endpoint on ");
    let admin = admin.split_whitespace().next().expect("address").to_owned();

    eventually("the secondary syncs and verifies everything", || {
        let s = status_json(&secondary, &env);
        let want = [
            ("widgets_synced_count", 40),
            ("widgets_verified_count", 40),
            ("package_files_synced_count", 20),
            ("package_files_verified_count", 20),
        ];
        if want.iter().all(|(k, v)| s[*k] == *v) {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    let table = ok(&secondary, &["status"], &env);
    assert!(table.contains("node west (secondary) · healthy"), "{table}");
    let table = ok(&primary, &["status"], &[]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("widget") && l.contains(" 40 ")),
        "{table}"
    );

    // check: clean, then a flipped byte is found, resynced and clean again.
    let clean = ok(&secondary, &["check"], &env);
    assert!(clean.ends_with("0 differences found\n"), "{clean}");
    assert!(
        clean.contains("NOTICE: widget: 40 records on the primary, 40 matching"),
        "{clean}"
    );
    // Files no row accounts for: a leftover copy and a file put there by hand.
    let objects = d.join("secondary-objects");
    std::fs::create_dir_all(objects.join("leftover")).expect("mkdir");
    std::fs::write(objects.join("leftover/9.bin"), b"gone on the primary").expect("write");
    std::fs::write(objects.join("notes copy.txt"), b"by hand").expect("write");
    let o = geo(&secondary, &["check"], &env);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("ERROR : + leftover/9.bin: extra on the secondary (no registry row)\n")
            && text.contains("ERROR : + notes copy.txt: extra on the secondary")
            && text.contains("NOTICE: store: 62 files, 2 extra, 0 waiting for removal\n")
            && text.ends_with("2 differences found\n"),
        "{text}"
    );
    eventually("the status shows the extra files", || {
        let s = status_json(&secondary, &env);
        if s["extra_files_count"] == 2 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    let table = ok(&secondary, &["status"], &env);
    assert!(
        table.contains("store: 2 files no row accounts for at the last check"),
        "{table}"
    );
    // A dry run first: shown, not deleted.
    let o = geo(&secondary, &["check", "--delete-extra"], &env);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("NOTICE: would delete leftover/9.bin\n")
            && stdout(&o).contains("add --confirm to delete them"),
        "{}",
        stdout(&o)
    );
    assert!(objects.join("leftover/9.bin").exists());
    let o = geo(&secondary, &["check", "--delete-extra", "--confirm"], &env);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("NOTICE: deleted leftover/9.bin\n")
            && stdout(&o).contains("ERROR : kept notes copy.txt: unsafe object key"),
        "{}",
        stdout(&o)
    );
    assert!(!objects.join("leftover/9.bin").exists());
    std::fs::remove_file(objects.join("notes copy.txt")).expect("by hand");
    let clean = ok(&secondary, &["check"], &env);
    assert!(clean.ends_with("0 differences found\n"), "{clean}");

    let copy = d
        .join("secondary-objects")
        .join(geo_examples::app::key(geo_examples::app::Kind::Widget, 3));
    let mut bytes = std::fs::read(&copy).expect("copy");
    bytes[0] ^= 1;
    std::fs::write(&copy, &bytes).expect("flip a byte");
    let o = geo(&secondary, &["check"], &env);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("ERROR : widget 3 (widgets/3/3.bin): checksums differ: primary "),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).ends_with("1 differences found\n"),
        "{}",
        stdout(&o)
    );
    let resync = ok(&secondary, &["resync", "widget", "--id", "3"], &env);
    assert_eq!(
        resync,
        "widget: 1 rows back to pending; the sync downloads them again\n"
    );
    eventually("the resync restores the copy", || {
        let o = geo(&secondary, &["check", "widget"], &env);
        if o.status.success() {
            Ok(())
        } else {
            Err(stdout(&o))
        }
    });

    let reverify = ok(
        &secondary,
        &[
            "reverify",
            "widget",
            "--all",
            "--verification-state",
            "succeeded",
        ],
        &env,
    );
    assert_eq!(reverify, "widget: 40 records marked for verification\n");
    let reverify = ok(
        &primary,
        &["reverify", "package_file", "--id", "1,2,3"],
        &[],
    );
    assert_eq!(
        reverify,
        "package_file: 3 records marked for verification\n"
    );

    // The metrics endpoint: bearer token required, Geo's names, parseable.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (code, body) = rt.block_on(async {
        let r = reqwest::Client::new()
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .expect("metrics");
        (r.status().as_u16(), r.text().await.expect("body"))
    });
    assert_eq!(code, 401, "{body}");
    eventually("the metrics show every widget synced", || {
        let body = rt.block_on(async {
            reqwest::Client::new()
                .get(format!("{admin}/metrics"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("body")
        });
        let samples: Vec<(&str, f64)> = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').expect("sample");
                (k, v.parse().expect("value"))
            })
            .collect();
        let get = |k: &str| samples.iter().find(|(s, _)| *s == k).map(|(_, v)| *v);
        if get("geo_widgets_synced{name=\"west\"}") == Some(40.0)
            && get(
                "geo_sync_transfers_total{name=\"west\",replicable=\"widget\",outcome=\"synced\"}",
            )
            .is_some_and(|v| v >= 41.0)
        {
            Ok(())
        } else {
            Err(body.clone())
        }
    });

    // A copy that rots is found by the secondary's verification, whose warning names the
    // replicable and the record.
    let copy = d
        .join("secondary-objects")
        .join(geo_examples::app::key(geo_examples::app::Kind::Widget, 4));
    let mut bytes = std::fs::read(&copy).expect("copy");
    bytes[0] ^= 1;
    std::fs::write(&copy, &bytes).expect("flip a byte");
    ok(&secondary, &["reverify", "widget", "--id", "4"], &env);
    eventually("the verification warning names the copy", || {
        let log = std::fs::read_to_string(&secondary_log).expect("log");
        match log
            .lines()
            .find(|l| l.contains("a local copy failed verification"))
        {
            Some(l) if l.contains("replicable=\"widget\"") && l.contains(" id=4 ") => Ok(()),
            Some(l) => panic!("the warning lacks the replicable or the id: {l}"),
            None => Err("no warning yet".into()),
        }
    });

    terminate(secondary_node);
    terminate(primary_node);
    for log in [&primary_log, &secondary_log] {
        let text = std::fs::read_to_string(log).expect("log");
        assert!(!text.is_empty(), "{} logs at debug", log.display());
        assert!(
            !text.contains(&secret),
            "{} shows the secret",
            log.display()
        );
        assert!(
            !text.contains(ADMIN_TOKEN),
            "{} shows the admin token",
            log.display()
        );
        assert!(
            !text.contains(SECRETS_KEY),
            "{} shows the secrets key",
            log.display()
        );
    }
}

#[test]
fn every_configuration_key_is_documented() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .expect("docs/operations.md");
    for key in geo_runtime::cli::config::KEYS {
        assert!(
            doc.contains(&format!("| `{}` |", key.name)),
            "docs/operations.md does not document `{}`",
            key.name
        );
    }
}
