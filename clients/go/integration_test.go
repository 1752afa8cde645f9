package moechat_test

// The client against the real moechat-server built from the MoeChat repository
// (MOECHAT_SERVER, or ../../target/debug/moechat-server), started on free ports by
// each test, and a direct message with the Python client (MOECHAT_PYTHON: a Python
// with the moechat package). `make test` provides both. With the Go toolchain alone
// there is no server to start: these tests say so and skip, and the fake-server
// tests (conformance_test.go) still run.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	moechat "github.com/moechat/moechat/clients/go"
)

type server struct {
	cmd  *exec.Cmd
	addr string
}

func serverBinary(t *testing.T) string {
	bin := os.Getenv("MOECHAT_SERVER")
	if bin == "" {
		bin = filepath.Join("..", "..", "target", "debug", "moechat-server")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no moechat-server at %s (set MOECHAT_SERVER, or cargo build --bin moechat-server)", bin)
	}
	return bin
}

// startServer runs moechat-server with its store in dir, on port (0: any).
func startServer(t *testing.T, dir string, port string) *server {
	t.Helper()
	cmd := exec.Command(serverBinary(t), "--port", port, "--http", "off",
		"--db", filepath.Join(dir, "moechat.db"), "--log-level", "info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if _, addr, ok := strings.Cut(sc.Text(), "listening on "); ok {
				select {
				case found <- strings.TrimSpace(addr):
				default:
				}
			}
		}
	}()
	select {
	case addr := <-found:
		s := &server{cmd: cmd, addr: addr}
		t.Cleanup(s.stop)
		return s
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("moechat-server did not start")
		return nil
	}
}

// stop ends the server by PID (SIGTERM, a graceful stop) and waits for it.
func (s *server) stop() {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func loggedIn(t *testing.T, ctx context.Context, addr, user, password string, register bool) *moechat.Client {
	t.Helper()
	c, err := moechat.Dial(ctx, addr, moechat.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if register {
		if err := c.Register(ctx, user, password); err != nil {
			t.Fatalf("register %s: %v", user, err)
		}
	}
	if _, err := c.Login(ctx, user, password); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return c
}

func TestChatWithTheRealServer(t *testing.T) {
	s := startServer(t, t.TempDir(), "0")
	ctx := ctxFor(t)
	alice := loggedIn(t, ctx, s.addr, "alice", "wonderland", true)
	bob := loggedIn(t, ctx, s.addr, "bob", "builder", true)

	users, err := alice.Users(ctx)
	if err != nil || !reflect.DeepEqual(users, []string{"alice", "bob"}) {
		t.Fatalf("users: %v %v", users, err)
	}
	r, err := alice.Send(ctx, "bob", "hi bob")
	if err != nil || r.Stored || r.Duplicate || r.MsgID == 0 {
		t.Fatalf("send: %+v %v", r, err)
	}
	m, err := bob.Recv(ctx)
	if err != nil || m.From != "alice" || m.To != "bob" || m.Text != "hi bob" || m.MsgID != r.MsgID || m.Broadcast {
		t.Fatalf("recv: %+v %v", m, err)
	}
	if time.Since(m.Time) > time.Minute {
		t.Fatalf("a message from the distant past: %v", m.Time)
	}
	b, err := bob.Broadcast(ctx, "hello all")
	if err != nil || b.Recipients != 1 {
		t.Fatalf("broadcast: %+v %v", b, err)
	}
	if m, err := alice.Recv(ctx); err != nil || !m.Broadcast || m.Text != "hello all" {
		t.Fatalf("broadcast recv: %+v %v", m, err)
	}
	history, err := alice.History(ctx, "bob", moechat.HistoryOptions{Limit: 10})
	if err != nil || len(history) != 1 || history[0].Text != "hi bob" {
		t.Fatalf("history: %+v %v", history, err)
	}
	all, err := alice.History(ctx, "*", moechat.HistoryOptions{})
	if err != nil || len(all) != 1 || !all[0].Broadcast {
		t.Fatalf("broadcast history: %+v %v", all, err)
	}

	// Refusals carry their code.
	_, err = alice.Send(ctx, "nobody", "hello?")
	var e *moechat.Error
	if !errors.As(err, &e) || e.Code != 71 || e.Reason == "" {
		t.Fatalf("send to nobody: %v", err)
	}
	c, err := moechat.Dial(ctx, s.addr, moechat.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(ctx, "alice", "wrong"); !errors.As(err, &e) || e.Code != 20 {
		t.Fatalf("wrong password: %v", err)
	}
	if err := c.Register(ctx, "alice", "again"); !errors.As(err, &e) || e.Code != 43 {
		t.Fatalf("taken name: %v", err)
	}
	_ = c.Close()
	if _, err := c.Users(ctx); !errors.Is(err, moechat.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}

	// Recv gives up when its context does.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := bob.Recv(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("recv with a short context: %v", err)
	}

	// A newer login elsewhere: the older client ends with 64, and says so.
	again := loggedIn(t, ctx, s.addr, "bob", "builder", false)
	_, err = bob.Recv(ctx)
	if !errors.Is(err, moechat.ErrClosed) || !errors.As(err, &e) || e.Code != 64 {
		t.Fatalf("taken over: %v", err)
	}
	if err := again.Logout(ctx); err != nil {
		t.Fatalf("logout: %v", err)
	}
}

func TestResumesAfterTheServerRestarts(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, "0")
	ctx := ctxFor(t)
	alice := loggedIn(t, ctx, s.addr, "alice", "wonderland", true)
	bob := loggedIn(t, ctx, s.addr, "bob", "builder", true)
	_, port, _ := strings.Cut(s.addr, ":")
	s.stop()
	// Sends made while the server is down wait for the resume, then go through.
	sent := make(chan error, 1)
	go func() {
		_, err := alice.Send(ctx, "bob", "after the restart")
		sent <- err
	}()
	time.Sleep(300 * time.Millisecond)
	startServer(t, dir, port)
	if err := <-sent; err != nil {
		t.Fatalf("send across the restart: %v", err)
	}
	m, err := bob.Recv(ctx)
	if err != nil || m.Text != "after the restart" {
		t.Fatalf("recv across the restart: %+v %v", m, err)
	}
}

func TestADirectMessageWithThePythonClient(t *testing.T) {
	python := os.Getenv("MOECHAT_PYTHON")
	if python == "" {
		t.Skip("set MOECHAT_PYTHON to a Python with the moechat package")
	}
	s := startServer(t, t.TempDir(), "0")
	ctx := ctxFor(t)
	gopher := loggedIn(t, ctx, s.addr, "gopher", "burrow", true)
	host, port, _ := strings.Cut(s.addr, ":")
	script := fmt.Sprintf(`
import moechat
c = moechat.Client(%q, %s)
c.register("snake", "scales")
c.login("snake", "scales")
print("ready", flush=True)
m = c.recv(timeout=20)
c.send(m.sender, "python got: " + m.text)
c.close()
`, host, port)
	cmd := exec.Command(python, "-c", script)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("the Python client did not start: %q %v", line, err)
	}
	if _, err := gopher.Send(ctx, "snake", "hello from Go"); err != nil {
		t.Fatal(err)
	}
	m, err := gopher.Recv(ctx)
	if err != nil || m.From != "snake" || m.Text != "python got: hello from Go" {
		t.Fatalf("reply from Python: %+v %v", m, err)
	}
}
