// Command moechat-chat is a terminal chat on a MoeChat server, a small program built
// on the Go client.
//
//	moechat-chat -addr 127.0.0.1:3541 -user alice            # asks for the password
//	MOECHAT_PASSWORD=wonderland moechat-chat -user alice -register
//
// Plain lines are broadcast; "/msg NAME text" sends a direct message; "/users" lists
// who is online; "/history NAME" (or "*") shows the last messages; "/quit" or Ctrl-D
// leaves.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	moechat "github.com/moechat/moechat/clients/go"
)

// stdin is shared by the password prompt and the chat's lines.
var stdin = bufio.NewReader(os.Stdin)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "moechat-chat:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:3541", "the server, host:port")
	user := flag.String("user", "", "your name (required)")
	register := flag.Bool("register", false, "create the user first")
	useTLS := flag.Bool("tls", false, "speak TLS, verifying the server")
	ca := flag.String("ca", "", "with -tls: trust this CA (PEM) instead of the system's roots")
	flag.Parse()
	if *user == "" {
		flag.Usage()
		return errors.New("-user is required")
	}
	password, err := readPassword()
	if err != nil {
		return err
	}
	opts := moechat.Options{}
	if *useTLS {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if *ca != "" {
			pem, err := os.ReadFile(*ca)
			if err != nil {
				return err
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return fmt.Errorf("%s holds no certificate", *ca)
			}
		}
		opts.TLS = cfg
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c, err := moechat.Dial(ctx, *addr, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	if *register {
		if err := c.Register(ctx, *user, password); err != nil {
			return err
		}
	}
	if _, err := c.Login(ctx, *user, password); err != nil {
		return err
	}
	fmt.Printf("logged in as %s; /msg NAME text, /users, /history NAME, /quit\n", *user)
	go func() {
		for {
			m, err := c.Recv(ctx)
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					fmt.Println("*", err)
				}
				stop()
				return
			}
			fmt.Println(format(m))
		}
	}()
	lines := make(chan string)
	go func() {
		in := bufio.NewScanner(stdin)
		for in.Scan() {
			lines <- in.Text()
		}
		close(lines)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case l, ok := <-lines:
			if !ok || strings.TrimSpace(l) == "/quit" {
				return nil
			}
			if err := command(ctx, c, l); err != nil {
				fmt.Println("*", err)
			}
		}
	}
}

func command(ctx context.Context, c *moechat.Client, l string) error {
	l = strings.TrimSpace(l)
	switch {
	case l == "":
		return nil
	case l == "/users":
		users, err := c.Users(ctx)
		if err == nil {
			fmt.Println("* online:", strings.Join(users, ", "))
		}
		return err
	case strings.HasPrefix(l, "/history "):
		messages, err := c.History(ctx, strings.TrimSpace(l[len("/history "):]), moechat.HistoryOptions{Limit: 20})
		for _, m := range messages {
			fmt.Println(format(m))
		}
		return err
	case strings.HasPrefix(l, "/msg "):
		to, text, ok := strings.Cut(strings.TrimSpace(l[len("/msg "):]), " ")
		if !ok {
			return errors.New("usage: /msg NAME text")
		}
		r, err := c.Send(ctx, to, text)
		if err == nil && r.Stored {
			fmt.Printf("* %s is offline; they get it at their next login\n", to)
		}
		return err
	case strings.HasPrefix(l, "/"):
		return fmt.Errorf("unknown command %s", strings.Fields(l)[0])
	default:
		_, err := c.Broadcast(ctx, l)
		return err
	}
}

func format(m moechat.Message) string {
	when := m.Time.Format(time.Kitchen)
	if m.Broadcast {
		return fmt.Sprintf("[%s] %s: %s", when, m.From, m.Text)
	}
	return fmt.Sprintf("[%s] %s -> %s: %s", when, m.From, m.To, m.Text)
}

// readPassword takes MOECHAT_PASSWORD, or asks on the terminal (the Go standard
// library cannot turn echo off: prefer the variable where others can see the screen).
func readPassword() (string, error) {
	if p := os.Getenv("MOECHAT_PASSWORD"); p != "" {
		return p, nil
	}
	fmt.Print("password: ")
	line, err := stdin.ReadString('\n')
	if err != nil {
		return "", errors.New("no password given (set MOECHAT_PASSWORD)")
	}
	return strings.TrimRight(line, "\r\n"), nil
}
