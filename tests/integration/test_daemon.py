"""The daemon itself: command line, start and stop, its database, one daemon per directory, request limits, the
events websocket and operation websocket secrets."""
import base64
import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import ssl
import struct
import subprocess
import time

from conftest import FERRYD


def run_ferryd(*args, timeout=30):
    return subprocess.run([FERRYD, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# --- a websocket client, by hand (RFC 6455), over the unix socket or TLS ------------------------------------------
class WebSocket:
    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def _read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed by the server")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv(self):
        """Next data frame as (opcode, payload); answers pings. Opcode 8 is the server's close."""
        while True:
            b0, b1 = self._read(2)
            length = b1 & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 9:
                self.send(10, payload)
                continue
            if opcode == 10:
                continue
            return opcode, payload

    def recv_json(self):
        opcode, payload = self.recv()
        assert opcode == 1, (opcode, payload)
        return json.loads(payload)

    def send(self, opcode, payload=b""):
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
        self.sock.sendall(header + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))

    def close(self):
        try:
            self.send(8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


def ws_connect(sock, path, host="ferryd"):
    """Websocket handshake on a connected socket. Returns (101, WebSocket) or (status, error envelope)."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed during handshake: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if status == 101:
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        assert headers["sec-websocket-accept"] == accept.decode()
        ws = WebSocket(sock)
        ws.buffer = rest
        return status, ws
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += sock.recv(65536)
    sock.close()
    return status, json.loads(rest[:length])


def unix_ws(server, path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(server.socket_path)
    return ws_connect(sock, path)


def https_ws(server, path):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(os.path.join(server.dir, "server.crt"))
    raw = socket.create_connection(("127.0.0.1", server.https_port), timeout=30)
    return ws_connect(context.wrap_socket(raw, server_hostname="127.0.0.1"), path, host="127.0.0.1")


def next_event(ws, want):
    """The first event for which want(event) holds (others are skipped)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        event = ws.recv_json()
        if want(event):
            return event
    raise AssertionError("event not seen")


# --- command line --------------------------------------------------------------------------------------------------
def test_version():
    proc = run_ferryd("--version")
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*\n", proc.stdout), proc.stdout


def test_bad_command_lines(tmp_path):
    directory = str(tmp_path / "never-started")
    proc = run_ferryd("--dir", directory, "--log-level", "nonsense")
    assert proc.returncode == 2
    assert 'Error: Invalid log level "nonsense"' in proc.stderr and "debug" in proc.stderr, proc.stderr
    proc = run_ferryd("--dir", directory, "--no-such-option")
    assert proc.returncode == 2 and proc.stderr.startswith("Error:"), proc.stderr
    proc = run_ferryd("--dir", directory, "frobnicate")
    assert proc.returncode == 2 and "frobnicate" in proc.stderr, proc.stderr
    assert not os.path.exists(directory)


def test_waitready_without_daemon(tmp_path):
    started = time.monotonic()
    proc = run_ferryd("waitready", "--dir", str(tmp_path), "--timeout", "1")
    assert proc.returncode == 1
    assert "did not become ready within 1 seconds" in proc.stderr, proc.stderr
    assert time.monotonic() - started < 10


# --- lifecycle -----------------------------------------------------------------------------------------------------
def test_sigterm_stops_cleanly(server):
    s = server
    port = s.listen_https()
    proc = s.proc
    s.stop(signal.SIGTERM)  # (and, under sanitizers, the harness checks the report)
    assert proc.returncode == 0
    assert not os.path.exists(s.socket_path)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert "ferryd stopped" in s.log()
    # The directory is free again for the next daemon.
    s.start()
    assert s.call("GET", "/1.0")["config"]["core.https_address"] == f"127.0.0.1:{port}"


def test_second_daemon_on_the_same_directory_is_refused(server):
    s = server
    first = s.call("GET", "/1.0")["environment"]["server_pid"]
    proc = run_ferryd("--dir", s.dir, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert "already running" in proc.stderr, proc.stderr
    # The first daemon still owns the socket.
    assert os.path.exists(s.socket_path)
    assert s.call("GET", "/1.0")["environment"]["server_pid"] == first == s.proc.pid
    assert s.proc.poll() is None


def test_database_schema_version(server):
    s = server
    db = os.path.join(s.dir, "database", "ferry.db")
    s.stop()
    with sqlite3.connect(db) as conn:
        latest = conn.execute("PRAGMA user_version").fetchone()[0]
    assert latest >= 1
    # Starting again applies nothing new.
    s.start()
    s.stop()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest
        conn.execute(f"PRAGMA user_version = {latest + 1}")
    # A database from a newer ferryd is left alone, with a clear error.
    proc = run_ferryd("--dir", s.dir)
    assert proc.returncode == 1
    assert f"Database schema version {latest + 1} is newer than this ferryd supports ({latest})" in proc.stderr, \
        proc.stderr
    assert not os.path.exists(s.socket_path)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest + 1
        conn.execute(f"PRAGMA user_version = {latest}")
    s.start()
    assert s.call("GET", "/1.0/profiles/default")["name"] == "default"


# --- requests ------------------------------------------------------------------------------------------------------
def test_request_limits_and_errors(server):
    s = server
    big = {"description": "x" * (5 << 20)}
    s.expect_error("PUT", "/1.0/profiles/default", big, status=413, contains="too large")
    s.expect_error("DELETE", "/1.0", status=405)
    s.expect_error("POST", "/1.0/events", status=405)
    s.expect_error("GET", "/1.0/no-such-thing", status=404)
    s.expect_error("PATCH", "/1.0/profiles/default", raw=b"{not json", status=400)
    s.expect_error("PATCH", "/1.0/profiles/default", body="[1, 2]", status=400, contains="object")
    # None of it hurt the daemon.
    assert s.call("GET", "/1.0/profiles/default")["name"] == "default"


# --- events --------------------------------------------------------------------------------------------------------
def test_events_websocket(server):
    s = server
    s.listen_https()
    status, everything = unix_ws(s, "/1.0/events")
    assert status == 101, everything
    status, lifecycle_only = unix_ws(s, "/1.0/events?type=lifecycle")
    assert status == 101, lifecycle_only
    try:
        # An operation (a trust token) is announced as it runs ...
        created = s.api("POST", "/1.0/certificates", {"name": "ev", "type": "client", "token": True})[1]
        op_id = created["metadata"]["id"]
        event = next_event(everything, lambda e: e["type"] == "operation")
        assert event["metadata"]["id"] == op_id and event["metadata"]["class"] == "token"
        assert event["metadata"]["status"] == "Running" and event["project"] == "default"
        s.call("DELETE", f"/1.0/operations/{op_id}")
        event = next_event(everything, lambda e: e["type"] == "operation" and e["metadata"]["status"] != "Running")
        assert event["metadata"]["id"] == op_id and event["metadata"]["status"] == "Cancelled"

        # ... and a change to a profile is a lifecycle event.
        s.call("PATCH", "/1.0/profiles/default", {"description": "changed"})
        event = next_event(everything, lambda e: e["type"] == "lifecycle")
        assert event["metadata"]["action"] == "profile-updated"
        assert event["metadata"]["source"] == "/1.0/profiles/default"
        # Events are delivered in order, so the filtered stream's first event shows the filter works.
        event = lifecycle_only.recv_json()
        assert event["type"] == "lifecycle" and event["metadata"]["action"] == "profile-updated", event
    finally:
        everything.close()
        lifecycle_only.close()
    # A closed subscriber is forgotten; the daemon carries on.
    s.call("PATCH", "/1.0/profiles/default", {"description": "again"})
    assert s.call("GET", "/1.0/profiles/default")["description"] == "again"


# --- operation websockets ------------------------------------------------------------------------------------------
def test_operation_websocket_secrets(ready_server):
    s = ready_server
    s.listen_https()
    s.launch("c1")
    status, envelope = s.api("POST", "/1.0/instances/c1/exec", {
        "command": ["sh", "-c", "echo hello-$((6*7))"], "wait-for-websocket": True, "interactive": False,
        "environment": {}})
    assert status == 202, envelope
    op = envelope["metadata"]
    fds = op["metadata"]["fds"]
    assert set(fds) == {"0", "1", "2", "control"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", secret) for secret in fds.values())
    url = f"/1.0/operations/{op['id']}/websocket"

    status, error = unix_ws(s, url)
    assert status == 400 and "secret" in error["error"], error
    status, error = unix_ws(s, f"{url}?secret=" + "0" * 64)
    assert status == 403, error
    status, error = unix_ws(s, f"{url}?secret=" + fds["1"][:-2])
    assert status == 403, error

    sockets = {}
    try:
        status, sockets["0"] = unix_ws(s, f"{url}?secret={fds['0']}")
        assert status == 101
        # A secret is good for one connection.
        status, error = unix_ws(s, f"{url}?secret={fds['0']}")
        assert status == 403, error
        # The secret is the credential: an HTTPS client without a trusted certificate may use it (migration).
        status, sockets["control"] = https_ws(s, f"{url}?secret={fds['control']}")
        assert status == 101
        status, error = https_ws(s, f"{url}?secret={fds['control']}")
        assert status == 403, error
        for fd in ("1", "2"):
            status, sockets[fd] = unix_ws(s, f"{url}?secret={fds[fd]}")
            assert status == 101
        output = b""
        while True:
            opcode, payload = sockets["1"].recv()
            if opcode == 8 or (opcode in (1, 2) and payload == b""):
                break
            output += payload
        assert output == b"hello-42\n"
    finally:
        for ws in sockets.values():
            ws.close()
    done = s.call("GET", f"/1.0/operations/{op['id']}/wait?timeout=30")
    assert done["status"] == "Success" and done["metadata"]["return"] == 0, done
    # Used secrets stay used once the operation is over.
    status, error = unix_ws(s, f"{url}?secret={fds['1']}")
    assert status in (400, 403), error


def test_busy_https_port_at_start_keeps_unix_socket(server):
    """A saved HTTPS address whose port is taken must not keep the daemon down: the admin fixes it locally."""
    import socket as socketlib
    s = server
    port = s.listen_https()
    s.stop()
    with socketlib.socket() as busy:
        busy.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", port))
        busy.listen()
        s.start()
        assert s.call("GET", "/1.0")["config"]["core.https_address"] == f"127.0.0.1:{port}"
        assert "HTTPS listener not started" in s.log()
