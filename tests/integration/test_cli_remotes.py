"""`ferry remote` and `ferry config trust` between two real servers.

The client is on "another machine": its own FERRY_CONF (config.yml, client certificate, pinned server
certificates), and its `local` remote is a different server from the one it joins over HTTPS."""
import base64
import json
import os
import re
import subprocess

import pytest
import yaml

from ferry_harness import FERRY, free_port
from test_cli import fails, ok, snapshot_state


class Client:
    """The ferry CLI with a configuration of its own; `local` is the home server's socket."""

    def __init__(self, conf, home):
        self.conf = str(conf)
        self.home_dir = home.dir if home is not None else "/nonexistent"

    def env(self):
        env = dict(os.environ)
        env["FERRY_CONF"] = self.conf
        env["FERRY_DIR"] = self.home_dir
        return env

    def ferry(self, *args, check=True, input=None, timeout=180):
        proc = subprocess.run([FERRY, *args], env=self.env(), capture_output=True, text=True, input=input,
                              timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"ferry {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc

    def config(self):
        path = os.path.join(self.conf, "config.yml")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return yaml.safe_load(f)

    def remotes(self):
        config = self.config()
        return sorted((config or {}).get("remotes", {"local": None}))

    def server_cert(self, remote):
        return os.path.join(self.conf, "servercerts", f"{remote}.crt")


def new_token(server, name):
    out = ok(server, "config", "trust", "add", name)
    header, token, *rest = out.split("\n")
    assert header == f"Client {name} certificate add token:" and rest == [""], out
    return token


def decode(token):
    return json.loads(base64.b64decode(token))


def encode(fields):
    return base64.b64encode(json.dumps(fields).encode()).decode()


@pytest.fixture
def far(server_factory):
    """The server joined over HTTPS, with storage (and no image yet)."""
    srv = server_factory("far")
    srv.init_storage()
    srv.listen_https()
    return srv


@pytest.fixture
def home(server_factory):
    """The client's own local server."""
    srv = server_factory("home")
    srv.init_storage()
    return srv


@pytest.fixture
def client(home, tmp_path):
    return Client(tmp_path / "laptop", home)


def test_token_join_then_work_on_the_remote(far, home, client, busybox_image):
    token = new_token(far, "laptop")
    fields = decode(token)
    assert fields["client_name"] == "laptop" and len(fields["secret"]) >= 32
    assert fields["addresses"] == [f"127.0.0.1:{far.https_port}"]
    assert fields["fingerprint"] == far.call("GET", "/1.0")["environment"]["certificate_fingerprint"]
    assert [t["client_name"] for t in json.loads(ok(far, "config", "trust", "list-tokens", "-f", "json"))] == \
        ["laptop"]

    assert ok(client, "remote", "add", "far", token) == "Client certificate now trusted by server: far\n"
    remote = client.config()["remotes"]["far"]
    assert remote["addr"] == f"https://127.0.0.1:{far.https_port}" and remote["protocol"] == "incus"
    with open(client.server_cert("far")) as f, open(os.path.join(far.dir, "server.crt")) as g:
        assert f.read().strip() == g.read().strip()
    assert oct(os.stat(os.path.join(client.conf, "client.key")).st_mode & 0o777) == "0o600"
    # The token is used up; the client is in the trust store under the token's name.
    assert ok(far, "config", "trust", "list-tokens", "-f", "csv") == ""
    certs = far.call("GET", "/1.0/certificates?recursion=1")
    assert [(c["name"], c["type"]) for c in certs] == [("laptop", "client")]
    rows = [r.split(",") for r in ok(far, "config", "trust", "list", "-f", "csv").splitlines()]
    assert rows == [["laptop", "client", "", certs[0]["fingerprint"][:12], rows[0][4]]]

    listed = [r.split(",") for r in ok(client, "remote", "list", "-f", "csv").splitlines()]
    assert ["far", f"https://127.0.0.1:{far.https_port}", "incus", "tls", "NO", "NO", "NO"] in listed
    assert ["local (current)", "unix://", "incus", "file access", "NO", "YES", "NO"] in listed

    # Work on the remote: the image goes up over HTTPS, the instance is on far, not at home.
    assert ok(client, "list", "far:", "-f", "csv") == ""
    out = ok(client, "image", "import", busybox_image, "far:", "--alias", "busybox")
    assert out.startswith("Image imported with fingerprint: ")
    assert far.call("GET", "/1.0/images/aliases/busybox")["target"] == out.split()[-1]
    assert home.call("GET", "/1.0/images") == []
    assert ok(client, "launch", "far:busybox", "far:c1") == "Launching c1\n"
    assert far.call("GET", "/1.0/instances/c1")["status"] == "Running"
    assert home.call("GET", "/1.0/instances") == []
    assert ok(client, "list", "far:", "-f", "csv", "-c", "ns") == "c1,RUNNING\n"
    assert ok(client, "list", "-f", "csv", "-c", "n") == ""
    proc = client.ferry("exec", "far:c1", "--", "sh", "-c", "echo out; echo err >&2; exit 4", check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (4, "out\n", "err\n")
    assert ok(client, "exec", "far:c1", "--", "cat", input="through https\n") == "through https\n"
    inner = f"stty cols 90 rows 20; {FERRY} exec far:c1 -- sh -c 'tty; stty size; exit 6'"
    proc = subprocess.run(["script", "-qec", inner, "/dev/null"], env=client.env(), capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 6 and re.search(rb"/dev/pts/\d+\r\n20 90\r\n", proc.stdout), proc.stdout
    ok(client, "config", "set", "far:c1", "user.where=far")
    assert far.call("GET", "/1.0/instances/c1")["config"]["user.where"] == "far"
    ok(client, "snapshot", "create", "far:c1", "s0")
    assert "Status: RUNNING" in ok(client, "info", "far:c1")
    assert yaml.safe_load(ok(client, "info", "far:"))["auth"] == "trusted"
    fails(client, "launch", "busybox", "far:c2", contains="another remote")

    # switch / get-default: the remote becomes what no prefix means.
    assert ok(client, "remote", "get-default") == "local\n"
    assert ok(client, "remote", "switch", "far") == ""
    assert ok(client, "remote", "get-default") == "far\n"
    assert ok(client, "list", "-f", "csv", "-c", "n") == "c1\n"
    assert "far (current)" in ok(client, "remote", "list")
    fails(client, "remote", "remove", "far", contains="default remote")

    # rename carries the certificate and the default along.
    assert ok(client, "remote", "rename", "far", "faraway") == ""
    assert ok(client, "remote", "get-default") == "faraway\n"
    assert os.path.exists(client.server_cert("faraway")) and not os.path.exists(client.server_cert("far"))
    assert ok(client, "list", "faraway:", "-f", "csv", "-c", "n") == "c1\n"
    fails(client, "list", "far:", contains='The remote "far" doesn\'t exist')

    ok(client, "remote", "switch", "local")
    ok(client, "delete", "-f", "faraway:c1")
    assert far.call("GET", "/1.0/instances") == []
    assert ok(client, "remote", "remove", "faraway") == ""
    assert client.remotes() == ["local"]
    assert not os.path.exists(client.server_cert("faraway"))

    before = client.config()
    fails(client, "remote", "remove", "local", contains="static")
    fails(client, "remote", "rename", "local", "x", contains="static")
    fails(client, "remote", "remove", "nope", contains="nope")
    fails(client, "remote", "switch", "nope", contains="nope")
    fails(client, "remote", "rename", "nope", "x", contains="nope")
    fails(client, "remote", "add", "local", "unix://", contains="local")
    assert client.config() == before


def test_trust_remove_locks_the_client_out(far, client):
    token = new_token(far, "laptop")
    ok(client, "remote", "add", "far", token)
    ok(client, "list", "far:")
    shown = yaml.safe_load(ok(far, "config", "trust", "show", "laptop"))
    assert shown["name"] == "laptop" and shown["type"] == "client"
    assert ok(far, "config", "trust", "remove", "laptop") == ""
    assert far.call("GET", "/1.0/certificates") == []
    fails(client, "list", "far:", contains="Forbidden: client certificate not trusted")
    fails(client, "launch", "far:busybox", "far:c1", contains="not trusted")
    assert far.call("GET", "/1.0/instances") == []
    # The remote is still configured: a new token lets it back in, without adding it again.
    fails(client, "remote", "add", "far", new_token(far, "again"), contains="Remote far exists")
    fails(far, "config", "trust", "remove", "laptop", contains="not found")
    fails(far, "config", "trust", "show", "nope", contains="not found")


def test_tokens_list_revoke_and_single_use(far, home, tmp_path):
    first = new_token(far, "one")
    second = new_token(far, "two")
    rows = sorted(r.split(",") for r in ok(far, "config", "trust", "list-tokens", "-f", "csv").splitlines())
    assert [(r[0], r[1]) for r in rows] == [("one", first), ("two", second)]
    assert "| one " in ok(far, "config", "trust", "list-tokens")

    assert ok(far, "config", "trust", "revoke-token", "one") == ""
    assert [r.split(",")[0] for r in ok(far, "config", "trust", "list-tokens", "-f", "csv").splitlines()] == ["two"]
    fails(far, "config", "trust", "revoke-token", "one", contains="one")

    # A revoked token lets nobody in, and nothing is saved.
    c1 = Client(tmp_path / "c1", home)
    fails(c1, "remote", "add", "far", first, contains="token")
    assert c1.remotes() == ["local"] and not os.path.exists(c1.server_cert("far"))
    assert far.call("GET", "/1.0/certificates") == []

    # A token works once.
    c2 = Client(tmp_path / "c2", home)
    ok(c2, "remote", "add", "far", second)
    assert [c["name"] for c in far.call("GET", "/1.0/certificates?recursion=1")] == ["two"]
    c3 = Client(tmp_path / "c3", home)
    fails(c3, "remote", "add", "far", second, contains="token")
    assert c3.remotes() == ["local"] and not os.path.exists(c3.server_cert("far"))
    assert [c["name"] for c in far.call("GET", "/1.0/certificates?recursion=1")] == ["two"]
    fails(c3, "list", "far:", contains='The remote "far" doesn\'t exist')
    # -q prints the token alone, ready for a script.
    quiet = ok(far, "config", "trust", "add", "three", "-q")
    assert decode(quiet.strip())["client_name"] == "three" and quiet.count("\n") == 1


def test_bad_tokens_and_unreachable_servers(far, home, tmp_path):
    client = Client(tmp_path / "laptop", home)
    before = snapshot_state(far)
    good = new_token(far, "laptop")
    fields = decode(good)
    wrong_secret = encode({**fields, "secret": "0" * 64})
    dead_port = free_port()
    dead = encode({**fields, "addresses": [f"127.0.0.1:{dead_port}"]})
    wrong_fingerprint = encode({**fields, "fingerprint": "ab" * 32})
    cases = [
        (["remote", "add", "r", wrong_secret], "token"),
        (["remote", "add", "r", good[:40]], "Invalid trust token"),
        (["remote", "add", "r", encode({"foo": "bar"})], "Invalid trust token"),
        (["remote", "add", "r", "garbage"], "garbage"),
        (["remote", "add", "r", dead], f"127.0.0.1:{dead_port}"),
        (["remote", "add", "r", wrong_fingerprint], "certificate"),
        (["remote", "add", "r", "https://127.0.0.1:1"], "127.0.0.1:1"),
        (["remote", "add", "r", "127.0.0.1:1", "--accept-certificate"], "127.0.0.1:1"),
        (["remote", "add", "r", f"https://127.0.0.1:{far.https_port}"], "--accept-certificate"),
        (["remote", "add", "r", f"127.0.0.1:{far.https_port}", "--accept-certificate"], "--token"),
        (["remote", "add", "r", f"127.0.0.1:{far.https_port}", "--accept-certificate", "--token", "xyz"],
         "Invalid trust token"),
        (["remote", "add", "r", "ftp://127.0.0.1"], "ftp"),
        (["remote", "add", "bad:name", good], "Invalid remote name"),
        (["remote", "add", "r"], "Invalid number of arguments"),
    ]
    for args, message in cases:
        error = fails(client, *args, contains=message)
        assert "\n" not in error
        assert client.remotes() == ["local"], (args, client.config())
        assert not os.path.exists(client.server_cert("r"))
    # None of this got anyone in; the good token is still there to be used.
    assert far.call("GET", "/1.0/certificates") == []
    after = snapshot_state(far)
    assert after == before
    assert ok(client, "remote", "add", "r", good) == "Client certificate now trusted by server: r\n"


def test_add_by_address_with_token(far, home, tmp_path):
    client = Client(tmp_path / "laptop", home)
    token = new_token(far, "by-address")
    url = f"https://127.0.0.1:{far.https_port}"
    ok(client, "remote", "add", "far", url, "--accept-certificate", "--token", token)
    assert client.config()["remotes"]["far"]["addr"] == url
    assert [c["name"] for c in far.call("GET", "/1.0/certificates?recursion=1")] == ["by-address"]
    assert ok(client, "list", "far:", "-f", "csv") == ""
    # Already trusted: a second remote to the same server needs no token.
    assert ok(client, "remote", "add", "far2", f"127.0.0.1:{far.https_port}", "--accept-certificate") == ""
    assert ok(client, "remote", "list", "-f", "csv").count(url) == 2


def test_remote_server_config_and_projects(far, home, client):
    ok(client, "remote", "add", "far", new_token(far, "laptop"))
    ok(client, "project", "create", "far:p1")
    assert "p1" in [p.rsplit("/", 1)[1] for p in far.call("GET", "/1.0/projects")]
    assert home.call("GET", "/1.0/projects") == ["/1.0/projects/default"]
    ok(client, "project", "switch", "far:p1")
    assert client.config()["remotes"]["far"]["project"] == "p1"
    assert ok(client, "project", "get-current", "far:") == "p1\n"
    assert ok(client, "project", "get-current") == "default\n"
    ok(client, "profile", "create", "far:pp")
    assert far.call("GET", "/1.0/profiles/pp?project=p1")["name"] == "pp"
    assert home.call("GET", "/1.0/profiles") == ["/1.0/profiles/default"]
    assert ok(client, "config", "get", "far:", "core.https_address") == f"127.0.0.1:{far.https_port}\n"
    ok(client, "config", "set", "far:", "user.note", "remote-set")
    assert far.call("GET", "/1.0")["config"]["user.note"] == "remote-set"
    assert "user.note" not in home.call("GET", "/1.0")["config"]


def test_remote_that_went_away(far, client):
    ok(client, "remote", "add", "far", new_token(far, "laptop"))
    port = far.https_port
    far.stop()
    error = fails(client, "list", "far:", contains=f"127.0.0.1:{port}")
    assert "connect" in error.lower()
    fails(client, "exec", "far:c1", "--", "true", contains=f"127.0.0.1:{port}")
    # The local remote is still fine, and the remote's entry stays.
    assert "far" in client.remotes()
