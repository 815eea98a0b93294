//! Upstream TLS (invariant 2: verified TLS upstream, never downgraded): origins served by
//! `openssl s_server` with certificates made here by rcgen, each broken in one way, all under
//! a CA the gateway trusts. Each is refused with 502 `upstream_tls_error` and a record whose
//! `error` names the failed check; a correct origin under the same CA is the positive control.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Env, Opts, curl, json};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use tokio::process::{Child, Command};

/// One origin: how its certificate is made and which `openssl s_server` flags it runs with.
struct Case {
    host: &'static str,
    cert: Leaf,
    flags: &'static [&'static str],
    /// The words the record's `error` must contain; `None` for the positive control.
    error: Option<&'static str>,
}

enum Leaf {
    Good,
    GoodRsa,
    Expired,
    WrongName,
    CommonNameOnly,
    SelfSigned,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            host: "good.test",
            cert: Leaf::Good,
            flags: &[],
            error: None,
        },
        Case {
            host: "expired.test",
            cert: Leaf::Expired,
            flags: &[],
            error: Some("expired"),
        },
        Case {
            host: "wrong-name.test",
            cert: Leaf::WrongName,
            flags: &[],
            error: Some("does not name this host"),
        },
        Case {
            host: "cn-only.test",
            cert: Leaf::CommonNameOnly,
            flags: &[],
            error: Some("does not name this host"),
        },
        Case {
            host: "self-signed.test",
            cert: Leaf::SelfSigned,
            flags: &[],
            error: Some("issuer is not trusted"),
        },
        Case {
            host: "tls10.test",
            cert: Leaf::Good,
            flags: &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"],
            error: Some("no TLS version and cipher suite in common"),
        },
        Case {
            host: "tls11.test",
            cert: Leaf::Good,
            flags: &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
            error: Some("no TLS version and cipher suite in common"),
        },
        // TLS 1.2 with only RSA key exchange (no forward secrecy) and CBC.
        Case {
            host: "weak-cipher.test",
            cert: Leaf::GoodRsa,
            flags: &["-tls1_2", "-cipher", "AES128-SHA:@SECLEVEL=0"],
            error: Some("no TLS version and cipher suite in common"),
        },
    ]
}

fn params(names: &[&str]) -> CertificateParams {
    CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap()
}

/// Writes `<host>.crt` and `<host>.key` for this case.
fn write_leaf(dir: &Path, case: &Case, ca: &Issuer<'_, KeyPair>) {
    let key = match case.cert {
        Leaf::GoodRsa => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
        _ => KeyPair::generate(),
    }
    .unwrap();
    let mut p = params(&[case.host]);
    match case.cert {
        Leaf::Good | Leaf::GoodRsa | Leaf::SelfSigned => {}
        Leaf::Expired => {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        Leaf::WrongName => p = params(&["somewhere-else.test"]),
        Leaf::CommonNameOnly => {
            p = params(&[]);
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, case.host);
            p.distinguished_name = dn;
        }
    }
    let cert = match case.cert {
        Leaf::SelfSigned => p.self_signed(&key),
        _ => p.signed_by(&key, ca),
    }
    .unwrap();
    std::fs::write(dir.join(format!("{}.crt", case.host)), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{}.key", case.host)), key.serialize_pem()).unwrap();
}

/// Starts `openssl s_server` for the case on a free port; returns it and the port.
async fn serve(dir: &Path, case: &Case) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .arg("s_server")
        .args(["-accept", &format!("127.0.0.1:{port}"), "-www", "-quiet"])
        .arg("-cert")
        .arg(dir.join(format!("{}.crt", case.host)))
        .arg("-key")
        .arg(dir.join(format!("{}.key", case.host)))
        .args(case.flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (child, port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("openssl s_server for {} did not start", case.host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_upstream_tls_is_refused_with_the_failed_check_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = params(&[]);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "upstream test CA");
    ca_params.distinguished_name = dn;
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let ca = Issuer::new(ca_params, ca_key);

    let mut servers = Vec::new();
    let mut pins = Vec::new();
    for case in &cases() {
        write_leaf(dir.path(), case, &ca);
        let (child, port) = serve(dir.path(), case).await;
        servers.push(child);
        pins.push((case.host.to_string(), format!("127.0.0.1:{port}")));
    }
    let env = Env::start(Opts {
        pins,
        ca_files: vec![ca_file.display().to_string()],
        ..Opts::default()
    })
    .await;
    for case in cases() {
        let mut args = env.to_https(case.host);
        args.push(format!("https://{}/", case.host));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, body, _) = curl(&env, &args).await;
        let Some(words) = case.error else {
            assert_eq!(
                code, 200,
                "{}: the positive control failed: {body}",
                case.host
            );
            continue;
        };
        assert_eq!(code, 502, "{}: {body}", case.host);
        assert_eq!(json(&body)["reason"], "upstream_tls_error", "{}", case.host);
        let rec = env.record(|r| r["host"] == case.host).await;
        let error = rec["error"].as_str().unwrap_or_default();
        assert!(error.contains(words), "{}: {rec:#}", case.host);
        assert_eq!(rec["action"], "error");
    }
    env.stop().await;
    drop(servers);
}
