//! Fuzz target: arbitrary bytes through the line codec, the envelope parser and the
//! request parser, exactly as the server runs them on what a client sends. Any panic
//! is a bug: the server must answer every input with a frame, never crash.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use moechat::protocol::{Envelope, LineCodec, Request, RequestKind};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    // A small limit so the too-long path is exercised too.
    let mut codec = LineCodec::new(512);
    // Feed in two parts, as a socket may deliver them.
    let cut = data.len() / 2;
    let mut buf = BytesMut::from(&data[..cut]);
    for chunk in [&data[cut..], &[][..]] {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => {
                    if let Ok(env) = Envelope::parse(&line) {
                        if let Some(kind) = RequestKind::of(&env) {
                            let _ = Request::parse(kind, &env.info, 8192);
                        }
                        let _ = env.id.as_ref().map(|id| id.as_u64());
                    }
                }
                Ok(None) => break,
                Err(_) => return, // the server closes the connection here (e/61)
            }
        }
        buf.extend_from_slice(chunk);
    }
    let _ = codec.decode_eof(&mut buf);
});
