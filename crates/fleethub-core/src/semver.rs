//! Semantic versions: one parse and one sort key, used by the query language's `SEMVER(expr)`
//! (in both of its executors), the simulator and the firmware contract.
//!
//! A version maps to a sort key string whose byte order is semantic-version precedence, so the
//! evaluator and SQLite (through the registered `fh_semver`) compare them the same way:
//! each of MAJOR, MINOR, PATCH is zero-padded to 20 digits; a release ends in `~`, a prerelease
//! in `#` followed by its identifiers joined with `!` — numeric identifiers as `0` plus 20
//! digits, others as `1` plus their text. `!` sorts below every identifier character, so a
//! shorter identifier list that is a prefix of a longer one sorts first, as SemVer 2.0 wants.

/// A parsed version; build metadata is dropped because it never affects precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// MAJOR, MINOR, PATCH.
    pub core: [u64; 3],
    /// Prerelease identifiers, empty for a release.
    pub pre: Vec<Ident>,
}

/// One prerelease identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ident {
    /// An identifier of digits only, compared numerically.
    Num(u64),
    /// Any other identifier, compared as ASCII text.
    Text(String),
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `[v]MAJOR[.MINOR[.PATCH]][-prerelease][+build]`; missing MINOR/PATCH are 0.
pub fn parse(text: &str) -> Option<Version> {
    let s = text
        .strip_prefix('v')
        .or_else(|| text.strip_prefix('V'))
        .unwrap_or(text);
    let (s, build) = match s.split_once('+') {
        Some((head, build)) => (head, Some(build)),
        None => (s, None),
    };
    if let Some(build) = build {
        if build
            .split('.')
            .any(|b| b.is_empty() || !b.chars().all(is_ident_char))
        {
            return None;
        }
    }
    let (core, pre) = match s.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (s, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 {
        return None;
    }
    let mut nums = [0u64; 3];
    for (slot, part) in nums.iter_mut().zip(&parts) {
        *slot = number(part)?;
    }
    let mut idents = Vec::new();
    if let Some(pre) = pre {
        for id in pre.split('.') {
            if id.is_empty() || !id.chars().all(is_ident_char) {
                return None;
            }
            idents.push(match number(id) {
                Some(n) => Ident::Num(n),
                None if id.bytes().all(|b| b.is_ascii_digit()) => return None,
                None => Ident::Text(id.to_string()),
            });
        }
    }
    Some(Version {
        core: nums,
        pre: idents,
    })
}

impl Version {
    /// The sort key (see the module documentation).
    pub fn key(&self) -> String {
        let [a, b, c] = self.core;
        let mut key = format!("{a:020}.{b:020}.{c:020}");
        if self.pre.is_empty() {
            key.push('~');
            return key;
        }
        key.push('#');
        for (i, id) in self.pre.iter().enumerate() {
            if i > 0 {
                key.push('!');
            }
            match id {
                Ident::Num(n) => key.push_str(&format!("0{n:020}")),
                Ident::Text(t) => {
                    key.push('1');
                    key.push_str(t);
                }
            }
        }
        key
    }

    /// `MAJOR.MINOR.PATCH[-prerelease]`, the value `SEMVER(x)` yields.
    pub fn canonical(&self) -> String {
        let [a, b, c] = self.core;
        let mut s = format!("{a}.{b}.{c}");
        for (i, id) in self.pre.iter().enumerate() {
            s.push(if i == 0 { '-' } else { '.' });
            match id {
                Ident::Num(n) => s.push_str(&n.to_string()),
                Ident::Text(t) => s.push_str(t),
            }
        }
        s
    }
}

/// The sort key of a version string, or `None` if it does not parse.
pub fn semver_key(text: &str) -> Option<String> {
    parse(text).map(|v| v.key())
}

/// Orders version strings by semantic-version precedence; strings that do not parse come after
/// every version, in text order, so any list of reported versions sorts the same way everywhere.
pub fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    match (semver_key(a), semver_key(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lt(a: &str, b: &str) -> bool {
        semver_key(a).unwrap() < semver_key(b).unwrap()
    }

    #[test]
    fn minor_versions_compare_numerically_not_as_text() {
        assert!(lt("2.9.1", "2.10.0"));
        assert!(lt("2.10.0", "10.0.0"));
        assert!(!lt("2.10.0", "2.9.1"));
    }

    #[test]
    fn prereleases_sort_before_their_release_in_semver_order() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1-0",
            "1.0.1",
        ];
        for pair in ordered.windows(2) {
            assert!(lt(pair[0], pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert!(lt("1.0.0-alpha", "1.0.0-alpha-x"));
        assert!(lt("1.0.0-2", "1.0.0-a"));
    }

    #[test]
    fn short_forms_a_leading_v_and_build_metadata_are_accepted() {
        assert_eq!(semver_key("v2"), semver_key("2.0.0"));
        assert_eq!(semver_key("V2.1"), semver_key("2.1.0"));
        assert_eq!(semver_key("2.1.0+build.7"), semver_key("2.1.0"));
        assert_eq!(parse("v2.1-rc.1+x").unwrap().canonical(), "2.1.0-rc.1");
    }

    #[test]
    fn malformed_versions_do_not_parse() {
        for bad in [
            "",
            "v",
            "1.",
            "1..2",
            "1.2.3.4",
            "a.b.c",
            "1.2.3-",
            "1.2.3-a..b",
            "1.2.3+",
            "1.2.x",
            " 1.2.3",
            "1.2.3-é",
            "99999999999999999999999.0.0",
            "1.0.0-99999999999999999999999",
        ] {
            assert_eq!(semver_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn compare_orders_versions_by_precedence_and_text_last() {
        let mut v = vec![
            "2.10.0",
            "junk",
            "2.9.1",
            "1.0.0-rc.1",
            "v1.0.0",
            "1.0.0",
            "abc",
        ];
        v.sort_by(|a, b| compare(a, b));
        assert_eq!(
            v,
            [
                "1.0.0-rc.1",
                "1.0.0",
                "v1.0.0",
                "2.9.1",
                "2.10.0",
                "abc",
                "junk"
            ]
        );
    }
}
