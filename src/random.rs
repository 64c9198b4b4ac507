//! Unpredictable names and secrets (run nonces, tree tokens, the daemon's
//! id) from the system's random source, as hex.

/// `N` bytes from `/dev/urandom`, as `2 * N` hex digits. Without a random
/// source, the time and the pid: still nothing a build could predict, and
/// different between two calls.
pub fn hex<const N: usize>() -> String {
    use std::io::Read;
    let mut bytes = [0u8; N];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mixed = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
        for (b, m) in bytes.iter_mut().zip(mixed.iter().cycle()) {
            *b = *m;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_has_two_digits_a_byte_and_differs_between_calls() {
        let a = super::hex::<8>();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(super::hex::<16>(), super::hex::<16>());
    }
}
