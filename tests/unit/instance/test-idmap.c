/* Id maps: Incus's JSON form, and shifting a tree on disk (needs root: it chowns). */
#include "idmap.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define BASE 1000000

static void test_json_roundtrip(void)
{
    FerryIdmap map = {.host_base = FERRY_IDMAP_DEFAULT_BASE, .range = FERRY_IDMAP_DEFAULT_RANGE};
    g_autofree char *json = ferry_idmap_to_json(&map);
    g_assert_cmpstr(
        json, ==,
        "[{\"Isuid\":true,\"Isgid\":false,\"Hostid\":1000000,\"Nsid\":0,\"Maprange\":1000000000},"
        "{\"Isuid\":false,\"Isgid\":true,\"Hostid\":1000000,\"Nsid\":0,\"Maprange\":1000000000}]");
    FerryIdmap parsed;
    gboolean privileged = TRUE;
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_idmap_from_json(json, &parsed, &privileged, &error));
    g_assert_no_error(error);
    g_assert_false(privileged);
    g_assert_cmpuint(parsed.host_base, ==, map.host_base);
    g_assert_cmpuint(parsed.range, ==, map.range);

    g_autofree char *none = ferry_idmap_to_json(NULL);
    g_assert_cmpstr(none, ==, "[]");
    const char *privileged_forms[] = {"[]", "null", "", NULL};
    for (gsize i = 0; i < G_N_ELEMENTS(privileged_forms); i++) {
        privileged = FALSE;
        g_assert_true(ferry_idmap_from_json(privileged_forms[i], &parsed, &privileged, &error));
        g_assert_no_error(error);
        g_assert_true(privileged);
    }
}

static void test_json_forms(void)
{
    FerryIdmap parsed;
    gboolean privileged;
    g_autoptr(GError) error = NULL;
    /* One entry for both, as Incus writes for "both" maps. */
    g_assert_true(ferry_idmap_from_json(
        "[{\"Isuid\":true,\"Isgid\":true,\"Hostid\":100000,\"Nsid\":0,\"Maprange\":65536}]", &parsed,
        &privileged, &error));
    g_assert_no_error(error);
    g_assert_false(privileged);
    g_assert_cmpuint(parsed.host_base, ==, 100000);
    g_assert_cmpuint(parsed.range, ==, 65536);

    struct {
        const char *json;
        int code;
    } bad[] = {
        {"{", FERRY_ERROR_INVALID},
        {"{}", FERRY_ERROR_INVALID},
        {"[1]", FERRY_ERROR_INVALID},
        {"[{\"Isuid\":true,\"Hostid\":-1,\"Nsid\":0,\"Maprange\":5}]", FERRY_ERROR_INVALID},
        {"[{\"Isuid\":true,\"Isgid\":true,\"Hostid\":4294967290,\"Nsid\":0,\"Maprange\":10}]",
         FERRY_ERROR_INVALID},
        {"[{\"Isuid\":true,\"Isgid\":true,\"Hostid\":1000000,\"Nsid\":0,\"Maprange\":10,\"Extra\":1}]",
         FERRY_ERROR_INVALID},
        /* Valid for Incus, not representable here. */
        {"[{\"Isuid\":true,\"Isgid\":true,\"Hostid\":1000000,\"Nsid\":1,\"Maprange\":10}]",
         FERRY_ERROR_NOT_IMPLEMENTED},
        {"[{\"Isuid\":true,\"Isgid\":false,\"Hostid\":1000000,\"Nsid\":0,\"Maprange\":10},"
         "{\"Isuid\":false,\"Isgid\":true,\"Hostid\":2000000,\"Nsid\":0,\"Maprange\":10}]",
         FERRY_ERROR_NOT_IMPLEMENTED},
        {"[{\"Isuid\":true,\"Isgid\":false,\"Hostid\":1000000,\"Nsid\":0,\"Maprange\":10}]",
         FERRY_ERROR_NOT_IMPLEMENTED},
    };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_clear_error(&error);
        g_assert_false(ferry_idmap_from_json(bad[i].json, &parsed, &privileged, &error));
        g_assert_error(error, FERRY_ERROR, bad[i].code);
    }
}

/* ---- shifting a tree ---- */

typedef struct {
    char *dir; /* holds tree/ and outside */
    char *tree;
    char *outside; /* a file a symlink in the tree points at */
} TreeFixture;

static char *tree_path(TreeFixture *f, const char *rel)
{
    return g_build_filename(f->tree, rel, NULL);
}

/* posix_acl_xattr layout: version 2, then {tag, perm, id} entries sorted by tag. */
static GBytes *make_acl(guint32 user, guint32 group)
{
    const struct {
        guint16 tag, perm;
        guint32 id;
    } entries[] = {{0x01, 6, G_MAXUINT32}, {0x02, 4, user},        {0x04, 4, G_MAXUINT32},
                   {0x08, 4, group},       {0x10, 4, G_MAXUINT32}, {0x20, 4, G_MAXUINT32}};
    g_autoptr(GByteArray) acl = g_byte_array_new();
    guint32 version = GUINT32_TO_LE(2);
    g_byte_array_append(acl, (guint8 *)&version, 4);
    for (gsize i = 0; i < G_N_ELEMENTS(entries); i++) {
        guint16 tag = GUINT16_TO_LE(entries[i].tag), perm = GUINT16_TO_LE(entries[i].perm);
        guint32 id = GUINT32_TO_LE(entries[i].id);
        g_byte_array_append(acl, (guint8 *)&tag, 2);
        g_byte_array_append(acl, (guint8 *)&perm, 2);
        g_byte_array_append(acl, (guint8 *)&id, 4);
    }
    return g_byte_array_free_to_bytes(g_steal_pointer(&acl));
}

static void assert_acl_ids(const char *path, const char *name, guint32 user, guint32 group)
{
    guint8 buffer[256];
    ssize_t len = getxattr(path, name, buffer, sizeof(buffer));
    g_assert_cmpint(len, ==, 4 + 6 * 8);
    guint32 id;
    memcpy(&id, buffer + 4 + 8 + 4, 4);
    g_assert_cmpuint(GUINT32_FROM_LE(id), ==, user);
    memcpy(&id, buffer + 4 + 3 * 8 + 4, 4);
    g_assert_cmpuint(GUINT32_FROM_LE(id), ==, group);
}

static void assert_owner(const char *path, guint32 uid, guint32 gid)
{
    struct stat st;
    g_assert_cmpint(lstat(path, &st), ==, 0);
    g_assert_cmpuint(st.st_uid, ==, uid);
    g_assert_cmpuint(st.st_gid, ==, gid);
}

static void assert_mode(const char *path, mode_t mode)
{
    struct stat st;
    g_assert_cmpint(lstat(path, &st), ==, 0);
    g_assert_cmpuint(st.st_mode & 07777, ==, mode);
}

static void write_file(const char *path, guint32 uid, guint32 gid, mode_t mode)
{
    g_assert_true(g_file_set_contents(path, "x", 1, NULL));
    g_assert_cmpint(lchown(path, uid, gid), ==, 0);
    g_assert_cmpint(chmod(path, mode), ==, 0);
}

static void tree_setup(TreeFixture *f, gconstpointer data)
{
    if (geteuid() != 0)
        return;
    g_autoptr(GError) error = NULL;
    f->dir = g_dir_make_tmp("ferry-idmap-XXXXXX", &error);
    g_assert_no_error(error);
    f->tree = g_build_filename(f->dir, "tree", NULL);
    f->outside = g_build_filename(f->dir, "outside", NULL);
    g_assert_cmpint(g_mkdir(f->tree, 0755), ==, 0);
    write_file(f->outside, 0, 0, 0644);

    g_autofree char *plain = tree_path(f, "plain");
    g_autofree char *suid = tree_path(f, "suid");
    g_autofree char *dir = tree_path(f, "dir");
    g_autofree char *nested = tree_path(f, "dir/nested");
    g_autofree char *acl = tree_path(f, "dir/acl");
    g_autofree char *escape = tree_path(f, "escape");
    g_autofree char *hard1 = tree_path(f, "hard1");
    g_autofree char *hard2 = tree_path(f, "dir/hard2");
    g_autofree char *fifo = tree_path(f, "fifo");
    g_autofree char *caps = tree_path(f, "caps");

    write_file(plain, 0, 0, 0644);
    write_file(suid, 1000, 1000, 06755);
    g_assert_cmpint(g_mkdir(dir, 02775), ==, 0);
    g_assert_cmpint(chown(dir, 33, 33), ==, 0);
    g_assert_cmpint(chmod(dir, 02775), ==, 0);
    write_file(nested, 7, 8, 0600);
    write_file(acl, 0, 0, 0640);
    g_autoptr(GBytes) acl_value = make_acl(1000, 2000);
    g_assert_cmpint(setxattr(acl, "system.posix_acl_access", g_bytes_get_data(acl_value, NULL),
                             g_bytes_get_size(acl_value), 0),
                    ==, 0);
    g_assert_cmpint(setxattr(dir, "system.posix_acl_default", g_bytes_get_data(acl_value, NULL),
                             g_bytes_get_size(acl_value), 0),
                    ==, 0);
    g_assert_cmpint(symlink(f->outside, escape), ==, 0);
    write_file(hard1, 5, 6, 0644);
    g_assert_cmpint(link(hard1, hard2), ==, 0);
    g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
    write_file(caps, 0, 0, 0755);
    /* v2 capabilities: cap_net_raw (13) permitted, effective. */
    guint32 cap_v2[5] = {GUINT32_TO_LE(0x02000001), GUINT32_TO_LE(1u << 13), 0, 0, 0};
    g_assert_cmpint(setxattr(caps, "security.capability", cap_v2, sizeof(cap_v2), 0), ==, 0);
}

static void tree_teardown(TreeFixture *f, gconstpointer data)
{
    if (f->dir == NULL)
        return;
    g_autofree char *mnt = tree_path(f, "mnt");
    umount2(mnt, MNT_DETACH);
    const char *argv[] = {"rm", "-rf", "--one-file-system", f->dir, NULL};
    g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
    g_free(f->dir);
    g_free(f->tree);
    g_free(f->outside);
}

static gboolean skip_unless_root(void)
{
    if (geteuid() == 0)
        return FALSE;
    g_test_skip("Shifting ids needs root (chown); run the instance tests as root");
    return TRUE;
}

static void assert_caps(const char *path, guint32 revision, guint32 rootid)
{
    guint8 buffer[64];
    ssize_t len = getxattr(path, "security.capability", buffer, sizeof(buffer));
    g_assert_cmpint(len, ==, revision == 3 ? 24 : 20);
    guint32 magic, permitted;
    memcpy(&magic, buffer, 4);
    memcpy(&permitted, buffer + 4, 4);
    g_assert_cmphex(GUINT32_FROM_LE(magic), ==, (revision << 24) | 1);
    g_assert_cmphex(GUINT32_FROM_LE(permitted), ==, 1u << 13);
    if (revision == 3) {
        guint32 id;
        memcpy(&id, buffer + 20, 4);
        g_assert_cmpuint(GUINT32_FROM_LE(id), ==, rootid);
    }
}

static void assert_tree(TreeFixture *f, guint32 shift)
{
    g_autofree char *plain = tree_path(f, "plain");
    g_autofree char *suid = tree_path(f, "suid");
    g_autofree char *dir = tree_path(f, "dir");
    g_autofree char *nested = tree_path(f, "dir/nested");
    g_autofree char *acl = tree_path(f, "dir/acl");
    g_autofree char *escape = tree_path(f, "escape");
    g_autofree char *hard1 = tree_path(f, "hard1");
    g_autofree char *fifo = tree_path(f, "fifo");
    g_autofree char *caps = tree_path(f, "caps");

    assert_owner(f->tree, shift, shift);
    assert_owner(plain, shift, shift);
    assert_owner(suid, 1000 + shift, 1000 + shift);
    assert_mode(suid, 06755); /* chown cleared them; the shift put them back */
    assert_owner(dir, 33 + shift, 33 + shift);
    assert_mode(dir, 02775);
    assert_owner(nested, 7 + shift, 8 + shift);
    assert_owner(acl, shift, shift);
    assert_acl_ids(acl, "system.posix_acl_access", 1000 + shift, 2000 + shift);
    assert_acl_ids(dir, "system.posix_acl_default", 1000 + shift, 2000 + shift);
    assert_owner(escape, shift, shift);        /* the link itself... */
    assert_owner(f->outside, 0, 0);            /* ...never what it points at */
    assert_owner(hard1, 5 + shift, 6 + shift); /* two links, shifted once */
    assert_owner(fifo, shift, shift);
    assert_owner(caps, shift, shift);
    assert_caps(caps, shift == 0 ? 2 : 3, shift);
}

static void test_shift_roundtrip(TreeFixture *f, gconstpointer data)
{
    if (skip_unless_root())
        return;
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_idmap_shift_tree(f->tree, BASE, NULL, &error));
    g_assert_no_error(error);
    assert_tree(f, BASE);
    g_assert_true(ferry_idmap_shift_tree(f->tree, -BASE, NULL, &error));
    g_assert_no_error(error);
    assert_tree(f, 0);
}

static void test_shift_out_of_range(TreeFixture *f, gconstpointer data)
{
    if (skip_unless_root())
        return;
    g_autoptr(GError) error = NULL;
    /* Shifting host ids down below 0 fails, and before anything changed. */
    g_assert_false(ferry_idmap_shift_tree(f->tree, -BASE, NULL, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    assert_tree(f, 0);
    g_clear_error(&error);

    g_autofree char *high = tree_path(f, "dir/high");
    write_file(high, 4294967294u - 10, 0, 0644);
    g_assert_false(ferry_idmap_shift_tree(f->tree, 11, NULL, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    assert_tree(f, 0);
    g_clear_error(&error);
    /* An ACL entry out of range counts too. */
    g_assert_cmpint(unlink(high), ==, 0);
    g_autofree char *acl = tree_path(f, "dir/acl");
    g_autoptr(GBytes) acl_value = make_acl(4294967290u, 1);
    g_assert_cmpint(setxattr(acl, "system.posix_acl_access", g_bytes_get_data(acl_value, NULL),
                             g_bytes_get_size(acl_value), 0),
                    ==, 0);
    g_assert_false(ferry_idmap_shift_tree(f->tree, 10, NULL, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_INVALID);
    g_autofree char *plain = tree_path(f, "plain");
    assert_owner(plain, 0, 0);
}

static void test_shift_skips_mounts(TreeFixture *f, gconstpointer data)
{
    if (skip_unless_root())
        return;
    g_autofree char *mnt = tree_path(f, "mnt");
    g_autofree char *source = g_build_filename(f->dir, "source", NULL);
    g_assert_cmpint(g_mkdir(mnt, 0755), ==, 0);
    g_assert_cmpint(g_mkdir(source, 0755), ==, 0);
    g_autofree char *inner = g_build_filename(source, "host-file", NULL);
    write_file(inner, 0, 0, 0644);
    if (mount(source, mnt, NULL, MS_BIND, NULL) < 0) {
        g_autofree char *reason = g_strdup_printf("Cannot bind-mount here: %s", g_strerror(errno));
        g_test_skip(reason);
        return;
    }
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_idmap_shift_tree(f->tree, BASE, NULL, &error));
    g_assert_no_error(error);
    umount2(mnt, MNT_DETACH);
    assert_owner(inner, 0, 0);
    assert_owner(source, 0, 0);
    /* The directory under the mount point was hidden by the mount, so it could not be shifted either. */
    assert_owner(mnt, 0, 0);
    g_autofree char *plain = tree_path(f, "plain");
    assert_owner(plain, BASE, BASE);
}

static void test_shift_cancelled(TreeFixture *f, gconstpointer data)
{
    if (skip_unless_root())
        return;
    /* Enough entries for the walk to look at the cancellable. */
    for (int i = 0; i < 600; i++) {
        g_autofree char *name = g_strdup_printf("many-%03d", i);
        g_autofree char *path = tree_path(f, name);
        write_file(path, 0, 0, 0644);
    }
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_cancellable_cancel(cancellable);
    g_autoptr(GError) error = NULL;
    g_assert_false(ferry_idmap_shift_tree(f->tree, BASE, cancellable, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
}

static void test_shift_refuses_symlink_root(TreeFixture *f, gconstpointer data)
{
    if (skip_unless_root())
        return;
    g_autofree char *tree_link = g_build_filename(f->dir, "link-to-tree", NULL);
    g_assert_cmpint(symlink(f->tree, tree_link), ==, 0);
    g_autoptr(GError) error = NULL;
    g_assert_false(ferry_idmap_shift_tree(tree_link, BASE, NULL, &error));
    g_assert_nonnull(error);
    assert_tree(f, 0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/instance/idmap/json-roundtrip", test_json_roundtrip);
    g_test_add_func("/instance/idmap/json-forms", test_json_forms);
    g_test_add("/instance/idmap/shift-roundtrip", TreeFixture, NULL, tree_setup, test_shift_roundtrip,
               tree_teardown);
    g_test_add("/instance/idmap/shift-out-of-range", TreeFixture, NULL, tree_setup, test_shift_out_of_range,
               tree_teardown);
    g_test_add("/instance/idmap/shift-skips-mounts", TreeFixture, NULL, tree_setup, test_shift_skips_mounts,
               tree_teardown);
    g_test_add("/instance/idmap/shift-cancelled", TreeFixture, NULL, tree_setup, test_shift_cancelled,
               tree_teardown);
    g_test_add("/instance/idmap/shift-refuses-symlink-root", TreeFixture, NULL, tree_setup,
               test_shift_refuses_symlink_root, tree_teardown);
    return g_test_run();
}
