//! Typed client requests (PROTOCOL.md sections 3.1 and 3.2): what a `q` or `m`
//! frame asks for, parsed from its envelope with the exact failure code the
//! protocol names for each bad argument, and encoded again for clients.
//!
//! Parsing is two steps on purpose. [`RequestKind::of`] only reads `req` (or the
//! code decade of an `m` frame), so the session can answer "not logged in"
//! before judging the arguments; [`Request::parse`] then checks them.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::code::{Code, Status};
use super::envelope::{encode, Envelope, Id};
use super::validate::{
    is_valid_name, is_valid_nonce, is_valid_password, is_valid_session_token, name_rule,
    password_rule, BROADCAST_PEER,
};

/// Default number of messages a history request returns.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;
/// Largest number of messages one history request may ask for.
pub const MAX_HISTORY_LIMIT: u32 = 500;
// A pattern bound must be a constant of the matched type.
const MAX_HISTORY_LIMIT_U64: u64 = MAX_HISTORY_LIMIT as u64;

/// What a request is, read from `req` or from an `m` frame's code decade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `req: "login"`.
    Login,
    /// `req: "register"`.
    Register,
    /// `req: "ping"`.
    Ping,
    /// `req: "users"`.
    Users,
    /// `req: "history"`.
    History,
    /// `req: "logout"`.
    Logout,
    /// Any other or a missing `req`.
    Unknown,
    /// An `m` frame with a code from 80 to 89.
    Direct,
    /// An `m` frame with a code from 90 to 99.
    Broadcast,
}

impl RequestKind {
    /// The kind of a `q` or `m` frame; `None` for `r` and `e` frames, which are not requests.
    pub fn of(env: &Envelope) -> Option<RequestKind> {
        match env.status {
            Status::Query => Some(match env.str_field("req") {
                Some("login") => RequestKind::Login,
                Some("register") => RequestKind::Register,
                Some("ping") => RequestKind::Ping,
                Some("users") => RequestKind::Users,
                Some("history") => RequestKind::History,
                Some("logout") => RequestKind::Logout,
                _ => RequestKind::Unknown,
            }),
            // The envelope parser guarantees an `m` code from 80 to 99; the decade decides.
            Status::Message if env.code < Code::Broadcast.number() => Some(RequestKind::Direct),
            Status::Message => Some(RequestKind::Broadcast),
            Status::Response | Status::Error => None,
        }
    }

    /// Whether a connection that has not logged in may make this request.
    pub fn allowed_before_login(self) -> bool {
        matches!(
            self,
            RequestKind::Login | RequestKind::Register | RequestKind::Ping
        )
    }

    /// Whether this request is an `m` frame (its failures are `e` frames).
    pub fn is_message(self) -> bool {
        matches!(self, RequestKind::Direct | RequestKind::Broadcast)
    }
}

/// How a login proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `password` (or its alias `passwd`).
    Password(String),
    /// `session`: a token from an earlier login.
    Session(String),
}

/// `req: "login"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The login name.
    pub user: String,
    /// Password or session token.
    pub credential: Credential,
    /// `acks: true` asks for at-least-once delivery (PROTOCOL.md 3.4).
    pub acks: bool,
}

/// `req: "register"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// The name to create.
    pub user: String,
    /// Its password.
    pub password: String,
}

/// Whose conversation a history request reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Direct messages between the requester and this user.
    User(String),
    /// Broadcasts (`with: "*"`).
    Broadcasts,
}

/// `req: "history"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// Whose conversation.
    pub with: Peer,
    /// At most this many messages, the newest ones before `before`.
    pub limit: u32,
    /// Only messages with a smaller `msg_id`.
    pub before: Option<u64>,
}

/// `m`/80: a direct message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Direct {
    /// The recipient's name.
    pub to: String,
    /// The text.
    pub text: String,
    /// The client's idempotency key, if any.
    pub nonce: Option<String>,
}

/// `m`/90: a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    /// The text.
    pub text: String,
    /// The client's idempotency key, if any.
    pub nonce: Option<String>,
}

/// A request with valid arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Log in.
    Login(Login),
    /// Create a user.
    Register(Register),
    /// Round trip.
    Ping,
    /// Who is online.
    Users,
    /// Read stored messages.
    History(History),
    /// End the session.
    Logout,
    /// Send to one user.
    Direct(Direct),
    /// Send to everyone online.
    Broadcast(Broadcast),
}

/// A refused request: the code to answer with and the sentence for `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    /// The failure code.
    pub code: Code,
    /// One human-readable sentence.
    pub reason: String,
}

impl Rejection {
    /// A rejection with `code` and `reason`.
    pub fn new(code: Code, reason: impl Into<String>) -> Rejection {
        Rejection {
            code,
            reason: reason.into(),
        }
    }
}

impl Request {
    /// Parses the arguments of a request of `kind`. `max_text_bytes` bounds message text.
    ///
    /// [`RequestKind::Unknown`] always fails with `r`/40.
    pub fn parse(
        kind: RequestKind,
        info: &Map<String, Value>,
        max_text_bytes: usize,
    ) -> Result<Request, Rejection> {
        match kind {
            RequestKind::Login => parse_login(info).map(Request::Login),
            RequestKind::Register => parse_register(info).map(Request::Register),
            RequestKind::Ping => Ok(Request::Ping),
            RequestKind::Users => Ok(Request::Users),
            RequestKind::History => parse_history(info).map(Request::History),
            RequestKind::Logout => Ok(Request::Logout),
            RequestKind::Unknown => Err(Rejection::new(
                Code::UnknownRequest,
                match info.get("req") {
                    Some(Value::String(r)) => format!("unknown request {r:?}"),
                    Some(_) => "\"req\" must be a string".to_string(),
                    None => "the query has no \"req\"".to_string(),
                },
            )),
            RequestKind::Direct => {
                let string = |key: &str| info.get(key).and_then(Value::as_str);
                let nonce = match info.get("nonce") {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(n)) => Ok(Some(n.as_str())),
                    Some(_) => Err(()),
                };
                Request::direct(string("to"), string("text"), nonce, max_text_bytes)
            }
            RequestKind::Broadcast => {
                let (text, nonce) = parse_text_and_nonce(info, max_text_bytes)?;
                Ok(Request::Broadcast(Broadcast { text, nonce }))
            }
        }
    }

    /// A direct message from its fields as found: `None` for one missing or not a
    /// string, `Err` for a nonce that is not a string. The full parse and the
    /// shortcut of [`crate::protocol::fast`] both come here, so they refuse alike.
    pub fn direct(
        to: Option<&str>,
        text: Option<&str>,
        nonce: Result<Option<&str>, ()>,
        max_text_bytes: usize,
    ) -> Result<Request, Rejection> {
        let to = match to {
            Some(name) if is_valid_name(name) => name.to_string(),
            Some(_) => {
                return Err(Rejection::new(
                    Code::MalformedMessage,
                    format!("\"to\" is not a valid name: {}", name_rule()),
                ))
            }
            None => {
                return Err(Rejection::new(
                    Code::MalformedMessage,
                    "a direct message needs \"to\", a user name",
                ))
            }
        };
        let (text, nonce) = text_and_nonce(text, nonce, max_text_bytes)?;
        Ok(Request::Direct(Direct { to, text, nonce }))
    }

    /// The frame a client sends for this request, newline included.
    pub fn encode(&self, id: Option<&Id>) -> Bytes {
        let (status, code, info) = match self {
            Request::Login(l) => {
                let mut info = json!({"req": "login", "user": l.user});
                match &l.credential {
                    Credential::Password(p) => info["password"] = json!(p),
                    Credential::Session(s) => info["session"] = json!(s),
                }
                if l.acks {
                    info["acks"] = json!(true);
                }
                (Status::Query, 0, info)
            }
            Request::Register(r) => (
                Status::Query,
                0,
                json!({"req": "register", "user": r.user, "password": r.password}),
            ),
            Request::Ping => (Status::Query, 0, json!({"req": "ping"})),
            Request::Users => (Status::Query, 0, json!({"req": "users"})),
            Request::History(h) => {
                let with = match &h.with {
                    Peer::User(u) => u.as_str(),
                    Peer::Broadcasts => BROADCAST_PEER,
                };
                let mut info = json!({"req": "history", "with": with, "limit": h.limit});
                if let Some(b) = h.before {
                    info["before"] = json!(b);
                }
                (Status::Query, 0, info)
            }
            Request::Logout => (Status::Query, 0, json!({"req": "logout"})),
            Request::Direct(d) => {
                // In the layout the server reads without a JSON tree (`fast`).
                #[derive(serde::Serialize)]
                struct Info<'a> {
                    to: &'a str,
                    text: &'a str,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    nonce: Option<&'a str>,
                }
                let info = Info {
                    to: &d.to,
                    text: &d.text,
                    nonce: d.nonce.as_deref(),
                };
                return encode(Status::Message, Code::Direct.number(), &info, id);
            }
            Request::Broadcast(b) => {
                let mut info = json!({"text": b.text});
                if let Some(n) = &b.nonce {
                    info["nonce"] = json!(n);
                }
                (Status::Message, Code::Broadcast.number(), info)
            }
        };
        encode(status, code, &info, id)
    }
}

/// The name in `info[key]`: `code` with the naming rule for a string that breaks
/// it, `code` with `missing` for anything else.
fn name_field(
    info: &Map<String, Value>,
    key: &str,
    code: Code,
    missing: &str,
) -> Result<String, Rejection> {
    match info.get(key) {
        Some(Value::String(name)) if is_valid_name(name) => Ok(name.clone()),
        Some(Value::String(_)) => Err(Rejection::new(
            code,
            format!("\"{key}\" is not a valid name: {}", name_rule()),
        )),
        _ => Err(Rejection::new(code, missing)),
    }
}

fn parse_login(info: &Map<String, Value>) -> Result<Login, Rejection> {
    let bad = |reason: &str| Rejection::new(Code::LoginMalformed, reason);
    let user = name_field(
        info,
        "user",
        Code::LoginMalformed,
        "login needs \"user\", a string",
    )?;
    let password = info.get("password").or_else(|| info.get("passwd"));
    let credential = match (password, info.get("session")) {
        (Some(Value::String(p)), _) if is_valid_password(p) => Credential::Password(p.clone()),
        (Some(_), _) => return Err(bad(&format!("\"password\" must be {}", password_rule()))),
        (None, Some(Value::String(s))) if is_valid_session_token(s) => {
            Credential::Session(s.clone())
        }
        (None, Some(_)) => return Err(bad("\"session\" must be a session token string")),
        (None, None) => return Err(bad("login needs \"password\" or \"session\"")),
    };
    let acks = match info.get("acks") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("\"acks\" must be true or false")),
    };
    Ok(Login {
        user,
        credential,
        acks,
    })
}

fn parse_register(info: &Map<String, Value>) -> Result<Register, Rejection> {
    let user = name_field(
        info,
        "user",
        Code::BadArguments,
        "register needs \"user\", a string",
    )?;
    let password = match info.get("password").or_else(|| info.get("passwd")) {
        Some(Value::String(p)) if is_valid_password(p) => p.clone(),
        _ => {
            return Err(Rejection::new(
                Code::BadArguments,
                format!("register needs \"password\", {}", password_rule()),
            ))
        }
    };
    Ok(Register { user, password })
}

fn parse_history(info: &Map<String, Value>) -> Result<History, Rejection> {
    let bad = |reason: &str| Rejection::new(Code::BadArguments, reason);
    let with = match info.get("with") {
        Some(Value::String(w)) if w == BROADCAST_PEER => Peer::Broadcasts,
        Some(Value::String(w)) if is_valid_name(w) => Peer::User(w.clone()),
        _ => return Err(bad("history needs \"with\", a user name or \"*\"")),
    };
    let limit = match info.get("limit") {
        None | Some(Value::Null) => DEFAULT_HISTORY_LIMIT,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=MAX_HISTORY_LIMIT_U64) => n as u32,
            _ => {
                return Err(bad(&format!(
                    "\"limit\" must be an integer from 1 to {MAX_HISTORY_LIMIT}"
                )))
            }
        },
    };
    let before = match info.get("before") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => return Err(bad("\"before\" must be a positive msg_id")),
        },
    };
    Ok(History {
        with,
        limit,
        before,
    })
}

fn parse_text_and_nonce(
    info: &Map<String, Value>,
    max_text_bytes: usize,
) -> Result<(String, Option<String>), Rejection> {
    let nonce = match info.get("nonce") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(n)) => Ok(Some(n.as_str())),
        Some(_) => Err(()),
    };
    text_and_nonce(
        info.get("text").and_then(Value::as_str),
        nonce,
        max_text_bytes,
    )
}

/// A message's text and nonce from the fields as found (see [`Request::direct`]).
fn text_and_nonce(
    text: Option<&str>,
    nonce: Result<Option<&str>, ()>,
    max_text_bytes: usize,
) -> Result<(String, Option<String>), Rejection> {
    let Some(text) = text else {
        return Err(Rejection::new(
            Code::MalformedMessage,
            "a message needs \"text\", a string",
        ));
    };
    let nonce = match nonce {
        Ok(None) => None,
        Ok(Some(n)) if is_valid_nonce(n) => Some(n.to_string()),
        _ => {
            return Err(Rejection::new(
                Code::MalformedMessage,
                "\"nonce\" must be a string of 1 to 64 characters",
            ))
        }
    };
    if text.is_empty() {
        return Err(Rejection::new(Code::BadText, "the text is empty"));
    }
    if text.len() > max_text_bytes {
        return Err(Rejection::new(
            Code::BadText,
            format!(
                "the text is {} bytes, more than the limit of {max_text_bytes}",
                text.len()
            ),
        ));
    }
    Ok((text.to_string(), nonce))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(line: &str) -> Envelope {
        Envelope::parse(line.as_bytes()).unwrap()
    }

    fn parse(line: &str) -> Result<Request, Rejection> {
        let e = env(line);
        Request::parse(RequestKind::of(&e).unwrap(), &e.info, 10)
    }

    #[test]
    fn kinds() {
        assert_eq!(
            RequestKind::of(&env(
                r#"{"status":"q","status_code":55,"info":{"req":"users"}}"#
            )),
            Some(RequestKind::Users)
        );
        assert_eq!(
            RequestKind::of(&env(r#"{"status":"q","status_code":0,"info":{}}"#)),
            Some(RequestKind::Unknown)
        );
        assert_eq!(
            RequestKind::of(&env(r#"{"status":"m","status_code":85,"info":{}}"#)),
            Some(RequestKind::Direct)
        );
        assert_eq!(
            RequestKind::of(&env(r#"{"status":"m","status_code":99,"info":{}}"#)),
            Some(RequestKind::Broadcast)
        );
        assert_eq!(
            RequestKind::of(&env(r#"{"status":"r","status_code":30,"info":{}}"#)),
            None
        );
    }

    #[test]
    fn login_accepts_passwd_and_acks() {
        let r = parse(r#"{"status":"q","status_code":0,"info":{"req":"login","user":"al","passwd":"pw","acks":true}}"#).unwrap();
        assert_eq!(
            r,
            Request::Login(Login {
                user: "al".into(),
                credential: Credential::Password("pw".into()),
                acks: true
            })
        );
    }

    #[test]
    fn login_failures_are_21() {
        for info in [
            r#"{"req":"login"}"#,
            r#"{"req":"login","user":"Al","password":"p"}"#,
            r#"{"req":"login","user":"al"}"#,
            r#"{"req":"login","user":"al","password":""}"#,
            r#"{"req":"login","user":"al","password":5}"#,
            r#"{"req":"login","user":"al","password":"p","acks":"yes"}"#,
        ] {
            let line = format!(r#"{{"status":"q","status_code":0,"info":{info}}}"#);
            assert_eq!(
                parse(&line).unwrap_err().code,
                Code::LoginMalformed,
                "{info}"
            );
        }
    }

    #[test]
    fn message_failures() {
        let cases = [
            (r#"{"text":"hi"}"#, Code::MalformedMessage),
            (r#"{"to":"Bob","text":"hi"}"#, Code::MalformedMessage),
            (r#"{"to":"bob","text":5}"#, Code::MalformedMessage),
            (
                r#"{"to":"bob","text":"hi","nonce":""}"#,
                Code::MalformedMessage,
            ),
            (r#"{"to":"bob","text":""}"#, Code::BadText),
            (r#"{"to":"bob","text":"12345678901"}"#, Code::BadText),
        ];
        for (info, code) in cases {
            let line = format!(r#"{{"status":"m","status_code":80,"info":{info}}}"#);
            assert_eq!(parse(&line).unwrap_err().code, code, "{info}");
        }
        assert!(parse(
            r#"{"status":"m","status_code":80,"info":{"to":"bob","text":"1234567890"}}"#
        )
        .is_ok());
    }

    #[test]
    fn history_arguments() {
        let ok =
            parse(r#"{"status":"q","status_code":0,"info":{"req":"history","with":"*"}}"#).unwrap();
        assert_eq!(
            ok,
            Request::History(History {
                with: Peer::Broadcasts,
                limit: 50,
                before: None
            })
        );
        for info in [
            r#""with":"Bob""#,
            r#""with":"bob","limit":0"#,
            r#""with":"bob","limit":501"#,
            r#""with":"bob","before":-3"#,
        ] {
            let line =
                format!(r#"{{"status":"q","status_code":0,"info":{{"req":"history",{info}}}}}"#);
            assert_eq!(parse(&line).unwrap_err().code, Code::BadArguments, "{info}");
        }
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let reqs = [
            Request::Login(Login {
                user: "a".into(),
                credential: Credential::Session("s".into()),
                acks: false,
            }),
            Request::Register(Register {
                user: "a".into(),
                password: "p".into(),
            }),
            Request::Ping,
            Request::Users,
            Request::History(History {
                with: Peer::User("b".into()),
                limit: 5,
                before: Some(9),
            }),
            Request::Logout,
            Request::Direct(Direct {
                to: "b".into(),
                text: "hi".into(),
                nonce: Some("n".into()),
            }),
            Request::Broadcast(Broadcast {
                text: "yo".into(),
                nonce: None,
            }),
        ];
        for r in reqs {
            let bytes = r.encode(Some(&Id::Int(3)));
            let e = Envelope::parse(&bytes[..bytes.len() - 1]).unwrap();
            assert_eq!(e.id, Some(Id::Int(3)));
            assert_eq!(
                Request::parse(RequestKind::of(&e).unwrap(), &e.info, 100).unwrap(),
                r
            );
        }
    }
}
