//! Random identifiers from the OS's random source: session tokens (server) and
//! send nonces (client).

/// `len` characters from `A-Za-z0-9`, each equally likely.
pub(crate) fn alphanumeric(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while out.len() < len {
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness is a broken machine; fall back to the clock-seeded hasher
            // rather than refusing every login.
            fallback_random(&mut bytes);
        }
        // 248 = 4 × 62: rejecting bytes above it keeps every character equally likely.
        for &b in bytes.iter().filter(|&&b| b < 248) {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[(b % 62) as usize] as char);
        }
    }
    out
}

fn fallback_random(bytes: &mut [u8]) {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    for chunk in bytes.chunks_mut(8) {
        let mut h = state.build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// A duration from zero up to `max`, for spreading retries apart (no need for the
/// OS's randomness: only that clients do not retry in step).
pub(crate) fn jitter(max: std::time::Duration) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    std::time::Duration::from_nanos(h.finish() % nanos.max(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape_and_spread() {
        let a = super::alphanumeric(24);
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, super::alphanumeric(24));
        assert_eq!(super::alphanumeric(0), "");
    }
}
