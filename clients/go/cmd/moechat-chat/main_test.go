package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestChatsWithTheRealServer builds the command and chats through it with the
// moechat-server of the repository (MOECHAT_SERVER, or ../../../../target/debug);
// with the Go toolchain alone there is none, and the test says so and skips.
func TestChatsWithTheRealServer(t *testing.T) {
	server := os.Getenv("MOECHAT_SERVER")
	if server == "" {
		server = filepath.Join("..", "..", "..", "..", "target", "debug", "moechat-server")
	}
	if _, err := os.Stat(server); err != nil {
		t.Skipf("no moechat-server at %s (set MOECHAT_SERVER)", server)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "moechat-chat")
	if out, err := exec.Command("go", "build", "-buildvcs=false", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	srv := exec.Command(server, "--port", "0", "--http", "off", "--db", filepath.Join(dir, "db"))
	stderr, _ := srv.StderrPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() }()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if _, a, ok := strings.Cut(sc.Text(), "listening on "); ok {
				addr <- strings.TrimSpace(a)
			}
		}
	}()
	var at string
	select {
	case at = <-addr:
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not start")
	}
	chat := exec.Command(bin, "-addr", at, "-user", "alice", "-register")
	chat.Env = append(os.Environ(), "MOECHAT_PASSWORD=wonderland")
	chat.Stdin = strings.NewReader("/users\n/msg nobody hi\n/msg alice note to self\nhello all\n/bogus\n/quit\n")
	out, err := chat.CombinedOutput()
	if err != nil {
		t.Fatalf("moechat-chat: %v\n%s", err, out)
	}
	for _, want := range []string{"logged in as alice", "* online: alice", "no such user", "unknown command /bogus"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}
