//! The JSON envelope (PROTOCOL.md section 2): parsing a received line into an
//! [`Envelope`] and encoding one to send.
//!
//! Parsing decides between the two ways a line can be bad: not UTF-8, not JSON
//! or not an object is [`EnvelopeError::Malformed`] (`e`/62); an object whose
//! `status`, `status_code`, `info` or `id` break the rules is
//! [`EnvelopeError::Invalid`] (`e`/63), which keeps a valid `id` so the error
//! can still be correlated. Unknown keys are ignored, as the protocol requires.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::code::{Code, Status};

/// The highest `status_code` an envelope may carry.
pub const MAX_STATUS_CODE: u64 = 100;
/// The codes an `m` frame may carry (seed Table 2: 8x and 9x).
pub const MESSAGE_CODES: std::ops::RangeInclusive<u8> = 80..=99;

/// The longest `id` string a client may use, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// Why an `id` is refused (a test holds it to [`MAX_ID_CHARS`]).
const ID_RULE: &str = "id must be an integer or a string of at most 64 characters";

/// The client's correlation tag, echoed unchanged in the frame that answers it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// A negative or small integer tag.
    Int(i64),
    /// An integer tag above `i64::MAX`.
    UInt(u64),
    /// A string tag of at most [`MAX_ID_CHARS`] characters.
    Str(String),
}

impl Id {
    /// The tag as an unsigned integer, when it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Id::Int(i) => u64::try_from(*i).ok(),
            Id::UInt(u) => Some(*u),
            Id::Str(_) => None,
        }
    }
}

impl From<u64> for Id {
    fn from(n: u64) -> Id {
        Id::UInt(n)
    }
}

/// A received frame whose envelope is valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The status letter.
    pub status: Status,
    /// `status_code`, 0 to 100; not necessarily a named [`Code`].
    pub code: u8,
    /// The payload; an omitted or null `info` reads as empty.
    pub info: Map<String, Value>,
    /// The correlation tag, if the sender gave one.
    pub id: Option<Id>,
}

/// Why a line is not a valid envelope.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not UTF-8, not JSON, or not a JSON object: `e`/62.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A JSON object that breaks the envelope rules: `e`/63.
    #[error("invalid envelope: {reason}")]
    Invalid {
        /// What is wrong, in one phrase.
        reason: String,
        /// The frame's `id`, when that part was valid.
        id: Option<Id>,
    },
}

impl EnvelopeError {
    /// The code the server answers this error with.
    pub fn code(&self) -> Code {
        match self {
            EnvelopeError::Malformed(_) => Code::MalformedFrame,
            EnvelopeError::Invalid { .. } => Code::InvalidEnvelope,
        }
    }

    /// The `id` to echo in the error frame, if any.
    pub fn id(&self) -> Option<&Id> {
        match self {
            EnvelopeError::Malformed(_) => None,
            EnvelopeError::Invalid { id, .. } => id.as_ref(),
        }
    }
}

impl Envelope {
    /// Parses one line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Envelope, EnvelopeError> {
        let text = std::str::from_utf8(line)
            .map_err(|_| EnvelopeError::Malformed("line is not valid UTF-8".into()))?;
        let value: Value =
            serde_json::from_str(text).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        let Value::Object(mut obj) = value else {
            return Err(EnvelopeError::Malformed(
                "frame is not a JSON object".into(),
            ));
        };
        // The id comes first so that an error in any other field can still echo it.
        let id = match obj.remove("id") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_id(v).map_err(|reason| EnvelopeError::Invalid {
                reason: reason.into(),
                id: None,
            })?),
        };
        let invalid = |reason: &str| EnvelopeError::Invalid {
            reason: reason.into(),
            id: id.clone(),
        };
        let status = match obj.get("status") {
            Some(Value::String(s)) => Status::from_wire(s),
            _ => None,
        }
        .ok_or_else(|| invalid("status must be one of \"q\", \"r\", \"e\", \"m\""))?;
        let code = match obj.get("status_code") {
            None => return Err(invalid("status_code is missing")),
            Some(Value::Number(n)) => n.as_u64().filter(|&c| c <= MAX_STATUS_CODE),
            Some(_) => None,
        }
        .ok_or_else(|| invalid("status_code must be an integer from 0 to 100"))?;
        let code = u8::try_from(code).map_err(|_| invalid("status_code out of range"))?;
        if status == Status::Message && !MESSAGE_CODES.contains(&code) {
            return Err(invalid("an \"m\" frame needs a status_code from 80 to 99"));
        }
        let info = match obj.remove("info") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(invalid("info must be an object")),
        };
        Ok(Envelope {
            status,
            code,
            info,
            id,
        })
    }

    /// A string field of `info`, if present and a string.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.info.get(key).and_then(Value::as_str)
    }
}

fn parse_id(v: Value) -> Result<Id, &'static str> {
    match v {
        Value::String(s) if s.chars().count() <= MAX_ID_CHARS => Ok(Id::Str(s)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Id::Int(i))
            } else if let Some(u) = n.as_u64() {
                Ok(Id::UInt(u))
            } else {
                Err(ID_RULE)
            }
        }
        _ => Err(ID_RULE),
    }
}

/// Encodes one frame, newline included, ready for the socket.
///
/// `info` is any serializable payload; a type that fails to serialize (a map
/// with non-string keys) is a bug in this crate, so the frame falls back to an
/// `e`/60 rather than panicking.
pub fn encode(status: Status, code: u8, info: &impl Serialize, id: Option<&Id>) -> Bytes {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"{\"status\":\"");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b"\",\"status_code\":");
    // At most three digits, written without a String for each frame.
    if code >= 100 {
        out.push(b'0' + code / 100);
    }
    if code >= 10 {
        out.push(b'0' + code / 10 % 10);
    }
    out.push(b'0' + code % 10);
    out.extend_from_slice(b",\"info\":");
    let start = out.len();
    if serde_json::to_writer(&mut out, info).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"{\"error\":\"internal error: unserializable reply\"}");
    }
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        // An Id is an integer or a string: serializing it cannot fail.
        let _ = serde_json::to_writer(&mut out, id);
    }
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// Encodes a frame carrying a named code, with the status letter the code travels with.
pub fn encode_code(code: Code, info: &impl Serialize, id: Option<&Id>) -> Bytes {
    encode(code.status(), code.number(), info, id)
}

/// The `info` of every `e` frame and failing `r` frame: one human-readable sentence.
#[derive(Debug, Serialize)]
pub struct ErrorInfo<'a> {
    /// The sentence.
    pub error: &'a str,
}

/// Encodes a failure frame for `code` with its `error` sentence.
pub fn encode_error(code: Code, error: &str, id: Option<&Id>) -> Bytes {
    encode_code(code, &ErrorInfo { error }, id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_codes_are_written_in_decimal() {
        for code in [0u8, 7, 10, 42, 99, 100, 205, 255] {
            let frame = encode(Status::Response, code, &json!({}), None);
            let v: Value = serde_json::from_slice(&frame).unwrap();
            assert_eq!(v["status_code"], u64::from(code), "{frame:?}");
        }
    }

    fn code_of(line: &str) -> Code {
        Envelope::parse(line.as_bytes()).unwrap_err().code()
    }

    #[test]
    fn parses_a_query_with_id() {
        let e = Envelope::parse(
            br#"{"status":"q","status_code":0,"info":{"req":"users"},"id":7,"x":1}"#,
        )
        .unwrap();
        assert_eq!(e.status, Status::Query);
        assert_eq!(e.code, 0);
        assert_eq!(e.str_field("req"), Some("users"));
        assert_eq!(e.id, Some(Id::Int(7)));
    }

    #[test]
    fn info_may_be_omitted() {
        let e = Envelope::parse(br#"{"status":"r","status_code":30}"#).unwrap();
        assert!(e.info.is_empty());
        assert_eq!(e.id, None);
    }

    #[test]
    fn malformed_lines_are_62() {
        for line in [
            "this is not json",
            "[1,2]",
            "42",
            "\"str\"",
            "null",
            "{\"a\":",
        ] {
            assert_eq!(code_of(line), Code::MalformedFrame, "{line}");
        }
        let err = Envelope::parse(b"\xff\xfe{}").unwrap_err();
        assert_eq!(err.code(), Code::MalformedFrame);
        assert_eq!(
            Envelope::parse(b"{oops}").unwrap_err().to_string(),
            "malformed frame: key must be a string at line 1 column 2"
        );
    }

    #[test]
    fn invalid_envelopes_are_63() {
        for line in [
            r#"{"status":"x","status_code":0}"#,
            r#"{"status":"qq","status_code":0}"#,
            r#"{"status":1,"status_code":0}"#,
            r#"{"status_code":0}"#,
            r#"{"status":"q"}"#,
            r#"{"status":"q","status_code":-1}"#,
            r#"{"status":"q","status_code":101}"#,
            r#"{"status":"q","status_code":3.5}"#,
            r#"{"status":"q","status_code":"10"}"#,
            r#"{"status":"m","status_code":70,"info":{}}"#,
            r#"{"status":"m","status_code":100,"info":{}}"#,
            r#"{"status":"q","status_code":0,"info":[]}"#,
            r#"{"status":"q","status_code":0,"id":[1]}"#,
            r#"{"status":"q","status_code":0,"id":1.5}"#,
        ] {
            assert_eq!(code_of(line), Code::InvalidEnvelope, "{line}");
        }
    }

    #[test]
    fn invalid_envelope_keeps_a_valid_id() {
        let err = Envelope::parse(br#"{"status":"z","status_code":0,"id":"abc"}"#).unwrap_err();
        assert_eq!(err.id(), Some(&Id::Str("abc".into())));
        let long = "x".repeat(65);
        let line = format!(r#"{{"status":"q","status_code":0,"id":"{long}"}}"#);
        let err = Envelope::parse(line.as_bytes()).unwrap_err();
        assert_eq!(err.code(), Code::InvalidEnvelope);
        assert_eq!(err.id(), None);
    }

    #[test]
    fn encode_produces_one_compact_line() {
        let b = encode_code(
            Code::QueryOk,
            &json!({"users":["a","b"]}),
            Some(&Id::Str("x".into())),
        );
        assert_eq!(
            &b[..],
            b"{\"status\":\"r\",\"status_code\":30,\"info\":{\"users\":[\"a\",\"b\"]},\"id\":\"x\"}\n"
        );
        let e = Envelope::parse(&b[..b.len() - 1]).unwrap();
        assert_eq!(e.id, Some(Id::Str("x".into())));
    }

    #[test]
    fn large_integer_ids_round_trip() {
        let e = Envelope::parse(br#"{"status":"q","status_code":0,"id":18446744073709551615}"#)
            .unwrap();
        assert_eq!(e.id, Some(Id::UInt(u64::MAX)));
        let b = encode_error(Code::Internal, "x", e.id.as_ref());
        assert!(std::str::from_utf8(&b)
            .unwrap()
            .contains("\"id\":18446744073709551615"));
    }

    #[test]
    fn the_id_rule_states_the_limit() {
        assert!(ID_RULE.contains(&format!("at most {MAX_ID_CHARS} characters")));
    }
}
