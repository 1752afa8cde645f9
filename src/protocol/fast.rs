//! The two frames a busy connection sends most, read without building a JSON tree:
//! a direct message and an ack, in the compact layout the clients write. Anything
//! else (another key order, an escape in a string, a number in another form) is
//! `None`, and the caller parses the line in full, so this is only ever a shortcut:
//! for every line it accepts, the general parser ([`Envelope::parse`] and
//! [`crate::protocol::Request::parse`]) reads the same values (the tests below check
//! it on generated lines, and `fuzz/fuzz_targets/frames.rs` on arbitrary ones).
//!
//! [`Envelope::parse`]: crate::protocol::Envelope::parse

use super::envelope::{Id, MAX_ID_CHARS};

/// A frame read by the shortcut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fast<'a> {
    /// `{"status":"r","status_code":50,"info":{"ack":N}}`
    Ack(u64),
    /// `{"status":"m","status_code":80,"info":{"to":T,"text":X[,"nonce":N]}[,"id":I]}`
    Direct {
        /// The `to` field, not yet checked as a name.
        to: &'a str,
        /// The `text` field, not yet checked for length.
        text: &'a str,
        /// The `nonce` field, if present, not yet checked.
        nonce: Option<&'a str>,
        /// The correlation tag.
        id: Option<Id>,
    },
}

const ACK: &[u8] = br#"{"status":"r","status_code":50,"info":{"ack":"#;
const DIRECT: &[u8] = br#"{"status":"m","status_code":80,"info":{"to":""#;

/// Reads `line` if it is one of the two common frames in the compact layout.
pub fn read(line: &[u8]) -> Option<Fast<'_>> {
    if let Some(rest) = line.strip_prefix(ACK) {
        let (n, rest) = number(rest)?;
        return (rest == b"}}").then_some(Fast::Ack(n));
    }
    let rest = line.strip_prefix(DIRECT)?;
    let (to, rest) = string(rest)?;
    let rest = rest.strip_prefix(br#","text":""#)?;
    let (text, mut rest) = string(rest)?;
    let mut nonce = None;
    if let Some(r) = rest.strip_prefix(br#","nonce":""#) {
        let (n, r) = string(r)?;
        nonce = Some(n);
        rest = r;
    }
    let rest = rest.strip_prefix(b"}")?;
    let id = match rest {
        b"}" => None,
        _ => {
            let rest = rest.strip_prefix(br#","id":"#)?;
            let (id, rest) = id(rest)?;
            if rest != b"}" {
                return None;
            }
            Some(id)
        }
    };
    Some(Fast::Direct {
        to,
        text,
        nonce,
        id,
    })
}

/// A JSON string's contents up to its closing quote, if it has no escape and no
/// control character (which JSON forbids raw), and is UTF-8.
fn string(s: &[u8]) -> Option<(&str, &[u8])> {
    let end = memchr::memchr2(b'"', b'\\', s)?;
    if s[end] != b'"' || s[..end].iter().any(|&b| b < 0x20) {
        return None;
    }
    let text = std::str::from_utf8(&s[..end]).ok()?;
    Some((text, &s[end + 1..]))
}

/// A non-negative JSON integer in canonical form that fits in a u64.
fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (digits > 1 && s[0] == b'0') {
        return None;
    }
    let n = std::str::from_utf8(&s[..digits]).ok()?.parse().ok()?;
    // A fraction or an exponent would make it a float: leave that to the full parse.
    if matches!(s.get(digits), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    Some((n, &s[digits..]))
}

fn id(s: &[u8]) -> Option<(Id, &[u8])> {
    if let Some(rest) = s.strip_prefix(b"\"") {
        let (text, rest) = string(rest)?;
        if text.chars().count() > MAX_ID_CHARS {
            return None;
        }
        return Some((Id::Str(text.to_string()), rest));
    }
    let (n, rest) = number(s)?;
    let id = i64::try_from(n).map_or(Id::UInt(n), Id::Int);
    Some((id, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Envelope, Request, RequestKind, Status};
    use proptest::prelude::*;
    use serde_json::Value;

    #[test]
    fn the_common_frames_are_read() {
        assert_eq!(
            read(br#"{"status":"r","status_code":50,"info":{"ack":42}}"#),
            Some(Fast::Ack(42))
        );
        assert_eq!(
            read(br#"{"status":"m","status_code":80,"info":{"to":"bob","text":"hi \u00e9","nonce":"n1"},"id":7}"#),
            None,
            "an escape: the full parse"
        );
        assert_eq!(
            read(
                r#"{"status":"m","status_code":80,"info":{"to":"bob","text":"hé"},"id":"x"}"#
                    .as_bytes()
            ),
            Some(Fast::Direct {
                to: "bob",
                text: "hé",
                nonce: None,
                id: Some(Id::Str("x".into()))
            })
        );
        for other in [
            &br#"{"status_code":80,"status":"m","info":{"to":"bob","text":"x"}}"#[..],
            br#"{"status":"r","status_code":50,"info":{"ack":01}}"#,
            br#"{"status":"r","status_code":50,"info":{"ack":1.0}}"#,
            br#"{"status":"r","status_code":50,"info":{"ack":-1}}"#,
            br#"{"status":"m","status_code":80,"info":{"to":"bob","text":"x"},"id":-3}"#,
            br#"{"status":"m","status_code":80,"info":{"to":"bob","text":"x"}} "#,
        ] {
            assert_eq!(read(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn the_clients_own_frames_take_the_shortcut() {
        let direct = Request::Direct(crate::protocol::request::Direct {
            to: "bob".into(),
            text: "hi".into(),
            nonce: Some("n1".into()),
        })
        .encode(Some(&Id::UInt(9)));
        let line = &direct[..direct.len() - 1];
        assert_eq!(
            read(line),
            Some(Fast::Direct {
                to: "bob",
                text: "hi",
                nonce: Some("n1"),
                id: Some(Id::Int(9))
            })
        );
        let ack = crate::protocol::reply::encode_ack(12);
        assert_eq!(read(&ack[..ack.len() - 1]), Some(Fast::Ack(12)));
    }

    /// What the general parser makes of a line, in the shortcut's terms.
    fn general(line: &[u8]) -> Option<Fast<'static>> {
        let env = Envelope::parse(line).ok()?;
        match (env.status, env.code) {
            (Status::Response, 50) => env
                .info
                .get("ack")
                .and_then(Value::as_u64)
                .filter(|_| env.info.len() == 1)
                .map(Fast::Ack),
            (Status::Message, 80) => {
                let s = |k: &str| env.info.get(k).and_then(Value::as_str);
                let leak = |v: &str| -> &'static str { Box::leak(v.to_string().into_boxed_str()) };
                Some(Fast::Direct {
                    to: leak(s("to")?),
                    text: leak(s("text")?),
                    nonce: s("nonce").map(leak),
                    id: env.id.clone(),
                })
            }
            _ => None,
        }
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_.-]{0,40}",
            "[A-Za-z \"\\\\/é\u{1F600}\t\n]{0,12}",
            Just(String::new()),
            "\\PC{0,20}",
        ]
    }

    proptest! {
        /// Every line the shortcut reads, the general parser reads the same way, and
        /// the request made of it is the same.
        #[test]
        fn the_shortcut_agrees_with_the_full_parse(
            to in piece(), text in piece(), nonce in proptest::option::of(piece()),
            id in proptest::option::of(prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                "-?[0-9]{1,3}",
                piece().prop_map(|s| format!("\"{s}\"")),
            ]),
            ack in prop_oneof![any::<u64>().prop_map(|n| n.to_string()), "[0-9.eE+-]{1,6}"],
            raw in any::<bool>(),
        ) {
            let direct = {
                let nonce = nonce.as_ref().map(|n| format!(",\"nonce\":\"{n}\"")).unwrap_or_default();
                let id = id.as_ref().map(|i| format!(",\"id\":{i}")).unwrap_or_default();
                format!("{{\"status\":\"m\",\"status_code\":80,\"info\":{{\"to\":\"{to}\",\"text\":\"{text}\"{nonce}}}{id}}}")
            };
            let ack_line = format!("{{\"status\":\"r\",\"status_code\":50,\"info\":{{\"ack\":{ack}}}}}");
            // Valid frames too, as serde_json writes them (escapes included).
            let encoded = serde_json::json!({"status":"m","status_code":80,
                "info":{"to":to,"text":text}}).to_string();
            for line in [direct, ack_line, encoded] {
                let line = if raw { line } else { line.replace('\n', "") };
                if let Some(fast) = read(line.as_bytes()) {
                    prop_assert_eq!(Some(fast.clone()), general(line.as_bytes()), "{}", line);
                    if let Fast::Direct { to, text, nonce, .. } = fast {
                        let env = Envelope::parse(line.as_bytes()).unwrap();
                        let full = Request::parse(RequestKind::Direct, &env.info, 16);
                        let short = Request::direct(Some(to), Some(text), Ok(nonce), 16);
                        prop_assert_eq!(full, short);
                    }
                }
            }
        }
    }
}
