use serde_json::json;

use super::*;

#[test]
fn declarations_are_checked_and_a_slug_declared_twice_is_served_by_neither() {
    for (bad, says) in [
        (
            json!({"slug": "Bad Slug", "auth": {"type": "none"}}),
            "slug \"Bad Slug\"",
        ),
        (
            json!({"slug": "slack", "auth": {"type": "none"}}),
            "reserved",
        ),
        (
            json!({"slug": "a", "auth": {"type": "hmac"}}),
            "auth.secret",
        ),
        (
            json!({"slug": "a", "auth": {"type": "magic"}}),
            "auth must be",
        ),
        (
            json!({"slug": "a", "auth": {"type": "hmac", "secret": "S", "algorithm": "md5"}}),
            "sha256 or sha512",
        ),
        (
            json!({"slug": "a", "auth": {"type": "none"}, "trigger_key": "X"}),
            "trigger_key",
        ),
        (
            json!({"slug": "a", "auth": {"type": "none"}, "path": "/x"}),
            "unknown key \"path\"",
        ),
    ] {
        let e = parse("w", &json!([bad])).unwrap_err();
        assert!(e.starts_with("WEBHOOKS[0]: ") && e.contains(says), "{e}");
    }
    let a = parse(
        "one",
        &json!([{"slug": "x", "auth": {"type": "none"}}, {"slug": "y", "auth": {"type": "none"}}]),
    )
    .unwrap();
    let b = parse("two", &json!([{"slug": "x", "auth": {"type": "none"}}])).unwrap();
    let (map, errors) = registry(a.into_iter().chain(b).collect());
    assert_eq!(map.keys().collect::<Vec<_>>(), ["y"]);
    assert!(errors[0].contains("both one and two"), "{errors:?}");
}

#[test]
fn a_base64_hmac_with_another_header_and_prefix() {
    let hook = &parse(
        "w",
        &json!([{"slug": "b", "auth": {"type": "hmac", "secret": "K", "header": "X-Sig", "prefix": "", "encoding": "base64"}}]),
    )
    .unwrap()[0];
    let body = br#"{"n":1}"#;
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"k3y");
    let sig = base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, body).as_ref());
    let headers = vec![
        (
            "content-type".to_string(),
            "application/json; charset=utf-8".to_string(),
        ),
        ("x-sig".to_string(), sig),
    ];
    let req = Request {
        method: "POST",
        path: "/api/webhooks/b",
        query: "a=1",
        headers: &headers,
        body,
    };
    let (input, trigger) = accept(hook, &req, |n| (n == "K").then(|| "k3y".to_string())).unwrap();
    assert_eq!(input["webhook"]["headers"]["x-sig"], "[redacted]");
    assert_eq!(input["webhook"]["query"], "a=1");
    assert!(trigger.starts_with("webhook:b:") && trigger.len() == "webhook:b:".len() + 64);
    // Without the secret's value the server cannot check: 503, not a pass.
    assert_eq!(accept(hook, &req, |_| None).unwrap_err().0, 503);
    assert_eq!(
        accept(hook, &req, |_| Some("other".into())).unwrap_err().0,
        401
    );
}
