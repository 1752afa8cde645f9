//! Server settings: each one's default and bounds, written once, and the
//! [`ServerConfig`] that validates itself.
//!
//! The CLI (its defaults and help), the Python `Server` (through the extension's
//! `DEFAULTS`) and Rust callers all read the tables below, and every entry point
//! validates through [`ServerConfig::validate`], so the same bad value gets the
//! same one-line [`ConfigError`] from each. A bound exists where a value past it
//! would break the server rather than merely be unusual: a heartbeat the clock
//! cannot add, a frame limit the codec cannot add to, a semaphore larger than
//! tokio allows.
//!
//! Fixed limits that are not settings live beside what they limit (the protocol's
//! name, password, nonce and history bounds in `protocol`, the client's queues in
//! `client`), each a named constant.

use std::path::PathBuf;
use std::time::Duration;

/// The seed's port.
pub const DEFAULT_PORT: u16 = 3541;
/// Loopback: exposing the server is a deliberate choice (`--host 0.0.0.0`).
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The store file used when none is named.
pub const DEFAULT_DB: &str = "./moechat.db";
/// The special database path that keeps everything in memory.
pub const MEMORY_DB: &str = ":memory:";
/// Where the HTTP listener (chat page, WebSocket, metrics) binds when none is named:
/// the seed's port plus one, on loopback like the TCP port.
pub const DEFAULT_HTTP: &str = "127.0.0.1:3542";
/// The value of `http` that turns the HTTP listener off.
pub const HTTP_OFF: &str = "off";

/// A setting out of its bounds: one sentence, the same from every entry point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} must be {rule}, not {value}")]
pub struct ConfigError {
    /// The setting's name as the Rust field and the Python keyword spell it (the CLI
    /// flag is the same with dashes).
    pub setting: &'static str,
    /// What it must be, in words.
    pub rule: String,
    /// What it was given.
    pub value: String,
}

/// A setting counted in seconds: more than 0 and at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct Seconds {
    /// Its name (see [`ConfigError::setting`]).
    pub name: &'static str,
    /// Its default.
    pub default: f64,
    /// The largest value allowed.
    pub max: f64,
}

impl Seconds {
    /// `secs` as a duration, or the error [`ServerConfig::validate`] gives for it.
    pub fn duration(&self, secs: f64) -> Result<Duration, ConfigError> {
        if secs.is_finite() && secs > 0.0 && secs <= self.max {
            // In range, so the conversion cannot fail; a sub-nanosecond value rounds
            // to zero, which `check` then refuses.
            let d = Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO);
            self.check(d)?;
            return Ok(d);
        }
        Err(self.error(secs))
    }

    /// The default as a duration.
    pub fn default_duration(&self) -> Duration {
        Duration::from_secs_f64(self.default)
    }

    fn check(&self, d: Duration) -> Result<(), ConfigError> {
        if d.is_zero() || d.as_secs_f64() > self.max {
            return Err(self.error(d.as_secs_f64()));
        }
        Ok(())
    }

    fn error(&self, secs: f64) -> ConfigError {
        ConfigError {
            setting: self.name,
            rule: format!("more than 0 and at most {} seconds", self.max),
            value: secs.to_string(),
        }
    }
}

/// A setting counted in whole units: from `min` to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Count {
    /// Its name (see [`ConfigError::setting`]).
    pub name: &'static str,
    /// Its default.
    pub default: u64,
    /// The smallest value allowed.
    pub min: u64,
    /// The largest value allowed.
    pub max: u64,
    /// What 0 means when it is allowed ("off", "no cap"), for the error sentence.
    pub zero_means: Option<&'static str>,
}

impl Count {
    fn check(&self, value: u64) -> Result<(), ConfigError> {
        if (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        Err(self.error(value))
    }

    fn error(&self, value: impl std::fmt::Display) -> ConfigError {
        let rule = match self.zero_means {
            Some(zero) => format!("0 ({zero}) or from 1 to {}", self.max),
            None => format!("from {} to {}", self.min, self.max),
        };
        ConfigError {
            setting: self.name,
            rule,
            value: value.to_string(),
        }
    }

    /// `value` as the setting's type, or the error [`ServerConfig::validate`] gives
    /// for it (for front ends whose integers are unbounded, like Python's).
    pub fn from_int<T: TryFrom<i128>>(&self, value: i128) -> Result<T, ConfigError> {
        let n = u64::try_from(value).map_err(|_| self.error(value))?;
        self.check(n)?;
        T::try_from(value).map_err(|_| self.error(value))
    }

    /// The default, as a `usize`.
    pub const fn default_usize(&self) -> usize {
        self.default as usize
    }

    /// The default, as a `u32`.
    pub const fn default_u32(&self) -> u32 {
        self.default as u32
    }
}

/// Silence after which the server pings a client; twice this closes it.
pub const HEARTBEAT: Seconds = Seconds {
    name: "heartbeat",
    default: 60.0,
    max: 86_400.0,
};
/// How long a session token can resume its session.
pub const SESSION_TTL: Seconds = Seconds {
    name: "session_ttl",
    default: 86_400.0,
    max: 31_536_000.0,
};
/// How long a graceful stop waits for connections to say goodbye.
pub const SHUTDOWN_GRACE: Seconds = Seconds {
    name: "shutdown_grace",
    default: 5.0,
    max: 3_600.0,
};
/// How long a login or register waits for a password-hashing slot before `r`/24.
pub const HASH_WAIT: Seconds = Seconds {
    name: "hash_wait",
    default: 5.0,
    max: 3_600.0,
};
/// Longest accepted line; 16 MiB keeps every buffer size far from overflow.
pub const MAX_FRAME_BYTES: Count = Count {
    name: "max_frame_bytes",
    default: 65_536,
    min: 64,
    max: 16 << 20,
    zero_means: None,
};
/// Longest message text.
pub const MAX_TEXT_BYTES: Count = Count {
    name: "max_text_bytes",
    default: 8_192,
    min: 1,
    max: 16 << 20,
    zero_means: None,
};
/// Connections served at once.
pub const MAX_CONNECTIONS: Count = Count {
    name: "max_connections",
    default: 10_000,
    min: 1,
    max: 1_000_000,
    zero_means: None,
};
/// Failed logins allowed on one connection; the last is answered `r`/22.
pub const MAX_FAILED_LOGINS: Count = Count {
    name: "max_failed_logins",
    default: 5,
    min: 1,
    max: 1_000,
    zero_means: None,
};
/// Frames queued to one connection before it counts as a slow consumer.
pub const OUTBOUND_QUEUE: Count = Count {
    name: "outbound_queue",
    default: 4_096,
    min: 1,
    max: 1 << 20,
    zero_means: None,
};
/// Messages a connection may send at once before the rate applies.
pub const RATE_BURST: Count = Count {
    name: "rate_burst",
    default: 100,
    min: 1,
    max: 1_000_000,
    zero_means: None,
};
/// Failed logins allowed from one address per minute.
pub const LOGIN_RATE: Count = Count {
    name: "login_rate",
    default: 120,
    min: 0,
    max: 1_000_000,
    zero_means: Some("no cap"),
};
/// Failed password logins allowed for one account per [`ACCOUNT_WINDOW`].
pub const ACCOUNT_FAILURES: Count = Count {
    name: "account_failures",
    default: 10,
    min: 0,
    max: 1_000_000,
    zero_means: Some("no cap"),
};
/// Password hashes computed at once; the default is the machine's parallelism.
pub const HASH_WORKERS: Count = Count {
    name: "hash_workers",
    default: 0, // not used: see `default_hash_workers`
    min: 1,
    max: 256,
    zero_means: None,
};
/// Logins and registrations that may wait for a hashing slot; past it `r`/24 at once.
pub const HASH_QUEUE: Count = Count {
    name: "hash_queue",
    default: 256,
    min: 0,
    max: 100_000,
    zero_means: Some("no waiting"),
};
/// Message frames a connection may send per second, 0 = no limit.
pub const RATE_LIMIT_MAX: f64 = 1e9;
/// The default of `rate_limit`: off.
pub const RATE_LIMIT_DEFAULT: f64 = 0.0;
/// The window of the per-account cap on failed password logins.
pub const ACCOUNT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The default of `hash_workers`: one per core (each hash keeps a core busy for its
/// whole length, so more at once only adds memory).
pub fn default_hash_workers() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2)
        .clamp(HASH_WORKERS.min as usize, HASH_WORKERS.max as usize)
}

/// Everything a server needs to know before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// SQLite file, or `:memory:`.
    pub db: String,
    /// Silence after which the server pings a client; twice this closes it (`e`/66).
    pub heartbeat: Duration,
    /// Whether `register` is open to anyone.
    pub registration_open: bool,
    /// Longest accepted line, bytes (`e`/61 past it).
    pub max_frame_bytes: usize,
    /// Longest message text, bytes (`e`/73 past it).
    pub max_text_bytes: usize,
    /// Connections served at once (`e`/68 past it).
    pub max_connections: usize,
    /// Failed logins allowed on one connection; the last one is answered `r`/22.
    pub max_failed_logins: u32,
    /// Frames queued to one connection before it counts as a slow consumer (`e`/67).
    pub outbound_queue: usize,
    /// Message frames a connection may send per second (`e`/74 past it); 0 = no limit.
    pub rate_limit: f64,
    /// Message frames a connection may send at once before the rate applies.
    pub rate_burst: u32,
    /// Failed logins allowed from one source address per minute (`r`/22 past it); 0 = no cap.
    pub login_rate: u32,
    /// Failed password logins allowed for one account per [`ACCOUNT_WINDOW`]
    /// (`r`/22 past it); 0 = no cap.
    pub account_failures: u32,
    /// Password hashes (argon2id, about 19 MiB each) computed at once.
    pub hash_workers: usize,
    /// Logins and registrations that may wait for a hashing slot (`r`/24 past it).
    pub hash_queue: usize,
    /// How long one may wait for a hashing slot before it is answered `r`/24.
    pub hash_wait: Duration,
    /// How long a session token stays valid for resuming (`login` with `session`).
    pub session_ttl: Duration,
    /// How long a graceful stop waits for connections to say goodbye.
    pub shutdown_grace: Duration,
    /// TLS: the certificate chain (PEM, leaf first); with `tls_key`, every connection speaks TLS.
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key of the certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// The HTTP listener (chat page, `/ws`, `/metrics`, `/healthz`); `None` = off.
    pub http: Option<HttpListen>,
    /// Origins besides the page's own whose pages may open `/ws` (`*`: any).
    pub http_origins: Vec<String>,
}

/// Where the HTTP listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpListen {
    /// Address to bind (no brackets around an IPv6 address).
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
}

impl HttpListen {
    /// Reads the `http` setting: `HOST:PORT` (`[::1]:PORT` for IPv6), or `off`.
    pub fn parse(value: &str) -> Result<Option<HttpListen>, ConfigError> {
        let value = value.trim();
        if value.eq_ignore_ascii_case(HTTP_OFF) {
            return Ok(None);
        }
        let bad = || ConfigError {
            setting: "http",
            rule: format!("HOST:PORT or {HTTP_OFF}"),
            value: format!("{value:?}"),
        };
        let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || host.contains(['/', ' ']) {
            return Err(bad());
        }
        Ok(Some(HttpListen {
            host: host.to_string(),
            port,
        }))
    }
}

impl std::fmt::Display for HttpListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Checks one entry of `http_origins`: `*`, or `http(s)://host[:port]` with no path.
fn check_origin(origin: &str) -> Result<(), ConfigError> {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match rest {
        _ if origin == "*" => Ok(()),
        Some(host) if !host.is_empty() && !host.contains(['/', ' ', '?', '#']) => Ok(()),
        _ => Err(ConfigError {
            setting: "http_origins",
            rule: "origins like https://chat.example.com (scheme and host, no path), or *".into(),
            value: format!("{origin:?}"),
        }),
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            db: DEFAULT_DB.to_string(),
            heartbeat: HEARTBEAT.default_duration(),
            registration_open: true,
            max_frame_bytes: MAX_FRAME_BYTES.default_usize(),
            max_text_bytes: MAX_TEXT_BYTES.default_usize(),
            max_connections: MAX_CONNECTIONS.default_usize(),
            max_failed_logins: MAX_FAILED_LOGINS.default_u32(),
            outbound_queue: OUTBOUND_QUEUE.default_usize(),
            rate_limit: RATE_LIMIT_DEFAULT,
            rate_burst: RATE_BURST.default_u32(),
            login_rate: LOGIN_RATE.default_u32(),
            account_failures: ACCOUNT_FAILURES.default_u32(),
            hash_workers: default_hash_workers(),
            hash_queue: HASH_QUEUE.default_usize(),
            hash_wait: HASH_WAIT.default_duration(),
            session_ttl: SESSION_TTL.default_duration(),
            shutdown_grace: SHUTDOWN_GRACE.default_duration(),
            tls_cert: None,
            tls_key: None,
            http: HttpListen::parse(DEFAULT_HTTP).ok().flatten(),
            http_origins: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// Defaults suited to tests and embedding: any free port, an in-memory store,
    /// no HTTP listener.
    pub fn ephemeral() -> ServerConfig {
        ServerConfig {
            port: 0,
            db: MEMORY_DB.to_string(),
            http: None,
            ..ServerConfig::default()
        }
    }

    /// Checks every setting against its bounds; the first one out of them is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        HEARTBEAT.check(self.heartbeat)?;
        SESSION_TTL.check(self.session_ttl)?;
        SHUTDOWN_GRACE.check(self.shutdown_grace)?;
        HASH_WAIT.check(self.hash_wait)?;
        MAX_FRAME_BYTES.check(self.max_frame_bytes as u64)?;
        MAX_TEXT_BYTES.check(self.max_text_bytes as u64)?;
        MAX_CONNECTIONS.check(self.max_connections as u64)?;
        MAX_FAILED_LOGINS.check(self.max_failed_logins.into())?;
        OUTBOUND_QUEUE.check(self.outbound_queue as u64)?;
        RATE_BURST.check(self.rate_burst.into())?;
        LOGIN_RATE.check(self.login_rate.into())?;
        ACCOUNT_FAILURES.check(self.account_failures.into())?;
        HASH_WORKERS.check(self.hash_workers as u64)?;
        HASH_QUEUE.check(self.hash_queue as u64)?;
        if !(self.rate_limit.is_finite() && (0.0..=RATE_LIMIT_MAX).contains(&self.rate_limit)) {
            return Err(ConfigError {
                setting: "rate_limit",
                rule: format!("0 (off) or a number of messages a second up to {RATE_LIMIT_MAX}"),
                value: self.rate_limit.to_string(),
            });
        }
        for origin in &self.http_origins {
            check_origin(origin)?;
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => Err(ConfigError {
                setting: "tls_key",
                rule: "given with tls_cert (both or neither)".into(),
                value: "missing".into(),
            }),
            (None, Some(_)) => Err(ConfigError {
                setting: "tls_cert",
                rule: "given with tls_key (both or neither)".into(),
                value: "missing".into(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_takes_host_port_brackets_or_off() {
        let at = |h: &str, p| {
            Some(HttpListen {
                host: h.into(),
                port: p,
            })
        };
        assert_eq!(
            HttpListen::parse("127.0.0.1:3542").unwrap(),
            at("127.0.0.1", 3542)
        );
        assert_eq!(HttpListen::parse("[::1]:0").unwrap(), at("::1", 0));
        assert_eq!(
            HttpListen::parse("localhost:80").unwrap(),
            at("localhost", 80)
        );
        assert_eq!(HttpListen::parse("OFF").unwrap(), None);
        assert_eq!(at("::1", 8).unwrap().to_string(), "[::1]:8");
        for bad in ["", "3542", ":3542", "host:", "host:99999", "a/b:1"] {
            let e = HttpListen::parse(bad).unwrap_err();
            assert_eq!(e.setting, "http", "{bad}");
        }
    }

    #[test]
    fn origins_are_scheme_and_host_only() {
        for good in ["*", "http://localhost:8080", "https://chat.example.com"] {
            check_origin(good).unwrap();
        }
        for bad in [
            "example.com",
            "https://",
            "https://a.com/",
            "ftp://a.com",
            "null",
        ] {
            assert_eq!(check_origin(bad).unwrap_err().setting, "http_origins");
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        ServerConfig::default().validate().unwrap();
        ServerConfig::ephemeral().validate().unwrap();
    }

    #[test]
    fn values_the_clock_or_the_codec_cannot_take_are_refused() {
        let huge = ServerConfig {
            heartbeat: Duration::from_secs(u64::MAX / 2),
            ..ServerConfig::ephemeral()
        };
        let err = huge.validate().unwrap_err();
        assert_eq!(err.setting, "heartbeat");
        assert_eq!(
            err.to_string(),
            format!(
                "heartbeat must be more than 0 and at most 86400 seconds, not {}",
                (u64::MAX / 2) as f64
            )
        );
        let frame = ServerConfig {
            max_frame_bytes: usize::MAX,
            ..ServerConfig::ephemeral()
        };
        assert_eq!(
            frame.validate().unwrap_err().to_string(),
            format!(
                "max_frame_bytes must be from 64 to 16777216, not {}",
                usize::MAX
            )
        );
        let conns = ServerConfig {
            max_connections: usize::MAX,
            ..ServerConfig::ephemeral()
        };
        assert_eq!(conns.validate().unwrap_err().setting, "max_connections");
    }

    #[test]
    fn seconds_from_a_float_give_the_same_error_as_validate() {
        for bad in [1e19, f64::INFINITY, f64::NAN, -1.0, 0.0, 1e-12, 86_400.5] {
            let err = HEARTBEAT.duration(bad).unwrap_err();
            assert_eq!(err.setting, "heartbeat", "{bad}");
            assert!(err.rule.contains("at most 86400"), "{err}");
        }
        assert_eq!(HEARTBEAT.duration(0.5).unwrap(), Duration::from_millis(500));
        assert_eq!(HEARTBEAT.duration(86_400.0).unwrap().as_secs(), 86_400);
    }

    #[test]
    fn zero_is_named_where_it_means_off() {
        let cfg = ServerConfig {
            login_rate: 0,
            account_failures: 0,
            hash_queue: 0,
            ..ServerConfig::ephemeral()
        };
        cfg.validate().unwrap();
        let err = ServerConfig {
            hash_workers: 0,
            ..ServerConfig::ephemeral()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.to_string(), "hash_workers must be from 1 to 256, not 0");
        let err = ServerConfig {
            login_rate: 2_000_000,
            ..ServerConfig::ephemeral()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "login_rate must be 0 (no cap) or from 1 to 1000000, not 2000000"
        );
        let err = ServerConfig {
            rate_limit: f64::NAN,
            ..ServerConfig::ephemeral()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.setting, "rate_limit");
    }
}
