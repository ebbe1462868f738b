//! What client text may contain before it reaches storage or other viewers.
//!
//! PostgreSQL refuses a NUL in `text`, and one such order in a batch fails
//! every buyer in it; invisible and direction-changing characters let a
//! name or a chat line pose as another. So every client string is checked
//! here, once, with the same rules: no control characters (Unicode `Cc`,
//! and the line and paragraph separators `Zl`, `Zp`), none of the invisible
//! or bidirectional format characters below. Zero-width joiners and emoji tag
//! characters stay: emoji sequences (a family, a flag) are made of them.

/// Why a text was refused; the caller names the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not contain control, invisible or direction-changing characters")]
    Forbidden,
    #[error("must contain at least one visible character")]
    Invisible,
    #[error("must be printable ASCII")]
    NotAscii,
}

/// Invisible or bidirectional format characters that no client needs:
/// zero-width space, LRM/RLM, the embeddings and overrides, word joiner and
/// invisible operators, the isolates, and the byte-order mark.
fn is_forbidden_format(c: char) -> bool {
    matches!(c,
        '\u{200B}'
        | '\u{200E}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}')
}

/// `Cc`, `Zl` and `Zp`.
fn is_control(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Marks that join or modify what stands beside them but show nothing alone
/// (joiners, variation selectors, emoji tags), and blank look-alikes of a space.
fn shows_nothing(c: char) -> bool {
    c.is_whitespace()
        || matches!(c,
            '\u{200C}' | '\u{200D}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{E0020}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{2800}' | '\u{180E}')
}

/// One line of text: no control character at all.
pub fn check_line(s: &str) -> Result<(), TextError> {
    if s.chars().any(|c| is_control(c) || is_forbidden_format(c)) {
        return Err(TextError::Forbidden);
    }
    Ok(())
}

/// Several lines: newlines and tabs are allowed, other controls are not.
pub fn check_multiline(s: &str) -> Result<(), TextError> {
    let allowed = |c: char| matches!(c, '\n' | '\r' | '\t');
    if s.chars()
        .any(|c| (is_control(c) && !allowed(c)) || is_forbidden_format(c))
    {
        return Err(TextError::Forbidden);
    }
    Ok(())
}

/// A line a person reads as something: a chat message, a name.
pub fn check_visible_line(s: &str) -> Result<(), TextError> {
    check_line(s)?;
    if s.chars().all(shows_nothing) {
        return Err(TextError::Invisible);
    }
    Ok(())
}

/// The rule of the `Idempotency-Key` header (what `HeaderValue::to_str`
/// accepts, less the tab), for every key and reference a client sends.
pub fn check_ascii_ref(s: &str) -> Result<(), TextError> {
    if s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Ok(())
    } else {
        Err(TextError::NotAscii)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_sequences_survive() {
        // Family (ZWJ), flag of Scotland (tags), keycap (variation selector).
        for s in [
            "👨\u{200D}👩\u{200D}👧",
            "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
            "1\u{FE0F}\u{20E3}",
            "荔枝 妃子笑",
            "क्\u{200C}ष",
        ] {
            assert_eq!(check_visible_line(s), Ok(()), "{s:?}");
            assert_eq!(check_multiline(s), Ok(()), "{s:?}");
        }
    }

    #[test]
    fn controls_and_invisible_formats_are_refused() {
        for c in [
            '\0', '\u{1}', '\n', '\r', '\u{7F}', '\u{85}', '\u{9F}', '\u{2028}', '\u{2029}',
            '\u{200B}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202E}', '\u{2060}', '\u{2064}',
            '\u{2066}', '\u{2069}', '\u{FEFF}',
        ] {
            let s = format!("ok{c}ok");
            assert_eq!(check_line(&s), Err(TextError::Forbidden), "{c:?}");
            assert!(check_visible_line(&s).is_err(), "{c:?}");
        }
        assert_eq!(check_multiline("two\nlines\r\n\tindented"), Ok(()));
        assert_eq!(check_multiline("nul\0"), Err(TextError::Forbidden));
        assert_eq!(check_multiline("rlo\u{202E}"), Err(TextError::Forbidden));
    }

    #[test]
    fn a_visible_line_shows_something() {
        for s in [
            " ",
            "\u{200D}",
            "\u{200C}\u{200D}",
            "\u{3164}",
            "\u{2800}",
            "\u{FE0F}",
            "\u{3000}",
        ] {
            assert_eq!(check_visible_line(s), Err(TextError::Invisible), "{s:?}");
        }
        assert_eq!(check_visible_line("a"), Ok(()));
    }

    #[test]
    fn refs_are_printable_ascii() {
        assert_eq!(check_ascii_ref("order-1 try:2"), Ok(()));
        for s in ["nul\0", "tab\t", "é", "\u{7F}", "荔"] {
            assert_eq!(check_ascii_ref(s), Err(TextError::NotAscii), "{s:?}");
        }
    }

    proptest::proptest! {
        /// Whatever passes a line check has no character PostgreSQL or a
        /// terminal would choke on.
        #[test]
        fn nothing_passes_with_a_nul_or_control(s in "\\PC{0,20}[\\x00-\\x1f\\x7f]\\PC{0,20}") {
            proptest::prop_assert!(check_line(&s).is_err());
            proptest::prop_assert!(check_visible_line(&s).is_err());
        }
    }
}
