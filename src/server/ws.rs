//! The WebSocket transport as the connection task sees it: one protocol frame per
//! text message in both directions, turned into and out of the byte stream that the
//! TCP path reads and writes, so that everything after the transport (framing
//! limits, sessions, delivery, the drain and the goodbye) is the same code.
//!
//! Reading, a text message becomes one line: its bytes and a `\n`. A `\n` inside
//! the message becomes `\r`, which JSON reads as whitespace between tokens and
//! refuses inside a string, just as it treats a `\n`, so a message holds exactly one
//! frame whatever its layout. Writing, the output buffer holds whole frames (the
//! connection only ever appends complete lines), and each line leaves as one text
//! message. A binary message, and a message longer than the frame limit (which
//! tungstenite refuses before buffering it), are reported to the connection as
//! [`Refusal`]s, which it answers as a TCP line would be answered.

use std::io;
use std::task::{Context, Poll};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};

/// A message the connection must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A binary message: frames are text (answered `e`/62, the connection stays).
    Binary,
    /// A message over `max_frame_bytes` (answered `e`/61, then closed, as on TCP).
    TooLong,
}

/// What one read of the WebSocket achieved.
pub(crate) enum Read {
    /// Lines were appended to the input.
    Data,
    /// The peer closed, or the WebSocket failed: nothing more will arrive.
    Eof,
    /// A message to refuse; any messages before it were appended first.
    Refused(Refusal),
}

/// Bytes of input gathered per read before the frames are handled.
const READ_AHEAD: usize = 8 * 1024;

/// A server-side WebSocket carrying protocol frames (see the module doc).
pub(crate) struct WsIo {
    ws: WebSocket,
    /// A refusal met while reading ahead, reported at the next read so that the
    /// frames before it are answered first.
    held: Option<Refusal>,
}

impl WsIo {
    pub(crate) fn new(ws: WebSocket) -> WsIo {
        WsIo { ws, held: None }
    }

    /// Appends the lines of the messages that have arrived to `input`.
    pub(crate) fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        input: &mut BytesMut,
    ) -> Poll<Read> {
        if let Some(refusal) = self.held.take() {
            return Poll::Ready(Read::Refused(refusal));
        }
        let mut got = false;
        while input.len() < READ_AHEAD {
            let next = match self.ws.poll_next_unpin(cx) {
                Poll::Pending => break,
                Poll::Ready(next) => next,
            };
            let refusal = match next {
                Some(Ok(Message::Text(text))) => {
                    append_line(input, text.as_bytes());
                    got = true;
                    continue;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Binary(_))) => Refusal::Binary,
                Some(Err(e)) if too_long(&e) => Refusal::TooLong,
                // A close frame, a protocol error or a dropped socket; after it the
                // stream yields `None` again, so the end is seen at the next read.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    return Poll::Ready(if got { Read::Data } else { Read::Eof });
                }
            };
            if got {
                self.held = Some(refusal);
                return Poll::Ready(Read::Data);
            }
            return Poll::Ready(Read::Refused(refusal));
        }
        if got {
            Poll::Ready(Read::Data)
        } else {
            Poll::Pending
        }
    }

    /// Sends the whole lines at the front of `buf`, one text message each, as far as
    /// the WebSocket's write buffer takes them; returns the bytes taken.
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut taken = 0;
        while taken < buf.len() {
            match self.ws.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Pending => break,
            }
            let rest = &buf[taken..];
            let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            taken += (end + 1).min(rest.len());
            if end == 0 {
                continue;
            }
            // Frames are made by the protocol's encoders from strings: always UTF-8.
            let text = Utf8Bytes::try_from(Bytes::copy_from_slice(&rest[..end]))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.ws
                .start_send_unpin(Message::Text(text))
                .map_err(io::Error::other)?;
        }
        if taken == 0 {
            Poll::Pending
        } else {
            Poll::Ready(Ok(taken))
        }
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_flush_unpin(cx).map_err(io::Error::other)
    }

    /// Sends a close frame (once) and flushes it.
    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_close_unpin(cx).map_err(io::Error::other)
    }
}

/// Whether a WebSocket error is tungstenite refusing a message over the size limit.
fn too_long(e: &axum::Error) -> bool {
    // axum wraps tungstenite's error; its kind is only visible through the source.
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<tungstenite::Error>())
        .is_some_and(|t| matches!(t, tungstenite::Error::Capacity(_)))
}

/// Appends `message` as one line (see the module doc for the `\n` → `\r` mapping).
fn append_line(input: &mut BytesMut, message: &[u8]) {
    let start = input.len();
    input.reserve(message.len() + 1);
    input.extend_from_slice(message);
    for b in &mut input[start..] {
        if *b == b'\n' {
            *b = b'\r';
        }
    }
    input.extend_from_slice(b"\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_line_whatever_its_layout() {
        let mut input = BytesMut::new();
        append_line(&mut input, b"{\n \"op\": 1\n}\n");
        append_line(&mut input, b"");
        assert_eq!(&input[..], b"{\r \"op\": 1\r}\r\n\n");
        // JSON still reads the mapped layout as whitespace.
        let first = input[..].split(|b| *b == b'\n').next().unwrap();
        let v: serde_json::Value = serde_json::from_slice(first).unwrap();
        assert_eq!(v["op"], 1);
        // And still refuses a raw newline inside a string.
        let mut input = BytesMut::new();
        append_line(&mut input, b"{\"a\":\"x\ny\"}");
        let line = &input[..input.len() - 1];
        assert!(serde_json::from_slice::<serde_json::Value>(line).is_err());
    }
}
