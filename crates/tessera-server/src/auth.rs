//! API keys: read-only and read-write. Keys are compared in constant time
//! and never logged; the `Debug` form of [`ApiKeys`] shows only counts.

use crate::error::{ApiError, ErrorKind};
use std::path::Path;

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
}

/// The configured keys. With none, every request is allowed everything.
#[derive(Clone, Default)]
pub struct ApiKeys {
    read_only: Vec<Vec<u8>>,
    read_write: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("read_only", &self.read_only.len())
            .field("read_write", &self.read_write.len())
            .finish()
    }
}

impl ApiKeys {
    pub fn is_empty(&self) -> bool {
        self.read_only.is_empty() && self.read_write.is_empty()
    }

    pub fn add(&mut self, access: Access, key: &str) -> Result<(), String> {
        if key.len() < 16 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("an API key must be at least 16 characters with no whitespace".into());
        }
        match access {
            Access::Read => self.read_only.push(key.as_bytes().to_vec()),
            Access::Write => self.read_write.push(key.as_bytes().to_vec()),
        }
        Ok(())
    }

    /// Parses keys, one per line or separated by commas: `rw:KEY` (read-write)
    /// or `ro:KEY` (read-only); blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = ApiKeys::default();
        let entries = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        for (i, entry) in entries.flat_map(|l| l.split(',')).map(str::trim).filter(|e| !e.is_empty()).enumerate() {
            let (access, key) = match entry.split_once(':') {
                Some(("rw", key)) => (Access::Write, key),
                Some(("ro", key)) => (Access::Read, key),
                _ => return Err(format!("key entry {}: expected rw:KEY or ro:KEY", i + 1)),
            };
            keys.add(access, key).map_err(|e| format!("key entry {}: {e}", i + 1))?;
        }
        Ok(keys)
    }

    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The access a presented key grants.
    fn grant(&self, key: &[u8]) -> Option<Access> {
        // Check every key whatever matches, so timing reveals no prefix.
        let rw = self.read_write.iter().fold(false, |acc, k| acc | ct_eq(k, key));
        let ro = self.read_only.iter().fold(false, |acc, k| acc | ct_eq(k, key));
        if rw {
            Some(Access::Write)
        } else if ro {
            Some(Access::Read)
        } else {
            None
        }
    }

    /// Checks a request's credential (the value of `Authorization: Bearer KEY`
    /// or `x-api-key: KEY`, already extracted) against what it needs.
    pub fn check(&self, presented: Option<&str>, need: Access) -> Result<(), ApiError> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(key) = presented else {
            return Err(ApiError::new(
                ErrorKind::Unauthenticated,
                "an API key is required: send `Authorization: Bearer <key>`",
            ));
        };
        match self.grant(key.as_bytes()) {
            None => Err(ApiError::new(ErrorKind::Unauthenticated, "unknown API key")),
            Some(have) if have < need => {
                Err(ApiError::new(ErrorKind::PermissionDenied, "this API key is read-only; the request writes"))
            }
            Some(_) => Ok(()),
        }
    }
}

/// Extracts the key from an `authorization` header value (`Bearer KEY`) or
/// an `x-api-key` value. An `authorization` header of another scheme counts
/// only when there is no `x-api-key` (and then matches no key).
pub fn credential<'a>(authorization: Option<&'a str>, x_api_key: Option<&'a str>) -> Option<&'a str> {
    let bearer = authorization.map(|v| match v.trim().split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => Some(key.trim()),
        _ => None,
    });
    match (bearer, x_api_key) {
        (Some(Some(key)), _) => Some(key),
        (_, Some(key)) => Some(key.trim()),
        (Some(None), None) => Some(""),
        (None, None) => None,
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_grant_their_access_only() {
        let keys = ApiKeys::parse("# keys\nrw:write-key-0123456789\nro:read-key-01234567890, ro:read-key-2-0123456789")
            .unwrap();
        assert!(keys.check(Some("write-key-0123456789"), Access::Write).is_ok());
        assert!(keys.check(Some("read-key-01234567890"), Access::Read).is_ok());
        assert!(keys.check(Some("read-key-2-0123456789"), Access::Read).is_ok());
        let e = keys.check(Some("read-key-01234567890"), Access::Write).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        assert_eq!(keys.check(Some("nope-nope-nope-nope"), Access::Read).unwrap_err().kind, ErrorKind::Unauthenticated);
        assert_eq!(keys.check(None, Access::Read).unwrap_err().kind, ErrorKind::Unauthenticated);
        assert_eq!(keys.check(Some("write-key-012345678"), Access::Read).unwrap_err().kind, ErrorKind::Unauthenticated);
        assert!(!format!("{keys:?}").contains("key-"));
    }

    #[test]
    fn bad_key_files_are_refused() {
        assert!(ApiKeys::parse("admin:abcdefghijklmnopq").is_err());
        assert!(ApiKeys::parse("rw:short").is_err());
        assert!(ApiKeys::parse("").unwrap().is_empty());
        assert!(ApiKeys::default().check(None, Access::Write).is_ok());
    }

    #[test]
    fn credentials_come_from_either_header() {
        assert_eq!(credential(Some("Bearer abc"), None), Some("abc"));
        assert_eq!(credential(Some("bearer  abc "), None), Some("abc"));
        assert_eq!(credential(Some("Basic abc"), None), Some(""));
        assert_eq!(credential(None, Some("abc")), Some("abc"));
        assert_eq!(credential(Some("Basic xyz"), Some("abc")), Some("abc"));
        assert_eq!(credential(Some("Bearer abc"), Some("xyz")), Some("abc"));
        assert_eq!(credential(None, None), None);
    }
}
