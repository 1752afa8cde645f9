//! Newline framing (PROTOCOL.md section 1) on a byte buffer, with no socket in sight.
//!
//! [`LineCodec`] cuts a byte stream into frames at `\n`, strips one `\r` before it,
//! skips empty lines and refuses a line longer than its limit as soon as the
//! buffer proves it too long, so a peer can never make us buffer more than
//! `max_frame_bytes + 1` bytes of one line. Lines are returned as raw bytes:
//! UTF-8 and JSON checks belong to the envelope parser, which answers them with
//! `e`/62 while this layer's only failure, a too-long line, is `e`/61.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// Why the codec stopped.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A line exceeded the configured limit; the connection cannot be resynchronised cheaply.
    #[error("frame longer than {limit} bytes")]
    FrameTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Splits a byte stream into newline-terminated frames of at most `max_frame_bytes`.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_frame_bytes: usize,
    /// Bytes of the buffer already searched for `\n`, so a slowly arriving long line
    /// is scanned once, not once per read.
    scanned: usize,
}

impl LineCodec {
    /// A codec refusing lines longer than `max_frame_bytes` (not counting `\r\n`).
    pub fn new(max_frame_bytes: usize) -> LineCodec {
        LineCodec {
            max_frame_bytes,
            scanned: 0,
        }
    }

    /// The limit in force.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }
}

impl Decoder for LineCodec {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        loop {
            let Some(pos) = memchr::memchr(b'\n', &buf[self.scanned..]) else {
                self.scanned = buf.len();
                // One byte of slack: the line may still end in "\r\n".
                if buf.len() > self.max_frame_bytes + 1 {
                    return Err(CodecError::FrameTooLong {
                        limit: self.max_frame_bytes,
                    });
                }
                return Ok(None);
            };
            let end = self.scanned + pos;
            self.scanned = 0;
            let mut line = buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            if line.len() > self.max_frame_bytes {
                return Err(CodecError::FrameTooLong {
                    limit: self.max_frame_bytes,
                });
            }
            if line.is_empty() {
                continue;
            }
            return Ok(Some(line.freeze()));
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        // A peer that hangs up mid-frame sent no frame: the partial line is dropped.
        buf.clear();
        self.scanned = 0;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut LineCodec, input: &[u8]) -> Result<Vec<Bytes>, CodecError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn splits_strips_cr_and_skips_empty_lines() {
        let mut c = LineCodec::new(100);
        let frames = decode_all(&mut c, b"{\"a\":1}\r\n\n\r\n{}\npartial").unwrap();
        assert_eq!(
            frames,
            vec![Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"{}")]
        );
    }

    #[test]
    fn partial_line_waits_for_more_bytes() {
        let mut c = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"{\"a\""[..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b":1}\n");
        assert_eq!(
            c.decode(&mut buf).unwrap().unwrap(),
            Bytes::from_static(b"{\"a\":1}")
        );
    }

    #[test]
    fn exact_limit_is_accepted_with_or_without_cr() {
        let mut c = LineCodec::new(4);
        assert_eq!(decode_all(&mut c, b"abcd\n").unwrap().len(), 1);
        assert_eq!(decode_all(&mut c, b"abcd\r\n").unwrap().len(), 1);
        let mut buf = BytesMut::from(&b"abcd\r"[..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn too_long_line_is_refused_before_its_newline_arrives() {
        let mut c = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert!(matches!(
            c.decode(&mut buf),
            Err(CodecError::FrameTooLong { limit: 4 })
        ));
        let mut c = LineCodec::new(4);
        assert!(matches!(
            decode_all(&mut c, b"abcde\n"),
            Err(CodecError::FrameTooLong { limit: 4 })
        ));
    }

    #[test]
    fn eof_drops_a_partial_frame() {
        let mut c = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"{}\n{\"half"[..]);
        assert!(c.decode_eof(&mut buf).unwrap().is_some());
        assert!(c.decode_eof(&mut buf).unwrap().is_none());
        assert!(buf.is_empty());
    }
}
