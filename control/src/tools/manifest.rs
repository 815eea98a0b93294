//! A tool's declaration: the `[tool.centaur]` table of its `pyproject.toml`. Pure: the
//! caller reads the file.
//!
//! ```toml
//! [tool.centaur]
//! description = "GitHub: search issues, read files, comment."
//! module = "github_tool.client"      # exports _client() or class Client
//! hosts = ["api.github.com"]         # the hosts the tool may reach
//! timeout_s = 30                     # per call (default 120; 0 = none)
//!
//! [[tool.centaur.secrets]]
//! name = "GITHUB_TOKEN"              # its value comes from tools.secrets_from
//! mode = "inject"                    # or "replace" (the default)
//! hosts = ["api.github.com"]         # default: the tool's hosts
//! header = "Authorization"           # inject: the header set; replace: where to swap
//! format = "Bearer {value}"          # inject only
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The per-call timeout when a tool names none (the reference's `TOOL_CALL_TIMEOUT_S`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a replace-mode placeholder is swapped when the declaration names no header.
pub const DEFAULT_MATCH_HEADERS: [&str; 6] = [
    "Authorization",
    "Proxy-Authorization",
    "Api-Key",
    "X-Api-Key",
    "Cookie",
    "/^x-.*-(key|token)$/",
];

/// One tool, as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Its name: the folder's name.
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// What it does.
    pub description: String,
    /// The Python module the worker imports.
    pub module: String,
    /// The hosts it may reach.
    pub hosts: Vec<String>,
    /// The per-call timeout; `None`: none.
    pub timeout: Option<Duration>,
    /// Its credentials.
    pub secrets: Vec<Secret>,
}

/// A credential a tool uses: the tool holds a placeholder, its gateway the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// The name in `tools.secrets_from` (and the placeholder variable in the worker).
    pub name: String,
    /// Where the value goes.
    pub mode: Mode,
    /// The hosts it goes to.
    pub hosts: Vec<String>,
    /// Whether the tool works without it (otherwise a missing value hides the tool).
    pub optional: bool,
}

/// How the gateway puts a secret on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The tool sends the placeholder in these headers (or the query); the gateway swaps it.
    Replace {
        /// Header names or `/regex/`.
        headers: Vec<String>,
        /// Also swap it in the query string.
        query: bool,
    },
    /// The gateway sets this header to `format` with `{value}` replaced.
    Header {
        /// The header.
        header: String,
        /// Its value, `{value}` standing for the secret.
        format: String,
    },
    /// The gateway sets this query parameter.
    Query(String),
}

#[derive(Deserialize)]
struct Pyproject {
    project: Option<Project>,
    tool: Option<ToolTable>,
}

#[derive(Deserialize)]
struct Project {
    description: Option<String>,
}

#[derive(Deserialize)]
struct ToolTable {
    centaur: Option<Raw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    description: Option<String>,
    module: Option<String>,
    #[serde(default)]
    hosts: Vec<String>,
    timeout_s: Option<u64>,
    #[serde(default)]
    secrets: Vec<RawSecret>,
    #[serde(default)]
    optional_secrets: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSecret {
    Name(String),
    Table(SecretTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretTable {
    name: String,
    mode: Option<String>,
    hosts: Option<Vec<String>>,
    header: Option<String>,
    headers: Option<Vec<String>>,
    format: Option<String>,
    query: Option<bool>,
    query_param: Option<String>,
    #[serde(default)]
    optional: bool,
}

/// Whether `name` can name a tool (and a URL path segment): `[a-z0-9_-]`, 1–64 long.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Parses `pyproject.toml` text of the tool in `dir`. `Ok(None)`: no `[tool.centaur]` table
/// (not a tool). Errors say what is wrong, every problem at once.
pub fn parse(dir: &Path, text: &str) -> Result<Option<Manifest>, String> {
    let doc: Pyproject = toml::from_str(text).map_err(|e| format!("pyproject.toml: {e}"))?;
    let Some(raw) = doc.tool.and_then(|t| t.centaur) else {
        return Ok(None);
    };
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let mut errors = Vec::new();
    if !valid_name(&name) {
        errors.push(format!(
            "the folder name {name:?} cannot name a tool (lowercase letters, digits, _ and -)"
        ));
    }
    let module = raw.module.clone().unwrap_or_else(|| "client".into());
    if !module.split('.').all(|p| {
        !p.is_empty()
            && !p.starts_with(|c: char| c.is_ascii_digit())
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    }) {
        errors.push(format!("module {module:?} is not a Python module path"));
    }
    for h in &raw.hosts {
        check_host(h, "hosts", &mut errors);
    }
    let secrets = raw
        .secrets
        .into_iter()
        .map(|s| secret(s, &raw.hosts, &raw.optional_secrets, &mut errors))
        .collect::<Vec<_>>();
    for o in &raw.optional_secrets {
        if !secrets.iter().any(|s| &s.name == o) {
            errors.push(format!("optional_secrets: {o:?} is not in secrets"));
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let description = raw
        .description
        .or_else(|| doc.project.and_then(|p| p.description))
        .unwrap_or_default();
    Ok(Some(Manifest {
        name,
        dir: dir.to_path_buf(),
        description,
        module,
        hosts: raw.hosts,
        timeout: match raw.timeout_s {
            None => Some(DEFAULT_TIMEOUT),
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
        },
        secrets,
    }))
}

fn check_host(h: &str, at: &str, errors: &mut Vec<String>) {
    let bare = h.strip_prefix("*.").unwrap_or(h);
    let ok = !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !ok {
        errors.push(format!(
            "{at}: {h:?} is not a host name (a name, or *.name for its subdomains)"
        ));
    }
}

fn secret(
    raw: RawSecret,
    hosts: &[String],
    optional: &[String],
    errors: &mut Vec<String>,
) -> Secret {
    let t = match raw {
        RawSecret::Name(name) => SecretTable {
            name,
            mode: None,
            hosts: None,
            header: None,
            headers: None,
            format: None,
            query: None,
            query_param: None,
            optional: false,
        },
        RawSecret::Table(t) => t,
    };
    let n = &t.name;
    let valid = !n.is_empty()
        && !n.starts_with(|c: char| c.is_ascii_digit())
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        errors.push(format!(
            "secrets: {n:?} is not a variable name (letters, digits, _)"
        ));
    }
    let hosts = t.hosts.clone().unwrap_or_else(|| hosts.to_vec());
    if hosts.is_empty() {
        errors.push(format!(
            "secrets.{n}: no hosts (give the secret's hosts, or the tool's)"
        ));
    }
    for h in &hosts {
        check_host(h, &format!("secrets.{n}.hosts"), errors);
    }
    let mode = mode(&t, errors);
    Secret {
        optional: t.optional || optional.contains(&t.name),
        name: t.name,
        mode,
        hosts,
    }
}

fn mode(t: &SecretTable, errors: &mut Vec<String>) -> Mode {
    let n = &t.name;
    match t.mode.as_deref().unwrap_or("replace") {
        "replace" => {
            if t.format.is_some() || t.query_param.is_some() {
                errors.push(format!(
                    "secrets.{n}: format and query_param belong to mode = \"inject\""
                ));
            }
            let mut headers = t.headers.clone().unwrap_or_default();
            headers.extend(t.header.clone());
            if headers.is_empty() {
                headers = DEFAULT_MATCH_HEADERS
                    .iter()
                    .map(|h| h.to_string())
                    .collect();
            }
            Mode::Replace {
                headers,
                query: t.query.unwrap_or(false),
            }
        }
        "inject" => {
            if t.headers.is_some() || t.query.is_some() {
                errors.push(format!(
                    "secrets.{n}: headers and query belong to mode = \"replace\""
                ));
            }
            match (&t.header, &t.query_param) {
                (Some(_), Some(_)) => {
                    errors.push(format!(
                        "secrets.{n}: inject sets a header or a query_param, not both"
                    ));
                    Mode::Query(String::new())
                }
                (None, Some(q)) => Mode::Query(q.clone()),
                (h, None) => {
                    let format = t.format.clone().unwrap_or_else(|| "Bearer {value}".into());
                    if !format.contains("{value}") {
                        errors.push(format!("secrets.{n}.format: {format:?} has no {{value}}"));
                    }
                    Mode::Header {
                        header: h.clone().unwrap_or_else(|| "Authorization".into()),
                        format,
                    }
                }
            }
        }
        other => {
            errors.push(format!("secrets.{n}.mode: {other:?} (replace or inject)"));
            Mode::Query(String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_github_example_declares_an_injected_token() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/github");
        let text = std::fs::read_to_string(dir.join("pyproject.toml")).unwrap();
        let m = parse(&dir, &text).unwrap().unwrap();
        assert_eq!(m.name, "github");
        assert_eq!(m.module, "github_tool.client");
        assert_eq!(m.hosts, ["api.github.com"]);
        assert_eq!(m.timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            m.secrets,
            [Secret {
                name: "GITHUB_TOKEN".into(),
                mode: Mode::Header {
                    header: "Authorization".into(),
                    format: "Bearer {value}".into()
                },
                hosts: vec!["api.github.com".into()],
                optional: false,
            }]
        );
    }

    #[test]
    fn a_bare_secret_name_is_replaced_in_the_usual_headers() {
        let m = parse(
            Path::new("/t/search"),
            "[project]\ndescription = 'from project'\n[tool.centaur]\nhosts = ['api.search.test']\nsecrets = ['SEARCH_KEY']\noptional_secrets = ['SEARCH_KEY']\ntimeout_s = 0\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.description, "from project");
        assert_eq!(m.timeout, None);
        let s = &m.secrets[0];
        assert!(s.optional);
        assert_eq!(s.hosts, ["api.search.test"]);
        assert!(matches!(&s.mode, Mode::Replace { headers, query: false } if headers.len() == 6));
    }

    #[test]
    fn a_folder_without_the_table_is_not_a_tool_and_every_mistake_is_named() {
        assert_eq!(
            parse(Path::new("/t/x"), "[project]\nname='x'\n").unwrap(),
            None
        );
        let e = parse(
            Path::new("/t/Bad Name"),
            "[tool.centaur]\nmodule = '1x'\nhosts = ['a b']\nsecrets = [{name = 'K', mode = 'inject', format = 'Bearer'}, {name = 'J', mode = 'sideways', hosts = ['x.test']}]\n",
        )
        .unwrap_err();
        for want in [
            "folder name",
            "module \"1x\"",
            "\"a b\" is not a host",
            "has no {value}",
            "\"sideways\"",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
        let e = parse(Path::new("/t/x"), "[tool.centaur]\nhost = ['a']\n").unwrap_err();
        assert!(e.contains("unknown field `host`"), "{e}");
    }
}
