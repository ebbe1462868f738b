//! The buyer's address book (contract section 10): the `Address` type and
//! its rules, the masking of phone numbers, the province list, and the
//! `AddressBook` service over an `AddressStore` (PostgreSQL or SQLite).
//!
//! Choices where the contract is silent:
//! - A phone is stored exactly as sent. Spaces, dashes and brackets are
//!   refused with a message saying so rather than stripped: what the buyer
//!   sees in the answer is what the courier gets, and a page can strip them
//!   before sending. Text fields are trimmed, as the catalog's are.
//! - An empty `district` is no district (`null`).
//! - The listing is the default first, then newest first.

mod book;
pub mod cache;
pub mod provinces;
pub mod sql;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::StoreError;

pub use book::AddressBook;
pub use provinces::{province, Province, PROVINCES};

/// The contract's cap on one user's book.
pub const MAX_ADDRESSES: i64 = 20;

/// The contract's Address; also an order's immutable `ship_to` copy.
///
/// `Debug` masks the phone and elides the name and the line, so an address
/// in a log line identifies no one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub id: Uuid,
    pub name: String,
    /// An 11-digit mainland mobile number or E.164. Personal data: never
    /// logged; shown masked (`138****5678`) to anyone but its user, the
    /// sale's host and operators.
    pub phone: String,
    /// GB/T 2260 province-level code, e.g. "440000" (Guangdong).
    pub province: String,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    pub line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcode: Option<String>,
    #[serde(default)]
    pub is_default: bool,
}

impl Address {
    /// This address as anyone but its user, the sale's host and operators
    /// may see it: the phone masked.
    pub fn masked(&self) -> Address {
        Address {
            phone: mask_phone(&self.phone),
            ..self.clone()
        }
    }
}

/// Shows how long a text is, not what it says.
struct Elided<'a>(&'a str);

impl fmt::Debug for Elided<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} chars>", self.0.chars().count())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Address")
            .field("id", &self.id)
            .field("name", &Elided(&self.name))
            .field("phone", &mask_phone(&self.phone))
            .field("province", &self.province)
            .field("city", &self.city)
            .field("district", &self.district)
            .field("line", &Elided(&self.line))
            .field("postcode", &self.postcode)
            .field("is_default", &self.is_default)
            .finish()
    }
}

/// `1[3-9]` and nine more digits.
pub fn is_mainland_mobile(phone: &str) -> bool {
    let b = phone.as_bytes();
    b.len() == 11
        && b[0] == b'1'
        && (b'3'..=b'9').contains(&b[1])
        && b.iter().all(u8::is_ascii_digit)
}

/// `+`, then 8..=15 digits, the first not 0.
pub fn is_e164(phone: &str) -> bool {
    match phone.strip_prefix('+') {
        Some(digits) => {
            (8..=15).contains(&digits.len())
                && !digits.starts_with('0')
                && digits.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// A phone as others see it: `13812345678` -> `138****5678`; E.164 keeps
/// its first four and last four characters (`+8613812345678` ->
/// `+861******5678`). Anything else, including an E.164 number too short to
/// hide at least four digits between those, is masked entirely: one `*` per
/// character, at most 16.
pub fn mask_phone(phone: &str) -> String {
    if is_mainland_mobile(phone) {
        return format!("{}****{}", &phone[..3], &phone[7..]);
    }
    // All ASCII once it is E.164, so byte offsets are character offsets.
    if is_e164(phone) && phone.len() >= 12 {
        let tail = phone.len() - 4;
        return format!("{}{}{}", &phone[..4], "*".repeat(tail - 4), &phone[tail..]);
    }
    "*".repeat(phone.chars().count().min(16))
}

/// Why a phone is refused. The message never repeats the number.
fn check_phone(phone: &str) -> Result<(), AddressError> {
    if is_mainland_mobile(phone) || is_e164(phone) {
        return Ok(());
    }
    let separators = phone
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '-' | '(' | ')' | '.' | '/'));
    Err(AddressError::Invalid(if separators {
        "phone must be digits only, without spaces, dashes or brackets: an 11-digit \
         mainland mobile number (13812345678) or E.164 (+85291234567)"
            .into()
    } else {
        "phone must be an 11-digit mainland mobile number (13812345678) or E.164: \
         + then 8 to 15 digits, the first not 0 (+85291234567)"
            .into()
    }))
}

/// `POST /api/v1/me/addresses`'s body. No `Debug`: it holds a phone.
#[derive(Deserialize)]
pub struct NewAddress {
    pub name: String,
    pub phone: String,
    pub province: String,
    pub city: String,
    #[serde(default)]
    pub district: Option<String>,
    pub line: String,
    #[serde(default)]
    pub postcode: Option<String>,
    /// Optional, and `null` is false: the first address is the default anyway.
    #[serde(default)]
    pub is_default: Option<bool>,
}

impl NewAddress {
    /// The address the contract's bounds allow, or why not.
    pub fn validate(self, id: Uuid) -> Result<Address, AddressError> {
        use crate::catalog::validate::line;
        let invalid = |e: crate::catalog::validate::Invalid| AddressError::Invalid(e.0);
        let name = line("name", &self.name, 40).map_err(invalid)?;
        check_phone(&self.phone)?;
        if province(&self.province).is_none() {
            return Err(AddressError::Invalid(
                "province must be a GB/T 2260 province-level code such as \"440000\" \
                 (Guangdong); GET /api/v1/provinces lists them"
                    .into(),
            ));
        }
        let city = line("city", &self.city, 40).map_err(invalid)?;
        let district = match self.district.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(d) => Some(line("district", d, 40).map_err(invalid)?),
        };
        let street = line("line", &self.line, 200).map_err(invalid)?;
        if let Some(p) = &self.postcode {
            if p.len() != 6 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AddressError::Invalid(
                    "postcode must be 6 digits (e.g. \"510000\"), or left out".into(),
                ));
            }
        }
        Ok(Address {
            id,
            name,
            phone: self.phone,
            province: self.province,
            city,
            district,
            line: street,
            postcode: self.postcode,
            is_default: self.is_default.unwrap_or(false),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("{0}")]
    Invalid(String),
    /// Unknown, or another user's: the same answer, so ids reveal nothing.
    #[error("address not found")]
    NotFound,
    #[error("an address book holds at most 20 addresses; delete one first")]
    Full,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What adding an address found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored as returned (the first address of a book is its default,
    /// whatever was asked).
    Added(Address),
    /// The book holds `MAX_ADDRESSES` already; nothing changed.
    Full,
}

/// Where address books are kept.
#[async_trait]
pub trait AddressStore: Send + Sync + 'static {
    /// The user's address `id`, if it is theirs.
    async fn address(&self, user_id: &str, id: Uuid) -> Result<Option<Address>, StoreError>;
    /// The user's default address, if any.
    async fn default_of(&self, user_id: &str) -> Result<Option<Address>, StoreError>;
    /// Adds `address` to the user's book unless it is full, in one
    /// transaction that concurrent adds (on any node) wait for: the count
    /// never passes `MAX_ADDRESSES`. A default (asked, or the book's first)
    /// replaces the old one in the same transaction.
    async fn insert(
        &self,
        user_id: &str,
        address: &Address,
        at: DateTime<Utc>,
    ) -> Result<Inserted, StoreError>;
    /// The user's addresses: the default first, then newest first.
    async fn list(&self, user_id: &str) -> Result<Vec<Address>, StoreError>;
    /// `list` for several users at once (a user without addresses is
    /// absent): one query where the backend can.
    async fn books(
        &self,
        user_ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<Address>>, StoreError> {
        let mut books = std::collections::HashMap::new();
        for u in user_ids {
            let list = self.list(u).await?;
            if !list.is_empty() {
                books.insert(u.clone(), list);
            }
        }
        Ok(books)
    }
    /// Deletes the user's address `id`; `false` if they have none such.
    /// Deleting the default makes the newest remaining address the default.
    async fn delete(&self, user_id: &str, id: Uuid, at: DateTime<Utc>) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> NewAddress {
        NewAddress {
            name: "李梅".into(),
            phone: "13812345678".into(),
            province: "440000".into(),
            city: "广州市".into(),
            district: Some("天河区".into()),
            line: "体育西路 191 号 12 楼".into(),
            postcode: Some("510620".into()),
            is_default: None,
        }
    }

    fn check(f: impl FnOnce(&mut NewAddress)) -> Result<Address, String> {
        let mut b = body();
        f(&mut b);
        b.validate(Uuid::nil()).map_err(|e| e.to_string())
    }

    #[test]
    fn phones_of_both_shapes_are_accepted() {
        for p in [
            "13812345678",
            "19900000000",
            "+8613812345678",
            "+85291234567",
            "+12345678",
            "+123456789012345",
        ] {
            assert!(check(|b| b.phone = p.into()).is_ok(), "{p}");
        }
    }

    #[test]
    fn malformed_phones_are_refused_without_being_repeated() {
        for p in [
            "",
            "1381234567",
            "138123456789",
            "12812345678",
            "10812345678",
            "23812345678",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "+",
            "++8613812345678",
            "138abcd5678",
            "138 1234 5678",
            "138-1234-5678",
            " 13812345678",
            "13812345678\n",
            "(138)12345678",
            "１３８１２３４５６７８",
            "١٣٨١٢٣٤٥٦٧٨",
            "13812345678\0",
            "+86 13812345678",
        ] {
            let err = check(|b| b.phone = p.into()).expect_err(p);
            // One of two fixed texts: nothing of the input is echoed.
            let separators = p.chars().any(|c| c.is_whitespace() || "-().".contains(c));
            let fixed = if separators {
                "phone must be digits only, without spaces"
            } else {
                "phone must be an 11-digit mainland mobile number (13812345678) or E.164: +"
            };
            assert!(err.starts_with(fixed), "{p:?}: {err}");
        }
    }

    #[test]
    fn masking() {
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_phone("+8613812345678"), "+861******5678");
        assert_eq!(mask_phone("+85291234567"), "+852****4567");
        assert_eq!(mask_phone("+123456789012345"), "+123********2345");
        // Too short to hide four digits between the visible ends.
        assert_eq!(mask_phone("+12345678"), "*********");
        assert_eq!(mask_phone("+1234567890"), "***********");
        for odd in ["", "1234", "138-1234-5678", "电话号码", "12812345678"] {
            let m = mask_phone(odd);
            assert!(m.chars().all(|c| c == '*'), "{odd:?} -> {m:?}");
        }
        assert_eq!(mask_phone(&"9".repeat(100)), "*".repeat(16));
    }

    #[test]
    fn debug_and_masked_hide_the_phone() {
        let a = body().validate(Uuid::nil()).unwrap();
        let debug = format!("{a:?} {a:#?}");
        assert!(!debug.contains("13812345678"), "{debug}");
        assert!(debug.contains("138****5678"), "{debug}");
        assert!(!debug.contains("体育西路"), "{debug}");
        assert!(!debug.contains("李梅"), "{debug}");
        assert!(debug.contains("440000"), "{debug}");
        let m = a.masked();
        assert_eq!(m.phone, "138****5678");
        assert_eq!(
            Address {
                phone: a.phone.clone(),
                ..m
            },
            a
        );
    }

    #[test]
    fn bounds() {
        let name = |n: usize| check(|b| b.name = "梅".repeat(n));
        assert!(name(40).is_ok());
        assert!(name(41).is_err());
        assert!(name(0).is_err());
        assert!(check(|b| b.name = "   ".into()).is_err());
        assert_eq!(check(|b| b.name = "  Mei ".into()).unwrap().name, "Mei");
        assert!(check(|b| b.city = "c".repeat(40)).is_ok());
        assert!(check(|b| b.city = "c".repeat(41)).is_err());
        assert!(check(|b| b.city = String::new()).is_err());
        assert!(check(|b| b.district = Some("d".repeat(40))).is_ok());
        assert!(check(|b| b.district = Some("d".repeat(41))).is_err());
        assert_eq!(
            check(|b| b.district = Some("".into())).unwrap().district,
            None
        );
        assert_eq!(check(|b| b.district = None).unwrap().district, None);
        assert!(check(|b| b.line = "l".repeat(200)).is_ok());
        assert!(check(|b| b.line = "l".repeat(201)).is_err());
        assert!(check(|b| b.line = String::new()).is_err());
        for bad in ["", "51062", "5106200", "51062a", "５１０６２０", " 51062"] {
            assert!(check(|b| b.postcode = Some(bad.into())).is_err(), "{bad:?}");
        }
        assert_eq!(check(|b| b.postcode = None).unwrap().postcode, None);
        for bad in ["", "44", "44000", "440001", "999999", "440000 ", "000000"] {
            let err = check(|b| b.province = bad.into()).unwrap_err();
            assert!(err.starts_with("province"), "{bad:?}: {err}");
        }
        for (field, c) in [("name", '\0'), ("city", '\u{7}'), ("line", '\u{202E}')] {
            let mut b = body();
            let s = format!("a{c}b");
            match field {
                "name" => b.name = s,
                "city" => b.city = s,
                _ => b.line = s,
            }
            let err = b.validate(Uuid::nil()).map(|_| ()).unwrap_err().to_string();
            assert!(err.starts_with(field), "{field}: {err}");
        }
    }
}
