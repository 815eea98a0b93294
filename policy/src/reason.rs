//! Why an exchange ended as it did: one stable code per outcome. Every audit record carries
//! one; the gateway's failures, the policy's decisions and `explain` all speak in these.
//! `docs/reason-codes.md` lists each with its action and what the client sees, and a test
//! fails when the two disagree.

use std::fmt;

/// Declares the enum, its codes and the list of all of them from one table.
macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $code:literal,)*) => {
        /// A stable reason code. Codes never change meaning; new ones are added.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in the order of `docs/reason-codes.md`.
            pub const ALL: &[Reason] = &[$(Reason::$variant,)*];

            /// The code as it appears in audit records, responses (`x-centaur-reason`) and
            /// the docs.
            pub fn code(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }
        }
    };
}

reasons! {
    /// A rule of every allowlist matched (`rule` names it).
    Allowed = "allowed",
    /// No rule matched, but the allowlist is in report mode (`warn: true`).
    WouldDeny = "would_deny",
    /// No allowlist rule matched.
    NotAllowlisted = "not_allowlisted",
    /// The policy has no allowlist: everything is denied (invariant 1).
    NoAllowlist = "no_allowlist",
    /// The client went away before the exchange finished.
    ClientCancel = "client_cancel",
    /// A resolved or pinned address is in a denied range, or is the gateway itself (invariant
    /// 2).
    UpstreamAddressDenied = "upstream_address_denied",
    /// The upstream name did not resolve.
    UpstreamResolveFailed = "upstream_resolve_failed",
    /// Every checked address refused the connection.
    UpstreamConnectFailed = "upstream_connect_failed",
    /// The TCP connection did not open within `upstream_connect_timeout`.
    UpstreamConnectTimeout = "upstream_connect_timeout",
    /// The upstream certificate did not verify, or its handshake failed (never downgraded);
    /// `error` says which check: expired, not valid yet, not naming the host (a CN-only
    /// certificate included), untrusted issuer, or no TLS version and cipher suite in common
    /// (TLS 1.0/1.1 or suites without forward secrecy).
    UpstreamTlsError = "upstream_tls_error",
    /// The upstream proxy (`proxy.upstream_proxy`) refused the CONNECT tunnel (403, 407 without
    /// or with wrong credentials, 502 …; the gateway's log has its status line) or broke it.
    UpstreamProxyError = "upstream_proxy_error",
    /// No response head within `upstream_response_header_timeout`.
    UpstreamResponseTimeout = "upstream_response_timeout",
    /// Another upstream protocol failure.
    UpstreamError = "upstream_error",
    /// The request carried a secret and the upstream answered with a content-coded body
    /// (`gzip`, `br`) although the gateway asked for `identity`: the scrubber cannot read it,
    /// so it is withheld (invariant 3).
    UpstreamEncodingUnscrubbable = "upstream_encoding_unscrubbable",
    /// `audit.durability: strict` and the record could not be written: the response is
    /// withheld.
    AuditUnavailable = "audit_unavailable",
    /// The upstream body failed midway.
    UpstreamBodyError = "upstream_body_error",
    /// The upstream agreed to upgrade the connection (WebSocket, `101`) but the client's or the
    /// upstream's upgraded connection never came.
    UpgradeFailed = "upgrade_failed",
    /// A `require: true` secret could not be read (the record names the secret, never its
    /// value).
    SecretUnavailable = "secret_unavailable",
    /// A `require: true` replace secret matched the request but no declared location held its
    /// placeholder.
    SecretPlaceholderMissing = "secret_placeholder_missing",
    /// A secret could not be placed (its value is not valid in a header or URI).
    SecretTransformFailed = "secret_transform_failed",
    /// A client library's own token request (Google token endpoint, metadata server, an
    /// `oauth_token` endpoint) answered by the gateway; nothing left.
    Stubbed = "stubbed",
    /// A transform must read the body (`match_body`, `hmac_sign`) and it is over
    /// `max_request_body_bytes`.
    BodyTooLarge = "body_too_large",
    /// The request body broke off or was malformed (a bad chunk size), while a transform read
    /// it or while it streamed upstream.
    BodyReadFailed = "body_read_failed",
    /// No access token could be minted; the transform's annotation has the sanitised cause.
    TokenUnavailable = "token_unavailable",
    /// `hmac_sign` would sign a body of unknown length and `allow_chunked_body` is off.
    ChunkedBodyNotAllowed = "chunked_body_not_allowed",
    /// An `hmac_sign` credential source failed.
    CredentialUnavailable = "credential_unavailable",
    /// The `hmac_sign` key is not valid in its `key_encoding`.
    KeyDecodeFailed = "key_decode_failed",
    /// `aws_auth` matched a request that carries no AWS Signature Version 4 (neither an
    /// `Authorization: AWS4-HMAC-SHA256 …` header nor `X-Amz-Credential` in the query).
    MissingSigv4 = "missing_sigv4",
    /// `mcp`: a `tools/call` of a tool not on the server's list (answered with a JSON-RPC
    /// error, HTTP 200; nothing sent).
    ToolNotAllowed = "tool_not_allowed",
    /// `mcp`: a `tools/call` whose arguments fail a `when` clause.
    ArgumentConstraint = "argument_constraint",
    /// `mcp`: a `POST` to an MCP server whose body is not JSON-RPC.
    MalformedJsonrpc = "malformed_jsonrpc",
    /// `aws_auth`: the client signed for a region outside `allowed_regions`.
    RegionNotAllowed = "region_not_allowed",
    /// `aws_auth`: the client signed for a service outside `allowed_services`.
    ServiceNotAllowed = "service_not_allowed",
    /// The request's Host is not the TLS server name.
    SniHostMismatch = "sni_host_mismatch",
    /// The request's Host is not the CONNECT/SOCKS target.
    TunnelHostMismatch = "tunnel_host_mismatch",
    /// No Host header and no absolute-form target.
    HostMissing = "host_missing",
    /// Host is not a valid name, or appears twice.
    HostInvalid = "host_invalid",
    /// Absolute-form target and Host header disagree.
    HostMismatch = "host_mismatch",
    /// The decoded path has `.` or `..` segments.
    PathDotSegments = "path_dot_segments",
    /// CONNECT on a listener that does not tunnel.
    MethodNotAllowed = "method_not_allowed",
    /// CONNECT target is not `host:port`.
    ConnectTargetInvalid = "connect_target_invalid",
    /// The request could not be parsed (bad request line, control characters, bad chunking, …).
    HttpMalformed = "http_malformed",
    /// The request head exceeds `max_header_bytes`.
    HttpHeadersTooLarge = "http_headers_too_large",
    /// The HTTP/2 connection broke the protocol (bad header names or values, invalid frames).
    Http2ProtocolError = "http2_protocol_error",
    /// The h2 library reset one HTTP/2 stream for the client's fault (a malformed request's
    /// HEADERS, a flow-control or frame-size violation, too many concurrent streams); the
    /// record's `error` names the stream and the error code. Nothing was forwarded.
    Http2StreamReset = "http2_stream_reset",
    /// No complete request head within `client_header_timeout` (from a new connection's start,
    /// or from the first byte of a later head on a kept-alive one).
    ClientHeaderTimeout = "client_header_timeout",
    /// No CONNECT/SOCKS5 handshake in time.
    HandshakeTimeout = "handshake_timeout",
    /// The ClientHello did not complete in time.
    TlsClientHelloTimeout = "tls_client_hello_timeout",
    /// The ClientHello exceeded 16 KiB.
    TlsClientHelloTooLarge = "tls_client_hello_too_large",
    /// Not a valid ClientHello (includes SNI values such as `host:443`).
    TlsClientHelloInvalid = "tls_client_hello_invalid",
    /// The client closed during the ClientHello.
    TlsClientHelloIncomplete = "tls_client_hello_incomplete",
    /// No SNI (for example a client connecting to an IP address).
    TlsSniMissing = "tls_sni_missing",
    /// SNI is not a valid host name.
    TlsSniInvalid = "tls_sni_invalid",
    /// SNI differs from the CONNECT/SOCKS target.
    TlsSniTunnelMismatch = "tls_sni_tunnel_mismatch",
    /// The client aborted the handshake (typically: it does not trust the gateway CA).
    TlsHandshakeFailed = "tls_handshake_failed",
    /// The gateway could not issue a leaf certificate.
    LeafIssueFailed = "leaf_issue_failed",
    /// New names arrived faster than `tls.leaf_issue_rate`: no leaf was issued.
    LeafRateLimited = "leaf_rate_limited",
    /// A tunnel carried neither TLS nor HTTP.
    TunnelProtocolUnknown = "tunnel_protocol_unknown",
    /// The SOCKS5 client offers no no-auth method.
    SocksNoAcceptableAuth = "socks_no_acceptable_auth",
    /// The SOCKS5 request has a bad version.
    SocksBadVersion = "socks_bad_version",
    /// A SOCKS5 command other than CONNECT.
    SocksCommandUnsupported = "socks_command_unsupported",
    /// An unknown SOCKS5 address type.
    SocksAddressTypeUnsupported = "socks_address_type_unsupported",
    /// The SOCKS5 domain is not a valid host name.
    SocksBadAddress = "socks_bad_address",
    /// The SOCKS5 handshake was cut short.
    SocksIncomplete = "socks_incomplete",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The codes of `docs/reason-codes.md`'s table, in order.
    fn documented() -> Vec<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reason-codes.md");
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(code, _)| code.to_string()))
            .collect()
    }

    #[test]
    fn the_docs_list_exactly_the_reasons_the_code_has() {
        let docs = documented();
        let code: Vec<String> = Reason::ALL.iter().map(|r| r.code().to_string()).collect();
        let (d, c): (BTreeSet<_>, BTreeSet<_>) = (docs.iter().collect(), code.iter().collect());
        let undocumented: Vec<_> = c.difference(&d).collect();
        let unknown: Vec<_> = d.difference(&c).collect();
        assert!(
            undocumented.is_empty(),
            "not in docs/reason-codes.md: {undocumented:?}"
        );
        assert!(
            unknown.is_empty(),
            "in the docs but not in Reason: {unknown:?}"
        );
        assert_eq!(docs, code, "the docs list the reasons in another order");
    }

    #[test]
    fn codes_are_unique_snake_case_words() {
        let mut seen = BTreeSet::new();
        for r in Reason::ALL {
            let c = r.code();
            assert!(seen.insert(c), "{c} twice");
            assert!(
                c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{c}"
            );
            assert_eq!(r.to_string(), c);
        }
    }
}
