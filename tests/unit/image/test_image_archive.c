/* Image tarballs: inspect (fingerprint, metadata), unpack with an id shift keeping every kind of file,
 * and hostile or broken archives that must be refused without writing outside the destination. */
#include "error.h"
#include "image_archive.h"
#include "tarball.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <linux/capability.h>
#include <linux/posix_acl.h>
#include <linux/posix_acl_xattr.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define SHIFT 1000000

typedef struct {
    char *root;    /* scratch directory holding everything below */
    char *tarball; /* root/image.tar */
    char *dest;    /* root/dest */
    char *outside; /* root/outside: must stay empty */
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
    f->root = g_dir_make_tmp("ferry-image-XXXXXX", NULL);
    g_assert_nonnull(f->root);
    f->tarball = g_build_filename(f->root, "image.tar", NULL);
    f->dest = g_build_filename(f->root, "dest", NULL);
    f->outside = g_build_filename(f->root, "outside", NULL);
    g_assert_cmpint(g_mkdir(f->dest, 0700), ==, 0);
    g_assert_cmpint(g_mkdir(f->outside, 0700), ==, 0);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    const char *argv[] = {"rm", "-rf", "--one-file-system", f->root, NULL};
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL,
                               NULL));
    g_free(f->root);
    g_free(f->tarball);
    g_free(f->dest);
    g_free(f->outside);
}

static void reset_dest(Fixture *f)
{
    const char *argv[] = {"rm", "-rf", "--one-file-system", f->dest, NULL};
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL,
                               NULL));
    g_assert_cmpint(g_mkdir(f->dest, 0700), ==, 0);
}

static gboolean is_root(void)
{
    if (geteuid() == 0)
        return TRUE;
    g_test_skip("needs root");
    return FALSE;
}

static char *sha256sum(const char *path)
{
    const char *argv[] = {"sha256sum", path, NULL};
    g_autofree char *out = NULL;
    int status;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, NULL,
                               &status, NULL));
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    return g_strndup(out, 64);
}

/* Nothing may appear in root but image.tar, dest and an empty outside. */
static void assert_nothing_outside(Fixture *f)
{
    g_autoptr(GDir) dir = g_dir_open(f->root, 0, NULL);
    const char *name;
    while ((name = g_dir_read_name(dir)) != NULL) {
        if (!g_str_equal(name, "image.tar") && !g_str_equal(name, "dest") && !g_str_equal(name, "outside"))
            g_error("unexpected %s/%s", f->root, name);
    }
    g_autoptr(GDir) outside = g_dir_open(f->outside, 0, NULL);
    g_assert_null(g_dir_read_name(outside));
}

static void assert_unpack_fails(Fixture *f, const char *fragment)
{
    g_autoptr(GError) error = NULL;
    g_assert_false(ferry_image_archive_unpack(f->tarball, f->dest, SHIFT, SHIFT, NULL, NULL, NULL, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    if (strstr(error->message, fragment) == NULL)
        g_error("unpack error \"%s\" lacks \"%s\"", error->message, fragment);
    assert_nothing_outside(f);
}

static void assert_inspect_fails(Fixture *f, const char *fragment)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(FerryImageInfo) info = ferry_image_archive_inspect(f->tarball, NULL, &error);
    g_assert_null(info);
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    if (strstr(error->message, fragment) == NULL)
        g_error("inspect error \"%s\" lacks \"%s\"", error->message, fragment);
}

static char *dest_path(Fixture *f, const char *relative)
{
    return g_build_filename(f->dest, relative, NULL);
}

static void assert_stat(Fixture *f, const char *relative, mode_t type, mode_t perm, uid_t uid, gid_t gid,
                        struct stat *out)
{
    g_autofree char *path = dest_path(f, relative);
    struct stat st;
    if (lstat(path, &st) < 0)
        g_error("lstat %s: %s", path, g_strerror(errno));
    g_assert_cmphex(st.st_mode & S_IFMT, ==, type);
    if ((st.st_mode & 07777) != perm)
        g_error("%s: mode %04o, expected %04o", relative, st.st_mode & 07777, perm);
    g_assert_cmpuint(st.st_uid, ==, uid);
    g_assert_cmpuint(st.st_gid, ==, gid);
    if (out != NULL)
        *out = st;
}

/* ---- inspect ---- */

static void test_inspect_compressions(Fixture *f, gconstpointer data)
{
    const char *filters[] = {"none", "gzip", "xz", "zstd", "bzip2"};
    for (guint i = 0; i < G_N_ELEMENTS(filters); i++) {
        TestTarball *tarball = test_tarball_new(f->tarball, filters[i]);
        test_tarball_add_file(tarball, "metadata.yaml", 0644,
                              "architecture: amd64\n"
                              "creation_date: 1700000123\n"
                              "properties:\n"
                              "  os: Ubuntu\n"
                              "  release: 22.04\n"
                              "  version: 20.10\n"
                              "  serial: 20240101_01:02\n"
                              "  variant: default\n"
                              "templates:\n"
                              "  /etc/hostname:\n"
                              "    when: [create, copy]\n"
                              "    template: hostname.tpl\n");
        test_tarball_add_dir(tarball, "rootfs");
        test_tarball_add_file(tarball, "rootfs/hello", 0644, "hello\n");
        test_tarball_add_dir(tarball, "templates");
        test_tarball_add_file(tarball, "templates/hostname.tpl", 0644, "{{ container.name }}\n");
        test_tarball_close(tarball);

        g_autoptr(GError) error = NULL;
        g_autoptr(FerryImageInfo) info = ferry_image_archive_inspect(f->tarball, NULL, &error);
        g_assert_no_error(error);
        g_autofree char *expected = sha256sum(f->tarball);
        g_assert_cmpstr(info->fingerprint, ==, expected);
        struct stat st;
        g_assert_cmpint(stat(f->tarball, &st), ==, 0);
        g_assert_cmpuint(info->size, ==, st.st_size);
        g_assert_cmpstr(info->architecture, ==, "x86_64");
        g_assert_cmpint(info->creation_date, ==, 1700000123);
        g_assert_cmpstr(info->type, ==, "container");
        g_autofree char *properties = json_dumps(info->properties, JSON_COMPACT);
        g_assert_cmpstr(properties, ==,
                        "{\"os\":\"Ubuntu\",\"release\":\"22.04\",\"version\":\"20.10\","
                        "\"serial\":\"20240101_01:02\",\"variant\":\"default\"}");
    }
}

/* Data after the end-of-archive blocks is part of the file, so part of the fingerprint. */
static void test_inspect_trailing_data(Fixture *f, gconstpointer data)
{
    test_tarball_write_minimal(f->tarball, "none");
    FILE *file = fopen(f->tarball, "a");
    g_assert_nonnull(file);
    for (int i = 0; i < 100000; i++)
        fputc(0, file);
    fclose(file);
    g_autoptr(GError) error = NULL;
    g_autoptr(FerryImageInfo) info = ferry_image_archive_inspect(f->tarball, NULL, &error);
    g_assert_no_error(error);
    g_autofree char *expected = sha256sum(f->tarball);
    g_assert_cmpstr(info->fingerprint, ==, expected);
}

static void test_inspect_gnu_tar(Fixture *f, gconstpointer data)
{
    /* What distrobuilder-like tooling produces: GNU tar of a directory, "./" names, xz. */
    g_autofree char *src = g_build_filename(f->outside, "src", NULL);
    g_autofree char *rootfs = g_build_filename(src, "rootfs", "etc", NULL);
    g_assert_cmpint(g_mkdir_with_parents(rootfs, 0755), ==, 0);
    g_autofree char *metadata = g_build_filename(src, "metadata.yaml", NULL);
    g_assert_true(g_file_set_contents(metadata, "architecture: x86_64\ncreation_date: 1\n", -1, NULL));
    g_autofree char *os_release = g_build_filename(rootfs, "os-release", NULL);
    g_assert_true(g_file_set_contents(os_release, "ID=debian\n", -1, NULL));
    g_autofree char *utf8_name = g_build_filename(rootfs, "Főtanúsítvány.crt", NULL);
    g_assert_true(g_file_set_contents(utf8_name, "cert\n", -1, NULL));
    g_autofree char *xz = g_strconcat(f->tarball, ".xz", NULL);
    /* pax with UTF-8 names, which libarchive reads back even in the C locale */
    const char *argv[] = {"tar", "--format=pax", "--numeric-owner", "--xattrs", "-C", src, "-cJf", xz, ".",
                          NULL};
    const char *envp[] = {"LC_ALL=C.UTF-8", "PATH=/usr/bin:/bin", NULL};
    int status;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, (char **)envp, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL,
                               NULL, &status, NULL));
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    g_assert_cmpint(g_rename(xz, f->tarball), ==, 0);
    const char *rm[] = {"rm", "-rf", src, NULL};
    g_assert_true(g_spawn_sync(NULL, (char **)rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL,
                               NULL));

    g_autoptr(GError) error = NULL;
    g_autoptr(FerryImageInfo) info = ferry_image_archive_inspect(f->tarball, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(info->architecture, ==, "x86_64");
    g_assert_cmpint(json_object_size(info->properties), ==, 0);

    if (!is_root())
        return;
    g_assert_true(ferry_image_archive_unpack(f->tarball, f->dest, 0, 0, NULL, NULL, NULL, &error));
    g_assert_no_error(error);
    g_autofree char *unpacked = dest_path(f, "rootfs/etc/os-release");
    g_autofree char *contents = NULL;
    g_assert_true(g_file_get_contents(unpacked, &contents, NULL, NULL));
    g_assert_cmpstr(contents, ==, "ID=debian\n");
    g_autofree char *unpacked_utf8 = dest_path(f, "rootfs/etc/Főtanúsítvány.crt");
    g_assert_true(g_file_test(unpacked_utf8, G_FILE_TEST_IS_REGULAR));
}

static void test_inspect_errors(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(FerryImageInfo) missing = ferry_image_archive_inspect("/nonexistent/image", NULL, &error);
    g_assert_null(missing);
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND);

    /* garbage, empty file, a compressed non-tarball */
    g_assert_true(g_file_set_contents(f->tarball, "this is not an image, just some words\n", -1, NULL));
    assert_inspect_fails(f, "Image file is not a tarball");
    g_assert_true(g_file_set_contents(f->tarball, "", 0, NULL));
    assert_inspect_fails(f, "Image file is not a tarball");
    g_autofree char *garbage = g_malloc(64 * 1024);
    for (int i = 0; i < 64 * 1024; i++)
        garbage[i] = (char)(i * 7919 % 251);
    g_assert_true(g_file_set_contents(f->tarball, garbage, 64 * 1024, NULL));
    assert_inspect_fails(f, "Image file is not a tarball");

    /* truncated xz, and a truncated plain tar in the middle of an entry */
    test_tarball_write_minimal(f->tarball, "xz");
    struct stat st;
    g_assert_cmpint(stat(f->tarball, &st), ==, 0);
    g_assert_cmpint(truncate(f->tarball, st.st_size / 2), ==, 0);
    assert_inspect_fails(f, "Image tarball is corrupt or truncated");
    assert_unpack_fails(f, "Image tarball is corrupt or truncated");

    TestTarball *big = test_tarball_new(f->tarball, "none");
    test_tarball_add_minimal_image(big, "x86_64");
    g_autofree char *payload = g_strnfill(100000, 'p');
    test_tarball_add_file(big, "rootfs/big", 0644, payload);
    test_tarball_close(big);
    g_assert_cmpint(truncate(f->tarball, 20000), ==, 0);
    assert_inspect_fails(f, "Image tarball is corrupt or truncated");

    /* corrupt gzip: flip bytes in the middle */
    test_tarball_write_minimal(f->tarball, "gzip");
    g_autofree char *gz = NULL;
    gsize gz_len;
    g_assert_true(g_file_get_contents(f->tarball, &gz, &gz_len, NULL));
    for (gsize i = 20; i < 40 && i < gz_len; i++)
        gz[i] ^= 0x5a;
    g_assert_true(g_file_set_contents(f->tarball, gz, gz_len, NULL));
    assert_inspect_fails(f, "Image");

    /* missing metadata.yaml */
    TestTarball *tarball = test_tarball_new(f->tarball, "gzip");
    test_tarball_add_dir(tarball, "rootfs");
    test_tarball_add_file(tarball, "rootfs/hello", 0644, "hi\n");
    test_tarball_close(tarball);
    assert_inspect_fails(f, "Image tarball has no metadata.yaml");
    assert_unpack_fails(f, "Image tarball has no metadata.yaml");

    /* metadata without architecture, unknown architecture, invalid yaml, hostile yaml */
    tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_minimal_image(tarball, NULL);
    test_tarball_close(tarball);
    assert_inspect_fails(f, "Missing architecture in metadata.yaml");

    tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_minimal_image(tarball, "z80");
    test_tarball_close(tarball);
    assert_inspect_fails(f, "Unsupported architecture \"z80\" in metadata.yaml");

    tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_file(tarball, "metadata.yaml", 0644, "architecture: [x86_64\n");
    test_tarball_add_file(tarball, "rootfs/x", 0644, "x");
    test_tarball_close(tarball);
    assert_inspect_fails(f, "Invalid metadata.yaml: Invalid YAML at line");

    tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_file(tarball, "metadata.yaml", 0644, "architecture: &a x86_64\nos: *a\n");
    test_tarball_add_file(tarball, "rootfs/x", 0644, "x");
    test_tarball_close(tarball);
    assert_inspect_fails(f, "anchors and aliases are not supported");

    tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_file(tarball, "metadata.yaml", 0644, "architecture: x86_64\nproperties:\n  os: [a]\n");
    test_tarball_add_file(tarball, "rootfs/x", 0644, "x");
    test_tarball_close(tarball);
    assert_inspect_fails(f, "property \"os\" is not a string");

    /* no rootfs; a VM image */
    tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_file(tarball, "metadata.yaml", 0644, "architecture: x86_64\n");
    test_tarball_add_dir(tarball, "templates");
    test_tarball_close(tarball);
    assert_inspect_fails(f, "Image tarball has no rootfs");

    tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_file(tarball, "metadata.yaml", 0644, "architecture: x86_64\n");
    test_tarball_add_file(tarball, "rootfs.img", 0644, "QFI\xfb");
    test_tarball_close(tarball);
    assert_inspect_fails(f, "Virtual machine images are not supported");
    assert_unpack_fails(f, "Virtual machine images are not supported");

    /* metadata.yaml must be a regular file of sane size, and appear once */
    tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_symlink(tarball, "metadata.yaml", "/etc/passwd");
    test_tarball_add_file(tarball, "rootfs/x", 0644, "x");
    test_tarball_close(tarball);
    assert_inspect_fails(f, "metadata.yaml is not a regular file");

    tarball = test_tarball_new(f->tarball, "xz");
    g_autofree char *huge = g_strnfill(2 * 1024 * 1024, '#');
    test_tarball_add_file(tarball, "metadata.yaml", 0644, huge);
    test_tarball_close(tarball);
    assert_inspect_fails(f, "metadata.yaml is larger than");

    tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_minimal_image(tarball, "x86_64");
    test_tarball_add_file(tarball, "./metadata.yaml", 0644, "architecture: aarch64\n");
    test_tarball_close(tarball);
    assert_inspect_fails(f, "metadata.yaml appears twice");
}

static void test_inspect_cancelled(Fixture *f, gconstpointer data)
{
    test_tarball_write_minimal(f->tarball, "none");
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_cancellable_cancel(cancellable);
    g_autoptr(GError) error = NULL;
    g_autoptr(FerryImageInfo) info = ferry_image_archive_inspect(f->tarball, cancellable, &error);
    g_assert_null(info);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    g_assert_cmpint(ferry_error_http_status(error), ==, FERRY_ERROR_CANCELLED);
    g_clear_error(&error);
    g_assert_false(ferry_image_archive_unpack(f->tarball, f->dest, 0, 0, NULL, NULL, cancellable, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
}

static void test_architectures(void)
{
    g_assert_cmpstr(ferry_image_architecture_canonical("amd64"), ==, "x86_64");
    g_assert_cmpstr(ferry_image_architecture_canonical("x86_64"), ==, "x86_64");
    g_assert_cmpstr(ferry_image_architecture_canonical("arm64"), ==, "aarch64");
    g_assert_cmpstr(ferry_image_architecture_canonical("armhf"), ==, "armv7l");
    g_assert_cmpstr(ferry_image_architecture_canonical("i386"), ==, "i686");
    g_assert_cmpstr(ferry_image_architecture_canonical("ppc64el"), ==, "ppc64le");
    g_assert_cmpstr(ferry_image_architecture_canonical("ppc64"), ==, "ppc64");
    g_assert_cmpstr(ferry_image_architecture_canonical("riscv64"), ==, "riscv64");
    g_assert_null(ferry_image_architecture_canonical("z80"));
    g_assert_null(ferry_image_architecture_canonical(""));
}

/* ---- unpack ---- */

typedef struct {
    guint calls;
    guint64 last_done;
    guint64 total;
} Progress;

static void on_progress(guint64 done, guint64 total, gpointer user_data)
{
    Progress *progress = user_data;
    g_assert_cmpuint(done, >=, progress->last_done);
    g_assert_cmpuint(done, <=, total);
    progress->calls++;
    progress->last_done = done;
    progress->total = total;
}

static GBytes *caps_v2_net_raw(void)
{
    struct vfs_cap_data caps = {
        .magic_etc = GUINT32_TO_LE(VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE),
    };
    caps.data[0].permitted = GUINT32_TO_LE(1u << CAP_NET_RAW);
    return g_bytes_new(&caps, XATTR_CAPS_SZ_2);
}

static void write_full_image(Fixture *f, const char *filter, char **sparse_out, gsize *sparse_size)
{
    TestTarball *tarball = test_tarball_new(f->tarball, filter);
    test_tarball_add_file(tarball, "./metadata.yaml", 0644, "architecture: x86_64\ncreation_date: 5\n");
    test_tarball_add_dir(tarball, "./templates");
    test_tarball_add_file(tarball, "./templates/hostname.tpl", 0640, "{{ container.name }}\n");
    test_tarball_add_dir(tarball, "./rootfs");
    test_tarball_add_dir(tarball, "./rootfs/bin");
    test_tarball_add_file(tarball, "./rootfs/bin/su", 04755, "#!/bin/true\n");
    test_tarball_add_hardlink(tarball, "./rootfs/bin/su-link", "./rootfs/bin/su");
    test_tarball_add_dir(tarball, "rootfs/etc");
    test_tarball_add_symlink(tarball, "rootfs/etc/localtime", "/usr/share/zoneinfo/UTC");
    test_tarball_add_symlink(tarball, "rootfs/etc/rel", "../bin/su");

    /* owner 1000, explicit mtime, xattrs */
    struct archive_entry *entry = test_entry_new("rootfs/home/user/notes", AE_IFREG, 0600);
    archive_entry_set_uid(entry, 1000);
    archive_entry_set_gid(entry, 1001);
    archive_entry_set_mtime(entry, 1234567890, 500);
    archive_entry_xattr_add_entry(entry, "user.comment", "hello", 5);
    archive_entry_xattr_add_entry(entry, "trusted.ferry", "t", 1);
    archive_entry_xattr_add_entry(entry, "system.nfs4_acl", "junk", 4); /* not applied */
    test_tarball_add(tarball, entry, "notes\n", -1);

    entry = test_entry_new("rootfs/home/user", AE_IFDIR, 0750);
    archive_entry_set_uid(entry, 1000);
    archive_entry_set_gid(entry, 1000);
    archive_entry_set_mtime(entry, 1111111111, 0);
    test_tarball_add(tarball, entry, NULL, 0);

    /* devices and FIFOs */
    entry = test_entry_new("rootfs/dev/null", AE_IFCHR, 0666);
    archive_entry_set_rdevmajor(entry, 1);
    archive_entry_set_rdevminor(entry, 3);
    test_tarball_add(tarball, entry, NULL, 0);
    entry = test_entry_new("rootfs/dev/loop9", AE_IFBLK, 0660);
    archive_entry_set_rdevmajor(entry, 7);
    archive_entry_set_rdevminor(entry, 9);
    archive_entry_set_gid(entry, 6);
    test_tarball_add(tarball, entry, NULL, 0);
    test_tarball_add(tarball, test_entry_new("rootfs/run/initctl", AE_IFIFO, 0600), NULL, 0);

    /* file capabilities, ACLs (pax SCHILY.acl and raw xattr) */
    entry = test_entry_new("rootfs/bin/ping", AE_IFREG, 0755);
    g_autoptr(GBytes) caps = caps_v2_net_raw();
    archive_entry_xattr_add_entry(entry, "security.capability", g_bytes_get_data(caps, NULL),
                                  g_bytes_get_size(caps));
    test_tarball_add(tarball, entry, "ping\n", -1);

    entry = test_entry_new("rootfs/srv", AE_IFDIR, 0770);
    archive_entry_acl_add_entry(entry, ARCHIVE_ENTRY_ACL_TYPE_ACCESS,
                                ARCHIVE_ENTRY_ACL_READ | ARCHIVE_ENTRY_ACL_WRITE | ARCHIVE_ENTRY_ACL_EXECUTE,
                                ARCHIVE_ENTRY_ACL_USER_OBJ, -1, NULL);
    archive_entry_acl_add_entry(entry, ARCHIVE_ENTRY_ACL_TYPE_ACCESS,
                                ARCHIVE_ENTRY_ACL_READ | ARCHIVE_ENTRY_ACL_EXECUTE, ARCHIVE_ENTRY_ACL_USER,
                                33,
                                "www-data");
    archive_entry_acl_add_entry(entry, ARCHIVE_ENTRY_ACL_TYPE_ACCESS,
                                ARCHIVE_ENTRY_ACL_READ | ARCHIVE_ENTRY_ACL_WRITE | ARCHIVE_ENTRY_ACL_EXECUTE,
                                ARCHIVE_ENTRY_ACL_GROUP_OBJ, -1, NULL);
    archive_entry_acl_add_entry(entry, ARCHIVE_ENTRY_ACL_TYPE_ACCESS,
                                ARCHIVE_ENTRY_ACL_READ | ARCHIVE_ENTRY_ACL_WRITE | ARCHIVE_ENTRY_ACL_EXECUTE,
                                ARCHIVE_ENTRY_ACL_MASK, -1, NULL);
    archive_entry_acl_add_entry(entry, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, 0, ARCHIVE_ENTRY_ACL_OTHER, -1, NULL);
    archive_entry_acl_add_entry(entry, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT,
                                ARCHIVE_ENTRY_ACL_READ | ARCHIVE_ENTRY_ACL_WRITE | ARCHIVE_ENTRY_ACL_EXECUTE,
                                ARCHIVE_ENTRY_ACL_USER_OBJ, -1, NULL);
    archive_entry_acl_add_entry(entry, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, ARCHIVE_ENTRY_ACL_READ,
                                ARCHIVE_ENTRY_ACL_GROUP, 34, "backup");
    archive_entry_acl_add_entry(entry, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, ARCHIVE_ENTRY_ACL_READ,
                                ARCHIVE_ENTRY_ACL_GROUP_OBJ, -1, NULL);
    archive_entry_acl_add_entry(entry, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, ARCHIVE_ENTRY_ACL_READ,
                                ARCHIVE_ENTRY_ACL_MASK, -1, NULL);
    archive_entry_acl_add_entry(entry, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, 0, ARCHIVE_ENTRY_ACL_OTHER, -1, NULL);
    test_tarball_add(tarball, entry, NULL, 0);

    entry = test_entry_new("rootfs/srv/raw-acl", AE_IFREG, 0640);
    struct {
        struct posix_acl_xattr_header header;
        struct posix_acl_xattr_entry entries[5];
    } raw_acl = {
        .header = {GUINT32_TO_LE(POSIX_ACL_XATTR_VERSION)},
        .entries = {
            {GUINT16_TO_LE(ACL_USER_OBJ), GUINT16_TO_LE(6), GUINT32_TO_LE(ACL_UNDEFINED_ID)},
            {GUINT16_TO_LE(ACL_USER), GUINT16_TO_LE(4), GUINT32_TO_LE(1000)},
            {GUINT16_TO_LE(ACL_GROUP_OBJ), GUINT16_TO_LE(4), GUINT32_TO_LE(ACL_UNDEFINED_ID)},
            {GUINT16_TO_LE(ACL_MASK), GUINT16_TO_LE(4), GUINT32_TO_LE(ACL_UNDEFINED_ID)},
            {GUINT16_TO_LE(ACL_OTHER), GUINT16_TO_LE(0), GUINT32_TO_LE(ACL_UNDEFINED_ID)},
        },
    };
    archive_entry_xattr_add_entry(entry, "system.posix_acl_access", &raw_acl, sizeof(raw_acl));
    test_tarball_add(tarball, entry, "acl\n", -1);

    /* sparse: 4 MiB with data at 1 MiB and at the end */
    gsize size = 4 * 1024 * 1024;
    char *sparse = g_malloc0(size);
    memset(sparse + 1024 * 1024, 'a', 4096);
    memset(sparse + size - 8192, 'z', 8192);
    entry = test_entry_new("rootfs/var/sparse", AE_IFREG, 0644);
    archive_entry_set_size(entry, size);
    archive_entry_sparse_add_entry(entry, 1024 * 1024, 4096);
    archive_entry_sparse_add_entry(entry, size - 8192, 8192);
    test_tarball_add(tarball, entry, sparse, size);

    /* a sparse file whose last region is a hole */
    entry = test_entry_new("rootfs/var/hole-at-end", AE_IFREG, 0644);
    archive_entry_set_size(entry, 1024 * 1024);
    archive_entry_sparse_add_entry(entry, 0, 4096);
    archive_entry_sparse_add_entry(entry, 1024 * 1024, 0);
    g_autofree char *hole_data = g_malloc0(1024 * 1024);
    memset(hole_data, 'h', 4096);
    test_tarball_add(tarball, entry, hole_data, 1024 * 1024);

    /* non-ASCII names, entries outside the image parts, the archive root, a later entry replacing */
    test_tarball_add_file(tarball, "rootfs/etc/crème brûlée ✓", 0644, "utf8\n");
    test_tarball_add_file(tarball, "other/ignored", 0644, "ignored\n");
    test_tarball_add_file(tarball, "README", 0644, "ignored\n");
    test_tarball_add_dir(tarball, "./");
    test_tarball_add_file(tarball, "rootfs/etc/replaced", 0644, "first\n");
    test_tarball_add_symlink(tarball, "rootfs/etc/replaced", "second");
    test_tarball_close(tarball);

    *sparse_out = sparse;
    *sparse_size = size;
}

static void assert_xattr(const char *path, const char *name, const void *value, gsize size)
{
    char buf[256];
    ssize_t n = lgetxattr(path, name, buf, sizeof(buf));
    if (n < 0)
        g_error("getxattr %s %s: %s", path, name, g_strerror(errno));
    g_assert_cmpmem(buf, n, value, size);
}

static void test_unpack_shifted(Fixture *f, gconstpointer data)
{
    if (!is_root())
        return;
    g_autofree char *sparse = NULL;
    gsize sparse_size;
    write_full_image(f, "zstd", &sparse, &sparse_size);

    g_autoptr(GError) error = NULL;
    g_autoptr(FerryImageInfo) info = ferry_image_archive_inspect(f->tarball, NULL, &error);
    g_assert_no_error(error);

    Progress progress = {0};
    g_assert_true(
        ferry_image_archive_unpack(f->tarball, f->dest, SHIFT, SHIFT, on_progress, &progress, NULL, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(progress.calls, >, 0);
    g_assert_cmpuint(progress.last_done, ==, progress.total);
    g_assert_cmpuint(progress.total, ==, info->size);
    assert_nothing_outside(f);

    struct stat st, st2;
    /* metadata.yaml and templates are the daemon's, unshifted */
    assert_stat(f, "metadata.yaml", S_IFREG, 0644, 0, 0, NULL);
    assert_stat(f, "templates", S_IFDIR, 0755, 0, 0, NULL);
    assert_stat(f, "templates/hostname.tpl", S_IFREG, 0640, 0, 0, NULL);

    assert_stat(f, "rootfs", S_IFDIR, 0755, SHIFT, SHIFT, NULL);
    assert_stat(f, "rootfs/bin/su", S_IFREG, 04755, SHIFT, SHIFT, &st);
    assert_stat(f, "rootfs/bin/su-link", S_IFREG, 04755, SHIFT, SHIFT, &st2);
    g_assert_cmpuint(st.st_ino, ==, st2.st_ino);
    g_assert_cmpuint(st.st_nlink, ==, 2);
    g_assert_cmpint(st.st_mtim.tv_sec, ==, 1700000000);

    assert_stat(f, "rootfs/etc/localtime", S_IFLNK, 0777, SHIFT, SHIFT, NULL);
    g_autofree char *localtime = dest_path(f, "rootfs/etc/localtime");
    g_autofree char *target = g_file_read_link(localtime, NULL);
    g_assert_cmpstr(target, ==, "/usr/share/zoneinfo/UTC");
    g_autofree char *replaced = dest_path(f, "rootfs/etc/replaced");
    g_autofree char *replaced_target = g_file_read_link(replaced, NULL);
    g_assert_cmpstr(replaced_target, ==, "second");

    assert_stat(f, "rootfs/home/user/notes", S_IFREG, 0600, SHIFT + 1000, SHIFT + 1001, &st);
    g_assert_cmpint(st.st_mtim.tv_sec, ==, 1234567890);
    g_assert_cmpint(st.st_mtim.tv_nsec, ==, 500);
    g_autofree char *notes = dest_path(f, "rootfs/home/user/notes");
    assert_xattr(notes, "user.comment", "hello", 5);
    assert_xattr(notes, "trusted.ferry", "t", 1);
    g_assert_cmpint(lgetxattr(notes, "system.nfs4_acl", NULL, 0), <, 0);
    /* directory mtimes survive the children written after them */
    assert_stat(f, "rootfs/home/user", S_IFDIR, 0750, SHIFT + 1000, SHIFT + 1000, &st);
    g_assert_cmpint(st.st_mtim.tv_sec, ==, 1111111111);
    assert_stat(f, "rootfs/home", S_IFDIR, 0755, SHIFT, SHIFT, NULL); /* created implicitly */

    assert_stat(f, "rootfs/dev/null", S_IFCHR, 0666, SHIFT, SHIFT, &st);
    g_assert_cmpuint(major(st.st_rdev), ==, 1);
    g_assert_cmpuint(minor(st.st_rdev), ==, 3);
    assert_stat(f, "rootfs/dev/loop9", S_IFBLK, 0660, SHIFT, SHIFT + 6, &st);
    g_assert_cmpuint(st.st_rdev, ==, makedev(7, 9));
    assert_stat(f, "rootfs/run/initctl", S_IFIFO, 0600, SHIFT, SHIFT, NULL);

    /* capabilities namespaced to the container's root */
    g_autofree char *ping = dest_path(f, "rootfs/bin/ping");
    struct vfs_ns_cap_data caps;
    g_assert_cmpint(lgetxattr(ping, "security.capability", &caps, sizeof(caps)), ==, XATTR_CAPS_SZ_3);
    g_assert_cmphex(GUINT32_FROM_LE(caps.magic_etc), ==, VFS_CAP_REVISION_3 | VFS_CAP_FLAGS_EFFECTIVE);
    g_assert_cmphex(GUINT32_FROM_LE(caps.data[0].permitted), ==, 1u << CAP_NET_RAW);
    g_assert_cmpuint(GUINT32_FROM_LE(caps.rootid), ==, SHIFT);

    /* ACLs with shifted named ids */
    g_autofree char *srv = dest_path(f, "rootfs/srv");
    guint8 acl[128];
    ssize_t n = lgetxattr(srv, "system.posix_acl_access", acl, sizeof(acl));
    g_assert_cmpint(n, ==, 4 + 5 * 8);
    struct posix_acl_xattr_entry e;
    memcpy(&e, acl + 4 + 8, sizeof(e));
    g_assert_cmpuint(GUINT16_FROM_LE(e.e_tag), ==, ACL_USER);
    g_assert_cmpuint(GUINT16_FROM_LE(e.e_perm), ==, 5);
    g_assert_cmpuint(GUINT32_FROM_LE(e.e_id), ==, SHIFT + 33);
    n = lgetxattr(srv, "system.posix_acl_default", acl, sizeof(acl));
    g_assert_cmpint(n, ==, 4 + 5 * 8);
    memcpy(&e, acl + 4 + 2 * 8, sizeof(e));
    g_assert_cmpuint(GUINT16_FROM_LE(e.e_tag), ==, ACL_GROUP);
    g_assert_cmpuint(GUINT32_FROM_LE(e.e_id), ==, SHIFT + 34);
    assert_stat(f, "rootfs/srv", S_IFDIR, 0770, SHIFT, SHIFT, NULL);
    g_autofree char *raw_acl = dest_path(f, "rootfs/srv/raw-acl");
    n = lgetxattr(raw_acl, "system.posix_acl_access", acl, sizeof(acl));
    g_assert_cmpint(n, ==, 4 + 5 * 8);
    memcpy(&e, acl + 4 + 8, sizeof(e));
    g_assert_cmpuint(GUINT32_FROM_LE(e.e_id), ==, SHIFT + 1000);

    /* sparse files: same bytes, few blocks */
    g_autofree char *sparse_path = dest_path(f, "rootfs/var/sparse");
    g_autofree char *contents = NULL;
    gsize length;
    g_assert_true(g_file_get_contents(sparse_path, &contents, &length, NULL));
    g_assert_cmpmem(contents, length, sparse, sparse_size);
    g_assert_cmpint(stat(sparse_path, &st), ==, 0);
    g_assert_cmpint(st.st_blocks * 512, <, 1024 * 1024);
    g_autofree char *hole_path = dest_path(f, "rootfs/var/hole-at-end");
    g_assert_cmpint(stat(hole_path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 1024 * 1024);

    g_autofree char *utf8 = dest_path(f, "rootfs/etc/crème brûlée ✓");
    g_assert_true(g_file_test(utf8, G_FILE_TEST_IS_REGULAR));
    g_autofree char *ignored = dest_path(f, "other");
    g_assert_false(g_file_test(ignored, G_FILE_TEST_EXISTS));
    g_autofree char *readme = dest_path(f, "README");
    g_assert_false(g_file_test(readme, G_FILE_TEST_EXISTS));
}

static void test_unpack_privileged(Fixture *f, gconstpointer data)
{
    if (!is_root())
        return;
    g_autofree char *sparse = NULL;
    gsize sparse_size;
    write_full_image(f, "xz", &sparse, &sparse_size);
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_image_archive_unpack(f->tarball, f->dest, 0, 0, NULL, NULL, NULL, &error));
    g_assert_no_error(error);
    assert_stat(f, "rootfs", S_IFDIR, 0755, 0, 0, NULL);
    assert_stat(f, "rootfs/bin/su", S_IFREG, 04755, 0, 0, NULL);
    assert_stat(f, "rootfs/home/user/notes", S_IFREG, 0600, 1000, 1001, NULL);
    /* unshifted capabilities stay as written */
    g_autofree char *ping = dest_path(f, "rootfs/bin/ping");
    g_autoptr(GBytes) expected = caps_v2_net_raw();
    assert_xattr(ping, "security.capability", g_bytes_get_data(expected, NULL), g_bytes_get_size(expected));
}

/* ---- hostile archives ---- */

static void test_hostile_dotdot(Fixture *f, gconstpointer data)
{
    const char *names[] = {"../x", "rootfs/../../x", "rootfs/a/../../../outside/x", "./../outside/x"};
    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        TestTarball *tarball = test_tarball_new(f->tarball, "none");
        test_tarball_add_minimal_image(tarball, "x86_64");
        test_tarball_add_file(tarball, names[i], 0644, "pwned\n");
        test_tarball_close(tarball);
        assert_inspect_fails(f, "'..' components are not allowed");
        assert_unpack_fails(f, "'..' components are not allowed");
    }
}

static void test_hostile_absolute(Fixture *f, gconstpointer data)
{
    g_autofree char *victim = g_strdup_printf("/etc/ferry-test-%d", getpid());
    g_autofree char *outside_file = g_build_filename(f->outside, "x", NULL);
    const char *names[] = {victim, outside_file, "/rootfs/x"};
    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        TestTarball *tarball = test_tarball_new(f->tarball, "gzip");
        test_tarball_add_minimal_image(tarball, "x86_64");
        test_tarball_add_file(tarball, names[i], 0644, "pwned\n");
        test_tarball_close(tarball);
        assert_inspect_fails(f, "absolute paths are not allowed");
        assert_unpack_fails(f, "absolute paths are not allowed");
        g_assert_false(g_file_test(victim, G_FILE_TEST_EXISTS));
    }
}

static void test_hostile_symlink_parent(Fixture *f, gconstpointer data)
{
    if (!is_root())
        return;
    g_autofree char *victim = g_strdup_printf("/etc/ferry-test-%d", getpid());
    g_autofree char *victim_name = g_path_get_basename(victim);
    g_autofree char *through_etc = g_strdup_printf("rootfs/link/%s", victim_name);
    const struct {
        const char *link;
        const char *target;
        const char *through;
    } cases[] = {
        {"rootfs/link", "/etc", through_etc},
        {"rootfs/link", f->outside, "rootfs/link/x"},
        {"rootfs/link", "../../outside", "rootfs/link/x"},
        {"rootfs/link", "../../outside", "rootfs/link/sub/x"},
        {"rootfs/a/link", "..", "rootfs/a/link/x"}, /* stays inside, still refused */
        {"rootfs/link", "/etc", "rootfs/link"},     /* a directory entry over a symlink replaces it */
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        TestTarball *tarball = test_tarball_new(f->tarball, "none");
        test_tarball_add_minimal_image(tarball, "x86_64");
        test_tarball_add_symlink(tarball, cases[i].link, cases[i].target);
        if (g_str_equal(cases[i].through, cases[i].link)) {
            test_tarball_add_dir(tarball, cases[i].through);
            test_tarball_add_file(tarball, "rootfs/link/x", 0644, "inside\n");
        } else {
            test_tarball_add_file(tarball, cases[i].through, 0644, "pwned\n");
        }
        test_tarball_close(tarball);

        g_autoptr(GError) error = NULL;
        g_autoptr(FerryImageInfo) info = ferry_image_archive_inspect(f->tarball, NULL, &error);
        g_assert_no_error(error); /* only the filesystem can tell */
        g_assert_nonnull(info);
        if (g_str_equal(cases[i].through, cases[i].link)) {
            g_assert_true(ferry_image_archive_unpack(f->tarball, f->dest, SHIFT, SHIFT, NULL, NULL, NULL,
                                                     &error));
            g_assert_no_error(error);
            assert_stat(f, "rootfs/link", S_IFDIR, 0755, SHIFT, SHIFT, NULL);
            assert_stat(f, "rootfs/link/x", S_IFREG, 0644, SHIFT, SHIFT, NULL);
        } else {
            assert_unpack_fails(f, "its path goes through a symbolic link");
        }
        g_assert_false(g_file_test(victim, G_FILE_TEST_EXISTS));
        assert_nothing_outside(f);
        reset_dest(f);
    }
}

static void test_hostile_hardlink(Fixture *f, gconstpointer data)
{
    const struct {
        const char *target;
        const char *fragment;
    } cases[] = {
        {"/etc/passwd", "absolute paths are not allowed"},
        {"../../etc/passwd", "'..' components are not allowed"},
        {"etc/passwd", "is outside rootfs"},
        {"metadata.yaml", "is outside rootfs"},
        {"templates/x", "is outside rootfs"},
        {"rootfs", "is outside rootfs"},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        TestTarball *tarball = test_tarball_new(f->tarball, "none");
        test_tarball_add_minimal_image(tarball, "x86_64");
        test_tarball_add_hardlink(tarball, "rootfs/passwd", cases[i].target);
        test_tarball_close(tarball);
        assert_inspect_fails(f, cases[i].fragment);
        assert_unpack_fails(f, cases[i].fragment);
    }

    if (!is_root())
        return;
    /* a hard link to a symlink pointing out links the symlink itself; writing the name later replaces it */
    TestTarball *tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_minimal_image(tarball, "x86_64");
    test_tarball_add_symlink(tarball, "rootfs/out", "/etc/passwd");
    test_tarball_add_hardlink(tarball, "rootfs/out2", "rootfs/out");
    test_tarball_add_file(tarball, "rootfs/out2", 0644, "overwrite\n");
    test_tarball_close(tarball);
    g_autofree char *before = NULL;
    g_assert_true(g_file_get_contents("/etc/passwd", &before, NULL, NULL));
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_image_archive_unpack(f->tarball, f->dest, 0, 0, NULL, NULL, NULL, &error));
    g_assert_no_error(error);
    assert_stat(f, "rootfs/out", S_IFLNK, 0777, 0, 0, NULL);
    assert_stat(f, "rootfs/out2", S_IFREG, 0644, 0, 0, NULL);
    g_autofree char *after = NULL;
    g_assert_true(g_file_get_contents("/etc/passwd", &after, NULL, NULL));
    g_assert_cmpstr(before, ==, after);

    /* a hard link to something missing, or through a symlinked directory */
    tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_minimal_image(tarball, "x86_64");
    test_tarball_add_hardlink(tarball, "rootfs/missing", "rootfs/nothing-here");
    test_tarball_close(tarball);
    assert_unpack_fails(f, "does not exist");

    tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_minimal_image(tarball, "x86_64");
    test_tarball_add_symlink(tarball, "rootfs/etc", "/etc");
    test_tarball_add_hardlink(tarball, "rootfs/passwd", "rootfs/etc/passwd");
    test_tarball_close(tarball);
    assert_unpack_fails(f, "its path goes through a symbolic link");
}

static void test_hostile_types(Fixture *f, gconstpointer data)
{
    TestTarball *tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_file(tarball, "metadata.yaml", 0644, "architecture: x86_64\n");
    test_tarball_add_symlink(tarball, "rootfs", "/");
    test_tarball_add_file(tarball, "rootfs/x", 0644, "x");
    test_tarball_close(tarball);
    assert_inspect_fails(f, "rootfs is not a directory");
    assert_unpack_fails(f, "rootfs is not a directory");

    tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_minimal_image(tarball, "x86_64");
    test_tarball_add_symlink(tarball, "templates/hostname.tpl", "/etc/shadow");
    test_tarball_close(tarball);
    assert_inspect_fails(f, "is not a regular file or directory");
    assert_unpack_fails(f, "is not a regular file or directory");

    tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_minimal_image(tarball, "x86_64");
    test_tarball_add_file(tarball, "templates", 0644, "not a dir");
    test_tarball_close(tarball);
    assert_inspect_fails(f, "templates is not a directory");
}

static void test_hostile_owner(Fixture *f, gconstpointer data)
{
    if (!is_root())
        return;
    TestTarball *tarball = test_tarball_new(f->tarball, "none");
    test_tarball_add_minimal_image(tarball, "x86_64");
    struct archive_entry *entry = test_entry_new("rootfs/big-uid", AE_IFREG, 0644);
    archive_entry_set_uid(entry, 4294000000u);
    test_tarball_add(tarball, entry, "x", -1);
    test_tarball_close(tarball);
    assert_unpack_fails(f, "owner is out of range");
}

int main(int argc, char **argv)
{
    /* No setlocale(): names in pax headers are UTF-8 and must survive the C locale the daemon may run in. */
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/image/architectures", test_architectures);
#define ADD(path, func) g_test_add(path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("/image/inspect/compressions", test_inspect_compressions);
    ADD("/image/inspect/trailing-data", test_inspect_trailing_data);
    ADD("/image/inspect/gnu-tar", test_inspect_gnu_tar);
    ADD("/image/inspect/errors", test_inspect_errors);
    ADD("/image/inspect/cancelled", test_inspect_cancelled);
    ADD("/image/unpack/shifted", test_unpack_shifted);
    ADD("/image/unpack/privileged", test_unpack_privileged);
    ADD("/image/hostile/dotdot", test_hostile_dotdot);
    ADD("/image/hostile/absolute", test_hostile_absolute);
    ADD("/image/hostile/symlink-parent", test_hostile_symlink_parent);
    ADD("/image/hostile/hardlink", test_hostile_hardlink);
    ADD("/image/hostile/types", test_hostile_types);
    ADD("/image/hostile/owner", test_hostile_owner);
#undef ADD
    return g_test_run();
}
