//! The `1password_connect` source: a field of a 1Password item, read from a 1Password Connect
//! server's REST API (`GET /v1/vaults`, `/v1/vaults/{id}/items`, `/v1/vaults/{id}/items/{id}`,
//! each with `Authorization: Bearer <Connect token>`). Vaults and items are named by title or
//! id; titles are looked up with Connect's `filter` (`name eq "…"`, `title eq "…"`).

use std::time::Duration;

use policy::{OpRef, VaultToken};
use serde_json::Value;

use crate::upstream::Upstreams;

/// How long one Connect request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The value of the field `r` names. Errors say which step failed, never a value.
pub async fn connect(
    r: &OpRef,
    host: Option<&str>,
    token: &VaultToken,
    http: &Upstreams,
) -> Result<Vec<u8>, String> {
    let host = match host {
        Some(h) => h.to_string(),
        None => std::env::var("OP_CONNECT_HOST").map_err(|_| "OP_CONNECT_HOST is not set")?,
    };
    let token = match token {
        VaultToken::Env(var) => std::env::var(var).ok(),
        VaultToken::File(path) => tokio::fs::read_to_string(path).await.ok(),
    }
    .map(|t| t.trim().to_string())
    .filter(|t| !t.is_empty())
    .ok_or("the Connect token is not set")?;
    let auth = http::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the Connect token is not a header value")?;
    let c = Client {
        base: host.trim_end_matches('/').to_string(),
        auth,
        http,
    };
    let vault = c.id("/v1/vaults", "name", &r.vault, "vault").await?;
    let items = format!("/v1/vaults/{vault}/items");
    let item = c.id(&items, "title", &r.item, "item").await?;
    let doc = c.get(&format!("{items}/{item}")).await?;
    field(&doc, r).ok_or_else(|| format!("{r}: no such field with a value"))
}

struct Client<'a> {
    base: String,
    auth: http::HeaderValue,
    http: &'a Upstreams,
}

impl Client<'_> {
    async fn get(&self, path: &str) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let (status, body) = self
            .http
            .call(
                http::Method::GET,
                &url,
                vec![(http::header::AUTHORIZATION, self.auth.clone())],
                bytes::Bytes::new(),
                TIMEOUT,
            )
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{path}: status {}", status.as_u16()));
        }
        serde_json::from_slice(&body).map_err(|_| format!("{path}: not JSON"))
    }

    /// The id of the vault or item called `name` (an id is used as it is).
    async fn id(&self, list: &str, key: &str, name: &str, what: &str) -> Result<String, String> {
        if is_id(name) {
            return Ok(name.to_string());
        }
        let filter = format!("{key} eq \"{}\"", name.replace('"', "\\\""));
        let q = percent_encoding::utf8_percent_encode(&filter, percent_encoding::NON_ALPHANUMERIC);
        let found = self.get(&format!("{list}?filter={q}")).await?;
        let all = found.as_array().cloned().unwrap_or_default();
        let hit = all.iter().find(|v| v[key] == name || v["id"] == name);
        hit.and_then(|v| v["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("no {what} {name:?}"))
    }
}

/// 1Password ids are 26 lower-case base32 characters.
fn is_id(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

/// The field's value: by label or id, inside the named section when the reference has one.
fn field(item: &Value, r: &OpRef) -> Option<Vec<u8>> {
    let section_id = match &r.section {
        None => None,
        Some(s) => Some(
            item["sections"]
                .as_array()?
                .iter()
                .find(|x| x["label"] == s.as_str() || x["id"] == s.as_str())?["id"]
                .as_str()?
                .to_string(),
        ),
    };
    item["fields"]
        .as_array()?
        .iter()
        .filter(|f| match &section_id {
            Some(id) => f["section"]["id"] == id.as_str(),
            None => true,
        })
        .find(|f| f["label"] == r.field.as_str() || f["id"] == r.field.as_str())?["value"]
        .as_str()
        .map(|v| v.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_by_label_or_id_and_within_a_section() {
        let item = json!({"fields": [
            {"id": "password", "label": "credential", "value": "top"},
            {"id": "f2", "label": "credential", "value": "in-prod", "section": {"id": "s1"}},
            {"id": "f3", "label": "empty"},
        ], "sections": [{"id": "s1", "label": "prod"}]});
        let r = |s: &str| s.parse::<OpRef>().unwrap();
        assert_eq!(field(&item, &r("op://v/i/credential")).unwrap(), b"top");
        assert_eq!(field(&item, &r("op://v/i/password")).unwrap(), b"top");
        assert_eq!(
            field(&item, &r("op://v/i/prod/credential")).unwrap(),
            b"in-prod"
        );
        assert!(field(&item, &r("op://v/i/empty")).is_none());
        assert!(field(&item, &r("op://v/i/nope/credential")).is_none());
        assert!(is_id("abcdefghijklmnopqrstuvwxyz") && !is_id("ai-agents"));
    }
}
