//! The language-neutral parts of `conformance/`: reading its JSON-lines files, and
//! matching frames against patterns with placeholders (conformance/README.md).
//!
//! A pattern is JSON. Objects must have exactly the pattern's keys; arrays the same
//! length; numbers, strings, booleans and null are equal. A string starting with `$`
//! is a placeholder: `$any`, `$int`, `$str` (non-empty), `$token` (24 characters from
//! `A-Za-z0-9`) or `$ts` (epoch milliseconds), optionally followed by `=NAME`, which
//! binds the value the first time and requires the same value after (`$=NAME` alone
//! requires only that). In frames to send, `$=NAME` is replaced by the bound value,
//! and `{run}` inside any string by the run's own token, so that names are fresh on
//! every run against a server that keeps its users.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Values bound by patterns, by name.
#[derive(Debug, Default, Clone)]
pub struct Bindings {
    values: HashMap<String, Value>,
    run: String,
}

impl Bindings {
    /// Bindings for one run; `run` replaces `{run}` in strings.
    pub fn new(run: &str) -> Bindings {
        Bindings {
            values: HashMap::new(),
            run: run.to_string(),
        }
    }

    /// The run's token, which `{run}` stands for.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// A bound value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// Binds `name` (used by drivers to remember results).
    pub fn set(&mut self, name: &str, value: Value) {
        self.values.insert(name.to_string(), value);
    }

    /// `template` with `$=NAME` replaced by bound values and `{run}` by the run token.
    pub fn fill(&self, template: &Value) -> Result<Value, String> {
        Ok(match template {
            Value::String(s) => match s.strip_prefix("$=") {
                Some(name) => self
                    .values
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("{name} is used before it is bound"))?,
                None => Value::String(s.replace("{run}", &self.run)),
            },
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.fill(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.fill(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Checks `actual` against `pattern`, binding names on the way; the error says
    /// where they differ.
    pub fn check(&mut self, pattern: &Value, actual: &Value) -> Result<(), String> {
        self.check_at(pattern, actual, "$")
    }

    fn check_at(&mut self, pattern: &Value, actual: &Value, at: &str) -> Result<(), String> {
        match pattern {
            Value::String(p) if p.starts_with('$') => self.placeholder(p, actual, at),
            Value::String(p) => {
                let want = p.replace("{run}", &self.run);
                if actual.as_str() == Some(want.as_str()) {
                    Ok(())
                } else {
                    Err(format!("{at}: expected {want:?}, got {actual}"))
                }
            }
            Value::Object(want) => {
                let Some(got) = actual.as_object() else {
                    return Err(format!("{at}: expected an object, got {actual}"));
                };
                if let Some(extra) = got.keys().find(|k| !want.contains_key(*k)) {
                    return Err(format!("{at}: unexpected key {extra:?} in {actual}"));
                }
                for (k, v) in want {
                    let Some(g) = got.get(k) else {
                        return Err(format!("{at}: missing key {k:?} in {actual}"));
                    };
                    self.check_at(v, g, &format!("{at}.{k}"))?;
                }
                Ok(())
            }
            Value::Array(want) => {
                let Some(got) = actual.as_array() else {
                    return Err(format!("{at}: expected an array, got {actual}"));
                };
                if got.len() != want.len() {
                    return Err(format!(
                        "{at}: expected {} items, got {}: {actual}",
                        want.len(),
                        got.len()
                    ));
                }
                for (i, (w, g)) in want.iter().zip(got).enumerate() {
                    self.check_at(w, g, &format!("{at}[{i}]"))?;
                }
                Ok(())
            }
            other => {
                if other == actual {
                    Ok(())
                } else {
                    Err(format!("{at}: expected {other}, got {actual}"))
                }
            }
        }
    }

    fn placeholder(&mut self, p: &str, actual: &Value, at: &str) -> Result<(), String> {
        let (kind, name) = match p[1..].split_once('=') {
            Some((kind, name)) => (kind, Some(name)),
            None => (&p[1..], None),
        };
        let fits = match kind {
            "" | "any" => true,
            "int" => actual.as_u64().is_some() || actual.as_i64().is_some(),
            "str" => actual.as_str().is_some_and(|s| !s.is_empty()),
            "token" => actual
                .as_str()
                .is_some_and(|s| s.len() == 24 && s.bytes().all(|b| b.is_ascii_alphanumeric())),
            "ts" => actual.as_u64().is_some_and(|t| t > 1_000_000_000_000),
            other => return Err(format!("{at}: unknown placeholder ${other}")),
        };
        if !fits {
            return Err(format!("{at}: expected ${kind}, got {actual}"));
        }
        if let Some(name) = name {
            match self.values.get(name) {
                Some(bound) if bound != actual => {
                    return Err(format!("{at}: expected {name} = {bound}, got {actual}"));
                }
                Some(_) => {}
                None => {
                    self.values.insert(name.to_string(), actual.clone());
                }
            }
        }
        Ok(())
    }
}

/// What waiting for the next frame of a connection gave.
#[derive(Debug)]
pub enum Next {
    /// A whole frame, parsed.
    Frame(Value),
    /// The peer ended the stream (or reset it) between frames.
    Closed,
    /// Nothing whole came within the wait.
    Timeout,
}

/// Reads one frame (a JSON object ending in `\n`) within `wait`. A frame that is not
/// JSON, or holds a `\r`, or a stream that ends inside a frame, is an error.
pub fn next_frame(reader: &mut BufReader<TcpStream>, wait: Duration) -> Result<Next, String> {
    let deadline = Instant::now() + wait;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Next::Timeout);
        }
        let _ = reader.get_ref().set_read_timeout(Some(left));
        match reader.read_until(b'\n', &mut line) {
            Ok(0) if line.is_empty() => return Ok(Next::Closed),
            Ok(0) => return Err(format!("closed mid-frame: {:?}", lossy(&line))),
            Ok(_) if line.ends_with(b"\n") => break,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            // A reset after a goodbye reads as the end of the stream.
            Err(_) if line.is_empty() => return Ok(Next::Closed),
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
    parse_frame(&line[..line.len() - 1])
}

/// One frame's text (without its `\n`), parsed.
pub fn parse_frame(line: &[u8]) -> Result<Next, String> {
    if line.contains(&b'\r') || line.contains(&b'\n') {
        return Err(format!("a frame holds a line break: {:?}", lossy(line)));
    }
    serde_json::from_slice(line)
        .map(Next::Frame)
        .map_err(|e| format!("not a JSON frame {:?}: {e}", lossy(line)))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The steps of a JSON-lines file: one JSON object per line; blank lines and lines
/// starting with `//` are skipped. Errors name the file and line.
pub fn read_steps(path: &std::path::Path) -> Result<Vec<(usize, Value)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut steps = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        if !value.is_object() {
            return Err(format!(
                "{}:{}: a step is a JSON object",
                path.display(),
                i + 1
            ));
        }
        steps.push((i + 1, value));
    }
    Ok(steps)
}

/// A short token for one run: lower-case letters and digits, valid inside a user name.
pub fn run_token() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut n = (nanos ^ (u128::from(std::process::id()) << 64)) as u64;
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..6)
        .map(|_| {
            let c = alphabet[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_bind_and_compare() {
        let mut b = Bindings::new("r1");
        let pattern = json!({"status":"r","status_code":50,"info":{"msg_id":"$int=m"}});
        b.check(
            &pattern,
            &json!({"status":"r","status_code":50,"info":{"msg_id":7}}),
        )
        .unwrap();
        assert_eq!(b.get("m"), Some(&json!(7)));
        let err = b
            .check(
                &pattern,
                &json!({"status":"r","status_code":50,"info":{"msg_id":8}}),
            )
            .unwrap_err();
        assert!(err.contains("expected m = 7"), "{err}");
        assert!(b
            .check(&json!({"a":"$str"}), &json!({"a":"x","b":1}))
            .unwrap_err()
            .contains("unexpected key"));
        assert!(b.check(&json!("$token"), &json!("abc")).is_err());
        b.check(&json!("$token"), &json!("A".repeat(24))).unwrap();
        b.check(&json!("alice_{run}"), &json!("alice_r1")).unwrap();
        assert_eq!(
            b.fill(&json!({"ack":"$=m","user":"bob_{run}"})).unwrap(),
            json!({"ack":7,"user":"bob_r1"})
        );
        assert!(b.fill(&json!("$=nope")).is_err());
    }

    #[test]
    fn run_tokens_are_name_safe() {
        let t = run_token();
        assert_eq!(t.len(), 6);
        assert!(t
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }
}
