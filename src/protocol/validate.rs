//! The value rules of PROTOCOL.md section 3: names, passwords, text and nonces.

/// Longest user name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest nonce, in characters.
pub const MAX_NONCE_CHARS: usize = 64;
/// Longest session token a login may carry, in bytes. The server's own tokens are
/// 24 characters; the wider bound leaves room for longer ones without letting a
/// login carry an arbitrary string to the store's lookup.
pub const MAX_SESSION_TOKEN_BYTES: usize = 64;
/// The `with` value of a history request that asks for broadcasts.
pub const BROADCAST_PEER: &str = "*";

/// A login name: 1 to 32 characters from `a-z 0-9 _ . -`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// A password: 1 to 1024 bytes.
pub fn is_valid_password(password: &str) -> bool {
    (1..=MAX_PASSWORD_BYTES).contains(&password.len())
}

/// A nonce: 1 to 64 characters.
pub fn is_valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty() && nonce.chars().count() <= MAX_NONCE_CHARS
}

/// A session token as a login may carry it: 1 to 64 bytes.
pub fn is_valid_session_token(token: &str) -> bool {
    (1..=MAX_SESSION_TOKEN_BYTES).contains(&token.len())
}

/// Why a name is refused, for error messages that tell the user what to fix.
pub fn name_rule() -> String {
    format!("a name is 1 to {MAX_NAME_CHARS} characters from a-z, 0-9, '_', '.' and '-'")
}

/// Why a password is refused.
pub fn password_rule() -> String {
    format!("a string of 1 to {MAX_PASSWORD_BYTES} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["alice", "a", "bob_2", "x.y-z", &"a".repeat(32)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "Alice", "al ice", "ålice", "a/b", &"a".repeat(33), "*"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn passwords_and_nonces() {
        assert!(is_valid_password("p"));
        assert!(is_valid_password(&"p".repeat(1024)));
        assert!(!is_valid_password(""));
        assert!(!is_valid_password(&"p".repeat(1025)));
        assert!(is_valid_nonce(&"é".repeat(64)));
        assert!(!is_valid_nonce(&"n".repeat(65)));
        assert!(!is_valid_nonce(""));
    }
}
