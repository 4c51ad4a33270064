//! The configuration's errors, as an operator reads them.

use super::*;

fn settings(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let mut s = Settings::default();
    s.merge_toml(toml, Path::new("geo.toml"))?;
    s.merge_env(|v| {
        env.iter()
            .find(|(k, _)| *k == v)
            .map(|(_, x)| (*x).to_owned())
    });
    Ok(s)
}

#[test]
fn the_environment_overrides_the_file_and_errors_name_the_source() {
    let s = settings(
        "listen = \"127.0.0.1:1\"\nstorage_root = \"/tmp/x\"\nfiles_max_capacity = 4\n",
        &[("GEO_LISTEN", "nonsense")],
    )
    .expect("loads");
    let e = s.primary().expect_err("bad listen").to_string();
    assert_eq!(
        e,
        "invalid listen \"nonsense\" (from environment variable GEO_LISTEN): invalid socket address syntax"
    );
    let s = settings("files_max_capacity = 0\n", &[]).expect("loads");
    let e = s
        .positive("files_max_capacity")
        .expect_err("zero")
        .to_string();
    assert_eq!(
        e,
        "invalid files_max_capacity \"0\" (from geo.toml): must be at least 1"
    );
}

#[test]
fn unknown_keys_missing_keys_and_secrets_are_reported_clearly() {
    let e = settings("databse_url = \"x\"", &[])
        .expect_err("typo")
        .to_string();
    assert!(
        e.starts_with(
            "unknown key `databse_url` in geo.toml: did you mean `database_url`? (known keys: role, name, database_url"
        ),
        "{e}"
    );
    for (typo, meant) in [
        ("Storage_Root", Some("storage_root")),
        ("admin_listen_addr", Some("admin_listen")),
        ("primaryurl", Some("primary_url")),
        ("colour", None),
        ("secrets-key", Some("secrets_key")),
    ] {
        assert_eq!(closest_key(typo), meant, "{typo}");
    }
    let e = settings("colour = 1", &[])
        .expect_err("unknown")
        .to_string();
    assert!(
        e.starts_with("unknown key `colour` in geo.toml (known keys: "),
        "{e}"
    );
    let e = settings("listen = \"127.0.0.1:1\"\nname = primary\n", &[])
        .expect_err("bare string")
        .to_string();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines[0], "geo.toml is not valid TOML:", "{e}");
    assert!(lines.iter().any(|l| l.contains("line 2")), "{e}");
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with('|') && l.contains('^')),
        "{e}"
    );
    let s = settings("storage_root = \"/tmp\"", &[]).expect("loads");
    let e = s.secondary().expect_err("missing").to_string();
    assert_eq!(
        e,
        "primary_url is not set: set it in the configuration file or with GEO_PRIMARY_URL; needed by a secondary"
    );
    let s = settings(
        "admin_listen = \"127.0.0.1:0\"",
        &[("GEO_ADMIN_TOKEN", "short-secret")],
    )
    .expect("loads");
    let e = s.admin().expect_err("short").to_string();
    assert_eq!(
        e,
        "invalid admin_token (from environment variable GEO_ADMIN_TOKEN): must be at least 16 characters"
    );
    assert!(!format!("{s:?}").contains("short-secret"));
    let e = settings("secret = [1]", &[])
        .expect_err("array")
        .to_string();
    assert_eq!(
        e,
        "invalid secret (from geo.toml): expected a string or a number, found array"
    );
}
