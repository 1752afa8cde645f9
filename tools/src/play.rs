//! The scripted fake server of the client scripts (conformance/client/*.jsonl): it
//! plays the script's `server` steps against one client under test, over TCP or, for
//! clients that speak only WebSocket, over WebSocket (a script's first line may say
//! `{"transport": ...}`; the driver chooses with `--ws`). The `app` steps are for the
//! client's own driver; this side skips them.
//!
//! Blocking sockets: the script is one sequence, and every wait has a deadline.

use std::io::{BufReader, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use moechat::protocol::reply::encode_pong;
use moechat::protocol::{Code, Status};
use serde_json::Value;
use tungstenite::{Message, WebSocket};

use crate::conformance::{next_frame, parse_frame, read_steps, Bindings, Next};

/// How long the client may take to send an expected frame, or to connect.
const WAIT: Duration = Duration::from_secs(10);

/// One accepted client connection.
enum Wire {
    Tcp {
        reader: BufReader<TcpStream>,
        writer: TcpStream,
    },
    Ws(Box<WebSocket<TcpStream>>),
}

impl Wire {
    fn accept(stream: TcpStream, ws: bool) -> Result<Wire, String> {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(WAIT));
        if ws {
            let socket = tungstenite::accept(stream)
                .map_err(|e| format!("WebSocket handshake failed: {e}"))?;
            return Ok(Wire::Ws(Box::new(socket)));
        }
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(Wire::Tcp {
            reader: BufReader::new(stream),
            writer,
        })
    }

    fn stream(&self) -> &TcpStream {
        match self {
            Wire::Tcp { writer, .. } => writer,
            Wire::Ws(ws) => ws.get_ref(),
        }
    }

    fn send_line(&mut self, line: &str) -> Result<(), String> {
        match self {
            Wire::Tcp { writer, .. } => writer
                .write_all(format!("{line}\n").as_bytes())
                .map_err(|e| format!("write failed: {e}")),
            Wire::Ws(ws) => ws
                .send(Message::text(line))
                .map_err(|e| format!("write failed: {e}")),
        }
    }

    /// Bytes as they are: over WebSocket, the start of a text message that never ends.
    fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self {
            Wire::Tcp { writer, .. } => writer.write_all(bytes).map_err(|e| e.to_string()),
            Wire::Ws(ws) => {
                // A header that promises more than follows: the message never ends.
                let promised = u16::try_from(bytes.len() * 2).unwrap_or(u16::MAX).max(126);
                let mut frame = vec![0x81, 126];
                frame.extend_from_slice(&promised.to_be_bytes());
                frame.extend_from_slice(bytes);
                ws.get_mut().write_all(&frame).map_err(|e| e.to_string())
            }
        }
    }

    fn next(&mut self, wait: Duration) -> Result<Next, String> {
        let _ = self.stream().set_read_timeout(Some(wait));
        match self {
            Wire::Tcp { reader, .. } => next_frame(reader, wait),
            Wire::Ws(ws) => loop {
                match ws.read() {
                    Ok(Message::Text(t)) => return parse_frame(t.as_bytes()),
                    Ok(Message::Close(_)) => return Ok(Next::Closed),
                    Ok(Message::Binary(b)) => {
                        return Err(format!("the client sent a binary message: {b:?}"))
                    }
                    Ok(_) => continue,
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                    {
                        return Ok(Next::Timeout)
                    }
                    Err(_) => return Ok(Next::Closed),
                }
            },
        }
    }

    fn drop_now(self) {
        let _ = self.stream().shutdown(Shutdown::Both);
    }
}

/// Accepts one connection within `wait`; `Ok(None)` if none came.
fn accept(listener: &TcpListener, wait: Duration) -> Result<Option<TcpStream>, String> {
    let deadline = Instant::now() + wait;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(Some(stream));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("accept failed: {e}")),
        }
    }
}

/// Whether a frame is a client's cumulative ack, and of what.
fn ack_of(frame: &Value) -> Option<u64> {
    let shaped = frame.get("status")? == Status::Response.as_str()
        && frame.get("status_code")? == Code::Delivered.number()
        && frame.as_object()?.len() == 3
        && frame.get("info")?.as_object()?.len() == 1;
    shaped.then(|| frame["info"]["ack"].as_u64()).flatten()
}

/// Plays the `server` steps of `script`, over WebSocket if `ws`; `ready` is told the
/// address to connect to before the first step. `Err` names the step that failed.
pub fn play(script: &Path, ws: bool, ready: impl FnOnce(SocketAddr)) -> Result<(), String> {
    let steps = read_steps(script)?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    ready(listener.local_addr().map_err(|e| e.to_string())?);
    let mut bindings = Bindings::new("play");
    let mut wire: Option<Wire> = None;
    let name = script.display().to_string();
    for (line, step) in &steps {
        let Some(action) = step.get("server").and_then(Value::as_str) else {
            continue;
        };
        let at = |e: String| format!("{name}:{line}: {e}");
        let wait = step
            .get("ms")
            .and_then(Value::as_u64)
            .map(Duration::from_millis);
        match action {
            "accept" => {
                let stream = accept(&listener, WAIT)
                    .map_err(at)?
                    .ok_or_else(|| at("the client did not connect".into()))?;
                if let Some(old) = wire.take() {
                    old.drop_now();
                }
                wire = Some(Wire::accept(stream, ws).map_err(at)?);
            }
            "no_accept" => {
                let ms = wait.unwrap_or(Duration::from_secs(1));
                if accept(&listener, ms).map_err(at)?.is_some() {
                    return Err(at(format!(
                        "the client connected again within {} ms; it must not",
                        ms.as_millis()
                    )));
                }
            }
            _ => {
                let w = wire
                    .as_mut()
                    .ok_or_else(|| at("no connection: accept first".into()))?;
                match action {
                    "expect" => match w.next(WAIT).map_err(at)? {
                        Next::Frame(f) => bindings.check(&step["frame"], &f).map_err(at)?,
                        Next::Closed => {
                            return Err(at(format!("closed; expected {}", step["frame"])))
                        }
                        Next::Timeout => {
                            return Err(at(format!("nothing came; expected {}", step["frame"])))
                        }
                    },
                    "expect_ack" => {
                        let up_to = step["up_to"].as_u64().unwrap_or(0);
                        loop {
                            match w.next(WAIT).map_err(at)? {
                                Next::Frame(f) => match ack_of(&f) {
                                    Some(n) if n >= up_to => break,
                                    Some(_) => continue,
                                    None => {
                                        return Err(at(format!(
                                            "expected an ack up to {up_to}, got {f}"
                                        )))
                                    }
                                },
                                _ => return Err(at(format!("no ack up to {up_to} came"))),
                            }
                        }
                    }
                    "quiet" => {
                        let ms = wait.unwrap_or(Duration::from_millis(300));
                        if let Next::Frame(f) = w.next(ms).map_err(at)? {
                            return Err(at(format!(
                                "expected nothing for {} ms, got {f}",
                                ms.as_millis()
                            )));
                        }
                    }
                    "send" => {
                        let frame = bindings.fill(&step["frame"]).map_err(at)?;
                        w.send_line(&frame.to_string()).map_err(at)?;
                    }
                    "send_raw" => {
                        let text = step["text"].as_str().unwrap_or_default();
                        w.send_raw(text.as_bytes()).map_err(at)?;
                    }
                    "drop" => {
                        if let Some(w) = wire.take() {
                            w.drop_now();
                        }
                    }
                    other => return Err(at(format!("unknown server step {other:?}"))),
                }
            }
        }
    }
    // The app side finishes by closing the client; until then only acks and pongs
    // may come (a client acknowledges what it took as it closes).
    if let Some(mut w) = wire.take() {
        let pong: Value = serde_json::from_slice(&encode_pong()).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + WAIT;
        loop {
            if Instant::now() >= deadline {
                return Err(format!("{name}: the client did not close its connection"));
            }
            match w.next(WAIT)? {
                Next::Closed => break,
                Next::Timeout => {}
                Next::Frame(f) => {
                    if ack_of(&f).is_none() && f != pong {
                        return Err(format!("{name}: after the script, the client sent {f}"));
                    }
                }
            }
        }
    }
    Ok(())
}
