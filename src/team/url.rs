//! The shape of a team's Redis URL, and the URL as it may be shown.
//!
//! The URL can carry a password (`redis://:secret@host:6379/0`); everything
//! that prints or logs it goes through [`masked`], and validation messages
//! never echo the raw value.

/// The schemes rch accepts: plain TCP and TLS.
const SCHEMES: &[&str] = &["redis://", "rediss://"];

/// `redis://user:***@host:6379/0`: the URL with any password replaced.
pub fn masked(url: &str) -> String {
    let Some((scheme, rest)) = split_scheme(url) else {
        return "<not a redis URL>".to_string();
    };
    let (authority, tail) = split_authority(rest);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_string(),
            };
            format!("{scheme}{user}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// Whether the URL carries a password (or a bare secret as its user part).
pub fn has_password(url: &str) -> bool {
    split_scheme(url)
        .map(|(_, rest)| split_authority(rest).0.contains('@'))
        .unwrap_or(false)
}

/// `Ok` for `redis[s]://[user[:password]@]host[:port][/db]`; the problem otherwise.
pub fn check(url: &str) -> Result<(), String> {
    let shown = masked(url);
    let Some((_, rest)) = split_scheme(url) else {
        return Err(format!(
            "expected a URL starting with redis:// or rediss://, got \"{}\"",
            shown.escape_default()
        ));
    };
    let (authority, tail) = split_authority(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = split_port(host_port);
    if host.is_empty() {
        return Err(format!("no host in \"{}\"", shown.escape_default()));
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!(
                "port must be 1-65535 in \"{}\"",
                shown.escape_default()
            ));
        }
    }
    let db = tail.trim_start_matches('/');
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(format!(
            "the path must be a database number (/0) in \"{}\"",
            shown.escape_default()
        ));
    }
    Ok(())
}

fn split_scheme(url: &str) -> Option<(&'static str, &str)> {
    SCHEMES
        .iter()
        .find_map(|s| url.strip_prefix(s).map(|rest| (*s, rest)))
}

/// `user:pw@host:port` and `/db` (with any query kept in the tail).
fn split_authority(rest: &str) -> (&str, &str) {
    match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    }
}

/// `host` and `port`, also for `[::1]:6379`.
fn split_port(host_port: &str) -> (&str, Option<&str>) {
    if let Some(inner) = host_port.strip_prefix('[') {
        return match inner.split_once(']') {
            Some((host, rest)) => (host, rest.strip_prefix(':')),
            None => ("", None),
        };
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            masked("redis://:hunter2@r.example:6379/0"),
            "redis://:***@r.example:6379/0"
        );
        assert_eq!(
            masked("rediss://team:hunter2@r.example"),
            "rediss://team:***@r.example"
        );
        assert_eq!(masked("redis://hunter2@r.example"), "redis://***@r.example");
        assert_eq!(masked("redis://r.example:6379"), "redis://r.example:6379");
        assert!(has_password("redis://:x@h"));
        assert!(!has_password("redis://h:1/0"));
    }

    #[test]
    fn shapes_are_checked() {
        assert_eq!(check("redis://127.0.0.1:6379/0"), Ok(()));
        assert_eq!(check("rediss://:pw@[::1]:6380"), Ok(()));
        assert_eq!(check("redis://build-redis.example"), Ok(()));
        for bad in [
            "http://h:1",
            "redis://",
            "redis://:pw@:6379",
            "redis://h:99999",
            "redis://h:0",
            "redis://h/x",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        let e = check("redis://:hunter2@h:notaport").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
