//! The operator is never misled, through the `geo` binary: a stopped secondary that falls behind
//! is unhealthy and `geo status` fails; a refusal by the primary says its class and reason;
//! `/health` answers a probe without the admin token and says nothing else; one-shot commands
//! need no admin token; bad `nodes add`, `--id` and `check` uses are said in words; a missing
//! store or a port in use stops a start before it changes anything; replication is switched per
//! data type.

mod common;

use common::{
    credential, eventually, geo, ok, spawn, status_json, stderr, stdout, terminate, wait_for_line,
    wait_for_lines, write,
};

const ADMIN_TOKEN: &str = "an-admin-token-of-some-length";

/// `GET url` with an optional bearer token: (status code, body).
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut r = reqwest::Client::new().get(url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.expect("request");
        (r.status().as_u16(), r.text().await.expect("body"))
    })
}

#[test]
fn a_stopped_secondary_that_falls_behind_is_unhealthy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let primary = write(
        &d.join("primary.toml"),
        &format!(
            "role = \"primary\"\nname = \"east\"\ndatabase_url = \"sqlite://{d}/primary.db\"\nstorage_root = \"{d}/primary-objects\"\nlisten = \"127.0.0.1:0\"\n",
            d = d.display()
        ),
    );
    ok(&primary, &["app-schema"], &[]);
    ok(&primary, &["migrations", "apply"], &[]);
    let creds = ok(
        &primary,
        &["nodes", "add", "west", "--url", "http://west.example"],
        &[],
    );
    let field = |name: &str| credential(&creds, name);
    let (access_key, secret) = (field("access_key"), field("secret"));
    assert!(
        creds.contains("its secret is stored IN CLEAR: set secrets_key (GEO_SECRETS_KEY)"),
        "without a key the operator is told: {creds}"
    );
    // Bad registrations are refused in words, and change nothing.
    for (args, wanted) in [
        (
            ["nodes", "add", "west", "--url", "http://west.example"],
            "a secondary named `west` is registered already",
        ),
        (
            ["nodes", "add", "west coast", "--url", "http://w.example"],
            "`west coast` is not a valid node name",
        ),
        (
            ["nodes", "add", "north", "--url", "ftp://north.example"],
            "`ftp://north.example` is not a valid node URL",
        ),
    ] {
        let o = geo(&primary, &args, &[]);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(wanted), "{args:?}: {}", stderr(&o));
    }
    let listed = ok(&primary, &["nodes", "list"], &[]);
    assert_eq!(
        listed.lines().filter(|l| l.contains("west")).count(),
        1,
        "{listed}"
    );
    assert!(!listed.contains("north"), "{listed}");
    // Replication is switched per data type, on each node, by its feature flag.
    let widget_line = |table: &str| {
        table
            .lines()
            .find(|l| l.starts_with("widget "))
            .unwrap_or_else(|| panic!("no widget line in {table}"))
            .split_whitespace()
            .nth(1)
            .map(str::to_owned)
    };
    let said = ok(&primary, &["replicables", "disable", "widget"], &[]);
    assert_eq!(
        said,
        "widget: replication disabled (flag geo_widget_replication); this primary publishes no events for it\n"
    );
    let table = geo(&primary, &["status"], &[]);
    assert_eq!(widget_line(&stdout(&table)).as_deref(), Some("no"));
    ok(&primary, &["replicables", "enable", "widget"], &[]);
    let table = geo(&primary, &["status"], &[]);
    assert_eq!(widget_line(&stdout(&table)).as_deref(), Some("yes"));
    let o = geo(&primary, &["replicables", "enable", "gadget"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("gadget"), "{}", stderr(&o));
    ok(&primary, &["app-create", "widget", "1", "5"], &[]);
    let mut primary_node = spawn(&primary, "primary", &[], &d.join("primary.log"));
    let url = wait_for_line(&mut primary_node, "primary API listening on ");

    // A one-second stall threshold, so that the test need not wait five minutes.
    let secondary = write(
        &d.join("secondary.toml"),
        &format!(
            "role = \"secondary\"\nname = \"west\"\ndatabase_url = \"sqlite://{d}/secondary.db\"\nstorage_root = \"{d}/secondary-objects\"\nprimary_url = \"{url}\"\naccess_key = \"{access_key}\"\nadmin_listen = \"127.0.0.1:0\"\nstatus_interval_secs = 1\ncursor_stall_secs = 1\n",
            d = d.display()
        ),
    );
    let node_env = [
        ("GEO_SECRET", secret.as_str()),
        ("GEO_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    // One-shot commands get the secret, never the admin token.
    let env = [("GEO_SECRET", secret.as_str())];
    let mut secondary_node = spawn(&secondary, "secondary", &node_env, &d.join("secondary.log"));
    let admin = wait_for_line(&mut secondary_node, "admin endpoint on ");
    let admin = admin.split_whitespace().next().expect("address").to_owned();
    eventually("the secondary syncs", || {
        let s = status_json(&secondary, &env);
        if s["widgets_synced_count"] == 5 && s["healthy"] == true {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    let table = ok(&secondary, &["status"], &env);
    assert!(table.contains("node west (secondary) · healthy"), "{table}");

    // When the primary cannot be asked, the status says why, in the primary's words, classed.
    let unhealthy = |extra: &[(&str, &str)], wanted: &[&str]| {
        let mut all = env.to_vec();
        all.extend_from_slice(extra);
        let o = geo(&secondary, &["status"], &all);
        let text = stdout(&o);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {text}{}", stderr(&o));
        for w in wanted {
            assert!(text.contains(w), "{extra:?}: wanted {w:?} in {text}");
        }
    };
    unhealthy(
        &[("GEO_SECRET", "not-the-secret-at-all-0123456789")],
        &[
            "UNHEALTHY: the primary refused the request (authentication failed: check access_key and secret; HTTP 401): invalid token signature",
        ],
    );
    unhealthy(
        &[("GEO_ACCESS_KEY", "nobody")],
        &["authentication failed", "unknown or disabled node"],
    );
    unhealthy(
        &[("GEO_PRIMARY_URL", admin.as_str())],
        &["wrong endpoint: primary_url must be the primary's node API"],
    );
    unhealthy(
        &[("GEO_PRIMARY_URL", "http://127.0.0.1:9")],
        &[
            "UNHEALTHY: the primary is unreachable: ",
            "127.0.0.1:9",
            "onnection refused",
        ],
    );
    ok(&primary, &["nodes", "disable", "west"], &[]);
    eventually("a disabled node is told so", || {
        let o = geo(&secondary, &["status"], &env);
        let text = stdout(&o);
        if o.status.code() == Some(1) && text.contains("this secondary is disabled on the primary")
        {
            Ok(())
        } else {
            Err(text)
        }
    });
    ok(&primary, &["nodes", "enable", "west"], &[]);
    eventually("an enabled node is healthy again", || {
        let o = geo(&secondary, &["status"], &env);
        if o.status.success() {
            Ok(())
        } else {
            Err(stdout(&o))
        }
    });

    // A probe needs no token and learns nothing but the health; the rest needs the token.
    eventually("the admin endpoint's status is collected", || {
        match get(&format!("{admin}/health"), None) {
            (200, body) if body == r#"{"healthy":true}"# => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(get(&format!("{admin}/status"), None).0, 401);
    assert_eq!(get(&format!("{admin}/metrics"), None).0, 401);
    assert_eq!(get(&format!("{admin}/status"), Some(ADMIN_TOKEN)).0, 200);

    // The secondary stops; the primary goes on.
    terminate(secondary_node);
    ok(&primary, &["app-create", "widget", "6", "10"], &[]);
    eventually("the stopped secondary is reported unhealthy", || {
        let o = geo(&secondary, &["status"], &env);
        let text = stdout(&o);
        if o.status.code() == Some(1)
            && text.contains("UNHEALTHY: the event cursor has not advanced for")
            && text.contains("while the primary has 5 newer events")
        {
            Ok(())
        } else {
            Err(format!("{:?}: {text}{}", o.status, stderr(&o)))
        }
    });
    let s = status_json(&secondary, &env);
    assert_eq!(s["healthy"], false, "{s}");
    assert_eq!(s["cursor_events_behind"], 5, "{s}");

    // `check` is a secondary's command.
    let o = geo(&primary, &["check"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`geo check` runs on a secondary"),
        "{}",
        stderr(&o)
    );

    // Ids that name nothing are said, and fail the command, after the others were acted on.
    let o = geo(&secondary, &["resync", "widget", "--id", "1,999"], &env);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "widget: 1 rows back to pending; the sync downloads them again\n"
    );
    assert_eq!(
        stderr(&o).trim_end(),
        "error: widget: no registry row for id 999"
    );
    let o = geo(&primary, &["reverify", "widget", "--id", "2,998,999"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim_end(),
        "error: widget: no record for id 998, 999"
    );

    // A port in use is named by its key, and the start stops before changing anything.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("addr").to_string();
    let o = geo(&primary, &["primary"], &[("GEO_LISTEN", port.as_str())]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("cannot listen on {port} (`listen`)")),
        "{}",
        stderr(&o)
    );
    let o = geo(
        &secondary,
        &["secondary"],
        &[
            ("GEO_SECRET", secret.as_str()),
            ("GEO_ADMIN_TOKEN", ADMIN_TOKEN),
            ("GEO_ADMIN_LISTEN", port.as_str()),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("cannot listen on {port} (`admin_listen`)")),
        "{}",
        stderr(&o)
    );
    drop(taken);

    // A primary whose objects are gone: unhealthy, and refused at start, naming the key.
    terminate(primary_node);
    let objects = d.join("primary-objects");
    std::fs::rename(&objects, d.join("elsewhere")).expect("move the objects away");
    let o = geo(&primary, &["status"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("UNHEALTHY: the store cannot serve objects: storage_root ")
            && stdout(&o).contains("it does not exist"),
        "{}",
        stdout(&o)
    );
    let o = geo(&primary, &["primary"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the primary cannot serve objects from storage_root ")
            && stderr(&o).contains("it does not exist"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&objects, b"a file, not a directory").expect("write");
    let o = geo(&primary, &["primary"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("it is not a directory"),
        "{}",
        stderr(&o)
    );
}

/// The samples of a Prometheus text page: (series with labels, value).
fn samples(body: &str) -> Vec<(String, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample");
            (k.to_owned(), v.parse().expect("value"))
        })
        .collect()
}

#[test]
fn the_primary_sees_a_secondary_promptly_with_event_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let primary = write(
        &d.join("primary.toml"),
        &format!(
            "role = \"primary\"\nname = \"east\"\ndatabase_url = \"sqlite://{d}/primary.db\"\nstorage_root = \"{d}/primary-objects\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstatus_interval_secs = 1\n",
            d = d.display()
        ),
    );
    let admin_env = [("GEO_ADMIN_TOKEN", ADMIN_TOKEN)];
    ok(&primary, &["app-schema"], &[]);
    ok(&primary, &["migrations", "apply"], &[]);
    let creds = ok(
        &primary,
        &["nodes", "add", "west", "--url", "https://west.example.com"],
        &[],
    );
    let (access_key, secret) = (
        credential(&creds, "access_key"),
        credential(&creds, "secret"),
    );
    ok(&primary, &["app-create", "widget", "1", "5"], &[]);
    let mut primary_node = spawn(&primary, "primary", &admin_env, &d.join("primary.log"));
    let lines = wait_for_lines(
        &mut primary_node,
        &["primary API listening on ", "admin endpoint on "],
    );
    let url = lines[0].clone();
    let primary_admin = lines[1]
        .split_whitespace()
        .next()
        .expect("address")
        .to_owned();

    let secondary = write(
        &d.join("secondary.toml"),
        &format!(
            "role = \"secondary\"\nname = \"west\"\nurl = \"https://west.example.com\"\ndatabase_url = \"sqlite://{d}/secondary.db\"\nstorage_root = \"{d}/secondary-objects\"\nprimary_url = \"{url}\"\naccess_key = \"{access_key}\"\nadmin_listen = \"127.0.0.1:0\"\nstatus_interval_secs = 1\n",
            d = d.display()
        ),
    );
    let env = [
        ("GEO_SECRET", secret.as_str()),
        ("GEO_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let mut secondary_node = spawn(&secondary, "secondary", &env, &d.join("secondary.log"));
    let admin = wait_for_line(&mut secondary_node, "admin endpoint on ");
    let admin = admin.split_whitespace().next().expect("address").to_owned();

    // The secondary's times are the events' own: its cursor's event and the primary's newest.
    eventually("the secondary catches up", || {
        let s = status_json(&secondary, &env);
        if s["widgets_synced_count"] == 5 && s["cursor_events_behind"] == 0 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    let s = status_json(&secondary, &env);
    let p = status_json(&primary, &[]);
    assert_eq!(s["last_event_id"], p["last_event_id"], "{s}\n{p}");
    assert!(p["last_event_date"].is_string(), "{p}");
    assert_eq!(s["last_event_date"], p["last_event_date"], "{s}\n{p}");
    assert_eq!(
        s["cursor_last_event_date"], p["last_event_date"],
        "the cursor stands on the newest event: {s}"
    );

    // A cursor that moves is reported at once, not at the next minute's report.
    ok(&primary, &["app-create", "widget", "6", "10"], &[]);
    let newest = status_json(&primary, &[])["last_event_id"].clone();
    let started = std::time::Instant::now();
    eventually("the primary sees the secondary's new position", || {
        let p = status_json(&primary, &[]);
        if p["secondaries"][0]["last_event_id"] == newest {
            Ok(())
        } else {
            Err(p.to_string())
        }
    });
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the report waited for the 60 s heartbeat: {:?}",
        started.elapsed()
    );
    let p = status_json(&primary, &[]);
    assert_eq!(
        p["secondaries"][0]["last_event_date"], p["last_event_date"],
        "{p}"
    );
    let table = ok(&primary, &["status"], &[]);
    let line = table
        .lines()
        .find(|l| l.starts_with("secondary west: "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains(&format!("applied up to event {newest} (written "))
            && line.contains(" ago) (0 behind), as it reported ")
            && line.ends_with(" ago"),
        "{line}"
    );

    // Each node's metrics carry its name and URL; the secondary has the event times too.
    eventually("the secondary's metrics have the event times", || {
        let (code, body) = get(&format!("{admin}/metrics"), Some(ADMIN_TOKEN));
        assert_eq!(code, 200, "{body}");
        let found = samples(&body);
        let get = |k: &str| found.iter().find(|(s, _)| s == k).map(|(_, v)| *v);
        let labels = "{name=\"west\",url=\"https://west.example.com\"}";
        match (
            get(&format!("geo_last_event_timestamp{labels}")),
            get(&format!("geo_cursor_last_event_timestamp{labels}")),
        ) {
            (Some(last), Some(cursor)) if last > 1e9 && cursor == last => Ok(()),
            other => Err(format!("{other:?}: {body}")),
        }
    });
    let (code, body) = get(&format!("{primary_admin}/metrics"), Some(ADMIN_TOKEN));
    assert_eq!(code, 200, "{body}");
    assert!(
        samples(&body)
            .iter()
            .any(|(s, _)| *s == format!("geo_status_healthy{{name=\"east\",url=\"{url}\"}}")),
        "the primary's url label is its node API: {body}"
    );

    terminate(secondary_node);
    terminate(primary_node);
}
