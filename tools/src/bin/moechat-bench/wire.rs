//! The three wire protocols the benchmark speaks, at the byte level: MoeChat's
//! JSON lines (over TCP, or one per WebSocket text message), Redis's RESP and
//! NATS's text protocol.
//!
//! Each is a lean hand-written client of the same shape, so the load generator
//! costs about the same whichever server it drives: frames are built into one
//! reusable buffer, and incoming bytes are scanned in place without building a
//! JSON value or allocating per message. This is the instrument, not a client
//! for applications (that is `moechat::Client`).

use bytes::{Buf, BytesMut};

/// Which server a connection talks to, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    MoeChat,
    /// MoeChat's protocol over WebSocket, on its HTTP listener.
    MoeChatWs,
    Redis,
    Nats,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::MoeChat => "moechat",
            Kind::MoeChatWs => "moechat-ws",
            Kind::Redis => "redis",
            Kind::Nats => "nats",
        }
    }

    /// The protocol spoken inside the transport.
    pub(crate) fn protocol(self) -> Kind {
        match self {
            Kind::MoeChatWs => Kind::MoeChat,
            k => k,
        }
    }

    /// Whether the server is MoeChat (durable, with logins).
    pub(crate) fn is_moechat(self) -> bool {
        self.protocol() == Kind::MoeChat
    }
}

/// The channel (Redis) or subject (NATS) every broadcast goes to.
pub(crate) const BROADCAST: &str = "all";

/// What arrived on a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// The connection is ready: logged in, subscribed, or its PING answered.
    Ready,
    /// One publish acknowledged (MoeChat `r`/50 or `r`/51, Redis's integer reply) or,
    /// for NATS, the PONG that ends one chunk of publishes.
    Ack,
    /// A delivered message's payload (MoeChat's `text`).
    Message(&'a [u8]),
    /// The server asked for a PONG (NATS).
    Ping,
    /// Anything else the server said: an error, a slow-consumer close, …
    Other,
}

/// Bytes that make a receiver of `name` ready: a login with a session token, a
/// SUBSCRIBE, or CONNECT + SUB + PING.
pub(crate) fn hello(kind: Kind, name: &str, token: &str, channel: &str) -> Vec<u8> {
    match kind.protocol() {
        Kind::MoeChat | Kind::MoeChatWs => format!(
            "{{\"status\":\"q\",\"status_code\":0,\"info\":{{\"req\":\"login\",\"user\":\"{name}\",\"session\":\"{token}\"}}}}\n"
        )
        .into_bytes(),
        Kind::Redis => resp(&[b"SUBSCRIBE", channel.as_bytes()]),
        Kind::Nats => format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"echo\":false}}\r\nSUB {channel} 1\r\nPING\r\n"
        )
        .into_bytes(),
    }
}

/// A publisher's handshake: MoeChat logs in; Redis needs nothing; NATS connects.
pub(crate) fn publisher_hello(kind: Kind, name: &str, token: &str) -> Vec<u8> {
    match kind.protocol() {
        Kind::MoeChat | Kind::MoeChatWs => hello(kind, name, token, ""),
        Kind::Redis => resp(&[b"PING"]),
        Kind::Nats => {
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\nPING\r\n".to_vec()
        }
    }
}

fn resp(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    resp_into(&mut out, parts);
    out
}

fn resp_into(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends one publish of `payload` to `to` (a user, or [`BROADCAST`]).
pub(crate) fn publish(kind: Kind, out: &mut Vec<u8>, to: &str, payload: &[u8]) {
    match kind.protocol() {
        Kind::MoeChat if to == BROADCAST => {
            out.extend_from_slice(b"{\"status\":\"m\",\"status_code\":90,\"info\":{\"text\":\"");
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\"}}\n");
        }
        Kind::MoeChat | Kind::MoeChatWs => {
            out.extend_from_slice(b"{\"status\":\"m\",\"status_code\":80,\"info\":{\"to\":\"");
            out.extend_from_slice(to.as_bytes());
            out.extend_from_slice(b"\",\"text\":\"");
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\"}}\n");
        }
        Kind::Redis => resp_into(out, &[b"PUBLISH", to.as_bytes(), payload]),
        Kind::Nats => {
            out.extend_from_slice(format!("PUB {to} {}\r\n", payload.len()).as_bytes());
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// NATS has no per-publish reply: a PING after a chunk of publishes is answered
/// by a PONG once the server has processed the chunk.
pub(crate) fn flush_marker(kind: Kind, out: &mut Vec<u8>) {
    if kind == Kind::Nats {
        out.extend_from_slice(b"PING\r\n");
    }
}

/// The answer to a server's PING.
pub(crate) const NATS_PONG: &[u8] = b"PONG\r\n";

/// Takes complete events off the front of `buf`, calling `each` for every one.
/// Incomplete input stays in `buf` for the next read.
pub(crate) fn drain(kind: Kind, buf: &mut BytesMut, mut each: impl FnMut(Event<'_>)) {
    loop {
        let used = match kind.protocol() {
            Kind::MoeChat | Kind::MoeChatWs => moechat_event(buf, &mut each),
            Kind::Redis => redis_event(buf, &mut each),
            Kind::Nats => nats_event(buf, &mut each),
        };
        match used {
            Some(n) => buf.advance(n),
            None => return,
        }
    }
}

/// The WebSocket handshake for MoeChat's `/ws` on `port` (no `Origin`: a program).
pub(crate) fn ws_handshake(port: u16) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// The length of the handshake's answer at the front of `buf`, once complete, and
/// whether it agreed to switch protocols.
pub(crate) fn ws_handshake_answer(buf: &[u8]) -> Option<(usize, bool)> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    Some((end, buf.starts_with(b"HTTP/1.1 101")))
}

/// Wraps each `\n`-ended line of `lines` in one masked text frame, appended to `out`.
/// The mask key is zero: a client must mask, the server unmasks whatever the key,
/// and the load generator spends nothing on it.
pub(crate) fn ws_frames(out: &mut Vec<u8>, lines: &[u8]) {
    for line in lines.split_inclusive(|&b| b == b'\n') {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        out.push(0x81);
        match text.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(text);
    }
}

/// WebSocket opcodes (RFC 6455 section 5.2) the bench's client reads.
const WS_TEXT: u8 = 0x1;
const WS_CLOSE: u8 = 0x8;

/// Moves the text of each complete server frame in `raw` to `lines`, one line each.
/// `false` once the server closed the WebSocket (or sent what this cannot read).
pub(crate) fn ws_unframe(raw: &mut BytesMut, lines: &mut BytesMut) -> bool {
    loop {
        if raw.len() < 2 {
            return true;
        }
        let (opcode, short) = (raw[0] & 0x0f, (raw[1] & 0x7f) as usize);
        let (head, len) = match short {
            126 if raw.len() >= 4 => (4, u16::from_be_bytes([raw[2], raw[3]]) as usize),
            127 if raw.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&raw[2..10]);
                (10, u64::from_be_bytes(n) as usize)
            }
            126 | 127 => return true,
            n => (2, n),
        };
        if raw.len() < head + len {
            return true;
        }
        match opcode {
            // Server frames are never masked, nor fragmented by tungstenite.
            WS_TEXT => {
                lines.extend_from_slice(&raw[head..head + len]);
                lines.extend_from_slice(b"\n");
            }
            WS_CLOSE => return false,
            _ => {} // ping or pong: the bench's connections live too short to need them
        }
        raw.advance(head + len);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn line_end(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

fn moechat_event(buf: &[u8], each: &mut impl FnMut(Event<'_>)) -> Option<usize> {
    let end = line_end(buf)?;
    let line = &buf[..end];
    if line.starts_with(b"{\"status\":\"m\"") {
        // The server writes `text` last but one, before `ts`; payloads hold no quotes.
        let text = find(line, b"\"text\":\"").map(|i| {
            let rest = &line[i + 8..];
            &rest[..rest.iter().position(|&b| b == b'"').unwrap_or(rest.len())]
        });
        each(text.map_or(Event::Other, Event::Message));
    } else if line.starts_with(b"{\"status\":\"r\",\"status_code\":5") {
        each(Event::Ack);
    } else if line.starts_with(b"{\"status\":\"r\",\"status_code\":10") {
        each(Event::Ready);
    } else {
        each(Event::Other);
    }
    Some(end + 1)
}

/// One RESP value's extent: `(end, integer value or bulk range)`; `None` if incomplete.
fn resp_value(buf: &[u8], at: usize) -> Option<(usize, RespValue)> {
    let rest = buf.get(at..)?;
    let eol = find(rest, b"\r\n")?;
    let head = &rest[1..eol];
    let after = at + eol + 2;
    let num = || -> i64 {
        std::str::from_utf8(head)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1)
    };
    match rest.first()? {
        b':' => Some((after, RespValue::Int)),
        b'+' | b'-' => Some((after, RespValue::Simple)),
        b'$' => {
            let n = num();
            if n < 0 {
                return Some((after, RespValue::Simple));
            }
            let end = after + n as usize;
            (buf.len() >= end + 2).then_some((end + 2, RespValue::Bulk(after, end)))
        }
        b'*' => {
            let n = num().max(0) as usize;
            let mut pos = after;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                let (next, v) = resp_value(buf, pos)?;
                items.push(v);
                pos = next;
            }
            Some((pos, RespValue::Array(items)))
        }
        _ => Some((after, RespValue::Simple)),
    }
}

enum RespValue {
    Int,
    Simple,
    Bulk(usize, usize),
    Array(Vec<RespValue>),
}

fn redis_event(buf: &[u8], each: &mut impl FnMut(Event<'_>)) -> Option<usize> {
    let (end, value) = resp_value(buf, 0)?;
    match value {
        RespValue::Int => each(Event::Ack),
        RespValue::Array(items) => match items.as_slice() {
            [RespValue::Bulk(s, e), _, RespValue::Bulk(ps, pe)] if &buf[*s..*e] == b"message" => {
                each(Event::Message(&buf[*ps..*pe]))
            }
            [RespValue::Bulk(s, e), _, RespValue::Int] if &buf[*s..*e] == b"subscribe" => {
                each(Event::Ready)
            }
            _ => each(Event::Other),
        },
        RespValue::Simple if buf.starts_with(b"+PONG") => each(Event::Ready),
        _ => each(Event::Other),
    }
    Some(end)
}

fn nats_event(buf: &[u8], each: &mut impl FnMut(Event<'_>)) -> Option<usize> {
    let eol = find(buf, b"\r\n")?;
    let line = &buf[..eol];
    if line.starts_with(b"MSG ") {
        // MSG <subject> <sid> [reply-to] <#bytes>
        let size: usize = line
            .rsplit(|&b| b == b' ')
            .next()
            .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
            .unwrap_or(0);
        let start = eol + 2;
        if buf.len() < start + size + 2 {
            return None;
        }
        each(Event::Message(&buf[start..start + size]));
        return Some(start + size + 2);
    }
    if line == b"PONG" {
        each(Event::Ack);
    } else if line == b"PING" {
        each(Event::Ping);
    } else {
        each(Event::Other);
    }
    Some(eol + 2)
}

/// A payload of `size` bytes (at least what the header needs) carrying the sender's
/// sequence number and the send time in microseconds.
pub(crate) fn payload(out: &mut Vec<u8>, seq: u64, sent_us: u64, size: usize) {
    out.clear();
    out.extend_from_slice(format!("{seq}:{sent_us}:").as_bytes());
    while out.len() < size {
        out.push(b'x');
    }
}

/// `(seq, sent_us)` from a payload made by [`payload`].
pub(crate) fn parse_payload(p: &[u8]) -> Option<(u64, u64)> {
    let mut parts = p.splitn(3, |&b| b == b':');
    let num = |s: &[u8]| std::str::from_utf8(s).ok()?.parse().ok();
    Some((num(parts.next()?)?, num(parts.next()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(kind: Kind, input: &[u8]) -> (Vec<String>, usize) {
        let mut buf = BytesMut::from(input);
        let mut seen = Vec::new();
        drain(kind, &mut buf, |e| seen.push(format!("{e:?}")));
        (seen, buf.len())
    }

    #[test]
    fn websocket_frames_round_trip_lines() {
        let lines = b"short\n".to_vec();
        let long = vec![b'x'; 300];
        let mut out = Vec::new();
        ws_frames(&mut out, &lines);
        assert_eq!(out, b"\x81\x85\0\0\0\0short");
        ws_frames(&mut out, &[&long[..], b"\n"].concat());
        assert_eq!(&out[11..15], &[0x81, 0x80 | 126, 1, 44]);
        // The server's frames are the same without the mask.
        let mut raw = BytesMut::new();
        raw.extend_from_slice(b"\x81\x05short\x81\x7e\x01\x2c");
        raw.extend_from_slice(&long);
        raw.extend_from_slice(b"\x81\x05par");
        let mut got = BytesMut::new();
        assert!(ws_unframe(&mut raw, &mut got));
        assert_eq!(&got[..6], b"short\n");
        assert_eq!(got.len(), 6 + 301);
        assert_eq!(&raw[..], b"\x81\x05par", "a partial frame waits");
        raw.clear();
        raw.extend_from_slice(b"\x88\x00");
        assert!(!ws_unframe(&mut raw, &mut got), "a close frame ends it");
    }

    #[test]
    fn moechat_lines() {
        let (seen, left) = events(
            Kind::MoeChat,
            b"{\"status\":\"r\",\"status_code\":10,\"info\":{}}\n{\"status\":\"m\",\"status_code\":80,\"info\":{\"msg_id\":1,\"from\":\"a\",\"to\":\"b\",\"text\":\"7:9:xx\",\"ts\":1}}\n{\"status\":\"r\",\"status_code\":50,\"info\":{\"msg_id\":1}}\n{\"status\":\"e\"",
        );
        assert_eq!(
            seen,
            ["Ready", "Message([55, 58, 57, 58, 120, 120])", "Ack"]
        );
        assert_eq!(left, 13);
    }

    #[test]
    fn redis_values_split_anywhere() {
        let whole = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nu1\r\n:1\r\n:0\r\n*3\r\n$7\r\nmessage\r\n$2\r\nu1\r\n$3\r\nabc\r\n";
        let (seen, left) = events(Kind::Redis, whole);
        assert_eq!(seen, ["Ready", "Ack", "Message([97, 98, 99])"]);
        assert_eq!(left, 0);
        for cut in 1..whole.len() {
            let (seen, _) = events(Kind::Redis, &whole[..cut]);
            assert!(seen.len() <= 3);
        }
    }

    #[test]
    fn nats_messages_and_pings() {
        let (seen, left) = events(
            Kind::Nats,
            b"INFO {}\r\nPONG\r\nMSG u1 1 3\r\nabc\r\nPING\r\nMSG u1 1 5\r\nab",
        );
        assert_eq!(seen, ["Other", "Ack", "Message([97, 98, 99])", "Ping"]);
        assert_eq!(left, 14);
    }

    #[test]
    fn payloads_round_trip() {
        let mut p = Vec::new();
        payload(&mut p, 42, 123_456, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(parse_payload(&p), Some((42, 123_456)));
    }
}
