//! What every route shares: the error body `{"code": "...", "message": "..."}` (codes in
//! docs/api.md), the caller's key and scope, and request bodies and queries checked into
//! codes.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::server::app::App;
use crate::store::{Code, Key, Rejection, Scope, StoreError};

/// An API error: the status its code carries and a JSON body.
#[derive(Debug)]
pub struct ApiError(pub Rejection);

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError(Rejection::new(code, message))
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError(r)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(r) => ApiError(r),
            other => {
                tracing::error!("store: {other}");
                ApiError::new(Code::Internal, "the store failed; the server log says why")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            axum::Json(json!({"code": self.0.code.as_str(), "message": self.0.message})),
        )
            .into_response()
    }
}

/// 503 `NOT_READY` until the store is open.
pub fn ready(app: &App) -> Result<(), ApiError> {
    if app.ready() {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::NotReady,
            "the server is starting; retry shortly",
        ))
    }
}

/// Checks the caller's key (`Authorization: Bearer KEY` or `X-Api-Key: KEY`) and scope.
pub async fn caller(app: &App, headers: &HeaderMap, scope: Scope) -> Result<Key, ApiError> {
    ready(app)?;
    let token = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                Code::Unauthorized,
                "missing API key (Authorization: Bearer KEY or X-Api-Key: KEY)",
            )
        })?;
    let key = app
        .store()
        .find_key(token)
        .await?
        .ok_or_else(|| ApiError::new(Code::Unauthorized, "unknown or revoked API key"))?;
    if let (Some(thread), Some(runtime)) = (&key.thread_key, &key.runtime_id) {
        // A sandbox token lives as long as its sandbox is the thread's active one.
        let active = app.store().assignment(thread).await?;
        if active.is_none_or(|a| &a.runtime_id != runtime) {
            return Err(ApiError::new(
                Code::Unauthorized,
                "this sandbox token's sandbox is no longer its thread's",
            ));
        }
    }
    if !scope.allowed(&key.scopes) {
        return Err(ApiError::new(
            Code::Forbidden,
            format!("the key {:?} lacks the {scope:?} scope", key.name),
        ));
    }
    Ok(key)
}

/// Reads a JSON body of at most the configured size into `T` (unknown fields refused).
pub async fn body<T: DeserializeOwned>(app: &App, body: Body) -> Result<T, ApiError> {
    parse(&bytes(app, body).await?)
}

/// Reads a body of at most the configured size.
pub async fn bytes(app: &App, body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, app.settings.max_body)
        .await
        .map_err(|_| {
            ApiError::new(
                Code::BodyTooLarge,
                format!("the body is larger than {} bytes", app.settings.max_body),
            )
        })
}

/// Parses a request body, turning serde's errors into codes.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = e.to_string();
        let code = if e.is_syntax() || e.is_eof() {
            Code::InvalidJson
        } else if msg.starts_with("missing field") {
            Code::MissingField
        } else if msg.starts_with("unknown field") {
            Code::UnknownField
        } else {
            Code::InvalidField
        };
        let what = if code == Code::InvalidJson {
            "the body is not valid JSON"
        } else {
            "the body does not fit the request"
        };
        ApiError::new(code, format!("{what}: {msg}"))
    })
}

/// A query string that does not fit.
pub fn query_error(e: axum::extract::rejection::QueryRejection) -> ApiError {
    let msg = e.body_text();
    let code = if msg.contains("missing field") {
        Code::MissingField
    } else if msg.contains("unknown field") {
        Code::UnknownField
    } else {
        Code::InvalidField
    };
    ApiError::new(code, msg)
}
