package moechat_test

// The client scripts of conformance/client (beside this module, in the MoeChat
// repository): a fake server written here in Go plays each script's "server" steps,
// and this driver plays its "app" steps with the client. The format is in
// conformance/README.md; the same scripts run against the Rust, Python and
// JavaScript clients.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	moechat "github.com/moechat/moechat/clients/go"
)

const scriptWait = 10 * time.Second

func scriptFiles(t *testing.T) []string {
	files, err := filepath.Glob(filepath.Join("..", "..", "conformance", "client", "*.jsonl"))
	if err != nil || len(files) < 9 {
		t.Fatalf("the client scripts are in ../../conformance/client: %v %v", files, err)
	}
	sort.Strings(files)
	return files
}

func readSteps(t *testing.T, path string) []map[string]any {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var steps []map[string]any
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "//") {
			continue
		}
		dec := json.NewDecoder(strings.NewReader(l))
		dec.UseNumber()
		var step map[string]any
		if err := dec.Decode(&step); err != nil {
			t.Fatalf("%s: %v: %s", path, err, l)
		}
		steps = append(steps, step)
	}
	return steps
}

// bindings implements the scripts' placeholders ($int, $str, $token, $ts, $any, with
// =NAME to bind, and $=NAME to use a bound value).
type bindings map[string]any

func (b bindings) fill(v any) any {
	switch v := v.(type) {
	case string:
		if name, ok := strings.CutPrefix(v, "$="); ok {
			return b[name]
		}
		return v
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			out[k] = b.fill(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = b.fill(x)
		}
		return out
	}
	return v
}

func isInt(v any) bool {
	n, ok := v.(json.Number)
	if !ok {
		return false
	}
	_, err := n.Int64()
	return err == nil
}

func same(a, b any) bool {
	na, aok := a.(json.Number)
	nb, bok := b.(json.Number)
	if aok && bok {
		ia, ea := na.Int64()
		ib, eb := nb.Int64()
		if ea == nil && eb == nil {
			return ia == ib
		}
		return na.String() == nb.String()
	}
	return reflect.DeepEqual(a, b)
}

func (b bindings) check(pattern, actual any, at string) error {
	switch p := pattern.(type) {
	case string:
		if !strings.HasPrefix(p, "$") {
			if actual != p {
				return fmt.Errorf("%s: expected %q, got %v", at, p, actual)
			}
			return nil
		}
		kind, name, _ := strings.Cut(p[1:], "=")
		fits := false
		switch kind {
		case "", "any":
			fits = true
		case "int":
			fits = isInt(actual)
		case "str":
			s, ok := actual.(string)
			fits = ok && s != ""
		case "token":
			s, ok := actual.(string)
			fits = ok && len(s) == 24 && strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") == ""
		case "ts":
			n, ok := actual.(json.Number)
			v, err := n.Int64()
			fits = ok && err == nil && v > 1_000_000_000_000
		}
		if !fits {
			return fmt.Errorf("%s: expected $%s, got %v", at, kind, actual)
		}
		if name != "" {
			if bound, ok := b[name]; ok && !same(bound, actual) {
				return fmt.Errorf("%s: expected %s = %v, got %v", at, name, bound, actual)
			}
			b[name] = actual
		}
		return nil
	case map[string]any:
		a, ok := actual.(map[string]any)
		if !ok || len(a) != len(p) {
			return fmt.Errorf("%s: expected %v, got %v", at, pattern, actual)
		}
		for k, v := range p {
			x, ok := a[k]
			if !ok {
				return fmt.Errorf("%s: missing %q in %v", at, k, actual)
			}
			if err := b.check(v, x, at+"."+k); err != nil {
				return err
			}
		}
		return nil
	case []any:
		a, ok := actual.([]any)
		if !ok || len(a) != len(p) {
			return fmt.Errorf("%s: expected %v, got %v", at, pattern, actual)
		}
		for i := range p {
			if err := b.check(p[i], a[i], fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
		return nil
	}
	if !same(pattern, actual) {
		return fmt.Errorf("%s: expected %v, got %v", at, pattern, actual)
	}
	return nil
}

func decodeLine(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var f map[string]any
	err := dec.Decode(&f)
	return f, err
}

func isAck(f map[string]any) (uint64, bool) {
	info, ok := f["info"].(map[string]any)
	if !ok || len(f) != 3 || f["status"] != "r" || !same(f["status_code"], json.Number("50")) || len(info) != 1 {
		return 0, false
	}
	n, ok := info["ack"].(json.Number)
	if !ok {
		return 0, false
	}
	v, err := n.Int64()
	return uint64(v), err == nil
}

// play is the fake server: it plays the server steps over TCP.
func play(l net.Listener, steps []map[string]any) error {
	b := bindings{}
	var conn net.Conn
	var rd *bufio.Reader
	next := func(wait time.Duration) (map[string]any, error) {
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		data, err := rd.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		return decodeLine(bytes.TrimSuffix(data, []byte("\n")))
	}
	timedOut := func(err error) bool {
		var ne net.Error
		return errors.As(err, &ne) && ne.Timeout()
	}
	accept := func(wait time.Duration) (net.Conn, error) {
		_ = l.(*net.TCPListener).SetDeadline(time.Now().Add(wait))
		return l.Accept()
	}
	for i, step := range steps {
		action, ok := step["server"].(string)
		if !ok {
			continue
		}
		at := fmt.Sprintf("step %d (%s)", i+1, action)
		ms := scriptWait
		if n, ok := step["ms"].(json.Number); ok {
			v, _ := n.Int64()
			ms = time.Duration(v) * time.Millisecond
		}
		switch action {
		case "accept":
			c, err := accept(scriptWait)
			if err != nil {
				return fmt.Errorf("%s: the client did not connect: %v", at, err)
			}
			if conn != nil {
				_ = conn.Close()
			}
			conn, rd = c, bufio.NewReader(c)
		case "no_accept":
			if c, err := accept(ms); err == nil {
				_ = c.Close()
				return fmt.Errorf("%s: the client connected again; it must not", at)
			}
		case "expect":
			f, err := next(scriptWait)
			if err != nil {
				return fmt.Errorf("%s: expected %v: %v", at, step["frame"], err)
			}
			if err := b.check(step["frame"], f, "$"); err != nil {
				return fmt.Errorf("%s: %v", at, err)
			}
		case "expect_ack":
			upTo, _ := step["up_to"].(json.Number).Int64()
			for {
				f, err := next(scriptWait)
				if err != nil {
					return fmt.Errorf("%s: no ack up to %d: %v", at, upTo, err)
				}
				n, ok := isAck(f)
				if !ok {
					return fmt.Errorf("%s: expected an ack, got %v", at, f)
				}
				if n >= uint64(upTo) {
					break
				}
			}
		case "quiet":
			f, err := next(ms)
			if err == nil {
				return fmt.Errorf("%s: expected nothing, got %v", at, f)
			}
			if !timedOut(err) {
				return fmt.Errorf("%s: %v", at, err)
			}
			rd = bufio.NewReader(conn) // a timed-out read leaves nothing behind
		case "send":
			line, err := json.Marshal(b.fill(step["frame"]))
			if err != nil {
				return err
			}
			if _, err := conn.Write(append(line, '\n')); err != nil {
				return fmt.Errorf("%s: %v", at, err)
			}
		case "send_raw":
			if _, err := conn.Write([]byte(step["text"].(string))); err != nil {
				return fmt.Errorf("%s: %v", at, err)
			}
		case "drop":
			_ = conn.Close()
			conn = nil
		default:
			return fmt.Errorf("%s: unknown server step", at)
		}
	}
	if conn == nil {
		return nil
	}
	// The application closes the client; only acks and pongs may come meanwhile.
	for {
		f, err := next(scriptWait)
		if err != nil {
			if timedOut(err) {
				return errors.New("the client did not close its connection")
			}
			return nil
		}
		pong := map[string]any{"status": "r", "status_code": json.Number("30"), "info": map[string]any{"req": "pong"}}
		if _, ok := isAck(f); !ok && !reflect.DeepEqual(f, pong) {
			return fmt.Errorf("after the script, the client sent %v", f)
		}
	}
}

type outcome struct {
	value any
	err   error
}

func errorJSON(err error) map[string]any {
	var e *moechat.Error
	code := any(nil)
	closed := errors.Is(err, moechat.ErrClosed)
	if errors.As(err, &e) {
		code = json.Number(fmt.Sprint(e.Code))
	}
	return map[string]any{"closed": closed, "code": code}
}

// normal turns a Go value into what a JSON round trip gives, numbers as json.Number.
func normal(v any) any {
	data, _ := json.Marshal(v)
	out, _ := decodeAny(data)
	return out
}

func decodeAny(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

func drive(t *testing.T, addr string, steps []map[string]any) {
	var c *moechat.Client
	calls := map[string]chan outcome{}
	startCall := func(name string, f func() (any, error)) {
		ch := make(chan outcome, 1)
		calls[name] = ch
		go func() {
			v, err := f()
			ch <- outcome{v, err}
		}()
	}
	ctx := context.Background()
	for i, step := range steps {
		op, ok := step["app"].(string)
		if !ok {
			continue
		}
		name, _ := step["as"].(string)
		if name == "" {
			name = op
		}
		args, _ := step["args"].([]any)
		arg := func(i int) string { return args[i].(string) }
		switch op {
		case "connect":
			var err error
			c, err = moechat.Dial(ctx, addr, moechat.Options{Timeout: scriptWait})
			if err != nil {
				t.Fatalf("step %d: %v", i+1, err)
			}
		case "login":
			u, p := arg(0), arg(1)
			startCall(name, func() (any, error) { return c.Login(ctx, u, p) })
		case "send":
			to, text := arg(0), arg(1)
			startCall(name, func() (any, error) {
				r, err := c.Send(ctx, to, text)
				return map[string]any{"msg_id": r.MsgID, "stored": r.Stored, "duplicate": r.Duplicate}, err
			})
		case "broadcast":
			text := arg(0)
			startCall(name, func() (any, error) {
				r, err := c.Broadcast(ctx, text)
				return map[string]any{"msg_id": r.MsgID, "recipients": r.Recipients, "duplicate": r.Duplicate}, err
			})
		case "recv":
			timeout := time.Duration(0)
			if n, ok := step["timeout_ms"].(json.Number); ok {
				v, _ := n.Int64()
				timeout = time.Duration(v) * time.Millisecond
			}
			startCall(name, func() (any, error) {
				rctx := ctx
				if timeout > 0 {
					var cancel context.CancelFunc
					rctx, cancel = context.WithTimeout(ctx, timeout)
					defer cancel()
				}
				m, err := c.Recv(rctx)
				if errors.Is(err, context.DeadlineExceeded) {
					return nil, nil
				}
				if err != nil {
					return nil, err
				}
				to := any(m.To)
				if m.Broadcast {
					to = nil
				}
				return map[string]any{"msg_id": m.MsgID, "from": m.From, "to": to, "text": m.Text, "broadcast": m.Broadcast}, nil
			})
		case "await":
			callName := step["call"].(string)
			var o outcome
			select {
			case o = <-calls[callName]:
			case <-time.After(2 * scriptWait):
				t.Fatalf("step %d: %s did not finish", i+1, callName)
			}
			want, wantResult := step["result"]
			if !wantResult {
				want = step["error"]
			}
			if (o.err == nil) != wantResult {
				t.Fatalf("step %d: %s: expected %v, got %v (error %v)", i+1, callName, want, o.value, o.err)
			}
			got := normal(o.value)
			if o.err != nil {
				got = normal(errorJSON(o.err))
			}
			if err := matchApp(want, got); err != nil {
				t.Fatalf("step %d: %s: %v", i+1, callName, err)
			}
		case "sleep":
			v, _ := step["ms"].(json.Number).Int64()
			time.Sleep(time.Duration(v) * time.Millisecond)
		case "close":
			if c != nil {
				_ = c.Close()
			}
		default:
			t.Fatalf("step %d: unknown app step %q", i+1, op)
		}
	}
}

// matchApp compares app-side results: equality, "$any" matching anything.
func matchApp(want, got any) error {
	if want == "$any" {
		return nil
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("expected %v, got %v", want, got)
		}
		for k, v := range w {
			if err := matchApp(v, g[k]); err != nil {
				return fmt.Errorf("%s: %v", k, err)
			}
		}
		return nil
	}
	if !same(want, got) {
		return fmt.Errorf("expected %v, got %v", want, got)
	}
	return nil
}

func TestClientScripts(t *testing.T) {
	for _, path := range scriptFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			steps := readSteps(t, path)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			played := make(chan error, 1)
			go func() { played <- play(l, steps) }()
			drive(t, l.Addr().String(), steps)
			select {
			case err := <-played:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(2 * scriptWait):
				t.Fatal("the fake server did not finish")
			}
		})
	}
}
