package moechat

// Frames on the wire: one JSON object per line (PROTOCOL.md sections 1 and 2). This
// file holds the pure part, building and reading frames, with no I/O, so that the
// fuzz target can reach every branch of reading.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Protocol codes used by the client (PROTOCOL.md section 4).
const (
	codeHeartbeat     = 0
	codeLoginOK       = 10
	codeBusy          = 24
	codeQueryOK       = 30
	codeDelivered     = 50
	codeStored        = 51
	codeTakenOver     = 64
	codeDirect        = 80
	codeBroadcast     = 90
	maxFrameBytes     = 16 << 20
	statusQuery       = "q"
	statusResponse    = "r"
	statusError       = "e"
	statusMessage     = "m"
	heartbeatFallback = 60 * time.Second
)

// frame is one parsed server frame.
type frame struct {
	Status string
	Code   int
	Info   json.RawMessage
	// ID is the request id the frame answers, or 0 when it carries none (this client
	// only sends positive integer ids, so any other id is not one of its answers).
	ID uint64
}

// errMalformed is what a line that is not a server frame reads as.
var errMalformed = errors.New("malformed frame")

// parseFrame reads one line (without its newline) as a server frame.
func parseFrame(line []byte) (frame, error) {
	var raw struct {
		Status *string          `json:"status"`
		Code   *json.Number     `json:"status_code"`
		Info   json.RawMessage  `json:"info"`
		ID     *json.RawMessage `json:"id"`
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return frame{}, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if dec.More() {
		return frame{}, fmt.Errorf("%w: more than one JSON value", errMalformed)
	}
	if raw.Status == nil || raw.Code == nil {
		return frame{}, fmt.Errorf("%w: status or status_code missing", errMalformed)
	}
	code, err := raw.Code.Int64()
	if err != nil || code < 0 || code > 100 {
		return frame{}, fmt.Errorf("%w: status_code %s", errMalformed, raw.Code.String())
	}
	f := frame{Status: *raw.Status, Code: int(code), Info: raw.Info}
	switch f.Status {
	case statusQuery, statusResponse, statusError, statusMessage:
	default:
		return frame{}, fmt.Errorf("%w: status %q", errMalformed, f.Status)
	}
	if len(f.Info) == 0 || bytes.Equal(f.Info, []byte("null")) {
		f.Info = json.RawMessage("{}")
	} else if f.Info[0] != '{' {
		return frame{}, fmt.Errorf("%w: info is not an object", errMalformed)
	}
	if raw.ID != nil {
		var id uint64
		if json.Unmarshal(*raw.ID, &id) == nil {
			f.ID = id
		}
	}
	return f, nil
}

// push is the info of an m/80 or m/90 frame.
type push struct {
	MsgID *uint64 `json:"msg_id"`
	From  string  `json:"from"`
	To    string  `json:"to"`
	Text  string  `json:"text"`
	TS    int64   `json:"ts"`
}

// message reads a push frame as a Message.
func (f frame) message() (Message, error) {
	var p push
	if err := json.Unmarshal(f.Info, &p); err != nil || p.MsgID == nil || p.From == "" {
		return Message{}, fmt.Errorf("%w: a push without msg_id or from", errMalformed)
	}
	broadcast := f.Code == codeBroadcast
	if !broadcast && p.To == "" {
		return Message{}, fmt.Errorf("%w: a direct message without to", errMalformed)
	}
	return Message{
		MsgID:     *p.MsgID,
		From:      p.From,
		To:        p.To,
		Text:      p.Text,
		Time:      time.UnixMilli(p.TS),
		Broadcast: broadcast,
	}, nil
}

// reason is the `error` sentence of a failing frame.
func (f frame) reason() string {
	var info struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(f.Info, &info)
	return info.Error
}

// isPing reports whether the frame is the server's heartbeat ping.
func (f frame) isPing() bool {
	return f.Status == statusQuery && f.Code == codeHeartbeat
}

// encode builds one frame line (with its newline).
func encode(status string, code int, info any, id uint64) []byte {
	envelope := struct {
		Status string `json:"status"`
		Code   int    `json:"status_code"`
		Info   any    `json:"info"`
		ID     uint64 `json:"id,omitempty"`
	}{status, code, info, id}
	line, err := json.Marshal(envelope)
	if err != nil {
		// Only the client's own maps and strings are encoded: a failure is a bug.
		panic(fmt.Sprintf("moechat: cannot encode a frame: %v", err))
	}
	return append(line, '\n')
}

var pongLine = encode(statusResponse, codeQueryOK, map[string]string{"req": "pong"}, 0)

func ackLine(msgID uint64) []byte {
	return encode(statusResponse, codeDelivered, map[string]uint64{"ack": msgID}, 0)
}
