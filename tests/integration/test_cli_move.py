"""`ferry copy` and `ferry move`: argument checks, one server (copy source, rename, pool and project moves) and
two servers (Incus's migration in pull, push and relay mode), driven through the real CLI.

The two-server tests use a client with its own configuration: `local` is server `a` (its unix socket), `b` is
the other server added over HTTPS by trust token, as a laptop would have them."""
import json
import os
import re
import subprocess

import pytest

from ferry_harness import FERRY
from test_cli import fails, ok
from test_cli_remotes import Client, new_token


# --- arguments: every one of these fails before any request --------------------------------------------------------
def offline(tmp_path):
    """A client whose `local` server does not exist: an error that needed a request would say so."""
    client = Client(tmp_path / "offline", None)
    return client


ARGUMENT_ERRORS = [
    (["copy", "c1", "c2", "--mode", "foo"], 'Invalid mode "foo": must be one of pull, push, relay'),
    (["move", "c1", "c2", "--mode", "carrier"], 'Invalid mode "carrier": must be one of pull, push, relay'),
    (["copy", "c1", "nope:", "--mode", "PULL"], 'Invalid mode "PULL"'),
    (["copy", "c1"], "You must specify a destination instance name"),
    (["copy", "nope:c1", "c2"], 'The remote "nope" doesn\'t exist'),
    (["move", "c1", "nope:c2"], 'The remote "nope" doesn\'t exist'),
    (["move", "c1"], "Invalid number of arguments"),
    (["copy", "c1", "c2", "c3"], "Invalid number of arguments"),
    (["copy"], "Invalid number of arguments"),
    (["copy", "c1", "c2", "--refresh", "--no-profiles"], "--no-profiles cannot be used with --refresh"),
    (["move", "c1", "c2", "--refresh"], "--refresh can only be used with --stateless"),
    (["copy", "c1", "c2", "--refresh-exclude-older"], "--refresh-exclude-older can only be used with --refresh"),
    (["copy", "c1/s0", "c2", "--instance-only"], "--instance-only can't be passed when the source is a snapshot"),
    (["copy", "c1/s0", "c2", "--refresh"], "--refresh can only be used with instances"),
    (["move", "c1/s0", "c2/s1"], "Invalid new snapshot name, parent must be the same as source"),
    (["move", "c1/s0", "c1"], "Invalid new snapshot name"),
    (["move", "c1", "local:"], "Can't perform local rename without a new instance name"),
    (["move", "c1", "c2", "-c", "user.a=b"], "Can't override configuration or profiles in local rename"),
    (["move", "c1", "c2", "--no-profiles"], "Can't override configuration or profiles in local rename"),
    (["move", "c1", "c2", "--refresh", "--stateless"], "Can't perform an incremental transfer in local rename"),
    (["copy", "c1", "c2", "--bogus"], "unknown flag: --bogus"),
    (["move", "c1", "c2", "-e"], "unknown shorthand flag: 'e'"),
]


@pytest.mark.parametrize("args,message", ARGUMENT_ERRORS, ids=[" ".join(a) for a, _ in ARGUMENT_ERRORS])
def test_argument_errors_need_no_server(tmp_path, args, message):
    error = fails(offline(tmp_path), *args, contains=message)
    assert "connect" not in error.lower() and "unix" not in error.lower(), error


def test_help_and_aliases(tmp_path):
    client = offline(tmp_path)
    for verb, alias in (("copy", "cp"), ("move", "mv")):
        text = ok(client, verb, "--help")
        assert text == ok(client, alias, "--help")
        assert "Transfer modes (--mode):" in text and "--mode MODE" in text and "--stateless" in text
        assert "--target-project" in text and "--allow-inconsistent" in text and "--instance-only" in text
    assert "--ephemeral" in ok(client, "copy", "--help") and "--ephemeral" not in ok(client, "move", "--help")
    listed = ok(client, "--help")
    assert re.search(r"^  copy +Copy instances within or in between servers$", listed, re.M)
    assert re.search(r"^  move +Move instances within or in between servers$", listed, re.M)


# --- one server -----------------------------------------------------------------------------------------------------
def names(server, project="default"):
    return sorted(i["name"] for i in server.call("GET", f"/1.0/instances?recursion=1&project={project}"))


def snapshots(server, name, project="default"):
    return [s["name"] for s in server.call("GET", f"/1.0/instances/{name}/snapshots?recursion=1&project={project}")]


def running_operations(server):
    ops = server.call("GET", "/1.0/operations?recursion=1") or {}
    return [o for o in ops.get("running", [])]


def test_local_rename_and_snapshot_rename(ready_server):
    s = ready_server
    s.launch("c1", start=False, config={"user.note": "kept"})
    s.call("POST", "/1.0/instances/c1/snapshots", {"name": "s0"})
    uuid = s.call("GET", "/1.0/instances/c1")["config"]["volatile.uuid"]

    assert ok(s, "move", "c1", "c2") == ""
    assert names(s) == ["c2"]
    c2 = s.call("GET", "/1.0/instances/c2")
    assert c2["config"]["user.note"] == "kept" and c2["config"]["volatile.uuid"] == uuid
    assert ok(s, "mv", "c2/s0", "c2/first") == ""
    assert snapshots(s, "c2") == ["first"]
    assert ok(s, "move", "local:c2", "local:c3") == ""
    assert names(s) == ["c3"]

    s.launch("other", start=False)
    fails(s, "move", "c3", "other", contains="already")
    fails(s, "move", "nope", "c9", contains='Instance "nope" not found')
    fails(s, "move", "c3/nope", "c3/x", contains="nope")
    fails(s, "move", "c3", "bad_name", contains="Invalid instance name")
    assert names(s) == ["c3", "other"] and snapshots(s, "c3") == ["first"]


def test_local_copy_with_overrides_and_from_snapshot(ready_server):
    s = ready_server
    s.call("POST", "/1.0/profiles", {"name": "extra", "config": {"user.profile": "extra"}})
    s.launch("c1", config={"user.note": "orig", "limits.memory": "64MiB"})
    s.exec("c1", ["sh", "-c", "echo one > /root/data"])
    s.call("POST", "/1.0/instances/c1/snapshots", {"name": "s0"})
    s.exec("c1", ["sh", "-c", "echo two > /root/data"])
    s.call("PUT", "/1.0/instances/c1/state", {"action": "stop", "force": True})

    assert ok(s, "copy", "c1", "c2", "-c", "user.note=copy", "-p", "default", "-p", "extra") == ""
    c1 = s.call("GET", "/1.0/instances/c1")
    c2 = s.call("GET", "/1.0/instances/c2")
    assert c2["config"]["user.note"] == "copy" and c2["config"]["limits.memory"] == "64MiB"
    assert c2["profiles"] == ["default", "extra"] and c2["expanded_config"]["user.profile"] == "extra"
    assert c2["config"]["volatile.uuid"] != c1["config"]["volatile.uuid"]
    assert c2["config"]["volatile.base_image"] == c1["config"]["volatile.base_image"]
    assert not c2["ephemeral"]
    assert snapshots(s, "c2") == ["s0"]

    assert ok(s, "cp", "c1", "only", "--instance-only") == ""
    assert snapshots(s, "only") == []
    assert ok(s, "copy", "c1/s0", "fromsnap") == ""
    assert snapshots(s, "fromsnap") == []
    s.call("PUT", "/1.0/instances/fromsnap/state", {"action": "start"})
    assert s.exec("fromsnap", ["cat", "/root/data"])[1] == b"one\n"
    assert ok(s, "copy", "c1", "eph", "-e", "--no-profiles", "-d", "root,type=disk", "-d", "root,path=/",
              "-d", "root,pool=default") == ""
    eph = s.call("GET", "/1.0/instances/eph")
    assert eph["ephemeral"] and eph["profiles"] == [] and eph["devices"]["root"]["pool"] == "default"

    fails(s, "copy", "c1", "c2", contains="already")
    fails(s, "copy", "nope", "c9", contains='Instance "nope" not found')
    fails(s, "copy", "c1/nope", "c9", contains="nope")
    fails(s, "copy", "c1", "c9", "-p", "missing", contains="missing")
    fails(s, "copy", "c1", "c9", "-c", "novalue", contains='Bad key=value pair: "novalue"')
    fails(s, "copy", "c1", "c9", "-d", "root", contains="Bad device override syntax")
    fails(s, "copy", "c1", "c9", "--target", "member1",
          contains='--target needs a clustered server; "local" is not clustered')
    assert "c9" not in names(s)


def test_local_copy_and_move_to_another_pool(ready_server):
    s = ready_server
    s.call("POST", "/1.0/storage-pools", {"name": "second", "driver": "dir"})
    s.launch("c1", start=False)
    s.call("POST", "/1.0/instances/c1/snapshots", {"name": "s0"})

    assert ok(s, "copy", "c1", "c2", "-s", "second") == ""
    assert s.call("GET", "/1.0/instances/c2")["devices"]["root"]["pool"] == "second"
    assert snapshots(s, "c2") == ["s0"]

    # A move to another pool keeps the name and the snapshots (ferryd has no server-side move: a copy under
    # another name, a delete, a rename).
    assert ok(s, "move", "c1", "-s", "second") == ""
    assert names(s) == ["c1", "c2"]
    c1 = s.call("GET", "/1.0/instances/c1")
    assert c1["devices"]["root"]["pool"] == "second" and snapshots(s, "c1") == ["s0"]
    assert os.path.isdir(os.path.join(s.dir, "storage-pools", "second", "containers", "default_c1"))
    assert not os.path.exists(os.path.join(s.dir, "storage-pools", "default", "containers", "default_c1"))

    # Running: without --stateless it is refused before anything happens; with it the instance comes back up.
    s.call("PUT", "/1.0/instances/c2/state", {"action": "start"})
    fails(s, "move", "c2", "-s", "default", contains="Live migration of containers is not supported yet")
    assert s.call("GET", "/1.0/instances/c2")["devices"]["root"]["pool"] == "second"
    assert ok(s, "move", "c2", "-s", "default", "--stateless") == ""
    c2 = s.call("GET", "/1.0/instances/c2")
    assert c2["devices"]["root"]["pool"] == "default" and c2["status"] == "Running"
    fails(s, "move", "c2", "-s", "nopool", "--stateless", contains="nopool")
    assert s.call("GET", "/1.0/instances/c2")["status"] == "Running"
    assert names(s) == ["c1", "c2"]


def test_local_copy_and_move_to_another_project(ready_server):
    s = ready_server
    s.call("POST", "/1.0/projects", {"name": "p2"})
    s.call("PATCH", "/1.0/profiles/default?project=p2",
           {"devices": {"root": {"type": "disk", "path": "/", "pool": "default"}}})
    s.launch("c1", start=False)
    assert ok(s, "copy", "c1", "c1", "--target-project", "p2") == ""
    assert names(s, "p2") == ["c1"] and names(s) == ["c1"]
    assert ok(s, "move", "c1", "moved", "--target-project", "p2") == ""
    assert names(s, "p2") == ["c1", "moved"] and names(s) == []
    # --project names the source project.
    assert ok(s, "copy", "moved", "back", "--project", "p2", "--target-project", "default") == ""
    assert names(s) == ["back"]


# --- two servers ----------------------------------------------------------------------------------------------------
@pytest.fixture
def pair(server_factory, busybox_image, tmp_path):
    """(a, b, client): a is the client's `local` (unix socket) and also listens on HTTPS; b is remote "b"."""
    a = server_factory("a")
    a.init_storage()
    a.import_image(busybox_image)
    a.listen_https()
    b = server_factory("b")
    b.init_storage()
    b.listen_https()
    client = Client(tmp_path / "laptop", a)
    ok(client, "remote", "add", "b", new_token(b, "laptop"))
    return a, b, client


def settle(*servers):
    """No operation is left running on any server once the CLI is done (cancelled on failure)."""
    for server in servers:
        assert running_operations(server) == [], running_operations(server)


def make_source(server, name="c1", running=False):
    """An instance with a file in two versions: the snapshot s0 has "one", the instance "two"."""
    server.launch(name, config={"user.note": "orig"})
    server.exec(name, ["sh", "-c", "echo one > /root/data; mkdir -p /root/dir; ln -s /etc /root/dir/link"])
    server.call("POST", f"/1.0/instances/{name}/snapshots", {"name": "s0"})
    server.exec(name, ["sh", "-c", "echo two > /root/data"])
    if not running:
        server.call("PUT", f"/1.0/instances/{name}/state", {"action": "stop", "force": True})
    return server.call("GET", f"/1.0/instances/{name}")


def read_file(server, name, path="/root/data"):
    inst = server.call("GET", f"/1.0/instances/{name}")
    if inst["status"] != "Running":
        server.call("PUT", f"/1.0/instances/{name}/state", {"action": "start"})
    code, out, err = server.exec(name, ["cat", path])
    assert code == 0, err
    return out


@pytest.mark.parametrize("mode", ["pull", "push", "relay"])
def test_copy_between_servers(pair, mode):
    a, b, client = pair
    source = make_source(a)
    assert ok(client, "copy", "c1", f"b:{mode}", "--mode", mode) == ""
    copy = b.call("GET", f"/1.0/instances/{mode}")
    assert copy["config"]["user.note"] == "orig"
    assert copy["config"]["volatile.base_image"] == source["config"]["volatile.base_image"]
    # A copy is a new instance: Incus's client drops the volatile keys but the base image.
    assert copy["config"]["volatile.uuid"] != source["config"]["volatile.uuid"]
    assert copy["status"] == "Stopped" and copy["profiles"] == ["default"]
    assert snapshots(b, mode) == ["s0"]
    assert read_file(b, mode) == b"two\n"
    assert b.exec(mode, ["readlink", "/root/dir/link"])[1] == b"/etc\n"
    b.call("PUT", f"/1.0/instances/{mode}", {"restore": "s0"})
    assert read_file(b, mode) == b"one\n"
    # The source is untouched.
    assert a.call("GET", "/1.0/instances/c1")["status"] == "Stopped" and snapshots(a, "c1") == ["s0"]
    settle(a, b)


def test_copy_snapshot_overrides_and_refusals(pair):
    a, b, client = pair
    make_source(a)
    b.call("POST", "/1.0/storage-pools", {"name": "second", "driver": "dir"})

    # A snapshot becomes an instance of its own; the name defaults to the parent's.
    assert ok(client, "copy", "c1/s0", "b:", "-c", "user.extra=1", "-s", "second") == ""
    fromsnap = b.call("GET", "/1.0/instances/c1")
    assert fromsnap["config"]["user.extra"] == "1" and fromsnap["devices"]["root"]["pool"] == "second"
    assert snapshots(b, "c1") == []
    assert read_file(b, "c1") == b"one\n"
    assert ok(client, "copy", "c1", "b:only", "--instance-only", "--mode", "push", "--no-profiles",
              "-d", "root,type=disk", "-d", "root,path=/", "-d", "root,pool=default") == ""
    only = b.call("GET", "/1.0/instances/only")
    assert snapshots(b, "only") == [] and only["profiles"] == []
    assert read_file(b, "only") == b"two\n"
    settle(a, b)

    # The target refuses: the error names it, and the source's operation does not linger.
    fails(client, "copy", "c1", "b:", contains='Migration failed on target "b": ')
    fails(client, "copy", "c1", "b:c9", "-p", "nosuch", contains='Migration failed on target "b": ')
    fails(client, "copy", "c1", "b:c9", "--mode", "relay", "-p", "nosuch", contains='target "b"')
    fails(client, "copy", "c1", "b:c9", "--mode", "push", "-p", "nosuch", contains='target "b"')
    fails(client, "copy", "c1", "b:bad_name", contains="Invalid instance name")
    fails(client, "copy", "nope", "b:c9", contains='Instance "nope" not found')
    fails(client, "copy", "c1/nope", "b:c9", contains="nope")
    fails(client, "copy", "c1", "b:c9", "--target", "m1", contains='--target needs a clustered server; "b" is not clustered')
    fails(client, "copy", "c1", "b:c9", "--target-project", "nope", contains="nope")
    assert sorted(names(b)) == ["c1", "only"]
    settle(a, b)

    # Into another project of the target.
    b.call("POST", "/1.0/projects", {"name": "p2"})
    b.call("PATCH", "/1.0/profiles/default?project=p2",
           {"devices": {"root": {"type": "disk", "path": "/", "pool": "default"}}})
    assert ok(client, "copy", "c1", "b:", "--target-project", "p2", "--mode", "relay") == ""
    assert names(b, "p2") == ["c1"] and snapshots(b, "c1", "p2") == ["s0"]
    settle(a, b)


def test_move_between_servers_and_back(pair):
    a, b, client = pair
    source = make_source(a)
    assert ok(client, "move", "c1", "b:") == ""
    assert names(a) == []
    moved = b.call("GET", "/1.0/instances/c1")
    # A move keeps the instance's identity: its volatile keys go along.
    assert moved["config"]["volatile.uuid"] == source["config"]["volatile.uuid"]
    assert moved["config"]["user.note"] == "orig" and snapshots(b, "c1") == ["s0"]
    assert moved["status"] == "Stopped"

    assert ok(client, "move", "b:c1", "local:back", "--mode", "push") == ""
    assert names(b) == [] and names(a) == ["back"]
    assert snapshots(a, "back") == ["s0"]
    assert ok(client, "mv", "back", "b:again", "--mode", "relay") == ""
    assert names(a) == [] and names(b) == ["again"]
    assert read_file(b, "again") == b"two\n"
    settle(a, b)


def test_move_running_instance(pair):
    a, b, client = pair
    make_source(a, "r1", running=True)
    a.exec("r1", ["sh", "-c", "echo live > /root/late"])

    # No live migration of containers: refused before anything is asked of either server.
    fails(client, "move", "r1", "b:", contains="Live migration of containers is not supported yet: stop the "
                                              "instance first or use --stateless")
    fails(client, "copy", "r1", "b:", contains="--stateless")
    assert a.call("GET", "/1.0/instances/r1")["status"] == "Running" and names(b) == []
    settle(a, b)

    # A stateless copy of a running instance leaves both as they were: the source running, the copy stopped.
    assert ok(client, "copy", "r1", "b:copy", "--stateless") == ""
    assert a.call("GET", "/1.0/instances/r1")["status"] == "Running"
    assert b.call("GET", "/1.0/instances/copy")["status"] == "Stopped"
    assert read_file(b, "copy", "/root/late") == b"live\n"

    # A stateless move stops the source first, and the moved instance comes back up on the target.
    assert ok(client, "move", "r1", "b:", "--stateless") == ""
    assert names(a) == []
    moved = b.call("GET", "/1.0/instances/r1")
    assert moved["status"] == "Running"
    assert b.exec("r1", ["cat", "/root/late"])[1] == b"live\n"
    settle(a, b)


def test_source_without_network_needs_push_or_relay(pair):
    a, b, client = pair
    make_source(a)
    a.call("PATCH", "/1.0", {"config": {"core.https_address": ""}})
    assert a.call("GET", "/1.0")["environment"]["addresses"] == []

    error = fails(client, "copy", "c1", "b:", contains="The source server isn't listening on the network")
    assert "core.https_address" in error and "relay" in error
    settle(a, b)
    assert names(b) == []
    # The CLI reaches `local` over its unix socket: relay works; so does push (the source dials the target).
    assert ok(client, "copy", "c1", "b:relayed", "--mode", "relay") == ""
    assert ok(client, "copy", "c1", "b:pushed", "--mode", "push") == ""
    assert names(b) == ["pushed", "relayed"]
    assert snapshots(b, "relayed") == ["s0"] and read_file(b, "pushed") == b"two\n"
    # And the other way round the target is the one off the network: pull and relay, not push.
    # (read_file started "pushed": a running copy needs --stateless.)
    fails(client, "copy", "b:pushed", "local:back", "--mode", "push", "--stateless",
          contains="The target server isn't listening on the network")
    assert ok(client, "copy", "b:pushed", "local:back", "--stateless") == ""
    # Relay to a target the CLI reaches over its unix socket only.
    assert ok(client, "copy", "b:relayed", "local:relayed-back", "--mode", "relay") == ""
    assert names(a) == ["back", "c1", "relayed-back"]
    assert snapshots(a, "relayed-back") == ["s0"] and read_file(a, "relayed-back") == b"two\n"
    settle(a, b)


def test_progress_only_on_a_terminal(pair):
    a, b, client = pair
    a.launch("big")
    # Incompressible data so that the transfer takes a moment.
    a.exec("big", ["sh", "-c", "head -c 64000000 /dev/urandom > /root/blob"])
    a.call("PUT", "/1.0/instances/big/state", {"action": "stop", "force": True})

    command = f"{FERRY} copy big b:shown"
    proc = subprocess.run(["script", "-qec", command, "/dev/null"], env=client.env(), capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, proc.stdout
    out = proc.stdout.decode(errors="replace")
    assert re.search(r"Transferring instance: [^\r]*\d+% \(", out), out
    # The progress line is wiped at the end: carriage return, blanks, carriage return.
    assert re.search(r"\r +\r$", out), repr(out[-200:])

    # -q and a pipe: nothing at all.
    assert ok(client, "copy", "big", "b:piped") == ""
    proc = subprocess.run(["script", "-qec", f"{FERRY} copy -q big b:quiet", "/dev/null"], env=client.env(),
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == b"", proc.stdout
    assert names(b) == ["piped", "quiet", "shown"]


def extension(server, name):
    return name in server.call("GET", "/1.0")["api_extensions"]


def test_refresh_and_near_live_move(pair):
    """--refresh updates an existing copy; move --stateless --refresh is Incus's near-live move. Both need the
    servers' container_incremental_copy extension, and the CLI says so when one lacks it."""
    a, b, client = pair
    make_source(a, "r1", running=True)
    if not extension(b, "container_incremental_copy"):
        fails(client, "copy", "r1", "b:", "--refresh", contains='The target server is missing the required '
                                                                  '"container_incremental_copy" API extension')
        fails(client, "move", "r1", "b:", "--refresh", "--stateless", contains="container_incremental_copy")
        assert a.call("GET", "/1.0/instances/r1")["status"] == "Running" and names(b) == []
        settle(a, b)
        return

    assert ok(client, "copy", "r1", "b:", "--refresh") == ""
    a.exec("r1", ["sh", "-c", "echo three > /root/data; echo new > /root/added"])
    a.call("POST", "/1.0/instances/r1/snapshots", {"name": "s1"})
    assert ok(client, "copy", "r1", "b:", "--refresh") == ""
    assert snapshots(b, "r1") == ["s0", "s1"]
    assert read_file(b, "r1", "/root/added") == b"new\n"
    b.call("PUT", "/1.0/instances/r1/state", {"action": "stop", "force": True})

    a.exec("r1", ["sh", "-c", "echo four > /root/data"])
    assert ok(client, "move", "r1", "b:", "--refresh", "--stateless") == ""
    assert names(a) == []
    moved = b.call("GET", "/1.0/instances/r1")
    assert moved["status"] == "Running"
    assert b.exec("r1", ["cat", "/root/data"])[1] == b"four\n"
    settle(a, b)


def test_allow_inconsistent(pair):
    a, b, client = pair
    make_source(a, "r1", running=True)
    if not extension(b, "instance_allow_inconsistent_copy"):
        fails(client, "copy", "r1", "b:", "--stateless", "--allow-inconsistent",
              contains='"instance_allow_inconsistent_copy" API extension')
        return
    assert ok(client, "copy", "r1", "b:", "--stateless", "--allow-inconsistent") == ""
    assert read_file(b, "r1") == b"two\n"
    settle(a, b)
