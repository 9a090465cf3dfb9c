#include "storage_test.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define ROOT_ENV "FERRY_STORAGE_TEST_ROOT"

static StorageTestDirs dirs;

static void fill_dirs(const char *root)
{
    dirs.root = g_strdup(root);
    dirs.ferry_dir = g_build_filename(root, "ferry", NULL);
    dirs.pools_dir = g_build_filename(dirs.ferry_dir, "storage-pools", NULL);
    dirs.disks_dir = g_build_filename(dirs.ferry_dir, "disks", NULL);
    dirs.external = g_build_filename(root, "external", NULL);
}

static void clear_dirs(void)
{
    g_clear_pointer(&dirs.root, g_free);
    g_clear_pointer(&dirs.ferry_dir, g_free);
    g_clear_pointer(&dirs.pools_dir, g_free);
    g_clear_pointer(&dirs.disks_dir, g_free);
    g_clear_pointer(&dirs.external, g_free);
}

const StorageTestDirs *storage_test_dirs(void)
{
    return &dirs;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static char *unescape_mountinfo(const char *field)
{
    GString *out = g_string_new(NULL);
    for (const char *p = field; *p; p++) {
        if (p[0] == '\\' && g_ascii_isdigit(p[1]) && g_ascii_isdigit(p[2]) && g_ascii_isdigit(p[3])) {
            g_string_append_c(out, (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0')));
            p += 3;
        } else {
            g_string_append_c(out, *p);
        }
    }
    return g_string_free(out, FALSE);
}

static gint by_length_desc(gconstpointer a, gconstpointer b)
{
    return (gint)strlen(*(char *const *)b) - (gint)strlen(*(char *const *)a);
}

/* Everything the child may have left: mounts below root (deepest first), loop devices backed by files
 * below root, then the files. */
static void cleanup_root(const char *root)
{
    g_autofree char *prefix = g_strconcat(root, "/", NULL);
    for (int round = 0; round < 5; round++) {
        g_autofree char *mountinfo = NULL;
        g_assert_true(g_file_get_contents("/proc/self/mountinfo", &mountinfo, NULL, NULL));
        g_auto(GStrv) lines = g_strsplit(mountinfo, "\n", -1);
        g_autoptr(GPtrArray) targets = g_ptr_array_new_with_free_func(g_free);
        for (char **line = lines; *line; line++) {
            g_auto(GStrv) fields = g_strsplit(*line, " ", 6);
            if (g_strv_length(fields) < 5)
                continue;
            char *target = unescape_mountinfo(fields[4]);
            if (g_str_has_prefix(target, prefix))
                g_ptr_array_add(targets, target);
            else
                g_free(target);
        }
        if (targets->len == 0)
            break;
        g_ptr_array_sort(targets, by_length_desc);
        for (guint i = 0; i < targets->len; i++)
            if (umount2(targets->pdata[i], 0) < 0)
                umount2(targets->pdata[i], MNT_DETACH);
    }

    g_autoptr(GDir) block = g_dir_open("/sys/block", 0, NULL);
    const char *entry;
    while (block != NULL && (entry = g_dir_read_name(block)) != NULL) {
        if (!g_str_has_prefix(entry, "loop"))
            continue;
        g_autofree char *attr = g_strdup_printf("/sys/block/%s/loop/backing_file", entry);
        g_autofree char *backing = NULL;
        if (!g_file_get_contents(attr, &backing, NULL, NULL) || !g_str_has_prefix(backing, prefix))
            continue;
        g_autofree char *device = g_strdup_printf("/dev/%s", entry);
        int fd = open(device, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ioctl(fd, LOOP_CLR_FD, 0);
            close(fd);
        }
    }

    const char *argv[] = {"rm", "-rf", "--one-file-system", "--", root, NULL};
    g_autoptr(GError) error = NULL;
    gint status;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                               &status, &error));
    g_assert_no_error(error);
    g_assert_false(storage_test_exists(root));
}

gboolean storage_test_begin(void)
{
    if (geteuid() != 0) {
        g_test_skip("Needs root: mounts, loop devices, mknod, chown and btrfs ioctls");
        return FALSE;
    }
    if (g_test_subprocess()) {
        const char *root = g_getenv(ROOT_ENV);
        g_assert_nonnull(root);
        fill_dirs(root);
        g_assert_cmpint(g_mkdir_with_parents(dirs.ferry_dir, 0711), ==, 0);
        g_assert_cmpint(g_mkdir_with_parents(dirs.external, 0755), ==, 0);
        return TRUE;
    }

    g_autoptr(GError) error = NULL;
    g_autofree char *root = g_dir_make_tmp("ferry-storage-XXXXXX", &error);
    g_assert_no_error(error);
    g_setenv(ROOT_ENV, root, TRUE);
    g_test_trap_subprocess(NULL, 120 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
    cleanup_root(root);
    g_unsetenv(ROOT_ENV);
    g_test_trap_assert_passed();
    clear_dirs();
    return FALSE;
}

GHashTable *storage_test_config_new(void)
{
    return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

GHashTable *storage_test_config(const char *first_key, ...)
{
    GHashTable *config = storage_test_config_new();
    va_list args;
    va_start(args, first_key);
    for (const char *key = first_key; key != NULL; key = va_arg(args, const char *)) {
        const char *value = va_arg(args, const char *);
        g_hash_table_replace(config, g_strdup(key), g_strdup(value));
    }
    va_end(args);
    return config;
}

void storage_test_write_file(const char *path, const char *contents)
{
    g_autoptr(GError) error = NULL;
    g_file_set_contents(path, contents, -1, &error);
    g_assert_no_error(error);
}

char *storage_test_read_file(const char *path)
{
    g_autoptr(GError) error = NULL;
    char *contents = NULL;
    g_file_get_contents(path, &contents, NULL, &error);
    g_assert_no_error(error);
    return contents;
}

gboolean storage_test_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* system.posix_acl_access in the kernel's xattr format: version 2, then (tag, perm, id) entries sorted by
 * tag: user::rw-, user:1234:r--, group::r--, mask::r--, other::---. */
static const guint8 acl_xattr[] = {
    0x02, 0x00, 0x00, 0x00,                         /* version */
    0x01, 0x00, 0x06, 0x00, 0xff, 0xff, 0xff, 0xff, /* USER_OBJ rw */
    0x02, 0x00, 0x04, 0x00, 0xd2, 0x04, 0x00, 0x00, /* USER 1234 r */
    0x04, 0x00, 0x04, 0x00, 0xff, 0xff, 0xff, 0xff, /* GROUP_OBJ r */
    0x10, 0x00, 0x04, 0x00, 0xff, 0xff, 0xff, 0xff, /* MASK r */
    0x20, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, /* OTHER - */
};

#define SPARSE_SIZE (64 * 1024 * 1024)
#define SPARSE_OFFSET (32 * 1024 * 1024)
#define FILE_SIZE (1024 * 1024)

void storage_test_populate(const char *dir)
{
    g_autofree char *rootfs = g_build_filename(dir, "rootfs", NULL);
    g_assert_cmpint(mkdir(rootfs, 0755), ==, 0);
    g_autofree char *metadata = g_build_filename(dir, "metadata.yaml", NULL);
    storage_test_write_file(metadata, "architecture: x86_64\n");

    g_autofree char *file = g_build_filename(rootfs, "file", NULL);
    g_autofree char *data = g_malloc(FILE_SIZE);
    for (int i = 0; i < FILE_SIZE; i++)
        data[i] = (char)(i * 7 + 1);
    g_autoptr(GError) error = NULL;
    g_file_set_contents(file, data, FILE_SIZE, &error);
    g_assert_no_error(error);
    g_assert_cmpint(chown(file, 1000000, 1000000), ==, 0);
    g_assert_cmpint(chmod(file, 04640), ==, 0);
    g_assert_cmpint(setxattr(file, "user.ferry", "hello", 5, 0), ==, 0);
    g_assert_cmpint(setxattr(file, "trusted.ferry", "root-only", 9, 0), ==, 0);
    g_assert_cmpint(setxattr(file, "system.posix_acl_access", acl_xattr, sizeof(acl_xattr), 0), ==, 0);

    g_autofree char *hardlink = g_build_filename(rootfs, "hardlink", NULL);
    g_assert_cmpint(link(file, hardlink), ==, 0);
    g_autofree char *symlink_path = g_build_filename(rootfs, "etc-link", NULL);
    g_assert_cmpint(symlink("/etc", symlink_path), ==, 0);

    g_autofree char *sparse = g_build_filename(rootfs, "sparse", NULL);
    int fd = open(sparse, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, SPARSE_SIZE), ==, 0);
    char block[4096];
    memset(block, 'S', sizeof(block));
    g_assert_cmpint(pwrite(fd, block, sizeof(block), SPARSE_OFFSET), ==, sizeof(block));
    g_assert_cmpint(fsync(fd), ==, 0);
    close(fd);

    g_autofree char *null_dev = g_build_filename(rootfs, "null", NULL);
    g_assert_cmpint(mknod(null_dev, S_IFCHR | 0666, makedev(1, 3)), ==, 0);
    g_autofree char *fifo = g_build_filename(rootfs, "fifo", NULL);
    g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
}

static void check_xattr(const char *path, const char *name, const void *expected, size_t len)
{
    char value[256];
    ssize_t n = lgetxattr(path, name, value, sizeof(value));
    if (n < 0)
        g_error("%s: xattr %s missing: %s", path, name, g_strerror(errno));
    g_assert_cmpmem(value, (gsize)n, expected, len);
}

void storage_test_check_populated(const char *dir)
{
    g_autofree char *rootfs = g_build_filename(dir, "rootfs", NULL);
    struct stat st, st2;

    g_autofree char *file = g_build_filename(rootfs, "file", NULL);
    g_assert_cmpint(lstat(file, &st), ==, 0);
    g_assert_true(S_ISREG(st.st_mode));
    g_assert_cmpint(st.st_size, ==, FILE_SIZE);
    g_assert_cmpuint(st.st_uid, ==, 1000000);
    g_assert_cmpuint(st.st_gid, ==, 1000000);
    g_assert_cmpint(st.st_mode & 07777, ==, 04640);
    g_assert_cmpuint(st.st_nlink, ==, 2);
    g_autofree char *data = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(file, &data, &len, NULL));
    g_assert_cmpuint(len, ==, FILE_SIZE);
    for (int i = 0; i < FILE_SIZE; i += 4093)
        g_assert_cmpint(data[i], ==, (char)(i * 7 + 1));
    check_xattr(file, "user.ferry", "hello", 5);
    check_xattr(file, "trusted.ferry", "root-only", 9);
    check_xattr(file, "system.posix_acl_access", acl_xattr, sizeof(acl_xattr));

    g_autofree char *hardlink = g_build_filename(rootfs, "hardlink", NULL);
    g_assert_cmpint(lstat(hardlink, &st2), ==, 0);
    g_assert_cmpuint(st2.st_ino, ==, st.st_ino);

    g_autofree char *symlink_path = g_build_filename(rootfs, "etc-link", NULL);
    g_assert_cmpint(lstat(symlink_path, &st), ==, 0);
    g_assert_true(S_ISLNK(st.st_mode));
    g_autofree char *target = g_file_read_link(symlink_path, NULL);
    g_assert_cmpstr(target, ==, "/etc");

    g_autofree char *sparse = g_build_filename(rootfs, "sparse", NULL);
    g_assert_cmpint(lstat(sparse, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, SPARSE_SIZE);
    g_assert_cmpint((gint64)st.st_blocks * 512, <, 1024 * 1024);
    int fd = open(sparse, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    char byte = 0;
    g_assert_cmpint(pread(fd, &byte, 1, SPARSE_OFFSET + 100), ==, 1);
    g_assert_cmpint(byte, ==, 'S');
    g_assert_cmpint(pread(fd, &byte, 1, 100), ==, 1);
    g_assert_cmpint(byte, ==, 0);
    close(fd);

    g_autofree char *null_dev = g_build_filename(rootfs, "null", NULL);
    g_assert_cmpint(lstat(null_dev, &st), ==, 0);
    g_assert_true(S_ISCHR(st.st_mode));
    g_assert_cmpuint(st.st_rdev, ==, makedev(1, 3));

    g_autofree char *fifo = g_build_filename(rootfs, "fifo", NULL);
    g_assert_cmpint(lstat(fifo, &st), ==, 0);
    g_assert_true(S_ISFIFO(st.st_mode));

    g_autofree char *metadata = g_build_filename(dir, "metadata.yaml", NULL);
    g_autofree char *yaml = storage_test_read_file(metadata);
    g_assert_cmpstr(yaml, ==, "architecture: x86_64\n");
}
