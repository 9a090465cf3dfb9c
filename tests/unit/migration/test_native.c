/* ferry's native migration transport (native.h): the real sender and receiver over an in-process channel pair
 * (test_channel.c), and a hostile sender written with the stream API against the real receiver. Most cases
 * need root (owners, device nodes, trusted.* and security.* xattrs) and skip without it. */
#include "native.h"
#include "native_protocol.h"
#include "test_channel.h"
#include "test_tree.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#define KIB 1024
#define MIB (1024 * 1024)
/* Any run longer than this is a hang. */
#define WATCHDOG_SECONDS 60
/* Ids far above the host's own: what an unprivileged container's files carry. */
#define CUID 1000000
#define CGID 1000000

/* ---- fixture ---- */

typedef struct {
    char *root, *src, *dst;
    char *outside;      /* beside dst: a hostile sender must never reach it */
    TestChannel *a, *b; /* a: the sender's end */
    guint open_fds;
} Fixture;

static void rm_rf(const char *path)
{
    const char *argv[] = {"rm", "-rf", path, NULL};
    gint status = 0;
    g_assert_true(
        g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, &status, NULL));
    g_assert_cmpint(status, ==, 0);
}

static void fixture_setup(Fixture *f, gconstpointer unused)
{
    g_autoptr(GError) error = NULL;
    f->root = g_dir_make_tmp("ferry-native-XXXXXX", &error);
    g_assert_no_error(error);
    f->src = g_build_filename(f->root, "src", NULL);
    f->dst = g_build_filename(f->root, "dst", NULL);
    f->outside = g_build_filename(f->root, "outside", NULL);
    g_assert_no_errno(mkdir(f->src, 0755));
    g_assert_no_errno(mkdir(f->dst, 0755));
    g_assert_no_errno(mkdir(f->outside, 0755));
    test_channel_pair(&f->a, &f->b);
    f->open_fds = count_open_fds();
}

static void fixture_teardown(Fixture *f, gconstpointer unused)
{
    /* Nothing leaked on any path, failures included: files, directories, cancellable fds. */
    g_assert_cmpuint(count_open_fds(), ==, f->open_fds);
    test_channel_free(f->a);
    test_channel_free(f->b);
    rm_rf(f->root);
    g_free(f->root);
    g_free(f->src);
    g_free(f->dst);
    g_free(f->outside);
}

static gboolean need_root(void)
{
    if (getuid() == 0)
        return TRUE;
    g_test_skip("needs root (owners, device nodes, trusted.* and security.* xattrs)");
    return FALSE;
}

/* ---- running both sides ---- */

typedef struct {
    gboolean sending;
    const char *dir;
    FerryByteChannel channel;
    FerryNativeOptions options;
    GCancellable *cancellable;
    gboolean ok;
    GError *error;
    gint64 finished_at;
} Side;

static gpointer side_thread(gpointer data)
{
    Side *side = data;
    if (side->sending)
        side->ok =
            ferry_native_send(side->dir, &side->channel, &side->options, side->cancellable, &side->error);
    else
        side->ok =
            ferry_native_receive(side->dir, &side->channel, &side->options, side->cancellable, &side->error);
    side->finished_at = g_get_monotonic_time();
    return NULL;
}

static void side_clear(Side *side)
{
    g_clear_error(&side->error);
}

static void run_sides(Side *sender, Side *receiver)
{
    alarm(WATCHDOG_SECONDS);
    GThread *s = g_thread_new("sender", side_thread, sender);
    GThread *r = g_thread_new("receiver", side_thread, receiver);
    g_thread_join(s);
    g_thread_join(r);
    alarm(0);
}

static void sides_init(Fixture *f, const char *src, const char *dst, const FerryNativeOptions *send_options,
                       const FerryNativeOptions *recv_options, Side *sender, Side *receiver)
{
    *sender =
        (Side){.sending = TRUE, .dir = src, .channel = test_channel_iface(f->a), .options = *send_options};
    *receiver = (Side){.dir = dst, .channel = test_channel_iface(f->b), .options = *recv_options};
    sender->options.peer = "target";
    receiver->options.peer = "source";
}

typedef struct {
    guint64 last;
    guint calls;
} Progress;

static void record_progress(guint64 bytes, gpointer data)
{
    Progress *p = data;
    g_assert_cmpuint(bytes, >=, p->last);
    p->last = bytes;
    p->calls++;
}

/* One pass that must succeed; returns the bytes of file data it moved (both sides must agree on them). */
static guint64 pass_ok(Fixture *f, const char *src, const char *dst, gboolean zstd)
{
    Progress sent = {0}, received = {0};
    FerryNativeOptions send_options = {.zstd = zstd, .progress = record_progress, .progress_data = &sent};
    FerryNativeOptions recv_options = {.zstd = zstd, .progress = record_progress, .progress_data = &received};
    Side sender, receiver;
    sides_init(f, src, dst, &send_options, &recv_options, &sender, &receiver);
    run_sides(&sender, &receiver);
    /* The receiver's first: a sender's failure is often only the receiver's abort. */
    g_assert_no_error(receiver.error);
    g_assert_no_error(sender.error);
    g_assert_true(sender.ok && receiver.ok);
    g_assert_cmpuint(sent.calls, >, 0);
    g_assert_cmpuint(sent.last, ==, received.last);
    return sent.last;
}

/* A channel end that passes everything on and runs a hook once, at the first write after `phase` barriers
 * and `after` bytes of that phase: where a test breaks in on a running side. */
typedef struct {
    FerryByteChannel inner;
    guint phase;
    guint64 after;
    void (*hook)(gpointer data);
    gpointer hook_data;
    guint barriers;
    guint64 written;
    gboolean fired;
    gint64 fired_at;
} Tap;

static gssize tap_read(gpointer channel, void *buffer, gsize size, GCancellable *c, GError **error)
{
    Tap *tap = channel;
    return tap->inner.read(tap->inner.channel, buffer, size, c, error);
}

static gboolean tap_write(gpointer channel, const void *data, gsize length, GError **error)
{
    Tap *tap = channel;
    if (tap->barriers == tap->phase && !tap->fired && tap->written >= tap->after) {
        tap->fired = TRUE;
        tap->fired_at = g_get_monotonic_time();
        tap->hook(tap->hook_data);
    }
    if (tap->barriers == tap->phase)
        tap->written += length;
    return tap->inner.write(tap->inner.channel, data, length, error);
}

static gboolean tap_end(gpointer channel, GError **error)
{
    Tap *tap = channel;
    tap->barriers++;
    return tap->inner.end(tap->inner.channel, error);
}

static void tap_abort(gpointer channel)
{
    Tap *tap = channel;
    tap->inner.abort(tap->inner.channel);
}

static FerryByteChannel tap_iface(Tap *tap)
{
    return (FerryByteChannel){
        .read = tap_read, .write = tap_write, .end = tap_end, .abort = tap_abort, .channel = tap};
}

/* ---- building trees ---- */

static void fill_random(void *buffer, gsize len)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    for (gsize off = 0; off < len;) {
        gssize n = read(fd, (char *)buffer + off, len - off);
        g_assert_cmpint(n, >, 0);
        off += (gsize)n;
    }
    close(fd);
}

static void write_random(const char *dir, const char *name, gsize len)
{
    g_autofree char *data = g_malloc(len);
    fill_random(data, len);
    write_file(dir, name, data, len);
}

/* Overwrite len bytes at offset in place (same inode, same xattrs). */
static void patch_random(const char *dir, const char *name, off_t offset, gsize len)
{
    g_autofree char *data = g_malloc(len);
    fill_random(data, len);
    g_autofree char *path = path_in(dir, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pwrite(fd, data, len, offset), ==, (gssize)len);
    close(fd);
}

static void make_dir(const char *dir, const char *name, mode_t mode)
{
    g_autofree char *path = path_in(dir, name);
    g_assert_no_errno(mkdir(path, 0755));
    g_assert_no_errno(chmod(path, mode)); /* past the umask, with the special bits */
}

static void set_mode(const char *dir, const char *name, mode_t mode)
{
    g_autofree char *path = path_in(dir, name);
    g_assert_no_errno(chmod(path, mode));
}

static void set_xattr_bytes(const char *dir, const char *name, const char *key, const void *value, gsize len)
{
    g_autofree char *path = path_in(dir, name);
    g_assert_no_errno(lsetxattr(path, key, value, len, 0));
}

static void set_xattr(const char *dir, const char *name, const char *key, const char *value)
{
    set_xattr_bytes(dir, name, key, value, strlen(value));
}

static void remove_xattr(const char *dir, const char *name, const char *key)
{
    g_autofree char *path = path_in(dir, name);
    g_assert_no_errno(lremovexattr(path, key));
}

static gboolean exists(const char *dir, const char *name)
{
    g_autofree char *path = path_in(dir, name);
    struct stat st;
    return lstat(path, &st) == 0;
}

static void make_link(const char *dir, const char *existing, const char *name)
{
    g_autofree char *from = path_in(dir, existing);
    g_autofree char *to = path_in(dir, name);
    g_assert_no_errno(link(from, to));
}

static void make_symlink(const char *dir, const char *name, const char *target)
{
    g_autofree char *path = path_in(dir, name);
    g_assert_no_errno(symlink(target, path));
}

static void make_node(const char *dir, const char *name, mode_t mode, dev_t rdev)
{
    g_autofree char *path = path_in(dir, name);
    g_assert_no_errno(mknod(path, mode, rdev));
    g_assert_no_errno(chmod(path, mode & 07777));
}

static void make_socket(const char *dir, const char *name)
{
    g_autofree char *path = path_in(dir, name);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    g_assert_cmpuint(strlen(path), <, sizeof addr.sun_path);
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g_assert_cmpint(fd, >=, 0);
    g_assert_no_errno(bind(fd, (struct sockaddr *)&addr, sizeof addr));
    close(fd);
}

/* A POSIX ACL in the kernel's xattr form (version 2, then tag/permissions/id entries sorted by tag): owner
 * rw, user `user` rw, group r, mask rw, others r. */
static void set_acl(const char *dir, const char *name, const char *key, guint32 user)
{
    const guint32 entries[][3] = {{0x01, 6, G_MAXUINT32},
                                  {0x02, 6, user},
                                  {0x04, 4, G_MAXUINT32},
                                  {0x10, 6, G_MAXUINT32},
                                  {0x20, 4, G_MAXUINT32}};
    guint8 value[4 + G_N_ELEMENTS(entries) * 8];
    guint32 version = GUINT32_TO_LE(2);
    memcpy(value, &version, 4);
    for (gsize i = 0; i < G_N_ELEMENTS(entries); i++) {
        guint16 tag = GUINT16_TO_LE((guint16)entries[i][0]), perm = GUINT16_TO_LE((guint16)entries[i][1]);
        guint32 id = GUINT32_TO_LE(entries[i][2]);
        memcpy(value + 4 + i * 8, &tag, 2);
        memcpy(value + 4 + i * 8 + 2, &perm, 2);
        memcpy(value + 4 + i * 8 + 4, &id, 4);
    }
    set_xattr_bytes(dir, name, key, value, sizeof value);
}

/* A file capability (vfs_cap_data revision 2, effective): CAP_NET_RAW permitted. Must come after any chown,
 * which drops it. */
static void set_capability(const char *dir, const char *name)
{
    const guint32 words[5] = {GUINT32_TO_LE(0x02000000 | 0x1), GUINT32_TO_LE(1u << 13), 0, 0, 0};
    set_xattr_bytes(dir, name, "security.capability", words, sizeof words);
}

/* Distinct mtimes with nanoseconds everywhere, entries before their directories (making an entry changes its
 * directory's mtime). */
static void stamp_tree(const char *root, time_t base)
{
    g_autoptr(GPtrArray) paths = sorted_tree(root);
    for (guint i = paths->len; i-- > 0;)
        set_mtime(root, paths->pdata[i], base + (time_t)i * 1000, 100000001 + (long)i * 7);
}

/* Every kind of entry a root filesystem has, with the metadata a copy must keep. */
static void build_tree(const char *src)
{
    const char *dirs[] = {"dir", "dir/sub", "empty", "ro", "sticky", "acl_dir"};
    for (gsize i = 0; i < G_N_ELEMENTS(dirs); i++)
        make_dir(src, dirs[i], 0755);
    own(src, "dir", CUID, CGID);
    set_xattr(src, "dir", "user.dir", "on a directory");
    set_xattr(src, "dir", "trusted.dir", "trusted on a directory");

    write_file(src, "file1", "hello world\n", 12);
    own(src, "file1", CUID, CGID + 1);
    set_xattr(src, "file1", "user.test", "user value");
    set_xattr(src, "file1", "trusted.test", "trusted value");
    write_file(src, "empty_file", "", 0);
    write_random(src, "big", 3 * MIB);
    write_random(src, "dir/sub/deep", 300 * KIB);

    g_autofree char *sparse = path_in(src, "sparse");
    int fd = open(sparse, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    g_assert_cmpint(fd, >=, 0);
    g_assert_no_errno(ftruncate(fd, 20 * MIB));
    g_assert_cmpint(pwrite(fd, "head", 4, 0), ==, 4);
    g_assert_cmpint(pwrite(fd, "middle", 6, 10 * MIB), ==, 6);
    g_assert_cmpint(pwrite(fd, "tail", 4, 20 * MIB - 4), ==, 4);
    close(fd);

    write_file(src, "hard_a", "three names\n", 12);
    own(src, "hard_a", CUID + 3, CGID + 3);
    make_link(src, "hard_a", "dir/hard_b");
    make_link(src, "hard_a", "dir/sub/hard_c");

    make_symlink(src, "link_rel", "file1");
    own(src, "link_rel", CUID + 1, CGID + 1);
    set_xattr(src, "link_rel", "trusted.link", "on a symlink");
    make_symlink(src, "link_abs", "/etc");
    make_symlink(src, "dir/link_dangling", "../nowhere");

    make_node(src, "fifo", S_IFIFO | 0640, 0);
    own(src, "fifo", CUID + 2, CGID + 2);
    set_xattr(src, "fifo", "trusted.fifo", "on a fifo");
    make_node(src, "chardev", S_IFCHR | 0620, makedev(1, 3));
    own(src, "chardev", 0, 5);
    make_node(src, "blockdev", S_IFBLK | 0600, makedev(7, 200));
    make_socket(src, "sock");

    write_file(src, "suid", "#!/bin/true\n", 12);
    own(src, "suid", CUID, CGID);
    set_mode(src, "suid", 04755); /* after chown, which clears it */
    write_file(src, "capfile", "#!/bin/true\n", 12);
    set_mode(src, "capfile", 0755);
    set_capability(src, "capfile");

    write_file(src, "ro/inside", "in a read-only directory\n", 25);
    set_mode(src, "ro", 0555);
    write_file(src, "sticky/tmpfile", "in /tmp\n", 8);
    set_mode(src, "sticky", 01777);
    make_dir(src, "setgid", 02775);
    own(src, "setgid", CUID, CGID + 5);
    set_mode(src, "setgid", 02775);
    make_dir(src, "setgid/child", 02755);
    write_file(src, "setgid/file", "group inherited\n", 16);

    write_file(src, "acl_file", "with an ACL\n", 12);
    set_acl(src, "acl_file", "system.posix_acl_access", CUID);
    set_acl(src, "acl_dir", "system.posix_acl_default", CUID + 1);
    write_file(src, "acl_dir/inherits", "the default ACL\n", 16);

    stamp_tree(src, 1600000000);
}

/* ---- comparing trees ---- */

static char *hex(const guint8 *data, gsize len)
{
    GString *out = g_string_sized_new(len * 2);
    for (gsize i = 0; i < len; i++)
        g_string_append_printf(out, "%02x", data[i]);
    return g_string_free(out, FALSE);
}

/* Every xattr but security.selinux (a label of the host's policy, which the transport leaves out). */
static char *xattr_dump(const char *path)
{
    char names[8192];
    gssize len = llistxattr(path, names, sizeof names);
    g_assert_cmpint(len, >=, 0);
    g_autoptr(GPtrArray) entries = g_ptr_array_new_with_free_func(g_free);
    g_autofree guint8 *value = g_malloc(64 * KIB);
    for (gssize off = 0; off < len; off += (gssize)strlen(names + off) + 1) {
        const char *name = names + off;
        if (strcmp(name, "security.selinux") == 0)
            continue;
        gssize vlen = lgetxattr(path, name, value, 64 * KIB);
        g_assert_cmpint(vlen, >=, 0);
        g_autofree char *encoded = hex(value, (gsize)vlen);
        g_ptr_array_add(entries, g_strdup_printf("%s=%s", name, encoded));
    }
    g_ptr_array_sort(entries, compare_strings);
    g_ptr_array_add(entries, NULL);
    return g_strjoinv(",", (char **)entries->pdata);
}

static char *file_checksum(const char *path)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    g_autofree guint8 *buffer = g_malloc(MIB);
    for (;;) {
        gssize n = read(fd, buffer, MIB);
        g_assert_cmpint(n, >=, 0);
        if (n == 0)
            break;
        g_checksum_update(sum, buffer, n);
    }
    close(fd);
    return g_strdup(g_checksum_get_string(sum));
}

/* What a copy of one entry must keep: type and mode, owner, size, content or target, device number, xattrs
 * and mtime to the nanosecond (directories included). Link counts only on request: a refresh into a tree that
 * shares inodes changes those of the other tree by design. */
static char *entry_line(const char *root, const char *rel, gboolean nlink)
{
    g_autofree char *path = path_in(root, rel);
    struct stat st;
    g_assert_no_errno(lstat(path, &st));
    g_autofree char *content = S_ISREG(st.st_mode)   ? file_checksum(path)
                               : S_ISLNK(st.st_mode) ? g_file_read_link(path, NULL)
                                                     : g_strdup("");
    g_autofree char *xattrs = xattr_dump(path);
    gboolean device = S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode);
    return g_strdup_printf("\"%s\" mode=%o owner=%u:%u size=%jd mtime=%jd.%09ld rdev=%u:%u links=%ju "
                           "content=%s xattrs=%s",
                           rel, st.st_mode, st.st_uid, st.st_gid,
                           (intmax_t)(S_ISDIR(st.st_mode) ? 0 : st.st_size), (intmax_t)st.st_mtim.tv_sec,
                           st.st_mtim.tv_nsec, device ? major(st.st_rdev) : 0, device ? minor(st.st_rdev) : 0,
                           (uintmax_t)(nlink ? st.st_nlink : 0), content, xattrs);
}

/* One line per entry of root, sorted, leaving out skip and everything under it. */
static GPtrArray *tree_lines(const char *root, const char *skip, gboolean nlink)
{
    g_autoptr(GPtrArray) paths = sorted_tree(root);
    GPtrArray *lines = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < paths->len; i++) {
        const char *rel = paths->pdata[i];
        if (skip != NULL &&
            (strcmp(rel, skip) == 0 || (g_str_has_prefix(rel, skip) && rel[strlen(skip)] == '/')))
            continue;
        g_ptr_array_add(lines, entry_line(root, rel, nlink));
    }
    return lines;
}

static char *tree_digest(const char *root, const char *skip, gboolean nlink)
{
    g_autoptr(GPtrArray) lines = tree_lines(root, skip, nlink);
    g_ptr_array_add(lines, NULL);
    return g_strjoinv("\n", (char **)lines->pdata);
}

static void free_ptr_array(gpointer array)
{
    g_ptr_array_unref(array);
}

/* Which names of root share an inode, as "a,b;c,d" (sorted). */
static char *link_groups(const char *root)
{
    g_autoptr(GPtrArray) paths = sorted_tree(root);
    g_autoptr(GHashTable) inodes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, free_ptr_array);
    for (guint i = 0; i < paths->len; i++) {
        struct stat st = stat_of(root, paths->pdata[i]);
        if (S_ISDIR(st.st_mode))
            continue;
        char *key = g_strdup_printf("%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
        GPtrArray *names = g_hash_table_lookup(inodes, key);
        if (names == NULL) {
            names = g_ptr_array_new();
            g_hash_table_insert(inodes, key, names);
        } else {
            g_free(key);
        }
        g_ptr_array_add(names, paths->pdata[i]);
    }
    g_autoptr(GPtrArray) groups = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter iter;
    gpointer value;
    g_hash_table_iter_init(&iter, inodes);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        GPtrArray *names = value;
        if (names->len < 2)
            continue;
        g_ptr_array_add(names, NULL);
        g_ptr_array_add(groups, g_strjoinv(",", (char **)names->pdata));
    }
    g_ptr_array_sort(groups, compare_strings);
    g_ptr_array_add(groups, NULL);
    return g_strjoinv(";", (char **)groups->pdata);
}

/* dst is an exact copy of src: same entries with the same metadata and content, same hard links. */
static void assert_same_tree(const char *src, const char *dst)
{
    g_autoptr(GPtrArray) a = tree_lines(src, NULL, FALSE);
    g_autoptr(GPtrArray) b = tree_lines(dst, NULL, FALSE);
    for (guint i = 0; i < MAX(a->len, b->len); i++)
        g_assert_cmpstr(i < a->len ? a->pdata[i] : NULL, ==, i < b->len ? b->pdata[i] : NULL);
    g_autofree char *src_links = link_groups(src);
    g_autofree char *dst_links = link_groups(dst);
    g_assert_cmpstr(src_links, ==, dst_links);
}

/* ---- 1. fidelity of a full copy ---- */

static void run_full_copy(Fixture *f, gboolean zstd)
{
    build_tree(f->src);
    guint64 data = pass_ok(f, f->src, f->dst, zstd);
    assert_same_tree(f->src, f->dst);
    g_assert_cmpuint(data, >, 3 * MIB); /* "big" at least */
    g_assert_cmpuint(data, <, 4 * MIB); /* but not the holes of "sparse" */

    /* Holes stay holes. */
    struct stat s = stat_of(f->src, "sparse"), d = stat_of(f->dst, "sparse");
    g_assert_cmpint(d.st_size, ==, 20 * MIB);
    g_assert_cmpint(d.st_blocks, <=, s.st_blocks + 64);
    g_assert_cmpint(d.st_blocks * 512, <, 1 * MIB);
    /* One inode for the three names. */
    struct stat ha = stat_of(f->dst, "hard_a"), hb = stat_of(f->dst, "dir/hard_b"),
                hc = stat_of(f->dst, "dir/sub/hard_c");
    g_assert_cmpuint(ha.st_ino, ==, hb.st_ino);
    g_assert_cmpuint(ha.st_ino, ==, hc.st_ino);
    g_assert_cmpuint(ha.st_nlink, ==, 3);
    /* Symlinks are copied as links, never followed. */
    g_assert_true(S_ISLNK(stat_of(f->dst, "link_abs").st_mode));
    g_assert_true(S_ISLNK(stat_of(f->dst, "dir/link_dangling").st_mode));
    g_assert_true(S_ISSOCK(stat_of(f->dst, "sock").st_mode));

    /* Nothing changed since: the next pass moves no file data and keeps the copy exact. */
    g_assert_cmpuint(pass_ok(f, f->src, f->dst, zstd), ==, 0);
    assert_same_tree(f->src, f->dst);
}

static void test_full_copy(Fixture *f, gconstpointer unused)
{
    if (need_root())
        run_full_copy(f, TRUE);
}

static void test_full_copy_plain(Fixture *f, gconstpointer unused)
{
    if (need_root())
        run_full_copy(f, FALSE);
}

/* ---- 2. refresh ---- */

/* build_tree plus what a refresh changes (change_tree). */
static void build_refresh_tree(const char *src)
{
    build_tree(src);
    write_random(src, "big4", 4 * MIB);
    write_file(src, "f2d", "a file, then a directory\n", 25);
    make_dir(src, "d2l", 0755);
    make_dir(src, "d2l/deeper", 0700);
    write_file(src, "d2l/a", "a\n", 2);
    write_file(src, "d2l/deeper/b", "b\n", 2);
    write_file(src, "gone_file", "deleted\n", 8);
    make_dir(src, "gone_dir", 0755);
    make_dir(src, "gone_dir/b", 0755);
    write_file(src, "gone_dir/a", "a\n", 2);
    write_file(src, "gone_dir/b/c", "c\n", 2);
    /* Large enough that sending their data again would show in the byte counts. */
    write_random(src, "meta_only", 512 * KIB);
    set_xattr(src, "meta_only", "user.a", "first");
    set_xattr(src, "meta_only", "user.b", "second");
    write_random(src, "xattr_drop", 512 * KIB);
    set_xattr(src, "xattr_drop", "user.x", "goes");
    set_xattr(src, "xattr_drop", "trusted.y", "stays");
    stamp_tree(src, 1600000000);
}

/* Change metadata only, keeping the mtime (and so the content's identity). */
static void keep_mtime(const char *dir, const char *name, const struct stat *before)
{
    set_mtime(dir, name, before->st_mtim.tv_sec, before->st_mtim.tv_nsec);
}

static void change_tree(const char *src)
{
    patch_random(src, "big4", 2 * MIB + 4096, 64 * KIB);
    write_file(src, "new_file", "new\n", 4);
    make_dir(src, "new_dir", 0750);
    write_file(src, "new_dir/inner", "inner\n", 6);
    write_file(src, "dir/new_in_dir", "also new\n", 9);
    g_autofree char *gone_file = path_in(src, "gone_file");
    g_assert_no_errno(unlink(gone_file));
    g_autofree char *gone_dir = path_in(src, "gone_dir");
    rm_rf(gone_dir);

    g_autofree char *f2d = path_in(src, "f2d");
    g_assert_no_errno(unlink(f2d));
    make_dir(src, "f2d", 0711);
    write_file(src, "f2d/child", "now a directory\n", 16);
    g_autofree char *d2l = path_in(src, "d2l");
    rm_rf(d2l);
    make_symlink(src, "d2l", "f2d");

    struct stat st = stat_of(src, "meta_only");
    set_mode(src, "meta_only", 0640);
    own(src, "meta_only", CUID + 7, CGID + 8);
    set_xattr(src, "meta_only", "user.a", "changed");
    remove_xattr(src, "meta_only", "user.b");
    keep_mtime(src, "meta_only", &st);
    st = stat_of(src, "xattr_drop");
    remove_xattr(src, "xattr_drop", "user.x");
    keep_mtime(src, "xattr_drop", &st);
}

static void test_refresh(Fixture *f, gconstpointer unused)
{
    if (!need_root())
        return;
    build_refresh_tree(f->src);
    pass_ok(f, f->src, f->dst, FALSE);
    assert_same_tree(f->src, f->dst);
    struct stat big_before = stat_of(f->dst, "big4");

    change_tree(f->src);
    guint64 wire_before = test_channel_bytes_written(f->a);
    guint64 data = pass_ok(f, f->src, f->dst, FALSE);
    guint64 wire = test_channel_bytes_written(f->a) - wire_before;
    g_test_message("refresh: %" G_GUINT64_FORMAT " bytes of file data, %" G_GUINT64_FORMAT " on the wire",
                   data, wire);
    assert_same_tree(f->src, f->dst);
    /* The patch of big4 (two blocks) and the new files; not big4 whole, nor the files whose metadata only
     * changed. */
    g_assert_cmpuint(data, <, 256 * KIB);
    g_assert_cmpuint(wire, <, 1 * MIB);
    /* The patched file was built beside the old one. */
    g_assert_cmpuint(stat_of(f->dst, "big4").st_ino, !=, big_before.st_ino);
}

/* A name added to a file the receiver already has unchanged must become a link to it, not a copy. */
static void test_refresh_new_link(Fixture *f, gconstpointer unused)
{
    if (!need_root())
        return;
    build_refresh_tree(f->src);
    pass_ok(f, f->src, f->dst, FALSE);
    make_link(f->src, "dir/sub/deep", "deep_link");
    make_link(f->src, "hard_a", "hard_d");
    set_mtime(f->src, "", 1700000000, 1);
    set_mtime(f->src, "dir/sub", 1700000000, 2);
    pass_ok(f, f->src, f->dst, FALSE);
    assert_same_tree(f->src, f->dst);
}

/* ---- 3. shared inodes ---- */

static void test_shared_inodes(Fixture *f, gconstpointer unused)
{
    if (!need_root())
        return;
    build_refresh_tree(f->src);
    const char *a = f->dst;
    pass_ok(f, f->src, a, FALSE);
    g_autofree char *b = g_build_filename(f->root, "b", NULL);
    const char *argv[] = {"cp", "-a", "--link", a, b, NULL};
    gint status = 0;
    g_assert_true(
        g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, &status, NULL));
    g_assert_cmpint(status, ==, 0);
    g_assert_cmpuint(stat_of(b, "file1").st_ino, ==, stat_of(a, "file1").st_ino);
    g_autofree char *a_before = tree_digest(a, NULL, FALSE);
    g_autofree char *a_links = link_groups(a);

    change_tree(f->src);
    /* Content changed in place: same inode at the source, owner and xattrs kept. */
    patch_random(f->src, "file1", 0, 12);
    /* Metadata only, on a file with several names and on ones without content. */
    struct stat st = stat_of(f->src, "hard_a");
    set_mode(f->src, "hard_a", 0600);
    keep_mtime(f->src, "hard_a", &st);
    own(f->src, "link_rel", CUID + 9, CGID + 9);
    set_mode(f->src, "chardev", 0660);
    own(f->src, "fifo", CUID + 9, CGID + 9);
    set_xattr(f->src, "fifo", "trusted.fifo", "changed");
    st = stat_of(f->src, "capfile");
    set_mode(f->src, "capfile", 0700);
    set_capability(f->src, "capfile");
    keep_mtime(f->src, "capfile", &st);
    st = stat_of(f->src, "acl_file");
    set_acl(f->src, "acl_file", "system.posix_acl_access", CUID + 9);
    keep_mtime(f->src, "acl_file", &st);

    pass_ok(f, f->src, b, FALSE);
    assert_same_tree(f->src, b);
    g_autofree char *a_after = tree_digest(a, NULL, FALSE);
    g_autofree char *a_links_after = link_groups(a);
    g_assert_cmpstr(a_after, ==, a_before);
    g_assert_cmpstr(a_links_after, ==, a_links);
}

/* ---- 4. hostile sender ---- */

typedef enum {
    AS_IS,
    CUT_HALF,      /* the first half of the phase, then the barrier */
    CUT_AND_ABORT, /* the first half, then the sender is gone (no barrier) */
    BAD_MAGIC,     /* the first compressed block's zstd frame magic changed */
    TRAILING,      /* bytes after the phase's end */
} Mangle;

typedef void (*FillFunc)(FerryNativeWriter *w, const Fixture *f);

typedef struct {
    const char *name;
    FillFunc candidates; /* phase B records (END added); NULL: none */
    FillFunc changes;    /* phase D, complete with its END unless the case is a truncated record */
    gboolean zstd;
    Mangle mangle;
    /* A part of the receiver's error; NULL: harmless, the receiver may accept it (nothing may escape). */
    const char *message;
} Hostile;

static gboolean capture_write(gpointer channel, const void *data, gsize length, GError **error)
{
    g_byte_array_append(channel, data, (guint)length);
    return TRUE;
}

static gboolean capture_end(gpointer channel, GError **error)
{
    return TRUE;
}

static void capture_abort(gpointer channel)
{
}

/* The bytes one phase's records make on the channel (compressed or not), barrier aside. */
static GByteArray *encode_phase(gboolean zstd, FillFunc fill, gboolean add_end, const Fixture *f)
{
    GByteArray *bytes = g_byte_array_new();
    FerryByteChannel capture = {
        .write = capture_write, .end = capture_end, .abort = capture_abort, .channel = bytes};
    g_autoptr(FerryNativeWriter) writer = ferry_native_writer_new(&capture, zstd, "target");
    if (fill != NULL)
        fill(writer, f);
    if (add_end)
        ferry_native_put_u8(writer, NATIVE_END);
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_native_writer_end(writer, &error));
    g_assert_no_error(error);
    return bytes;
}

typedef struct {
    FerryByteChannel channel;
    GByteArray *candidates, *changes;
    Mangle mangle;
    gboolean receiver_finished; /* phase E arrived */
} FakeSender;

/* The rest of the peer's phase; FALSE when the channel failed first. */
static gboolean drain(FerryByteChannel *channel)
{
    char buffer[16 * KIB];
    for (;;) {
        g_autoptr(GError) error = NULL;
        gssize n = channel->read(channel->channel, buffer, sizeof buffer, NULL, &error);
        if (n <= 0)
            return n == 0;
    }
}

/* The sender's part of phases A to E with prepared bytes, ignoring every failure: the receiver decides. */
static gpointer fake_sender_thread(gpointer data)
{
    FakeSender *fake = data;
    FerryByteChannel *ch = &fake->channel;
    drain(ch);
    ch->write(ch->channel, fake->candidates->data, fake->candidates->len, NULL);
    ch->end(ch->channel, NULL);
    drain(ch);
    GByteArray *changes = fake->changes;
    if (fake->mangle == CUT_HALF || fake->mangle == CUT_AND_ABORT) {
        ch->write(ch->channel, changes->data, changes->len / 2, NULL);
        if (fake->mangle == CUT_AND_ABORT) {
            ch->abort(ch->channel);
            return NULL;
        }
    } else {
        ch->write(ch->channel, changes->data, changes->len, NULL);
    }
    ch->end(ch->channel, NULL);
    fake->receiver_finished = drain(ch);
    return NULL;
}

static void put_entry(FerryNativeWriter *w, FerryNativeRecord kind, const char *path, guint32 mode)
{
    FerryNativeMeta meta = {.mode = mode, .mtime_sec = 1600000000, .atime_sec = 1600000000};
    ferry_native_put_u8(w, kind);
    ferry_native_put_string(w, path);
    ferry_native_put_meta(w, &meta);
}

/* A complete F record with content written as one extent. */
static void put_file(FerryNativeWriter *w, const char *path, const char *content)
{
    gsize len = strlen(content);
    put_entry(w, NATIVE_FILE, path, S_IFREG | 0644);
    ferry_native_put_u64(w, len);
    if (len > 0) {
        ferry_native_put_u64(w, len);
        ferry_native_put_u64(w, 0);
        ferry_native_put(w, content, len);
    }
    ferry_native_put_u64(w, 0);
}

static void put_end(FerryNativeWriter *w)
{
    ferry_native_put_u8(w, NATIVE_END);
}

static void put_two(FerryNativeWriter *w, FerryNativeRecord kind, const char *path, const char *second)
{
    ferry_native_put_u8(w, kind);
    ferry_native_put_string(w, path);
    ferry_native_put_string(w, second);
}

static void put_one(FerryNativeWriter *w, FerryNativeRecord kind, const char *path)
{
    ferry_native_put_u8(w, kind);
    ferry_native_put_string(w, path);
}

static void d_nothing(FerryNativeWriter *w, const Fixture *f)
{
    put_end(w);
}

static void d_valid(FerryNativeWriter *w, const Fixture *f)
{
    /* Random content: a zstd frame of some size, whose middle is data. */
    char content[4097];
    fill_random(content, 4096);
    for (gsize i = 0; i < 4096; i++)
        content[i] = (char)('a' + ((guint8)content[i] % 26));
    content[4096] = '\0';
    put_file(w, "valid", content);
    put_end(w);
}

static void d_dotdot_dir(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_DIR, "../escaped", S_IFDIR | 0755);
    put_end(w);
}

static void d_dotdot_file(FerryNativeWriter *w, const Fixture *f)
{
    put_file(w, "d/../../escaped", "x");
    put_end(w);
}

static void d_absolute(FerryNativeWriter *w, const Fixture *f)
{
    g_autofree char *absolute = g_build_filename(f->root, "escaped", NULL);
    put_file(w, absolute, "x");
    put_end(w);
}

static void d_double_slash(FerryNativeWriter *w, const Fixture *f)
{
    put_file(w, "d//escaped", "x");
    put_end(w);
}

static void d_trailing_slash(FerryNativeWriter *w, const Fixture *f)
{
    put_file(w, "d/", "x");
    put_end(w);
}

static void d_dot(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_DIR, ".", S_IFDIR | 0777);
    put_end(w);
}

static void d_empty_file(FerryNativeWriter *w, const Fixture *f)
{
    put_file(w, "", "x");
    put_end(w);
}

static void d_empty_meta(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_META, "", S_IFREG | 0644);
    put_end(w);
}

static void d_long_component(FerryNativeWriter *w, const Fixture *f)
{
    g_autofree char *name = g_strnfill(300, 'n');
    put_file(w, name, "x");
    put_end(w);
}

static void d_through_symlink_file(FerryNativeWriter *w, const Fixture *f)
{
    put_file(w, "evil/escaped", "x");
    put_end(w);
}

static void d_through_relative_symlink(FerryNativeWriter *w, const Fixture *f)
{
    put_file(w, "evil_rel/escaped", "x");
    put_end(w);
}

static void d_through_symlink_dir(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_DIR, "evil/escaped", S_IFDIR | 0755);
    put_end(w);
}

static void d_through_symlink_symlink(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_SYMLINK, "evil/escaped", S_IFLNK | 0777);
    ferry_native_put_string(w, "/etc");
    put_end(w);
}

static void d_through_symlink_node(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_NODE, "evil/escaped", S_IFIFO | 0644);
    put_end(w);
}

static void d_through_symlink_patch(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_PATCH, "evil/sentinel", S_IFREG | 0644);
    ferry_native_put_u64(w, 5);
    ferry_native_put_u64(w, 5);
    ferry_native_put_u64(w, 0);
    ferry_native_put(w, "owned", 5);
    ferry_native_put_u64(w, 0);
    put_end(w);
}

static void d_through_symlink_meta(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_META, "evil/sentinel", S_IFREG | 0777);
    put_end(w);
}

static void d_through_symlink_delete(FerryNativeWriter *w, const Fixture *f)
{
    put_one(w, NATIVE_DELETE, "evil/sentinel");
    put_one(w, NATIVE_DELETE, "evil/sub");
    put_end(w);
}

static void d_meta_on_symlink(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_META, "evil_file", S_IFREG | 0777);
    put_end(w);
}

static void d_dir_meta_on_symlink(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_META, "evil", S_IFDIR | 0777);
    put_end(w);
}

static void d_patch_symlink(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_PATCH, "evil_file", S_IFREG | 0644);
    ferry_native_put_u64(w, 5);
    ferry_native_put_u64(w, 5);
    ferry_native_put_u64(w, 0);
    ferry_native_put(w, "owned", 5);
    ferry_native_put_u64(w, 0);
    put_end(w);
}

static void d_file_over_symlink(FerryNativeWriter *w, const Fixture *f)
{
    put_file(w, "evil_file", "replaced, not written through\n");
    put_entry(w, NATIVE_DIR, "evil", S_IFDIR | 0755);
    put_end(w);
}

static void d_symlink_then_through(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_SYMLINK, "made", S_IFLNK | 0777);
    ferry_native_put_string(w, f->outside);
    put_file(w, "made/escaped", "x");
    put_end(w);
}

static void d_hardlink_dotdot(FerryNativeWriter *w, const Fixture *f)
{
    put_two(w, NATIVE_HARDLINK, "stolen", "../outside/sentinel");
    put_end(w);
}

static void d_hardlink_absolute(FerryNativeWriter *w, const Fixture *f)
{
    g_autofree char *sentinel = g_build_filename(f->outside, "sentinel", NULL);
    put_two(w, NATIVE_HARDLINK, "stolen", sentinel);
    put_end(w);
}

static void d_hardlink_through_symlink(FerryNativeWriter *w, const Fixture *f)
{
    put_two(w, NATIVE_HARDLINK, "stolen", "evil/sentinel");
    put_end(w);
}

static void d_hardlink_into_symlink(FerryNativeWriter *w, const Fixture *f)
{
    put_two(w, NATIVE_HARDLINK, "evil/escaped", "d/file");
    put_end(w);
}

static void d_hardlink_to_dir(FerryNativeWriter *w, const Fixture *f)
{
    put_two(w, NATIVE_HARDLINK, "dirlink", "d");
    put_end(w);
}

static void d_hardlink_to_symlink(FerryNativeWriter *w, const Fixture *f)
{
    /* A link to the symlink itself (linkat does not follow): harmless. */
    put_two(w, NATIVE_HARDLINK, "second_name", "evil_file");
    put_end(w);
}

static void d_hardlink_to_itself(FerryNativeWriter *w, const Fixture *f)
{
    put_two(w, NATIVE_HARDLINK, "d/file", "d/file");
    put_end(w);
}

static void d_temp_prefix(FerryNativeWriter *w, const Fixture *f)
{
    put_file(w, ".ferry-new-0123456789abcdef", "x");
    put_end(w);
}

static void d_temp_prefix_nested(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_SYMLINK, "d/.ferry-new-x", S_IFLNK | 0777);
    ferry_native_put_string(w, "target");
    put_end(w);
}

static void d_oversized_string(FerryNativeWriter *w, const Fixture *f)
{
    ferry_native_put_u8(w, NATIVE_FILE);
    ferry_native_put_u32(w, G_MAXUINT32);
    put_end(w);
}

static void d_long_path(FerryNativeWriter *w, const Fixture *f)
{
    g_autoptr(GString) path = g_string_new("a");
    while (path->len < FERRY_NATIVE_MAX_PATH + 100)
        g_string_append(path, "/a");
    put_file(w, path->str, "x");
    put_end(w);
}

static void d_unknown_record(FerryNativeWriter *w, const Fixture *f)
{
    ferry_native_put_u8(w, 'Z');
    ferry_native_put_string(w, "whatever");
    put_end(w);
}

static void d_nul_record(FerryNativeWriter *w, const Fixture *f)
{
    ferry_native_put_u8(w, 0);
    put_end(w);
}

static void d_manifest_record(FerryNativeWriter *w, const Fixture *f)
{
    ferry_native_put_u8(w, NATIVE_MANIFEST_ENTRY);
    ferry_native_put_string(w, "x");
    put_end(w);
}

static void d_truncated_record(FerryNativeWriter *w, const Fixture *f)
{
    ferry_native_put_u8(w, NATIVE_FILE);
    ferry_native_put_string(w, "cut");
    ferry_native_put_u32(w, S_IFREG | 0644);
    /* no END: the barrier comes in the middle of the record */
}

static void d_truncated_data(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_FILE, "cut", S_IFREG | 0644);
    ferry_native_put_u64(w, 100);
    ferry_native_put_u64(w, 100);
    ferry_native_put_u64(w, 0);
    ferry_native_put(w, "only ten..", 10);
}

static void d_name_with_nul(FerryNativeWriter *w, const Fixture *f)
{
    ferry_native_put_u8(w, NATIVE_FILE);
    ferry_native_put_bytes(w, "a\0/../../escaped", 16);
    put_end(w);
}

static void d_extent_beyond_size(FerryNativeWriter *w, const Fixture *f)
{
    /* An existing name: the file is built beside it, and the half-built one must go. */
    put_entry(w, NATIVE_FILE, "d/file", S_IFREG | 0644);
    ferry_native_put_u64(w, 10);
    ferry_native_put_u64(w, 100);
    ferry_native_put_u64(w, 0);
    g_autofree char *data = g_malloc0(100);
    ferry_native_put(w, data, 100);
    ferry_native_put_u64(w, 0);
    put_end(w);
}

static void d_extent_offset_overflow(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_FILE, "overflow", S_IFREG | 0644);
    ferry_native_put_u64(w, 10);
    ferry_native_put_u64(w, 5);
    ferry_native_put_u64(w, G_MAXUINT64 - 2);
    ferry_native_put(w, "12345", 5);
    ferry_native_put_u64(w, 0);
    put_end(w);
}

static void d_file_with_dir_mode(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_FILE, "x", S_IFDIR | 0755);
    ferry_native_put_u64(w, 0);
    ferry_native_put_u64(w, 0);
    put_end(w);
}

static void d_dir_with_file_mode(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_DIR, "x", S_IFREG | 0644);
    put_end(w);
}

static void d_empty_symlink_target(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_SYMLINK, "x", S_IFLNK | 0777);
    ferry_native_put_string(w, "");
    put_end(w);
}

static void d_node_with_file_mode(FerryNativeWriter *w, const Fixture *f)
{
    put_entry(w, NATIVE_NODE, "x", S_IFREG | 0644);
    put_end(w);
}

static void d_bad_nanoseconds(FerryNativeWriter *w, const Fixture *f)
{
    FerryNativeMeta meta = {.mode = S_IFDIR | 0755, .mtime_nsec = 2000000000};
    put_one(w, NATIVE_DIR, "");
    ferry_native_put_meta(w, &meta);
    put_end(w);
}

static void d_too_many_xattrs(FerryNativeWriter *w, const Fixture *f)
{
    put_one(w, NATIVE_DIR, "");
    ferry_native_put_u32(w, S_IFDIR | 0755);
    ferry_native_put_u32(w, 0);
    ferry_native_put_u32(w, 0);
    ferry_native_put_u64(w, 0);
    ferry_native_put_u32(w, 0);
    ferry_native_put_u64(w, 0);
    ferry_native_put_u32(w, 0);
    ferry_native_put_u64(w, 0);
    ferry_native_put_u32(w, 1000000); /* xattr count */
    put_end(w);
}

static void d_delete_root(FerryNativeWriter *w, const Fixture *f)
{
    put_one(w, NATIVE_DELETE, "");
    put_end(w);
}

static void d_delete_dotdot(FerryNativeWriter *w, const Fixture *f)
{
    put_one(w, NATIVE_DELETE, "../outside");
    put_end(w);
}

static void d_delete_symlink(FerryNativeWriter *w, const Fixture *f)
{
    put_one(w, NATIVE_DELETE, "evil");
    put_one(w, NATIVE_DELETE, "evil_rel");
    put_end(w);
}

static void b_dotdot(FerryNativeWriter *w, const Fixture *f)
{
    put_one(w, NATIVE_CANDIDATE, "../outside/sentinel");
}

static void b_through_symlink(FerryNativeWriter *w, const Fixture *f)
{
    put_one(w, NATIVE_CANDIDATE, "evil/sentinel");
    put_one(w, NATIVE_CANDIDATE, "evil_file");
}

static void b_wrong_record(FerryNativeWriter *w, const Fixture *f)
{
    put_file(w, "x", "x");
}

#define BAD "Bad migration stream from the source"

static const Hostile hostile_cases[] = {
    {"dotdot-dir", NULL, d_dotdot_dir, FALSE, AS_IS, BAD ": the path \"../escaped\""},
    {"dotdot-inside", NULL, d_dotdot_file, FALSE, AS_IS, BAD ": the path"},
    {"absolute", NULL, d_absolute, FALSE, AS_IS, BAD ": the path"},
    {"double-slash", NULL, d_double_slash, FALSE, AS_IS, BAD ": the path"},
    {"trailing-slash", NULL, d_trailing_slash, FALSE, AS_IS, BAD ": the path"},
    {"dot", NULL, d_dot, FALSE, AS_IS, BAD ": the path"},
    {"empty-file-path", NULL, d_empty_file, FALSE, AS_IS, BAD ": the path"},
    {"empty-meta-path", NULL, d_empty_meta, FALSE, AS_IS, BAD},
    {"long-component", NULL, d_long_component, FALSE, AS_IS, BAD ": the path"},
    {"through-symlink-file", NULL, d_through_symlink_file, FALSE, AS_IS, "evil/escaped"},
    {"through-relative-symlink", NULL, d_through_relative_symlink, FALSE, AS_IS, "evil_rel/escaped"},
    {"through-symlink-dir", NULL, d_through_symlink_dir, FALSE, AS_IS, "evil/escaped"},
    {"through-symlink-symlink", NULL, d_through_symlink_symlink, FALSE, AS_IS, "evil/escaped"},
    {"through-symlink-node", NULL, d_through_symlink_node, FALSE, AS_IS, "evil/escaped"},
    {"through-symlink-patch", NULL, d_through_symlink_patch, FALSE, AS_IS, "evil/sentinel"},
    {"through-symlink-meta", NULL, d_through_symlink_meta, FALSE, AS_IS, "evil/sentinel"},
    {"through-symlink-delete", NULL, d_through_symlink_delete, FALSE, AS_IS, NULL},
    {"meta-on-symlink", NULL, d_meta_on_symlink, FALSE, AS_IS, "wrong file type"},
    {"dir-meta-on-symlink", NULL, d_dir_meta_on_symlink, FALSE, AS_IS, NULL},
    {"patch-symlink", NULL, d_patch_symlink, FALSE, AS_IS, "evil_file"},
    {"file-over-symlink", NULL, d_file_over_symlink, FALSE, AS_IS, NULL},
    {"own-symlink-then-through", NULL, d_symlink_then_through, FALSE, AS_IS, "made/escaped"},
    {"hardlink-dotdot", NULL, d_hardlink_dotdot, FALSE, AS_IS, BAD ": a hard link to"},
    {"hardlink-absolute", NULL, d_hardlink_absolute, FALSE, AS_IS, BAD ": a hard link to"},
    {"hardlink-through-symlink", NULL, d_hardlink_through_symlink, FALSE, AS_IS, "evil"},
    {"hardlink-into-symlink", NULL, d_hardlink_into_symlink, FALSE, AS_IS, "evil/escaped"},
    {"hardlink-to-dir", NULL, d_hardlink_to_dir, FALSE, AS_IS, "not a file here"},
    {"hardlink-to-symlink", NULL, d_hardlink_to_symlink, FALSE, AS_IS, NULL},
    {"hardlink-to-itself", NULL, d_hardlink_to_itself, FALSE, AS_IS, NULL},
    {"temp-prefix", NULL, d_temp_prefix, FALSE, AS_IS, BAD ": the path \".ferry-new-"},
    {"temp-prefix-nested", NULL, d_temp_prefix_nested, FALSE, AS_IS, BAD ": the path \"d/.ferry-new-"},
    {"oversized-string", NULL, d_oversized_string, FALSE, AS_IS, BAD ": a field of 4294967295 bytes"},
    {"long-path", NULL, d_long_path, FALSE, AS_IS, BAD ": a field of"},
    {"name-with-nul", NULL, d_name_with_nul, FALSE, AS_IS, BAD ": a name with a NUL byte"},
    {"unknown-record", NULL, d_unknown_record, FALSE, AS_IS, BAD ": unknown record 'Z'"},
    {"nul-record", NULL, d_nul_record, FALSE, AS_IS, BAD ": unknown record"},
    {"manifest-record-in-changes", NULL, d_manifest_record, FALSE, AS_IS, BAD ": unknown record 'e'"},
    {"truncated-record", NULL, d_truncated_record, FALSE, AS_IS, BAD ": the stream ends in the middle"},
    {"truncated-data", NULL, d_truncated_data, FALSE, AS_IS, BAD ": the stream ends in the middle"},
    {"truncated-zstd", NULL, d_valid, TRUE, CUT_HALF, BAD},
    {"corrupt-zstd", NULL, d_valid, TRUE, BAD_MAGIC, BAD ": corrupt compressed data"},
    {"trailing-zstd", NULL, d_valid, TRUE, TRAILING, BAD ": data after the last record"},
    {"trailing-plain", NULL, d_valid, FALSE, TRAILING, BAD ": data after the last record"},
    {"sender-gone", NULL, d_valid, FALSE, CUT_AND_ABORT, "Failed receiving from the source"},
    {"extent-beyond-size", NULL, d_extent_beyond_size, FALSE, AS_IS,
     BAD ": data beyond the end of \"d/file\""},
    {"extent-offset-overflow", NULL, d_extent_offset_overflow, FALSE, AS_IS, BAD ": data beyond the end"},
    {"file-with-dir-mode", NULL, d_file_with_dir_mode, FALSE, AS_IS, "wrong file type"},
    {"dir-with-file-mode", NULL, d_dir_with_file_mode, FALSE, AS_IS, "wrong file type"},
    {"empty-symlink-target", NULL, d_empty_symlink_target, FALSE, AS_IS, "wrong file type"},
    {"node-with-file-mode", NULL, d_node_with_file_mode, FALSE, AS_IS, "wrong file type"},
    {"bad-nanoseconds", NULL, d_bad_nanoseconds, FALSE, AS_IS, BAD ": a time with more than"},
    {"too-many-xattrs", NULL, d_too_many_xattrs, FALSE, AS_IS, BAD ": 1000000 extended attributes"},
    {"delete-root", NULL, d_delete_root, FALSE, AS_IS, BAD ": the path \"\""},
    {"delete-dotdot", NULL, d_delete_dotdot, FALSE, AS_IS, BAD ": the path"},
    {"delete-symlink", NULL, d_delete_symlink, FALSE, AS_IS, NULL},
    {"candidate-dotdot", b_dotdot, d_nothing, FALSE, AS_IS, BAD ": the path \"../outside/sentinel\" among"},
    {"candidate-through-symlink", b_through_symlink, d_nothing, FALSE, AS_IS, NULL},
    {"candidate-wrong-record", b_wrong_record, d_nothing, FALSE, AS_IS, BAD ": record 'F' among"},
};

/* The receiving directory holds symlinks out of it (as a container's rootfs may), and a sentinel tree lies
 * beside it. */
static void prepare_hostile(Fixture *f)
{
    write_file(f->outside, "sentinel", "must stay\n", 10);
    set_xattr(f->outside, "sentinel", "user.sentinel", "unchanged");
    make_dir(f->outside, "sub", 0700);
    write_file(f->outside, "sub/inner", "inner\n", 6);
    stamp_tree(f->outside, 1500000000);
    make_symlink(f->dst, "evil", f->outside);
    make_symlink(f->dst, "evil_rel", "../outside");
    g_autofree char *sentinel = g_build_filename(f->outside, "sentinel", NULL);
    make_symlink(f->dst, "evil_file", sentinel);
    make_dir(f->dst, "d", 0755);
    write_file(f->dst, "d/file", "inside\n", 7);
}

static void assert_no_temp_names(const char *root)
{
    g_autoptr(GPtrArray) paths = sorted_tree(root);
    for (guint i = 0; i < paths->len; i++) {
        const char *base = strrchr(paths->pdata[i], '/');
        base = base != NULL ? base + 1 : paths->pdata[i];
        if (g_str_has_prefix(base, ".ferry-new-"))
            g_error("a half-built entry was left behind: %s", (const char *)paths->pdata[i]);
    }
}

static void test_hostile(Fixture *f, gconstpointer data)
{
    const Hostile *hostile = data;
    if (!need_root())
        return;
    prepare_hostile(f);
    /* Everything beside the receiving directory, link counts included (a hard link made to the sentinel). */
    g_autofree char *before = tree_digest(f->root, "dst", TRUE);

    g_autoptr(GByteArray) candidates = encode_phase(hostile->zstd, hostile->candidates, TRUE, f);
    g_autoptr(GByteArray) changes = encode_phase(hostile->zstd, hostile->changes, FALSE, f);
    if (hostile->mangle == BAD_MAGIC) {
        /* The phase is one compressed block: a 9-byte header ('z', stored and decoded lengths), then zstd. */
        g_assert_cmpint(changes->data[0], ==, 'z');
        changes->data[9] ^= 0xff;
    }
    if (hostile->mangle == TRAILING)
        g_byte_array_append(changes, (const guint8 *)"trailing", 8);

    FakeSender fake = {.channel = test_channel_iface(f->a),
                       .candidates = candidates,
                       .changes = changes,
                       .mangle = hostile->mangle};
    FerryNativeOptions options = {.zstd = hostile->zstd, .peer = "source"};
    Side receiver = {.dir = f->dst, .channel = test_channel_iface(f->b), .options = options};
    alarm(WATCHDOG_SECONDS);
    GThread *s = g_thread_new("fake-sender", fake_sender_thread, &fake);
    GThread *r = g_thread_new("receiver", side_thread, &receiver);
    g_thread_join(s);
    g_thread_join(r);
    alarm(0);

    g_autofree char *after = tree_digest(f->root, "dst", TRUE);
    g_assert_cmpstr(after, ==, before);
    assert_no_temp_names(f->dst);
    if (hostile->message == NULL) {
        g_test_message("receiver: %s", receiver.ok ? "accepted" : receiver.error->message);
        g_assert_true(receiver.ok == fake.receiver_finished);
    } else {
        g_assert_false(receiver.ok);
        g_assert_false(fake.receiver_finished);
        g_assert_nonnull(receiver.error);
        g_test_message("receiver: %s", receiver.error->message);
        g_assert_true(receiver.error->domain == FERRY_ERROR);
        if (strstr(receiver.error->message, hostile->message) == NULL)
            g_error("\"%s\" does not say \"%s\"", receiver.error->message, hostile->message);
    }
    side_clear(&receiver);
}

/* ---- 5. failures and cancellation ---- */

static void abort_tap(gpointer data)
{
    Tap *tap = data;
    tap->inner.abort(tap->inner.channel);
}

/* The sending side breaks its channel in the middle of a file. */
static void test_sender_aborts(Fixture *f, gconstpointer unused)
{
    if (!need_root())
        return;
    write_random(f->src, "large", 48 * MIB);
    Tap tap = {.inner = test_channel_iface(f->a), .phase = 1, .after = 4 * MIB, .hook = abort_tap};
    tap.hook_data = &tap;
    FerryNativeOptions options = {.zstd = TRUE};
    Side sender, receiver;
    sides_init(f, f->src, f->dst, &options, &options, &sender, &receiver);
    sender.channel = tap_iface(&tap);
    run_sides(&sender, &receiver);
    g_assert_true(tap.fired);
    g_assert_false(sender.ok);
    g_assert_false(receiver.ok);
    g_test_message("sender: %s; receiver: %s", sender.error->message, receiver.error->message);
    g_assert_error(sender.error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE);
    g_assert_error(receiver.error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE);
    g_assert_true(g_str_has_prefix(receiver.error->message, "Failed receiving from the source: "));
    g_assert_cmpint(receiver.finished_at - tap.fired_at, <, 2 * G_USEC_PER_SEC);
    side_clear(&sender);
    side_clear(&receiver);
}

/* The receiver cannot open its directory: both sides fail at once. */
static void test_receiver_fails(Fixture *f, gconstpointer unused)
{
    write_file(f->src, "file", "x\n", 2);
    write_file(f->root, "not_a_dir", "", 0);
    g_autofree char *bad = g_build_filename(f->root, "not_a_dir", "dest", NULL);
    FerryNativeOptions options = {0};
    Side sender, receiver;
    sides_init(f, f->src, bad, &options, &options, &sender, &receiver);
    gint64 start = g_get_monotonic_time();
    run_sides(&sender, &receiver);
    g_assert_cmpint(g_get_monotonic_time() - start, <, 2 * G_USEC_PER_SEC);
    g_assert_false(sender.ok);
    g_assert_false(receiver.ok);
    g_test_message("sender: %s; receiver: %s", sender.error->message, receiver.error->message);
    g_assert_error(sender.error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE);
    g_assert_nonnull(strstr(receiver.error->message, "not_a_dir"));
    side_clear(&sender);
    side_clear(&receiver);
}

typedef struct {
    guint64 threshold;
    gboolean fired;
    void (*action)(gpointer data);
    gpointer data;
} Trigger;

static void trigger_progress(guint64 bytes, gpointer data)
{
    Trigger *t = data;
    if (!t->fired && bytes >= t->threshold) {
        t->fired = TRUE;
        t->action(t->data);
    }
}

typedef struct {
    GCancellable *cancellable;
    TestChannel *sender_end;
    gint64 at;
    guint64 sent_at;
} CancelAt;

static void cancel_now(gpointer data)
{
    CancelAt *c = data;
    c->at = g_get_monotonic_time();
    c->sent_at = test_channel_bytes_written(c->sender_end);
    g_cancellable_cancel(c->cancellable);
}

/* Cancelling one side in the middle of a large file: it stops within the file with FERRY_ERROR_CANCELLED,
 * and its abort of the channel stops the other side. */
static void run_cancel(Fixture *f, gboolean cancel_sender)
{
    write_random(f->src, "large", 48 * MIB);
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    CancelAt cancel = {.cancellable = cancellable, .sender_end = f->a};
    Trigger trigger = {.threshold = 4 * MIB, .action = cancel_now, .data = &cancel};
    FerryNativeOptions options = {.zstd = FALSE};
    Side sender, receiver;
    sides_init(f, f->src, f->dst, &options, &options, &sender, &receiver);
    Side *self = cancel_sender ? &sender : &receiver;
    Side *peer = cancel_sender ? &receiver : &sender;
    self->cancellable = cancellable;
    self->options.progress = trigger_progress;
    self->options.progress_data = &trigger;
    run_sides(&sender, &receiver);

    g_assert_true(trigger.fired);
    g_assert_false(self->ok);
    g_assert_false(peer->ok);
    g_test_message("cancelled side: %s; peer: %s", self->error->message, peer->error->message);
    g_assert_error(self->error, FERRY_ERROR, FERRY_ERROR_CANCELLED);
    g_assert_error(peer->error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE);
    g_assert_cmpint(self->finished_at - cancel.at, <, 2 * G_USEC_PER_SEC);
    g_assert_cmpint(peer->finished_at - cancel.at, <, 2 * G_USEC_PER_SEC);
    guint64 after_cancel = test_channel_bytes_written(f->a) - cancel.sent_at;
    g_test_message("%" G_GUINT64_FORMAT " bytes sent after the cancel", after_cancel);
    g_assert_cmpuint(after_cancel, <, 8 * MIB);
    side_clear(&sender);
    side_clear(&receiver);
}

static void test_cancel_receiver(Fixture *f, gconstpointer unused)
{
    if (need_root())
        run_cancel(f, FALSE);
}

static void test_cancel_sender(Fixture *f, gconstpointer unused)
{
    if (need_root())
        run_cancel(f, TRUE);
}

static void test_cancelled_before(Fixture *f, gconstpointer unused)
{
    write_file(f->src, "file", "x\n", 2);
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_cancellable_cancel(cancellable);
    FerryNativeOptions options = {0};
    Side sender, receiver;
    sides_init(f, f->src, f->dst, &options, &options, &sender, &receiver);
    receiver.cancellable = cancellable;
    run_sides(&sender, &receiver);
    g_assert_error(receiver.error, FERRY_ERROR, FERRY_ERROR_CANCELLED);
    g_assert_error(sender.error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE);
    g_assert_false(exists(f->dst, "file"));
    side_clear(&sender);
    side_clear(&receiver);
}

/* ---- 6. vanishing files ---- */

#define VICTIMS 24

static void remove_victims(gpointer data)
{
    const char *dir = data;
    for (int i = 0; i < VICTIMS; i++) {
        g_autofree char *name = g_strdup_printf("victim-%02d", i);
        g_autofree char *path = path_in(dir, name);
        if (unlink(path) < 0)
            g_assert_cmpint(errno, ==, ENOENT);
    }
    g_autofree char *vdir = path_in(dir, "vdir");
    rm_rf(vdir);
}

/* Files removed while the sender walks (a running instance) are left out; the pass succeeds. The victims go
 * at the sender's first write of phase D: after the walk read their directory, before it reached most of
 * them. */
static void test_vanished(Fixture *f, gconstpointer unused)
{
    if (!need_root())
        return;
    g_autofree char *v = path_in(f->src, "v");
    g_assert_no_errno(mkdir(v, 0755));
    char *sums[VICTIMS];
    for (int i = 0; i < VICTIMS; i++) {
        g_autofree char *name = g_strdup_printf("victim-%02d", i);
        write_random(v, name, 100 * KIB);
        g_autofree char *path = path_in(v, name);
        sums[i] = file_checksum(path);
    }
    make_dir(v, "vdir", 0755);
    write_file(v, "vdir/x", "x\n", 2);
    write_file(f->src, "stays", "stays\n", 6);

    Tap tap = {.inner = test_channel_iface(f->a), .phase = 1, .hook = remove_victims, .hook_data = v};
    FerryNativeOptions send_options = {.allow_inconsistent = TRUE}, recv_options = {0};
    Side sender, receiver;
    sides_init(f, f->src, f->dst, &send_options, &recv_options, &sender, &receiver);
    sender.channel = tap_iface(&tap);
    run_sides(&sender, &receiver);
    g_assert_true(tap.fired);
    g_assert_no_error(sender.error);
    g_assert_no_error(receiver.error);

    g_assert_true(exists(f->dst, "stays"));
    guint present = 0;
    for (int i = 0; i < VICTIMS; i++) {
        g_autofree char *name = g_strdup_printf("v/victim-%02d", i);
        if (exists(f->dst, name)) {
            g_autofree char *path = path_in(f->dst, name);
            g_autofree char *sum = file_checksum(path);
            g_assert_cmpstr(sum, ==, sums[i]);
            present++;
        }
        g_free(sums[i]);
    }
    g_test_message("%u of %d victims were sent before they vanished", present, VICTIMS);
    g_assert_cmpuint(present, <, VICTIMS);
    side_clear(&sender);
    side_clear(&receiver);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
    ADD("/migration/native/full-copy", test_full_copy);
    ADD("/migration/native/full-copy-plain", test_full_copy_plain);
    ADD("/migration/native/refresh", test_refresh);
    ADD("/migration/native/refresh-new-link", test_refresh_new_link);
    ADD("/migration/native/shared-inodes", test_shared_inodes);
    ADD("/migration/native/sender-aborts", test_sender_aborts);
    ADD("/migration/native/receiver-fails", test_receiver_fails);
    ADD("/migration/native/cancel-receiver", test_cancel_receiver);
    ADD("/migration/native/cancel-sender", test_cancel_sender);
    ADD("/migration/native/cancelled-before", test_cancelled_before);
    ADD("/migration/native/vanished", test_vanished);
#undef ADD
    for (gsize i = 0; i < G_N_ELEMENTS(hostile_cases); i++) {
        g_autofree char *path = g_strdup_printf("/migration/native/hostile/%s", hostile_cases[i].name);
        g_test_add(path, Fixture, &hostile_cases[i], fixture_setup, test_hostile, fixture_teardown);
    }
    return g_test_run();
}
