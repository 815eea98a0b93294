//! AWS Signature Version 4 (the `AWS4-HMAC-SHA256` header form): the scope a client signed
//! for, read from its `Authorization` header or presigned query, and a signature computed over
//! a request with real keys. Pure functions over plain data; the `aws_auth` transform applies
//! them to the request as it leaves.
//!
//! The canonical request follows AWS's documented rules: the path URI-encoded again (each
//! segment, empty segments dropped) except for S3, which signs the path as sent; the query
//! decoded, strictly re-encoded and sorted; header values trimmed with inner runs of spaces
//! collapsed; names lower-case and sorted.

use aws_lc_rs::{digest, hmac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// The algorithm name in the header and the string to sign.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// What is left unescaped: RFC 3986 unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The payload hash of a body the signer does not read (S3 streaming).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Query parameters of a presigned URL: the client's signature, dropped before re-signing.
pub const PRESIGN_PARAMS: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// The credential scope of a signature: `KEY/DATE/REGION/SERVICE/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The region the client signed for.
    pub region: String,
    /// The service the client signed for.
    pub service: String,
    /// The signature came in the query (a presigned URL) rather than a header.
    pub presigned: bool,
}

/// Why a request carries no usable SigV4 signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// No `Authorization: AWS4-HMAC-SHA256 …` header and no `X-Amz-Credential` parameter.
    #[error("no SigV4 signature")]
    Missing,
    /// A credential that is not `KEY/DATE/REGION/SERVICE/aws4_request`.
    #[error("malformed SigV4 credential scope")]
    Malformed,
}

/// The scope the client signed for, from its `Authorization` header or, failing that, the
/// `X-Amz-Credential` query parameter of a presigned URL.
pub fn inbound_scope(authorization: Option<&[u8]>, query: &str) -> Result<Scope, ScopeError> {
    if let Some(auth) = authorization.and_then(|a| std::str::from_utf8(a).ok()) {
        let Some(rest) = auth.trim().strip_prefix(ALGORITHM) else {
            return Err(ScopeError::Missing);
        };
        let credential = rest
            .split(',')
            .filter_map(|p| p.trim().strip_prefix("Credential="))
            .next()
            .ok_or(ScopeError::Malformed)?;
        return parse_credential(credential, false);
    }
    let credential = query
        .split('&')
        .filter_map(|p| p.strip_prefix("X-Amz-Credential="))
        .next()
        .ok_or(ScopeError::Missing)?;
    let decoded = percent_decode_str(credential)
        .decode_utf8()
        .map_err(|_| ScopeError::Malformed)?;
    parse_credential(&decoded, true)
}

fn parse_credential(c: &str, presigned: bool) -> Result<Scope, ScopeError> {
    let parts: Vec<&str> = c.trim().split('/').collect();
    match parts.as_slice() {
        [key, date, region, service, "aws4_request"]
            if !key.is_empty()
                && date.len() == 8
                && date.bytes().all(|b| b.is_ascii_digit())
                && !region.is_empty()
                && !service.is_empty() =>
        {
            Ok(Scope {
                region: region.to_string(),
                service: service.to_string(),
                presigned,
            })
        }
        _ => Err(ScopeError::Malformed),
    }
}

/// The real credentials.
pub struct Keys<'a> {
    /// Access key id.
    pub id: &'a str,
    /// Secret access key.
    pub secret: &'a [u8],
}

/// A request to sign, as it will go upstream.
pub struct Canonical<'a> {
    /// Method.
    pub method: &'a str,
    /// The path as sent (percent-encoded).
    pub path: &'a str,
    /// The query as sent, without `?`.
    pub query: &'a str,
    /// Headers to sign, names lower-case (`host` and every `x-amz-*` among them).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The payload hash (hex SHA-256, or [`UNSIGNED_PAYLOAD`]).
    pub payload_hash: &'a str,
}

/// Signs `req` for `region` and `service` at `amz_date` (`YYYYMMDDTHHMMSSZ`); returns the
/// `Authorization` header value.
pub fn authorization(
    req: &Canonical<'_>,
    keys: &Keys<'_>,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let (canonical, signed_headers) = canonical_request(req, service);
    let date = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mut k = [b"AWS4".as_slice(), keys.secret].concat();
    for part in [date, region, service, "aws4_request"] {
        k = mac(&k, part.as_bytes());
    }
    let signature = hex(&mac(&k, to_sign.as_bytes()));
    format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        keys.id
    )
}

/// The canonical request and the signed header list.
fn canonical_request(req: &Canonical<'_>, service: &str) -> (String, String) {
    let mut headers: Vec<(String, String)> = Vec::with_capacity(req.headers.len());
    for (name, value) in &req.headers {
        let v = String::from_utf8_lossy(value);
        let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
        match headers.iter_mut().find(|(n, _)| n == name) {
            Some((_, prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            None => headers.push((name.clone(), v)),
        }
    }
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let signed = signed.join(";");
    let mut out = String::with_capacity(256);
    out.push_str(req.method);
    out.push('\n');
    out.push_str(&canonical_path(req.path, service));
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for (n, v) in &headers {
        out.push_str(n);
        out.push(':');
        out.push_str(v);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed);
    out.push('\n');
    out.push_str(req.payload_hash);
    (out, signed)
}

/// S3 signs the path as sent; every other service signs it URI-encoded once more, with
/// empty segments removed.
fn canonical_path(path: &str, service: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    if service == "s3" {
        return path.to_string();
    }
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| utf8_percent_encode(s, UNRESERVED).to_string())
        .collect();
    let mut out = String::with_capacity(path.len() + 8);
    out.push('/');
    out.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// Each name and value decoded and strictly re-encoded, sorted by name, then value.
fn canonical_query(query: &str) -> String {
    let enc = |s: &str| {
        let raw: Vec<u8> = percent_decode_str(s).collect();
        percent_encoding::percent_encode(&raw, UNRESERVED).to_string()
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    let joined: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    joined.join("&")
}

/// Hex SHA-256 of a body.
pub fn payload_hash(body: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, body).as_ref())
}

fn mac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published SigV4 test suite, case `get-vanilla-query-order-key-case`, and the
    /// example of the SigV4 documentation (IAM ListUsers).
    #[test]
    fn aws_documented_examples() {
        let keys = Keys {
            id: "AKIDEXAMPLE",
            secret: b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        };
        let get = Canonical {
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: vec![
                ("host".into(), b"example.amazonaws.com".to_vec()),
                ("x-amz-date".into(), b"20150830T123600Z".to_vec()),
            ],
            payload_hash: &payload_hash(b""),
        };
        assert_eq!(
            authorization(&get, &keys, "us-east-1", "service", "20150830T123600Z"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
        let iam = Canonical {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: vec![
                (
                    "content-type".into(),
                    b"application/x-www-form-urlencoded; charset=utf-8".to_vec(),
                ),
                ("host".into(), b"iam.amazonaws.com".to_vec()),
                ("x-amz-date".into(), b"20150830T123600Z".to_vec()),
            ],
            payload_hash: &payload_hash(b""),
        };
        assert!(
            authorization(&iam, &keys, "us-east-1", "iam", "20150830T123600Z").ends_with(
                "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
            )
        );
    }

    #[test]
    fn scope_from_header_or_presigned_query() {
        let h = b"AWS4-HMAC-SHA256 Credential=AKIAPLACEHOLDER/20260101/eu-west-1/sqs/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";
        let s = inbound_scope(Some(h), "").unwrap();
        assert_eq!(
            (s.region.as_str(), s.service.as_str()),
            ("eu-west-1", "sqs")
        );
        assert!(!s.presigned);
        let q = "a=1&X-Amz-Credential=AKIA%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=00";
        let s = inbound_scope(None, q).unwrap();
        assert_eq!((s.region.as_str(), s.service.as_str()), ("us-east-1", "s3"));
        assert!(s.presigned);
        assert_eq!(inbound_scope(None, "a=1"), Err(ScopeError::Missing));
        assert_eq!(
            inbound_scope(Some(b"Bearer x"), ""),
            Err(ScopeError::Missing)
        );
        for bad in [
            "AWS4-HMAC-SHA256 SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=K/2026/eu-west-1/sqs/aws4_request",
            "AWS4-HMAC-SHA256 Credential=K/20260101//sqs/aws4_request",
            "AWS4-HMAC-SHA256 Credential=K/20260101/eu-west-1/sqs/aws5_request",
        ] {
            assert_eq!(
                inbound_scope(Some(bad.as_bytes()), ""),
                Err(ScopeError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn paths_and_queries_in_canonical_form() {
        assert_eq!(canonical_path("/a%20b//c/", "sqs"), "/a%2520b/c/");
        assert_eq!(canonical_path("/a%20b//c/", "s3"), "/a%20b//c/");
        assert_eq!(canonical_path("", "sqs"), "/");
        assert_eq!(canonical_query("b=2&a=x y&a=1&c"), "a=1&a=x%20y&b=2&c=");
        assert_eq!(canonical_query("k=%7e%2F"), "k=~%2F");
    }
}
