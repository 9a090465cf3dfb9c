"""Trust over real HTTPS: the listener and its certificate, what untrusted clients can reach, trust tokens and the
trust store (/1.0/certificates). Clients are Python's ssl with self-signed certificates made by the openssl CLI."""
import base64
import datetime
import hashlib
import http.client
import json
import os
import socket
import ssl
import stat
import subprocess
import time

import pytest

from conftest import SANITIZED, free_port

FORBIDDEN = "Forbidden: client certificate not trusted"


# --- client certificates -------------------------------------------------------------------------------------------
class ClientCert:
    """A self-signed EC P-384 client certificate (clientAuth), like the one incus makes for itself."""

    def __init__(self, directory, name):
        self.cert = os.path.join(directory, f"{name}.crt")
        self.key = os.path.join(directory, f"{name}.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1",
                        "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "30", "-subj", f"/CN={name}",
                        "-addext", "extendedKeyUsage=clientAuth", "-addext", "keyUsage=digitalSignature"],
                       check=True, capture_output=True)
        with open(self.cert) as f:
            self.pem = f.read()
        self.der = ssl.PEM_cert_to_DER_cert(self.pem)
        self.fingerprint = hashlib.sha256(self.der).hexdigest()


@pytest.fixture(scope="session")
def certs(workdir):
    directory = os.path.join(workdir, "client-certs")
    os.makedirs(directory, exist_ok=True)
    return [ClientCert(directory, f"client{i}") for i in range(4)]


# --- an HTTPS client pinned to the server's certificate ------------------------------------------------------------
class Https:
    def __init__(self, server, cert=None, port=None):
        self.server = server
        self.port = port or server.https_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # The server certificate is the trust anchor and names 127.0.0.1: full verification, hostname included.
        self.context.load_verify_locations(os.path.join(server.dir, "server.crt"))
        if cert is not None:
            self.context.load_cert_chain(cert.cert, cert.key)
        self.conn = None

    def connection(self):
        if self.conn is None:
            self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=30)
        return self.conn

    def request(self, method, path, body=None, headers=None, keep_alive=False):
        """One request; returns (status, parsed envelope or bytes, response headers)."""
        conn = self.connection()
        data = None
        hdrs = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        if not keep_alive:
            conn.close()
            self.conn = None
        try:
            return resp.status, json.loads(payload), resp.headers
        except ValueError:
            return resp.status, payload, resp.headers

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def auth(self):
        status, envelope, _ = self.get("/1.0")
        assert status == 200, envelope
        return envelope["metadata"]["auth"]

    def peer_der(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
            with self.context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                return tls.getpeercert(binary_form=True)


def refused(port):
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex(("127.0.0.1", port)) != 0


def environment(server):
    return server.call("GET", "/1.0")["environment"]


def trusted_fingerprints(server):
    return {c["fingerprint"] for c in server.call("GET", "/1.0/certificates?recursion=1")}


def create_token(server, name="laptop"):
    """POST a token request; returns (operation id, operation metadata)."""
    status, envelope = server.api("POST", "/1.0/certificates", {"name": name, "type": "client", "token": True})
    assert status == 202 and envelope["type"] == "async", envelope
    op = envelope["metadata"]
    assert op["class"] == "token" and op["status"] == "Running", op
    return op["id"], op["metadata"]


def redeem(server, cert, secret):
    status, envelope, _ = Https(server, cert).request("POST", "/1.0/certificates",
                                                      {"type": "client", "trust_token": secret})
    return status, envelope


def operation(server, op_id):
    return server.call("GET", f"/1.0/operations/{op_id}")


def incus_token(meta):
    """What `incus config trust add` prints: base64 of this JSON (Incus's api.CertificateAddToken)."""
    token = {"client_name": meta["request"]["name"], "fingerprint": meta["fingerprint"],
             "addresses": meta["addresses"], "secret": meta["secret"], "expires_at": meta["expiresAt"]}
    return base64.b64encode(json.dumps(token).encode()).decode()


def parse_time(text):
    # Go's RFC 3339 in UTC with nanoseconds, which Python does not read; token expiries are whole seconds.
    whole_seconds = text.rstrip("Z").partition(".")[0]
    return datetime.datetime.fromisoformat(whole_seconds).replace(tzinfo=datetime.timezone.utc)


# --- the listener --------------------------------------------------------------------------------------------------
def test_https_listener_and_server_certificate(server, certs):
    s = server
    crt, key = os.path.join(s.dir, "server.crt"), os.path.join(s.dir, "server.key")
    # Generated at first start, before any HTTPS: the key is root's alone.
    assert os.path.exists(crt) and stat.S_IMODE(os.stat(key).st_mode) == 0o600
    text = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-text"], capture_output=True, text=True,
                          check=True).stdout
    assert "P-384" in text and "TLS Web Server Authentication" in text and "IP Address:127.0.0.1" in text
    assert "core.https_address" not in s.call("GET", "/1.0")["config"]
    assert environment(s)["addresses"] == []

    port = s.listen_https()
    assert s.call("GET", "/1.0")["config"]["core.https_address"] == f"127.0.0.1:{port}"
    env = environment(s)
    assert env["addresses"] == [f"127.0.0.1:{port}"]
    with open(crt) as f:
        crt_der = ssl.PEM_cert_to_DER_cert(f.read())
    assert env["certificate_fingerprint"] == hashlib.sha256(crt_der).hexdigest()
    # The certificate served is server.crt (the handshake verified against it, hostname included).
    assert Https(s).peer_der() == crt_der

    # The server asks every client for a certificate (TLS CertificateRequest) ...
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-msg"], input=b"",
                         capture_output=True, timeout=30).stdout.decode(errors="replace")
    assert "CertificateRequest" in out, out[-3000:]
    # ... and takes self-signed ones (the handshake succeeds); an unknown one is simply untrusted.
    assert Https(s, certs[0]).auth() == "untrusted"
    assert Https(s).auth() == "untrusted"


def test_tls_versions_and_session_resumption(server, certs):
    s = server
    port = s.listen_https()
    # TLS 1.2 and 1.3 only, as Incus (1.0 and 1.1 are deprecated, RFC 8996).
    for version, ok in (("-tls1", False), ("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)):
        proc = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", version, "-cipher",
                               "ALL:@SECLEVEL=0"], input=b"", capture_output=True, timeout=30)
        assert (proc.returncode == 0) == ok, (version, proc.stdout[-2000:])

    # A resumed TLS session would carry no client certificate through GIO and the client would look untrusted,
    # so ferry issues no session tickets: a client reconnecting with its last session gets a full handshake
    # and is still trusted.
    s.call("POST", "/1.0/certificates", {"type": "client", "name": "resumer", "certificate": certs[3].pem})
    client = Https(s, certs[3])
    session = None
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client.context.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls:
                tls.sendall(b"GET /1.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
                assert not tls.session_reused
                session = tls.session
        body = json.loads(data.partition(b"\r\n\r\n")[2])
        assert body["metadata"]["auth"] == "trusted", body


def test_https_address_moves_and_bad_values_change_nothing(server):
    s = server
    old = s.listen_https()
    new = free_port()
    s.call("PATCH", "/1.0", {"config": {"core.https_address": f"127.0.0.1:{new}"}})
    assert Https(s, port=new).auth() == "untrusted"
    assert refused(old)
    s.https_port = new

    bad = ["nonsense", "256.1.1.1:1", "127.0.0.1:0", "127.0.0.1:99999", ":abc", ":0", "127.0.0.1:-1",
           "localhost:8443", "[::1:8443"]
    for value in bad:
        s.expect_error("PATCH", "/1.0", {"config": {"core.https_address": value}}, status=400,
                       contains="core.https_address")
        s.expect_error("PUT", "/1.0", {"config": {"core.https_address": value}}, status=400)
        assert s.call("GET", "/1.0")["config"]["core.https_address"] == f"127.0.0.1:{new}", value
        assert Https(s).auth() == "untrusted", f"listener gone after {value!r}"

    # Setting the same address again is a no-op that keeps the listener.
    s.call("PATCH", "/1.0", {"config": {"core.https_address": f"127.0.0.1:{new}"}})
    assert Https(s).auth() == "untrusted"

    # Unsetting it stops HTTPS.
    s.call("PATCH", "/1.0", {"config": {"core.https_address": ""}})
    assert refused(new)
    assert "core.https_address" not in s.call("GET", "/1.0")["config"]
    assert environment(s)["addresses"] == []


def test_https_address_in_use_changes_nothing(server):
    s = server
    port = s.listen_https()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        s.expect_error("PATCH", "/1.0", {"config": {"core.https_address": f"127.0.0.1:{taken}"}}, status=400,
                       contains="address already in use")
        assert s.call("GET", "/1.0")["config"]["core.https_address"] == f"127.0.0.1:{port}"
        assert Https(s).auth() == "untrusted"


def test_wildcard_and_default_port_addresses(server):
    s = server
    port = free_port()
    s.call("PATCH", "/1.0", {"config": {"core.https_address": f"0.0.0.0:{port}"}})
    addresses = environment(s)["addresses"]
    # The host's own IPv4 addresses (never the wildcard itself), loopback last.
    assert addresses[-1] == f"127.0.0.1:{port}", addresses
    assert all(a.endswith(f":{port}") and not a.startswith(("0.0.0.0", "[")) for a in addresses), addresses
    assert Https(s, port=port).auth() == "untrusted"
    # A bare IP listens on Incus's default port, and clients are told which.
    if bindable("127.0.0.2", 8443):
        s.call("PATCH", "/1.0", {"config": {"core.https_address": "127.0.0.2"}})
        assert environment(s)["addresses"] == ["127.0.0.2:8443"]
        with socket.create_connection(("127.0.0.2", 8443), timeout=10):
            pass
        assert refused(port)
    if ipv6_loopback():
        s.call("PATCH", "/1.0", {"config": {"core.https_address": f"[::1]:{port}"}})
        assert environment(s)["addresses"] == [f"[::1]:{port}"]
    s.call("PATCH", "/1.0", {"config": {"core.https_address": ""}})


def bindable(host, port):
    try:
        with socket.socket() as probe:
            probe.bind((host, port))
        return True
    except OSError:
        return False


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_restart_keeps_address_certificate_trust_and_tokens(server, certs):
    s = server
    port = s.listen_https()
    fingerprint = environment(s)["certificate_fingerprint"]
    _, meta = create_token(s, "before-restart")
    status, envelope = redeem(s, certs[0], meta["secret"])
    assert status == 201, envelope
    _, meta = create_token(s, "pending")

    s.stop()
    assert refused(port)
    s.start()
    assert s.call("GET", "/1.0")["config"]["core.https_address"] == f"127.0.0.1:{port}"
    assert environment(s)["certificate_fingerprint"] == fingerprint
    assert Https(s, certs[0]).auth() == "trusted"
    # The pending token is back as a running token operation (a new id: operations do not outlive the daemon).
    running = s.call("GET", "/1.0/operations?recursion=1").get("running", [])
    tokens = [op for op in running if op["class"] == "token"]
    assert [op["metadata"]["secret"] for op in tokens] == [meta["secret"]], running
    assert redeem(s, certs[1], meta["secret"])[0] == 201
    assert Https(s, certs[1]).auth() == "trusted"
    names = {c["fingerprint"]: c["name"] for c in s.call("GET", "/1.0/certificates?recursion=1")}
    assert names == {certs[0].fingerprint: "before-restart", certs[1].fingerprint: "pending"}
    assert operation(s, tokens[0]["id"])["status"] == "Success"


# --- untrusted clients ---------------------------------------------------------------------------------------------
def test_untrusted_clients_reach_only_server_info(server, certs):
    s = server
    s.listen_https()
    op_id, meta = create_token(s)  # a real operation id, to show it is not reachable either
    for cert in (None, certs[0]):
        client = Https(s, cert)
        status, envelope, headers = client.get("/1.0")
        assert status == 200
        info = envelope["metadata"]
        assert info["auth"] == "untrusted" and info["api_version"] == "1.0"
        for hidden in ("config", "environment", "auth_user_name", "auth_user_method"):
            assert hidden not in info, hidden
        assert headers.get("ETag") is None  # a hash of the config is still about the config

        requests = [
            ("GET", "/1.0/instances", None), ("POST", "/1.0/instances", {"name": "x"}),
            ("GET", "/1.0/instances/c1", None), ("GET", "/1.0/certificates", None),
            ("GET", "/1.0/certificates?recursion=1", None),
            ("GET", f"/1.0/certificates/{certs[0].fingerprint}", None),
            ("DELETE", f"/1.0/certificates/{certs[0].fingerprint}", None),
            ("PUT", "/1.0", {"config": {}}), ("PATCH", "/1.0", {"config": {"core.https_address": ""}}),
            ("GET", "/1.0/operations", None), ("GET", f"/1.0/operations/{op_id}", None),
            ("GET", f"/1.0/operations/{op_id}/wait?timeout=1", None), ("DELETE", f"/1.0/operations/{op_id}", None),
            ("GET", "/1.0/events", None), ("GET", "/1.0/images", None), ("GET", "/1.0/profiles/default", None),
            ("GET", "/1.0/storage-pools", None), ("GET", "/1.0/projects", None),
            # Unknown paths and methods look exactly the same: no discovery of what exists.
            ("GET", "/1.0/nothing-here", None), ("GET", "/2.0", None), ("DELETE", "/1.0", None),
            ("POST", "/1.0/operations", {}),
            # The certificates endpoint without a token: no adding one's own (or anyone's) certificate.
            ("POST", "/1.0/certificates", {"type": "client", "name": "sneaky"}),
            ("POST", "/1.0/certificates", {"type": "client", "name": "sneaky", "certificate": certs[1].pem}),
            ("POST", "/1.0/certificates", {"type": "client", "token": True, "name": "sneaky"}),
            ("POST", "/1.0/certificates", None),
        ]
        answers = set()
        for method, path, body in requests:
            status, envelope, _ = client.request(method, path, body=body)
            assert status == 403, (method, path, status, envelope)
            answers.add((envelope["error_code"], envelope["error"]))
        assert answers == {(403, FORBIDDEN)}

        # The events websocket handshake is refused too.
        status, envelope, _ = client.get("/1.0/events", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()})
        assert status == 403, envelope

    # Nothing changed: no certificate added, the token still pending, the config intact.
    assert trusted_fingerprints(s) == set()
    assert operation(s, op_id)["status"] == "Running"
    assert s.call("GET", "/1.0")["config"]["core.https_address"] == f"127.0.0.1:{s.https_port}"


def test_untrusted_bodies_are_bounded(server):
    s = server
    s.listen_https()
    pid = s.proc.pid
    before = rss_kib(pid)
    # 64 MiB to an endpoint an untrusted client may use, and to an upload endpoint: refused without being kept.
    big = b"{" + b" " * (64 << 20) + b"}"
    for path, content_type in (("/1.0/certificates", "application/json"),
                               ("/1.0/images", "application/octet-stream")):
        status, envelope, _ = Https(s).request("POST", path, body=big, headers={"Content-Type": content_type})
        assert status == 413, envelope
    if not SANITIZED:  # ASan's quarantine keeps freed memory resident
        assert rss_kib(pid) - before < 32 * 1024
    assert os.listdir(os.path.join(s.dir, "uploads")) == []
    assert Https(s).auth() == "untrusted"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


# --- trust tokens --------------------------------------------------------------------------------------------------
def test_token_metadata_and_redeem(server, certs):
    s = server
    port = s.listen_https()
    fingerprint = environment(s)["certificate_fingerprint"]
    op_id, meta = create_token(s, "laptop")
    assert meta["request"]["name"] == "laptop"
    assert len(meta["secret"]) == 64 and int(meta["secret"], 16) >= 0
    assert meta["fingerprint"] == fingerprint
    assert meta["addresses"] == [f"127.0.0.1:{port}"]
    # No core.remote_token_expiry: ferry's default of a day (decision 0003).
    lifetime = parse_time(meta["expiresAt"]) - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(hours=23, minutes=59) < lifetime <= datetime.timedelta(hours=24, seconds=2)
    running = s.call("GET", "/1.0/operations").get("running", [])
    assert f"/1.0/operations/{op_id}" in running

    # Wrong secrets and a client without a certificate get nothing, and do not burn the token.
    for secret in ("0" * 64, meta["secret"][:-1] + ("0" if meta["secret"][-1] != "0" else "1"), meta["secret"][:32],
                   ""):
        status, envelope = redeem(s, certs[0], secret)
        assert status == 403, envelope
    status, envelope, _ = Https(s).request("POST", "/1.0/certificates",
                                           {"type": "client", "trust_token": meta["secret"]})
    assert status == 400 and "certificate" in envelope["error"], envelope
    assert trusted_fingerprints(s) == set()
    assert operation(s, op_id)["status"] == "Running"

    status, envelope = redeem(s, certs[0], meta["secret"])
    assert status == 201, envelope
    client = Https(s, certs[0])
    status, envelope, _ = client.get("/1.0")
    info = envelope["metadata"]
    assert info["auth"] == "trusted" and info["auth_user_method"] == "tls"
    assert info["auth_user_name"] == certs[0].fingerprint
    assert info["environment"]["certificate_fingerprint"] == fingerprint
    assert client.get("/1.0/instances")[0] == 200
    (cert,) = s.call("GET", "/1.0/certificates?recursion=1")
    assert (cert["fingerprint"], cert["name"], cert["type"]) == (certs[0].fingerprint, "laptop", "client")
    # The token operation ends when the token is used.
    done = s.call("GET", f"/1.0/operations/{op_id}/wait?timeout=10")
    assert done["status"] == "Success", done

    # Single use: the same secret with another certificate is refused and adds nothing.
    status, envelope = redeem(s, certs[1], meta["secret"])
    assert status == 403, envelope
    assert Https(s, certs[1]).auth() == "untrusted"
    assert trusted_fingerprints(s) == {certs[0].fingerprint}


def test_token_redeemed_in_incus_form(server, certs):
    """The incus client sends the whole printed token (base64 JSON), not only the secret."""
    s = server
    s.listen_https()
    op_id, meta = create_token(s, "incus-client")
    token = incus_token(meta)
    decoded = json.loads(base64.b64decode(token))
    assert decoded["secret"] == meta["secret"] and decoded["client_name"] == "incus-client"
    status, envelope = redeem(s, certs[2], token)
    assert status == 201, envelope
    assert Https(s, certs[2]).auth() == "trusted"
    assert s.call("GET", f"/1.0/operations/{op_id}/wait?timeout=10")["status"] == "Success"


def test_cancelling_token_operation_revokes_it(server, certs):
    s = server
    s.listen_https()
    op_id, meta = create_token(s)
    s.call("DELETE", f"/1.0/operations/{op_id}")
    assert operation(s, op_id)["status"] == "Cancelled"
    status, envelope = redeem(s, certs[0], meta["secret"])
    assert status == 403, envelope
    assert trusted_fingerprints(s) == set()


def test_token_expiry(server, certs):
    s = server
    s.listen_https()
    # Incus's expiry expressions: <count><unit>, and M is minutes (m would be months).
    for value, expected in (("15M", datetime.timedelta(minutes=15)), ("2H", datetime.timedelta(hours=2)),
                            ("1d", datetime.timedelta(days=1)), ("1w", datetime.timedelta(weeks=1))):
        s.call("PATCH", "/1.0", {"config": {"core.remote_token_expiry": value}})
        op_id, meta = create_token(s, "later")
        lifetime = parse_time(meta["expiresAt"]) - datetime.datetime.now(datetime.timezone.utc)
        assert expected - datetime.timedelta(seconds=5) < lifetime <= expected + datetime.timedelta(seconds=2), value
        s.call("DELETE", f"/1.0/operations/{op_id}")
    for value in ("zzz", "1x", "-1S", "1", "S", "1 S", "1SS", "99999y", "99999999999S"):
        s.expect_error("PATCH", "/1.0", {"config": {"core.remote_token_expiry": value}}, status=400,
                       contains="expiry")
    assert s.call("GET", "/1.0")["config"]["core.remote_token_expiry"] == "1w"

    s.call("PATCH", "/1.0", {"config": {"core.remote_token_expiry": "1s"}})
    _, meta = create_token(s, "short-lived")
    lifetime = parse_time(meta["expiresAt"]) - datetime.datetime.now(datetime.timezone.utc)
    assert lifetime <= datetime.timedelta(seconds=2)
    time.sleep(2.1)
    status, envelope = redeem(s, certs[0], meta["secret"])
    assert status == 403 and "expired" in envelope["error"], envelope
    assert trusted_fingerprints(s) == set()


def test_token_requests_that_are_refused(server):
    s = server
    # No HTTPS: a token would name no address to reach us on.
    s.expect_error("POST", "/1.0/certificates", {"name": "laptop", "type": "client", "token": True}, status=400,
                   contains="core.https_address")
    s.listen_https()
    s.expect_error("POST", "/1.0/certificates", {"type": "client", "token": True}, status=400, contains="name")
    s.expect_error("POST", "/1.0/certificates", {"name": "a/b", "type": "client", "token": True}, status=400)
    # ferry does not enforce project restrictions, so it must not pretend to.
    s.expect_error("POST", "/1.0/certificates", {"name": "r", "type": "client", "token": True, "restricted": True},
                   status=400, contains="restricted")
    assert s.call("GET", "/1.0/operations").get("running", []) == []


# --- the trust store -----------------------------------------------------------------------------------------------
def test_certificates_api(server, certs):
    s = server
    s.listen_https()
    a, b, c = certs[0], certs[1], certs[2]
    s.call("POST", "/1.0/certificates", {"type": "client", "name": "pem-client", "certificate": a.pem})
    s.expect_error("POST", "/1.0/certificates", {"type": "client", "name": "again", "certificate": a.pem},
                   status=409)
    der_b64 = base64.b64encode(b.der).decode()
    s.call("POST", "/1.0/certificates", {"type": "client", "name": "der-client", "certificate": der_b64})
    for garbage in ("not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                    base64.b64encode(b"\x30\x03\x02\x01\x00").decode()):
        s.expect_error("POST", "/1.0/certificates", {"type": "client", "name": "bad", "certificate": garbage},
                       status=400)
    s.expect_error("POST", "/1.0/certificates", {"type": "server", "name": "srv", "certificate": c.pem},
                   status=400)
    s.expect_error("POST", "/1.0/certificates", {"type": "client", "name": "r", "certificate": c.pem,
                                                 "restricted": True}, status=400, contains="restricted")

    urls = s.call("GET", "/1.0/certificates")
    assert sorted(urls) == sorted(f"/1.0/certificates/{x.fingerprint}" for x in (a, b))
    full = {x["fingerprint"]: x for x in s.call("GET", "/1.0/certificates?recursion=1")}
    assert set(full) == {a.fingerprint, b.fingerprint}
    assert full[a.fingerprint]["name"] == "pem-client" and full[b.fingerprint]["name"] == "der-client"
    assert ssl.PEM_cert_to_DER_cert(full[b.fingerprint]["certificate"]) == b.der
    one = s.call("GET", f"/1.0/certificates/{a.fingerprint[:12]}")
    assert one["fingerprint"] == a.fingerprint and one["type"] == "client"
    s.expect_error("GET", "/1.0/certificates/" + "f" * 64, status=404)
    s.call("PATCH", f"/1.0/certificates/{a.fingerprint[:12]}", {"name": "renamed"})
    assert s.call("GET", f"/1.0/certificates/{a.fingerprint}")["name"] == "renamed"
    s.expect_error("PUT", f"/1.0/certificates/{a.fingerprint}", {"name": "renamed", "restricted": True},
                   status=400, contains="restricted")

    # A trusted HTTPS client can add another one (base64 DER, as incus sends it).
    client_a = Https(s, a)
    status, envelope, _ = client_a.request("POST", "/1.0/certificates", {
        "type": "client", "name": "added-over-https", "certificate": base64.b64encode(c.der).decode()})
    assert status == 201, envelope
    assert Https(s, c).auth() == "trusted"

    # Deleting a certificate takes trust away at once, even on a connection that is already open.
    assert client_a.get("/1.0/instances", keep_alive=True)[0] == 200
    s.call("DELETE", f"/1.0/certificates/{a.fingerprint[:16]}")
    status, envelope, _ = client_a.get("/1.0/instances", keep_alive=True)
    assert status == 403, envelope
    assert client_a.get("/1.0")[1]["metadata"]["auth"] == "untrusted"
    s.expect_error("DELETE", f"/1.0/certificates/{a.fingerprint}", status=404)
    assert trusted_fingerprints(s) == {b.fingerprint, c.fingerprint}
    assert Https(s, b).auth() == "trusted"
