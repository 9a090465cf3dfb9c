"""ferry export / ferry import: Incus-format backup tarballs streamed from and to real ferryd servers.

Round trips keep every file exactly (content, owners, modes, xattrs, ACLs, capabilities, symlinks, hard links,
sparse files, device nodes, FIFOs, mtimes) for the instance and each snapshot; the archive holds owners as the
container sees them; hostile or broken archives are refused with a clear error and leave nothing behind."""
import io
import json
import os
import struct
import subprocess
import tarfile
import uuid

import pytest

from ferry_harness import ApiError, UnixHTTPConnection
from test_migration import prepare_c1, tree_digest

ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20
SHIFT = 1000000


def pool_dir(server, pool="default"):
    return os.path.join(server.dir, "storage-pools", pool)


def rootfs(server, name, snapshot=None):
    if snapshot:
        return os.path.join(pool_dir(server), "containers-snapshots", f"default_{name}", snapshot, "rootfs")
    return os.path.join(pool_dir(server), "containers", f"default_{name}", "rootfs")


def full_digest(root):
    """tree_digest plus every mtime (timestamps must survive too)."""
    rows = tree_digest(root)
    times = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            times.append((os.path.relpath(path, root), os.lstat(path).st_mtime_ns))
    return rows, sorted(times)


def acl(entries):
    data = struct.pack("<I", 2)
    for tag, perm, ident in entries:
        data += struct.pack("<HHI", tag, perm, ident)
    return data


def make_rich_tree(root, tag):
    """Every kind of file an export must carry, written from the host with the container's shifted ids."""
    base = os.path.join(root, "root", "rich")
    os.makedirs(base)
    os.chown(base, SHIFT + 1000, SHIFT + 1000)
    f = os.path.join(base, "file")
    with open(f, "w") as out:
        out.write(f"content {tag}\n")
    os.chown(f, SHIFT + 1000, SHIFT + 1001)
    os.chmod(f, 0o4751)
    os.setxattr(f, "user.origin", f"ferry {tag}".encode())
    os.setxattr(f, "trusted.note", b"\x00\x01binary")
    os.setxattr(f, "system.posix_acl_access",
                acl([(ACL_USER_OBJ, 7, 0xffffffff), (ACL_USER, 4, SHIFT + 1002), (ACL_GROUP_OBJ, 5, 0xffffffff),
                     (ACL_GROUP, 4, SHIFT + 1003), (ACL_MASK, 5, 0xffffffff), (ACL_OTHER, 1, 0xffffffff)]))
    d = os.path.join(base, "dir-with-default-acl")
    os.mkdir(d)
    os.setxattr(d, "system.posix_acl_default",
                acl([(ACL_USER_OBJ, 7, 0xffffffff), (ACL_USER, 6, SHIFT + 1002), (ACL_GROUP_OBJ, 5, 0xffffffff),
                     (ACL_MASK, 7, 0xffffffff), (ACL_OTHER, 0, 0xffffffff)]))
    os.chown(d, SHIFT, SHIFT)
    cap = os.path.join(base, "ping")
    with open(cap, "wb") as out:
        out.write(b"\x7fELF-not-really")
    os.chown(cap, SHIFT, SHIFT)
    # v3 file capability whose root is the container's root
    os.setxattr(cap, "security.capability", struct.pack("<IIIIII", 0x03000001, 1 << 13, 0, 0, 0, SHIFT))
    os.link(f, os.path.join(base, "hardlink"))
    os.symlink("file", os.path.join(base, "rel-link"))
    os.lchown(os.path.join(base, "rel-link"), SHIFT, SHIFT)
    os.symlink("/etc/passwd", os.path.join(base, "abs-link"))
    os.lchown(os.path.join(base, "abs-link"), SHIFT + 5, SHIFT + 5)
    sparse = os.path.join(base, "sparse")
    with open(sparse, "wb") as out:
        out.seek(64 << 20)
        out.write(b"end")
        out.seek(4096)
        out.write(b"middle")
    os.chown(sparse, SHIFT, SHIFT)
    os.mknod(os.path.join(base, "null"), 0o20666, os.makedev(1, 3))
    os.chown(os.path.join(base, "null"), SHIFT, SHIFT)
    os.mkfifo(os.path.join(base, "fifo"), 0o640)
    os.chown(os.path.join(base, "fifo"), SHIFT + 7, SHIFT + 8)
    big = os.path.join(base, "random")
    with open(big, "wb") as out:
        out.write(os.urandom(3 << 20))
    os.chown(big, SHIFT + 1000, SHIFT + 1000)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), ns=(1500000000123456789, 1600000000987654321),
                     follow_symlinks=False)
    os.utime(base, ns=(1500000000123456789, 1600000000987654321))


@pytest.fixture
def source(ready_server):
    """c1: stopped, with two snapshots that differ from each other and from the instance."""
    srv = ready_server
    srv.launch("c1")
    srv.exec("c1", ["sh", "-c", "echo one > /root/v; mkdir -p /srv/gone; echo x > /srv/gone/f"])
    srv.ferry("stop", "-f", "c1")
    make_rich_tree(rootfs(srv, "c1"), "s0")
    srv.ferry("snapshot", "create", "c1", "s0")
    srv.ferry("start", "c1")
    srv.exec("c1", ["sh", "-c", "echo two > /root/v; rm -r /srv/gone; echo new > /root/new"])
    srv.ferry("snapshot", "create", "c1", "s1")
    srv.exec("c1", ["sh", "-c", "echo three > /root/v"])
    srv.ferry("stop", "-f", "c1")
    return srv


def left_behind(srv, keep=("default_c1",)):
    """Everything an import may have left: rows, volumes, snapshot dirs, staging, uploads."""
    found = []
    names = [i["name"] for i in srv.call("GET", "/1.0/instances?recursion=1")]
    found += [f"instance {n}" for n in names if f"default_{n}" not in keep]
    for sub in ("containers", "containers-snapshots"):
        for entry in os.listdir(os.path.join(pool_dir(srv), sub)):
            if entry not in keep:
                found.append(f"{sub}/{entry}")
    uploads = os.path.join(srv.dir, "uploads")
    if os.path.isdir(uploads):
        found += [f"uploads/{e}" for e in os.listdir(uploads)]
    return found


def call_op(srv, method, path, body=None, raw=None, headers=None):
    """An async request that must succeed: the whole final operation (resources included)."""
    status, envelope = srv.api(method, path, body=body, raw=raw, headers=headers)
    if status >= 400 or not isinstance(envelope, dict) or envelope.get("type") != "async":
        raise ApiError(status, envelope)
    op = srv.wait(envelope, 300)
    if op["status"] != "Success":
        raise ApiError(op["status_code"], {"error": op["err"], "operation": op})
    return op


def export_api(srv, name, compression="none", instance_only=False, optimized=False):
    """Export through the REST API as the incus client does; returns (bytes, export operation id)."""
    op = call_op(srv, "POST", f"/1.0/instances/{name}/backups",
                 {"name": "", "compression_algorithm": compression, "instance_only": instance_only,
                  "optimized_storage": optimized})
    backup = os.path.basename(op["resources"]["backups"][0])
    conn = UnixHTTPConnection(srv.socket_path, timeout=300)
    conn.request("GET", f"/1.0/instances/{name}/backups/{backup}/export")
    resp = conn.getresponse()
    data = resp.read()
    operation = resp.getheader("X-Ferry-Operation")
    conn.close()
    assert resp.status == 200, data[:300]
    srv.call("DELETE", f"/1.0/instances/{name}/backups/{backup}")
    return data, operation


def import_api(srv, data, name=None, pool=None):
    headers = {"Content-Type": "application/octet-stream"}
    if name:
        headers["X-Incus-name"] = name
    if pool:
        headers["X-Incus-pool"] = pool
    return call_op(srv, "POST", "/1.0/instances", raw=data, headers=headers)


def test_roundtrip_keeps_everything(source, tmp_path):
    srv = source
    archive = str(tmp_path / "c1.tar.zst")
    srv.ferry("export", "c1", archive)
    with open(archive, "rb") as f:
        assert f.read(4) == b"\x28\xb5\x2f\xfd"  # zstd by default
    assert not os.path.exists(archive + ".partial")
    srv.ferry("import", archive, "c2")
    for snapshot in (None, "s0", "s1"):
        assert full_digest(rootfs(srv, "c1", snapshot)) == full_digest(rootfs(srv, "c2", snapshot)), snapshot
    snaps = srv.call("GET", "/1.0/instances/c2/snapshots?recursion=1")
    assert [s["name"] for s in snaps] == ["s0", "s1"]
    original = {s["name"]: s for s in srv.call("GET", "/1.0/instances/c1/snapshots?recursion=1")}
    for s in snaps:
        assert s["created_at"] == original[s["name"]]["created_at"]
    c1 = srv.call("GET", "/1.0/instances/c1")
    c2 = srv.call("GET", "/1.0/instances/c2")
    for key in ("profiles", "devices", "architecture"):
        assert c1[key] == c2[key]
    assert c2["config"]["volatile.base_image"] == c1["config"]["volatile.base_image"]
    assert c2["config"]["volatile.uuid"] != c1["config"]["volatile.uuid"]
    srv.ferry("start", "c2")
    assert srv.exec("c2", ["cat", "/root/v"])[1] == b"three\n"
    assert srv.exec("c2", ["stat", "-c", "%u:%g %a", "/root/rich/file"])[1] == b"1000:1001 4751\n"
    srv.ferry("stop", "-f", "c2")
    srv.ferry("restore", "c2", "s0")
    assert not os.path.exists(os.path.join(rootfs(srv, "c2"), "root", "new"))
    assert os.path.exists(os.path.join(rootfs(srv, "c2"), "srv", "gone", "f"))


def test_archive_layout_and_unshifted_owners(source):
    srv = source
    data, operation = export_api(srv, "c1", "none")
    tar = tarfile.open(fileobj=io.BytesIO(data))
    members = tar.getmembers()
    assert members[0].name == "backup/index.yaml"
    names = {m.name: m for m in members}
    for prefix in ("backup/snapshots/s0", "backup/snapshots/s1", "backup/container"):
        assert f"{prefix}/rootfs/etc/passwd" in names
        assert names[f"{prefix}/rootfs/etc/passwd"].uid == 0
        f = names[f"{prefix}/rootfs/root/rich/file"]
        assert (f.uid, f.gid, f.mode) == (1000, 1001, 0o4751)
        assert names[f"{prefix}/rootfs/root/rich/hardlink"].islnk()
        assert names[f"{prefix}/rootfs/root/rich/null"].ischr()
        pax = f.pax_headers
        acl_value = pax["SCHILY.xattr.system.posix_acl_access"].encode("utf-8", "surrogateescape")
        ids = [struct.unpack_from("<HHI", acl_value, 4 + 8 * i) for i in range((len(acl_value) - 4) // 8)]
        assert (ACL_USER, 4, 1002) in ids and (ACL_GROUP, 4, 1003) in ids
    index = tar.extractfile("backup/index.yaml").read().decode()
    assert "name: c1" in index and "- s0" in index and "- s1" in index and "type: container" in index
    assert "volatile.last_state.idmap: '[]'" in index or 'volatile.last_state.idmap: "[]"' in index
    assert "backup/container/backup.yaml" in names
    # The export's operation reported progress with a total
    op = srv.call("GET", operation)
    progress = op["metadata"]["progress"]
    assert progress["total"] > 3 << 20 and progress["percent"] == 100 and op["status"] == "Success"


@pytest.mark.parametrize("compression,magic", [("gzip", b"\x1f\x8b"), ("xz", b"\xfd7zXZ"), ("none", None)])
def test_compressions(source, tmp_path, compression, magic):
    srv = source
    archive = str(tmp_path / "c1.backup")
    srv.ferry("export", "c1", archive, "--compression", compression, "--instance-only")
    with open(archive, "rb") as f:
        head = f.read(512)
    if magic:
        assert head.startswith(magic)
    else:
        assert head[257:262] == b"ustar"
    srv.ferry("import", archive, "c3")
    assert full_digest(rootfs(srv, "c1")) == full_digest(rootfs(srv, "c3"))
    assert srv.call("GET", "/1.0/instances/c3/snapshots") == []


def test_bad_compression_refused(source):
    proc = source.ferry("export", "c1", "/dev/null", "--compression", "lz77", check=False)
    assert proc.returncode != 0 and "Unsupported compression algorithm" in proc.stderr


def test_stdout_and_stdin(source, tmp_path):
    srv = source
    exported = subprocess.run([srv.ferry_path, "export", "c1", "-", "--instance-only"], env=srv.env(),
                              capture_output=True, timeout=300)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout[:4] == b"\x28\xb5\x2f\xfd"
    imported = subprocess.run([srv.ferry_path, "import", "-", "c4", "--storage", "default"], env=srv.env(),
                              input=exported.stdout, capture_output=True, timeout=300)
    assert imported.returncode == 0, imported.stderr
    assert full_digest(rootfs(srv, "c1")) == full_digest(rootfs(srv, "c4"))
    # Piped: no progress lines mixed into the data or the output
    assert imported.stdout == b""


def test_import_progress_and_backup_api(source):
    srv = source
    data, _ = export_api(srv, "c1", "zstd", instance_only=True)
    op = import_api(srv, data, name="c5")
    assert op["metadata"]["progress"]["percent"] == 100
    assert op["metadata"]["progress"]["total"] == len(data)
    # The backup records behave as Incus's do
    created = call_op(srv, "POST", "/1.0/instances/c1/backups", {"name": "nightly"})
    assert created["resources"]["backups"] == ["/1.0/instances/c1/backups/nightly"]
    assert srv.call("GET", "/1.0/instances/c1/backups") == ["/1.0/instances/c1/backups/nightly"]
    assert srv.call("GET", "/1.0/instances/c1/backups/nightly")["compression_algorithm"] == "zstd"
    with pytest.raises(ApiError) as err:
        srv.call("POST", "/1.0/instances/c1/backups", {"name": "nightly"})
    assert err.value.status == 409
    srv.call("DELETE", "/1.0/instances/c1/backups/nightly")
    with pytest.raises(ApiError) as err:
        srv.call("GET", "/1.0/instances/c1/backups/nightly/export")
    assert err.value.status == 404


# --- hostile and broken archives ------------------------------------------------------------------------------

def rebuild(data, change):
    """A new uncompressed tar from an export: change(members) returns [(TarInfo, bytes or None)]."""
    tar = tarfile.open(fileobj=io.BytesIO(data))
    members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    for m, _ in members:
        # Binary xattrs and sparse maps do not survive Python's pax rewriting; these tests are about paths.
        m.pax_headers = {k: v for k, v in m.pax_headers.items() if not k.startswith(("SCHILY.xattr", "LIBARCHIVE", "GNU.sparse"))}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as new:
        for info, content in change(members):
            new.addfile(info, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def add(members, info, content=None, after="backup/index.yaml"):
    index = [i for i, (m, _) in enumerate(members) if m.name == after][0]
    members.insert(index + 1, (info, content))
    return members


def entry(name, kind=tarfile.REGTYPE, content=b"evil\n", linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(content) if kind == tarfile.REGTYPE else 0
    return info, content if kind == tarfile.REGTYPE else None


MARK = f"ferry-evil-{uuid.uuid4().hex[:8]}"


def hostile_cases():
    def with_entries(*entries):
        def change(members):
            after = [m.name for m, _ in members if m.name.startswith("backup/container/rootfs/etc")][0]
            for info, content in entries:
                add(members, info, content, after=after)
                after = info.name
            return members
        return change

    def index_text(text):
        def change(members):
            out = []
            for m, c in members:
                if m.name == "backup/index.yaml":
                    m.size = len(text)
                    c = text
                out.append((m, c))
            return out
        return change

    def drop(prefix):
        return lambda members: [(m, c) for m, c in members if not m.name.startswith(prefix)]

    return {
        "dotdot": (with_entries(entry(f"backup/container/rootfs/../../../../../../tmp/{MARK}-dotdot")),
                   "'..' components are not allowed"),
        "absolute": (with_entries(entry(f"/tmp/{MARK}-absolute")), "absolute paths are not allowed"),
        "symlink-escape": (with_entries(entry("backup/container/rootfs/esc", tarfile.SYMTYPE, linkname="/tmp"),
                                        entry(f"backup/container/rootfs/esc/{MARK}-symlink")),
                           "goes through a symbolic link"),
        "symlink-relative-escape": (
            with_entries(entry("backup/container/rootfs/esc2", tarfile.SYMTYPE, linkname="../../../../../../../tmp"),
                         entry(f"backup/container/rootfs/esc2/{MARK}-symlink2")),
            "goes through a symbolic link"),
        "hardlink-absolute": (with_entries(entry("backup/container/rootfs/hl", tarfile.LNKTYPE,
                                                 linkname="/etc/passwd")), "absolute paths are not allowed"),
        "hardlink-dotdot": (with_entries(entry("backup/container/rootfs/hl", tarfile.LNKTYPE,
                                               linkname="backup/container/rootfs/../../../../etc/passwd")),
                            "'..' components are not allowed"),
        "hardlink-other-tree": (with_entries(entry("backup/container/rootfs/hl", tarfile.LNKTYPE,
                                                   linkname="backup/snapshots/s0/rootfs/etc/passwd")),
                                "outside its tree"),
        "hardlink-through-symlink": (
            with_entries(entry("backup/container/rootfs/esc3", tarfile.SYMTYPE, linkname="/etc"),
                         entry("backup/container/rootfs/hl3", tarfile.LNKTYPE,
                               linkname="backup/container/rootfs/esc3/passwd")),
            "symbolic link"),
        "unexpected-entry": (with_entries(entry("elsewhere/file")), "unexpected entry"),
        "missing-index": (drop("backup/index.yaml"), "index.yaml is missing"),
        "invalid-index": (index_text(b"name: [unclosed\n"), "Invalid backup index.yaml"),
        "index-not-a-mapping": (index_text(b"- a\n- b\n"), "Invalid backup index.yaml"),
        "vm-index": (index_text(b"name: vm1\ntype: virtual-machine\nconfig:\n  container: {}\n"),
                     "not supported"),
        "missing-snapshot-data": (drop("backup/snapshots/s1"), "snapshot \"s1\" is listed in index.yaml but has no data"),
        "missing-container": (drop("backup/container"), "no backup/container"),
        "index-not-first": (lambda members: members[1:] + members[:1], "not the first entry"),
    }


@pytest.fixture
def plain_export(source):
    data, _ = export_api(source, "c1", "none")
    return source, data


@pytest.mark.parametrize("case", sorted(hostile_cases()))
def test_hostile_archive_refused(plain_export, case):
    srv, data = plain_export
    change, message = hostile_cases()[case]
    bad = rebuild(data, change)
    with pytest.raises(ApiError) as err:
        import_api(srv, bad, name="evil")
    assert message in str(err.value), str(err.value)
    assert left_behind(srv) == []
    assert not [f for f in os.listdir("/tmp") if f.startswith(MARK)]
    assert os.path.exists("/etc/passwd") and os.stat("/etc/passwd").st_nlink == 1


def test_truncated_and_corrupt_streams(plain_export):
    srv, data = plain_export
    compressed = subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    corrupt = bytearray(compressed)
    for i in range(len(corrupt) // 2, len(corrupt) // 2 + 64):
        corrupt[i] ^= 0x5a
    cases = {
        "truncated-tar": (data[: len(data) // 2], "corrupt or truncated"),
        "truncated-zstd": (compressed[: len(compressed) // 2], "corrupt or truncated"),
        "corrupt-zstd": (bytes(corrupt), "corrupt or truncated"),
        "unknown-compression": (b"\x89LZO\x00\r\n\x1a\n" + os.urandom(4096), "compression is unknown"),
        "empty": (b"", "not a tarball"),
    }
    for case, (payload, message) in cases.items():
        with pytest.raises(ApiError) as err:
            import_api(srv, payload, name="broken")
        assert message in str(err.value), (case, str(err.value))
        assert left_behind(srv) == [], case


def test_name_taken_and_missing_pool(plain_export, tmp_path):
    srv, data = plain_export
    archive = tmp_path / "c1.tar"
    archive.write_bytes(data)
    proc = srv.ferry("import", str(archive), check=False)  # the backup's own name, c1, is taken
    assert proc.returncode != 0 and 'Instance "c1" already exists' in proc.stderr, proc.stderr
    proc = srv.ferry("import", str(archive), "c1", check=False)
    assert proc.returncode != 0 and 'Instance "c1" already exists' in proc.stderr, proc.stderr
    proc = srv.ferry("import", str(archive), "c9", "--storage", "nope", check=False)
    assert proc.returncode != 0 and "nope" in proc.stderr and "not found" in proc.stderr, proc.stderr
    assert left_behind(srv) == []


def test_btrfs_pool_import(source, tmp_path):
    """Snapshots on a btrfs pool are made from a staging subvolume: same content, nothing left over."""
    srv = source
    try:
        srv.call("POST", "/1.0/storage-pools", {"name": "bt", "driver": "btrfs", "config": {"size": "2GiB"}})
    except ApiError as e:
        pytest.skip(f"no btrfs pool here: {e}")
    data, _ = export_api(srv, "c1", "zstd")
    import_api(srv, data, name="cb", pool="bt")
    assert srv.call("GET", "/1.0/instances/cb")["devices"]["root"]["pool"] == "bt"
    bt_root = os.path.join(pool_dir(srv, "bt"), "containers", "default_cb", "rootfs")
    assert full_digest(rootfs(srv, "c1")) == full_digest(bt_root)
    for snap in ("s0", "s1"):
        snap_root = os.path.join(pool_dir(srv, "bt"), "containers-snapshots", "default_cb", snap, "rootfs")
        assert full_digest(rootfs(srv, "c1", snap)) == full_digest(snap_root)
    assert sorted(os.listdir(os.path.join(pool_dir(srv, "bt"), "containers"))) == ["default_cb"]
    srv.call("DELETE", "/1.0/instances/cb")


def test_over_https(source, tmp_path):
    """A remote reached over HTTPS: the export streams through TLS, the import is extracted as it arrives."""
    srv = source
    srv.listen_https()
    token = srv.ferry("config", "trust", "add", "laptop", "-q").stdout.strip()
    env = dict(srv.env(), FERRY_CONF=str(tmp_path / "client"), HOME=str(tmp_path))

    def client(*args, check=True, input=None):
        proc = subprocess.run([srv.ferry_path, *args], env=env, capture_output=True, timeout=300, input=input)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    client("remote", "add", "far", token)
    archive = str(tmp_path / "c1.tar.zst")
    client("export", "far:c1", archive, "-q")
    client("import", "far:", archive, "c6", "-q")
    assert full_digest(rootfs(srv, "c1")) == full_digest(rootfs(srv, "c6"))
    with open(archive, "rb") as f:
        client("import", "far:", "-", "c7", input=f.read())
    assert full_digest(rootfs(srv, "c1", "s1")) == full_digest(rootfs(srv, "c7", "s1"))
    refused = client("import", "far:", archive, "c1", check=False)
    assert b'Instance "c1" already exists' in refused.stderr
    assert left_behind(srv, keep=("default_c1", "default_c6", "default_c7")) == []


# --- optimized (btrfs send stream) backups ------------------------------------------------------------------
def subvolume_show(path):
    return subprocess.run(["btrfs", "subvolume", "show", path], capture_output=True, text=True, check=True).stdout


def is_readonly(path):
    out = subprocess.run(["btrfs", "property", "get", "-ts", path, "ro"], capture_output=True, text=True,
                         check=True).stdout
    return out.strip() == "ro=true"


def test_optimized_btrfs_roundtrip(server_factory, busybox_image, tmp_path):
    """--optimized-storage on btrfs: index.yaml, optimized_header.yaml, one send stream per snapshot then the
    instance's; imported on another btrfs server as received subvolumes with the same trees. The same archive
    is refused by a dir pool, leaving nothing behind."""
    a = server_factory("a")
    b = server_factory("b")
    for s in (a, b):
        s.init_storage(driver="btrfs", config={"size": "512MiB"})
    a.import_image(busybox_image)
    prepare_c1(a)
    make_rich_tree(rootfs(a, "c1"), "opt")

    archive = tmp_path / "c1.tar.gz"
    a.ferry("export", "c1", str(archive), "--optimized-storage", "--compression", "gzip", "-q")
    assert sorted(os.listdir(os.path.join(pool_dir(a), "containers"))) == ["default_c1"]  # no export snapshot
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        index = tar.extractfile("backup/index.yaml").read().decode()
        header = tar.extractfile("backup/optimized_header.yaml").read().decode()
    assert names == ["backup/index.yaml", "backup/optimized_header.yaml", "backup/snapshots/snap0.bin",
                     "backup/snapshots/snap1.bin", "backup/container.bin"], names
    assert "optimized: true" in index and "optimized_header: true" in index and "backend: btrfs" in index
    assert "subvolumes:" in header and "snapshot: snap0" in header

    b.ferry("import", str(archive), "-q")
    assert full_digest(rootfs(a, "c1")) == full_digest(rootfs(b, "c1"))
    for snap in ("snap0", "snap1"):
        snap_root = os.path.dirname(rootfs(b, "c1", snap))
        assert full_digest(rootfs(a, "c1", snap)) == full_digest(rootfs(b, "c1", snap)), snap
        show = subvolume_show(snap_root)
        received = [line.split(":", 1)[1].strip() for line in show.splitlines() if "Received UUID" in line]
        assert received and received[0] not in ("-", ""), show
        assert is_readonly(snap_root), snap
    assert not is_readonly(os.path.dirname(rootfs(b, "c1")))
    assert [s["name"] for s in b.call("GET", "/1.0/instances/c1/snapshots?recursion=1")] == ["snap0", "snap1"]
    assert left_behind(b) == []
    b.call("PUT", "/1.0/instances/c1/state", {"action": "start", "timeout": 30})
    assert b.exec("c1", ["cat", "/root/f"])[1] == b"three\n"
    b.call("PUT", "/1.0/instances/c1/state", {"action": "stop", "force": True})

    b.call("POST", "/1.0/storage-pools", {"name": "plain", "driver": "dir"})
    with pytest.raises(ApiError) as refused:
        import_api(b, archive.read_bytes(), name="c2", pool="plain")
    assert "Optimized backups can only be restored on a pool of the same type" in str(refused.value)
    assert left_behind(b) == []
    assert os.listdir(os.path.join(pool_dir(b, "plain"), "containers")) == []
    assert os.listdir(os.path.join(pool_dir(b, "plain"), "containers-snapshots")) == []


def test_optimized_on_dir_pool_is_a_plain_tarball(source):
    """As Incus: a driver without an optimized form writes the portable layout, optimized: false."""
    data, _ = export_api(source, "c1", optimized=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        index = tar.extractfile("backup/index.yaml").read().decode()
    assert "optimized: false" in index
    assert "backup/container/rootfs" in names and "backup/snapshots/s0/rootfs" in names
    assert not [n for n in names if n.endswith(".bin")]
