"""The `ferry` CLI, verb by verb, against real ferryd servers and real containers.

Every command runs the real binary (`server.ferry`) with stdout and stderr piped, as a script would: the tests
check the exit status, both streams, and then the server's state through the REST API (`server.call`)."""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import urllib.parse

import pytest
import yaml

from ferry_harness import FERRY, ApiError, free_port


# --- helpers -------------------------------------------------------------------------------------------------------
def ok(server, *args, input=None):
    """Run ferry, which must succeed without a word on stderr; its stdout."""
    proc = server.ferry(*args, check=False, input=input)
    assert proc.returncode == 0, f"ferry {' '.join(args)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert proc.stderr == "", f"ferry {' '.join(args)} wrote on stderr: {proc.stderr!r}"
    # Piped stdout never carries a progress line.
    assert "\r" not in proc.stdout, proc.stdout
    return proc.stdout


def fails(server, *args, contains, input=None):
    """Run ferry, which must fail with one `Error: ...` line (the last on stderr); that line."""
    proc = server.ferry(*args, check=False, input=input)
    assert proc.returncode != 0, f"ferry {' '.join(args)} succeeded:\n{proc.stdout}{proc.stderr}"
    lines = proc.stderr.splitlines()
    assert lines, f"ferry {' '.join(args)} failed silently"
    errors = [line for line in lines if line.startswith("Error: ")]
    assert errors == [lines[-1]], f"not one error line at the end: {proc.stderr!r}"
    # Only a wrong argument count prints more: the usage line before the error.
    assert len(lines) == 1 or lines[0].startswith("Usage: "), proc.stderr
    assert contains.lower() in lines[-1].lower(), f"{contains!r} not in {lines[-1]!r}"
    assert "\r" not in proc.stdout
    return lines[-1]


def csv_rows(text):
    return [line.split(",") for line in text.splitlines()]


def status(server, name, project="default"):
    return server.call("GET", f"/1.0/instances/{name}?project={project}")["status"]


def instance(server, name, project="default"):
    return server.call("GET", f"/1.0/instances/{name}?project={project}")


def exists(server, path):
    try:
        server.call("GET", path)
        return True
    except ApiError as e:
        assert e.status == 404, e
        return False


def run_in(server, name, *command):
    """stdout of a command in the instance (through the REST API, not the CLI under test)."""
    code, out, err = server.exec(name, list(command))
    assert code == 0, (command, code, err)
    return out.decode()


def snapshot_state(server):
    """Everything a failed command must leave as it was."""
    state = {"server": server.call("GET", "/1.0")["config"],
             "pools": {p["name"]: (p["driver"], p["config"], p["description"])
                       for p in server.call("GET", "/1.0/storage-pools?recursion=1")},
             "certificates": sorted(c["fingerprint"] for c in server.call("GET", "/1.0/certificates?recursion=1"))}
    for project in server.call("GET", "/1.0/projects?recursion=1"):
        q = urllib.parse.quote(project["name"])
        state[f"project {project['name']}"] = {
            "config": project["config"], "description": project["description"],
            "instances": {i["name"]: (i["status"], i["config"], i["devices"], i["profiles"], i["description"],
                                      sorted(s["name"] for s in i["snapshots"] or []))
                          for i in server.call("GET", f"/1.0/instances?recursion=2&project={q}")},
            "profiles": {p["name"]: (p["config"], p["devices"], p["description"])
                         for p in server.call("GET", f"/1.0/profiles?recursion=1&project={q}")},
            "images": sorted(i["fingerprint"] for i in server.call("GET", f"/1.0/images?recursion=1&project={q}")),
            "aliases": {a["name"]: a["target"]
                        for a in server.call("GET", f"/1.0/images/aliases?recursion=1&project={q}")},
        }
    return state


def cgroup_file(pid, controller, v1_file, v2_file):
    """The path of a cgroup file of a process, on a cgroup v1 or v2 host."""
    with open(f"/proc/{pid}/cgroup") as f:
        entries = [line.rstrip("\n").split(":", 2) for line in f]
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        path = next(p for hid, _, p in entries if hid == "0")
        return f"/sys/fs/cgroup{path}/{v2_file}"
    path = next(p for _, controllers, p in entries if controller in controllers.split(","))
    return f"/sys/fs/cgroup/{controller}{path}/{v1_file}"


def memory_limit(server, name):
    """The memory limit the kernel enforces on the container: as seen inside when the container has its cgroup
    mounted, and always from the host."""
    pid = server.call("GET", f"/1.0/instances/{name}/state")["pid"]
    with open(cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max")) as f:
        host = int(f.read())
    for inside in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"):
        code, out, _ = server.exec(name, ["cat", inside])
        if code == 0:
            assert int(out) == host, (inside, out, host)
    return host


def image_fingerprint(server):
    return server.call("GET", "/1.0/images/aliases/busybox")["target"]


# --- admin init, images --------------------------------------------------------------------------------------------
def test_admin_init_auto(server):
    assert server.call("GET", "/1.0/storage-pools") == []
    assert ok(server, "admin", "init", "--auto") == ""
    pool = server.call("GET", "/1.0/storage-pools/default")
    assert pool["driver"] == "dir"
    root = server.call("GET", "/1.0/profiles/default")["devices"]["root"]
    assert root == {"type": "disk", "path": "/", "pool": "default"}
    # A second run finds everything in place and changes nothing, as Incus's.
    before = snapshot_state(server)
    assert ok(server, "admin", "init", "--auto") == ""
    assert snapshot_state(server) == before
    fails(server, "admin", "init", "--auto", "--storage-backend", "zfs", contains="zfs")
    fails(server, "admin", "init", "--auto", "--preseed", contains="--auto")
    fails(server, "admin", "init", "--storage-backend", "dir", contains="require --auto")
    assert snapshot_state(server) == before


def test_admin_init_btrfs_and_network(server):
    drivers = [d["Name"] for d in server.call("GET", "/1.0")["environment"]["storage_supported_drivers"]]
    if "btrfs" not in drivers:
        pytest.skip("btrfs is not supported on this host")
    port = free_port()
    ok(server, "admin", "init", "--auto", "--storage-backend", "btrfs", "--storage-create-loop", "1",
       "--network-address", "127.0.0.1", "--network-port", str(port))
    pool = server.call("GET", "/1.0/storage-pools/default")
    assert pool["driver"] == "btrfs" and pool["config"]["size"] == "1GiB"
    assert server.call("GET", "/1.0")["config"]["core.https_address"] == f"127.0.0.1:{port}"
    assert server.call("GET", "/1.0/profiles/default")["devices"]["root"]["pool"] == "default"


def test_admin_init_dump_and_preseed(server):
    preseed = yaml.safe_dump({
        "config": {"user.seeded": "yes"},
        "storage_pools": [{"name": "default", "driver": "dir", "config": {}}],
        "profiles": [{"name": "default", "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}}}],
        "projects": [{"name": "seeded", "config": {"features.images": "false"}, "description": "from a seed"}],
    })
    ok(server, "admin", "init", "--preseed", input=preseed)
    assert server.call("GET", "/1.0/projects/seeded")["description"] == "from a seed"
    assert server.call("GET", "/1.0")["config"]["user.seeded"] == "yes"
    dump = yaml.safe_load(ok(server, "admin", "init", "--dump"))
    assert [p["name"] for p in dump["storage_pools"]] == ["default"]
    assert {p["name"] for p in dump["projects"]} == {"default", "seeded"}
    fails(server, "admin", "init", "--preseed", input="storage_pools: [\n", contains="preseed")


def test_image_verbs(server, busybox_image):
    server.init_storage()
    out = ok(server, "image", "import", busybox_image, "--alias", "busybox")
    match = re.fullmatch(r"Image imported with fingerprint: ([0-9a-f]{64})\n", out)
    assert match, out
    fingerprint = match.group(1)
    assert server.call("GET", "/1.0/images/aliases/busybox")["target"] == fingerprint
    assert server.call("GET", f"/1.0/images/{fingerprint}")["public"] is False

    table = ok(server, "image", "list")
    assert table.startswith("+") and "busybox" in table and fingerprint[:12] in table
    rows = csv_rows(ok(server, "image", "list", "-f", "csv"))
    assert [r[:3] for r in rows] == [["busybox", fingerprint[:12], "no"]]
    assert [i["fingerprint"] for i in json.loads(ok(server, "image", "list", "-f", "json"))] == [fingerprint]
    assert yaml.safe_load(ok(server, "image", "list", "-f", "yaml"))[0]["fingerprint"] == fingerprint
    assert ok(server, "image", "list", "nomatch", "-f", "csv") == ""
    assert len(csv_rows(ok(server, "image", "list", "busy", "-f", "csv"))) == 1

    shown = yaml.safe_load(ok(server, "image", "show", "busybox"))
    assert shown["public"] is False and shown["properties"]["os"] == "busybox"
    info = ok(server, "image", "info", fingerprint[:10])
    assert f"Fingerprint: {fingerprint}\n" in info and "    - busybox\n" in info and "Public: no\n" in info

    # Aliases.
    assert ok(server, "image", "alias", "create", "bb", fingerprint[:12], "--description", "short one") == ""
    alias = server.call("GET", "/1.0/images/aliases/bb")
    assert (alias["target"], alias["description"]) == (fingerprint, "short one")
    assert sorted(r[0] for r in csv_rows(ok(server, "image", "alias", "list", "-f", "csv"))) == ["bb", "busybox"]
    assert ok(server, "image", "alias", "rename", "bb", "bb2") == ""
    assert not exists(server, "/1.0/images/aliases/bb") and exists(server, "/1.0/images/aliases/bb2")
    assert "bb2 (1 more)," in ok(server, "image", "list", "-f", "csv")
    assert ok(server, "image", "alias", "delete", "bb2") == ""
    assert [r[0] for r in csv_rows(ok(server, "image", "alias", "list", "-f", "csv"))] == ["busybox"]

    before = snapshot_state(server)
    fails(server, "image", "alias", "create", "busybox", fingerprint, contains='"busybox" already exists')
    fails(server, "image", "alias", "create", "x", "nope", contains='Image "nope" not found')
    fails(server, "image", "alias", "delete", "nope", contains='"nope" not found')
    fails(server, "image", "alias", "rename", "nope", "x", contains='"nope" not found')
    fails(server, "image", "show", "nope", contains='Image "nope" not found')
    fails(server, "image", "info", "nope", contains='Image "nope" not found')
    fails(server, "image", "delete", "nope", contains='Image "nope" not found')
    fails(server, "image", "import", "/nonexistent.tar.xz", contains="/nonexistent.tar.xz")
    assert snapshot_state(server) == before

    assert ok(server, "image", "delete", "busybox") == ""
    assert server.call("GET", "/1.0/images") == []
    assert server.call("GET", "/1.0/images/aliases") == []
    # -q: nothing at all on success.
    assert ok(server, "image", "import", busybox_image, "-q") == ""
    assert server.call("GET", "/1.0/images") == [f"/1.0/images/{fingerprint}"]


# --- instance life cycle -------------------------------------------------------------------------------------------
def test_launch_with_config_and_auto_name(ready_server):
    s = ready_server
    out = ok(s, "launch", "busybox", "c1", "-c", "limits.memory=128MiB", "-c", "environment.X=1")
    assert out == "Launching c1\n"
    inst = instance(s, "c1")
    assert inst["status"] == "Running"
    assert inst["config"]["limits.memory"] == "128MiB" and inst["config"]["environment.X"] == "1"
    assert inst["profiles"] == ["default"] and inst["config"]["volatile.base_image"] == image_fingerprint(s)
    assert "X=1\n" in run_in(s, "c1", "env")
    assert memory_limit(s, "c1") == 128 * 1024 * 1024

    # init creates without starting; a fingerprint prefix names the image too.
    assert ok(s, "init", image_fingerprint(s)[:12], "c2") == "Creating c2\n"
    assert status(s, "c2") == "Stopped"
    assert ok(s, "create", "busybox", "c3", "--description", "third") == "Creating c3\n"
    assert instance(s, "c3")["description"] == "third"

    # No name: one is made up and told.
    out = ok(s, "launch", "busybox")
    match = re.fullmatch(r"Launching the instance\nInstance name is: ([a-z]+-[a-z]+)\n", out)
    assert match, out
    assert status(s, match.group(1)) == "Running"

    # -q: not a word.
    assert ok(s, "launch", "busybox", "c4", "-q") == ""
    assert ok(s, "-q", "init", "busybox", "c5") == ""
    assert status(s, "c4") == "Running" and status(s, "c5") == "Stopped"

    names = {i["name"] for i in s.call("GET", "/1.0/instances?recursion=1")}
    assert names == {"c1", "c2", "c3", "c4", "c5", match.group(1)}


def test_launch_profiles_storage_devices_empty(ready_server):
    s = ready_server
    ok(s, "profile", "create", "p1")
    ok(s, "profile", "set", "p1", "environment.P=7", "limits.memory=96MiB")
    ok(s, "launch", "busybox", "c1", "-p", "default", "-p", "p1")
    inst = instance(s, "c1")
    assert inst["profiles"] == ["default", "p1"]
    assert inst["expanded_config"]["environment.P"] == "7"
    assert "P=7\n" in run_in(s, "c1", "env")
    assert memory_limit(s, "c1") == 96 * 1024 * 1024

    # No profiles: the root disk comes from -s.
    ok(s, "init", "busybox", "c2", "--no-profiles", "-s", "default")
    inst = instance(s, "c2")
    assert inst["profiles"] == []
    assert inst["devices"]["root"] == {"type": "disk", "path": "/", "pool": "default"}
    # -d overrides a device of the profiles.
    ok(s, "init", "busybox", "c3", "-d", "root,size=1GiB")
    assert instance(s, "c3")["devices"]["root"] == {"type": "disk", "path": "/", "pool": "default", "size": "1GiB"}
    ok(s, "init", "--empty", "c4")
    inst = instance(s, "c4")
    assert inst["status"] == "Stopped" and "volatile.base_image" not in inst["config"]

    before = snapshot_state(s)
    fails(s, "init", "busybox", "c9", "--no-profiles", contains="root")
    fails(s, "init", "busybox", "c9", "--no-profiles", "-p", "p1", contains="--no-profiles")
    fails(s, "init", "busybox", "c9", "-s", "nope", contains='Storage pool "nope" not found')
    fails(s, "init", "busybox", "c9", "-p", "nope", contains='Profile "nope" not found')
    fails(s, "init", "busybox", "c9", "-d", "nodev,size=1GiB", contains='"nodev"')
    fails(s, "init", "busybox", "c9", "-d", "root", contains="<device>,<key>=<value>")
    assert snapshot_state(s) == before


def test_start_stop_restart_rename_delete(ready_server):
    s = ready_server
    ok(s, "init", "busybox", "c1")
    assert ok(s, "start", "c1") == ""
    assert status(s, "c1") == "Running"
    pid = s.call("GET", "/1.0/instances/c1/state")["pid"]
    fails(s, "start", "c1", contains="already running")

    assert ok(s, "restart", "c1", "--timeout", "20") == ""
    new_pid = s.call("GET", "/1.0/instances/c1/state")["pid"]
    assert status(s, "c1") == "Running" and new_pid != pid
    assert ok(s, "restart", "c1", "--force") == ""
    assert s.call("GET", "/1.0/instances/c1/state")["pid"] not in (pid, new_pid)

    assert ok(s, "stop", "c1", "--timeout", "20") == ""
    assert status(s, "c1") == "Stopped"
    fails(s, "stop", "c1", contains="already stopped")
    ok(s, "start", "c1")
    assert ok(s, "stop", "c1", "--force") == ""
    assert status(s, "c1") == "Stopped"

    # --all acts on those not already in the wanted state.
    ok(s, "init", "busybox", "c2")
    ok(s, "start", "c1", "c2")
    assert {status(s, "c1"), status(s, "c2")} == {"Running"}
    ok(s, "stop", "--all", "--force")
    assert {status(s, "c1"), status(s, "c2")} == {"Stopped"}
    ok(s, "start", "--all")
    assert {status(s, "c1"), status(s, "c2")} == {"Running"}
    ok(s, "stop", "-f", "c2")

    # Rename: a stopped instance, its storage follows.
    assert ok(s, "rename", "c2", "c3") == ""
    assert not exists(s, "/1.0/instances/c2") and status(s, "c3") == "Stopped"
    assert os.path.isdir(os.path.join(s.dir, "storage-pools", "default", "containers", "default_c3"))
    fails(s, "rename", "c3", "c1", contains='"c1" already')
    fails(s, "rename", "c3", "bad_name", contains="Invalid instance name")
    fails(s, "rename", "nope", "c9", contains='Instance "nope" not found')

    # Delete: a running instance needs --force.
    fails(s, "delete", "c1", contains="stop it first or pass --force")
    assert status(s, "c1") == "Running"
    assert ok(s, "delete", "c1", "--force") == ""
    assert not exists(s, "/1.0/instances/c1")
    fails(s, "delete", "-i", "c3", input="no\n", contains="aborted")
    assert status(s, "c3") == "Stopped"
    assert ok(s, "rm", "-i", "c3", input="yes\n") == "Remove c3 (yes/no): "
    assert s.call("GET", "/1.0/instances") == []
    fails(s, "delete", "nope", contains='Instance "nope" not found')
    fails(s, "start", "nope", contains='Instance "nope" not found')
    fails(s, "stop", "--timeout", "abc", "c1", contains='Invalid value "abc" for flag --timeout')


def test_list_formats_columns_filters(ready_server):
    s = ready_server
    ok(s, "launch", "busybox", "web1", "-c", "user.role=web")
    ok(s, "init", "busybox", "db1", "--description", "the database", "-c", "user.role=db")
    ok(s, "snapshot", "create", "db1", "s0")

    table = ok(s, "list")
    lines = table.splitlines()
    assert lines[0].startswith("+--")
    assert re.search(r"\|\s+NAME\s+\|\s+STATE\s+\|\s+IPV4\s+\|\s+IPV6\s+\|\s+TYPE\s+\|\s+SNAPSHOTS\s+\|", lines[1])
    # Sorted rows, a line between them.
    assert [line.split("|")[1].strip() for line in lines if line.startswith("| ") and "NAME" not in line] == \
        ["db1", "web1"]
    assert csv_rows(ok(s, "list", "-f", "csv")) == [["db1", "STOPPED", "", "", "CONTAINER", "1"],
                                                   ["web1", "RUNNING", "", "", "CONTAINER", "0"]]
    assert csv_rows(ok(s, "list", "-f", "csv,header", "-c", "nsd")) == [
        ["NAME", "STATE", "DESCRIPTION"], ["db1", "STOPPED", "the database"], ["web1", "RUNNING", ""]]
    assert csv_rows(ok(s, "list", "-f", "csv", "-c", "n,P,b")) == [["db1", "default", "default"],
                                                                 ["web1", "default", "default"]]
    fingerprint = image_fingerprint(s)
    assert csv_rows(ok(s, "list", "-f", "csv", "-c", "nfF", "web")) == [["web1", fingerprint[:12], fingerprint]]
    pid = s.call("GET", "/1.0/instances/web1/state")["pid"]
    assert csv_rows(ok(s, "list", "-f", "csv", "-c", "np")) == [["db1", ""], ["web1", str(pid)]]

    arch = instance(s, "web1")["architecture"]
    rows = csv_rows(ok(s, "list", "-f", "csv", "-c", "naN"))
    assert rows[0] == ["db1", arch, ""] and rows[1][:2] == ["web1", arch] and int(rows[1][2]) >= 1
    fast = ok(s, "list", "--fast", "-f", "csv,header").splitlines()
    assert fast[0] == "NAME,STATE,ARCHITECTURE,CREATED AT,PROFILES,TYPE"
    assert fast[1].startswith(f"db1,STOPPED,{arch},") and fast[1].endswith(",default,CONTAINER")
    fails(s, "list", "--fast", "-c", "n", contains="--fast with --columns")

    compact = ok(s, "list", "-f", "compact", "-c", "ns").splitlines()
    assert compact[0].split() == ["NAME", "STATE"] and compact[1].split() == ["db1", "STOPPED"]
    assert "|" not in "".join(compact) and "+" not in "".join(compact)
    assert ok(s, "list", "-f", "table,noheader", "-c", "n").count("NAME") == 0

    listed = json.loads(ok(s, "list", "-f", "json"))
    assert sorted(i["name"] for i in listed) == ["db1", "web1"]
    web = next(i for i in listed if i["name"] == "web1")
    assert web["status"] == "Running" and web["state"]["pid"] == pid and web["config"]["user.role"] == "web"
    assert sorted(i["name"] for i in yaml.safe_load(ok(s, "list", "-f", "yaml"))) == ["db1", "web1"]

    # Filters: a name prefix (regular expression), key=value on config or status.
    assert csv_rows(ok(s, "list", "-f", "csv", "-c", "n", "d")) == [["db1"]]
    assert csv_rows(ok(s, "list", "-f", "csv", "-c", "n", "user.role=web")) == [["web1"]]
    assert csv_rows(ok(s, "list", "-f", "csv", "-c", "n", "status=stopped")) == [["db1"]]
    assert csv_rows(ok(s, "list", "-f", "csv", "-c", "n", "local:w")) == [["web1"]]
    assert ok(s, "list", "-f", "csv", "-c", "n", "zzz") == ""
    assert ok(s, "ls", "local:", "-f", "csv", "-c", "n") == "db1\nweb1\n"

    # Natural order, as Incus's: web9 before web10.
    ok(s, "init", "busybox", "web10")
    ok(s, "init", "busybox", "web9")
    assert ok(s, "list", "-f", "csv", "-c", "n", "web") == "web1\nweb9\nweb10\n"

    fails(s, "list", "-f", "bogus", contains='Invalid format "bogus"')
    fails(s, "list", "-c", "nZ", contains="Unknown column shorthand char 'Z'")
    fails(s, "list", "--bogus", contains="unknown flag: --bogus")
    fails(s, "list", "nope:", contains='The remote "nope" doesn\'t exist')


def test_info(ready_server):
    s = ready_server
    ok(s, "launch", "busybox", "c1", "--description", "info test")
    ok(s, "snapshot", "create", "c1", "snap-a")
    out = ok(s, "info", "c1")
    pid = s.call("GET", "/1.0/instances/c1/state")["pid"]
    lines = out.splitlines()
    for line in ("Name: c1", "Description: info test", "Status: RUNNING", "Type: container", f"PID: {pid}",
                 "Resources:"):
        assert line in lines, (line, out)
    assert re.search(r"^  Processes: [1-9]\d*$", out, re.M), out
    assert re.search(r"^Created: \d{4}/\d\d/\d\d \d\d:\d\d ", out, re.M)
    assert "Snapshots:" in out and "| snap-a |" in out
    ok(s, "stop", "-f", "c1")
    stopped = ok(s, "info", "c1")
    assert "Status: STOPPED" in stopped and "PID:" not in stopped and "Resources:" not in stopped

    server_info = yaml.safe_load(ok(s, "info"))
    assert server_info["api_version"] == "1.0" and server_info["auth"] == "trusted"
    assert server_info["environment"]["server_name"]
    log = ok(s, "info", "c1", "--show-log")
    assert "Log:" in log
    fails(s, "info", "nope", contains='Instance "nope" not found')


def test_info_resources(server):
    assert "cpu" in yaml.safe_load(ok(server, "info", "--resources"))


# --- exec ----------------------------------------------------------------------------------------------------------
def test_exec_streams_status_env_cwd_user(ready_server):
    s = ready_server
    ok(s, "launch", "busybox", "c1", "-c", "environment.FROM_CONFIG=yes")
    proc = s.ferry("exec", "c1", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 3", check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "to-out\n", "to-err\n")
    assert s.ferry("exec", "c1", "--", "true", check=False).returncode == 0
    assert s.ferry("exec", "c1", "--", "false", check=False).returncode == 1
    # No "--" needed: words after the instance name belong to the command.
    assert ok(s, "exec", "c1", "ls", "-d", "/etc") == "/etc\n"
    missing = s.ferry("exec", "c1", "--", "no-such-command", check=False)
    assert missing.returncode == 127

    # stdin is piped through, binary-safe, and ends.
    assert ok(s, "exec", "c1", "--", "cat", input="line one\nline two\n") == "line one\nline two\n"
    data = os.urandom(300 * 1024)
    proc = subprocess.run([FERRY, "exec", "c1", "--", "md5sum"], input=data, capture_output=True, env=s.env(),
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()
    # -n: stdin reads as empty.
    assert ok(s, "exec", "-n", "c1", "--", "wc", "-c", input="ignored").split() == ["0"]

    env = ok(s, "exec", "c1", "--env", "A=one", "--env", "B=two words", "--", "env")
    assert "A=one\n" in env and "B=two words\n" in env and "FROM_CONFIG=yes\n" in env
    assert ok(s, "exec", "c1", "--cwd", "/tmp", "--", "pwd") == "/tmp\n"
    ids = ok(s, "exec", "c1", "--user", "1000", "--group", "1001", "--", "sh", "-c", "id -u; id -g")
    assert ids == "1000\n1001\n"
    # Not a terminal: no pty.
    assert s.ferry("exec", "c1", "--", "test", "-t", "0", check=False).returncode == 1

    # Signals to ferry go to the command.
    proc = subprocess.Popen([FERRY, "exec", "c1", "--", "sh", "-c",
                             'trap "echo got-int; exit 9" INT; echo ready; while :; do sleep 1; done'],
                            env=s.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 9 and proc.stdout.read() == "got-int\n"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()

    fails(s, "exec", "nope", "--", "true", contains='Instance "nope" not found')
    fails(s, "exec", "c1", contains="Invalid number of arguments")
    fails(s, "exec", "c1", "--env", contains="flag needs an argument: --env")
    fails(s, "exec", "c1", "-t", "-T", "--", "true", contains="-t and -T")
    ok(s, "stop", "-f", "c1")
    fails(s, "exec", "c1", "--", "true", contains="not running")


def test_exec_interactive_pty(ready_server):
    s = ready_server
    ok(s, "launch", "busybox", "c1")
    inner = f"stty cols 100 rows 30; {FERRY} exec c1 -- sh -c 'tty; stty size; test -t 0 && echo in-a-tty'"
    proc = subprocess.run(["script", "-qec", inner, "/dev/null"], env=s.env(), capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(rb"/dev/pts/\d+\r\n30 100\r\nin-a-tty\r\n", proc.stdout), proc.stdout
    # The exit status passes through the pty session; -T forces a plain pipe even on a terminal.
    proc = subprocess.run(["script", "-qec", f"{FERRY} exec c1 -- sh -c 'exit 7'", "/dev/null"], env=s.env(),
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 7
    proc = subprocess.run(["script", "-qec", f"{FERRY} exec -T c1 -- sh -c 'test -t 1 || echo no-tty'",
                           "/dev/null"], env=s.env(), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=60)
    assert "no-tty" in proc.stdout, proc.stdout
    # -t forces a pty with pipes.
    proc = subprocess.run([FERRY, "exec", "-t", "c1", "--", "sh", "-c", "test -t 0 && echo pty"], env=s.env(),
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0 and proc.stdout == b"pty\r\n"


# --- config --------------------------------------------------------------------------------------------------------
def test_config_instance(ready_server):
    s = ready_server
    ok(s, "launch", "busybox", "c1", "-c", "limits.memory=128MiB")
    assert ok(s, "config", "get", "c1", "limits.memory") == "128MiB\n"
    assert ok(s, "config", "get", "c1", "user.unset") == "\n"
    assert ok(s, "config", "set", "c1", "limits.memory=64MiB", "environment.GREETING=hi") == ""
    assert ok(s, "config", "set", "c1", "limits.cpu", "1") == ""
    config = instance(s, "c1")["config"]
    assert (config["limits.memory"], config["environment.GREETING"], config["limits.cpu"]) == ("64MiB", "hi", "1")
    assert "GREETING=hi\n" in ok(s, "exec", "c1", "--", "env")
    # Limits take effect from the next start.
    ok(s, "restart", "-f", "c1")
    assert memory_limit(s, "c1") == 64 * 1024 * 1024
    assert ok(s, "exec", "c1", "--", "nproc") == "1\n"

    shown = yaml.safe_load(ok(s, "config", "show", "c1"))
    assert set(shown) == {"architecture", "config", "devices", "ephemeral", "profiles", "stateful", "description"}
    assert shown["config"]["limits.cpu"] == "1" and shown["devices"] == {} and shown["profiles"] == ["default"]
    expanded = yaml.safe_load(ok(s, "config", "show", "c1", "--expanded"))
    assert expanded["devices"]["root"] == {"type": "disk", "path": "/", "pool": "default"}
    assert ok(s, "config", "get", "c1", "limits.cpu", "--expanded") == "1\n"

    assert ok(s, "config", "unset", "c1", "limits.cpu") == ""
    assert "limits.cpu" not in instance(s, "c1")["config"]

    before = snapshot_state(s)
    fails(s, "config", "unset", "c1", "limits.cpu", contains="not currently set")
    fails(s, "config", "set", "c1", "limits.memory=abc", contains="limits.memory")
    fails(s, "config", "set", "c1", "no.such.key=1", contains="no.such.key")
    fails(s, "config", "set", "c1", "missing-equals", "x=1", contains="missing-equals")
    fails(s, "config", "get", "nope", "limits.memory", contains='Instance "nope" not found')
    fails(s, "config", "set", "nope", "limits.memory=1GiB", contains='Instance "nope" not found')
    fails(s, "config", "show", "nope", contains='Instance "nope" not found')
    assert snapshot_state(s) == before


def test_config_limits_apply_live(ready_server):
    s = ready_server
    ok(s, "launch", "busybox", "c1", "-c", "limits.memory=128MiB")
    ok(s, "config", "set", "c1", "limits.memory=64MiB")
    assert memory_limit(s, "c1") == 64 * 1024 * 1024


def test_config_server(server):
    port = free_port()
    assert ok(server, "config", "get", "core.https_address") == "\n"
    assert ok(server, "config", "set", "core.https_address", f"127.0.0.1:{port}") == ""
    assert server.call("GET", "/1.0")["config"]["core.https_address"] == f"127.0.0.1:{port}"
    assert ok(server, "config", "get", "core.https_address") == f"127.0.0.1:{port}\n"
    assert yaml.safe_load(ok(server, "config", "show")) == {"config": {"core.https_address": f"127.0.0.1:{port}"}}
    # It really listens.
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert ok(server, "config", "set", f"core.https_address=127.0.0.1:{port}") == ""
    assert ok(server, "config", "set", "local:", "core.https_address", f"127.0.0.1:{port}") == ""
    assert ok(server, "config", "unset", "core.https_address") == ""
    assert "core.https_address" not in server.call("GET", "/1.0")["config"]

    before = snapshot_state(server)
    fails(server, "config", "set", "no.such.key=1", contains="no.such.key")
    fails(server, "config", "unset", "core.https_address", contains="not currently set")
    fails(server, "config", "set", "core.https_address", "not an address", contains="core.https_address")
    assert snapshot_state(server) == before


def test_config_device(ready_server, tmp_path):
    s = ready_server
    share = tmp_path / "share"
    share.mkdir()
    (share / "file").write_text("shared-data\n")
    os.chmod(tmp_path, 0o755)
    ok(s, "init", "busybox", "c1")
    out = ok(s, "config", "device", "add", "c1", "data", "disk", f"source={share}", "path=/mnt/data")
    assert out == "Device data added to c1\n"
    assert instance(s, "c1")["devices"]["data"] == {"type": "disk", "source": str(share), "path": "/mnt/data"}
    assert ok(s, "config", "device", "list", "c1") == "data\n"
    assert yaml.safe_load(ok(s, "config", "device", "show", "c1")) == {
        "data": {"type": "disk", "source": str(share), "path": "/mnt/data"}}
    assert ok(s, "config", "device", "get", "c1", "data", "path") == "/mnt/data\n"
    assert ok(s, "config", "device", "get", "c1", "root", "pool") == "default\n"
    ok(s, "config", "device", "set", "c1", "data", "readonly=true")
    assert instance(s, "c1")["devices"]["data"]["readonly"] == "true"
    ok(s, "config", "device", "unset", "c1", "data", "readonly")
    assert "readonly" not in instance(s, "c1")["devices"]["data"]
    assert ok(s, "config", "device", "override", "c1", "root", "size=1GiB") == "Device root overridden for c1\n"
    assert instance(s, "c1")["devices"]["root"]["size"] == "1GiB"

    before = snapshot_state(s)
    fails(s, "config", "device", "add", "c1", "data", "disk", "source=/tmp", "path=/x", contains="already exists")
    fails(s, "config", "device", "add", "c1", "bad", "disk", contains="path")
    fails(s, "config", "device", "add", "c1", "bad", "nosuchtype", contains="nosuchtype")
    fails(s, "config", "device", "remove", "c1", "nope", contains="doesn't exist")
    fails(s, "config", "device", "add", "nope", "d", "disk", "source=/tmp", "path=/x", contains='"nope" not found')
    assert snapshot_state(s) == before

    assert ok(s, "config", "device", "remove", "c1", "data", "root") == "Device data removed from c1\n"
    assert "data" not in instance(s, "c1")["devices"]
    fails(s, "config", "device", "remove", "c1", "root", contains="Device from profile(s) cannot be removed")


def test_config_device_disk_is_mounted(ready_server, tmp_path):
    s = ready_server
    share = tmp_path / "share"
    share.mkdir()
    (share / "file").write_text("shared-data\n")
    os.chmod(tmp_path, 0o755)
    ok(s, "init", "busybox", "c1")
    ok(s, "config", "device", "add", "c1", "data", "disk", f"source={share}", "path=/mnt/data")
    ok(s, "start", "c1")
    assert ok(s, "exec", "c1", "--", "cat", "/mnt/data/file") == "shared-data\n"


# --- snapshots -----------------------------------------------------------------------------------------------------
def test_snapshots(ready_server):
    s = ready_server
    ok(s, "launch", "busybox", "c1")
    ok(s, "exec", "c1", "--", "sh", "-c", "echo v1 > /root/data")
    assert ok(s, "snapshot", "create", "c1", "s0") == ""
    assert ok(s, "snapshot", "create", "c1") == ""
    names = sorted(x["name"] for x in s.call("GET", "/1.0/instances/c1/snapshots?recursion=1"))
    assert names == ["s0", "snap0"]
    rows = csv_rows(ok(s, "snapshot", "list", "c1", "-f", "csv"))
    assert [r[0] for r in rows] == ["s0", "snap0"] and all(r[3] == "NO" for r in rows)
    assert re.match(r"\d{4}/\d\d/\d\d \d\d:\d\d", rows[0][1])
    assert "| s0 " in ok(s, "snapshot", "list", "c1")
    shown = yaml.safe_load(ok(s, "snapshot", "show", "c1", "s0"))
    assert shown["name"] == "s0" and shown["stateful"] is False

    ok(s, "exec", "c1", "--", "sh", "-c", "echo v2 > /root/data; touch /root/new")
    assert ok(s, "snapshot", "rename", "c1", "s0", "base") == ""
    assert [r[0] for r in csv_rows(ok(s, "snapshot", "list", "c1", "-f", "csv", "-c", "n"))] == ["base", "snap0"]
    assert ok(s, "snapshot", "restore", "c1", "base") == ""
    assert run_in(s, "c1", "cat", "/root/data") == "v1\n"
    assert s.exec("c1", ["test", "-e", "/root/new"])[0] == 1
    # The top-level verb too, and on a stopped instance.
    ok(s, "exec", "c1", "--", "sh", "-c", "echo v3 > /root/data")
    ok(s, "stop", "-f", "c1")
    assert ok(s, "restore", "c1", "base") == ""
    ok(s, "start", "c1")
    assert run_in(s, "c1", "cat", "/root/data") == "v1\n"

    before = snapshot_state(s)
    fails(s, "snapshot", "create", "c1", "base", contains="already")
    fails(s, "snapshot", "create", "c1", "bad/name", contains="Invalid snapshot name")
    fails(s, "snapshot", "restore", "c1", "nope", contains="not found")
    fails(s, "snapshot", "delete", "c1", "nope", contains="not found")
    fails(s, "snapshot", "rename", "c1", "base", "snap0", contains="already")
    fails(s, "snapshot", "create", "nope", "x", contains='"nope" not found')
    fails(s, "snapshot", "list", "nope", contains='"nope" not found')
    assert snapshot_state(s) == before

    assert ok(s, "snapshot", "create", "c1", "base", "--reuse") == ""
    assert ok(s, "snapshot", "delete", "c1", "snap0") == ""
    assert ok(s, "delete", "c1/base") == ""
    assert s.call("GET", "/1.0/instances/c1/snapshots") == []
    assert ok(s, "snapshot", "list", "c1", "-f", "csv") == ""


# --- profiles ------------------------------------------------------------------------------------------------------
def test_profiles(ready_server):
    s = ready_server
    assert ok(s, "profile", "create", "p1", "--description", "first") == "Profile p1 created\n"
    assert s.call("GET", "/1.0/profiles/p1")["description"] == "first"
    ok(s, "profile", "create", "p2", input="config:\n  user.from: stdin\n")
    assert s.call("GET", "/1.0/profiles/p2")["config"] == {"user.from": "stdin"}
    ok(s, "profile", "set", "p1", "environment.P1=yes")
    ok(s, "profile", "set", "p1", "limits.memory", "80MiB")
    assert ok(s, "profile", "get", "p1", "limits.memory") == "80MiB\n"
    ok(s, "profile", "unset", "p1", "limits.memory")
    assert s.call("GET", "/1.0/profiles/p1")["config"] == {"environment.P1": "yes"}
    assert ok(s, "profile", "device", "add", "p1", "tmp", "disk", "source=/tmp", "path=/mnt/tmp") == \
        "Device tmp added to p1\n"
    assert s.call("GET", "/1.0/profiles/p1")["devices"] == {"tmp": {"type": "disk", "source": "/tmp",
                                                                    "path": "/mnt/tmp"}}
    assert ok(s, "profile", "device", "list", "p1") == "tmp\n"
    shown = yaml.safe_load(ok(s, "profile", "show", "p1"))
    assert shown["name"] == "p1" and shown["config"] == {"environment.P1": "yes"} and "tmp" in shown["devices"]
    assert csv_rows(ok(s, "profile", "list", "-f", "csv")) == [["default", s.call("GET", "/1.0/profiles/default")
                                                              ["description"], "0"], ["p1", "first", "0"],
                                                             ["p2", "", "0"]]

    # Which profiles an instance has.
    ok(s, "launch", "busybox", "c1")
    assert ok(s, "profile", "add", "c1", "p1") == "Profile p1 added to c1\n"
    assert instance(s, "c1")["profiles"] == ["default", "p1"]
    assert "P1=yes\n" in ok(s, "exec", "c1", "--", "env")
    assert ok(s, "profile", "assign", "c1", "default,p2") == "Profiles default,p2 applied to c1\n"
    assert instance(s, "c1")["profiles"] == ["default", "p2"]
    assert ok(s, "profile", "remove", "c1", "p2") == "Profile p2 removed from c1\n"
    assert instance(s, "c1")["profiles"] == ["default"]
    ok(s, "profile", "add", "c1", "p1")
    assert ["p1", "first", "1"] in csv_rows(ok(s, "profile", "list", "-f", "csv"))

    before = snapshot_state(s)
    fails(s, "profile", "create", "p1", contains='"p1" already exists')
    fails(s, "profile", "create", "bad/name", contains="Invalid profile name")
    fails(s, "profile", "add", "c1", "p1", contains="already applied")
    fails(s, "profile", "add", "c1", "nope", contains='Profile "nope" not found')
    fails(s, "profile", "remove", "c1", "p2", contains="isn't currently applied")
    fails(s, "profile", "assign", "c1", "default,nope", contains='"nope" not found')
    fails(s, "profile", "delete", "p1", contains="in use")
    fails(s, "profile", "show", "nope", contains='Profile "nope" not found')
    fails(s, "profile", "set", "p1", "limits.memory=abc", contains="limits.memory")
    fails(s, "profile", "device", "add", "p1", "tmp", "disk", "source=/tmp", "path=/x", contains="already exists")
    fails(s, "profile", "device", "remove", "p1", "nope", contains="doesn't exist")
    fails(s, "profile", "rename", "p2", "p1", contains="already")
    assert snapshot_state(s) == before

    assert ok(s, "profile", "device", "remove", "p1", "tmp") == "Device tmp removed from p1\n"
    assert s.call("GET", "/1.0/profiles/p1")["devices"] == {}
    ok(s, "profile", "remove", "c1", "p1")
    assert ok(s, "profile", "rename", "p1", "p3") == "Profile p1 renamed to p3\n"
    assert exists(s, "/1.0/profiles/p3") and not exists(s, "/1.0/profiles/p1")
    assert ok(s, "profile", "delete", "p3", "p2") == "Profile p3 deleted\nProfile p2 deleted\n"
    assert s.call("GET", "/1.0/profiles") == ["/1.0/profiles/default"]
    # "" assigns no profiles at all: the instance needs a root disk of its own then.
    fails(s, "profile", "assign", "c1", "", contains="root")
    ok(s, "init", "busybox", "c2", "--no-profiles", "-s", "default")
    ok(s, "profile", "assign", "c2", "default")
    assert instance(s, "c2")["profiles"] == ["default"]
    assert ok(s, "profile", "assign", "c2", "") == "Profiles  applied to c2\n"
    assert instance(s, "c2")["profiles"] == []


# --- projects ------------------------------------------------------------------------------------------------------
def test_projects(ready_server, busybox_image):
    s = ready_server
    ok(s, "launch", "busybox", "c0")
    assert ok(s, "project", "create", "p1", "-c", "user.team=a", "--description", "team a") == \
        "Project p1 created\n"
    project = s.call("GET", "/1.0/projects/p1")
    assert project["config"]["user.team"] == "a" and project["description"] == "team a"
    # Images and profiles are the project's own: give it an image and a root disk.
    ok(s, "image", "import", busybox_image, "--alias", "busybox", "--project", "p1")
    ok(s, "profile", "device", "add", "default", "root", "disk", "path=/", "pool=default", "--project", "p1")
    assert ok(s, "launch", "busybox", "c1", "--project", "p1") == "Launching c1\n"
    assert status(s, "c1", project="p1") == "Running"
    assert not exists(s, "/1.0/instances/c1")

    # c1 lives in p1 only.
    assert ok(s, "list", "-f", "csv", "-c", "n") == "c0\n"
    assert ok(s, "list", "-f", "csv", "-c", "n", "--project", "p1") == "c1\n"
    assert csv_rows(ok(s, "list", "--all-projects", "-f", "csv", "-c", "en")) == [["default", "c0"], ["p1", "c1"]]
    assert ok(s, "list", "--all-projects", "-c", "ns").count("PROJECT") == 0
    assert "PROJECT" in ok(s, "list", "--all-projects")
    fails(s, "exec", "c1", "--", "true", contains='Instance "c1" not found')
    fails(s, "info", "c1", contains='Instance "c1" not found')
    assert ok(s, "exec", "c1", "--project", "p1", "--", "echo", "in-p1") == "in-p1\n"
    ok(s, "stop", "-f", "c1", "--project", "p1")
    assert status(s, "c1", project="p1") == "Stopped"
    ok(s, "snapshot", "create", "c1", "s0", "--project", "p1")
    assert len(s.call("GET", "/1.0/instances/c1/snapshots?project=p1")) == 1

    # switch: every request goes to p1 from now on.
    assert ok(s, "project", "get-current") == "default\n"
    assert ok(s, "project", "switch", "p1") == ""
    assert ok(s, "project", "get-current") == "p1\n"
    assert ok(s, "list", "-f", "csv", "-c", "n") == "c1\n"
    assert ["p1 (current)"] == [r[0] for r in csv_rows(ok(s, "project", "list", "-f", "csv")) if "current" in r[0]]
    ok(s, "start", "c1")
    assert status(s, "c1", project="p1") == "Running"
    assert ok(s, "list", "-f", "csv", "-c", "n", "--project", "default") == "c0\n"
    fails(s, "project", "switch", "nope", contains='Project "nope" not found')
    assert ok(s, "project", "get-current") == "p1\n"
    ok(s, "project", "switch", "default")
    assert ok(s, "list", "-f", "csv", "-c", "n") == "c0\n"

    shown = yaml.safe_load(ok(s, "project", "show", "p1"))
    assert shown["name"] == "p1" and shown["config"]["user.team"] == "a"
    assert any(u.startswith("/1.0/instances/c1") for u in shown["used_by"])
    ok(s, "project", "set", "p1", "user.team=b")
    assert ok(s, "project", "get", "p1", "user.team") == "b\n"
    ok(s, "project", "unset", "p1", "user.team")
    assert "user.team" not in s.call("GET", "/1.0/projects/p1")["config"]

    before = snapshot_state(s)
    fails(s, "project", "create", "p1", contains='"p1" already exists')
    fails(s, "project", "create", "bad/name", contains="Invalid project name")
    fails(s, "project", "delete", "p1", contains="empty")
    fails(s, "project", "delete", "nope", contains='Project "nope" not found')
    fails(s, "list", "--project", "nope", contains='Project "nope" not found')
    fails(s, "launch", "busybox", "c9", "--project", "nope", contains='Project "nope" not found')
    assert snapshot_state(s) == before

    ok(s, "delete", "-f", "c1", "--project", "p1")
    ok(s, "image", "delete", "busybox", "--project", "p1")
    assert ok(s, "project", "rename", "p1", "p2") == "Project p1 renamed to p2\n"
    assert ok(s, "project", "delete", "p2") == "Project p2 deleted\n"
    assert s.call("GET", "/1.0/projects") == ["/1.0/projects/default"]


# --- storage -------------------------------------------------------------------------------------------------------
def test_storage_dir(ready_server):
    s = ready_server
    assert csv_rows(ok(s, "storage", "list", "-f", "csv")) == [["default", "dir", "", "1", "CREATED"]]
    shown = yaml.safe_load(ok(s, "storage", "show", "default"))
    assert shown["name"] == "default" and shown["driver"] == "dir"
    ok(s, "launch", "busybox", "c1")
    ok(s, "snapshot", "create", "c1", "s0")
    info = yaml.safe_load(ok(s, "storage", "info", "default"))
    assert info["info"]["driver"] == "dir" and info["info"]["name"] == "default"
    assert info["used by"]["instances"] == ["c1"] and info["used by"]["profiles"] == ["default"]
    assert re.fullmatch(r"[\d.]+(B|KiB|MiB|GiB|TiB)", info["info"]["total space"])
    raw = yaml.safe_load(ok(s, "storage", "info", "default", "--bytes"))
    assert int(raw["info"]["total space"]) > 0
    volumes = csv_rows(ok(s, "storage", "volume", "list", "default", "-f", "csv"))
    assert ["container", "c1"] in [v[:2] for v in volumes]
    assert ["container (snapshot)", "c1/s0"] in [v[:2] for v in volumes]
    volume = yaml.safe_load(ok(s, "storage", "volume", "show", "default", "container/c1"))
    assert volume["name"] == "c1" and volume["type"] == "container"

    assert ok(s, "storage", "create", "p2", "dir", "--description", "second") == "Storage pool p2 created\n"
    pool = s.call("GET", "/1.0/storage-pools/p2")
    assert pool["driver"] == "dir" and pool["description"] == "second"
    ok(s, "storage", "set", "p2", "user.x", "1")
    assert ok(s, "storage", "get", "p2", "user.x") == "1\n"
    ok(s, "init", "busybox", "c2", "-s", "p2")
    assert instance(s, "c2")["expanded_devices"]["root"]["pool"] == "p2"
    assert os.path.isdir(os.path.join(s.dir, "storage-pools", "p2", "containers", "default_c2"))

    before = snapshot_state(s)
    fails(s, "storage", "delete", "p2", contains="in use")
    fails(s, "storage", "create", "p2", "dir", contains="already exists")
    fails(s, "storage", "create", "p3", "zfs", contains="zfs")
    fails(s, "storage", "create", "x/y", "dir", contains="Invalid storage pool name")
    fails(s, "storage", "create", "p3", "dir", "bogus.key=1", contains="bogus.key")
    fails(s, "storage", "show", "nope", contains='Storage pool "nope" not found')
    fails(s, "storage", "delete", "nope", contains='Storage pool "nope" not found')
    fails(s, "storage", "volume", "list", "nope", contains='"nope" not found')
    assert snapshot_state(s) == before

    ok(s, "delete", "c2")
    assert ok(s, "storage", "delete", "p2") == "Storage pool p2 deleted\n"
    assert not exists(s, "/1.0/storage-pools/p2")


def test_storage_btrfs_loop(ready_server):
    s = ready_server
    drivers = [d["Name"] for d in s.call("GET", "/1.0")["environment"]["storage_supported_drivers"]]
    if "btrfs" not in drivers:
        pytest.skip("btrfs is not supported on this host")
    ok(s, "storage", "create", "bt", "btrfs", "size=400MiB")
    pool = s.call("GET", "/1.0/storage-pools/bt")
    assert pool["driver"] == "btrfs" and pool["config"]["size"] == "400MiB"
    image = os.path.join(s.dir, "disks", "bt.img")
    assert os.path.getsize(image) == 400 * 1024 * 1024
    info = yaml.safe_load(ok(s, "storage", "info", "bt", "--bytes"))
    assert 300 * 1024 * 1024 < int(info["info"]["total space"]) <= 400 * 1024 * 1024
    ok(s, "launch", "busybox", "cb", "-s", "bt")
    assert run_in(s, "cb", "echo", "on-btrfs") == "on-btrfs\n"
    ok(s, "snapshot", "create", "cb", "s0")
    assert ["container", "cb"] in [v[:2] for v in csv_rows(ok(s, "storage", "volume", "list", "bt", "-f", "csv"))]
    fails(s, "storage", "delete", "bt", contains="in use")
    ok(s, "delete", "-f", "cb")
    assert ok(s, "storage", "delete", "bt") == "Storage pool bt deleted\n"
    assert not os.path.exists(image)
    losetup = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert image not in losetup


# --- operations ----------------------------------------------------------------------------------------------------
def test_operations(ready_server):
    s = ready_server
    s.listen_https()
    ok(s, "launch", "busybox", "c1")
    ok(s, "config", "trust", "add", "pending")  # a token is a running operation
    rows = csv_rows(ok(s, "operation", "list", "-f", "csv"))
    assert rows and all(re.fullmatch(r"[0-9a-f-]{36}", r[0]) for r in rows)
    token = [r for r in rows if r[1] == "TOKEN"]
    assert len(token) == 1 and token[0][3] == "RUNNING", rows
    shown = yaml.safe_load(ok(s, "operation", "show", token[0][0]))
    assert shown["id"] == token[0][0] and shown["status"] == "Running" and shown["class"] == "token"
    assert json.loads(ok(s, "operation", "list", "-f", "json"))
    assert "| TOKEN " in ok(s, "operation", "list")
    assert ok(s, "operation", "delete", token[0][0]) == f"Operation {token[0][0]} deleted\n"
    assert s.call("GET", f"/1.0/operations/{token[0][0]}")["status"] == "Cancelled"
    fails(s, "operation", "show", "nope", contains="not found")


# --- bad input -----------------------------------------------------------------------------------------------------
BAD_INPUT = [
    (["list", "nope:"], 'The remote "nope" doesn\'t exist'),
    (["info", "nope:c1"], 'The remote "nope" doesn\'t exist'),
    (["launch", "nope:busybox", "c9"], 'The remote "nope" doesn\'t exist'),
    (["exec", "nope:c1", "--", "true"], 'The remote "nope" doesn\'t exist'),
    (["info", "nope"], 'Instance "nope" not found'),
    (["start", "nope"], 'Instance "nope" not found'),
    (["config", "show", "nope"], 'Instance "nope" not found'),
    (["profile", "show", "nope"], 'Profile "nope" not found'),
    (["storage", "show", "nope"], 'Storage pool "nope" not found'),
    (["project", "show", "nope"], 'Project "nope" not found'),
    (["image", "show", "nope"], 'Image "nope" not found'),
    (["launch", "nope", "c9"], 'Image "nope" not found'),
    (["launch", "busybox", "c1"], 'already exists'),
    (["rename", "c2", "c1"], 'already'),
    (["launch", "busybox", "bad_name"], 'Invalid instance name'),
    (["launch", "busybox", "-c", "no.such.key=1"], 'no.such.key'),
    (["launch", "busybox", "c9", "-c", "limits.memory=abc"], 'limits.memory'),
    (["launch", "busybox", "c9", "-c", "novalue"], 'novalue'),
    (["config", "set", "c1", "limits.memory=abc"], 'limits.memory'),
    (["config", "set", "c1", "no.such.key=1"], 'no.such.key'),
    (["profile", "set", "default", "limits.memory=abc"], 'limits.memory'),
    (["list", "--bogus"], 'unknown flag: --bogus'),
    (["launch", "busybox", "c9", "-Z"], "unknown shorthand flag: 'Z'"),
    (["stop", "c1", "--timeout"], 'flag needs an argument: --timeout'),
    (["delete", "c1"], 'stop it first or pass --force'),
    (["launch"], 'Invalid number of arguments'),
    (["start"], 'Invalid number of arguments'),
    (["rename", "c1"], 'Invalid number of arguments'),
    (["snapshot", "create"], 'Invalid number of arguments'),
    (["config", "get"], 'Invalid number of arguments'),
    (["profile", "create"], 'Invalid number of arguments'),
    (["storage", "create", "p9"], 'Invalid number of arguments'),
    (["frobnicate"], 'unknown command "frobnicate" for "ferry"'),
    (["image", "frobnicate"], 'unknown command "frobnicate" for "ferry image"'),
]


def test_bad_input_changes_nothing(ready_server):
    s = ready_server
    ok(s, "launch", "busybox", "c1")
    ok(s, "init", "busybox", "c2")
    before = snapshot_state(s)
    for args, message in BAD_INPUT:
        proc = s.ferry(*args, check=False)
        assert proc.returncode == 1, (args, proc.returncode, proc.stdout, proc.stderr)
        lines = proc.stderr.splitlines()
        assert lines[-1].startswith("Error: ") and message.lower() in lines[-1].lower(), (args, proc.stderr)
        assert [line for line in lines if line.startswith("Error")] == [lines[-1]], (args, proc.stderr)
        assert len(lines) == 1 or lines[0].startswith("Usage: "), (args, proc.stderr)
    assert snapshot_state(s) == before


def test_help_and_version(server):
    out = ok(server, "--version")
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?\S*\n", out)
    help_text = ok(server, "launch", "--help")
    assert "Usage:\n  ferry launch" in help_text and "--profile" in help_text
    assert "Available Commands:" in ok(server, "config", "--help")
    assert "Available Commands:" in ok(server)


# --- quiet and progress --------------------------------------------------------------------------------------------
def test_quiet_and_no_progress_on_pipes(server, busybox_image):
    s = server
    ok(s, "admin", "init", "--auto")
    proc = s.ferry("image", "import", busybox_image, "--alias", "busybox", check=False)
    assert proc.returncode == 0 and re.fullmatch(r"Image imported with fingerprint: [0-9a-f]{64}\n", proc.stdout)
    assert proc.stderr == ""
    proc = s.ferry("launch", "busybox", "c1", check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "Launching c1\n", "")
    proc = s.ferry("launch", "busybox", "c2", "--quiet", check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert status(s, "c2") == "Running"
    for args in (["stop", "-q", "c2"], ["snapshot", "create", "-q", "c2"], ["delete", "-q", "c2"],
                 ["profile", "create", "-q", "p1"], ["project", "create", "-q", "p1"],
                 ["storage", "create", "-q", "p2", "dir"]):
        proc = s.ferry(*args, check=False)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), args
    assert not exists(s, "/1.0/instances/c2")
    # On a terminal, the image unpack shows progress and clears it again.
    proc = subprocess.run(["script", "-qec", f"{FERRY} launch busybox c3", "/dev/null"], env=s.env(),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0 and "Launching c3" in proc.stdout
    assert status(s, "c3") == "Running"


# --- edit from a pipe ----------------------------------------------------------------------------------------------
def test_edit_verbs_read_yaml_from_stdin(ready_server):
    s = ready_server
    ok(s, "init", "busybox", "c1", "-c", "limits.memory=128MiB")
    shown = yaml.safe_load(ok(s, "config", "show", "c1"))
    shown["config"]["limits.memory"] = "48MiB"
    shown["description"] = "edited"
    assert ok(s, "config", "edit", "c1", input=yaml.safe_dump(shown)) == ""
    inst = instance(s, "c1")
    assert inst["config"]["limits.memory"] == "48MiB" and inst["description"] == "edited"

    profile = yaml.safe_load(ok(s, "profile", "show", "default"))
    profile["config"] = {"user.edited": "yes"}
    ok(s, "profile", "edit", "default", input=yaml.safe_dump(profile))
    assert s.call("GET", "/1.0/profiles/default")["config"] == {"user.edited": "yes"}
    ok(s, "project", "create", "p1")
    ok(s, "project", "edit", "p1", input="description: edited project\nconfig:\n  user.x: '1'\n")
    project = s.call("GET", "/1.0/projects/p1")
    assert project["description"] == "edited project" and project["config"]["user.x"] == "1"
    pool = yaml.safe_load(ok(s, "storage", "show", "default"))
    pool["description"] = "edited pool"
    ok(s, "storage", "edit", "default", input=yaml.safe_dump(pool))
    assert s.call("GET", "/1.0/storage-pools/default")["description"] == "edited pool"
    ok(s, "config", "edit", input="config:\n  user.server: edited\n")
    assert s.call("GET", "/1.0")["config"]["user.server"] == "edited"

    before = snapshot_state(s)
    fails(s, "config", "edit", "c1", input="config: [\n", contains="YAML")
    fails(s, "config", "edit", "c1", input="config:\n  limits.memory: abc\n", contains="limits.memory")
    fails(s, "profile", "edit", "default", input="devices:\n  x:\n    type: nosuchtype\n", contains="nosuchtype")
    assert snapshot_state(s) == before


def test_query(ready_server):
    s = ready_server
    assert json.loads(ok(s, "query", "/1.0"))["api_version"] == "1.0"
    ok(s, "init", "busybox", "c1")
    op = json.loads(ok(s, "query", "-X", "PUT", "-d", '{"action":"start"}', "--wait", "/1.0/instances/c1/state"))
    assert op["status"] == "Success"
    assert status(s, "c1") == "Running"
    assert json.loads(ok(s, "query", "--raw", "/1.0/instances"))["type"] == "sync"
    fails(s, "query", "/1.0/instances/nope", contains='Instance "nope" not found')
    fails(s, "query", "-X", "POST", "-d", "{bad", "/1.0/profiles", contains="JSON")
