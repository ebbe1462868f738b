//! WeChat Pay API v3's signatures and envelope, as its official SDKs do
//! them (wechatpay-go `core/auth`, `core/notify`, `utils`): SHA256withRSA
//! (PKCS#1 v1.5) over newline-joined strings, and AEAD_AES_256_GCM for the
//! `resource` of a callback. Nothing here logs, and no error names a key.

use std::collections::HashMap;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use x509_cert::der::{DecodePem, Encode};

/// The only scheme API v3 has for RSA merchants (the `Authorization`
/// prefix and the `Wechatpay-Signature-Type` of callbacks).
pub const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// A base64 RSA-4096 signature is 684 characters; anything much longer is
/// not a signature, and is refused before it is decoded.
const MAX_SIGNATURE_B64: usize = 1024;

/// What `Authorization` signs: `METHOD\nURL\ntimestamp\nnonce\nbody\n`, the
/// URL being the path and query as sent (wechatpay-go `SignatureMessageFormat`).
pub fn request_message(
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body}\n")
}

/// What WeChat Pay signs in an answer or a callback: `timestamp\nnonce\nbody\n`.
pub fn answer_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// What `paySign` signs for `wx.requestPayment` / WeixinJSBridge:
/// `appId\ntimeStamp\nnonceStr\npackage\n`.
pub fn jsapi_message(app_id: &str, time_stamp: &str, nonce_str: &str, package: &str) -> String {
    format!("{app_id}\n{time_stamp}\n{nonce_str}\n{package}\n")
}

/// The `Authorization` value, in wechatpay-go's field order
/// (`HeaderAuthorizationFormat`).
pub fn authorization(
    mchid: &str,
    nonce: &str,
    timestamp: i64,
    serial_no: &str,
    signature: &str,
) -> String {
    format!(
        "{SCHEME} mchid=\"{mchid}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",\
         serial_no=\"{serial_no}\",signature=\"{signature}\""
    )
}

/// SHA256withRSA, PKCS#1 v1.5, base64: deterministic, so the SDKs'
/// published signatures are reproduced exactly.
pub fn sign(key: &RsaPrivateKey, message: &[u8]) -> String {
    let signer = SigningKey::<Sha256>::new(key.clone());
    B64.encode(signer.sign(message).to_bytes())
}

/// Whether `signature_b64` is `key`'s signature of `message`.
pub fn verify(key: &RsaPublicKey, message: &[u8], signature_b64: &str) -> Result<(), String> {
    if signature_b64.is_empty() || signature_b64.len() > MAX_SIGNATURE_B64 {
        return Err(format!(
            "a signature of {} characters is not one",
            signature_b64.len()
        ));
    }
    let raw = B64
        .decode(signature_b64)
        .map_err(|_| "the signature is not base64".to_owned())?;
    let signature =
        Signature::try_from(raw.as_slice()).map_err(|_| "the signature is malformed".to_owned())?;
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(message, &signature)
        .map_err(|_| "the signature does not match".to_owned())
}

/// The merchant's `apiclient_key.pem`: PKCS#8 as issued, PKCS#1 accepted.
pub fn private_key_from_pem(pem: &str) -> Result<RsaPrivateKey, String> {
    RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| "not an RSA private key in PKCS#8 (or PKCS#1) PEM".to_owned())
}

/// The 微信支付公钥 (`pub_key.pem`, SubjectPublicKeyInfo PEM).
pub fn public_key_from_pem(pem: &str) -> Result<RsaPublicKey, String> {
    RsaPublicKey::from_public_key_pem(pem)
        .map_err(|_| "not an RSA public key in PEM (BEGIN PUBLIC KEY)".to_owned())
}

/// The platform certificates of a PEM file (one, or several during a
/// rotation): their serials, as WeChat Pay writes them in
/// `Wechatpay-Serial`, with their public keys.
pub fn platform_certificates(pem: &[u8]) -> Result<Vec<(String, RsaPublicKey)>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file".to_owned())?;
    // Blocks are split here: x509-cert 0.2.5's `load_pem_chain` overflows
    // (panics) on some malformed input.
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start..];
        let end = after
            .find(END)
            .ok_or_else(|| "a certificate without its END line".to_owned())?;
        blocks.push(&after[..end + END.len()]);
        rest = &after[end + END.len()..];
    }
    if blocks.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    blocks
        .into_iter()
        .map(|block| {
            let cert = x509_cert::Certificate::from_pem(block.as_bytes())
                .map_err(|_| "not a PEM X.509 certificate".to_owned())?;
            let tbs = &cert.tbs_certificate;
            let spki = tbs
                .subject_public_key_info
                .to_der()
                .map_err(|_| "its public key does not encode".to_owned())?;
            let key = RsaPublicKey::from_public_key_der(&spki)
                .map_err(|_| "its public key is not RSA".to_owned())?;
            Ok((serial_hex(tbs.serial_number.as_bytes()), key))
        })
        .collect()
}

/// A certificate serial as the SDKs print it (Go `%X` of the big integer,
/// Java `toString(16).toUpperCase()`): upper-case hex without leading zeros.
pub fn serial_hex(der_bytes: &[u8]) -> String {
    let hex: String = der_bytes.iter().map(|b| format!("{b:02X}")).collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

/// The keys WeChat Pay signs with, by the serial it names.
#[derive(Clone, Default)]
pub struct PlatformKeys(HashMap<String, RsaPublicKey>);

impl PlatformKeys {
    pub fn insert(&mut self, serial: String, key: RsaPublicKey) {
        self.0.insert(serial, key);
    }

    pub fn get(&self, serial: &str) -> Option<&RsaPublicKey> {
        self.0.get(serial)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a `resource` did not open.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Not decodable at all (base64, nonce or key length).
    Malformed(String),
    /// The GCM tag does not hold: another key, or an altered ciphertext.
    Forged,
}

/// Decrypts a callback's `resource` (or a downloaded certificate): AES-GCM
/// with the APIv3 key, the 12-byte `nonce` and `associated_data`, the
/// 16-byte tag at the end of the base64 `ciphertext`. The key is 32 bytes
/// in production; the SDKs' published examples also use 16-byte keys, which
/// Go's `aes.NewCipher` and this function take as AES-128.
pub fn open(
    key: &[u8],
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Result<Vec<u8>, OpenError> {
    let nonce_bytes: [u8; 12] = nonce.as_bytes().try_into().map_err(|_| {
        OpenError::Malformed(format!("a nonce of {} bytes (GCM takes 12)", nonce.len()))
    })?;
    let ciphertext = B64
        .decode(ciphertext_b64)
        .map_err(|_| OpenError::Malformed("the ciphertext is not base64".into()))?;
    if ciphertext.len() < 16 {
        return Err(OpenError::Malformed(
            "the ciphertext is shorter than its tag".into(),
        ));
    }
    let payload = Payload {
        msg: &ciphertext,
        aad: associated_data.as_bytes(),
    };
    let nonce = &Nonce::from(nonce_bytes);
    let opened = match key.len() {
        32 => Aes256Gcm::new_from_slice(key).map(|c| c.decrypt(nonce, payload)),
        16 => Aes128Gcm::new_from_slice(key).map(|c| c.decrypt(nonce, payload)),
        n => {
            return Err(OpenError::Malformed(format!(
                "an AES key of {n} bytes (the APIv3 key has 32)"
            )))
        }
    };
    match opened {
        Ok(Ok(plain)) => Ok(plain),
        Ok(Err(_)) => Err(OpenError::Forged),
        Err(_) => Err(OpenError::Malformed("the AES key does not load".into())),
    }
}

/// A random string for `nonce_str` / `nonceStr` (32 alphanumerics, as the SDKs make).
pub fn nonce() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

#[cfg(test)]
pub(super) mod vectors;

#[cfg(test)]
mod tests;
