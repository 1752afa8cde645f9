//! The protocol's status letters and its code table (PROTOCOL.md sections 2 and 4).
//!
//! Every code the server sends or understands is a named [`Code`] variant; the
//! numbers live only in this file. Each code knows the status letter it travels
//! with and whether the server closes the connection after sending it, so the
//! server's edge can turn any failure into a frame without a second table.

use std::fmt;

/// The one-character `status` of an envelope (seed Table 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// `"q"`: a query (client request, or the server's heartbeat ping).
    Query,
    /// `"r"`: a response.
    Response,
    /// `"e"`: an error.
    Error,
    /// `"m"`: a message, sent by a client or pushed by the server.
    Message,
}

impl Status {
    /// The wire letter.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Query => "q",
            Status::Response => "r",
            Status::Error => "e",
            Status::Message => "m",
        }
    }

    /// Parses the wire letter; anything but the four letters is `None`.
    pub fn from_wire(s: &str) -> Option<Status> {
        match s {
            "q" => Some(Status::Query),
            "r" => Some(Status::Response),
            "e" => Some(Status::Error),
            "m" => Some(Status::Message),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, $status:ident, $closes:literal; )*) => {
        /// A protocol `status_code` with its meaning (PROTOCOL.md section 4).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Code {
            $( $(#[$doc])* $name = $num, )*
        }

        impl Code {
            /// Every named code, in numeric order.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The number on the wire.
            pub const fn number(self) -> u8 {
                self as u8
            }

            /// The named code for a number, if the table has one.
            pub const fn from_number(n: u8) -> Option<Code> {
                match n {
                    $( $num => Some(Code::$name), )*
                    _ => None,
                }
            }

            /// The status letter this code travels with when the server sends it.
            pub const fn status(self) -> Status {
                match self {
                    $( Code::$name => Status::$status, )*
                }
            }

            /// Whether the server closes the connection after sending this code.
            pub const fn closes(self) -> bool {
                match self {
                    $( Code::$name => $closes, )*
                }
            }
        }
    };
}

codes! {
    /// `q`/0: the server's heartbeat ping.
    Heartbeat = 0, Query, false;
    /// `r`/10: login succeeded.
    LoginOk = 10, Response, false;
    /// `r`/20: wrong name or password (one answer for both).
    BadCredentials = 20, Response, false;
    /// `r`/21: login request malformed.
    LoginMalformed = 21, Response, false;
    /// `r`/22: too many failed logins on this connection, from this address or for
    /// this account; the server closes it.
    TooManyAttempts = 22, Response, true;
    /// `r`/23: this connection is already logged in.
    AlreadyLoggedIn = 23, Response, false;
    /// `r`/24: too busy to check a password now; nothing was counted, try again soon.
    Busy = 24, Response, false;
    /// `r`/30: query succeeded.
    QueryOk = 30, Response, false;
    /// `r`/40: unknown request.
    UnknownRequest = 40, Response, false;
    /// `r`/41: the request needs a login.
    NotLoggedIn = 41, Response, false;
    /// `r`/42: bad arguments.
    BadArguments = 42, Response, false;
    /// `r`/43: name taken.
    NameTaken = 43, Response, false;
    /// `r`/44: registration closed on this server.
    RegistrationClosed = 44, Response, false;
    /// `r`/50: message delivered to an online user (or accepted, for a broadcast).
    Delivered = 50, Response, false;
    /// `r`/51: message stored for an offline user.
    Stored = 51, Response, false;
    /// `e`/60: internal error; the request had no effect.
    Internal = 60, Error, false;
    /// `e`/61: frame longer than `max_frame_bytes`.
    FrameTooLong = 61, Error, true;
    /// `e`/62: line not UTF-8, not JSON, or not an object.
    MalformedFrame = 62, Error, false;
    /// `e`/63: envelope invalid.
    InvalidEnvelope = 63, Error, false;
    /// `e`/64: session taken over by a newer login.
    TakenOver = 64, Error, true;
    /// `e`/65: server shutting down.
    ShuttingDown = 65, Error, true;
    /// `e`/66: heartbeat timeout.
    HeartbeatTimeout = 66, Error, true;
    /// `e`/67: slow consumer, outbound queue full.
    SlowConsumer = 67, Error, true;
    /// `e`/68: server full.
    ServerFull = 68, Error, true;
    /// `e`/70: a message frame before login.
    MessageNotLoggedIn = 70, Error, false;
    /// `e`/71: no such user.
    NoSuchUser = 71, Error, false;
    /// `e`/72: malformed message.
    MalformedMessage = 72, Error, false;
    /// `e`/73: empty or too long text.
    BadText = 73, Error, false;
    /// `e`/74: rate limited.
    RateLimited = 74, Error, false;
    /// `e`/75: the recipient's stored-message quota is full.
    QuotaFull = 75, Error, false;
    /// `m`/80: a direct message.
    Direct = 80, Message, false;
    /// `m`/90: a broadcast.
    Broadcast = 90, Message, false;
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for &c in Code::ALL {
            assert_eq!(Code::from_number(c.number()), Some(c));
        }
        assert_eq!(Code::from_number(55), None);
    }

    #[test]
    fn statuses_agree_with_the_seed_table() {
        for &c in Code::ALL {
            let n = c.number();
            let expected = match n {
                0 => Status::Query,
                10..=59 => Status::Response,
                60..=79 => Status::Error,
                80..=99 => Status::Message,
                _ => unreachable!("code {n} outside the table"),
            };
            assert_eq!(c.status(), expected, "code {n}");
        }
    }

    #[test]
    fn closing_codes() {
        let closing: Vec<u8> = Code::ALL
            .iter()
            .filter(|c| c.closes())
            .map(|c| c.number())
            .collect();
        assert_eq!(closing, vec![22, 61, 64, 65, 66, 67, 68]);
    }

    #[test]
    fn status_letters() {
        for s in ["q", "r", "e", "m"] {
            assert_eq!(Status::from_wire(s).map(Status::as_str), Some(s));
        }
        assert_eq!(Status::from_wire("x"), None);
        assert_eq!(Status::from_wire("qq"), None);
    }
}
