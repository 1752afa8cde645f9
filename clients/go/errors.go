package moechat

import (
	"errors"
	"fmt"
)

// ErrClosed is what every call returns once the client is closed: by Close, by
// Logout, by the server (then the error is an *Error with the server's code, and
// errors.Is(err, ErrClosed) is true), or because reconnecting gave up.
var ErrClosed = errors.New("moechat: connection closed")

// Error is a refusal from the server: its protocol code (20 wrong credentials, 43
// name taken, 71 no such user, …; PROTOCOL.md section 4) and its reason sentence.
// When the server closed the connection (64 taken over, 65 shutting down, 66
// heartbeat timeout, 67 slow consumer, 68 server full, 22 too many logins), Closed
// is true and errors.Is(err, ErrClosed) reports it.
type Error struct {
	// Code is the frame's status_code.
	Code int
	// Reason is the server's one-sentence explanation.
	Reason string
	// Closed is true when the server closed the connection with this code.
	Closed bool
}

func (e *Error) Error() string {
	if e.Closed {
		return fmt.Sprintf("moechat: connection closed by the server (%d): %s", e.Code, e.Reason)
	}
	return fmt.Sprintf("moechat: %s (code %d)", e.Reason, e.Code)
}

// Is makes errors.Is(err, ErrClosed) true for a close by the server.
func (e *Error) Is(target error) bool {
	return e.Closed && target == ErrClosed
}

// ProtocolError reports a server that broke the protocol: a line that is not a
// frame, or an answer that does not fit its request.
type ProtocolError struct {
	Detail string
}

func (e *ProtocolError) Error() string { return "moechat: protocol error: " + e.Detail }
