//! The primitives the credential transforms need, from aws-lc-rs: RS256 JWT assertions
//! (RFC 7515/7519, for RFC 7523 grants), HMAC, SHA-256 fingerprints, and text encodings.

use aws_lc_rs::{digest, hmac, rand as lc_rand, signature};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use policy::{Encoding, HmacAlgorithm};

/// Why a key could not be used. Holds no key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a PEM RSA private key (PKCS#8 or PKCS#1).
    #[error("not a PEM RSA private key")]
    NotRsaPem,
    /// The key could not be decoded (`key_encoding`).
    #[error("key could not be decoded")]
    Decode,
    /// Signing failed.
    #[error("signing failed")]
    Sign,
}

/// Signs `claims` as a compact RS256 JWT with the PEM RSA key `pem`.
pub fn jwt_rs256(
    pem: &[u8],
    kid: Option<&str>,
    claims: &serde_json::Value,
) -> Result<String, KeyError> {
    let der = rustls_pemfile::private_key(&mut &pem[..])
        .ok()
        .flatten()
        .ok_or(KeyError::NotRsaPem)?;
    let key = match &der {
        rustls::pki_types::PrivateKeyDer::Pkcs8(k) => {
            signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der())
        }
        rustls::pki_types::PrivateKeyDer::Pkcs1(k) => {
            signature::RsaKeyPair::from_der(k.secret_pkcs1_der())
        }
        _ => return Err(KeyError::NotRsaPem),
    }
    .map_err(|_| KeyError::NotRsaPem)?;
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &lc_rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| KeyError::Sign)?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// Decodes an HMAC key as configured.
pub fn decode_key(raw: &[u8], enc: Encoding) -> Result<Vec<u8>, KeyError> {
    match enc {
        Encoding::Raw => Ok(raw.to_vec()),
        Encoding::Base64 => STANDARD
            .decode(raw.trim_ascii())
            .map_err(|_| KeyError::Decode),
        Encoding::Hex => from_hex(raw.trim_ascii()).ok_or(KeyError::Decode),
    }
}

/// HMAC of `msg` under `key`.
pub fn hmac(alg: HmacAlgorithm, key: &[u8], msg: &[u8]) -> Vec<u8> {
    let alg = match alg {
        HmacAlgorithm::Sha256 => hmac::HMAC_SHA256,
        HmacAlgorithm::Sha512 => hmac::HMAC_SHA512,
        HmacAlgorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
    };
    hmac::sign(&hmac::Key::new(alg, key), msg).as_ref().to_vec()
}

/// Bytes as text: base64 (standard, padded) or lower-case hex.
pub fn encode(bytes: &[u8], enc: Encoding) -> String {
    match enc {
        Encoding::Hex => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        Encoding::Base64 | Encoding::Raw => STANDARD.encode(bytes),
    }
}

fn from_hex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// SHA-256 over length-prefixed parts: a fingerprint of credentials that never stores them.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        from_hex(s.as_bytes()).unwrap()
    }

    /// RFC 4231 test cases 1, 2 and 6 (a key longer than the block size).
    #[test]
    fn rfc4231_vectors() {
        let cases = [
            (
                unhex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"),
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
            ),
        ];
        for (key, msg, sha256, sha512) in cases {
            let h = |a| encode(&hmac(a, &key, &msg), Encoding::Hex);
            assert_eq!(h(HmacAlgorithm::Sha256), sha256);
            assert_eq!(h(HmacAlgorithm::Sha512), sha512);
        }
    }

    #[test]
    fn keys_decode_as_configured() {
        assert_eq!(decode_key(b"4a656665", Encoding::Hex).unwrap(), b"Jefe");
        assert_eq!(
            decode_key(b"SmVmZQ==\n", Encoding::Base64).unwrap(),
            b"Jefe"
        );
        assert!(decode_key(b"zz", Encoding::Hex).is_err());
        assert!(jwt_rs256(b"not a key", None, &serde_json::json!({})).is_err());
    }
}
