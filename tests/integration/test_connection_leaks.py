"""Connections that clients drop must not stay open in the daemon: kept-alive HTTP connections, event and exec
websockets, and upgrades the client abandons before the 101 is out. Each test counts the daemon's open sockets
(/proc/<pid>/fd) before and after, and waits (generously) for the count to come back to where it was."""
import base64
import http.client
import os
import socket
import ssl
import struct
import time

from test_daemon import https_ws, unix_ws

SETTLE_SECONDS = 30


def open_sockets(server):
    count = 0
    fd_dir = f"/proc/{server.proc.pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)).startswith("socket:"):
                count += 1
        except OSError:  # closed while we looked
            pass
    return count


def assert_back_to(server, baseline):
    deadline = time.monotonic() + SETTLE_SECONDS
    count = open_sockets(server)
    while count > baseline and time.monotonic() < deadline:
        time.sleep(0.2)
        count = open_sockets(server)
    assert count <= baseline, f"ferryd keeps {count - baseline} dropped connection(s) open:\n" + \
        os.popen(f"ls -l /proc/{server.proc.pid}/fd; ss -tanpx | grep 'pid={server.proc.pid},'").read()


def reset(sock):
    """Close with a RST rather than a FIN: the rudest way a client can go."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def tls_context(server):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(os.path.join(server.dir, "server.crt"))
    return context


def drop_mid_upgrade(server, path):
    """Send a websocket upgrade request and go away before reading the answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(server.socket_path)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: ferryd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    reset(sock)


def test_kept_alive_requests_are_closed(server):
    s = server
    s.listen_https()
    baseline = open_sockets(s)
    for _ in range(5):
        # Python's clients keep the connection alive after each response, then close it.
        conn = http.client.HTTPSConnection("127.0.0.1", s.https_port, context=tls_context(s), timeout=30)
        for _ in range(2):
            conn.request("GET", "/1.0")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        conn.close()
        assert s.call("GET", "/1.0")["api_version"]
    # The real CLI, over HTTPS with a trusted certificate and over the unix socket.
    s.ferry("list")
    s.ferry("info")
    assert_back_to(s, baseline)


def test_event_websockets_dropped(server):
    s = server
    s.listen_https()
    baseline = open_sockets(s)
    for _ in range(3):
        status, ws = unix_ws(s, "/1.0/events")
        assert status == 101
        ws.close()  # a close frame, then the connection
        status, ws = unix_ws(s, "/1.0/events?type=lifecycle")
        assert status == 101
        ws.sock.close()  # no close frame
        status, ws = unix_ws(s, "/1.0/events")
        assert status == 101
        reset(ws.sock)
        drop_mid_upgrade(s, "/1.0/events")
        # An untrusted HTTPS client is refused (and must not leave its connection behind either).
        status, error = https_ws(s, "/1.0/events")
        assert status == 403, error
    # The daemon still delivers events to whoever listens.
    status, ws = unix_ws(s, "/1.0/events?type=lifecycle")
    assert status == 101
    s.call("PATCH", "/1.0/profiles/default", {"description": "after the drops"})
    assert ws.recv_json()["metadata"]["action"] == "profile-updated"
    ws.close()
    assert_back_to(s, baseline)


def test_exec_websockets_dropped(ready_server):
    s = ready_server
    s.launch("c1")
    baseline = open_sockets(s)
    for interactive in (False, True):
        status, envelope = s.api("POST", "/1.0/instances/c1/exec", {
            "command": ["sleep", "1"], "wait-for-websocket": True, "interactive": interactive,
            "environment": {}})
        assert status == 202, envelope
        op = envelope["metadata"]
        fds = op["metadata"]["fds"]
        url = f"/1.0/operations/{op['id']}/websocket"
        names = sorted(fds)
        # One channel is abandoned mid-upgrade: the command never gets all its channels and is given up.
        drop_mid_upgrade(s, f"{url}?secret={fds[names[0]]}")
        sockets = []
        for name in names[1:]:
            status, ws = unix_ws(s, f"{url}?secret={fds[name]}")
            assert status == 101
            sockets.append(ws)
        reset(sockets[0].sock)
        for ws in sockets[1:]:
            ws.sock.close()
    # A complete exec whose client goes away as soon as the command is started.
    status, envelope = s.api("POST", "/1.0/instances/c1/exec", {
        "command": ["sleep", "1"], "wait-for-websocket": True, "interactive": False, "environment": {}})
    op = envelope["metadata"]
    url = f"/1.0/operations/{op['id']}/websocket"
    sockets = [unix_ws(s, f"{url}?secret={secret}")[1] for secret in op["metadata"]["fds"].values()]
    for ws in sockets:
        ws.sock.close()
    done = s.call("GET", f"/1.0/operations/{op['id']}/wait?timeout=60")
    assert done["status"] == "Success", done
    assert_back_to(s, baseline)
