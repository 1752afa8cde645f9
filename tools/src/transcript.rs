//! Replays a server transcript (conformance/server/*.jsonl) against a server: the
//! client frames it sends and the server frames it expects back, over as many
//! connections as it names. Plain blocking sockets: a transcript is one sequence of
//! steps, and a step that waits has a deadline.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::conformance::{next_frame, read_steps, Bindings, Next};

/// How long an expected frame may take.
const WAIT: Duration = Duration::from_secs(10);

/// Server settings a transcript needs, as `moechat-server` flags, from its
/// `{"requires": {...}}` line.
pub fn requirements(path: &Path) -> Result<Vec<String>, String> {
    let steps = read_steps(path)?;
    let Some(requires) = steps.first().and_then(|(_, s)| s.get("requires")) else {
        return Ok(Vec::new());
    };
    let Some(map) = requires.as_object() else {
        return Err(format!("{}: requires must be an object", path.display()));
    };
    let mut flags = Vec::new();
    for (k, v) in map {
        flags.push(format!("--{}", k.replace('_', "-")));
        flags.push(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    }
    Ok(flags)
}

/// What a transcript may do to the server besides talking to it.
pub trait ServerControl {
    /// Stops the server gracefully (SIGTERM); `Err` when the runner cannot.
    fn stop(&mut self) -> Result<(), String>;
}

/// One client connection of a transcript.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: &str) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(Conn {
            reader: BufReader::new(stream),
            writer,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer
            .write_all(bytes)
            .map_err(|e| format!("write failed: {e}"))
    }

    /// The next frame, `Ok(None)` at the end of the stream, `Err` after `wait`.
    fn next(&mut self, wait: Duration) -> Result<Option<Value>, String> {
        match next_frame(&mut self.reader, wait)? {
            Next::Frame(f) => Ok(Some(f)),
            Next::Closed => Ok(None),
            Next::Timeout => Err(format!("no frame within {} ms", wait.as_millis())),
        }
    }
}

/// Runs the transcript at `path` against `addr`; `Err` names the failing line.
pub fn run(path: &Path, addr: &str, control: &mut dyn ServerControl) -> Result<usize, String> {
    let steps = read_steps(path)?;
    let mut bindings = Bindings::new(&crate::conformance::run_token());
    let mut conns: HashMap<String, Conn> = HashMap::new();
    let name = path.display().to_string();
    for (line, step) in &steps {
        let at = |e: String| format!("{name}:{line}: {e}");
        if step.get("requires").is_some() {
            continue;
        }
        if step.get("stop").is_some() {
            control.stop().map_err(at)?;
            continue;
        }
        if let Some(ms) = step.get("sleep").and_then(Value::as_u64) {
            std::thread::sleep(Duration::from_millis(ms));
            continue;
        }
        let c = step
            .get("c")
            .and_then(Value::as_str)
            .ok_or_else(|| at("a step names its connection with \"c\"".into()))?
            .to_string();
        if !conns.contains_key(&c) {
            conns.insert(c.clone(), Conn::open(addr).map_err(at)?);
        }
        let conn = conns.get_mut(&c).expect("just inserted");
        do_step(conn, step, &mut bindings).map_err(at)?;
        if step.get("close").is_some() {
            conns.remove(&c);
        }
    }
    Ok(steps.len())
}

fn do_step(conn: &mut Conn, step: &Value, bindings: &mut Bindings) -> Result<(), String> {
    if let Some(frame) = step.get("send") {
        let mut bytes = serde_json::to_vec(&bindings.fill(frame)?).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        return conn.write(&bytes);
    }
    if let Some(raw) = step.get("raw").and_then(Value::as_str) {
        let raw = raw.replace("{run}", bindings.run());
        return conn.write(raw.as_bytes());
    }
    if let Some(hex) = step.get("raw_hex").and_then(Value::as_str) {
        return conn.write(&decode_hex(hex)?);
    }
    if let Some(spec) = step.get("raw_repeat") {
        // {"byte": "x", "count": N, "then": "\n"}: a long line without a huge file.
        let byte = spec["byte"].as_str().unwrap_or("x").as_bytes().to_vec();
        let count = spec["count"].as_u64().unwrap_or(0) as usize;
        let mut bytes = byte.repeat(count);
        bytes.extend_from_slice(spec["then"].as_str().unwrap_or("").as_bytes());
        return conn.write(&bytes);
    }
    if let Some(flood) = step.get("flood") {
        let frame = bindings.fill(&flood["frame"])?;
        let mut line = serde_json::to_vec(&frame).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let count = flood["count"].as_u64().unwrap_or(1) as usize;
        return conn.write(&line.repeat(count));
    }
    if let Some(pattern) = step.get("expect") {
        let frame = conn
            .next(WAIT)?
            .ok_or_else(|| format!("the server closed the connection; expected {pattern}"))?;
        return bindings.check(pattern, &frame);
    }
    if let Some(pattern) = step.get("until") {
        // Frames before the one expected may only be pushes (`m`), as after a flood.
        loop {
            let frame = conn
                .next(WAIT)?
                .ok_or_else(|| format!("the server closed the connection; expected {pattern}"))?;
            let mut trial = bindings.clone();
            if trial.check(pattern, &frame).is_ok() {
                *bindings = trial;
                return Ok(());
            }
            if frame["status"] != "m" {
                return Err(format!("expected {pattern} (after pushes), got {frame}"));
            }
        }
    }
    if step.get("closed").is_some() {
        return match conn.next(WAIT)? {
            None => Ok(()),
            Some(frame) => Err(format!("expected the connection to close, got {frame}")),
        };
    }
    if let Some(ms) = step.get("quiet").and_then(Value::as_u64) {
        return match conn.next(Duration::from_millis(ms)) {
            Err(_) => Ok(()),
            Ok(Some(frame)) => Err(format!("expected silence for {ms} ms, got {frame}")),
            Ok(None) => Err(format!(
                "expected silence for {ms} ms, the connection closed"
            )),
        };
    }
    if step.get("close").is_some() {
        let _ = conn.writer.shutdown(Shutdown::Both);
        return Ok(());
    }
    if step.get("drain").is_some() {
        // Reads and drops what is pending (until a short silence).
        let mut sink = [0u8; 64 * 1024];
        let _ = conn
            .reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)));
        while let Ok(n) = conn.reader.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        return Ok(());
    }
    Err(format!("unknown step {step}"))
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    if !hex.len().is_multiple_of(2) {
        return Err(format!("odd-length hex {hex:?}"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| format!("{hex:?}: {e}")))
        .collect()
}
