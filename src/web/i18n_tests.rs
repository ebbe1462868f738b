//! The pages' catalogues against the pages, the scripts and the API: a
//! string the code names but no catalogue holds, or an error code of the
//! API without a message, fails here rather than on a farmer's phone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::http::error::{ApiError, ERROR_CODES};

const LANGS: [(&str, &str); 2] = [
    ("zh-CN", include_str!("i18n/zh-CN.json")),
    ("en", include_str!("i18n/en.json")),
];

fn catalogue(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str(json).expect("a catalogue is one flat JSON object of strings")
}

fn catalogues() -> Vec<(&'static str, BTreeMap<String, String>)> {
    LANGS.iter().map(|(l, j)| (*l, catalogue(j))).collect()
}

/// The string literals that follow `prefix` in `text` (`t('a.b'` -> `a.b`),
/// where `prefix` starts a word (`t('` is not the end of `split('`).
fn literals_after(text: &str, prefix: &str, quote: char) -> Vec<String> {
    text.match_indices(prefix)
        .filter(|(i, _)| {
            let before = text[..*i].chars().next_back();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
                || !prefix.starts_with(|c: char| c.is_alphanumeric())
        })
        .filter_map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let end = rest.find(quote)?;
            Some(rest[..end].to_owned())
        })
        .collect()
}

fn files(dir: &Path, ext: &str, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.display().to_string(), text));
        }
    }
}

fn web_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web")
}

#[test]
fn both_languages_have_the_same_keys_and_no_empty_string() {
    let all = catalogues();
    let keys = |c: &BTreeMap<String, String>| c.keys().cloned().collect::<BTreeSet<_>>();
    let (zh, en) = (keys(&all[0].1), keys(&all[1].1));
    assert_eq!(
        zh.difference(&en).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in zh-CN, not in en"
    );
    assert_eq!(
        en.difference(&zh).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in en, not in zh-CN"
    );
    for (lang, c) in &all {
        for (k, v) in c {
            assert!(!v.trim().is_empty(), "{lang}: {k} is empty");
        }
    }
}

#[test]
fn every_error_code_has_a_message_in_every_language() {
    for (lang, c) in catalogues() {
        for code in ERROR_CODES.iter().chain(&["network", "unknown"]) {
            assert!(
                c.contains_key(&format!("error.{code}")),
                "{lang}: no message for the error code {code}"
            );
        }
    }
}

/// ERROR_CODES is complete: every code the API's error type or its
/// WebSocket handler, or a conflict built anywhere, can answer.
#[test]
fn error_codes_lists_every_code_the_api_answers() {
    let variants = [
        ApiError::BadRequest(String::new()),
        ApiError::Unauthorized(String::new()),
        ApiError::Forbidden(String::new()),
        ApiError::NotFound(String::new()),
        ApiError::Banned,
        ApiError::PayloadTooLarge,
        ApiError::UnsupportedMediaType,
        ApiError::TooLarge(String::new()),
        ApiError::UnsupportedMedia(String::new()),
        ApiError::IdempotencyMismatch,
        ApiError::RateLimited(1),
        ApiError::Unavailable(String::new()),
        ApiError::Internal(String::new()),
    ];
    let mut codes: BTreeSet<String> = variants.iter().map(|v| v.code().to_owned()).collect();
    let mut sources = Vec::new();
    files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "rs",
        &mut sources,
    );
    for (name, text) in &sources {
        // The payment adapters' codes are the providers' wire codes; their
        // errors reach clients through `PaymentError`, mapped in error.rs.
        if name.contains("/payments/") {
            continue;
        }
        for prefix in ["conflict(\"", "bad(\"", "err(\"", "code: \""] {
            codes.extend(literals_after(text, prefix, '"'));
        }
        for code in ["undeliverable", "address_required"] {
            if text.contains(&format!("=> \"{code}\"")) {
                codes.insert(code.to_owned());
            }
        }
    }
    codes.retain(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    for code in codes {
        assert!(
            ERROR_CODES.contains(&code.as_str()),
            "the API answers {code}, which ERROR_CODES (src/http/error.rs) does not list"
        );
    }
}

#[test]
fn every_key_the_pages_and_scripts_name_is_in_the_catalogues() {
    let all = catalogues();
    let mut named: Vec<(String, String)> = Vec::new();
    let mut pages = Vec::new();
    files(&web_dir().join("pages"), "html", &mut pages);
    for (file, html) in &pages {
        for attr in [
            "data-i18n=\"",
            "data-i18n-placeholder=\"",
            "data-i18n-aria-label=\"",
            "data-i18n-title=\"",
            "data-i18n-alt=\"",
        ] {
            for key in literals_after(html, attr, '"') {
                named.push((file.clone(), key));
            }
        }
    }
    let mut scripts = Vec::new();
    files(&web_dir().join("assets"), "js", &mut scripts);
    for (file, js) in &scripts {
        for (prefix, quote) in [("t('", '\''), ("t(\"", '"'), ("tKey('", '\'')] {
            for key in literals_after(js, prefix, quote) {
                named.push((file.clone(), key));
            }
        }
    }
    assert!(
        named.len() > 100,
        "the scan found only {} keys",
        named.len()
    );
    // Keys built at run time: the values they are built from.
    for s in [
        "scheduled",
        "on_sale",
        "sold_out",
        "closed",
        "live",
        "ended",
        "reserved",
        "completed",
        "cancelled",
        "expired",
    ] {
        named.push(("status".into(), format!("status.{s}")));
    }
    for f in [
        "unfulfilled",
        "packed",
        "shipped",
        "delivered",
        "returned",
        "lost",
    ] {
        named.push(("fulfilment".into(), format!("fulfilment.{f}")));
    }
    for k in [
        "spoiled",
        "damaged",
        "short_weight",
        "wrong_item",
        "not_received",
    ] {
        named.push(("claims".into(), format!("claim.kind.{k}")));
    }
    for s in ["open", "approved", "rejected", "settled"] {
        named.push(("claims".into(), format!("claim.status.{s}")));
    }
    for (lang, c) in &all {
        for (file, key) in &named {
            assert!(
                c.contains_key(key),
                "{lang}: {file} names {key}, which is not in the catalogue"
            );
        }
    }
}

/// The pages' words come from the catalogues: no text of the markup sits
/// outside an element that names its key.
#[test]
fn pages_hold_no_words_of_their_own() {
    let mut pages = Vec::new();
    files(&web_dir().join("pages"), "html", &mut pages);
    for (file, html) in &pages {
        let mut last_tag = "";
        let mut rest = html.as_str();
        while let Some(open) = rest.find('<') {
            let text = rest[..open].trim();
            let words = text.chars().any(|c| c.is_alphabetic());
            if words && text != "lychee-live" {
                assert!(
                    !last_tag.starts_with("</") && last_tag.contains("data-i18n=\""),
                    "{file}: the text {text:?} after {last_tag} is not from a catalogue"
                );
            }
            let close = rest[open..].find('>').map_or(rest.len(), |c| open + c + 1);
            last_tag = &rest[open..close];
            rest = &rest[close..];
        }
    }
}

/// A user's words never pass through a script as markup, and no script
/// holds Chinese of its own (it would be a string outside the catalogue).
#[test]
fn scripts_use_no_markup_sinks_and_hold_no_chinese() {
    let mut scripts = Vec::new();
    files(&web_dir().join("assets"), "js", &mut scripts);
    for (file, js) in &scripts {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!js.contains(sink), "{file}: {sink}");
        }
        assert!(
            !js.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
            "{file}: Chinese text outside the catalogue"
        );
    }
}
