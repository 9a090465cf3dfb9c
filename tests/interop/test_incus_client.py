"""The stock `incus` client (incus-client 6.0 from bookworm-backports) drives a ferry server."""
import base64
import json
import os
import shutil
import subprocess

import pytest

INCUS = shutil.which("incus")


@pytest.fixture
def incus(ready_server, tmp_path):
    """An incus client with the ferry server added as remote "fy" by trust token."""
    if INCUS is None:
        pytest.skip("the incus client is not installed (scripts/install-incus.sh installs it from bookworm-backports)")
    server = ready_server
    server.listen_https()
    # A token operation stays running until the token is used: read it from the creation response.
    status, envelope = server.api("POST", "/1.0/certificates", {"name": "incus-client", "type": "client",
                                                                "token": True})
    assert status == 202, envelope
    meta = envelope["metadata"]["metadata"]
    env = dict(os.environ, INCUS_CONF=str(tmp_path / "incus-conf"), HOME=str(tmp_path))

    def run(*args, check=True, input=None, timeout=120):
        proc = subprocess.run([INCUS, *args], env=env, capture_output=True, text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"incus {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc

    # The token the way `incus config trust add` prints it.
    token = base64.b64encode(json.dumps({
        "client_name": meta["request"]["name"], "fingerprint": meta["fingerprint"], "addresses": meta["addresses"],
        "secret": meta["secret"], "expires_at": meta["expiresAt"]}).encode()).decode()
    run("remote", "add", "fy", token)
    run.server = server
    run.env = env
    return run


def test_remote_add_by_token_and_list(incus):
    assert "fy" in incus("remote", "list", "-f", "csv").stdout
    assert incus("list", "fy:", "-f", "csv").stdout == ""
    trust = incus("config", "trust", "list", "fy:", "-f", "csv").stdout
    assert "incus-client" in trust
    # The token was single-use: its operation is gone from the running list.
    ops = incus.server.call("GET", "/1.0/operations?recursion=1")
    assert not [o for o in ops.get("running", []) if o["class"] == "token"]


def test_query(incus):
    """`incus query` sends the JSON string "" as the body of a GET: ferry ignores a GET's body, as Incus does."""
    server_info = json.loads(incus("query", "fy:/1.0").stdout)
    assert server_info["api_version"] == "1.0"
    assert json.loads(incus("query", "fy:/1.0/instances").stdout) == []


def test_launch_exec_stop_snapshot_delete(incus):
    incus("launch", "fy:busybox", "fy:c1")
    rows = incus("list", "fy:", "-f", "csv", "-c", "ns").stdout.strip().splitlines()
    assert rows == ["c1,RUNNING"]

    # exec: output, exit status and stdin pass through.
    proc = incus("exec", "fy:c1", "--", "sh", "-c", "echo out-$(hostname); echo err >&2; exit 5", check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (5, "out-c1\n", "err\n")
    assert incus("exec", "fy:c1", "--", "cat", input="through stdin\n").stdout == "through stdin\n"
    assert incus("exec", "fy:c1", "--env", "X=42", "--", "sh", "-c", "echo $X").stdout == "42\n"

    incus("snapshot", "create", "fy:c1", "snap0")
    assert "snap0" in incus("snapshot", "list", "fy:c1", "-f", "csv").stdout
    incus("stop", "fy:c1")
    assert incus("list", "fy:", "-f", "csv", "-c", "nsS").stdout.strip() == "c1,STOPPED,1"
    incus("delete", "fy:c1")
    assert incus("list", "fy:", "-f", "csv").stdout == ""
    assert incus.server.call("GET", "/1.0/instances") == []


def test_interactive_exec(incus):
    if shutil.which("script") is None:
        pytest.skip("util-linux `script` is needed to give the incus client a terminal")
    incus("launch", "fy:busybox", "fy:c2")
    # `script` gives incus a pty, so it asks ferry for an interactive session (one pty channel + control).
    cmd = f"{INCUS} exec fy:c2 -- sh -c 'tty; echo cols=$(stty size)'"
    proc = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=incus.env, capture_output=True, text=True,
                          timeout=60, input="")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "/dev/pts/" in proc.stdout
    assert "cols=" in proc.stdout
    incus("delete", "--force", "fy:c2")


def test_errors_are_incus_shaped(incus):
    proc = incus("launch", "fy:nope", "fy:c3", check=False)
    assert proc.returncode != 0 and "not found" in proc.stderr.lower()
    proc = incus("launch", "fy:busybox", "fy:bad_name", check=False)
    assert proc.returncode != 0 and "Invalid instance name" in proc.stderr
    proc = incus("config", "set", "fy:c9", "limits.memory=1GiB", check=False)
    assert proc.returncode != 0 and "not found" in proc.stderr.lower()
    assert incus.server.call("GET", "/1.0/instances") == []
