//! The official SDKs' and docs' published examples, reproduced byte for
//! byte, then hostile input: every refusal is an error, never a panic.

use super::vectors::*;
use super::*;

/// wechatpay-go keeps its test key as `TESTING KEY` so scanners skip it,
/// and swaps the label back before loading (`testingKey`).
fn go_test_key() -> RsaPrivateKey {
    private_key_from_pem(&GO_TEST_KEY.replace("TESTING KEY", "PRIVATE KEY")).expect("Go SDK key")
}

fn one_cert(pem: &str) -> (String, RsaPublicKey) {
    let mut certs = platform_certificates(pem.as_bytes()).expect("certificate");
    assert_eq!(certs.len(), 1);
    certs.remove(0)
}

// wechatpay-go utils/sign_test.go TestSha256WithRsa and
// core/auth/signers/sha256withrsa_signer_test.go TestSha256WithRSASigner_Sign.
#[test]
fn go_sdk_signature_of_source_is_reproduced() {
    assert_eq!(sign(&go_test_key(), b"source"), GO_SOURCE_SIGNATURE);
}

// wechatpay-go core/auth/verifiers/sha256withrsa_verifier_test.go: the
// certificate's serial is `F5765756002FDD77` and it verifies the signature.
#[test]
fn go_sdk_platform_certificate_verifies_the_signature() {
    let (serial, key) = one_cert(GO_VERIFIER_CERT);
    assert_eq!(serial, "F5765756002FDD77");
    assert_eq!(verify(&key, b"source", GO_SOURCE_SIGNATURE), Ok(()));
    assert!(verify(&key, b"wrong source", GO_SOURCE_SIGNATURE).is_err());
    assert!(verify(&key, b"", GO_SOURCE_SIGNATURE).is_err());
    assert!(verify(&key, b"source", "").is_err());
    assert!(verify(&key, b"source", "invalid base64 signature").is_err());
}

// wechatpay-go core/auth/verifiers/sha256withrsa_pubkey_verifier_test.go
// (the 微信支付公钥 mode).
#[test]
fn go_sdk_public_key_verifies_the_signature() {
    let key = public_key_from_pem(GO_PUBLIC_KEY).expect("public key");
    assert_eq!(verify(&key, b"source", GO_SOURCE_SIGNATURE), Ok(()));
    assert!(verify(&key, b"wrong source", GO_SOURCE_SIGNATURE).is_err());
}

// wechatpay-go core/auth/credentials/wechat_pay_credential_test.go: the
// signed strings and the header, with the test's mock signer
// (`"Sign:" + message`) and scheme (`WECHATPAY2-Mock`).
#[test]
fn go_sdk_authorization_header_is_reproduced() {
    let cases = [
        (
            "GET",
            "",
            "WECHATPAY2-Mock mchid=\"1234567890\",nonce_str=\"A1B2C3D4E5F6G7\",timestamp=\"1624523846\",\
             serial_no=\"0123456789ABC\",signature=\"Sign:GET\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\n\n\"",
        ),
        (
            "POST",
            "Hello World!\n",
            "WECHATPAY2-Mock mchid=\"1234567890\",nonce_str=\"A1B2C3D4E5F6G7\",timestamp=\"1624523846\",\
             serial_no=\"0123456789ABC\",signature=\"Sign:POST\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\nHello World!\n\n\"",
        ),
    ];
    for (method, body, want) in cases {
        let message = request_message(
            method,
            "/v3/certificates",
            1624523846,
            "A1B2C3D4E5F6G7",
            body,
        );
        let header = authorization(
            "1234567890",
            "A1B2C3D4E5F6G7",
            1624523846,
            "0123456789ABC",
            &format!("Sign:{message}"),
        );
        assert_eq!(header.replacen(SCHEME, "WECHATPAY2-Mock", 1), want);
    }
}

// pay.weixin.qq.com 签名生成 (the docs' example of a signed string; the
// docs do not publish the key, so their signature cannot be reproduced).
#[test]
fn docs_request_signature_string_is_reproduced() {
    assert_eq!(
        request_message(
            "GET",
            "/v3/certificates",
            1554208460,
            "593BEC0C930BF1AFEB40B4A08C8FB242",
            ""
        ),
        "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
    );
}

// pay.weixin.qq.com 小程序调起支付 / JSAPI调起支付: the four-line paySign
// string of the docs' field examples.
#[test]
fn docs_jsapi_pay_sign_string_is_reproduced() {
    assert_eq!(
        jsapi_message(
            "wx8888888888888888",
            "1414561699",
            "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
            "prepay_id=123456789"
        ),
        "wx8888888888888888\n1414561699\n5K8264ILTKCH16CQ2502SI8ZNMTM67VS\nprepay_id=123456789\n"
    );
}

// wechatpay-go core/notify/notify_test.go TestHandler_ParseNotifyRequest:
// a real callback (headers, body) verifies with the platform certificate
// and its resource opens with the APIv3 key to the published plaintext.
#[test]
fn go_sdk_notification_verifies_and_decrypts() {
    let (serial, key) = one_cert(GO_NOTIFY_CERT);
    assert_eq!(serial, "D7CE59D1F522D701");
    let message = answer_message(
        "1624523846",
        "EcZ9Cmy4Xyx1i6RlJQzLcCyEqDa26NBz",
        GO_NOTIFY_BODY.as_bytes(),
    );
    assert_eq!(verify(&key, &message, GO_NOTIFY_SIGNATURE), Ok(()));

    let body: serde_json::Value = serde_json::from_str(GO_NOTIFY_BODY).expect("json");
    let r = &body["resource"];
    let plain = open(
        b"testMchAPIv3Key0",
        r["nonce"].as_str().expect("nonce"),
        r["associated_data"].as_str().expect("ad"),
        r["ciphertext"].as_str().expect("ct"),
    )
    .expect("opens");
    assert_eq!(
        String::from_utf8(plain).expect("utf-8"),
        GO_NOTIFY_PLAINTEXT
    );
}

// wechatpay-go utils/aes_test.go TestDecryptAes256Gcm, every case.
#[test]
fn go_sdk_aes_gcm_cases_are_reproduced() {
    let (nonce, ad) = ("wCq51qZv4Yfg", "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8");
    let ct = "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC";
    assert_eq!(
        open(b"testAPIv3Key0000", nonce, ad, ct).as_deref(),
        Ok(&b"Hello World"[..])
    );
    assert!(matches!(
        open(b"testAPIv3Key0000", nonce, ad, "invalid cipher"),
        Err(OpenError::Malformed(_))
    ));
    assert!(open(b"testAPIv3Key0000", nonce, ad, "SGVsbG8gV29ybGQK").is_err());
    assert!(matches!(
        open(b"not a aes key", nonce, ad, ct),
        Err(OpenError::Malformed(_))
    ));
    assert_eq!(
        open(b"testAPIv3Key1111", nonce, ad, ct),
        Err(OpenError::Forged)
    );
}

// wechatpay-java core/cipher/AeadAesCipherTest.java: AES-256-GCM with a
// 32-byte APIv3 key, both ways (the simulator encrypts as the encrypt case).
#[test]
fn java_sdk_aead_aes_256_gcm_is_reproduced() {
    let key = b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
    let (nonce, ad, ct) = (
        "uluk4a9R25RW",
        "associatedData",
        "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI=",
    );
    assert_eq!(open(key, nonce, ad, ct).as_deref(), Ok(&b"message"[..]));

    let cipher = Aes256Gcm::new_from_slice(key).expect("key");
    let sealed = cipher
        .encrypt(
            &Nonce::from(<[u8; 12]>::try_from(nonce.as_bytes()).expect("12 bytes")),
            Payload {
                msg: b"message",
                aad: ad.as_bytes(),
            },
        )
        .expect("seal");
    assert_eq!(B64.encode(sealed), ct);

    assert_eq!(
        open(key, nonce, "bad-associatedData", ct),
        Err(OpenError::Forged)
    );
    assert_eq!(open(key, "bad-4a9R25RW", ad, ct), Err(OpenError::Forged));
    assert_eq!(
        open(key, nonce, ad, &B64.encode([0u8; 128])),
        Err(OpenError::Forged)
    );
}

// wechatpay-java TestConfig.DOWNLOAD_CERTIFICATE_RESPONSE: the encrypted
// platform certificate opens with API_V3_KEY to a certificate whose serial
// is the response's `serial_no`.
#[test]
fn java_sdk_downloaded_certificate_decrypts_to_its_serial() {
    let pem = open(
        b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb",
        "14b16c03dc1b",
        "certificate",
        JAVA_DOWNLOADED_CERT_CIPHERTEXT,
    )
    .expect("opens");
    let certs = platform_certificates(&pem).expect("a certificate");
    assert_eq!(certs[0].0, "5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC");
}

// wechatpay-java TestConfig: the serials of its test certificates.
#[test]
fn java_sdk_certificate_serials_are_reproduced() {
    assert_eq!(
        one_cert(JAVA_WECHAT_PAY_CERT).0,
        "440024045C4A427599D09BB4E3DE0279F2E813FD"
    );
    assert_eq!(
        one_cert(JAVA_MERCHANT_CERT).0,
        "5F1C72E2A8931B72A2E13AF8DEE92471EB397115"
    );
    // Two certificates in one file (a rotation) are both taken.
    let both = format!("{JAVA_WECHAT_PAY_CERT}\n{GO_VERIFIER_CERT}\n");
    let serials: Vec<String> = platform_certificates(both.as_bytes())
        .expect("chain")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        serials,
        [
            "440024045C4A427599D09BB4E3DE0279F2E813FD",
            "F5765756002FDD77"
        ]
    );
}

#[test]
fn serials_are_printed_like_big_integers() {
    assert_eq!(serial_hex(&[0x00, 0xF5, 0x76]), "F576");
    assert_eq!(serial_hex(&[0x0A, 0xBC]), "ABC");
    assert_eq!(serial_hex(&[0x00]), "0");
    assert_eq!(serial_hex(&[]), "0");
}

// WeChat Pay probes merchants with callbacks whose signature starts with
// `WECHATPAY/SIGNTEST/` (签名探测): they must not verify.
#[test]
fn signature_probes_do_not_verify() {
    let (_, key) = one_cert(GO_NOTIFY_CERT);
    let message = answer_message("1624523846", "n", b"{}");
    let probe = format!("WECHATPAY/SIGNTEST/{}", GO_NOTIFY_SIGNATURE);
    assert!(verify(&key, &message, &probe).is_err());
}

#[test]
fn hostile_signatures_and_keys_are_errors() {
    let (_, key) = one_cert(GO_NOTIFY_CERT);
    let huge = "A".repeat(10_000_000);
    for bad in [
        "",
        "====",
        "not base64 at all!",
        "QUJD",
        &huge,
        &B64.encode([0xFFu8; 256]),
        &B64.encode([0u8; 512]),
    ] {
        assert!(verify(&key, b"m", bad).is_err());
    }
    let truncated = &GO_NOTIFY_CERT[..GO_NOTIFY_CERT.len() - 30];
    let altered = GO_NOTIFY_CERT.replacen("MIID", "MIIE", 1);
    let chained_garbage =
        format!("{GO_NOTIFY_CERT}\n-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n");
    for bad in [
        "",
        "garbage",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "-----BEGIN CERTIFICATE-----",
        "-----END CERTIFICATE----------BEGIN CERTIFICATE-----",
        truncated,
        &altered,
        &chained_garbage,
    ] {
        assert!(private_key_from_pem(bad).is_err());
        assert!(public_key_from_pem(bad).is_err());
        assert!(platform_certificates(bad.as_bytes()).is_err());
    }
    // A certificate's PEM is not a public key's, and vice versa.
    assert!(public_key_from_pem(GO_NOTIFY_CERT).is_err());
    assert!(platform_certificates(GO_PUBLIC_KEY.as_bytes()).is_err());
}

#[test]
fn hostile_resources_are_errors() {
    let key = [7u8; 32];
    let ok_ct = B64.encode([0u8; 40]);
    let cases: [(&str, &str, String); 6] = [
        ("", "", ok_ct.clone()),
        ("short", "", ok_ct.clone()),
        ("a nonce that is far too long", "", ok_ct.clone()),
        ("123456789012", "", B64.encode([0u8; 15])),
        ("123456789012", "", "%%%".into()),
        ("123456789012", "", "A".repeat(1_000_001)),
    ];
    for (nonce, ad, ct) in cases {
        assert!(matches!(
            open(&key, nonce, ad, &ct),
            Err(OpenError::Malformed(_))
        ));
    }
    // Well formed, but not sealed with this key: the tag does not hold.
    assert_eq!(
        open(&key, "123456789012", "", &ok_ct),
        Err(OpenError::Forged)
    );
    // A multi-byte nonce of 12 bytes is still 12 bytes.
    assert_eq!(open(&key, "微信支付", "", &ok_ct), Err(OpenError::Forged));
}

#[test]
fn nonces_are_32_alphanumerics_and_differ() {
    let (a, b) = (nonce(), nonce());
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(a, b);
}
