// Package moechat is a client for MoeChat, a chat server that speaks newline-delimited
// JSON frames over TCP (the protocol: PROTOCOL.md, beside the MoeChat repository).
//
// A Client is one connection. Dial it, Register or Login, then Send, Broadcast,
// History and Users; Recv returns the messages the server pushes. Every call that
// waits takes a context.Context, and a Client is safe for use from several
// goroutines at once (one of them typically loops on Recv).
//
// Delivery is at least once: after Login the client asks the server for acks, and
// acknowledges a direct message once the application is done with it, that is when
// it calls Recv again (or Close). A program that crashes while handling a message
// gets it again at its next login; repeats (after a reconnect) are dropped by msg_id.
//
// When the connection breaks, the client reconnects with backoff and resumes its
// session with the token from Login; calls waiting for an answer are sent again on
// the new connection. Every Send and Broadcast carries a nonce, so a message sent
// again is stored once. The client answers the server's heartbeat by itself, and
// retries a login the server was too busy to check (code 24). It never reconnects
// after a takeover (code 64) or Logout.
//
// Errors from the server are *Error values with the protocol's code; a closed client
// returns errors for which errors.Is(err, ErrClosed) is true.
package moechat

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Client. The zero value is a plain TCP client that reconnects.
type Options struct {
	// TLS, when not nil, makes every connection TLS with this configuration. The
	// server's certificate is verified as crypto/tls always does (against the
	// system's roots, or RootCAs); ServerName defaults to the host dialled.
	TLS *tls.Config
	// Reconnect is how long to keep trying to reconnect after the connection
	// breaks: 0 means 30 seconds, a negative value never reconnects (and then the
	// client does not ask for acks: delivery is at most once).
	Reconnect time.Duration
	// Timeout bounds dialing, and any call whose context has no deadline: 0 means
	// 10 seconds.
	Timeout time.Duration
	// Inbox is how many pushed messages may wait for Recv; 0 means 1024. When it is
	// full the client stops reading, and a server that cannot write closes the
	// connection as a slow consumer (the client reconnects; nothing is lost).
	Inbox int
}

// Message is a message pushed by the server, or one from History.
type Message struct {
	MsgID     uint64
	From      string
	To        string // empty for a broadcast
	Text      string
	Time      time.Time
	Broadcast bool
}

// Receipt is the server's answer to Send or Broadcast.
type Receipt struct {
	MsgID uint64
	// Stored: the recipient was offline and gets the message at their next login.
	Stored bool
	// Duplicate: the server had this message already (a re-send) and stored nothing new.
	Duplicate bool
	// Recipients: for a broadcast, how many online users it reached.
	Recipients int
}

// HistoryOptions selects a page of History.
type HistoryOptions struct {
	// Limit is how many messages at most (1-500); 0 means 50.
	Limit int
	// Before, when not 0, returns only messages older than this msg_id.
	Before uint64
}

type kind int

const (
	kindPlain kind = iota
	kindLogin
	kindResume
	kindLogout
)

type result struct {
	f   frame
	err error
}

type request struct {
	ctx   context.Context
	kind  kind
	line  func(id uint64) []byte
	id    uint64
	sent  bool
	reply chan result
	// user, for a login: kept for resuming.
	user string
}

// Client is one connection to a MoeChat server. It is safe for concurrent use.
type Client struct {
	addr  string
	opts  Options
	reqs  chan *request
	inbox chan Message
	// taken is the highest direct msg_id handed to the application; ackDue wakes the
	// connection's goroutine to acknowledge it.
	taken   atomic.Uint64
	ackDue  chan struct{}
	stop    chan struct{}
	stopped sync.Once
	done    chan struct{}
	err     error // why it ended; set before done is closed
}

// Dial connects to a MoeChat server at addr ("host:port").
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Reconnect == 0 {
		opts.Reconnect = 30 * time.Second
	}
	if opts.Inbox <= 0 {
		opts.Inbox = 1024
	}
	c := &Client{
		addr:   addr,
		opts:   opts,
		reqs:   make(chan *request),
		inbox:  make(chan Message, opts.Inbox),
		ackDue: make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	go c.run(conn)
	return c, nil
}

func (c *Client) reconnects() bool { return c.opts.Reconnect > 0 }

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	dialer := net.Dialer{Timeout: c.opts.Timeout}
	conn, err := dialer.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("moechat: cannot connect to %s: %w", c.addr, err)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetNoDelay(true)
	}
	if c.opts.TLS == nil {
		return conn, nil
	}
	cfg := c.opts.TLS.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(c.addr)
		if err != nil {
			host = c.addr
		}
		cfg.ServerName = host
	}
	tconn := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	if err := tconn.HandshakeContext(hctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("moechat: TLS with %s failed: %w", c.addr, err)
	}
	return tconn, nil
}

// call sends a request and waits for the frame that answers it.
func (c *Client) call(ctx context.Context, k kind, user string, line func(uint64) []byte) (frame, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.Timeout)
		defer cancel()
	}
	r := &request{ctx: ctx, kind: k, line: line, reply: make(chan result, 1), user: user}
	select {
	case c.reqs <- r:
	case <-ctx.Done():
		return frame{}, ctx.Err()
	case <-c.done:
		return frame{}, c.err
	}
	select {
	case res := <-r.reply:
		return res.f, res.err
	case <-ctx.Done():
		return frame{}, ctx.Err()
	case <-c.done:
		return frame{}, c.err
	}
}

func query(info any) func(uint64) []byte {
	return func(id uint64) []byte { return encode(statusQuery, 0, info, id) }
}

// refused turns a failing answer into an *Error.
func refused(f frame) error {
	reason := f.reason()
	if reason == "" {
		reason = "refused"
	}
	return &Error{Code: f.Code, Reason: reason}
}

// queryOK sends a query and returns the info of its r/30 answer.
func (c *Client) queryOK(ctx context.Context, info any) (json.RawMessage, error) {
	f, err := c.call(ctx, kindPlain, "", query(info))
	if err != nil {
		return nil, err
	}
	if f.Code != codeQueryOK {
		return nil, refused(f)
	}
	return f.Info, nil
}

// Register creates a user (name: 1-32 characters from a-z 0-9 _ . -). The server
// answers 43 if the name is taken, 44 if registration is closed, 42 if the name or
// password is invalid; when it is too busy to hash the password (24), the request is
// sent again after a short wait.
func (c *Client) Register(ctx context.Context, user, password string) error {
	info := map[string]string{"req": "register", "user": user, "password": password}
	return retryBusy(ctx, func() error {
		_, err := c.queryOK(ctx, info)
		return err
	})
}

// Login logs in with a password and returns the session token, which the client
// keeps to resume the session after a reconnect. A wrong name or password is an
// *Error with Code 20.
func (c *Client) Login(ctx context.Context, user, password string) (string, error) {
	info := map[string]any{"req": "login", "user": user, "password": password}
	if c.reconnects() {
		info["acks"] = true
	}
	var token string
	err := retryBusy(ctx, func() error {
		f, err := c.call(ctx, kindLogin, user, query(info))
		if err != nil {
			return err
		}
		if f.Code != codeLoginOK {
			return refused(f)
		}
		var ok struct {
			Session string `json:"session"`
		}
		if err := json.Unmarshal(f.Info, &ok); err != nil || ok.Session == "" {
			return &ProtocolError{Detail: "a login answer without a session token"}
		}
		token = ok.Session
		return nil
	})
	return token, err
}

// retryBusy runs try again while the server answers 24 (busy), with doubling,
// jittered waits (50 ms up to 1 s), for at most 30 seconds or until ctx ends.
func retryBusy(ctx context.Context, try func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	wait := 50 * time.Millisecond
	for {
		err := try()
		var e *Error
		if !errors.As(err, &e) || e.Code != codeBusy || e.Closed || time.Now().Add(wait).After(deadline) {
			return err
		}
		select {
		case <-time.After(jitter(wait)):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(wait*2, time.Second)
	}
}

func jitter(d time.Duration) time.Duration {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(d/2)+1))
	if err != nil {
		return d
	}
	return d/2 + time.Duration(n.Int64())
}

// Users returns the users online, sorted.
func (c *Client) Users(ctx context.Context) ([]string, error) {
	info, err := c.queryOK(ctx, map[string]string{"req": "users"})
	if err != nil {
		return nil, err
	}
	var out struct {
		Users []string `json:"users"`
	}
	if err := json.Unmarshal(info, &out); err != nil {
		return nil, &ProtocolError{Detail: "a users answer without users"}
	}
	sort.Strings(out.Users)
	return out.Users, nil
}

// Ping measures the round trip to the server.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	started := time.Now()
	_, err := c.queryOK(ctx, map[string]string{"req": "ping"})
	return time.Since(started), err
}

// History returns stored messages exchanged with user, oldest first; user "*"
// selects broadcasts.
func (c *Client) History(ctx context.Context, user string, opts HistoryOptions) ([]Message, error) {
	info := map[string]any{"req": "history", "with": user}
	if opts.Limit > 0 {
		info["limit"] = opts.Limit
	}
	if opts.Before > 0 {
		info["before"] = opts.Before
	}
	raw, err := c.queryOK(ctx, info)
	if err != nil {
		return nil, err
	}
	var out struct {
		Messages []json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, &ProtocolError{Detail: "a history answer without messages"}
	}
	messages := make([]Message, 0, len(out.Messages))
	for _, m := range out.Messages {
		code := codeDirect
		var probe struct {
			To *string `json:"to"`
		}
		if json.Unmarshal(m, &probe) == nil && probe.To == nil {
			code = codeBroadcast
		}
		msg, err := frame{Status: statusMessage, Code: code, Info: m}.message()
		if err != nil {
			return nil, &ProtocolError{Detail: err.Error()}
		}
		messages = append(messages, msg)
	}
	return messages, nil
}

func nonce() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms; a time-based nonce still
		// tells re-sends apart from new messages.
		return fmt.Sprintf("t%x", time.Now().UnixNano())
	}
	return hex.EncodeToString(b[:])
}

// directInfo and broadcastInfo keep the field order the server reads fastest.
type directInfo struct {
	To    string `json:"to"`
	Text  string `json:"text"`
	Nonce string `json:"nonce"`
}

type broadcastInfo struct {
	Text  string `json:"text"`
	Nonce string `json:"nonce"`
}

func (c *Client) message(ctx context.Context, code int, info any) (Receipt, error) {
	f, err := c.call(ctx, kindPlain, "", func(id uint64) []byte {
		return encode(statusMessage, code, info, id)
	})
	if err != nil {
		return Receipt{}, err
	}
	if f.Code != codeDelivered && f.Code != codeStored {
		return Receipt{}, refused(f)
	}
	var r struct {
		MsgID      *uint64 `json:"msg_id"`
		Recipients int     `json:"recipients"`
		Duplicate  bool    `json:"duplicate"`
	}
	if err := json.Unmarshal(f.Info, &r); err != nil || r.MsgID == nil {
		return Receipt{}, &ProtocolError{Detail: "a receipt without msg_id"}
	}
	return Receipt{MsgID: *r.MsgID, Stored: f.Code == codeStored, Duplicate: r.Duplicate, Recipients: r.Recipients}, nil
}

// Send sends a direct message. The receipt says whether it was stored for an
// offline recipient; an unknown recipient is an *Error with Code 71.
func (c *Client) Send(ctx context.Context, to, text string) (Receipt, error) {
	return c.message(ctx, codeDirect, directInfo{To: to, Text: text, Nonce: nonce()})
}

// Broadcast sends a message to every online user but the sender.
func (c *Client) Broadcast(ctx context.Context, text string) (Receipt, error) {
	return c.message(ctx, codeBroadcast, broadcastInfo{Text: text, Nonce: nonce()})
}

// Recv returns the next message pushed by the server, waiting until one comes, the
// client closes (an error that errors.Is ErrClosed) or ctx ends (ctx.Err()). Calling
// Recv again acknowledges the direct message it returned before.
func (c *Client) Recv(ctx context.Context) (Message, error) {
	c.ackTaken()
	select {
	case m := <-c.inbox:
		c.take(m)
		return m, nil
	default:
	}
	select {
	case m := <-c.inbox:
		c.take(m)
		return m, nil
	case <-ctx.Done():
		return Message{}, ctx.Err()
	case <-c.done:
		select {
		case m := <-c.inbox:
			c.take(m)
			return m, nil
		default:
			return Message{}, c.err
		}
	}
}

func (c *Client) take(m Message) {
	if m.Broadcast {
		return
	}
	for {
		old := c.taken.Load()
		if m.MsgID <= old || c.taken.CompareAndSwap(old, m.MsgID) {
			return
		}
	}
}

// ackTaken asks the connection to acknowledge what the application has taken.
func (c *Client) ackTaken() {
	if c.taken.Load() == 0 {
		return
	}
	select {
	case c.ackDue <- struct{}{}:
	default: // one is due already; it reads the latest value
	}
}

// Logout ends the session (its token is void) and closes the client.
func (c *Client) Logout(ctx context.Context) error {
	_, err := c.call(ctx, kindLogout, "", query(map[string]string{"req": "logout"}))
	if err == nil {
		_ = c.Close()
	}
	return err
}

// Close closes the connection, after acknowledging what the application took.
// It is safe to call more than once.
func (c *Client) Close() error {
	c.stopped.Do(func() { close(c.stop) })
	select {
	case <-c.done:
	case <-time.After(c.opts.Timeout):
	}
	return nil
}

// Done is closed once the client has ended; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the client ended, or nil while it runs.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// line is what the reading goroutine hands over: a line, or why reading stopped.
type line struct {
	data []byte
	err  error
}

// conn is one connection's reading side.
type connection struct {
	net.Conn
	lines chan line
	quit  chan struct{}
	// idle is how long the connection may be silent (twice the heartbeat, and some).
	idle atomic.Int64
}

func (c *Client) open(nc net.Conn) *connection {
	cn := &connection{Conn: nc, lines: make(chan line, 64), quit: make(chan struct{})}
	cn.idle.Store(int64(3 * heartbeatFallback))
	go cn.read()
	return cn
}

func (cn *connection) read() {
	r := bufio.NewReaderSize(cn.Conn, 16*1024)
	for {
		_ = cn.Conn.SetReadDeadline(time.Now().Add(time.Duration(cn.idle.Load())))
		data, err := readLine(r)
		select {
		case cn.lines <- line{data, err}:
		case <-cn.quit:
			return
		}
		if err != nil {
			return
		}
	}
}

// readLine reads one line without its "\n" (and a "\r" before it), refusing lines
// longer than maxFrameBytes.
func readLine(r *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > maxFrameBytes+2 {
			return nil, &ProtocolError{Detail: "a line longer than the client accepts"}
		}
		if err == nil {
			buf = buf[:len(buf)-1]
			if n := len(buf); n > 0 && buf[n-1] == '\r' {
				buf = buf[:n-1]
			}
			return buf, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if len(buf) > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

func (cn *connection) close() {
	close(cn.quit)
	_ = cn.Conn.Close()
}

// session is what resuming needs.
type session struct {
	user, token string
}

// state is owned by the connection goroutine.
type state struct {
	pending    map[uint64]*request
	nextID     uint64
	session    *session
	acked      uint64
	lastDirect uint64
	loggedOut  bool
	closeErr   *Error
}

// run owns the connection: it writes requests, reads answers and pushes, and
// reconnects. It ends the client when it returns.
func (c *Client) run(nc net.Conn) {
	st := &state{pending: map[uint64]*request{}}
	cn := c.open(nc)
	resuming := false
	var err error
	for {
		err = c.serve(cn, st, resuming)
		cn.close()
		if err == nil || !c.reconnects() || st.session == nil || st.loggedOut {
			break
		}
		var e *Error
		if errors.As(err, &e) && e.Closed && e.Code == codeTakenOver {
			break
		}
		// A password login cut short is not sent again: the resume logs in.
		for id, r := range st.pending {
			if r.kind == kindLogin {
				r.reply <- result{err: err}
				delete(st.pending, id)
			}
		}
		next, rerr := c.redial(err)
		if rerr != nil {
			err = rerr
			break
		}
		cn = c.open(next)
		resuming = true
	}
	if err == nil {
		err = ErrClosed
	}
	c.finish(st, err)
}

func (c *Client) finish(st *state, err error) {
	c.err = err
	for _, r := range st.pending {
		r.reply <- result{err: err}
	}
	close(c.done)
}

// redial reconnects with backoff, within Options.Reconnect; returns why it gave up.
func (c *Client) redial(cause error) (net.Conn, error) {
	deadline := time.Now().Add(c.opts.Reconnect)
	wait := 100 * time.Millisecond
	for {
		select {
		case <-time.After(jitter(wait)):
		case <-c.stop:
			return nil, ErrClosed
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
		nc, err := c.dial(ctx)
		cancel()
		if err == nil {
			return nc, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("moechat: gave up reconnecting: %w", cause)
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// serve runs one connection until it ends; nil means the client was closed.
func (c *Client) serve(cn *connection, st *state, resuming bool) error {
	write := func(b []byte) error {
		_ = cn.SetWriteDeadline(time.Now().Add(c.opts.Timeout))
		_, err := cn.Write(b)
		return err
	}
	sendPending := func() error {
		ids := make([]uint64, 0, len(st.pending))
		for id, r := range st.pending {
			if r.kind == kindResume {
				continue
			}
			if r.ctx.Err() != nil {
				delete(st.pending, id) // its caller has gone
				continue
			}
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		for _, id := range ids {
			r := st.pending[id]
			r.sent = true
			if err := write(r.line(id)); err != nil {
				return err
			}
		}
		return nil
	}
	if resuming {
		st.closeErr = nil
		info := map[string]any{"req": "login", "user": st.session.user, "session": st.session.token, "acks": true}
		st.nextID++
		r := &request{ctx: context.Background(), kind: kindResume, line: query(info), reply: make(chan result, 1)}
		st.pending[st.nextID] = r
		for _, p := range st.pending {
			p.sent = false
		}
		r.sent = true
		if err := write(r.line(st.nextID)); err != nil {
			return err
		}
	}
	for {
		lines := cn.lines
		if len(c.inbox) == cap(c.inbox) {
			lines = nil // no room for pushes: stop reading until Recv makes some
		}
		select {
		case <-c.stop:
			if taken := c.taken.Load(); taken > st.acked {
				st.acked = taken
				_ = write(ackLine(taken))
			}
			return nil
		case <-c.ackDue:
			if taken := c.taken.Load(); taken > st.acked && !resuming {
				st.acked = taken
				if err := write(ackLine(taken)); err != nil {
					return err
				}
			}
		case r := <-c.reqs:
			st.nextID++
			st.pending[st.nextID] = r
			if resuming {
				continue // sent once the session is back
			}
			r.sent = true
			if err := write(r.line(st.nextID)); err != nil {
				return err
			}
		case l := <-lines:
			if l.err != nil {
				if st.closeErr != nil {
					return st.closeErr
				}
				return fmt.Errorf("moechat: connection lost: %w", l.err)
			}
			f, err := parseFrame(l.data)
			if err != nil {
				return &ProtocolError{Detail: err.Error()}
			}
			switch {
			case f.isPing():
				if err := write(pongLine); err != nil {
					return err
				}
			case f.Status == statusMessage:
				if err := c.pushed(f, st, write); err != nil {
					return err
				}
			case f.ID != 0 && st.pending[f.ID] != nil:
				r := st.pending[f.ID]
				delete(st.pending, f.ID)
				if r.kind == kindResume {
					if f.Code != codeLoginOK {
						if f.Code == codeBusy {
							return &Error{Code: codeBusy, Reason: f.reason()}
						}
						// The token is void (expired, or logged out elsewhere).
						st.session = nil
						return &Error{Code: f.Code, Reason: "could not resume the session: " + f.reason(), Closed: true}
					}
					resuming = false
					c.heartbeat(cn, f)
					// An ack lost with the old connection, or due while it was down,
					// is said now.
					st.acked = max(st.acked, c.taken.Load())
					if st.acked > 0 {
						if err := write(ackLine(st.acked)); err != nil {
							return err
						}
					}
					if err := sendPending(); err != nil {
						return err
					}
					continue
				}
				if r.kind == kindLogin && f.Code == codeLoginOK {
					var ok struct {
						Session string `json:"session"`
					}
					if json.Unmarshal(f.Info, &ok) == nil && ok.Session != "" {
						st.session = &session{user: r.user, token: ok.Session}
					}
					c.heartbeat(cn, f)
				}
				if r.kind == kindLogout && f.Code == codeQueryOK {
					st.loggedOut = true
				}
				r.reply <- result{f: f}
			case f.Status == statusError:
				// A close the server announces (no id): it hangs up next.
				st.closeErr = &Error{Code: f.Code, Reason: f.reason(), Closed: true}
			}
		}
	}
}

// heartbeat sets how long the connection may be silent from a login answer's
// heartbeat interval: the server pings after one interval, so two and some
// means the server (or the network) is gone.
func (c *Client) heartbeat(cn *connection, f frame) {
	var ok struct {
		Heartbeat float64 `json:"heartbeat"`
	}
	if json.Unmarshal(f.Info, &ok) == nil && ok.Heartbeat > 0 {
		cn.idle.Store(int64(time.Duration(ok.Heartbeat*float64(2*time.Second)) + 5*time.Second))
	}
}

// pushed takes a pushed message into the inbox, dropping repeats.
func (c *Client) pushed(f frame, st *state, write func([]byte) error) error {
	m, err := f.message()
	if err != nil {
		return &ProtocolError{Detail: err.Error()}
	}
	if !m.Broadcast {
		if m.MsgID <= st.lastDirect {
			// A repeat. If the application took it and the ack was lost, ack again.
			if m.MsgID <= st.acked {
				return write(ackLine(st.acked))
			}
			return nil
		}
		st.lastDirect = m.MsgID
	}
	c.inbox <- m // room was checked before reading
	return nil
}
