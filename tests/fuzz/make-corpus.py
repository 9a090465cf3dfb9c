#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.

Deterministic (fixed mtimes, gzip mtime 0), so re-running it changes nothing; the outputs are committed.
Seeds are small: image tarballs are mostly uncompressed (libFuzzer mutates those usefully) with one per
compression, and hostile ones cover each way out of the destination that unpack must refuse.
"""
import bz2
import gzip
import io
import lzma
import os
import shutil
import struct
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# Pad tarballs to 1 KiB records instead of 10 KiB: smaller seeds, same archives.
tarfile.RECORDSIZE = 1024

YAML_SEEDS = {
    "instance.yaml": """architecture: x86_64
config:
  image.os: Debian
  image.release: "12"
  limits.cpu: "2"
  user.note: 'a: b'
  user.script: |
    #!/bin/sh
    echo hi
devices:
  root:
    path: /
    pool: default
    type: disk
ephemeral: false
profiles:
- default
stateful: false
description: ""
""",
    "metadata.yaml": """architecture: amd64
creation_date: 1700000000
expiry_date: 1800000000
properties:
  os: Ubuntu
  release: 22.04
  version: 20.10
templates:
  /etc/hostname:
    when:
    - create
    - copy
    template: hostname.tpl
""",
    "scalars.yaml": """null1: ~
null2: null
null3:
bools: [true, false, True, yes, off]
ints: [0, -17, 0755, 0x1F, 9223372036854775807, 9223372036854775808]
reals: [1.5, 22.04, 20.10, 1e5, .inf, -.NaN]
quoted: ["true", '123', "a\\0b", "\\u263a", 'it''s']
tagged: [!!str 123, !!int "42", !!float 1, !!bool true, !!null ~]
folded: >-
  one
  two
literal: |+
  keep

""",
    "flow.yaml": "{a: [1, {b: [c, d]}, []], e: {}, 'f g': \"h\\ti\"}\n",
    "complex.yaml": "? long key\n: value\n? [x]\n: y\n",
    "anchors.yaml": "a: &x [1, 2]\nb: *x\nc: &y {k: v}\n<<: *y\n",
    "multidoc.yaml": "a: 1\n---\nb: 2\n...\n",
    "deep.yaml": "[" * 70 + "]" * 70 + "\n",
    "deep-block.yaml": "".join("  " * i + "k%d:\n" % i for i in range(66)) + "  " * 66 + "x: 1\n",
    "directives.yaml": "%YAML 1.1\n%TAG !e! tag:example.com,2000:\n---\nv: !e!foo bar\n",
    "empty.yaml": "",
    "comment.yaml": "# just a comment\n",
    "sequence.yaml": "- a\n- - b\n  - c\n- d: e\n  f: g\n",
    "errors.yaml": "a: b\n c: d\n\tkey: \"unterminated\n",
    "duplicate.yaml": "a: 1\nb: 2\na: 3\n",
    "unicode.yaml": "\ufeffnaïve: ✓\n\"\\U0001F600\": emoji\nnel: \"\\N\\L\\P\"\n",
}


def tar_bytes(members, compression=None, fmt=tarfile.PAX_FORMAT):
    """members: list of (TarInfo, data or None)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    data = raw.getvalue()
    if compression == "gz":
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
            gz.write(data)
        return out.getvalue()
    if compression == "xz":
        return lzma.compress(data, preset=6)
    if compression == "bz2":
        return bz2.compress(data)
    return data


def entry(name, kind=tarfile.REGTYPE, data=None, mode=0o644, uid=0, gid=0, link="", pax=None, dev=(0, 0)):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = 1700000000
    info.linkname = link
    info.devmajor, info.devminor = dev
    if pax:
        info.pax_headers = dict(pax)
    if kind == tarfile.REGTYPE:
        data = data if data is not None else b""
        info.size = len(data)
    return (info, data)


METADATA = b"architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: Debian\n  release: \"12\"\n"


def minimal(extra=()):
    return [
        entry("metadata.yaml", data=METADATA),
        entry("rootfs", tarfile.DIRTYPE, mode=0o755),
        entry("rootfs/hello", data=b"hello\n"),
        *extra,
    ]


def caps_v2():
    return struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)  # CAP_NET_RAW, effective


def acl_xattr():
    entries = [(0x01, 6, 0xFFFFFFFF), (0x02, 4, 1000), (0x04, 4, 0xFFFFFFFF), (0x10, 4, 0xFFFFFFFF),
               (0x20, 0, 0xFFFFFFFF)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def image_seeds():
    full = [
        entry("./metadata.yaml", data=METADATA),
        entry("./templates", tarfile.DIRTYPE, mode=0o755),
        entry("./templates/hostname.tpl", data=b"{{ container.name }}\n"),
        entry("./rootfs", tarfile.DIRTYPE, mode=0o755),
        entry("./rootfs/bin", tarfile.DIRTYPE, mode=0o755),
        entry("./rootfs/bin/su", data=b"#!/bin/true\n", mode=0o4755),
        entry("./rootfs/bin/su2", tarfile.LNKTYPE, link="./rootfs/bin/su"),
        entry("./rootfs/bin/ping", data=b"ping\n", mode=0o755,
              pax={"SCHILY.xattr.security.capability": caps_v2().decode("utf-8", "surrogateescape")}),
        entry("./rootfs/etc", tarfile.DIRTYPE, mode=0o755),
        entry("./rootfs/etc/localtime", tarfile.SYMTYPE, link="/usr/share/zoneinfo/UTC"),
        entry("./rootfs/home/u/notes", data=b"notes\n", mode=0o600, uid=1000, gid=1000,
              pax={"SCHILY.xattr.user.comment": "hello"}),
        entry("./rootfs/srv", tarfile.DIRTYPE, mode=0o770,
              pax={"SCHILY.acl.access": "user::rwx,user:33:r-x,group::rwx,mask::rwx,other::---",
                   "SCHILY.acl.default": "user::rwx,group::r--,group:34:r--,mask::r--,other::---"}),
        entry("./rootfs/srv/raw", data=b"acl\n",
              pax={"SCHILY.xattr.system.posix_acl_access": acl_xattr().decode("utf-8", "surrogateescape")}),
        entry("./rootfs/dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        entry("./rootfs/run/initctl", tarfile.FIFOTYPE, mode=0o600),
        entry("./rootfs/etc/crème ✓", data=b"utf8\n"),
        entry("./other/ignored", data=b"ignored\n"),
    ]
    seeds = {
        "minimal.tar": tar_bytes(minimal()),
        "minimal-gnu.tar": tar_bytes(minimal(), fmt=tarfile.GNU_FORMAT),
        "minimal.tar.gz": tar_bytes(minimal(), "gz"),
        "minimal.tar.xz": tar_bytes(minimal(), "xz"),
        "minimal.tar.bz2": tar_bytes(minimal(), "bz2"),
        "full.tar": tar_bytes(full),
        "vm.tar": tar_bytes([entry("metadata.yaml", data=METADATA), entry("rootfs.img", data=b"QFI\xfb")]),
        "no-metadata.tar": tar_bytes(minimal()[1:]),
        "no-architecture.tar": tar_bytes([entry("metadata.yaml", data=b"creation_date: 1\n")]
                                         + minimal()[1:]),
        "bad-yaml.tar": tar_bytes([entry("metadata.yaml", data=b"a: &x [1]\nb: *x\n")] + minimal()[1:]),
        "dotdot.tar": tar_bytes(minimal([entry("../x", data=b"pwned\n")])),
        "dotdot-inner.tar": tar_bytes(minimal([entry("rootfs/a/../../../x", data=b"pwned\n")])),
        "absolute.tar": tar_bytes(minimal([entry("/tmp/ferry-fuzz-pwned", data=b"pwned\n")])),
        "symlink-escape.tar": tar_bytes(minimal([
            entry("rootfs/link", tarfile.SYMTYPE, link="../.."),
            entry("rootfs/link/x", data=b"pwned\n"),
        ])),
        "symlink-abs.tar": tar_bytes(minimal([
            entry("rootfs/link", tarfile.SYMTYPE, link="/tmp"),
            entry("rootfs/link/ferry-fuzz-pwned", data=b"pwned\n"),
        ])),
        "symlink-then-dir.tar": tar_bytes(minimal([
            entry("rootfs/link", tarfile.SYMTYPE, link="/tmp"),
            entry("rootfs/link", tarfile.DIRTYPE, mode=0o755),
            entry("rootfs/link/x", data=b"inside\n"),
        ])),
        "hardlink-abs.tar": tar_bytes(minimal([entry("rootfs/passwd", tarfile.LNKTYPE, link="/etc/passwd")])),
        "hardlink-outside.tar": tar_bytes(minimal([
            entry("rootfs/m", tarfile.LNKTYPE, link="metadata.yaml"),
        ])),
        "hardlink-through-symlink.tar": tar_bytes(minimal([
            entry("rootfs/etc", tarfile.SYMTYPE, link="/etc"),
            entry("rootfs/passwd", tarfile.LNKTYPE, link="rootfs/etc/passwd"),
        ])),
        "rootfs-symlink.tar": tar_bytes([
            entry("metadata.yaml", data=METADATA),
            entry("rootfs", tarfile.SYMTYPE, link="/"),
            entry("rootfs/x", data=b"pwned\n"),
        ]),
        "template-symlink.tar": tar_bytes(minimal([
            entry("templates/hostname.tpl", tarfile.SYMTYPE, link="/etc/shadow"),
        ])),
        "replace.tar": tar_bytes(minimal([
            entry("rootfs/d", tarfile.DIRTYPE, mode=0o755),
            entry("rootfs/d/f", data=b"f\n"),
            entry("rootfs/d", data=b"file over a full directory\n"),
        ])),
        "big-uid.tar": tar_bytes(minimal([entry("rootfs/u", data=b"u", uid=4294000000)])),
    }
    # a truncated xz stream and plain garbage
    seeds["truncated.tar.xz"] = seeds["minimal.tar.xz"][: len(seeds["minimal.tar.xz"]) // 2]
    seeds["garbage.bin"] = bytes((i * 7919) % 251 for i in range(512))
    return seeds


BACKUP_INDEX = b"""name: c1
backend: dir
pool: default
snapshots:
- s0
optimized: false
optimized_header: false
type: container
config:
  container:
    name: c1
    architecture: x86_64
    config:
      volatile.last_state.idmap: '[]'
    devices: {}
    profiles:
    - default
  snapshots:
  - name: s0
    config: {}
    created_at: 2026-01-01T00:00:00Z
"""


def backup_tree(prefix, extra=()):
    return [
        entry(prefix, tarfile.DIRTYPE, mode=0o711),
        entry(f"{prefix}/metadata.yaml", data=METADATA),
        entry(f"{prefix}/rootfs", tarfile.DIRTYPE, mode=0o755),
        entry(f"{prefix}/rootfs/hello", data=b"hello\n", uid=1000, gid=1000,
              pax={"SCHILY.xattr.user.note": "x", "SCHILY.xattr.system.posix_acl_access":
                   acl_xattr().decode("latin-1")}),
        entry(f"{prefix}/rootfs/link", tarfile.LNKTYPE, link=f"{prefix}/rootfs/hello"),
        entry(f"{prefix}/rootfs/sym", tarfile.SYMTYPE, link="/etc/passwd"),
        entry(f"{prefix}/rootfs/fifo", tarfile.FIFOTYPE),
        entry(f"{prefix}/rootfs/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        *extra,
    ]


def backup(extra_container=(), index=BACKUP_INDEX, order=None):
    members = [entry("backup/index.yaml", data=index), *backup_tree("backup/snapshots/s0"),
               *backup_tree("backup/container", extra_container),
               entry("backup/container/backup.yaml", data=b"container: {}\n")]
    return order(members) if order else members


def backup_seeds():
    seeds = {
        "full.tar": tar_bytes(backup()),
        "full.tar.gz": tar_bytes(backup(), "gz"),
        "full.tar.xz": tar_bytes(backup(), "xz"),
        "dotdot.tar": tar_bytes(backup([entry("backup/container/rootfs/../../../evil", data=b"x")])),
        "absolute.tar": tar_bytes(backup([entry("/tmp/evil", data=b"x")])),
        "symlink-escape.tar": tar_bytes(backup([entry("backup/container/rootfs/esc", tarfile.SYMTYPE, link=".."),
                                               entry("backup/container/rootfs/esc/evil", data=b"x")])),
        "hardlink-other-tree.tar": tar_bytes(backup([entry("backup/container/rootfs/hl", tarfile.LNKTYPE,
                                                           link="backup/snapshots/s0/rootfs/hello")])),
        "hardlink-outside.tar": tar_bytes(backup([entry("backup/container/rootfs/hl", tarfile.LNKTYPE,
                                                        link="backup/index.yaml")])),
        "index-last.tar": tar_bytes(backup(order=lambda m: m[1:] + m[:1])),
        "no-index.tar": tar_bytes(backup(order=lambda m: m[1:])),
        "bad-index.tar": tar_bytes(backup(index=b"name: [\n")),
        "unlisted-snapshot.tar": tar_bytes(backup(index=BACKUP_INDEX.replace(b"- s0\n", b""))),
        "snapshot-slash.tar": tar_bytes(backup(index=BACKUP_INDEX.replace(b"- s0\n", b"- ../s0\n"))),
        "optimized.tar": tar_bytes([entry("backup/index.yaml", data=BACKUP_INDEX.replace(
            b"optimized: false", b"optimized: true")), entry("backup/container.bin", data=b"btrfs-stream")]),
    }
    full = tar_bytes(backup())
    seeds["truncated.tar"] = full[: len(full) // 2]
    return seeds


def write(target, seeds):
    directory = os.path.join(CORPUS, target)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    for name, data in sorted(seeds.items()):
        if isinstance(data, str):
            data = data.encode("utf-8")
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def main():
    write("fuzz_yaml", YAML_SEEDS)
    write("fuzz_image_tar", image_seeds())
    write("fuzz_backup_tar", backup_seeds())


if __name__ == "__main__":
    main()
