//! Request bodies of the catalog and the contract's bounds on them.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use super::{Checkout, NewProduct, NewSale, ShipsTo, DEFAULT_CLAIM_WINDOW_HOURS};

/// Prices above this could overflow a total; no lychee box costs that much.
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;
pub const MAX_STOCK: i64 = 10_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

#[derive(Debug, Deserialize)]
pub struct CreateSale {
    pub title: String,
    pub description: Option<String>,
    pub scheduled_at: Option<String>,
    pub checkout: Option<String>,
    pub reservation_ttl_secs: Option<i64>,
    pub stream_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CreateProduct {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub currency: Option<String>,
    pub stock: i64,
    pub per_user_limit: Option<i64>,
    pub ships_by: Option<String>,
    pub ships_to: Option<ShipsToBody>,
    pub claim_window_hours: Option<i64>,
}

/// `ships_to` as sent: unknown fields are refused (a typo such as
/// `"includes"` must not silently ship everywhere).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipsToBody {
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
}

/// Each code a GB/T 2260 province-level code, each once.
fn provinces(field: &str, list: Option<Vec<String>>) -> Result<Option<Vec<String>>, Invalid> {
    let Some(list) = list else {
        return Ok(None);
    };
    let mut seen = std::collections::BTreeSet::new();
    for code in &list {
        if crate::fulfilment::address::provinces::province(code).is_none() {
            let shown: String = code.chars().take(12).collect();
            return Err(invalid(format!(
                "ships_to.{field}: {shown:?} is not a GB/T 2260 province-level code such as \"440000\""
            )));
        }
        if !seen.insert(code.as_str()) {
            return Err(invalid(format!("ships_to.{field}: {code} is listed twice")));
        }
    }
    Ok(Some(list))
}

impl ShipsToBody {
    pub fn validate(self) -> Result<ShipsTo, Invalid> {
        let include = provinces("include", self.include)?;
        let exclude = provinces("exclude", self.exclude)?;
        if include.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(
                "ships_to.include is empty: the product would ship nowhere; leave it out to ship everywhere",
            ));
        }
        Ok(ShipsTo { include, exclude })
    }
}

#[derive(Debug, Deserialize)]
pub struct Restock {
    pub add: i64,
}

#[derive(Debug, Deserialize)]
pub struct Pin {
    pub sku: String,
}

/// A one-line text of `1..=max` characters after trimming, that shows
/// something and holds no control or invisible character (`crate::text`).
pub fn line(field: &str, value: &str, max: usize) -> Result<String, Invalid> {
    let v = value.trim();
    let n = v.chars().count();
    if n == 0 || n > max {
        return Err(invalid(format!("{field} must be 1..={max} characters")));
    }
    crate::text::check_visible_line(v).map_err(|e| invalid(format!("{field} {e}")))?;
    Ok(v.to_owned())
}

/// `[A-Za-z0-9_-]{1,64}`.
pub fn sku(value: &str) -> Result<String, Invalid> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(invalid("sku must be 1..=64 characters of [A-Za-z0-9_-]"))
    }
}

/// The players of mainland streaming platforms (Douyin, Kuaishou, WeChat
/// Channels, Bilibili live and its embeddable player): the default of
/// `--stream-hosts`.
pub const DEFAULT_STREAM_HOSTS: &str =
    "live.douyin.com,live.kuaishou.com,channels.weixin.qq.com,live.bilibili.com,player.bilibili.com";

/// Where a sale's broadcast may come from. The viewer page frames the
/// `stream_url`, so an arbitrary one would let any host put any https page
/// (a fake checkout, say) inside ours. The same list is the pages'
/// `frame-src`, so the browser refuses anything else as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHosts(Vec<HostPattern>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// This host alone.
    Exact(String),
    /// Any subdomain of this domain (not the domain itself, as in CSP).
    Subdomains(String),
}

impl StreamHosts {
    /// Host names, lower-cased and IDNA-encoded; `*.domain` admits the
    /// domain's subdomains. Empty entries are skipped; no entry at all
    /// admits no `stream_url`.
    pub fn parse<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> Result<Self, Invalid> {
        let mut patterns = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let bad = || invalid(format!("{entry:?} is not a host name or *.domain"));
            let (wildcard, name) = match entry.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, entry),
            };
            let Ok(url::Host::Domain(domain)) = url::Host::parse(name) else {
                return Err(bad());
            };
            // Only what a DNS name may hold: the list goes into a CSP
            // header, where `;`, `,`, `*` or a space would change its meaning.
            let labels_ok = domain.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
            // `*.com` would admit half the web.
            if !labels_ok || (wildcard && !domain.contains('.')) {
                return Err(bad());
            }
            let pattern = if wildcard {
                HostPattern::Subdomains(domain)
            } else {
                HostPattern::Exact(domain)
            };
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
        Ok(StreamHosts(patterns))
    }

    /// Whether `host` (as the `url` crate gives it: lower-case, IDNA) is listed.
    pub fn allows(&self, host: &str) -> bool {
        self.0.iter().any(|p| match p {
            HostPattern::Exact(h) => host == h,
            HostPattern::Subdomains(d) => host
                .strip_suffix(d.as_str())
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        })
    }

    /// CSP source expressions: `https://host`, `https://*.domain`.
    pub fn csp_sources(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|p| match p {
                HostPattern::Exact(h) => format!("https://{h}"),
                HostPattern::Subdomains(d) => format!("https://*.{d}"),
            })
            .collect()
    }

    fn describe(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                HostPattern::Exact(h) => h.clone(),
                HostPattern::Subdomains(d) => format!("*.{d}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Default for StreamHosts {
    fn default() -> Self {
        StreamHosts::parse(DEFAULT_STREAM_HOSTS.split(','))
            .expect("BUG: the default stream hosts are valid host names")
    }
}

impl CreateSale {
    pub fn validate(self, hosts: &StreamHosts) -> Result<NewSale, Invalid> {
        let title = line("title", &self.title, 120)?;
        let description = match self.description {
            Some(d) if d.chars().count() > 2000 => {
                return Err(invalid("description must be at most 2000 characters"))
            }
            Some(d) => {
                crate::text::check_multiline(&d)
                    .map_err(|e| invalid(format!("description {e}")))?;
                Some(d)
            }
            None => None,
        };
        let scheduled_at = self
            .scheduled_at
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|_| invalid("scheduled_at must be an RFC 3339 time"))
            })
            .transpose()?;
        let checkout = match self.checkout.as_deref() {
            None | Some("reserve") => Checkout::Reserve,
            Some("instant") => Checkout::Instant,
            Some(_) => return Err(invalid("checkout must be \"reserve\" or \"instant\"")),
        };
        let ttl = self.reservation_ttl_secs.unwrap_or(300);
        if !(30..=3600).contains(&ttl) {
            return Err(invalid("reservation_ttl_secs must be 30..=3600"));
        }
        let stream_url = self.stream_url.map(|u| stream_url(&u, hosts)).transpose()?;
        Ok(NewSale {
            title,
            description,
            scheduled_at,
            checkout,
            reservation_ttl_secs: ttl as i32,
            stream_url,
        })
    }
}

/// An https URL on a listed host, on the default port (the CSP's
/// `https://host` admits no other) and without user info (which only
/// serves to make `https://live.douyin.com@evil.example/` look listed).
/// Any path is fine: a player page, an HLS playlist or an MP4.
fn stream_url(u: &str, hosts: &StreamHosts) -> Result<String, Invalid> {
    let bad = || invalid("stream_url must be an https URL of at most 2048 characters");
    if u.len() > 2048 {
        return Err(bad());
    }
    let parsed = url::Url::parse(u).map_err(|_| bad())?;
    let url::Host::Domain(host) = parsed.host().ok_or_else(bad)? else {
        return Err(not_listed(hosts));
    };
    if parsed.scheme() != "https" {
        return Err(bad());
    }
    let plain = parsed.username().is_empty() && parsed.password().is_none();
    if !plain || parsed.port().is_some() || !hosts.allows(host) {
        return Err(not_listed(hosts));
    }
    Ok(parsed.to_string())
}

fn not_listed(hosts: &StreamHosts) -> Invalid {
    if hosts.0.is_empty() {
        return invalid("this deployment accepts no stream_url");
    }
    invalid(format!(
        "stream_url must be an https URL on a streaming platform this deployment allows \
         (default port, no user info): {}",
        hosts.describe()
    ))
}

impl CreateProduct {
    pub fn validate(self) -> Result<NewProduct, Invalid> {
        let sku = sku(&self.sku)?;
        let name = line("name", &self.name, 120)?;
        if !(1..=MAX_PRICE_CENTS).contains(&self.price_cents) {
            return Err(invalid(format!(
                "price_cents must be 1..={MAX_PRICE_CENTS}"
            )));
        }
        let currency = self.currency.unwrap_or_else(|| "CNY".into());
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid("currency must be an ISO 4217 code such as CNY"));
        }
        if !(0..=MAX_STOCK).contains(&self.stock) {
            return Err(invalid(format!("stock must be 0..={MAX_STOCK}")));
        }
        let limit = self.per_user_limit.unwrap_or(5);
        if !(1..=1000).contains(&limit) {
            return Err(invalid("per_user_limit must be 1..=1000"));
        }
        let ships_by = self.ships_by.map(|d| ships_by(&d)).transpose()?;
        let ships_to = self.ships_to.map(ShipsToBody::validate).transpose()?;
        let window = self
            .claim_window_hours
            .unwrap_or(DEFAULT_CLAIM_WINDOW_HOURS.into());
        if !(1..=720).contains(&window) {
            return Err(invalid("claim_window_hours must be 1..=720"));
        }
        Ok(NewProduct {
            sku,
            name,
            price_cents: self.price_cents,
            currency,
            stock: self.stock,
            per_user_limit: limit as i32,
            ships_by,
            ships_to,
            claim_window_hours: window as i32,
        })
    }
}

/// `YYYY-MM-DD` in years 1..=9999. chrono also reads year 0 and signed
/// years of five digits or more ("+10000-01-01"), which PostgreSQL refuses
/// or stores as BC dates, and which no harvest ships by.
fn ships_by(d: &str) -> Result<NaiveDate, Invalid> {
    use chrono::Datelike;
    NaiveDate::parse_from_str(d, "%Y-%m-%d")
        .ok()
        .filter(|date| (1..=9999).contains(&date.year()))
        .ok_or_else(|| invalid("ships_by must be a date, YYYY-MM-DD, in years 1..=9999"))
}

impl Restock {
    pub fn validate(self) -> Result<i64, Invalid> {
        if (1..=MAX_STOCK).contains(&self.add) {
            Ok(self.add)
        } else {
            Err(invalid(format!("add must be 1..={MAX_STOCK}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale(title: &str) -> CreateSale {
        CreateSale {
            title: title.into(),
            description: None,
            scheduled_at: None,
            checkout: None,
            reservation_ttl_secs: None,
            stream_url: None,
        }
    }

    fn hosts() -> StreamHosts {
        StreamHosts::default()
    }

    fn url_ok(hosts: &StreamHosts, u: &str) -> bool {
        stream_url(u, hosts).is_ok()
    }

    #[test]
    fn stream_urls_must_be_on_a_listed_host() {
        let h = StreamHosts::parse(["live.douyin.com", "*.bilivideo.com", "直播.example"]).unwrap();
        for good in [
            "https://live.douyin.com/123456",
            "https://LIVE.Douyin.COM/123456",
            "https://live.douyin.com:443/123456",
            "https://cn-gd.bilivideo.com/live/1.m3u8",
            "https://a.b.bilivideo.com/v/1.mp4?token=x",
            "https://直播.example/room",
            "https://xn--z6ut02b.example/room",
        ] {
            assert!(url_ok(&h, good), "{good}");
        }
        for bad in [
            "https://evil.com/live.douyin.com",
            "https://evil.com/?u=https://live.douyin.com/",
            "https://live.douyin.com.evil.com/",
            "https://live.douyin.com@evil.com/",
            "https://evil.com@live.douyin.com/",
            "https://user:pw@live.douyin.com/",
            "https://live.douyin.com:8443/",
            "https://live.douyin.com./",
            "https://douyin.com/",
            "https://xlive.douyin.com/",
            "https://bilivideo.com/live/1.m3u8",
            "https://evilbilivideo.com/",
            "http://live.douyin.com/",
            "wss://live.douyin.com/",
            "https://1.2.3.4/",
            "https://[::1]/",
            "https://%6c%69%76%65.douyin.com.evil.com/",
            "javascript:alert(1)",
            "https://live.dοuyin.com/",
        ] {
            assert!(!url_ok(&h, bad), "{bad}");
        }
        // A stored URL is the parsed one: lower-case, IDNA, default port dropped.
        assert_eq!(
            stream_url("https://LIVE.douyin.com:443/r", &h).unwrap(),
            "https://live.douyin.com/r"
        );
        // No list, no stream.
        let none = StreamHosts::parse(Vec::<String>::new()).unwrap();
        assert!(!url_ok(&none, "https://live.douyin.com/1"));
    }

    #[test]
    fn stream_host_entries_are_host_names() {
        let h = StreamHosts::parse([" Live.Douyin.com ", "", "*.Bilivideo.com", "直播.example"])
            .unwrap();
        assert_eq!(
            h.csp_sources(),
            [
                "https://live.douyin.com",
                "https://*.bilivideo.com",
                "https://xn--z6ut02b.example"
            ]
        );
        for bad in [
            "*.com",
            "*",
            "evil.com/x",
            "evil.com;script-src *",
            "evil.com,x",
            "https://live.douyin.com",
            "live.douyin.com:443",
            "a b.com",
            "1.2.3.4",
            "[::1]",
            "*.*.douyin.com",
            "live..douyin.com",
            "user@live.douyin.com",
        ] {
            assert!(StreamHosts::parse([bad]).is_err(), "{bad:?}");
        }
        assert_eq!(StreamHosts::default().csp_sources().len(), 5);
    }

    #[test]
    fn sale_bounds() {
        let h = hosts();
        assert!(sale(&"x".repeat(120)).validate(&h).is_ok());
        assert!(sale(&"x".repeat(121)).validate(&h).is_err());
        assert!(sale("   ").validate(&h).is_err());
        assert!(sale("a\nb").validate(&h).is_err());
        let mut s = sale("ok");
        s.reservation_ttl_secs = Some(29);
        assert!(s.validate(&hosts()).is_err());
        let mut s = sale("ok");
        s.stream_url = Some("http://live.douyin.com/live".into());
        assert!(s.validate(&hosts()).is_err());
        let mut s = sale("ok");
        s.stream_url = Some("https://live.douyin.com/room/1".into());
        s.checkout = Some("instant".into());
        let v = s.validate(&hosts()).unwrap();
        assert_eq!(v.checkout, Checkout::Instant);
        assert_eq!(v.reservation_ttl_secs, 300);
    }

    fn product() -> CreateProduct {
        CreateProduct {
            sku: "FZX-5kg".into(),
            name: "Feizixiao lychee 5 kg box".into(),
            price_cents: 12800,
            currency: None,
            stock: 100,
            per_user_limit: None,
            ships_by: Some("2027-06-20".into()),
            ships_to: None,
            claim_window_hours: None,
        }
    }

    proptest::proptest! {
        /// Arbitrary fields: a validated sale within every bound, or a reason.
        #[test]
        fn any_sale_body_validates_or_is_refused(
            title in ".{0,150}",
            description in proptest::option::of(".{0,50}"),
            scheduled_at in proptest::option::of(".{0,30}"),
            checkout in proptest::option::of("(reserve|instant|.{0,8})"),
            ttl in proptest::option::of(proptest::num::i64::ANY),
            stream_url in proptest::option::of("(https://(live\\.douyin\\.com|[a-z]{1,10}\\.example)/.{0,20}|.{0,30})"),
        ) {
            let body = CreateSale { title, description, scheduled_at, checkout, reservation_ttl_secs: ttl, stream_url };
            if let Ok(s) = body.validate(&hosts()) {
                let n = s.title.chars().count();
                proptest::prop_assert!((1..=120).contains(&n));
                proptest::prop_assert!((30..=3600).contains(&s.reservation_ttl_secs));
                proptest::prop_assert!(s.stream_url.is_none_or(|u| u.starts_with("https://live.douyin.com/")));
            }
        }

        #[test]
        fn any_product_body_validates_or_is_refused(
            sku in ".{0,70}",
            name in ".{0,130}",
            price in proptest::num::i64::ANY,
            currency in proptest::option::of(".{0,4}"),
            stock in proptest::num::i64::ANY,
            limit in proptest::option::of(proptest::num::i64::ANY),
            ships_by in proptest::option::of(".{0,12}"),
        ) {
            let body = CreateProduct { sku, name, price_cents: price, currency, stock, per_user_limit: limit, ships_by, ships_to: None, claim_window_hours: None };
            if let Ok(p) = body.validate() {
                proptest::prop_assert!(self::sku(&p.sku).is_ok());
                proptest::prop_assert!(p.price_cents > 0 && p.price_cents <= MAX_PRICE_CENTS);
                proptest::prop_assert!((0..=MAX_STOCK).contains(&p.stock));
                proptest::prop_assert!((1..=1000).contains(&p.per_user_limit));
                proptest::prop_assert!(p.ships_by.is_none_or(|d| (1..=9999).contains(&chrono::Datelike::year(&d))));
            }
        }
    }

    #[test]
    fn names_keep_emoji_and_refuse_nul_and_invisible_text() {
        let family = "荔枝 👨\u{200D}👩\u{200D}👧 box";
        let mut p = product();
        p.name = family.into();
        assert_eq!(p.validate().unwrap().name, family, "kept verbatim");
        for bad in [
            "nul\0here",
            "\u{202E}txt.exe",
            "zero\u{200B}width",
            "\u{200D}",
            "\u{3164}",
        ] {
            let mut p = product();
            p.name = bad.into();
            assert!(p.validate().is_err(), "{bad:?}");
            assert!(sale(bad).validate(&hosts()).is_err(), "{bad:?}");
        }
        let mut s = sale("ok");
        s.description = Some("line one\nline two".into());
        assert!(s.validate(&hosts()).is_ok());
        let mut s = sale("ok");
        s.description = Some("nul\0".into());
        assert!(s.validate(&hosts()).is_err());
    }

    #[test]
    fn product_bounds() {
        let p = product().validate().unwrap();
        assert_eq!((p.currency.as_str(), p.per_user_limit), ("CNY", 5));
        for bad in ["has space", "", "ü", &"x".repeat(65)] {
            let mut p = product();
            p.sku = bad.into();
            assert!(p.validate().is_err(), "{bad:?}");
        }
        let mut p = product();
        p.price_cents = 0;
        assert!(p.validate().is_err());
        let mut p = product();
        p.stock = MAX_STOCK + 1;
        assert!(p.validate().is_err());
        let mut p = product();
        p.currency = Some("cny".into());
        assert!(p.validate().is_err());
        let mut p = product();
        p.ships_by = Some("next week".into());
        assert!(p.validate().is_err());
        let mut p = product();
        p.per_user_limit = Some(1001);
        assert!(p.validate().is_err());
    }

    #[test]
    fn ships_by_is_within_years_1_to_9999() {
        for good in ["0001-01-01", "2027-06-20", "9999-12-31"] {
            let mut p = product();
            p.ships_by = Some(good.into());
            assert!(p.validate().is_ok(), "{good:?}");
        }
        for bad in [
            "0000-01-01",
            "+10000-01-01",
            "+262143-12-31",
            "-0001-01-01",
            "-262144-01-01",
            "10000-01-01",
            "2027-02-30",
            "2027-6-20x",
        ] {
            let mut p = product();
            p.ships_by = Some(bad.into());
            assert!(p.validate().is_err(), "{bad:?}");
        }
    }
}
