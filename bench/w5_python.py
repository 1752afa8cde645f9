"""W5 of docs/BENCHMARKS.md: how fast Python code can receive messages.

Each receiver drains a backlog of ``--messages`` direct messages of ``--size`` bytes as
fast as it can, and the rate is messages over the time from its first read to the
last message. Receivers:

- ``client``: ``moechat.Client.recv`` (the default client: acks on, GIL released);
- ``async``: ``async for`` over ``moechat.AsyncClient``;
- ``asyncio``: a small pure-Python asyncio client of the same protocol (readline and
  ``json.loads`` per frame), the reference for what the bindings save;
- ``redis-py``: redis-py's pub/sub client reading the same payloads from Redis.

The backlog makes every receiver the bottleneck, never the sender: MoeChat stores the
messages for an offline user, which its login then streams; Redis holds what was
published to a subscriber that has not read yet in its output buffer. The
publishers are pipelined raw sockets in a separate process, done before timing starts.

    python bench/w5_python.py --server-bin target/release/moechat-server

needs the ``moechat`` package built in release mode (``pip install .``) and ``redis``
(redis-py) in the same environment; ``make bench-python`` sets that up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import moechat

PASSWORD = "bench-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"w5: nothing listening on {port}")


def drain_replies(sock: socket.socket, expected: int, marker: bytes) -> None:
    """Reads until `expected` occurrences of `marker` (one per publish reply) arrived."""
    seen = 0
    tail = b""
    while seen < expected:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise SystemExit("w5: the server closed the publisher's connection")
        data = tail + chunk
        seen += data.count(marker)
        tail = data[-(len(marker) - 1) :]


def pipeline(sock: socket.socket, frame: bytes, n: int, reply: bytes) -> None:
    """Writes `frame` `n` times while another thread reads the `n` replies: a client
    that writes without reading would stall once the server's replies fill the socket
    (both servers stop reading a client whose replies cannot be written)."""
    reader = threading.Thread(target=drain_replies, args=(sock, n, reply))
    reader.start()
    sent = 0
    while sent < n:
        k = min(1000, n - sent)
        sock.sendall(frame * k)
        sent += k
    reader.join()


def publish_moechat(port: int, to: str, n: int, size: int) -> None:
    """Logs in as the sender and pipelines `n` direct messages to `to`."""
    sock = socket.create_connection(("127.0.0.1", port))
    info = {"req": "login", "user": "sender", "password": PASSWORD}
    login = {"status": "q", "status_code": 0, "info": info}
    sock.sendall(json.dumps(login).encode() + b"\n")
    drain_replies(sock, 1, b'"status_code":10')
    text = "x" * size
    frame = json.dumps({"status": "m", "status_code": 80, "info": {"to": to, "text": text}})
    # Each is answered r/51: stored for a user who is offline.
    pipeline(sock, (frame + "\n").encode(), n, b'"status_code":51')
    sock.close()


def publish_redis(port: int, channel: str, n: int, size: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    payload = b"x" * size
    cmd = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel),
        channel.encode(),
        len(payload),
        payload,
    )
    pipeline(sock, cmd, n, b":1\r\n")
    sock.close()


def in_process(target: Callable[..., None], *args: Any) -> None:
    """Runs a publisher in its own process, so it never shares this one's GIL."""
    p = multiprocessing.Process(target=target, args=args)
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"w5: publisher failed ({p.exitcode})")


def recv_client(port: int, user: str, n: int) -> float:
    with moechat.Client("127.0.0.1", port) as c:
        c.login(user, PASSWORD)
        start = time.perf_counter()
        for _ in range(n):
            if c.recv(timeout=30) is None:
                raise SystemExit("w5: Client.recv timed out")
        return time.perf_counter() - start


def recv_async(port: int, user: str, n: int) -> float:
    async def main() -> float:
        c = await moechat.AsyncClient.connect("127.0.0.1", port)
        async with c:
            await c.login(user, PASSWORD)
            start = time.perf_counter()
            got = 0
            async for _ in c:
                got += 1
                if got == n:
                    break
            return time.perf_counter() - start

    return asyncio.run(main())


def recv_asyncio(port: int, user: str, n: int) -> float:
    async def main() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        info = {"req": "login", "user": user, "password": PASSWORD}
        login = {"status": "q", "status_code": 0, "info": info}
        writer.write(json.dumps(login).encode() + b"\n")
        await writer.drain()
        start = 0.0
        got = 0
        while got < n:
            frame = json.loads(await reader.readline())
            if frame["status"] == "m":
                got += 1
            elif frame["status_code"] == 10:
                start = time.perf_counter()
        elapsed = time.perf_counter() - start
        writer.close()
        return elapsed

    return asyncio.run(main())


def recv_redis(port: int, channel: str, n: int, size: int) -> float:
    import redis  # type: ignore[import-not-found, unused-ignore]  # only this receiver needs it

    # The socket timeout ends a run whose subscriber Redis dropped, instead of hanging.
    client: Any = redis.Redis(port=port, socket_timeout=30)
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    confirmed = pubsub.get_message(timeout=10.0)
    if confirmed is None or confirmed["type"] != "subscribe":
        raise SystemExit(f"w5: redis did not confirm the subscription: {confirmed}")
    # Publish the whole backlog before reading any of it (Redis buffers it for us).
    in_process(publish_redis, port, channel, n, size)
    start = time.perf_counter()
    got = 0
    for message in pubsub.listen():
        if message["type"] == "message":
            got += 1
            if got == n:
                break
    elapsed = time.perf_counter() - start
    pubsub.close()
    client.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server-bin", default="target/release/moechat-server")
    parser.add_argument("--redis-bin", default="redis-server")
    # 300,000: each receiver then reads for at least ~0.4 s, so one stall of a few tens
    # of milliseconds on a shared machine does not decide a run (at 100,000 it did).
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--receivers",
        default="client,async,asyncio,redis-py",
        help="comma-separated: client, async, asyncio, redis-py",
    )
    args = parser.parse_args()
    receivers = args.receivers.split(",")
    n, size = args.messages, args.size
    rates: dict[str, list[float]] = {r: [] for r in receivers}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1, args.runs + 1):
            port = free_port()
            db = os.path.join(tmp, f"w5-{run}.db")
            server = subprocess.Popen(
                [
                    args.server_bin,
                    "--port",
                    str(port),
                    "--db",
                    db,
                    "--login-rate",
                    "0",
                    "--http",
                    "off",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            redis_proc = None
            try:
                wait_listening(port)
                with moechat.Client("127.0.0.1", port, reconnect=False) as admin:
                    for user in ["sender", "r-client", "r-async", "r-asyncio"]:
                        admin.register(user, PASSWORD)
                for r in receivers:
                    if r == "redis-py":
                        if shutil.which(args.redis_bin) is None:
                            print(f"w5: {args.redis_bin} not found; skipping redis-py")
                            continue
                        rport = free_port()
                        # No output-buffer limit for subscribers: by default Redis drops
                        # one whose unread backlog passes 32 MB (300,000 messages do).
                        redis_proc = subprocess.Popen(
                            [args.redis_bin, "--port", str(rport), "--save", ""]
                            + ["--appendonly", "no", "--bind", "127.0.0.1"]
                            + ["--client-output-buffer-limit", "pubsub 0 0 0"],
                            stdout=subprocess.DEVNULL,
                        )
                        wait_listening(rport)
                        elapsed = recv_redis(rport, "r-redis", n, size)
                    else:
                        user = f"r-{r}"
                        in_process(publish_moechat, port, user, n, size)
                        receive = {
                            "client": recv_client,
                            "async": recv_async,
                            "asyncio": recv_asyncio,
                        }[r]
                        elapsed = receive(port, user, n)
                    rate = n / elapsed
                    rates[r].append(rate)
                    line = {"workload": "w5", "receiver": r, "run": run, "messages": n}
                    line |= {"size": size, "seconds": elapsed, "msgs_per_s": rate}
                    print(json.dumps(line), flush=True)
            finally:
                server.terminate()
                server.wait()
                if redis_proc is not None:
                    redis_proc.terminate()
                    redis_proc.wait()
    python = sys.version.split()[0]
    print(f"\nmedians of {args.runs} run(s), {n} messages of {size} B, Python {python}")
    medians = {r: statistics.median(v) for r, v in rates.items() if v}
    for r, m in medians.items():
        print(f"{r:<10} {m:>12.0f} msgs/s")
    if "client" in medians:
        for ref in ["asyncio", "redis-py"]:
            if ref in medians:
                ratio = medians["client"] / medians[ref]
                print(f"Client.recv vs {ref}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
