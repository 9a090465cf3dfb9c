"""Containers through the REST API: create, start, exec, stop, snapshots, rename, delete, and bad input."""
import os
import subprocess
import time

import pytest

from ferry_harness import ApiError


def state(server, name):
    return server.call("GET", f"/1.0/instances/{name}/state")


def test_launch_exec_stop_delete(ready_server):
    s = ready_server
    s.launch("c1", config={"environment.GREETING": "hello"})
    st = state(s, "c1")
    assert st["status"] == "Running" and st["pid"] > 0
    code, out, err = s.exec("c1", ["sh", "-c", "echo out-$GREETING; echo err >&2; exit 3"])
    assert (code, out, err) == (3, b"out-hello\n", b"err\n")
    # Unprivileged: root in the container is uid 1000000 on the host.
    code, out, _ = s.exec("c1", ["cat", "/proc/self/uid_map"])
    assert out.split()[:3] == [b"0", b"1000000", b"1000000000"]
    assert s.exec("c1", ["no-such-command"])[0] == 127
    inst = s.call("GET", "/1.0/instances/c1")
    assert inst["status"] == "Running" and inst["expanded_devices"]["root"]["pool"] == "default"
    assert inst["config"]["volatile.base_image"] and inst["config"]["image.os"] == "busybox"

    # Running instances are not deleted.
    s.expect_error("DELETE", "/1.0/instances/c1", contains="running")
    s.call("PUT", "/1.0/instances/c1/state", {"action": "stop", "timeout": 30})
    assert state(s, "c1")["status"] == "Stopped"
    s.call("DELETE", "/1.0/instances/c1")
    s.expect_error("GET", "/1.0/instances/c1", status=404, contains='Instance "c1" not found')
    volume = os.path.join(s.dir, "storage-pools", "default", "containers", "default_c1")
    assert not os.path.exists(volume)


def test_privileged_and_limits(ready_server):
    s = ready_server
    s.launch("p1", config={"security.privileged": "true", "limits.memory": "64MiB"})
    code, out, _ = s.exec("p1", ["cat", "/proc/self/uid_map"])
    assert out.split()[:3] == [b"0", b"0", b"4294967295"]
    code, out, _ = s.exec("p1", ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
    if code == 0:
        assert int(out) == 64 * 1024 * 1024
    # A file written as container root is owned by host root when privileged.
    s.exec("p1", ["touch", "/root/marker"])
    marker = os.path.join(s.dir, "storage-pools", "default", "containers", "default_p1", "rootfs", "root", "marker")
    assert os.stat(marker).st_uid == 0


def test_switch_to_privileged_remaps(ready_server):
    s = ready_server
    s.launch("c2", start=False)
    rootfs = os.path.join(s.dir, "storage-pools", "default", "containers", "default_c2", "rootfs")
    assert os.stat(os.path.join(rootfs, "bin", "busybox")).st_uid == 1000000
    s.call("PATCH", "/1.0/instances/c2", {"config": {"security.privileged": "true"}})
    s.call("PUT", "/1.0/instances/c2/state", {"action": "start"})
    assert os.stat(os.path.join(rootfs, "bin", "busybox")).st_uid == 0
    assert s.exec("c2", ["true"])[0] == 0


def test_restart_and_force_stop(ready_server):
    s = ready_server
    s.launch("c3")
    pid = state(s, "c3")["pid"]
    s.call("PUT", "/1.0/instances/c3/state", {"action": "restart", "timeout": 30})
    st = state(s, "c3")
    assert st["status"] == "Running" and st["pid"] != pid
    s.call("PUT", "/1.0/instances/c3/state", {"action": "stop", "force": True})
    assert state(s, "c3")["status"] == "Stopped"
    s.expect_error("PUT", "/1.0/instances/c3/state", {"action": "stop"}, contains="already stopped")
    s.expect_error("PUT", "/1.0/instances/c3/state", {"action": "dance"}, status=400, contains="Unknown action")


def test_snapshots(ready_server):
    s = ready_server
    s.launch("c4")
    s.exec("c4", ["sh", "-c", "echo one > /root/f"])
    s.call("POST", "/1.0/instances/c4/snapshots", {"name": "snap0"})
    s.exec("c4", ["sh", "-c", "echo two > /root/f"])
    s.call("POST", "/1.0/instances/c4/snapshots", {})  # generated name
    names = [x["name"] for x in s.call("GET", "/1.0/instances/c4/snapshots?recursion=1")]
    assert names == ["snap0", "snap1"]
    s.expect_error("POST", "/1.0/instances/c4/snapshots", {"name": "snap0"}, status=409)
    s.expect_error("POST", "/1.0/instances/c4/snapshots", {"name": "a/b"}, status=400)

    s.call("POST", "/1.0/instances/c4/snapshots/snap1", {"name": "later"})
    s.expect_error("GET", "/1.0/instances/c4/snapshots/snap1", status=404)
    # Restore brings the content back (the container is restarted around it).
    s.call("PUT", "/1.0/instances/c4", {"restore": "snap0"})
    assert s.exec("c4", ["cat", "/root/f"])[1] == b"one\n"
    assert state(s, "c4")["status"] == "Running"
    s.call("DELETE", "/1.0/instances/c4/snapshots/later")
    assert [x["name"] for x in s.call("GET", "/1.0/instances/c4/snapshots?recursion=1")] == ["snap0"]
    full = s.call("GET", "/1.0/instances/c4?recursion=1")
    assert [x["name"] for x in full["snapshots"]] == ["snap0"]


def test_rename(ready_server):
    s = ready_server
    s.launch("old", start=False)
    s.call("POST", "/1.0/instances/old/snapshots", {"name": "s0"})
    s.launch("taken", start=False)
    s.expect_error("POST", "/1.0/instances/old", {"name": "taken"}, status=409)
    s.expect_error("POST", "/1.0/instances/old", {"name": "bad_name"}, status=400)
    s.call("POST", "/1.0/instances/old", {"name": "new"})
    assert s.call("GET", "/1.0/instances/new/snapshots") == ["/1.0/instances/new/snapshots/s0"]
    s.call("PUT", "/1.0/instances/new/state", {"action": "start"})
    assert s.exec("new", ["hostname"])[1] == b"new\n"
    s.expect_error("POST", "/1.0/instances/new", {"name": "newer"}, contains="running")


def test_list_formats(ready_server):
    s = ready_server
    s.launch("l1", start=False)
    s.launch("l2", start=False)
    assert s.call("GET", "/1.0/instances") == ["/1.0/instances/l1", "/1.0/instances/l2"]
    full = s.call("GET", "/1.0/instances?recursion=2")
    assert [i["name"] for i in full] == ["l1", "l2"] and "state" in full[0]


@pytest.mark.parametrize("body,status,message", [
    ({"name": "bad_name", "source": {"type": "image", "alias": "busybox"}}, 400, "Invalid instance name"),
    ({"name": "x1", "source": {"type": "image", "alias": "nope"}}, 404, 'Image "nope" not found'),
    ({"name": "x1", "source": {"type": "image", "alias": "busybox"}, "profiles": ["nope"]}, 404,
     'Profile "nope" not found'),
    ({"name": "x1", "source": {"type": "image", "alias": "busybox"}, "config": {"foo.bar": "1"}}, 400,
     "Unknown configuration key: foo.bar"),
    ({"name": "x1", "source": {"type": "image", "alias": "busybox"}, "config": {"limits.memory": "abc"}}, 400,
     "limits.memory"),
    ({"name": "x1", "source": {"type": "image", "alias": "busybox"}, "config": {"volatile.uuid": "x"}}, 400,
     "Volatile"),
    ({"name": "x1", "source": {"type": "image", "alias": "busybox"},
      "devices": {"root": {"type": "disk", "path": "/", "pool": "nopool"}}}, 404, 'Storage pool "nopool" not found'),
    ({"name": "x1", "source": {"type": "image", "alias": "busybox"}, "devices": {"eth0": {"type": "nic"}}}, 400,
     "not supported"),
    ({"name": "x1", "source": {"type": "image", "alias": "busybox"}, "profiles": []}, 400, "No root device"),
])
def test_create_bad_input_changes_nothing(ready_server, body, status, message):
    s = ready_server
    s.expect_error("POST", "/1.0/instances", body, status=status, contains=message)
    assert s.call("GET", "/1.0/instances") == []
    assert os.listdir(os.path.join(s.dir, "storage-pools", "default", "containers")) == []


def test_taken_name_and_unknown_project(ready_server):
    s = ready_server
    s.launch("dup", start=False)
    s.expect_error("POST", "/1.0/instances", {"name": "dup", "source": {"type": "image", "alias": "busybox"}},
                   status=409, contains='Instance "dup" already exists')
    s.expect_error("POST", "/1.0/instances?project=nope", {"name": "y", "source": {"type": "none"}},
                   status=404, contains='Project "nope" not found')
    s.expect_error("GET", "/1.0/instances?project=nope", status=404)


def test_bad_requests(ready_server):
    s = ready_server
    s.expect_error("POST", "/1.0/instances", body=b"{not json", status=400, contains="Invalid JSON")
    s.expect_error("POST", "/1.0/instances", body=b"[1,2]", status=400)
    big = b'{"name":"' + b"a" * (5 * 1024 * 1024) + b'"}'
    s.expect_error("POST", "/1.0/instances", body=big, status=413)
    s.expect_error("GET", "/1.0/instances/nope", status=404)
    s.expect_error("GET", "/1.0/nothing-here", status=404)
    s.expect_error("DELETE", "/1.0", status=405)
    # The bad requests changed nothing.
    assert s.call("GET", "/1.0/instances") == []


def test_update_validation(ready_server):
    s = ready_server
    s.launch("u1", start=False)
    s.expect_error("PATCH", "/1.0/instances/u1", {"config": {"limits.cpu": "lots"}}, contains="limits.cpu")
    s.expect_error("PATCH", "/1.0/instances/u1", {"profiles": ["nope"]}, contains='Profile "nope" not found')
    s.call("PATCH", "/1.0/instances/u1", {"config": {"limits.cpu": "1", "user.note": "hi"}})
    inst = s.call("GET", "/1.0/instances/u1")
    assert inst["config"]["user.note"] == "hi" and inst["config"]["volatile.uuid"]
    # PUT replaces the writable fields; volatile keys are the daemon's and survive.
    inst["config"] = {"user.other": "x"}
    s.call("PUT", "/1.0/instances/u1", {k: inst[k] for k in ("config", "devices", "profiles", "description")})
    after = s.call("GET", "/1.0/instances/u1")["config"]
    assert "user.note" not in after and after["user.other"] == "x" and after["volatile.uuid"]


def test_sigterm_keeps_containers_running(ready_server):
    s = ready_server
    s.launch("keep")
    pid = state(s, "keep")["pid"]
    s.stop()
    assert os.path.exists(f"/proc/{pid}"), "stopping the daemon stopped the container"
    assert not os.path.exists(s.socket_path)
    s.start()
    st = state(s, "keep")
    assert st["status"] == "Running" and st["pid"] == pid


def test_interrupted_create_is_cleaned_up(ready_server):
    """A daemon killed while creating an instance leaves a half-made row; the next start removes it."""
    s = ready_server
    status, env = s.api("POST", "/1.0/instances", {"name": "half", "source": {"type": "image", "alias": "busybox"}})
    assert status == 202
    s.kill()
    s.start()
    # Either the create finished before the kill, or it was rolled back: never a stuck half-instance.
    instances = s.call("GET", "/1.0/instances?recursion=1")
    if instances:
        assert instances[0]["name"] == "half" and instances[0]["status"] == "Stopped"
        s.call("PUT", "/1.0/instances/half/state", {"action": "start"})
    else:
        leftovers = os.listdir(os.path.join(s.dir, "storage-pools", "default", "containers"))
        assert leftovers == []


def test_btrfs_pool_instances(server, busybox_image):
    """On a btrfs pool (a loop file ferry creates), instances are snapshots of an unpacked image volume."""
    s = server
    s.init_storage(driver="btrfs", pool="fast", config={"size": "512MiB"})
    s.import_image(busybox_image)
    s.launch("b1")
    assert s.exec("b1", ["sh", "-c", "echo on-btrfs > /root/f; cat /root/f"])[1] == b"on-btrfs\n"
    s.call("POST", "/1.0/instances/b1/snapshots", {"name": "s0"})
    s.exec("b1", ["rm", "/root/f"])
    s.call("PUT", "/1.0/instances/b1", {"restore": "s0"})
    assert s.exec("b1", ["cat", "/root/f"])[1] == b"on-btrfs\n"
    pool = os.path.join(s.dir, "storage-pools", "fast")
    volume = os.path.join(pool, "containers", "default_b1")
    # A btrfs subvolume has inode number 256.
    assert os.stat(volume).st_ino == 256
    assert os.stat(os.path.join(pool, "containers-snapshots", "default_b1", "s0")).st_ino == 256
    s.launch("b2", start=False)
    usage = s.call("GET", "/1.0/storage-pools/fast/resources")
    assert usage["space"]["total"] > 0
    s.call("PUT", "/1.0/instances/b1/state", {"action": "stop", "force": True})
    s.call("DELETE", "/1.0/instances/b1")
    s.call("DELETE", "/1.0/instances/b2")
    assert not os.path.exists(volume)
