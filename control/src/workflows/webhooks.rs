//! Webhooks: `/api/webhooks/{slug}` declared by a workflow's `WEBHOOKS`, each request
//! authenticated (HMAC, GitHub's `X-Hub-Signature-256`, a bearer token, or none), turned
//! into a run whose input is the request (sensitive headers redacted) and whose trigger key
//! is deterministic, so a delivery sent twice starts one run. Pure: requests in, decisions
//! out; the route is `server::webhooks`.
//!
//! ```python
//! WEBHOOKS = [{
//!     "slug": "github-push",
//!     "auth": {"type": "github", "secret": "GITHUB_WEBHOOK_SECRET"},
//!     "trigger_key": {"header": "X-GitHub-Delivery"},
//! }]
//! ```

use std::collections::BTreeMap;

use aws_lc_rs::hmac;
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// Headers never copied into a run's input.
const SENSITIVE: [&str; 8] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-hub-signature",
    "x-hub-signature-256",
    "x-webhook-signature",
    "x-api-key",
    "x-slack-signature",
];

/// How a webhook's requests prove who sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Anyone may call it.
    None,
    /// An HMAC of the raw body in a header.
    Hmac {
        /// The name of the secret (in `workflows.secrets_from`, else the server's environment).
        secret: String,
        /// The header holding the signature.
        header: String,
        /// `sha256` or `sha512`.
        algorithm: &'static hmac::Algorithm,
        /// What precedes the signature (`sha256=`).
        prefix: String,
        /// Hex or base64.
        base64: bool,
    },
    /// A bearer token in a header.
    Bearer {
        /// The name of the secret.
        secret: String,
        /// The header.
        header: String,
        /// The scheme before the token.
        scheme: String,
    },
}

/// Where a webhook run's trigger key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerKey {
    /// A header (`X-GitHub-Delivery`): one run per delivery id.
    Header(String),
    /// The SHA-256 of the raw body: one run per distinct body.
    Body,
}

/// One declared webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Its URL's last segment.
    pub slug: String,
    /// The workflow it starts.
    pub workflow: String,
    /// Its auth.
    pub auth: Auth,
    /// Its trigger key.
    pub trigger_key: TriggerKey,
    /// Methods it accepts (upper case).
    pub methods: Vec<String>,
    /// Content types it accepts (lower case, without parameters).
    pub content_types: Vec<String>,
}

/// Reads a workflow's `WEBHOOKS` list.
pub fn parse(workflow: &str, v: &Value) -> Result<Vec<Hook>, String> {
    let Some(list) = v.as_array() else {
        return Err("WEBHOOKS must be a list of dicts".into());
    };
    list.iter()
        .enumerate()
        .map(|(i, h)| parse_one(workflow, h).map_err(|e| format!("WEBHOOKS[{i}]: {e}")))
        .collect()
}

fn parse_one(workflow: &str, h: &Value) -> Result<Hook, String> {
    let Some(m) = h.as_object() else {
        return Err("must be a dict".into());
    };
    const KEYS: [&str; 5] = ["slug", "auth", "trigger_key", "methods", "content_types"];
    if let Some(k) = m.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("unknown key {k:?} (known: {})", KEYS.join(", ")));
    }
    let slug = m["slug"].as_str().unwrap_or_default().to_string();
    let ok_slug = slug.len() <= 128
        && slug
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !ok_slug {
        return Err(format!(
            "slug {slug:?}: 1 to 128 of a-z 0-9 . _ -, starting with a letter or digit"
        ));
    }
    if slug == "slack" {
        return Err("slug \"slack\" is reserved for Slack's Events API".into());
    }
    let auth = auth(m.get("auth").unwrap_or(&Value::Null))?;
    let trigger_key = match m.get("trigger_key") {
        None => TriggerKey::Body,
        Some(t) => match t["header"].as_str() {
            Some(h) if !h.is_empty() => TriggerKey::Header(h.to_ascii_lowercase()),
            _ => return Err("trigger_key must be {\"header\": NAME}".into()),
        },
    };
    let strings = |k: &str, default: &str| -> Result<Vec<String>, String> {
        match m.get(k) {
            None => Ok(vec![default.into()]),
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{k} must be a list of strings"))
                })
                .collect(),
            Some(_) => Err(format!("{k} must be a non-empty list of strings")),
        }
    };
    Ok(Hook {
        slug,
        workflow: workflow.into(),
        auth,
        trigger_key,
        methods: strings("methods", "POST")?
            .iter()
            .map(|s| s.to_ascii_uppercase())
            .collect(),
        content_types: strings("content_types", "application/json")?
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
    })
}

fn auth(a: &Value) -> Result<Auth, String> {
    let text = |k: &str, d: &str| a[k].as_str().unwrap_or(d).to_string();
    let secret = || {
        a["secret"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| "auth.secret: name the secret that holds the key".to_string())
    };
    match a["type"].as_str() {
        Some("none") => Ok(Auth::None),
        Some("github") => Ok(Auth::Hmac {
            secret: secret()?,
            header: "x-hub-signature-256".into(),
            algorithm: &hmac::HMAC_SHA256,
            prefix: "sha256=".into(),
            base64: false,
        }),
        Some("hmac") => Ok(Auth::Hmac {
            secret: secret()?,
            header: text("header", "X-Webhook-Signature").to_ascii_lowercase(),
            algorithm: match a["algorithm"].as_str().unwrap_or("sha256") {
                "sha256" => &hmac::HMAC_SHA256,
                "sha512" => &hmac::HMAC_SHA512,
                other => return Err(format!("auth.algorithm {other:?}: sha256 or sha512")),
            },
            prefix: text("prefix", "sha256="),
            base64: match a["encoding"].as_str().unwrap_or("hex") {
                "hex" => false,
                "base64" => true,
                other => return Err(format!("auth.encoding {other:?}: hex or base64")),
            },
        }),
        Some("bearer") => Ok(Auth::Bearer {
            secret: secret()?,
            header: text("header", "Authorization").to_ascii_lowercase(),
            scheme: text("scheme", "Bearer"),
        }),
        _ => Err(
            "auth must be {\"type\": \"none\" | \"hmac\" | \"github\" | \"bearer\", ...}".into(),
        ),
    }
}

/// Every declared webhook by slug. A slug declared twice is refused for both workflows.
pub fn registry(hooks: Vec<Hook>) -> (BTreeMap<String, Hook>, Vec<String>) {
    let mut map: BTreeMap<String, Hook> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut twice = Vec::new();
    for h in hooks {
        if let Some(other) = map.get(&h.slug) {
            errors.push(format!(
                "webhook {:?} is declared by both {} and {}: neither is served",
                h.slug, other.workflow, h.workflow
            ));
            twice.push(h.slug.clone());
        } else {
            map.insert(h.slug.clone(), h);
        }
    }
    for s in twice {
        map.remove(&s);
    }
    (map, errors)
}

/// A request to a webhook.
#[derive(Debug)]
pub struct Request<'a> {
    /// Its method.
    pub method: &'a str,
    /// Its path.
    pub path: &'a str,
    /// Its query string (without `?`).
    pub query: &'a str,
    /// Its headers, names lower case.
    pub headers: &'a [(String, String)],
    /// Its body.
    pub body: &'a [u8],
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request is refused: a status and a reason.
pub type Refusal = (u16, String);

/// Checks a request against its webhook; `secret` looks up a secret's value. On success:
/// the run's input and its trigger key.
pub fn accept(
    hook: &Hook,
    req: &Request<'_>,
    secret: impl Fn(&str) -> Option<String>,
) -> Result<(Value, String), Refusal> {
    if !hook.methods.iter().any(|m| m == req.method) {
        return Err((
            405,
            format!(
                "method {} is not accepted (accepted: {})",
                req.method,
                hook.methods.join(", ")
            ),
        ));
    }
    let ct = req
        .header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !hook.content_types.contains(&ct) {
        return Err((
            415,
            format!(
                "content type {ct:?} is not accepted (accepted: {})",
                hook.content_types.join(", ")
            ),
        ));
    }
    authenticate(&hook.auth, req, secret)?;
    let digest =
        crate::store::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, req.body).as_ref());
    let key = match &hook.trigger_key {
        TriggerKey::Body => format!("webhook:{}:{digest}", hook.slug),
        TriggerKey::Header(h) => match req.header(h).filter(|v| !v.is_empty()) {
            Some(v) => format!("webhook:{}:{v}", hook.slug),
            None => return Err((400, format!("the trigger key header {h} is missing"))),
        },
    };
    let body = if ct.ends_with("json") {
        serde_json::from_slice(req.body).map_err(|e| (400, format!("the body is not JSON: {e}")))?
    } else {
        Value::String(String::from_utf8_lossy(req.body).into_owned())
    };
    let mut headers = Map::new();
    for (k, v) in req.headers {
        let shown = if SENSITIVE.contains(&k.as_str())
            || matches!(&hook.auth, Auth::Hmac { header, .. } | Auth::Bearer { header, .. } if header == k)
        {
            "[redacted]".to_string()
        } else {
            v.clone()
        };
        headers.insert(k.clone(), Value::String(shown));
    }
    let input = json!({"webhook": {
        "slug": hook.slug,
        "provider": match hook.auth { Auth::Hmac { ref header, .. } if header == "x-hub-signature-256" => "github", _ => "generic" },
        "method": req.method,
        "path": req.path,
        "headers": headers,
        "query": req.query,
        "body": body,
        "raw_body_sha256": digest,
    }});
    Ok((input, key))
}

fn authenticate(
    auth: &Auth,
    req: &Request<'_>,
    secret: impl Fn(&str) -> Option<String>,
) -> Result<(), Refusal> {
    let value = |name: &str| {
        secret(name).ok_or_else(|| {
            (
                503,
                format!("the webhook's secret {name} has no value on this server"),
            )
        })
    };
    match auth {
        Auth::None => Ok(()),
        Auth::Hmac {
            secret,
            header,
            algorithm,
            prefix,
            base64,
        } => {
            let key = value(secret)?;
            let given = req
                .header(header)
                .ok_or_else(|| (401, format!("no {header} header")))?;
            let sig = given
                .strip_prefix(prefix.as_str())
                .ok_or_else(|| (401, format!("{header} does not start with {prefix:?}")))?;
            let bytes = if *base64 {
                base64::engine::general_purpose::STANDARD.decode(sig).ok()
            } else {
                crate::store::unhex(sig)
            }
            .ok_or_else(|| {
                (
                    401,
                    format!("{header} is not {}", if *base64 { "base64" } else { "hex" }),
                )
            })?;
            let k = hmac::Key::new(**algorithm, key.as_bytes());
            hmac::verify(&k, req.body, &bytes)
                .map_err(|_| (401, format!("{header} does not match the body")))
        }
        Auth::Bearer {
            secret,
            header,
            scheme,
        } => {
            let key = value(secret)?;
            let given = req
                .header(header)
                .and_then(|v| v.strip_prefix(scheme.as_str()))
                .map(str::trim)
                .ok_or_else(|| (401, format!("no {header}: {scheme} … header")))?;
            // Compared as MACs of both, in constant time.
            let k = hmac::Key::new(hmac::HMAC_SHA256, b"centaur-bearer-compare");
            let want = hmac::sign(&k, key.as_bytes());
            hmac::verify(&k, given.as_bytes(), want.as_ref())
                .map_err(|_| (401, "the bearer token is wrong".to_string()))
        }
    }
}

/// The webhooks of the loaded workflows, with each workflow's version.
#[derive(Debug, Default)]
pub struct Webhooks {
    map: std::sync::RwLock<BTreeMap<String, (Hook, String)>>,
}

impl Webhooks {
    /// Reads the workflows' `WEBHOOKS` (a bad declaration or a slug declared twice is logged
    /// and not served).
    pub fn sync(&self, workflows: &BTreeMap<String, crate::workflows::worker::Found>) {
        let mut hooks = Vec::new();
        for (name, wf) in workflows {
            let Some(decl) = &wf.webhooks else {
                continue;
            };
            match parse(name, decl) {
                Ok(h) => hooks.extend(h),
                Err(e) => tracing::error!("workflow {name}: {e}; its webhooks are not served"),
            }
        }
        let (map, errors) = registry(hooks);
        for e in errors {
            tracing::error!("{e}");
        }
        for h in map.values() {
            if h.auth == Auth::None {
                tracing::warn!(
                    "webhook {} (workflow {}) has auth none: anyone who can reach the server can start it",
                    h.slug,
                    h.workflow
                );
            }
            tracing::info!(
                "webhook /api/webhooks/{} starts workflow {}",
                h.slug,
                h.workflow
            );
        }
        let map = map
            .into_iter()
            .map(|(slug, h)| {
                let version = workflows
                    .get(&h.workflow)
                    .map(|w| w.version.clone())
                    .unwrap_or_default();
                (slug, (h, version))
            })
            .collect();
        *self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = map;
    }

    /// The webhook at `slug` and its workflow's version.
    pub fn get(&self, slug: &str) -> Option<(Hook, String)> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(slug)
            .cloned()
    }
}

#[cfg(test)]
#[path = "webhooks_tests.rs"]
mod tests;
