//! The CLI's configuration: a TOML file of flat keys, each overridable by an environment variable
//! (`GEO_` + the key in capitals). Every value remembers where it came from, so a bad value is
//! reported with its source: `invalid admin_listen "x" (from environment variable
//! GEO_ADMIN_LISTEN): invalid socket address syntax`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::node::{AdminConfig, PrimaryConfig, SecondaryConfig, Secret};
use crate::worker::sync::SyncConfig;
use crate::worker::verify::{SecondaryVerifyConfig, VerifyConfig};

/// A configuration key: its name, whether it is secret, its default and what it is for.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// `database_url`.
    pub name: &'static str,
    /// Never echoed in errors.
    pub secret: bool,
    /// The value when nothing sets it.
    pub default: Option<&'static str>,
    /// One line of documentation.
    pub doc: &'static str,
}

/// Every key the CLI reads (`docs/operations.md` lists the same).
pub const KEYS: &[Key] = &[
    Key {
        name: "role",
        secret: false,
        default: None,
        doc: "`primary` or `secondary`; `geo primary` / `geo secondary` set it",
    },
    Key {
        name: "name",
        secret: false,
        default: None,
        doc: "this node's name (a secondary: as registered on the primary)",
    },
    Key {
        name: "database_url",
        secret: true,
        default: None,
        doc: "`postgres://…` or `sqlite://path` (the primary's application database, or a secondary's tracking database)",
    },
    Key {
        name: "storage_root",
        secret: false,
        default: None,
        doc: "directory of the object store",
    },
    Key {
        name: "listen",
        secret: false,
        default: Some("127.0.0.1:8080"),
        doc: "primary: where the node API listens",
    },
    Key {
        name: "url",
        secret: false,
        default: None,
        doc: "this node's external URL, the `url` label of its metrics (a primary: http:// and its listen address when unset; a secondary: no label when unset)",
    },
    Key {
        name: "primary_url",
        secret: false,
        default: None,
        doc: "secondary: the primary's API URL",
    },
    Key {
        name: "access_key",
        secret: false,
        default: None,
        doc: "secondary: its access key (from `geo nodes add`)",
    },
    Key {
        name: "secret",
        secret: true,
        default: None,
        doc: "secondary: its secret (from `geo nodes add`); prefer GEO_SECRET to the file",
    },
    Key {
        name: "secrets_key",
        secret: true,
        default: None,
        doc: "primary: the key secondaries' secrets are encrypted with in geo_nodes (32 bytes as 64 hex digits or base64, e.g. from `openssl rand -base64 32`); prefer GEO_SECRETS_KEY",
    },
    Key {
        name: "admin_listen",
        secret: false,
        default: None,
        doc: "where the admin endpoint (/status, /metrics, /health) listens; off when unset",
    },
    Key {
        name: "admin_token",
        secret: true,
        default: None,
        doc: "bearer token the admin endpoint requires (required with admin_listen)",
    },
    Key {
        name: "files_max_capacity",
        secret: false,
        default: Some("10"),
        doc: "secondary: downloads at once",
    },
    Key {
        name: "batch_size",
        secret: false,
        default: Some("32"),
        doc: "secondary: objects asked for in one request (those up to 64 KiB travel together; 1: one object per request)",
    },
    Key {
        name: "max_object_size",
        secret: false,
        default: None,
        doc: "secondary: objects larger than this many bytes are refused (no limit when unset)",
    },
    Key {
        name: "verification_max_capacity",
        secret: false,
        default: Some("100"),
        doc: "checksums at once, shared across replicables",
    },
    Key {
        name: "reverify_interval_days",
        secret: false,
        default: Some("7"),
        doc: "objects are verified again after this many days (at least 1)",
    },
    Key {
        name: "status_interval_secs",
        secret: false,
        default: Some("60"),
        doc: "how often the status is collected",
    },
    Key {
        name: "cursor_stall_secs",
        secret: false,
        default: Some("300"),
        doc: "secondary: unhealthy when the event cursor has not advanced for this long while the primary has newer events",
    },
    Key {
        name: "idle_timeout_secs",
        secret: false,
        default: Some("60"),
        doc: "secondary: a download that receives nothing for this long fails",
    },
];

/// The environment variable that overrides `key`.
pub fn env_var(key: &str) -> String {
    format!("GEO_{}", key.to_ascii_uppercase())
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// The built-in default.
    Default,
    /// The command line.
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "from {}", p.display()),
            Source::Env(v) => write!(f, "from environment variable {v}"),
            Source::Default => f.write_str("the default"),
            Source::Flag => f.write_str("from the command line"),
        }
    }
}

/// The configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML: the parser's message keeps its lines (the line, a caret
    /// under the column, what was expected).
    #[error("{path} is not valid TOML:\n{message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The file has a key the CLI does not know.
    #[error("unknown key `{key}` in {path}{}(known keys: {known})", suggestion.map(|s| format!(": did you mean `{s}`? ")).unwrap_or_else(|| " ".to_owned()))]
    UnknownKey {
        /// The key.
        key: String,
        /// The file.
        path: PathBuf,
        /// The known key it is closest to, when one is close (a typo).
        suggestion: Option<&'static str>,
        /// The keys it could have been.
        known: String,
    },
    /// A required key has no value.
    #[error("{key} is not set: set it in the configuration file or with {env}{why}")]
    Missing {
        /// The key.
        key: &'static str,
        /// Its environment variable.
        env: String,
        /// Why it is needed here (`; needed by …`), or empty.
        why: String,
    },
    /// A value does not parse.
    #[error("invalid {key} {shown}({source_}): {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value in quotes and a space, or nothing for a secret.
        shown: String,
        /// Where it came from.
        source_: Source,
        /// Why it is wrong.
        reason: String,
    },
}

/// Loaded configuration: each key's raw value and where it came from.
#[derive(Clone, Default)]
pub struct Settings {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, (v, source)) in &self.values {
            let secret = KEYS.iter().any(|key| key.name == *k && key.secret);
            let shown = if secret { "<redacted>" } else { v.as_str() };
            m.entry(k, &format_args!("{shown:?} ({source})"));
        }
        m.finish()
    }
}

fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The known key `name` is a typo of: the nearest by edit distance, when at most a third of
/// its letters differ (so `databse_url` finds `database_url`, `colour` finds nothing).
fn closest_key(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    KEYS.iter()
        .map(|k| (edit_distance(&name, k.name), k.name))
        .filter(|(d, k)| *d <= (k.len().max(name.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

impl Settings {
    /// Reads `path` (when given; a missing default file is not an error) and applies the
    /// environment over it.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut settings = Settings::default();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            settings.merge_toml(&text, path)?;
        }
        settings.merge_env(|v| std::env::var(v).ok());
        Ok(settings)
    }

    /// Applies a TOML document of flat keys.
    pub fn merge_toml(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let table = toml::Table::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        for (name, value) in table {
            let Some(k) = key(&name) else {
                return Err(ConfigError::UnknownKey {
                    suggestion: closest_key(&name),
                    key: name,
                    path: path.to_owned(),
                    known: KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
                });
            };
            let raw = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError::Invalid {
                        key: k.name,
                        shown: String::new(),
                        source_: Source::File(path.to_owned()),
                        reason: format!(
                            "expected a string or a number, found {}",
                            other.type_str()
                        ),
                    });
                }
            };
            self.values
                .insert(k.name, (raw, Source::File(path.to_owned())));
        }
        Ok(())
    }

    /// Applies `GEO_<KEY>` variables, read through `var`.
    pub fn merge_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        for k in KEYS {
            let name = env_var(k.name);
            if let Some(v) = var(&name) {
                self.values.insert(k.name, (v, Source::Env(name)));
            }
        }
    }

    /// Sets `key` from the command line.
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) {
        self.values.insert(name, (value.into(), Source::Flag));
    }

    /// The raw value and its source, falling back to the default.
    pub fn raw(&self, name: &'static str) -> Option<(String, Source)> {
        self.values.get(name).cloned().or_else(|| {
            key(name)
                .and_then(|k| k.default)
                .map(|d| (d.to_owned(), Source::Default))
        })
    }

    /// The value parsed as `T`, if set.
    pub fn get<T>(&self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let Some((raw, source)) = self.raw(name) else {
            return Ok(None);
        };
        raw.trim()
            .parse::<T>()
            .map(Some)
            .map_err(|e| ConfigError::Invalid {
                key: name,
                shown: if key(name).is_some_and(|k| k.secret) {
                    String::new()
                } else {
                    format!("{raw:?} ")
                },
                source_: source,
                reason: e.to_string(),
            })
    }

    /// The value parsed as `T`; an error naming the key, its variable and `why` when unset.
    pub fn require<T>(&self, name: &'static str, why: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.get(name)?.ok_or_else(|| ConfigError::Missing {
            key: name,
            env: env_var(name),
            why: if why.is_empty() {
                String::new()
            } else {
                format!("; {why}")
            },
        })
    }

    /// A whole number of at least 1.
    pub(crate) fn positive(&self, name: &'static str) -> Result<u64, ConfigError> {
        let v: u64 = self.require(name, "")?;
        if v == 0 {
            let (raw, source) = self.raw(name).unwrap_or_default_pair();
            return Err(ConfigError::Invalid {
                key: name,
                shown: format!("{raw:?} "),
                source_: source,
                reason: "must be at least 1".into(),
            });
        }
        Ok(v)
    }

    fn admin(&self) -> Result<Option<AdminConfig>, ConfigError> {
        let Some(listen) = self.get::<SocketAddr>("admin_listen")? else {
            return Ok(None);
        };
        let token: String = self.require("admin_token", "needed when admin_listen is set")?;
        if token.len() < 16 {
            let (_, source) = self.raw("admin_token").unwrap_or_default_pair();
            return Err(ConfigError::Invalid {
                key: "admin_token",
                shown: String::new(),
                source_: source,
                reason: "must be at least 16 characters".into(),
            });
        }
        Ok(Some(AdminConfig {
            listen,
            token: Secret::new(token),
        }))
    }

    /// A primary's configuration.
    pub fn primary(&self) -> Result<PrimaryConfig, ConfigError> {
        let mut c = PrimaryConfig::new(
            self.require("listen", "")?,
            self.require::<PathBuf>("storage_root", "")?,
        );
        if let Some(name) = self.get::<String>("name")? {
            c.name = name;
        }
        c.verification = VerifyConfig {
            verification_max_capacity: usize::try_from(self.positive("verification_max_capacity")?)
                .unwrap_or(usize::MAX),
            reverify_interval: Duration::from_secs(
                self.positive("reverify_interval_days")?
                    .saturating_mul(86_400),
            ),
            ..VerifyConfig::default()
        };
        c.admin = self.admin()?;
        c.status_interval = Duration::from_secs(self.positive("status_interval_secs")?);
        c.secrets_key = self.get("secrets_key")?;
        c.url = self.get("url")?;
        Ok(c)
    }

    /// How a secondary reaches its primary: URL, access key, secret, idle timeout (what the
    /// one-shot commands need; no admin endpoint).
    pub fn primary_connection(&self) -> Result<(String, String, Secret, Duration), ConfigError> {
        let why = "needed by a secondary";
        let primary_url: String = self.require("primary_url", why)?;
        if !(primary_url.starts_with("http://") || primary_url.starts_with("https://")) {
            let (_, source) = self.raw("primary_url").unwrap_or_default_pair();
            return Err(ConfigError::Invalid {
                key: "primary_url",
                shown: format!("{primary_url:?} "),
                source_: source,
                reason: "must start with http:// or https://".into(),
            });
        }
        Ok((
            primary_url,
            self.require::<String>("access_key", why)?,
            Secret::new(self.require::<String>("secret", why)?),
            Duration::from_secs(self.positive("idle_timeout_secs")?),
        ))
    }

    /// A secondary's configuration.
    pub fn secondary(&self) -> Result<SecondaryConfig, ConfigError> {
        let why = "needed by a secondary";
        let (primary_url, access_key, secret, idle_timeout) = self.primary_connection()?;
        let mut c = SecondaryConfig::new(
            &self.require::<String>("name", why)?,
            &primary_url,
            &access_key,
            secret,
            self.require::<PathBuf>("storage_root", why)?,
        );
        c.sync = SyncConfig {
            files_max_capacity: usize::try_from(self.positive("files_max_capacity")?)
                .unwrap_or(usize::MAX),
            max_object_size: self.get("max_object_size")?,
            batch_size: usize::try_from(self.positive("batch_size")?).unwrap_or(usize::MAX),
            ..SyncConfig::default()
        };
        c.verification = SecondaryVerifyConfig {
            verification_max_capacity: usize::try_from(self.positive("verification_max_capacity")?)
                .unwrap_or(usize::MAX),
            reverify_interval: Duration::from_secs(
                self.positive("reverify_interval_days")?
                    .saturating_mul(86_400),
            ),
            ..SecondaryVerifyConfig::default()
        };
        c.idle_timeout = idle_timeout;
        c.admin = self.admin()?;
        c.status_interval = Duration::from_secs(self.positive("status_interval_secs")?);
        c.cursor_stall = Duration::from_secs(self.positive("cursor_stall_secs")?);
        c.url = self.get("url")?;
        Ok(c)
    }
}

trait DefaultPair {
    fn unwrap_or_default_pair(self) -> (String, Source);
}

impl DefaultPair for Option<(String, Source)> {
    fn unwrap_or_default_pair(self) -> (String, Source) {
        self.unwrap_or((String::new(), Source::Default))
    }
}

#[cfg(test)]
mod tests;
