package moechat

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzParseFrame feeds arbitrary lines to the frame reader: it must never panic,
// and what it accepts must be a frame the rest of the client can rely on.
func FuzzParseFrame(f *testing.F) {
	for _, seed := range []string{
		`{"status":"r","status_code":10,"info":{"user":"alice","session":"AAAAbbbbCCCCddddEEEEffff","port":3541,"heartbeat":60},"id":1}`,
		`{"status":"m","status_code":80,"info":{"msg_id":1,"from":"bob","to":"alice","text":"hi","ts":1765000000000}}`,
		`{"status":"m","status_code":90,"info":{"msg_id":2,"from":"bob","text":"all","ts":1765000000000}}`,
		`{"status":"q","status_code":0,"info":{"req":"ping"}}`,
		`{"status":"e","status_code":64,"info":{"error":"taken over"}}`,
		`{"status":"r","status_code":50,"info":{"msg_id":9,"duplicate":true},"id":"x"}`,
		`{"status":"m","status_code":80,"info":null}`,
		`{"status":"r","status_code":1e400}`,
		`[1,2]`, `{}`, ``, `{"status":"r","status_code":30,"info":[]}{}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		fr, err := parseFrame(line)
		if err != nil {
			return
		}
		switch fr.Status {
		case statusQuery, statusResponse, statusError, statusMessage:
		default:
			t.Fatalf("accepted status %q", fr.Status)
		}
		if fr.Code < 0 || fr.Code > 100 {
			t.Fatalf("accepted status_code %d", fr.Code)
		}
		var info map[string]json.RawMessage
		if err := json.Unmarshal(fr.Info, &info); err != nil {
			t.Fatalf("accepted info %s: %v", fr.Info, err)
		}
		_ = fr.reason()
		if m, err := fr.message(); err == nil && !m.Broadcast && m.To == "" {
			t.Fatalf("a direct message without a recipient: %+v", m)
		}
	})
}

// FuzzReadLine cuts arbitrary bytes into lines: never a panic, never a newline
// inside a line, never more than the limit.
func FuzzReadLine(f *testing.F) {
	f.Add([]byte("a\nb\r\n\n"))
	f.Add([]byte("no newline at the end"))
	f.Add(bytes.Repeat([]byte("x"), 70000))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(data), 16)
		for {
			line, err := readLine(r)
			if err != nil {
				return
			}
			if bytes.IndexByte(line, '\n') >= 0 || len(line) > maxFrameBytes+1 {
				t.Fatalf("bad line %q", line)
			}
		}
	})
}
