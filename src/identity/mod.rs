//! Who is calling: HS256 tokens, roles, guest tokens, and the rule of who may
//! manage which sale.

pub mod signin;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Host,
    Operator,
}

impl std::str::FromStr for Role {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "host" => Ok(Role::Host),
            "operator" => Ok(Role::Operator),
            _ => Err(IdentityError::UnknownRole),
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub user_id: String,
    pub name: Option<String>,
    pub role: Role,
}

impl Identity {
    /// A host manages the sales it created; an operator manages every sale.
    pub fn may_manage(&self, host_id: &str) -> bool {
        match self.role {
            Role::Operator => true,
            Role::Host => self.user_id == host_id,
            Role::Viewer => false,
        }
    }

    pub fn may_create_sales(&self) -> bool {
        matches!(self.role, Role::Host | Role::Operator)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid or expired token")]
    Invalid,
    #[error("unknown role")]
    UnknownRole,
    #[error("user id must be 1..=64 characters")]
    BadSubject,
    #[error("name must be 1..=40 characters without control characters")]
    BadName,
    #[error("could not sign the token")]
    Signing,
}

/// Wire form of the claims. `role` stays a string so an unknown role is our
/// 401, not a serde error with a different message.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    exp: i64,
    /// Not before: checked here, not by the JWT library, whose clock is the
    /// system's and could not be moved in a test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
}

/// Signs and verifies tokens with one HS256 secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    verified: Arc<Verified>,
}

/// Tokens already verified, until they expire. A buyer sends the same token
/// with every press of "buy"; checking its signature and parsing its claims
/// again was a twentieth of the node's CPU for the crowd after sell-out.
/// Keyed by the whole token, so only the very token that was verified hits.
#[derive(Default)]
struct Verified {
    tokens: Mutex<HashMap<Box<str>, (Identity, i64)>>,
}

/// Bounds the cache's memory (a few MB); when full it starts over.
const VERIFIED_KEPT: usize = 10_000;

impl Verified {
    fn get(&self, token: &str, now: i64) -> Option<(Identity, i64)> {
        // Short sections, no await: std mutex.
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match tokens.get(token) {
            Some((who, exp)) if now < *exp => Some((who.clone(), *exp)),
            _ => None,
        }
    }

    fn put(&self, token: &str, who: &Identity, exp: i64) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= VERIFIED_KEPT {
            tokens.clear();
        }
        tokens.insert(token.into(), (who.clone(), exp));
    }
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

/// `exp` as a time; one past chrono's range is as good as never.
fn expiry(exp: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(exp, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A freshly minted token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minted {
    pub token: String,
    pub user_id: String,
    pub expires_at: DateTime<Utc>,
}

impl TokenKeys {
    pub fn new(secret: &Secret) -> Result<Self, IdentityError> {
        // Only HS256: a token naming any other algorithm, `none` included, fails.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = 0;
        // `exp` and `nbf` are checked in `verify_until_at`, against its `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Ok(TokenKeys {
            encoding: EncodingKey::from_secret(secret.0.as_bytes())
                .map_err(|_| IdentityError::Signing)?,
            decoding: DecodingKey::from_secret(secret.0.as_bytes())
                .map_err(|_| IdentityError::Signing)?,
            validation,
            verified: Arc::default(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Identity, IdentityError> {
        self.verify_until(token).map(|(who, _)| who)
    }

    /// The caller and when its token expires: a socket or an event stream
    /// opened with it ends then.
    pub fn verify_until(&self, token: &str) -> Result<(Identity, DateTime<Utc>), IdentityError> {
        self.verify_until_at(token, Utc::now())
    }

    /// `verify_until` as of `now`.
    pub fn verify_until_at(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(Identity, DateTime<Utc>), IdentityError> {
        // `exp` is checked without leeway, by the cache as below.
        let now = now.timestamp();
        if let Some((who, exp)) = self.verified.get(token, now) {
            return Ok((who, expiry(exp)));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| IdentityError::Invalid)?;
        let claims = data.claims;
        // A token not valid yet (`nbf` ahead) is refused like an expired one.
        if now >= claims.exp || claims.nbf.is_some_and(|nbf| nbf > now) {
            return Err(IdentityError::Invalid);
        }
        check_subject(&claims.sub).map_err(|_| IdentityError::Invalid)?;
        let role = claims.role.parse().map_err(|_| IdentityError::Invalid)?;
        let name = claims.name.filter(|n| check_name(n).is_ok());
        let who = Identity {
            user_id: claims.sub,
            name,
            role,
        };
        self.verified.put(token, &who, claims.exp);
        Ok((who, expiry(claims.exp)))
    }

    pub fn mint(
        &self,
        who: &Identity,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Minted, IdentityError> {
        check_subject(&who.user_id)?;
        if let Some(name) = &who.name {
            check_name(name)?;
        }
        let ttl = chrono::TimeDelta::from_std(ttl).map_err(|_| IdentityError::Signing)?;
        let expires_at = now + ttl;
        let claims = Claims {
            sub: who.user_id.clone(),
            role: role_name(who.role).to_owned(),
            name: who.name.clone(),
            exp: expires_at.timestamp(),
            nbf: None,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| IdentityError::Signing)?;
        Ok(Minted {
            token,
            user_id: who.user_id.clone(),
            expires_at,
        })
    }

    /// A viewer token for someone who only gave a name.
    pub fn mint_guest(&self, name: &str, now: DateTime<Utc>) -> Result<Minted, IdentityError> {
        let name = name.trim();
        check_name(name)?;
        let who = Identity {
            user_id: format!("guest-{}", uuid::Uuid::new_v4().simple()),
            name: Some(name.to_owned()),
            role: Role::Viewer,
        };
        self.mint(&who, GUEST_TTL, now)
    }
}

/// Long enough for a whole broadcast and its payment window.
pub const GUEST_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Host => "host",
        Role::Operator => "operator",
    }
}

pub fn check_subject(sub: &str) -> Result<(), IdentityError> {
    let n = sub.chars().count();
    if (1..=64).contains(&n) && crate::text::check_visible_line(sub).is_ok() {
        Ok(())
    } else {
        Err(IdentityError::BadSubject)
    }
}

pub fn check_name(name: &str) -> Result<(), IdentityError> {
    let n = name.chars().count();
    if (1..=40).contains(&n) && crate::text::check_visible_line(name).is_ok() && name.trim() == name
    {
        Ok(())
    } else {
        Err(IdentityError::BadName)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn keys() -> TokenKeys {
        TokenKeys::new(&Secret("k".repeat(32))).unwrap()
    }

    /// The host's token, valid for 60 s from `issued`.
    fn minted_at(k: &TokenKeys, issued: DateTime<Utc>) -> Minted {
        k.mint(&host(), std::time::Duration::from_secs(60), issued)
            .unwrap()
    }

    fn host() -> Identity {
        Identity {
            user_id: "alice".into(),
            name: Some("Alice".into()),
            role: Role::Host,
        }
    }

    #[test]
    fn round_trip() {
        let k = keys();
        let minted = k.mint(&host(), GUEST_TTL, Utc::now()).unwrap();
        assert_eq!(k.verify(&minted.token).unwrap(), host());
    }

    #[test]
    fn a_verified_token_is_remembered_only_until_it_expires() {
        let k = keys();
        let t = minted_at(&k, Utc::now() - chrono::TimeDelta::seconds(59));
        assert_eq!(k.verify(&t.token).unwrap(), host());
        assert_eq!(k.verify(&t.token).unwrap(), host(), "from the cache");
        // The same claims with a changed signature are another token.
        // (Not the last character: its low bits are padding.)
        let mut tampered = t.token.clone();
        let at = tampered.len() - 5;
        let other = if &tampered[at..=at] == "A" { "B" } else { "A" };
        tampered.replace_range(at..=at, other);
        assert_eq!(k.verify(&tampered), Err(IdentityError::Invalid));
        // A clone shares what its original verified.
        assert_eq!(k.clone().verify(&t.token).unwrap(), host());
        let at_expiry = t.expires_at;
        let before = at_expiry - chrono::TimeDelta::seconds(1);
        assert_eq!(k.verify_until_at(&t.token, before).unwrap().0, host());
        assert_eq!(
            k.verify_until_at(&t.token, at_expiry),
            Err(IdentityError::Invalid),
            "not from the cache once expired"
        );
        // Nor from the library, which is not asked about time: a fresh cache.
        assert_eq!(
            keys().verify_until_at(&t.token, at_expiry),
            Err(IdentityError::Invalid)
        );
    }

    #[test]
    fn expired_wrong_key_and_none_are_refused() {
        let k = keys();
        let old = minted_at(&k, Utc::now() - chrono::TimeDelta::hours(2));
        assert_eq!(k.verify(&old.token), Err(IdentityError::Invalid));

        let other = TokenKeys::new(&Secret("o".repeat(32))).unwrap();
        let forged = other.mint(&host(), GUEST_TTL, Utc::now()).unwrap();
        assert_eq!(k.verify(&forged.token), Err(IdentityError::Invalid));

        let exp = Utc::now().timestamp() + 3600;
        let header = b64(r#"{"alg":"none","typ":"JWT"}"#);
        let body = b64(&format!(
            r#"{{"sub":"alice","role":"operator","exp":{exp}}}"#
        ));
        assert_eq!(
            k.verify(&format!("{header}.{body}.")),
            Err(IdentityError::Invalid)
        );
    }

    #[test]
    fn a_token_not_valid_yet_is_refused_and_its_expiry_is_told() {
        let k = keys();
        let now = Utc::now().timestamp();
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret("k".repeat(32).as_bytes()).unwrap(),
            )
            .unwrap()
        };
        let later = sign(
            serde_json::json!({"sub": "a", "role": "viewer", "exp": now + 600, "nbf": now + 300}),
        );
        assert_eq!(k.verify(&later), Err(IdentityError::Invalid));
        let ok = sign(
            serde_json::json!({"sub": "a", "role": "viewer", "exp": now + 600, "nbf": now - 1}),
        );
        let (_, until) = k.verify_until(&ok).unwrap();
        assert_eq!(until.timestamp(), now + 600);
        // Cached, the same expiry.
        assert_eq!(k.verify_until(&ok).unwrap().1.timestamp(), now + 600);
    }

    #[test]
    fn missing_exp_and_unknown_role_are_refused() {
        let k = keys();
        let enc = EncodingKey::from_secret("k".repeat(32).as_bytes()).unwrap();
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "a", "role": "host"}),
            &enc,
        )
        .unwrap();
        assert_eq!(k.verify(&no_exp), Err(IdentityError::Invalid));
        let king = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "a", "role": "king", "exp": Utc::now().timestamp() + 60}),
            &enc,
        )
        .unwrap();
        assert_eq!(k.verify(&king), Err(IdentityError::Invalid));
    }

    #[test]
    fn guest_names_are_checked() {
        let k = keys();
        assert!(k.mint_guest("  Mei ", Utc::now()).is_ok());
        assert_eq!(
            k.mint_guest("", Utc::now()).unwrap_err(),
            IdentityError::BadName
        );
        assert_eq!(
            k.mint_guest("a\u{7}b", Utc::now()).unwrap_err(),
            IdentityError::BadName
        );
        assert_eq!(
            k.mint_guest(&"x".repeat(41), Utc::now()).unwrap_err(),
            IdentityError::BadName
        );
        for bad in ["nul\0", "\u{202E}ieM", "\u{200B}", "\u{3164}"] {
            assert_eq!(
                k.mint_guest(bad, Utc::now()).unwrap_err(),
                IdentityError::BadName,
                "{bad:?}"
            );
        }
        assert!(k.mint_guest("👨\u{200D}👩\u{200D}👧", Utc::now()).is_ok());
    }

    proptest::proptest! {
        /// Any string as a token: refused with 401's error, never a panic.
        #[test]
        fn any_token_is_refused(token in ".{0,300}") {
            proptest::prop_assert_eq!(keys().verify(&token), Err(IdentityError::Invalid));
        }

        /// Three base64url parts with arbitrary bytes: still refused.
        #[test]
        fn any_jwt_shaped_token_is_refused(h in ".{0,80}", b in ".{0,200}", sig in "[A-Za-z0-9_-]{0,60}") {
            let token = format!("{}.{}.{sig}", b64(&h), b64(&b));
            proptest::prop_assert_eq!(keys().verify(&token), Err(IdentityError::Invalid));
        }
    }

    #[test]
    fn ownership() {
        let h = host();
        assert!(h.may_manage("alice"));
        assert!(!h.may_manage("bob"));
        let op = Identity {
            role: Role::Operator,
            ..h.clone()
        };
        assert!(op.may_manage("bob"));
        let viewer = Identity {
            role: Role::Viewer,
            ..h
        };
        assert!(!viewer.may_manage("alice"));
    }
}
