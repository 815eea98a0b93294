//! The transforms of a policy file: one file each, holding its raw configuration, its
//! validated type and the validation between them; plus the plan that orders them for a
//! request.

pub(crate) mod allowlist;
pub(crate) mod aws_auth;
pub(crate) mod gcp_auth;
pub(crate) mod header_allowlist;
pub(crate) mod hmac_sign;
pub(crate) mod oauth_token;
pub(crate) mod plan;
pub(crate) mod secrets;
pub(crate) mod source;
pub(crate) mod template;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::transform::allowlist::RawAllowlist;
use crate::transform::aws_auth::RawAwsAuth;
use crate::transform::gcp_auth::{RawGcpAuth, RawGcpIdToken};
use crate::transform::header_allowlist::RawHeaderAllowlist;
use crate::transform::hmac_sign::RawHmac;
use crate::transform::oauth_token::RawOAuth;
use crate::transform::secrets::RawSecrets;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "name", content = "config", deny_unknown_fields)]
pub(crate) enum RawTransform {
    #[serde(rename = "allowlist")]
    Allowlist(RawAllowlist),
    #[serde(rename = "secrets")]
    Secrets(RawSecrets),
    #[serde(rename = "gcp_auth")]
    GcpAuth(RawGcpAuth),
    #[serde(rename = "oauth_token")]
    OAuthToken(RawOAuth),
    #[serde(rename = "hmac_sign")]
    HmacSign(RawHmac),
    #[serde(rename = "header_allowlist")]
    HeaderAllowlist(RawHeaderAllowlist),
    #[serde(rename = "gcp_id_token")]
    GcpIdToken(RawGcpIdToken),
    #[serde(rename = "aws_auth")]
    AwsAuth(Box<RawAwsAuth>),
}
