//! The Rust client (`moechat::Client`) against every client script of
//! conformance/client/: the scripted fake server plays the `server` steps on a
//! thread, this driver plays the `app` steps with the client (see
//! conformance/README.md for the vocabulary).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use moechat::{Client, ClientError, ClientOptions, Incoming};
use moechat_tools::conformance::{read_steps, Bindings};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(15);

fn scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/client");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("conformance/client exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "the client scripts are there: {files:?}");
    files
}

fn error_json(e: &ClientError) -> Value {
    json!({"closed": matches!(e, ClientError::Closed { .. }), "code": e.code()})
}

/// What a call gave, as the script's `result` or `error` spells it.
type Outcome = Result<Value, Value>;

struct App {
    client: Option<Client>,
    incoming: Option<Arc<Mutex<Incoming>>>,
    calls: HashMap<String, JoinHandle<Outcome>>,
}

impl App {
    fn client(&self) -> Client {
        self.client.clone().expect("the script connects first")
    }

    async fn step(&mut self, step: &Value, port: u16) -> Result<(), String> {
        let op = step["app"].as_str().unwrap_or_default();
        let name = step["as"].as_str().unwrap_or(op).to_string();
        let arg = |i: usize| step["args"][i].as_str().unwrap_or_default().to_string();
        let call: Option<JoinHandle<Outcome>> = match op {
            "connect" => {
                let options = ClientOptions::default();
                let (client, incoming) = Client::connect_with("127.0.0.1", port, options)
                    .await
                    .map_err(|e| e.to_string())?;
                self.client = Some(client);
                self.incoming = Some(Arc::new(Mutex::new(incoming)));
                None
            }
            "login" => {
                let (c, user, password) = (self.client(), arg(0), arg(1));
                Some(tokio::spawn(async move {
                    c.login(&user, &password)
                        .await
                        .map(|ok| json!(ok.session))
                        .map_err(|e| error_json(&e))
                }))
            }
            "send" | "broadcast" => {
                let (c, first, second) = (self.client(), arg(0), arg(1));
                let direct = op == "send";
                Some(tokio::spawn(async move {
                    let sent = if direct {
                        c.send(&first, &second).await
                    } else {
                        c.broadcast(&first).await
                    };
                    sent.map(|s| {
                        if direct {
                            json!({"msg_id": s.msg_id, "stored": s.stored, "duplicate": s.duplicate})
                        } else {
                            json!({"msg_id": s.msg_id, "recipients": s.recipients, "duplicate": s.duplicate})
                        }
                    })
                    .map_err(|e| error_json(&e))
                }))
            }
            "recv" => {
                let incoming = self.incoming.clone().expect("connected");
                let timeout = step["timeout_ms"].as_u64().map(Duration::from_millis);
                Some(tokio::spawn(async move {
                    let mut incoming = incoming.lock().await;
                    let got = match timeout {
                        Some(t) => match tokio::time::timeout(t, incoming.recv()).await {
                            Ok(r) => r,
                            Err(_) => return Ok(Value::Null),
                        },
                        None => incoming.recv().await,
                    };
                    got.map(|m| {
                        json!({"msg_id": m.msg_id, "from": m.from, "to": m.to, "text": m.text,
                               "broadcast": m.to.is_none()})
                    })
                    .map_err(|e| error_json(&e))
                }))
            }
            "await" => {
                let which = step["call"].as_str().unwrap_or_default();
                let handle = self
                    .calls
                    .remove(which)
                    .ok_or_else(|| format!("no call named {which:?} was started"))?;
                let outcome = tokio::time::timeout(WAIT, handle)
                    .await
                    .map_err(|_| format!("{which} did not finish within {WAIT:?}"))?
                    .map_err(|e| e.to_string())?;
                let (want, got) = match (&outcome, step.get("result"), step.get("error")) {
                    (Ok(v), Some(want), None) => (want, v),
                    (Err(e), None, Some(want)) => (want, e),
                    _ => return Err(format!("{which}: expected {step}, got {outcome:?}")),
                };
                Bindings::new("app")
                    .check(want, got)
                    .map_err(|e| format!("{which}: {e}"))?;
                None
            }
            "sleep" => {
                tokio::time::sleep(Duration::from_millis(step["ms"].as_u64().unwrap_or(0))).await;
                None
            }
            "close" => {
                if let Some(c) = self.client.take() {
                    c.close();
                }
                self.incoming = None;
                None
            }
            other => return Err(format!("unknown app step {other:?}")),
        };
        if let Some(call) = call {
            self.calls.insert(name, call);
        }
        Ok(())
    }
}

fn run(script: &Path) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = script.to_path_buf();
    let player = std::thread::spawn(move || {
        moechat_tools::play::play(&path, false, |addr| {
            let _ = tx.send(addr);
        })
    });
    let addr = rx.recv_timeout(WAIT).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let steps = read_steps(script)?;
    let driven: Result<(), String> = runtime.block_on(async {
        let mut app = App {
            client: None,
            incoming: None,
            calls: HashMap::new(),
        };
        for (line, step) in &steps {
            if step.get("app").is_some() {
                app.step(step, addr.port())
                    .await
                    .map_err(|e| format!("{}:{line}: {e}", script.display()))?;
            }
        }
        Ok(())
    });
    let played = player
        .join()
        .map_err(|_| "the fake server panicked".to_string())?;
    driven?;
    played
}

#[test]
fn the_rust_client_passes_every_client_script() {
    let mut failures = Vec::new();
    for script in scripts() {
        if let Err(e) = run(&script) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
