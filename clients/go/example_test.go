package moechat_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	moechat "github.com/moechat/moechat/clients/go"
)

// Example logs in, sends a direct message and reads the receipt. (The examples here
// talk to a tiny stand-in for moechat-server, so that they run anywhere; point Dial
// at a real server, "127.0.0.1:3541" by default, to do the same.)
func Example() {
	addr := standIn()
	ctx := context.Background()

	c, err := moechat.Dial(ctx, addr, moechat.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	if _, err := c.Login(ctx, "alice", "wonderland"); err != nil {
		fmt.Println(err)
		return
	}
	r, err := c.Send(ctx, "bob", "hi bob")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("message %d stored for later: %v\n", r.MsgID, r.Stored)
	// Output: message 1 stored for later: true
}

// ExampleError tells refusals from the server apart by their protocol code.
func ExampleError() {
	addr := standIn()
	ctx := context.Background()
	c, err := moechat.Dial(ctx, addr, moechat.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	_, err = c.Login(ctx, "alice", "wrong")
	var e *moechat.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code, e.Reason)
	}
	// Output: 20 wrong name or password
}

// ExampleClient_Recv reads what the server pushes until the context ends.
func ExampleClient_Recv() {
	addr := standIn()
	ctx := context.Background()
	c, err := moechat.Dial(ctx, addr, moechat.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	if _, err := c.Login(ctx, "alice", "wonderland"); err != nil {
		fmt.Println(err)
		return
	}
	m, err := c.Recv(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s to %s: %s\n", m.From, m.To, m.Text)
	// Output: carol to alice: welcome back
}

// standIn answers the few requests the examples make, as moechat-server would.
func standIn() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() {
		conn, err := l.Accept()
		l.Close()
		if err != nil {
			return
		}
		defer conn.Close()
		in := bufio.NewScanner(conn)
		reply := func(v any) {
			line, _ := json.Marshal(v)
			_, _ = conn.Write(append(line, '\n'))
		}
		for in.Scan() {
			var f struct {
				Status string         `json:"status"`
				Info   map[string]any `json:"info"`
				ID     any            `json:"id"`
			}
			if json.Unmarshal(in.Bytes(), &f) != nil || f.ID == nil {
				continue // acks and pongs
			}
			switch {
			case f.Info["req"] == "login" && f.Info["password"] == "wonderland":
				reply(map[string]any{"status": "r", "status_code": 10, "id": f.ID,
					"info": map[string]any{"user": "alice", "session": "AAAAbbbbCCCCddddEEEEffff", "port": 3541, "heartbeat": 60}})
				reply(map[string]any{"status": "m", "status_code": 80,
					"info": map[string]any{"msg_id": 7, "from": "carol", "to": "alice", "text": "welcome back", "ts": 1765000000000}})
			case f.Info["req"] == "login":
				reply(map[string]any{"status": "r", "status_code": 20, "id": f.ID,
					"info": map[string]any{"error": "wrong name or password"}})
			case f.Status == "m":
				reply(map[string]any{"status": "r", "status_code": 51, "id": f.ID, "info": map[string]any{"msg_id": 1}})
			}
		}
	}()
	return l.Addr().String()
}
