"""/1.0/images and /1.0/images/aliases: import (Incus's unified tarball upload), show, update, export, delete,
and aliases."""
import hashlib
import io
import json
import os
import tarfile
import time

import pytest

from conftest import UnixHTTPConnection


def make_tarball(marker, compress="gz", architecture="x86_64"):
    """A small unified image: metadata.yaml + rootfs/ with a file whose content makes it unique."""
    buf = io.BytesIO()
    mode = "w:" + compress if compress else "w"
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.GNU_FORMAT) as tar:
        def add(name, data=None, directory=False):
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if directory:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        meta = (f"architecture: {architecture}\ncreation_date: 1700000000\n"
                f"properties:\n  os: test\n  description: image {marker}\n").encode()
        add("metadata.yaml", meta)
        add("rootfs", directory=True)
        add("rootfs/etc", directory=True)
        add("rootfs/etc/marker", f"{marker}\n".encode())
    return buf.getvalue()


def fingerprint_of(data):
    return hashlib.sha256(data).hexdigest()


def upload(server, data, headers=None, project=None):
    """POST the tarball; returns (http status, envelope)."""
    path = "/1.0/images" + (f"?project={project}" if project else "")
    return server.api("POST", path, raw=data, headers=headers)


def import_ok(server, data, headers=None, project=None):
    status, envelope = upload(server, data, headers, project)
    assert status == 202 and envelope["type"] == "async", envelope
    op = server.wait(envelope)
    assert op["status"] == "Success", op
    return op["metadata"]


def import_fails(server, data, headers=None, contains=None):
    """An upload refused synchronously or by its operation; returns the error message."""
    status, envelope = upload(server, data, headers)
    if envelope.get("type") == "async":
        op = server.wait(envelope)
        assert op["status"] == "Failure", op
        message = op["err"]
    else:
        assert status >= 400, envelope
        message = envelope["error"]
    if contains:
        assert contains.lower() in message.lower(), message
    return message


def stored_files(server):
    return sorted(os.listdir(os.path.join(server.dir, "images")))


def leftover_uploads(server):
    return os.listdir(os.path.join(server.dir, "uploads"))


def fingerprints(server, project="default"):
    return sorted(i["fingerprint"] for i in server.call("GET", f"/1.0/images?recursion=1&project={project}"))


def raw_get(server, path):
    conn = UnixHTTPConnection(server.socket_path)
    conn.request("GET", path)
    resp = conn.getresponse()
    result = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return result


def request_with_headers(server, method, path, body=None, headers=None):
    conn = UnixHTTPConnection(server.socket_path)
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body)
        hdrs["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    result = resp.status, dict(resp.getheaders()), json.loads(resp.read())
    conn.close()
    return result


def wait_uploads_gone(server):
    # The router's temp file goes when the request is finished; give it a moment.
    for _ in range(50):
        if not leftover_uploads(server):
            return
        time.sleep(0.05)
    assert leftover_uploads(server) == []


def test_import_busybox(server, busybox_image):
    with open(busybox_image, "rb") as f:
        data = f.read()
    meta = import_ok(server, data)
    fingerprint = fingerprint_of(data)
    assert meta == {"fingerprint": fingerprint, "size": str(len(data))}
    image = server.call("GET", f"/1.0/images/{fingerprint}")
    assert image["fingerprint"] == fingerprint
    assert image["size"] == len(data)
    assert image["architecture"] == os.uname().machine
    assert image["type"] == "container"
    assert image["public"] is False and image["auto_update"] is False and image["cached"] is False
    assert image["properties"]["os"] == "busybox"
    assert image["aliases"] == []
    assert image["profiles"] == ["default"]
    assert image["project"] == "default"
    for field in ("created_at", "uploaded_at", "expires_at", "last_used_at"):
        assert image[field]
    assert image["uploaded_at"] > image["created_at"]
    assert stored_files(server) == [fingerprint]
    with open(os.path.join(server.dir, "images", fingerprint), "rb") as f:
        assert f.read() == data
    assert server.call("GET", "/1.0/images") == [f"/1.0/images/{fingerprint}"]
    wait_uploads_gone(server)


def test_import_headers(server):
    data = make_tarball("headers")
    fingerprint = fingerprint_of(data)
    import_ok(server, data, headers={
        "X-Incus-fingerprint": fingerprint,
        "X-Incus-properties": "os=custom&note=two+words&extra=%3D",
        "X-Incus-public": "true",
        "X-Incus-filename": "mine.tar.gz",
        "X-Incus-aliases": "alias=first&alias=second/part",
    })
    image = server.call("GET", f"/1.0/images/{fingerprint}")
    assert image["public"] is True
    assert image["filename"] == "mine.tar.gz"
    assert image["properties"] == {"os": "custom", "note": "two words", "extra": "=",
                                   "description": "image headers"}
    assert sorted(a["name"] for a in image["aliases"]) == ["first", "second/part"]
    assert server.call("GET", "/1.0/images/aliases/first")["target"] == fingerprint


def test_import_lxd_headers(server):
    data = make_tarball("lxd")
    import_ok(server, data, headers={"X-LXD-public": "1", "X-LXD-aliases": "alias=from-lxd"})
    image = server.call("GET", f"/1.0/images/{fingerprint_of(data)}")
    assert image["public"] is True
    assert [a["name"] for a in image["aliases"]] == ["from-lxd"]


def test_import_with_profiles_header(server):
    server.call("POST", "/1.0/profiles", {"name": "extra"})
    data = make_tarball("profiles")
    import_ok(server, data, headers={"X-Incus-profiles": "profile=default&profile=extra"})
    assert server.call("GET", f"/1.0/images/{fingerprint_of(data)}")["profiles"] == ["default", "extra"]


def test_import_compressions(server):
    for compress in ("", "gz", "xz", "bz2"):
        data = make_tarball(f"compress-{compress}", compress=compress)
        meta = import_ok(server, data)
        assert meta["fingerprint"] == fingerprint_of(data)
    assert len(fingerprints(server)) == 4


@pytest.mark.parametrize("data,contains", [
    (b"this is not an image at all" * 100, "not a tarball"),
    (b"", None),
    (make_tarball("truncated", compress="")[:700], None),
    (make_tarball("truncated-gz")[:-40], None),
    (make_tarball("arch", architecture="pdp11"), "architecture"),
], ids=["garbage", "empty", "truncated-tar", "truncated-gzip", "unknown-architecture"])
def test_corrupt_upload_stores_nothing(server, data, contains):
    good = make_tarball("good")
    import_ok(server, good, headers={"X-Incus-aliases": "alias=good"})
    before = server.call("GET", "/1.0/images?recursion=1")
    before_aliases = server.call("GET", "/1.0/images/aliases?recursion=1")
    before_files = stored_files(server)
    import_fails(server, data, contains=contains)
    assert server.call("GET", "/1.0/images?recursion=1") == before
    assert server.call("GET", "/1.0/images/aliases?recursion=1") == before_aliases
    assert stored_files(server) == before_files
    wait_uploads_gone(server)


def test_tarball_without_rootfs_or_metadata(server):
    for members in (["metadata.yaml"], ["rootfs/"]):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name in members:
                info = tarfile.TarInfo(name.rstrip("/"))
                if name.endswith("/"):
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    content = b"architecture: x86_64\ncreation_date: 1700000000\n"
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
        import_fails(server, buf.getvalue())
    assert fingerprints(server) == []
    assert stored_files(server) == []


def test_duplicate_upload(server):
    data = make_tarball("dup")
    import_ok(server, data)
    before = server.call("GET", "/1.0/images?recursion=1")
    import_fails(server, data, contains="Image with same fingerprint already exists")
    # With the fingerprint announced, the refusal comes before the upload is even looked at.
    status, envelope = upload(server, data, headers={"X-Incus-fingerprint": fingerprint_of(data)})
    assert status == 409, envelope
    assert "already exists" in envelope["error"]
    assert server.call("GET", "/1.0/images?recursion=1") == before
    assert stored_files(server) == [fingerprint_of(data)]


def test_fingerprint_mismatch(server):
    data = make_tarball("mismatch")
    import_fails(server, data, headers={"X-Incus-fingerprint": "ab" * 32}, contains="don't match")
    assert fingerprints(server) == []
    assert stored_files(server) == []


def test_upload_header_refusals(server):
    data = make_tarball("refusals")
    import_ok(server, make_tarball("other"), headers={"X-Incus-aliases": "alias=taken"})
    before = server.call("GET", "/1.0/images?recursion=1")
    status, envelope = upload(server, data, headers={"X-Incus-aliases": "alias=taken"})
    assert status == 409 and "taken" in envelope["error"], envelope
    status, envelope = upload(server, data, headers={"X-Incus-aliases": "alias=bad name"})
    assert status == 400, envelope
    status, envelope = upload(server, data, headers={"X-Incus-profiles": "profile=missing"})
    assert status == 400 and "missing" in envelope["error"], envelope
    status, envelope = upload(server, data, project="nope")
    assert status == 404 and 'Project "nope" not found' in envelope["error"], envelope
    assert server.call("GET", "/1.0/images?recursion=1") == before
    assert len(stored_files(server)) == 1
    wait_uploads_gone(server)


def test_json_image_sources_are_not_supported(server):
    status, envelope = server.api("POST", "/1.0/images", {"source": {"type": "instance", "name": "c1"}})
    assert status == 501, envelope
    status, envelope = server.api("POST", "/1.0/images")
    assert status == 400, envelope


def test_fingerprint_prefixes(server):
    # Import until two fingerprints share their first hex digit (at most 17 images).
    seen = {}
    pair = None
    for i in range(17):
        data = make_tarball(f"prefix-{i}")
        fingerprint = import_ok(server, data)["fingerprint"]
        if fingerprint[0] in seen:
            pair = (seen[fingerprint[0]], fingerprint)
            break
        seen[fingerprint[0]] = fingerprint
    assert pair is not None
    first, second = pair
    server.expect_error("GET", f"/1.0/images/{first[0]}", status=400, contains="more than one image")
    # The shortest prefix that tells them apart works.
    length = next(n for n in range(1, 65) if first[:n] != second[:n])
    assert server.call("GET", f"/1.0/images/{first[:length]}")["fingerprint"] == first
    assert server.call("GET", f"/1.0/images/{second[:length]}")["fingerprint"] == second
    server.expect_error("GET", "/1.0/images/" + "g" * 12, status=404, contains="not found")


def test_images_are_per_project(server):
    server.call("POST", "/1.0/projects", {"name": "p1"})
    data = make_tarball("project")
    fingerprint = fingerprint_of(data)
    import_ok(server, data, project="p1")
    assert fingerprints(server, "p1") == [fingerprint]
    assert fingerprints(server) == []
    server.expect_error("GET", f"/1.0/images/{fingerprint}", status=404)
    assert server.call("GET", f"/1.0/images/{fingerprint}?project=p1")["project"] == "p1"
    # The same bytes in another project share the file; deleting one keeps it for the other.
    import_ok(server, data)
    assert stored_files(server) == [fingerprint]
    server.call("DELETE", f"/1.0/images/{fingerprint}?project=p1")
    assert stored_files(server) == [fingerprint]
    assert fingerprints(server) == [fingerprint]
    server.call("DELETE", f"/1.0/images/{fingerprint}")
    assert stored_files(server) == []


def test_update_image(server):
    data = make_tarball("update")
    fingerprint = fingerprint_of(data)
    import_ok(server, data)
    server.call("POST", "/1.0/profiles", {"name": "extra"})
    server.call("PATCH", f"/1.0/images/{fingerprint[:10]}", {"public": True, "properties": {"k": "v"}})
    image = server.call("GET", f"/1.0/images/{fingerprint}")
    assert image["public"] is True
    assert image["properties"]["k"] == "v" and image["properties"]["os"] == "test"
    server.call("PUT", f"/1.0/images/{fingerprint}", {"properties": {"only": "this"}, "profiles": ["extra"]})
    image = server.call("GET", f"/1.0/images/{fingerprint}")
    assert image["public"] is False
    assert image["properties"] == {"only": "this"}
    assert image["profiles"] == ["extra"]
    server.call("PUT", f"/1.0/images/{fingerprint}", {"properties": {}})
    assert server.call("GET", f"/1.0/images/{fingerprint}")["profiles"] == ["default"]


def test_update_image_refusals(server):
    data = make_tarball("refuse-update")
    fingerprint = fingerprint_of(data)
    import_ok(server, data)
    before = server.call("GET", f"/1.0/images/{fingerprint}")
    server.expect_error("PATCH", f"/1.0/images/{fingerprint}", {"public": "yes"}, status=400)
    server.expect_error("PATCH", f"/1.0/images/{fingerprint}", {"properties": {"a": 1}}, status=400)
    server.expect_error("PATCH", f"/1.0/images/{fingerprint}", {"profiles": ["missing"]}, status=400,
                        contains="missing")
    server.expect_error("PATCH", f"/1.0/images/{fingerprint}", {"expires_at": "tomorrow"}, status=400)
    server.expect_error("PUT", "/1.0/images/" + "0" * 64, {"properties": {}}, status=404)
    status, headers, envelope = request_with_headers(server, "GET", f"/1.0/images/{fingerprint}")
    assert headers.get("ETag")
    status, _, envelope = request_with_headers(server, "PATCH", f"/1.0/images/{fingerprint}", {"public": True},
                                               headers={"If-Match": "nope"})
    assert status == 412, envelope
    assert server.call("GET", f"/1.0/images/{fingerprint}") == before
    status, _, envelope = request_with_headers(server, "PATCH", f"/1.0/images/{fingerprint}", {"public": True},
                                               headers={"If-Match": headers["ETag"]})
    assert status == 200, envelope


def test_export(server, busybox_image):
    with open(busybox_image, "rb") as f:
        data = f.read()
    fingerprint = import_ok(server, data)["fingerprint"]
    status, headers, body = raw_get(server, f"/1.0/images/{fingerprint[:16]}/export")
    assert status == 200
    assert body == data
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"] == f"attachment; filename={fingerprint}.tar.xz"
    assert headers["X-Incus-Type"] == "incus"
    assert int(headers["Content-Length"]) == len(data)
    server.expect_error("GET", "/1.0/images/" + "0" * 64 + "/export", status=404)


def test_delete_image(server):
    data = make_tarball("delete")
    fingerprint = fingerprint_of(data)
    import_ok(server, data, headers={"X-Incus-aliases": "alias=a1&alias=a2"})
    other = make_tarball("stays")
    import_ok(server, other, headers={"X-Incus-aliases": "alias=b1"})
    status, envelope = server.api("DELETE", f"/1.0/images/{fingerprint[:12]}")
    assert status == 202 and envelope["type"] == "async", envelope
    assert server.wait(envelope)["status"] == "Success"
    assert fingerprints(server) == [fingerprint_of(other)]
    assert server.call("GET", "/1.0/images/aliases") == ["/1.0/images/aliases/b1"]
    assert stored_files(server) == [fingerprint_of(other)]
    server.expect_error("DELETE", f"/1.0/images/{fingerprint}", status=404)
    server.expect_error("DELETE", f"/1.0/images/{fingerprint}?project=nope", status=404)


# --- aliases ---------------------------------------------------------------------------------------------

@pytest.fixture
def two_images(server):
    first, second = make_tarball("alias-one"), make_tarball("alias-two")
    import_ok(server, first)
    import_ok(server, second)
    return server, fingerprint_of(first), fingerprint_of(second)


def test_alias_lifecycle(two_images):
    server, first, second = two_images
    status, headers, envelope = request_with_headers(server, "POST", "/1.0/images/aliases",
                                                     {"name": "web", "target": first[:12], "description": "d"})
    assert status == 201, envelope
    assert headers["Location"] == "/1.0/images/aliases/web"
    alias = server.call("GET", "/1.0/images/aliases/web")
    assert alias == {"name": "web", "target": first, "description": "d", "type": "container"}
    assert server.call("GET", "/1.0/images/aliases") == ["/1.0/images/aliases/web"]
    assert server.call("GET", "/1.0/images/aliases?recursion=1") == [alias]
    assert server.call("GET", f"/1.0/images/{first}")["aliases"] == [{"name": "web", "description": "d"}]

    server.call("PATCH", "/1.0/images/aliases/web", {"description": "patched"})
    assert server.call("GET", "/1.0/images/aliases/web")["target"] == first
    server.call("PUT", "/1.0/images/aliases/web", {"target": second})
    alias = server.call("GET", "/1.0/images/aliases/web")
    assert alias["target"] == second and alias["description"] == ""
    assert server.call("GET", f"/1.0/images/{first}")["aliases"] == []

    status, headers, envelope = request_with_headers(server, "POST", "/1.0/images/aliases/web", {"name": "www"})
    assert status == 201, envelope
    assert headers["Location"] == "/1.0/images/aliases/www"
    server.expect_error("GET", "/1.0/images/aliases/web", status=404)
    assert server.call("GET", "/1.0/images/aliases/www")["target"] == second

    server.call("DELETE", "/1.0/images/aliases/www")
    assert server.call("GET", "/1.0/images/aliases") == []
    # Deleting an alias leaves its image.
    assert fingerprints(server) == sorted([first, second])


@pytest.mark.parametrize("body,status,message", [
    ({"name": "x"}, 400, "required"),
    ({"target": "abc"}, 400, "required"),
    ({"name": "", "target": "abc"}, 400, "required"),
    ({"name": "bad name", "target": "FIRST"}, 400, "Invalid image alias name"),
    ({"name": "a//b", "target": "FIRST"}, 400, "Invalid image alias name"),
    ({"name": "x", "target": "0" * 64}, 404, "not found"),
    ({"name": "x", "target": ""}, 400, "required"),
    ({"name": "x", "target": 5}, 400, "must be a string"),
    ({"name": "x", "target": "FIRST", "type": "virtual-machine"}, 400, "type"),
    ({"name": "existing", "target": "FIRST"}, 409, "already exists"),
])
def test_alias_create_refusals(two_images, body, status, message):
    server, first, _ = two_images
    server.call("POST", "/1.0/images/aliases", {"name": "existing", "target": first, "description": "keep"})
    body = {k: (first if v == "FIRST" else v) for k, v in body.items()}
    before = server.call("GET", "/1.0/images/aliases?recursion=1")
    server.expect_error("POST", "/1.0/images/aliases", body, status=status, contains=message)
    assert server.call("GET", "/1.0/images/aliases?recursion=1") == before


def test_alias_ambiguous_target(server):
    seen = {}
    for i in range(17):
        fingerprint = import_ok(server, make_tarball(f"ambiguous-{i}"))["fingerprint"]
        if fingerprint[0] in seen:
            break
        seen[fingerprint[0]] = fingerprint
    server.expect_error("POST", "/1.0/images/aliases", {"name": "x", "target": fingerprint[0]}, status=400,
                        contains="more than one image")
    assert server.call("GET", "/1.0/images/aliases") == []


def test_alias_update_rename_delete_refusals(two_images):
    server, first, second = two_images
    server.call("POST", "/1.0/images/aliases", {"name": "a", "target": first})
    server.call("POST", "/1.0/images/aliases", {"name": "b", "target": second})
    before = server.call("GET", "/1.0/images/aliases?recursion=1")
    server.expect_error("PUT", "/1.0/images/aliases/a", {"description": "no target"}, status=400,
                        contains="target field is required")
    server.expect_error("PUT", "/1.0/images/aliases/a", {"target": "0" * 64}, status=404)
    server.expect_error("PATCH", "/1.0/images/aliases/a", {"target": 3}, status=400)
    server.expect_error("PUT", "/1.0/images/aliases/nope", {"target": first}, status=404)
    server.expect_error("POST", "/1.0/images/aliases/a", {"name": "b"}, status=409, contains="already exists")
    server.expect_error("POST", "/1.0/images/aliases/a", {"name": "bad name"}, status=400)
    server.expect_error("POST", "/1.0/images/aliases/a", {}, status=400)
    server.expect_error("POST", "/1.0/images/aliases/nope", {"name": "c"}, status=404)
    server.expect_error("DELETE", "/1.0/images/aliases/nope", status=404)
    server.expect_error("GET", "/1.0/images/aliases/a?project=nope", status=404)
    status, headers, envelope = request_with_headers(server, "GET", "/1.0/images/aliases/a")
    assert headers.get("ETag")
    status, _, envelope = request_with_headers(server, "PATCH", "/1.0/images/aliases/a", {"description": "x"},
                                               headers={"If-Match": "stale"})
    assert status == 412, envelope
    assert server.call("GET", "/1.0/images/aliases?recursion=1") == before


def test_aliases_are_per_project(two_images):
    server, first, _ = two_images
    server.call("POST", "/1.0/projects", {"name": "p1"})
    server.call("POST", "/1.0/images/aliases", {"name": "shared-name", "target": first})
    # The target must be an image of the alias's project.
    server.expect_error("POST", "/1.0/images/aliases?project=p1", {"name": "x", "target": first}, status=404)
    data = make_tarball("alias-p1")
    import_ok(server, data, project="p1")
    server.call("POST", "/1.0/images/aliases?project=p1", {"name": "shared-name", "target": fingerprint_of(data)})
    assert server.call("GET", "/1.0/images/aliases/shared-name?project=p1")["target"] == fingerprint_of(data)
    assert server.call("GET", "/1.0/images/aliases/shared-name")["target"] == first


def test_alias_with_slash(two_images):
    server, first, _ = two_images
    server.call("POST", "/1.0/images/aliases", {"name": "debian/12", "target": first})
    assert server.call("GET", "/1.0/images/aliases") == ["/1.0/images/aliases/debian%2F12"]
    assert server.call("GET", "/1.0/images/aliases?recursion=1")[0]["name"] == "debian/12"


def test_instance_from_image_alias(ready_server):
    server = ready_server
    server.launch("c1", start=False)
    instance = server.call("GET", "/1.0/instances/c1")
    fingerprint = server.call("GET", "/1.0/images/aliases/busybox")["target"]
    assert instance["config"]["volatile.base_image"] == fingerprint
