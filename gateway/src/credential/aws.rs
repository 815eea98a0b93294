//! The `aws_sm` and `aws_ssm` sources: a Secrets Manager secret's `SecretString`
//! (`GetSecretValue`) or a Parameter Store value (`GetParameter`), read over the services'
//! JSON protocol, signed (SigV4) with the gateway's own AWS credentials from its environment.
//! The endpoint is the source's `endpoint`, else the SDKs' `AWS_ENDPOINT_URL_SECRETS_MANAGER` /
//! `AWS_ENDPOINT_URL_SSM` / `AWS_ENDPOINT_URL`, else the region's public endpoint.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use policy::AwsItem;
use serde_json::{Value, json};

use crate::credential::sigv4::{self, Canonical, Keys};
use crate::upstream::Upstreams;

/// How long one AWS request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The value `item` names. Errors say which step failed, never a value.
pub async fn read(
    item: &AwsItem,
    region: Option<&str>,
    endpoint: Option<&str>,
    http: &Upstreams,
) -> Result<Vec<u8>, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let region = region
        .map(str::to_string)
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .ok_or("no region: set `region` or AWS_REGION")?;
    let (service, endpoint_var, target, body) = match item {
        AwsItem::Secret(id) => (
            "secretsmanager",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER",
            "secretsmanager.GetSecretValue",
            json!({"SecretId": id}),
        ),
        AwsItem::Parameter { name, decrypt } => (
            "ssm",
            "AWS_ENDPOINT_URL_SSM",
            "AmazonSSM.GetParameter",
            json!({"Name": name, "WithDecryption": decrypt}),
        ),
    };
    let base = endpoint
        .map(str::to_string)
        .or_else(|| env(endpoint_var))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| format!("https://{service}.{region}.amazonaws.com"));
    let id = env("AWS_ACCESS_KEY_ID").ok_or("AWS_ACCESS_KEY_ID is not set")?;
    let secret = env("AWS_SECRET_ACCESS_KEY").ok_or("AWS_SECRET_ACCESS_KEY is not set")?;
    let keys = Keys {
        id: &id,
        secret: secret.as_bytes(),
    };
    let call = Call {
        base: base.trim_end_matches('/'),
        region: &region,
        service,
        target,
        token: env("AWS_SESSION_TOKEN"),
    };
    let answer = call
        .post(&keys, body.to_string().into_bytes(), http)
        .await?;
    let value = match item {
        AwsItem::Secret(_) => answer.get("SecretString"),
        AwsItem::Parameter { .. } => answer.get("Parameter").and_then(|p| p.get("Value")),
    };
    value
        .and_then(Value::as_str)
        .map(|s| s.as_bytes().to_vec())
        .ok_or_else(|| match item {
            AwsItem::Secret(id) => format!("{id}: no SecretString (binary secrets are not read)"),
            AwsItem::Parameter { name, .. } => format!("{name}: no value"),
        })
}

/// One signed JSON-protocol request.
struct Call<'a> {
    base: &'a str,
    region: &'a str,
    service: &'a str,
    target: &'a str,
    token: Option<String>,
}

impl Call<'_> {
    async fn post(
        &self,
        keys: &Keys<'_>,
        body: Vec<u8>,
        http: &Upstreams,
    ) -> Result<Value, String> {
        let uri: http::Uri = self
            .base
            .parse()
            .map_err(|_| format!("`{}` is not a URL", self.base))?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let path = match uri.path() {
            "" => "/",
            p => p,
        };
        let amz_date = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .map_err(|_| "the clock cannot be formatted")?;
        let payload = sigv4::payload_hash(&body);
        let mut headers: Vec<(&str, String)> = vec![
            ("content-type", "application/x-amz-json-1.1".into()),
            ("x-amz-content-sha256", payload.clone()),
            ("x-amz-date", amz_date.clone()),
            ("x-amz-target", self.target.into()),
        ];
        if let Some(t) = &self.token {
            headers.push(("x-amz-security-token", t.clone()));
        }
        let mut signed: Vec<(String, Vec<u8>)> = vec![("host".into(), host.into_bytes())];
        signed.extend(
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone().into_bytes())),
        );
        let canonical = Canonical {
            method: "POST",
            path,
            query: "",
            headers: signed,
            payload_hash: &payload,
        };
        let auth = sigv4::authorization(&canonical, keys, self.region, self.service, &amz_date);
        headers.push(("authorization", auth));
        let mut out = Vec::with_capacity(headers.len());
        for (n, v) in headers {
            let v = HeaderValue::from_str(&v).map_err(|_| format!("{n} is not a header value"))?;
            out.push((HeaderName::from_static(n), v));
        }
        let url = match path {
            "/" => format!("{}/", self.base),
            _ => self.base.to_string(),
        };
        let (status, answer) = http
            .call(http::Method::POST, &url, out, body.into(), TIMEOUT)
            .await
            .map_err(|e| format!("{}: {e}", self.target))?;
        let doc: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        if !status.is_success() {
            // AWS names the error in `__type` (`…#ResourceNotFoundException`).
            let kind = doc
                .get("__type")
                .and_then(Value::as_str)
                .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
                .unwrap_or_default();
            return Err(format!(
                "{}: status {} {kind}",
                self.target,
                status.as_u16()
            ));
        }
        Ok(doc)
    }
}
