"""A MoeChat user in Python, over TCP, for the browser tests.

Usage: py_peer.py PORT USER PASSWORD. Registers USER (if it is new), logs in, prints
{"ready": true}, then answers one JSON command per line on stdin with one JSON line on
stdout: {"send": [to, text]}, {"broadcast": text} or {"recv": seconds}.
"""

from __future__ import annotations

import json
import sys

import moechat


def main() -> None:
    port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    with moechat.Client("127.0.0.1", port) as client:
        try:
            client.register(user, password)
        except moechat.QueryError as e:
            if e.code != 43:  # taken: registered by an earlier run of this peer
                raise
        client.login(user, password)
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            answer: dict[str, object]
            if "send" in command:
                to, text = command["send"]
                r = client.send(to, text)
                answer = {"msg_id": r.msg_id, "stored": r.stored}
            elif "broadcast" in command:
                r = client.broadcast(command["broadcast"])
                answer = {"msg_id": r.msg_id, "recipients": r.recipients}
            else:
                m = client.recv(timeout=float(command["recv"]))
                answer = (
                    {"none": True}
                    if m is None
                    else {"sender": m.sender, "text": m.text, "kind": m.kind}
                )
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
