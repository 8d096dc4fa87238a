//! Who is asking: API keys → tenants (docs/protocol.md §4), and the ids that name tenants
//! and indices (they become folder names under `--data-dir`, so they are checked here, once).

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::protocol::Head;
use std::collections::HashMap;

/// The tenant of a request. With `keys` (authentication on), the request's `api_key` must be
/// one of them and names the tenant (`ping` needs no key: `public`); without, the request's
/// `tenant_id`, or `default`. Errors: `AUTH` for a missing or unknown key, `INVALID_INPUT` for
/// a `tenant_id` that is not a [`valid_id`]. The key is compared in constant time
/// ([`key_tenant`]), never logged or echoed.
pub fn tenant_of(keys: Option<&HashMap<String, String>>, public: bool, head: &Head) -> Result<String> {
    let tenant = match keys {
        Some(keys) if !public => {
            let key = head.api_key.ok_or_else(|| Error::new(ErrorKind::Auth, "API key required"))?;
            key_tenant(keys, key).cloned().ok_or_else(|| Error::new(ErrorKind::Auth, "Invalid API key"))?
        }
        _ => head.tenant_id.filter(|s| !s.is_empty()).unwrap_or("default").to_string(),
    };
    valid_id("tenant_id", &tenant)?;
    Ok(tenant)
}

/// The tenant of API key `given`, comparing it with every key in constant time (`subtle`):
/// the time taken depends on the configured keys' lengths only, never on how much of
/// `given` matches which key (a hash-map lookup would hash `given` and compare it with
/// memcmp, which stops at the first differing byte).
pub fn key_tenant<'a>(keys: &'a HashMap<String, String>, given: &str) -> Option<&'a String> {
    use subtle::ConstantTimeEq;
    let g = given.as_bytes();
    let mut found = None;
    for (key, tenant) in keys {
        let k = key.as_bytes();
        let mut same = (k.len() as u64).ct_eq(&(g.len() as u64));
        for (i, b) in k.iter().enumerate() {
            same &= b.ct_eq(g.get(i).unwrap_or(&0));
        }
        if bool::from(same) {
            found = Some(tenant);
        }
    }
    found
}

/// Check an index or tenant id: 1–128 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn valid_id(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        let shown: String = s.chars().take(40).collect();
        Err(Error::invalid(format!(
            "invalid {what} {shown:?}: use 1-128 characters from [A-Za-z0-9._-], not \".\" or \"..\""
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly() {
        let keys: HashMap<String, String> =
            [("k1", "acme"), ("k12", "globex")].iter().map(|(k, t)| (k.to_string(), t.to_string())).collect();
        assert_eq!(key_tenant(&keys, "k1").map(String::as_str), Some("acme"));
        assert_eq!(key_tenant(&keys, "k12").map(String::as_str), Some("globex"));
        for wrong in ["k", "k2", "k1\0", "k123", "K1"] {
            assert_eq!(key_tenant(&keys, wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn ids_are_checked() {
        for bad in ["", ".", "..", "../x", "a/b", &"x".repeat(129), "a b"] {
            assert!(valid_id("index_id", bad).is_err(), "{bad:?}");
        }
        for good in ["docs", "a.b-c_d", ".hidden", &"x".repeat(128)] {
            assert!(valid_id("index_id", good).is_ok(), "{good:?}");
        }
    }
}
