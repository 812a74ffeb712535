//! Session affinity: a key read from the request (a header, a cookie, the client's IP),
//! hashed once, then weighted rendezvous hashing (Schindelhauer and Schomaker's
//! "weighted distributed hash tables"): each candidate scores `weight / -ln(u)`, with
//! `u` a uniform number drawn from the key and the candidate's name, and the highest
//! score wins. Expected shares equal the weights exactly; changing one weight moves
//! only the keys that the change requires; nothing is rebuilt when weights change.
//!
//! The hash is our own, fixed, so every proxy of a fleet and every build places a key
//! the same way (std's `DefaultHasher` promises no stability across Rust releases).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{header, HeaderMap, HeaderValue};
use ring::hmac;

use crate::config::{AffinityKey, CookieSigner};

/// The key's hash, when the request carries one (empty values count as none).
pub fn key_hash(key: &AffinityKey, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
    match key {
        AffinityKey::Header(name) => {
            let value = headers.get(name)?.as_bytes();
            (!value.is_empty()).then(|| hash(value))
        }
        AffinityKey::Cookie(name) => headers
            .get_all(header::COOKIE)
            .iter()
            .find_map(|line| cookie_value(line.as_bytes(), name.as_bytes()))
            .map(hash),
        AffinityKey::SignedCookie(signer) => headers
            .get_all(header::COOKIE)
            .iter()
            .find_map(|line| cookie_value(line.as_bytes(), signer.name.as_bytes()))
            .and_then(|value| signer.verified_id(value))
            .map(hash),
        AffinityKey::ClientIp => Some(match client {
            IpAddr::V4(ip) => hash(&ip.octets()),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => hash(&v4.octets()),
                None => hash(&ip.octets()),
            },
        }),
    }
}

/// Bytes of the tag kept in an inserted cookie (64 bits of HMAC-SHA256).
const TAG_BYTES: usize = 8;

impl CookieSigner {
    fn tag(&self, id: &[u8]) -> [u8; TAG_BYTES] {
        let full = hmac::sign(&self.key, id);
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full.as_ref()[..TAG_BYTES]);
        tag
    }

    /// The id of a cookie value `ID.TAG` whose tag is right; `None` for a made-up one.
    pub fn verified_id<'a>(&self, value: &'a [u8]) -> Option<&'a [u8]> {
        let dot = value.iter().position(|&b| b == b'.')?;
        let (id, tag) = (&value[..dot], &value[dot + 1..]);
        let expected = hex_digits(&self.tag(id));
        let same = tag.len() == expected.len() && tag.iter().zip(&expected).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
        same.then_some(id)
    }

    /// A new cookie: its id (what placement hashes) and the `Set-Cookie` value.
    pub fn issue(&self) -> (String, Option<HeaderValue>) {
        let id = format!("{:016x}", new_id());
        let mut cookie = format!(
            "{}={id}.{}; Path=/; HttpOnly; SameSite=Lax",
            self.name,
            String::from_utf8_lossy(&hex_digits(&self.tag(id.as_bytes())))
        );
        if let Some(age) = self.max_age {
            cookie.push_str(&format!("; Max-Age={}", age.as_secs().max(1)));
        }
        (id, HeaderValue::from_str(&cookie).ok())
    }
}

/// A fresh 64-bit id: a process-random seed and a counter, mixed. Unpredictable enough
/// for placement; the tag, not the id, is what stops a client choosing its site.
fn new_id() -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(crate::clock::unix_ms()));
    mix(seed ^ mix(COUNTER.fetch_add(1, Ordering::Relaxed)))
}

/// The tag as lower-case hex digits, on the stack (checked once per keyed request).
fn hex_digits(tag: &[u8; TAG_BYTES]) -> [u8; 2 * TAG_BYTES] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 2 * TAG_BYTES];
    for (i, b) in tag.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    out
}

/// The value of cookie `name` in one `Cookie` header line, if present and non-empty.
fn cookie_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    line.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let value = pair.strip_prefix(name)?.strip_prefix(b"=")?;
        let value = value.trim_ascii();
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        (!value.is_empty()).then_some(value)
    })
}

/// A 64-bit hash of `bytes`, eight bytes per round; stable across builds and machines.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15 ^ (bytes.len() as u64);
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix(h ^ u64::from_le_bytes(word));
    }
    h
}

/// SplitMix64's finaliser: a bijection that spreads every input bit over the output.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The rendezvous score of a candidate with `weight` (> 0) for a key: higher wins.
/// `seed` is the candidate's own hash (of its name), so scores do not depend on order.
pub fn score(key: u64, seed: u64, weight: f64) -> f64 {
    let h = mix(key ^ seed);
    // u in (0, 1): 53 random bits, never 0 or 1, so -ln(u) is finite and positive.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight / -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_cookie_is_found_among_others_and_in_any_cookie_line() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("theme=dark; sidx=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("a=b;  sid=\"u-42\" ;c=d"));
        let key = AffinityKey::Cookie("sid".into());
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(key_hash(&key, &headers, ip), Some(hash(b"u-42")));
        headers.clear();
        headers.append(header::COOKIE, HeaderValue::from_static("sid=; other=1"));
        assert_eq!(key_hash(&key, &headers, ip), None, "an empty cookie is no key");
    }

    #[test]
    fn an_inserted_cookie_verifies_and_a_made_up_one_does_not() {
        let signer = CookieSigner::new(
            "sg".into(),
            b"0123456789abcdef",
            Some(std::time::Duration::from_secs(3600)),
        );
        let (id, cookie) = signer.issue();
        let cookie = cookie.unwrap();
        let text = cookie.to_str().unwrap();
        assert!(text.ends_with("; Max-Age=3600") && text.contains("HttpOnly"), "{text}");
        let value = text.split(';').next().unwrap().strip_prefix("sg=").unwrap();
        assert_eq!(signer.verified_id(value.as_bytes()), Some(id.as_bytes()));
        let forged = format!("{}.{}", "0000000000000001", &value[17..]);
        assert_eq!(signer.verified_id(forged.as_bytes()), None);
        assert_eq!(signer.verified_id(b"0000000000000001"), None);
        assert_ne!(signer.issue().0, id, "ids differ");
    }

    #[test]
    fn a_client_ip_hashes_the_same_over_ipv4_and_mapped_ipv6() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let key = AffinityKey::ClientIp;
        let none = HeaderMap::new();
        assert_eq!(key_hash(&key, &none, v4), key_hash(&key, &none, mapped));
    }

    #[test]
    fn the_hash_is_fixed_across_builds() {
        // Pinned values: a change here moves every user of every fleet to another site.
        assert_eq!(hash(b""), 0x9E37_79B9_7F4A_7C15);
        assert_eq!(hash(b"user-1"), 0xf56c_2ff9_3273_e1cb, "{:#x}", hash(b"user-1"));
    }
}
