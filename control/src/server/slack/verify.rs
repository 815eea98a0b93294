//! Slack's request signature (v0): `v0=` + hex(HMAC-SHA256(signing secret,
//! `v0:{timestamp}:{raw body}`)), compared in constant time, the timestamp within a window
//! of the server's clock. Pure.

use aws_lc_rs::hmac;

/// How far a request's timestamp may be from now, in seconds (Slack's own advice).
pub const WINDOW_SECS: i64 = 300;

/// Why a request was refused; the string is the `error` of the 401 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `X-Slack-Signature` or `X-Slack-Request-Timestamp`.
    MissingHeaders,
    /// The timestamp is not a number.
    BadTimestamp,
    /// The timestamp is outside the window (a replay, or a clock far off).
    Stale,
    /// The signature does not match the body.
    BadSignature,
}

impl Refusal {
    /// The stable reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MissingHeaders => "missing_signature_headers",
            Refusal::BadTimestamp => "invalid_timestamp",
            Refusal::Stale => "stale_timestamp",
            Refusal::BadSignature => "invalid_signature",
        }
    }
}

/// The `v0=<hex>` signature of `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(b"v0:");
    ctx.update(timestamp.as_bytes());
    ctx.update(b":");
    ctx.update(body);
    let tag = ctx.sign();
    format!("v0={}", crate::store::hex(tag.as_ref()))
}

/// Checks a request: its headers' values (`None` when absent), its raw body, and now (Unix
/// seconds).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), Refusal> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(Refusal::MissingHeaders);
    };
    let when: i64 = ts.trim().parse().map_err(|_| Refusal::BadTimestamp)?;
    if (now - when).abs() > WINDOW_SECS {
        return Err(Refusal::Stale);
    }
    let Some(hex) = sig.strip_prefix("v0=") else {
        return Err(Refusal::BadSignature);
    };
    let Some(tag) = crate::store::unhex(hex) else {
        return Err(Refusal::BadSignature);
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut msg = Vec::with_capacity(body.len() + ts.len() + 4);
    msg.extend_from_slice(b"v0:");
    msg.extend_from_slice(ts.as_bytes());
    msg.push(b':');
    msg.extend_from_slice(body);
    // hmac::verify compares in constant time.
    hmac::verify(&key, &msg, &tag).map_err(|_| Refusal::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's documented example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(sign(SECRET.as_bytes(), TS, BODY.as_bytes()), SIG);
        let now = 1531420618 + 10;
        assert_eq!(
            verify(SECRET.as_bytes(), Some(TS), Some(SIG), BODY.as_bytes(), now),
            Ok(())
        );
    }

    #[test]
    fn every_way_of_being_wrong_is_refused_with_its_reason() {
        let s = SECRET.as_bytes();
        let b = BODY.as_bytes();
        let now = 1531420618;
        let cases = [
            (None, Some(SIG), b, now, Refusal::MissingHeaders),
            (Some(TS), None, b, now, Refusal::MissingHeaders),
            (Some("yesterday"), Some(SIG), b, now, Refusal::BadTimestamp),
            (Some(TS), Some(SIG), b, now + 301, Refusal::Stale),
            (Some(TS), Some(SIG), b, now - 301, Refusal::Stale),
            (Some(TS), Some(SIG), &b[1..], now, Refusal::BadSignature),
            (Some(TS), Some(&SIG[3..]), b, now, Refusal::BadSignature),
            (Some(TS), Some("v0=zz"), b, now, Refusal::BadSignature),
            (Some(TS), Some("v0=abc"), b, now, Refusal::BadSignature),
            (Some(TS), Some("v1=a2114d57"), b, now, Refusal::BadSignature),
        ];
        for (ts, sig, body, now, want) in cases {
            assert_eq!(verify(s, ts, sig, body, now), Err(want), "{ts:?} {sig:?}");
        }
        assert_eq!(
            verify(b"another secret", Some(TS), Some(SIG), b, now),
            Err(Refusal::BadSignature)
        );
        // The edge of the window is inside it.
        assert_eq!(verify(s, Some(TS), Some(SIG), b, now + 300), Ok(()));
    }
}
