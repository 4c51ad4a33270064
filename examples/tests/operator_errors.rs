//! What an operator reads when a configuration or a database is wrong, through the `geo`
//! binary: a misspelled key suggests the right one; a TOML error keeps its caret diagram; a
//! database that cannot be opened is named (scheme, user, host, port, database, never the
//! password) with the cause in words; an unmigrated database says to run `geo migrations
//! apply`; a database of the other role says so. Each leaves the database as it was.

mod common;

use std::process::Output;

use common::{geo, ok, stderr, stdout, write};

/// Fails with exit code 1; stderr.
fn fails(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {}\nstderr: {err}",
        stdout(o)
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Fails with exactly one line on stderr, which is returned.
fn one_line(o: &Output) -> String {
    let err = fails(o);
    assert_eq!(err.lines().count(), 1, "one line, not:\n{err}");
    err.trim_end().to_owned()
}

/// A configuration of `role` on `database_url`.
fn config(dir: &std::path::Path, file: &str, role: &str, database_url: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("objects")).expect("store");
    write(
        &dir.join(file),
        &format!(
            "role = \"{role}\"\nname = \"east\"\ndatabase_url = \"{database_url}\"\nstorage_root = \"{}/objects\"\nprimary_url = \"http://127.0.0.1:1\"\naccess_key = \"key\"\nsecret = \"a-secret\"\n",
            dir.display()
        ),
    )
}

#[test]
fn configuration_mistakes_point_at_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = write(
        &dir.path().join("typo.toml"),
        "role = \"primary\"\nstorage_rot = \"/tmp\"\n",
    );
    let err = one_line(&geo(&typo, &["status"], &[]));
    assert!(
        err.starts_with(&format!(
            "error: unknown key `storage_rot` in {}: did you mean `storage_root`? (known keys: ",
            typo.display()
        )),
        "{err}"
    );

    // The parser's diagram keeps its lines: the line, a caret under the column, the reason.
    let bad = write(
        &dir.path().join("bad.toml"),
        "role = \"primary\"\nname = east\n",
    );
    let err = fails(&geo(&bad, &["status"], &[]));
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        format!("error: {} is not valid TOML:", bad.display()),
        "{err}"
    );
    let source_line = lines
        .iter()
        .position(|l| l.contains("name = east"))
        .unwrap_or_else(|| panic!("the offending line is quoted:\n{err}"));
    let caret = lines[source_line + 1];
    let column = lines[source_line].find("east").expect("east");
    assert_eq!(
        caret.find('^'),
        Some(column),
        "the caret is under `east`:\n{err}"
    );
}

#[test]
fn an_unreachable_database_is_named_without_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("postgres://geo:hunter2@127.0.0.1:{port}/app");
    let c = config(dir.path(), "refused.toml", "primary", &url);
    let err = one_line(&geo(&c, &["status"], &[]));
    assert_eq!(
        err,
        format!(
            "error: cannot open the database postgres://geo@127.0.0.1:{port}/app: connection refused at 127.0.0.1:{port} (is the server running and listening there?)"
        )
    );

    // A SQLite file in a directory that does not exist.
    let missing = dir.path().join("no-such-dir/s.db");
    let c = config(
        dir.path(),
        "sqlite.toml",
        "primary",
        &format!("sqlite://{}", missing.display()),
    );
    let err = one_line(&geo(&c, &["status"], &[]));
    assert_eq!(
        err,
        format!(
            "error: cannot open the database sqlite://{}: unable to open database file (does its directory exist, and may this user write there?)",
            missing.display()
        )
    );
}

#[test]
fn a_postgres_refusal_says_which_and_why() {
    let Ok(base) = std::env::var("GEO_TEST_DATABASE_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "GEO_TEST_DATABASE_URL must be set in CI"
        );
        eprintln!("SKIPPED: GEO_TEST_DATABASE_URL is not set (the PostgreSQL cases did not run)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let base = reqwest::Url::parse(&base).expect("GEO_TEST_DATABASE_URL is a URL");
    let (host, port) = (
        base.host_str().expect("host").to_owned(),
        base.port().unwrap_or(5432),
    );

    let mut no_role = base.clone();
    no_role.set_username("geo_no_such_role").expect("user");
    no_role.set_password(Some("hunter2")).expect("password");
    let c = config(dir.path(), "role.toml", "primary", no_role.as_str());
    let err = one_line(&geo(&c, &["status"], &[]));
    assert!(
        err.starts_with(&format!(
            "error: cannot open the database postgres://geo_no_such_role@{host}:{port}/"
        )) && err.contains("geo_no_such_role")
            && err
                .ends_with("(authentication failed: check the user, the password and pg_hba.conf)")
            && !err.contains("hunter2")
            && !err.contains("at line"),
        "{err}"
    );

    let mut no_db = base.clone();
    no_db.set_path("/geo_no_such_database");
    let c = config(dir.path(), "db.toml", "primary", no_db.as_str());
    let err = one_line(&geo(&c, &["status"], &[]));
    assert!(
        err.ends_with(
            "database \"geo_no_such_database\" does not exist (create the database, or fix its name in database_url)"
        ) && err.contains(&format!("@{host}:{port}/geo_no_such_database:")),
        "{err}"
    );
}

#[test]
fn an_unmigrated_or_wrong_database_says_so_and_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("tracking.db");
    let url = format!("sqlite://{}", db.display());
    let secondary = config(dir.path(), "secondary.toml", "secondary", &url);
    let primary = config(dir.path(), "primary.toml", "primary", &url);

    for args in [
        &["status"][..],
        &["resync", "widget", "--all"],
        &["reverify", "widget", "--all"],
        &["replicables", "enable", "widget"],
    ] {
        let err = one_line(&geo(&secondary, args, &[]));
        assert_eq!(
            err,
            "error: the database is not migrated for a secondary: 9 migration(s) not applied, the first geo_runtime/secondary v1 (event cursor, gaps, leases, blob removals, backfill cursors, feature flags); run `geo migrations apply` (a node applies them itself when it starts)",
            "{args:?}"
        );
    }
    ok(&secondary, &["migrations", "apply"], &[]);
    ok(&secondary, &["replicables", "enable", "widget"], &[]);

    // The same file given to a primary: refused by reads and by a start, which would otherwise
    // create the primary's tables in the secondary's database.
    let wrong = "error: this database holds a secondary's schema, not a primary's: a primary runs on the application's database, a secondary on its own tracking database; check database_url and role";
    for args in [
        &["status"][..],
        &["nodes", "list"],
        &["migrations", "apply"],
        &["primary"],
    ] {
        assert_eq!(one_line(&geo(&primary, args, &[])), wrong, "{args:?}");
    }
    // Nothing of the primary's schema was created.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let events: i64 = rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('geo_events', 'geo_nodes')",
        )
        .fetch_one(&pool)
        .await
        .expect("count")
    });
    assert_eq!(events, 0, "the primary's tables were created");
    let again = ok(&secondary, &["migrations", "apply"], &[]);
    assert!(again.contains("0 applied, 9 already applied"), "{again}");
}
