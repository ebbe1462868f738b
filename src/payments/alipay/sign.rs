//! Alipay's RSA2 scheme (open platform API 2.0): which parameters are signed,
//! how, and where in an answer the signed text lies. The rules are those of
//! the official SDKs, whose published examples the tests reproduce:
//! alipay-sdk-java-all `com/alipay/api/internal/util/AlipaySignature.java`
//! (`getSignContent`, `getSignCheckContentV1`, `extractSignContent`) and
//! alipay-sdk-nodejs-all `src/util.ts` (`sign`), `src/alipay.ts`
//! (`checkNotifySign`, `getSignStr`, `checkResponseSign`).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

/// Parameters by name. Sorted by byte order, which is the SDKs' order
/// (Java sorts UTF-16 units; every Alipay parameter name is ASCII).
pub type Params = BTreeMap<String, String>;

/// RSA2 needs a 2048-bit key (the open platform refuses shorter app keys).
const MIN_KEY_BITS: usize = 2048;
/// Bigger than any key Alipay issues; bounds the cost of a hostile key file.
const MAX_KEY_BITS: usize = 4096;

/// The text that is signed: every parameter but those in `skip`, empty
/// names and values left out, sorted, `k=v` joined by `&`, nothing encoded.
/// Requests skip only `sign` (their `sign_type` is signed: the gateway's own
/// string in its `isv.invalid-signature` answers ends `&sign_type=RSA2&...`);
/// asynchronous notifications skip `sign` and `sign_type` (the docs'
/// "除去sign、sign_type两个参数外"; Java `getSignCheckContentV1`).
pub fn sign_content(params: &Params, skip: &[&str]) -> String {
    let mut out = String::new();
    for (k, v) in params {
        if k.is_empty() || v.is_empty() || skip.contains(&k.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// SHA256withRSA (PKCS#1 v1.5) over the UTF-8 bytes, base64 (`RSA2`).
/// Blinded with the OS RNG; PKCS#1 v1.5 padding is deterministic, so the
/// signature is the same as an unblinded one (and as the SDKs').
pub fn sign(key: &SigningKey<Sha256>, content: &str) -> Result<String, String> {
    let sig = key
        .try_sign_with_rng(&mut rsa::rand_core::OsRng, content.as_bytes())
        .map_err(|_| "signing failed".to_owned())?;
    Ok(B64.encode(sig.to_bytes()))
}

/// Whether `sign` (base64) is Alipay's RSA2 signature of `content`.
pub fn verify(key: &VerifyingKey<Sha256>, content: &str, sign: &str) -> Result<(), String> {
    let raw = B64
        .decode(sign.as_bytes())
        .map_err(|_| "the sign is not base64".to_owned())?;
    let sig = Signature::try_from(raw.as_slice()).map_err(|_| "the sign is not a signature")?;
    key.verify(content.as_bytes(), &sig)
        .map_err(|_| "the sign does not match".to_owned())
}

/// Verifies the signed text of an answer. Like alipay-sdk-java-all
/// (`AbstractAlipayClient.checkResponseSign`), once more with `\/` read as
/// `/`: some answers carry JSON-escaped slashes that were not escaped when
/// Alipay signed them.
pub fn verify_answer(key: &VerifyingKey<Sha256>, content: &str, sign: &str) -> Result<(), String> {
    match verify(key, content, sign) {
        Err(_) if content.contains("\\/") => verify(key, &content.replace("\\/", "/"), sign),
        other => other,
    }
}

/// The signed text of an answer: the object under `"{name}":` exactly as
/// sent, from its `{` to the matching `}` (braces inside strings skipped),
/// as Java's `extractSignContent` cuts it. `None` when there is no such object.
pub fn answer_content<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!("\"{name}\"");
    let after_key = &body[body.find(&needle)? + needle.len()..];
    let value = after_key.trim_start().strip_prefix(':')?.trim_start();
    if !value.starts_with('{') {
        return None;
    }
    let begin = body.len() - value.len();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, b) in value.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&body[begin..begin + i + 1]);
                }
            }
            _ => {}
        }
    }
    None
}

/// An `application/x-www-form-urlencoded` body, strictly: UTF-8 after
/// decoding, no repeated name (which of two values would have been signed?),
/// no empty name. Errors name no value (a notification carries the buyer's
/// account).
pub fn parse_form(body: &[u8], max_params: usize) -> Result<Params, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    let mut out = Params::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)?;
        if k.is_empty() {
            return Err("a parameter without a name".into());
        }
        let v = percent_decode(v)?;
        if out.len() == max_params {
            return Err(format!("more than {max_params} parameters"));
        }
        if out.contains_key(&k) {
            return Err(format!("parameter {:?} given twice", short(&k)));
        }
        out.insert(k, v);
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: Option<u8>| b.and_then(|b| char::from(b).to_digit(16));
                match (hex(bytes.next()), hex(bytes.next())) {
                    // Two hex digits: at most 0xff.
                    (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                    _ => return Err("a broken %-escape".into()),
                }
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| "a parameter is not UTF-8 once decoded".into())
}

/// A name from hostile input, cut short for an error message.
pub fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The app's private key: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA
/// PRIVATE KEY`) PEM, or the bare base64 of either, which is what Alipay's
/// key tool writes. Errors never quote the key.
pub fn parse_private_key(text: &str) -> Result<RsaPrivateKey, String> {
    let (label, der) = unarmor(text)?;
    let key = match label.as_deref() {
        Some("PRIVATE KEY") => {
            RsaPrivateKey::from_pkcs8_der(&der).map_err(|_| "not a PKCS#8 RSA key")?
        }
        Some("RSA PRIVATE KEY") => {
            RsaPrivateKey::from_pkcs1_der(&der).map_err(|_| "not a PKCS#1 RSA key")?
        }
        Some(other) => {
            return Err(format!(
                "a PEM {:?} is not an RSA private key",
                short(other)
            ))
        }
        None => RsaPrivateKey::from_pkcs8_der(&der)
            .or_else(|_| RsaPrivateKey::from_pkcs1_der(&der))
            .map_err(|_| "neither a PKCS#8 nor a PKCS#1 RSA private key")?,
    };
    check_size(key.size())?;
    Ok(key)
}

/// Alipay's public key (支付宝公钥, not a certificate): SPKI (`BEGIN PUBLIC
/// KEY`) or PKCS#1 (`BEGIN RSA PUBLIC KEY`) PEM, or the bare base64 the open
/// platform shows.
pub fn parse_public_key(text: &str) -> Result<RsaPublicKey, String> {
    let (label, der) = unarmor(text)?;
    let key = match label.as_deref() {
        Some("PUBLIC KEY") => {
            RsaPublicKey::from_public_key_der(&der).map_err(|_| "not an RSA public key")?
        }
        Some("RSA PUBLIC KEY") => {
            RsaPublicKey::from_pkcs1_der(&der).map_err(|_| "not a PKCS#1 RSA public key")?
        }
        Some("CERTIFICATE") => {
            return Err("a certificate: the public-key-certificate mode is not supported, give Alipay's public key".into())
        }
        Some(other) => return Err(format!("a PEM {:?} is not an RSA public key", short(other))),
        None => RsaPublicKey::from_public_key_der(&der)
            .or_else(|_| RsaPublicKey::from_pkcs1_der(&der))
            .map_err(|_| "not an RSA public key")?,
    };
    check_size(key.size())?;
    Ok(key)
}

fn check_size(bytes: usize) -> Result<(), String> {
    let bits = bytes * 8;
    if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
        return Err(format!(
            "a {bits}-bit key; RSA2 takes {MIN_KEY_BITS} to {MAX_KEY_BITS} bits"
        ));
    }
    Ok(())
}

/// PEM armour (any line width, CRLF, a BOM) or bare base64, to DER. Our own
/// reading because keys copied from Alipay's pages come on one long line.
fn unarmor(text: &str) -> Result<(Option<String>, Vec<u8>), String> {
    let text = text.trim_start_matches('\u{feff}').trim();
    let (label, body) = match text.strip_prefix("-----BEGIN ") {
        Some(rest) => {
            let (label, rest) = rest.split_once("-----").ok_or("a broken PEM header")?;
            let footer = format!("-----END {label}-----");
            let (body, tail) = rest.split_once(&footer).ok_or("no PEM footer")?;
            if !tail.trim().is_empty() {
                return Err("text after the PEM footer".into());
            }
            if body.contains(':') {
                return Err("an encrypted PEM (Proc-Type headers) is not supported".into());
            }
            (Some(label.to_owned()), body)
        }
        None => (None, text),
    };
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if b64.is_empty() {
        return Err("empty".into());
    }
    let der = B64.decode(b64.as_bytes()).map_err(|_| "not base64")?;
    Ok((label, der))
}

#[cfg(test)]
pub(super) mod tests {
    //! Published examples, reproduced byte for byte. Sources:
    //! - alipay-sdk-java-all `src/test/java/com/alipay/api/RSACheckTest.java`
    //!   with the `ProdCert` key of `src/test/resources/fixture/privateKey.json`
    //!   (its certificate `appCertPublicKey_2019091767145019.crt` holds the
    //!   matching public key): a signing string and its RSA2 signature.
    //! - alipay-sdk-nodejs-all `test/alipay.test.ts` (`checkNotifySign`,
    //!   `getSignStr`, `checkResponseSign`) and `test/fixtures/*.pem`.
    //! - The open platform's "自行实现签名" page (its `menu.add` example) and
    //!   "异步通知验签" page (its `大乐透2.1` notification): signing strings only,
    //!   their signatures are RSA1024 under keys never published.

    use super::*;
    use rsa::signature::Keypair;

    /// alipay-sdk-java-all `privateKey.json`, `ProdCert`.
    pub(crate) const JAVA_SDK_PROD_CERT_KEY: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCO5ajRITPs5rqH3bsMUQvx3gHGFtUtf2JqERBe9RFdm7eMXsXLNKd4TxhMTNSF7q+xxGX3NY7Kvu1NpIUaDRFbGnQWTLFT07XN2oroh1jf4FIkm+LjP4ZwEUElLdTO5hF8aSUc9JFibElKo3MdgaL7tNHBhWyGRl7/x/OkMwXz6UXfagE99K30omW9wo7YnlTE6utMJliHXfP9a2aRsvhBFwRhpFzkKBkwYFF6H0CM8K1ooAEzbf/jYMetLjjTHiUy5NUWKPtRf1doljYLBAqoVOtvN4kOknI5lIazlVbodtEzkmhcdsXMzQtQsOaj/oRrSE52LhiEw1cUoaNZPtOFAgMBAAECggEAYwQ4alE7jdiDQEogpnQydrKDQCPqK9Cs/Ro94c6m7dpM4XN6U0h1EySbjaNfUD8Id4HDtfziqRKLlNV/dYHAmQRHlHwoFBILVE0vG9lNeDQUN1HdceI+4cDTB1Qutf8t9qtVEC9X3n9yecmwpq2BpjCxeAtgG9r/UPXYmdrRMSVWGp/bpGjmbhm1EtEtCPKjkzSC0WdALvFosK1xnjHFwCcT+R4r2N7GKE0HyvjP0PQFRuR4/7oA4MuLhgzLfxbeWS8sDci1PhW7PolSVb1jp0v7HQ85qtx3NCgezBqAc+OtpmM3ZN/DUz062IxJFs9Rhl77PiRyJegULSuOBoYtsQKBgQDFDThfBLzByYCV7Oca5IUODyT7wiKBUhC6qBuNWmfEsGfGMw06d2twemFG98/KBDV8kcYGK5XL/6dpsPDEZFPV65vc7A9f2KnglaFyaPKduA8msRaxxLp5Oj/Nwuvnd0rTL2TPK0t8JH1oo8LDdAvh449P89yzTqB3L8+ioq7XTwKBgQC5pSE0hUYFsx/9bgMHB4PuN4r1WJNhGy5J5SQABmklnnUWiiCtt0rE23//tT7UICB4AqePt+Qa7zjEjV1DTIZccmPuX2yje9ayZbPXJLJT/tGawBlzuO5aLjbfkMDQy67nV8NE8rZ7c5aQLNsv3XA1fucwLauc2XJkvwHJ88Jy6wKBgQC5hhvn4ibxcQ0emwBvom3fccTJP9uK1EAp7TKboF2IounhgplWza6bJK3HynOZaOMO2JSPpKORgK8XZF8bGLaR9xU1KA/FltFCQL7TYBnlArFJJXwPfQBwOLZvvLCsqfUJ5lpMbx/Pzu9AAMbTjMPPNpfsl9XYABQ2gw5DulVRIwKBgF0x7I11KkXKOpD7HUH2H+ECuRuZr8Lb5kzqXzwz+60K8zSxet46WaqhloxD7JqI1kPo8T1Qz45F8XWakesrC3h1ZH1SIjOgA5PjQnkKzwsjrQ3GygAyIlXbRWjOPj2TQuaYRErknX8z863FFvPccmwonN6uzqwa7TZuPPOpD0CpAoGAG8HpnPrWT93skha2o9CT2ISnptlAts6a2wcMGrKgM77zQiFpR/P/eHcJTyJdlp8ap6sEGIwQM430CqR41Za/0L/uRkbGi2gjBcdz+2OlyvsWIhPAWAGqI4lYB7K/NWtzSBvI8Zdzw4brAgH9GrbIBqd/VV81KXf13kBnsRjBwA0=";

    /// alipay-sdk-nodejs-all `test/fixtures/alipay-public-key.pem` (one long line).
    const NODE_SDK_ALIPAY_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAk7LzhmMa2c4qQd4fqAqenfbuFoA7stPKvoS1LrZEsVnOOGUUjwoa1oU9xsSPjcOWhIerU/VAN4J95GIAXx59ipcleIyfLn2FhHXPgLJpvo+b2jJFyn/1/DbeJDh+0yDVAOf50Z7HhI0mdUhFMkXlT7BU0ZMtJf/TmISFEfhDU/w6qFd6D42L97byAkq0K6LroglSVF24GqJEa7hSeUIkZWj7RasykXrc2uVJ1+ejkXE0LyPxa2AHykMGbJLf5SiZvaNzUZgnKIR36mLOHpQ/2JCXxhXZYUWHzy0kMH54JcUEeksFWBYLGvLjV1phbcUIc3Q76tIuqApY6E222OoZZQIDAQAB\n-----END PUBLIC KEY-----";

    /// alipay-sdk-nodejs-all `test/alipay.test.ts`, `notifyAlipayPublicKeyV1` (bare base64).
    const NODE_SDK_NOTIFY_KEY_V1: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqObrdC7hrgAVM98tK0nv3hSQRGGKT4lBsQjHiGjeYZjOPIPHR5knm2jnnz/YGIXIofVHkA/tAlBAd5DrY7YpvI4tP5EONLtZKC2ghBMx7McI2wRD0xiqzxOQr1FuhZGJ8/AUokBzJrzY+aGX2xcOrxFYRlFilvVLTXg4LWjR1tdPkO6+i7wQZAIVMClPkwVRZEbaERRHlKqTzv2gGv5rDU8gRoe1LeaN+6BlbTqHWkQcNCUNrA8C6l17XAXGKDsm/9TFWwO8EPHHHCaQdjtV5/FdcWIt+L8SR1ss7EXTjYDFtxcKVv9rEoY1lX8T4mX+GbXfZHraG5NCF1+XioL5JwIDAQAB";

    /// alipay-sdk-nodejs-all `test/fixtures/alipay-notify-sign-public-key-v2.pem`.
    const NODE_SDK_NOTIFY_KEY_V2: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAk6DCsBIUhWriFohzRV8F\nic6oQWNnLKKILNk97VU5qcHEuxYzCujKoyva5gy1170mFJw4IcgJF8AyS7iDUwzA\nwF4Pp9CpWxDhUhe7mdQJhjBmvTcPLGFFrzlj6unO5lAcbdwaxPUtSxOaNxPJGrTK\n/wnKQSbjTMMltp1J68q2Tfgrsn/NdZ6lrxO9rvmky8kowqaH5NjntyHO59jCGabM\nj5sI14z8N61wB/QuIJrDuzIPMPrSNbq0cOWcSCDG09oUHTp9fk7suDB8UiFcmVTX\nOvK3d4HbeX8V9YsEMxrwxEoYgRRj6K2qrC6oxw480cqf2ueumCmHg6xrcgkyXK81\nhwIDAQAB\n-----END PUBLIC KEY-----";

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn java_sdk_key() -> SigningKey<Sha256> {
        SigningKey::new(parse_private_key(JAVA_SDK_PROD_CERT_KEY).expect("fixture key"))
    }

    fn verifying(pem: &str) -> VerifyingKey<Sha256> {
        VerifyingKey::new(parse_public_key(pem).expect("fixture key"))
    }

    /// RSACheckTest `should_pass_rsa_check_when_sign_type_is_rsa2`: the SDK
    /// verifies it with `rsaCheckV2` (sign_type signed), the request rule.
    #[test]
    fn request_signature_reproduces_the_java_sdk_rsa2_vector() {
        let p = params(&[
            ("method", "koubei.marketing.data.indicator.query"),
            ("app_id", "2019090366875133"),
            ("sign_type", "RSA2"),
        ]);
        let content = sign_content(&p, &["sign"]);
        assert_eq!(
            content,
            "app_id=2019090366875133&method=koubei.marketing.data.indicator.query&sign_type=RSA2"
        );
        let expected = "JzoDc8VxY1/w6yN9WdWV10aipS3YcRpK+jw4xfLybf90ZK9L3AHLUJbNLWVnHW3IuLoJbBeSGVxSbPBhe4ggPklcYUkPowgtlZ6YlthuQDtjF23h2obXuXkQRd+RPbDWvOA5AYQjsKH8uSHil5aRARewPIPhukl9Mn4HEovUccsBR/RirQFSGmGYiMM0zvhVSR7pXZDEhiADzvzAkvVVTI1/HbNqcoBU4ctSPAGsuDPO/mah1+IwGQAuPP6xoEPL+3zQ0wztQCwHT2o8aQmxFJ9a09q8ybRprHaNjCgTaLDeTWE0o1pllZIE8c7wnG3cOuj6quYjTcQyLm6P4M87Zw==";
        assert_eq!(sign(&java_sdk_key(), &content).expect("sign"), expected);
        let public = java_sdk_key().verifying_key();
        assert_eq!(verify(&public, &content, expected), Ok(()));
    }

    /// RSACheckTest `should_pass_rsa_check_when_charset_is_utf8`: the string
    /// is signed as UTF-8.
    #[test]
    fn request_signature_reproduces_the_java_sdk_utf8_vector() {
        let p = params(&[
            ("method", "koubei.marketing.data.indicator.query"),
            ("app_id", "2019090366875133"),
            ("extra", "中文测试"),
            ("sign_type", "RSA2"),
        ]);
        let content = sign_content(&p, &["sign"]);
        assert_eq!(
            content,
            "app_id=2019090366875133&extra=中文测试&method=koubei.marketing.data.indicator.query&sign_type=RSA2"
        );
        assert_eq!(
            sign(&java_sdk_key(), &content).expect("sign"),
            "KrRGUY3/2JX3KtlLgus8CbK0xuUIBDCpOdJkVzJDefez6HvlA8RA6uCVj2rrMd7DgVfarG5SROdSnkZbf8MLKHbVoFqi9w0QCvto9mc8n3ezfWejZECJVCZhbJ3OslB+4gij9+F70usrnCNEJZm02ntyNdVzcqMbgdRMB93BJIRC1jjmCotpXgXWrRdTb/SfhIAkoHqgGi2aCUHuLDInLGZCn8NeziGWMnFOic6/sE/nMpwriOmwLb2nyzD0fGiolwuuxlOGMcBHAb22J8XqchFHyCpbs2A/rWdJMjhUfqsErbtZQM93fi1xfL2pUa9RMWX0Q81Qk7iSEeHCR+NGyQ=="
        );
    }

    /// RSACheckTest `..._rsa3`: an empty name and an empty value are left out.
    #[test]
    fn empty_names_and_values_are_not_signed() {
        let p = params(&[("method", "m"), ("app_id", "1"), ("", "test"), ("test", "")]);
        assert_eq!(sign_content(&p, &["sign"]), "app_id=1&method=m");
    }

    /// The open platform's "自行实现签名" example (alipay.mobile.public.menu.add).
    #[test]
    fn request_signing_string_reproduces_the_docs_example() {
        let biz = r#"{"button":[{"actionParam":"ZFB_HFCZ","actionType":"out","name":"话费充值"},{"name":"查询","subButton":[{"actionParam":"ZFB_YECX","actionType":"out","name":"余额查询"},{"actionParam":"ZFB_LLCX","actionType":"out","name":"流量查询"},{"actionParam":"ZFB_HFCX","actionType":"out","name":"话费查询"}]},{"actionParam":"http://m.alipay.com","actionType":"link","name":"最新优惠"}]}"#;
        let p = params(&[
            ("app_id", "2014072300007148"),
            ("method", "alipay.mobile.public.menu.add"),
            ("charset", "GBK"),
            ("sign_type", "RSA2"),
            ("timestamp", "2014-07-24 03:07:50"),
            ("biz_content", biz),
            ("sign", "e9zEAe4TTQ4LPLQvETPoLGXTiURcxiAKfMVQ6Hrrsx2hmyIEGvSfAQzbLxHrhyZ48wOJXTsD4FPnt+YGdK57+fP1BCbf9rIVycfjhYCqlFhbTu9pFnZgT55W+xbAFb9y7vL0MyAxwXUXvZtQVqEwW7pURtKilbcBTEW7TAxzgro="),
            ("version", "1.0"),
        ]);
        assert_eq!(
            sign_content(&p, &["sign"]),
            format!("app_id=2014072300007148&biz_content={biz}&charset=GBK&method=alipay.mobile.public.menu.add&sign_type=RSA2&timestamp=2014-07-24 03:07:50&version=1.0")
        );
    }

    /// The open platform's "异步通知验签" example: the notification as its
    /// form body, and the string the docs say is verified. The docs' string
    /// leaves out three parameters its own notification carries (gmt_create,
    /// notify_id, seller_id): with those removed it is reproduced exactly.
    #[test]
    fn notification_signing_string_reproduces_the_docs_example() {
        let body = "total_amount=2.00&buyer_id=2088102116773037&body=%E5%A4%A7%E4%B9%90%E9%80%8F2.1&trade_no=2016071921001003030200089909&refund_fee=0.00&notify_time=2016-07-19+14%3A10%3A49&subject=%E5%A4%A7%E4%B9%90%E9%80%8F2.1&sign_type=RSA2&charset=utf-8&notify_type=trade_status_sync&out_trade_no=0719141034-6418&gmt_close=2016-07-19+14%3A10%3A46&gmt_payment=2016-07-19+14%3A10%3A47&trade_status=TRADE_SUCCESS&version=1.0&sign=kPbQIjX%2BxQc8F0%2FA6%2FAocELIjhhZnGbcBN6G4MM%2FHmfWL4ZiHM6fWl5NQhzXJusaklZ1LFuMo%2BlHQUELAYeugH8LYFvxnNajOvZhuxNFbN2LhF0l%2FKL8ANtj8oyPM4NN7Qft2kWJTDJUpQOzCzNnV9hDxh5AaT9FPqRS6ZKxnzM%3D&gmt_create=2016-07-19+14%3A10%3A44&app_id=2015102700040153&seller_id=2088102119685838&notify_id=4a91b7a78a503640467525113fb7d8bg8e";
        let mut p = parse_form(body.as_bytes(), 100).expect("form");
        for left_out in ["gmt_create", "notify_id", "seller_id"] {
            p.remove(left_out);
        }
        assert_eq!(
            sign_content(&p, &["sign", "sign_type"]),
            "app_id=2015102700040153&body=大乐透2.1&buyer_id=2088102116773037&charset=utf-8&gmt_close=2016-07-19 14:10:46&gmt_payment=2016-07-19 14:10:47&notify_time=2016-07-19 14:10:49&notify_type=trade_status_sync&out_trade_no=0719141034-6418&refund_fee=0.00&subject=大乐透2.1&total_amount=2.00&trade_no=2016071921001003030200089909&trade_status=TRADE_SUCCESS&version=1.0"
        );
    }

    /// A trade notification the Node SDK verifies with sign_type removed
    /// (`verify sign should delete sign_type`), as a form body.
    pub(crate) const NODE_SDK_TRADE_NOTIFY: &[(&str, &str)] = &[
        ("gmt_create", "2019-08-15 15:56:22"),
        ("charset", "utf-8"),
        ("seller_email", "z97-yuquerevenue@service.aliyun.com"),
        ("subject", "语雀空间 500人规模"),
        ("sign", "QfTb8tqE1BMhS5qAnXtvsF3/jBkEvu9q9en0pdbBUDDjvKycZhQb7h8GDs4FKfi049PynaNuatxSgLb/nLWZpXyyh0LEWdK2S6Ri7nPwrVgOs08zugLO20vOQz44y3ti2Ncm8/wZts1Fr2gZ7pShnVX3d1B50hbsXnObT1r/U8ONNQjWXd0HIul4TG+Q3fm3svmSvFEy0WnzuhcyHPX5Gm4ELNctL6Qd5YniGJFNcc7kopHYtI/XD9YCKCH6Ct02rzUs9i11C9CsadtZn+WhxF26Dqt9sGEFajkJ8cxUTLi8+VCpLHsgPE8P0y095uQcDdK0YjCh4x7wVSov+lrmOQ=="),
        ("buyer_id", "2088102534368455"),
        ("invoice_amount", "0.10"),
        ("notify_id", "2019081500222155624068450559358070"),
        ("fund_bill_list", r#"[{"amount":"0.10","fundChannel":"ALIPAYACCOUNT"}]"#),
        ("notify_type", "trade_status_sync"),
        ("trade_status", "TRADE_SUCCESS"),
        ("receipt_amount", "0.10"),
        ("buyer_pay_amount", "0.10"),
        ("sign_type", "RSA2"),
        ("app_id", "2019073166072302"),
        ("seller_id", "2088531891668739"),
        ("gmt_payment", "2019-08-15 15:56:24"),
        ("notify_time", "2019-08-15 15:56:25"),
        ("version", "1.0"),
        ("out_trade_no", "20190815155618536-564-57"),
        ("total_amount", "0.10"),
        ("trade_no", "2019081522001468450512505578"),
        ("auth_app_id", "2019073166072302"),
        ("buyer_logon_id", "xud***@126.com"),
        ("point_amount", "0.00"),
    ];

    pub(crate) fn node_sdk_notify_key() -> VerifyingKey<Sha256> {
        verifying(NODE_SDK_NOTIFY_KEY_V1)
    }

    #[test]
    fn notification_rule_verifies_the_node_sdk_trade_notification() {
        let key = node_sdk_notify_key();
        let p = params(NODE_SDK_TRADE_NOTIFY);
        let content = sign_content(&p, &["sign", "sign_type"]);
        assert!(
            content.starts_with("app_id=2019073166072302&auth_app_id=2019073166072302&buyer_id=")
        );
        assert_eq!(verify(&key, &content, &p["sign"]), Ok(()));
        // The request rule (sign_type signed) does not verify it: the two
        // rules really differ, and notifications take the first.
        assert!(verify(&key, &sign_content(&p, &["sign"]), &p["sign"]).is_err());
        let mut changed = p.clone();
        changed.insert("total_amount".into(), "0.11".into());
        assert!(verify(
            &key,
            &sign_content(&changed, &["sign", "sign_type"]),
            &p["sign"]
        )
        .is_err());
    }

    /// Node SDK `verify fail`: a notification of another app under this key.
    #[test]
    fn notification_rule_rejects_the_node_sdk_failing_example() {
        let p = params(&[
            ("app_id", "2018121762595097"),
            ("auth_app_id", "2018121762595097"),
            ("buyer_id", "2088512613526436"),
            ("buyer_logon_id", "152****6706"),
            ("buyer_pay_amount", "0.01"),
            ("charset", "utf-8"),
            ("fund_bill_list", r#"[{"amount":"0.01","fundChannel":"PCREDIT"}]"#),
            ("gmt_create", "2019-05-23 14:13:56"),
            ("gmt_payment", "2019-05-23 14:17:13"),
            ("invoice_amount", "0.01"),
            ("notify_id", "2019052300222141714026431019971405"),
            ("notify_time", "2019-05-23 14:17:14"),
            ("notify_type", "trade_status_sync"),
            ("out_trade_no", "tpxy23962362669658"),
            ("point_amount", "0.00"),
            ("receipt_amount", "0.01"),
            ("seller_email", "myapp@alitest.com"),
            ("seller_id", "2088331578818800"),
            ("sign", "T946S2qyNFAXLhAaRgNMmatxH6SO3MyWYFnTamQOgW1iAcheL/Zz+VoizwvEc6mTEwYewvvKS1wNkMQ1oEajMUHv9+cXQ9IFvU/qKS9Ktvw5xHvCaK0fj7LsVcQ7VxfyT3kSvXUDfKDP4cHSPuSZKwM2ybkzr53bIH9OUTpTQd2d3J0rbdf76OoUt+XF9vwqj7OVE7AGjH2HPWp842DgL/YVy4qeA9N2uFKRevT3YUskjaRxuI/E66reNjTMFhbjEqGLKvMcDD4BaQXnibq9ojAj60589fBwzKk3yWsVQmqGfksMQoheVMtZ3lAw4o2ty3TFngbVFFLwgx8FDpBZ9Q=="),
            ("sign_type", "RSA2"),
            ("subject", "tpxy2222896485"),
            ("total_amount", "0.01"),
            ("trade_no", "111111112019052322001426431037869358"),
            ("trade_status", "TRADE_SUCCESS"),
            ("version", "1.0"),
        ]);
        let content = sign_content(&p, &["sign", "sign_type"]);
        assert!(verify(&node_sdk_notify_key(), &content, &p["sign"]).is_err());
    }

    /// Node SDK `verify sign should not delete sign_type`: a service-market
    /// message (not a trade notification) is signed with its sign_type, the
    /// Java `rsaCheckV2` rule. Trade notifications never are.
    #[test]
    fn service_market_messages_sign_their_sign_type_unlike_trade_notifications() {
        let p = params(&[
            ("app_id", "2017122801303261"),
            ("charset", "UTF-8"),
            ("commodity_order_id", "2019030800000018079639"),
            ("contactor", "技术支持测试的公司"),
            ("merchant_pid", "2088721996721370"),
            ("method", "alipay.open.servicemarket.order.notify"),
            ("name", "技术支持测试的公司"),
            ("notify_id", "2019030800222102023008121054923345"),
            ("notify_time", "2019-03-08 10:20:23"),
            ("notify_type", "servicemarket_order_notify"),
            ("order_item_num", "1"),
            ("order_ticket", "29b1c37d99ab48c5bd5bdaeaeaefbB37"),
            ("order_time", "2019-03-08 10:20:08"),
            ("phone", "17826894615"),
            ("service_code", "58621634"),
            ("sign", "MsK5SCw8oqLw4f0hiNSd5OVGXxBY3wnQeT8vn5PklJSZFWSZbK4hQbNvkp4ZezeXQH514cEv0ul6Qow8yh6e6yM06LfEL+EZjcpZ0nxzFGRNQ5qq2AUc1OaXQdk92AGvxh+Iq4NGpPQFBd4D8EBJa3NJd8+czMfQskceosOQFqUtLQMYa5DPs+VpN7VM5BdXjaVIuKn5d9Wm2B9dI9ObIM+YRySDkZZPv14DVmUvcrcqJfOR8aHvtSd7B4l92wUQPQgQKNcOQho7xOHS/Bk+Y74AZL2y7TkNmdDoq9OGsThuF5tDW9rI9nVwXxOtsuB+bstra+W7aw9x9DvkKgdSRw=="),
            ("sign_type", "RSA2"),
            ("timestamp", "2019-03-08 10:20:23"),
            ("title", "麦禾商城模版"),
            ("total_price", "0.00"),
            ("version", "1.0"),
        ]);
        let key = verifying(NODE_SDK_NOTIFY_KEY_V2);
        assert_eq!(
            verify(&key, &sign_content(&p, &["sign"]), &p["sign"]),
            Ok(())
        );
        assert!(verify(&key, &sign_content(&p, &["sign", "sign_type"]), &p["sign"]).is_err());
    }

    /// Node SDK `checkResponseSign` `should work`: an answer's signed text
    /// is the `*_response` object as sent.
    #[test]
    fn answer_signature_verifies_the_node_sdk_vector() {
        let body = r#"{"alipay_open_file_upload_response":{"code":"10000","msg":"Success","file_id":"CAxAToWB1JsAAAAAAAAAAAAADgSLAQBr"},"sign":"F+LDzpTNiavn7xVZPGuPCSSVRSmWzJGgtuji6tVELGEaqMaNj0jRKXUEr5nloZJBBmwEnddOyCjjepMmrTKTvoOqQ0Efxpr/R1iEeHTHVbb/Q8TTh6Up5gHJDkILdaWS2q1cWeQ6VT+HQY9P3WRXS7uhILHuDODIhpAyCu5KhWGt0rMCIG+Im6NODJP2oohtSCtmTFXg58HH587Z2y2bdbjzOxLvzD9IrU1imghXQ2S/Q+wMIvRk9on6cWnBLkrNvJKapA2ReNGWOwyuASvB9zDVzhMPbR+3mfRGkVDxsq5HYLjBKGskJMXHw0HuugZij6ScRuaLPODhmHwr/pJ9yw=="}"#;
        let content = answer_content(body, "alipay_open_file_upload_response").expect("found");
        assert_eq!(
            content,
            r#"{"code":"10000","msg":"Success","file_id":"CAxAToWB1JsAAAAAAAAAAAAADgSLAQBr"}"#
        );
        let sign = "F+LDzpTNiavn7xVZPGuPCSSVRSmWzJGgtuji6tVELGEaqMaNj0jRKXUEr5nloZJBBmwEnddOyCjjepMmrTKTvoOqQ0Efxpr/R1iEeHTHVbb/Q8TTh6Up5gHJDkILdaWS2q1cWeQ6VT+HQY9P3WRXS7uhILHuDODIhpAyCu5KhWGt0rMCIG+Im6NODJP2oohtSCtmTFXg58HH587Z2y2bdbjzOxLvzD9IrU1imghXQ2S/Q+wMIvRk9on6cWnBLkrNvJKapA2ReNGWOwyuASvB9zDVzhMPbR+3mfRGkVDxsq5HYLjBKGskJMXHw0HuugZij6ScRuaLPODhmHwr/pJ9yw==";
        let key = verifying(NODE_SDK_ALIPAY_PUBLIC_KEY);
        assert_eq!(verify_answer(&key, content, sign), Ok(()));
        assert!(verify_answer(&key, content, "wrong-sing").is_err());
        assert!(verify_answer(&key, &content.replace("10000", "10001"), sign).is_err());
    }

    /// Node SDK `getSignStr()`: its three cases.
    #[test]
    fn answer_content_reproduces_the_node_sdk_get_sign_str_cases() {
        let object = r#"{"code":"10000","msg":"Success","image_id":"Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED","image_url":"http:\/\/oalipay-dl-django.alicdn.com\/rest\/1.0\/image?fileIds=Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED&zoom=original"}"#;
        let nested = object.replace(r#""code":"10000","#, r#""code":"10000","sign":"xxx","#);
        let sign = "P8xrBWqZCUv11UrEBjhQ4Sk3hyj4607qehO2VbKIS0hWa4U+NeLlOftqTyhGv+x1lzfqN590Y/8CaNIzEEg06FiNWJlUFM/uEFJLzSKGse4MjHbblpiSzI3eCV5RzxH26wZbEd9wyVYYi0pHFBf35UrBva47g7b5EuKCHfoVA95/zin9fAyb3xhhiHhmfGaWIDV/1LmE2vtqtOHQnISbY/deC71U614ySZ3YB97ws8npCcCJ+tgZvhHPkMRGvmyYPCRDB/aIN/sKDSLtfPp0u8DxE8pHLvCHm3wR84MQxqNbKgpd8NTKNvH+obELsbCrqPhjW7qI48634qx6enDupw==";
        let name = "alipay_offline_material_image_upload_response";
        let normal = format!(r#"{{"{name}":{object},"sign":"{sign}"}}"#);
        let spaced = format!(
            "{{\"{name}\"\n        :\n        {object},\n\n          \"sign\"  :  \"{sign}\"}}"
        );
        let with_sign = format!(
            "{{\"{name}\"\n        :\n        {nested},\n\n          \"sign\"  :  \"{sign}\"}}"
        );
        assert_eq!(answer_content(&normal, name), Some(object));
        assert_eq!(answer_content(&spaced, name), Some(object));
        assert_eq!(answer_content(&with_sign, name), Some(nested.as_str()));
    }

    #[test]
    fn answer_content_is_none_for_hostile_answers() {
        for body in [
            "",
            "{",
            r#"{"x_response":"#,
            r#"{"x_response":"{}"}"#,
            r#"{"x_response":{"a":"}"#,
            r#"{"x_response":{"a":{"b":1}"#,
            r#"{"y_response":{}}"#,
        ] {
            assert_eq!(answer_content(body, "x_response"), None, "{body}");
        }
        assert_eq!(
            answer_content(r#"{"x_response":{"a":"}\"{"},"sign":"s"}"#, "x_response"),
            Some(r#"{"a":"}\"{"}"#)
        );
    }

    #[test]
    fn keys_are_read_in_every_form_alipay_hands_out() {
        let key = parse_private_key(JAVA_SDK_PROD_CERT_KEY).expect("bare PKCS#8");
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let pkcs8 = key.to_pkcs8_pem(LineEnding::CRLF).expect("pem");
        let pkcs1 = key.to_pkcs1_pem(LineEnding::LF).expect("pem");
        let pkcs1_bare = B64.encode(key.to_pkcs1_der().expect("der").as_bytes());
        let one_line = format!(
            "\u{feff}-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            JAVA_SDK_PROD_CERT_KEY
        );
        for text in [pkcs8.as_str(), pkcs1.as_str(), &pkcs1_bare, &one_line] {
            assert_eq!(parse_private_key(text).as_ref(), Ok(&key));
        }
        let public = key.to_public_key();
        let spki = public.to_public_key_pem(LineEnding::LF).expect("pem");
        assert_eq!(parse_public_key(&spki), Ok(public));
        assert!(parse_public_key(NODE_SDK_NOTIFY_KEY_V1).is_ok());
        assert!(parse_public_key(NODE_SDK_ALIPAY_PUBLIC_KEY).is_ok());
    }

    #[test]
    fn bad_keys_are_refused_without_quoting_them() {
        let small = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDIgHnOn7LLILlKETd6BFRJ0GqgS2Y3mn1wMQmyh9zEyWlz5p1zrahRahbXAfCfSqshSNfqOmAQzSHRVjCqjsAw1jyqrXaPdKBmr90DIpIxmIyKXv4GGAkPyJ/6FTFY99uhpiq0qadD/uSzQsefWo0aTvP/65zi3eof7TcZ32oWpwIDAQAB";
        let cases = [
            parse_public_key(small).err(),
            parse_public_key("").err(),
            parse_public_key("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----").err(),
            parse_private_key("-----BEGIN PRIVATE KEY-----\nAAAA").err(),
            parse_private_key("not base64 at all!").err(),
            parse_private_key(NODE_SDK_NOTIFY_KEY_V1).err(),
            parse_private_key("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END RSA PRIVATE KEY-----").err(),
            parse_private_key(&format!("-----BEGIN PRIVATE KEY-----\n{JAVA_SDK_PROD_CERT_KEY}\n-----END PRIVATE KEY-----\nmore")).err(),
        ];
        for err in cases {
            let err = err.expect("refused");
            assert!(!err.contains("MII"), "{err}");
        }
        assert!(parse_public_key(small).unwrap_err().contains("1024-bit"));
    }

    #[test]
    fn forms_are_read_strictly() {
        let p = parse_form(b"a=1&b=x+y%2Bz&c=&&d", 10).expect("form");
        assert_eq!(
            p,
            params(&[("a", "1"), ("b", "x y+z"), ("c", ""), ("d", "")])
        );
        for (body, why) in [
            (&b"a=1&a=2"[..], "twice"),
            (b"=1", "without a name"),
            (b"a=%zz", "%-escape"),
            (b"a=%4", "%-escape"),
            (b"a=%FF%FE", "not UTF-8"),
            (b"a=\xff", "not UTF-8"),
            (b"a=1&b=2&c=3", "more than 2"),
        ] {
            let err = parse_form(body, 2).expect_err("refused");
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn bad_signatures_are_errors_not_panics() {
        let key = node_sdk_notify_key();
        for sign in ["", "!!!", "QUJD", &"A".repeat(100_000), "AAAA====", "ab cd"] {
            assert!(verify(&key, "a=1", sign).is_err(), "{sign}");
        }
    }
}
