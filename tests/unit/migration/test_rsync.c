/* RSYNC migration transport: a real rsync sender and receiver talking through an in-process channel pair.
 * Needs root (owners, devices, trusted.* xattrs). This program is also the `netcat` helper rsync runs. */
#include "rsync.h"
#include "test_channel.h"
#include "test_tree.h"

#include "error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define MIB (1024 * 1024)
/* Any run longer than this is a hang. */
#define WATCHDOG_SECONDS 60

static char *self_exe;

/* ---- fixture ---- */

typedef struct {
    char *root, *src, *dst;
    TestChannel *a, *b; /* a: the sender's end */
    guint open_fds;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer unused)
{
    g_autoptr(GError) error = NULL;
    f->root = g_dir_make_tmp("ferry-rsync-XXXXXX", &error);
    g_assert_no_error(error);
    f->src = g_build_filename(f->root, "src", NULL);
    f->dst = g_build_filename(f->root, "dst", NULL);
    g_assert_no_errno(mkdir(f->src, 0755));
    g_assert_no_errno(mkdir(f->dst, 0755));
    test_channel_pair(&f->a, &f->b);
    f->open_fds = count_open_fds();
}

static int stray_processes(void);

static void fixture_teardown(Fixture *f, gconstpointer unused)
{
    /* Every rsync and helper is gone once the calls returned (orphaned helpers may take a moment). */
    for (int i = 0; i < 100 && stray_processes() > 0; i++)
        g_usleep(20000);
    g_assert_cmpint(stray_processes(), ==, 0);
    /* Nothing leaked: pipes, sockets, pidfds, cancellable fds. */
    g_assert_cmpuint(count_open_fds(), ==, f->open_fds);

    test_channel_free(f->a);
    test_channel_free(f->b);
    const char *argv[] = {"rm", "-rf", f->root, NULL};
    g_assert_true(
        g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL));
    g_free(f->root);
    g_free(f->src);
    g_free(f->dst);
}

/* ---- processes ---- */

static char **process_cmdline(const char *pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%s/cmdline", pid);
    g_autofree char *data = NULL;
    gsize len = 0;
    if (!g_file_get_contents(path, &data, &len, NULL) || len == 0)
        return NULL;
    GPtrArray *args = g_ptr_array_new();
    for (gsize off = 0; off < len; off += strlen(data + off) + 1)
        g_ptr_array_add(args, g_strdup(data + off));
    g_ptr_array_add(args, NULL);
    return (char **)g_ptr_array_free(args, FALSE);
}

static pid_t process_ppid(const char *pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%s/stat", pid);
    g_autofree char *stat = NULL;
    if (!g_file_get_contents(path, &stat, NULL, NULL))
        return -1;
    const char *close_paren = strrchr(stat, ')');
    char state;
    int ppid;
    if (close_paren == NULL || sscanf(close_paren + 1, " %c %d", &state, &ppid) != 2 || state == 'Z')
        return -1; /* zombies of others are not ours to count */
    return ppid;
}

/* pid of our child whose command line contains marker, or -1. */
static pid_t find_child(const char *marker)
{
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    const char *name;
    while ((name = g_dir_read_name(proc)) != NULL) {
        if (!g_ascii_isdigit(name[0]) || process_ppid(name) != getpid())
            continue;
        g_auto(GStrv) args = process_cmdline(name);
        for (guint i = 0; args != NULL && args[i] != NULL; i++)
            if (strcmp(args[i], marker) == 0)
                return (pid_t)atoi(name);
    }
    return -1;
}

/* Our children (rsync) plus netcat helpers started from this executable (orphans belong to init). */
static int stray_processes(void)
{
    int count = 0;
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    const char *name;
    while ((name = g_dir_read_name(proc)) != NULL) {
        if (!g_ascii_isdigit(name[0]))
            continue;
        pid_t ppid = process_ppid(name);
        if (ppid < 0)
            continue;
        g_auto(GStrv) args = process_cmdline(name);
        gboolean helper = args != NULL && args[0] != NULL && args[1] != NULL &&
                          strcmp(args[0], self_exe) == 0 && strcmp(args[1], "netcat") == 0;
        if (ppid == getpid() || helper) {
            g_test_message("stray process %s: %s", name, args && args[0] ? args[0] : "?");
            count++;
        }
    }
    return count;
}

/* ---- running both sides ---- */

typedef struct {
    gboolean sending;
    const char *dir;
    FerryByteChannel channel;
    FerryRsyncOptions options;
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
            ferry_rsync_send(side->dir, &side->channel, &side->options, side->cancellable, &side->error);
    else
        side->ok =
            ferry_rsync_receive(side->dir, &side->channel, &side->options, side->cancellable, &side->error);
    side->finished_at = g_get_monotonic_time();
    return NULL;
}

static void side_clear(Side *side)
{
    g_clear_error(&side->error);
}

/* Run a sender from src over a->b into dst, each side in its own thread, under the watchdog. */
static void transfer(Fixture *f, const char *src, const char *dst, const FerryRsyncOptions *send_options,
                     const FerryRsyncOptions *recv_options, Side *sender, Side *receiver)
{
    *sender =
        (Side){.sending = TRUE, .dir = src, .channel = test_channel_iface(f->a), .options = *send_options};
    *receiver = (Side){.dir = dst, .channel = test_channel_iface(f->b), .options = *recv_options};
    alarm(WATCHDOG_SECONDS);
    GThread *s = g_thread_new("sender", side_thread, sender);
    GThread *r = g_thread_new("receiver", side_thread, receiver);
    g_thread_join(s);
    g_thread_join(r);
    alarm(0);
}

static void transfer_ok(Fixture *f, const char *src, const char *dst, const FerryRsyncOptions *options)
{
    Side sender, receiver;
    transfer(f, src, dst, options, options, &sender, &receiver);
    g_assert_no_error(sender.error);
    g_assert_no_error(receiver.error);
    g_assert_true(sender.ok && receiver.ok);
}

/* ---- building and comparing trees ---- */

static void write_random(const char *dir, const char *name, gsize len)
{
    g_autofree char *data = g_malloc(len);
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    for (gsize off = 0; off < len;) {
        gssize n = read(fd, data + off, len - off);
        g_assert_cmpint(n, >, 0);
        off += (gsize)n;
    }
    close(fd);
    write_file(dir, name, data, len);
}

static void set_xattr(const char *dir, const char *name, const char *key, const char *value)
{
    g_autofree char *path = path_in(dir, name);
    g_assert_no_errno(lsetxattr(path, key, value, strlen(value), 0));
}

/* Regular files, a sparse file, symlinks (one to /etc), hard links, a fifo, devices, owners, setuid,
 * xattrs and distinct mtimes with nanoseconds. */
static void build_tree(const char *src)
{
    const char *dirs[] = {"dir", "dir/sub", "empty"};
    for (gsize i = 0; i < G_N_ELEMENTS(dirs); i++) {
        g_autofree char *path = path_in(src, dirs[i]);
        g_assert_no_errno(mkdir(path, 0755));
    }
    write_file(src, "file1", "hello world\n", 12);
    own(src, "file1", 1000000, 1000000);
    set_xattr(src, "file1", "user.test", "user value");
    set_xattr(src, "file1", "trusted.test", "trusted value");
    set_xattr(src, "dir", "user.dir", "on a directory");
    own(src, "dir", 1000000, 1000000);

    write_file(src, "root_owned", "secret\n", 7);
    g_autofree char *root_owned = path_in(src, "root_owned");
    g_assert_no_errno(chmod(root_owned, 0600));

    write_file(src, "suid", "#!/bin/true\n", 12);
    own(src, "suid", 1000000, 1000000);
    g_autofree char *suid = path_in(src, "suid");
    g_assert_no_errno(chmod(suid, 04755)); /* after chown, which clears it */

    write_random(src, "dir/sub/deep", 300 * 1024);
    write_random(src, "big", 4 * MIB);
    write_file(src, "empty_file", "", 0);
    write_file(src, "spaced name \xc3\xa9", "unicode\n", 8);

    g_autofree char *sparse = path_in(src, "sparse");
    int fd = open(sparse, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    g_assert_cmpint(fd, >=, 0);
    g_assert_no_errno(ftruncate(fd, 20 * MIB));
    g_assert_cmpint(pwrite(fd, "head", 4, 0), ==, 4);
    g_assert_cmpint(pwrite(fd, "middle", 6, 10 * MIB), ==, 6);
    g_assert_cmpint(pwrite(fd, "tail", 4, 20 * MIB - 4), ==, 4);
    close(fd);

    const char *links[][2] = {
        {"link_rel", "file1"}, {"link_etc", "/etc"}, {"dir/link_dangling", "../nowhere"}};
    for (gsize i = 0; i < G_N_ELEMENTS(links); i++) {
        g_autofree char *path = path_in(src, links[i][0]);
        g_assert_no_errno(symlink(links[i][1], path));
    }
    own(src, "link_rel", 1000000, 1000000);

    write_file(src, "hard_a", "two names\n", 10);
    g_autofree char *hard_a = path_in(src, "hard_a");
    g_autofree char *hard_b = path_in(src, "dir/hard_b");
    g_assert_no_errno(link(hard_a, hard_b));

    g_autofree char *fifo = path_in(src, "fifo");
    g_assert_no_errno(mkfifo(fifo, 0600));
    g_autofree char *chardev = path_in(src, "chardev");
    g_assert_no_errno(mknod(chardev, S_IFCHR | 0620, makedev(1, 3)));
    own(src, "chardev", 0, 5);
    g_autofree char *blockdev = path_in(src, "blockdev");
    g_assert_no_errno(mknod(blockdev, S_IFBLK | 0600, makedev(7, 200)));

    /* Leaves before their directories: writing into a directory changes its mtime. */
    const char *order[] = {"file1",
                           "root_owned",
                           "suid",
                           "dir/sub/deep",
                           "big",
                           "empty_file",
                           "spaced name \xc3\xa9",
                           "sparse",
                           "link_rel",
                           "link_etc",
                           "dir/link_dangling",
                           "hard_a",
                           "fifo",
                           "chardev",
                           "blockdev",
                           "dir/sub",
                           "empty",
                           "dir",
                           ""};
    for (gsize i = 0; i < G_N_ELEMENTS(order); i++)
        set_mtime(src, order[i], 1600000000 + (time_t)i * 1000, 123456789 + (long)i);
}

static char *xattr_dump(const char *path)
{
    char names[4096];
    gssize len = llistxattr(path, names, sizeof names);
    g_assert_cmpint(len, >=, 0);
    g_autoptr(GPtrArray) entries = g_ptr_array_new_with_free_func(g_free);
    for (gssize off = 0; off < len; off += (gssize)strlen(names + off) + 1) {
        const char *name = names + off;
        if (g_str_has_prefix(name, "security."))
            continue;
        char value[4096];
        gssize vlen = lgetxattr(path, name, value, sizeof value);
        g_assert_cmpint(vlen, >=, 0);
        g_ptr_array_add(entries, g_strdup_printf("%s=%.*s", name, (int)vlen, value));
    }
    g_ptr_array_sort(entries, compare_strings);
    g_ptr_array_add(entries, NULL);
    return g_strjoinv(",", (char **)entries->pdata);
}

/* Same names, types, modes, owners, sizes, contents, link targets, device numbers, xattrs and mtimes
 * (link counts aside: see the hard-link tests). */
static void assert_same_tree(const char *src, const char *dst, gboolean xattrs)
{
    g_autoptr(GPtrArray) a = sorted_tree(src);
    g_autoptr(GPtrArray) b = sorted_tree(dst);
    for (guint i = 0; i < MAX(a->len, b->len); i++)
        g_assert_cmpstr(i < a->len ? a->pdata[i] : NULL, ==, i < b->len ? b->pdata[i] : NULL);

    for (guint i = 0; i < a->len; i++) {
        const char *rel = a->pdata[i];
        g_autofree char *sp = path_in(src, rel);
        g_autofree char *dp = path_in(dst, rel);
        struct stat s, d;
        g_assert_no_errno(lstat(sp, &s));
        g_assert_no_errno(lstat(dp, &d));
        g_test_message("comparing \"%s\"", rel);
        g_assert_cmpuint(s.st_mode, ==, d.st_mode);
        g_assert_cmpuint(s.st_uid, ==, d.st_uid);
        g_assert_cmpuint(s.st_gid, ==, d.st_gid);
        g_assert_cmpint(s.st_mtim.tv_sec, ==, d.st_mtim.tv_sec);
        g_assert_cmpint(s.st_mtim.tv_nsec, ==, d.st_mtim.tv_nsec);
        if (S_ISREG(s.st_mode)) {
            g_assert_cmpint(s.st_size, ==, d.st_size);
            g_autofree char *sc = content_checksum(sp);
            g_autofree char *dc = content_checksum(dp);
            g_assert_cmpstr(sc, ==, dc);
        } else if (S_ISLNK(s.st_mode)) {
            g_autofree char *st = g_file_read_link(sp, NULL);
            g_autofree char *dt = g_file_read_link(dp, NULL);
            g_assert_cmpstr(st, ==, dt);
        } else if (S_ISCHR(s.st_mode) || S_ISBLK(s.st_mode)) {
            g_assert_cmpuint(s.st_rdev, ==, d.st_rdev);
        }
        if (xattrs) {
            g_autofree char *sx = xattr_dump(sp);
            g_autofree char *dx = xattr_dump(dp);
            g_assert_cmpstr(sx, ==, dx);
        }
    }
}

static gboolean exists(const char *dir, const char *name)
{
    g_autofree char *path = path_in(dir, name);
    struct stat st;
    return lstat(path, &st) == 0;
}

static gboolean need_root(void)
{
    if (getuid() == 0)
        return TRUE;
    g_test_skip("needs root (owners, devices, trusted.* xattrs)");
    return FALSE;
}

/* ---- tests ---- */

static void assert_args(GPtrArray *args, const char *const *expected)
{
    guint n = g_strv_length((char **)expected);
    for (guint i = 0; i < MAX(n, args->len); i++)
        g_assert_cmpstr(i < args->len ? args->pdata[i] : NULL, ==, i < n ? expected[i] : NULL);
}

static void test_args(void)
{
    FerryRsyncOptions plain = {0};
    g_autoptr(GPtrArray) s = ferry_rsync_sender_args(&plain);
    g_autoptr(GPtrArray) r = ferry_rsync_receiver_args(&plain);
    assert_args(s, (const char *[]){"-ar", "--devices", "--numeric-ids", "--partial", "--sparse", NULL});
    assert_args(r, (const char *[]){"--server", "-vlogDtpre.iLsfx", "--numeric-ids", "--devices", "--partial",
                                    "--sparse", "--modify-window=-1", NULL});

    const char *excludes[] = {"root.img", NULL};
    FerryRsyncOptions full = {.xattrs = TRUE,
                              .delete = TRUE,
                              .compress = TRUE,
                              .bwlimit_bytes_per_sec = 1 * MIB,
                              .excludes = excludes};
    g_autoptr(GPtrArray) s2 = ferry_rsync_sender_args(&full);
    g_autoptr(GPtrArray) r2 = ferry_rsync_receiver_args(&full);
    assert_args(s2,
                (const char *[]){"-ar", "--devices", "--numeric-ids", "--partial", "--sparse", "--bwlimit",
                                 "1024", "--xattrs", "--filter=-x security.selinux", "--delete", "--compress",
                                 "--compress-level=2", "--exclude=root.img", NULL});
    assert_args(r2,
                (const char *[]){"--server", "-vlogDtpre.iLsfx", "--numeric-ids", "--devices", "--partial",
                                 "--sparse", "--modify-window=-1", "--xattrs", "--filter=-x security.selinux",
                                 "--delete", "--compress", "--compress-level=2", NULL});

    /* Never --bwlimit 0 (unlimited, or rejected by newer rsync) for a small positive limit. */
    FerryRsyncOptions slow = {.bwlimit_bytes_per_sec = 100};
    g_autoptr(GPtrArray) s3 = ferry_rsync_sender_args(&slow);
    assert_args(s3, (const char *[]){"-ar", "--devices", "--numeric-ids", "--partial", "--sparse",
                                     "--bwlimit", "1", NULL});
}

static void test_features(void)
{
    gboolean xattrs = FALSE, delete = FALSE, compress = FALSE;
    ferry_rsync_features(&xattrs, &delete, &compress);
    g_assert_true(xattrs);
    g_assert_true(delete);
    g_assert_true(compress);
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

static void test_tree(Fixture *f, gconstpointer unused)
{
    if (!need_root())
        return;
    build_tree(f->src);
    Progress sent = {0}, received = {0};
    FerryRsyncOptions options = {.xattrs = TRUE, .delete = TRUE, .compress = TRUE};
    FerryRsyncOptions send_options = options, recv_options = options;
    send_options.progress = recv_options.progress = record_progress;
    send_options.progress_data = &sent;
    recv_options.progress_data = &received;
    Side sender, receiver;
    transfer(f, f->src, f->dst, &send_options, &recv_options, &sender, &receiver);
    g_assert_no_error(sender.error);
    g_assert_no_error(receiver.error);

    assert_same_tree(f->src, f->dst, TRUE);

    /* Holes stay holes. */
    struct stat sparse = stat_of(f->dst, "sparse");
    g_assert_cmpint(sparse.st_size, ==, 20 * MIB);
    g_assert_cmpint(sparse.st_blocks * 512, <, 1 * MIB);
    /* A link out of the tree is copied as a link, never followed. */
    struct stat etc = stat_of(f->dst, "link_etc");
    g_assert_true(S_ISLNK(etc.st_mode));
    /* Incus's receiver arguments have no -H: hard links arrive as two files. */
    struct stat ha = stat_of(f->dst, "hard_a"), hb = stat_of(f->dst, "dir/hard_b");
    g_assert_cmpuint(ha.st_ino, !=, hb.st_ino);
    g_assert_cmpuint(ha.st_nlink, ==, 1);

    /* Progress is the sender->receiver payload, as it went over the channel. */
    g_assert_cmpuint(sent.calls, >, 0);
    g_assert_cmpuint(sent.last, ==, test_channel_bytes_written(f->a));
    g_assert_cmpuint(received.last, ==, test_channel_bytes_read(f->b));
    g_assert_cmpuint(sent.last, ==, received.last);
    g_assert_cmpuint(sent.last, >, 4 * MIB); /* "big" is random: compression cannot hide it */
}

static void test_uncompressed_no_xattrs(Fixture *f, gconstpointer unused)
{
    if (!need_root())
        return;
    build_tree(f->src);
    FerryRsyncOptions options = {0};
    transfer_ok(f, f->src, f->dst, &options);
    assert_same_tree(f->src, f->dst, FALSE);
    g_autofree char *path = path_in(f->dst, "file1");
    char value[64];
    g_assert_cmpint(lgetxattr(path, "user.test", value, sizeof value), <, 0);
}

static void test_hard_links(Fixture *f, gconstpointer unused)
{
    if (!need_root())
        return;
    build_tree(f->src);
    FerryRsyncOptions options = {.xattrs = TRUE, .hard_links = TRUE};
    transfer_ok(f, f->src, f->dst, &options);
    assert_same_tree(f->src, f->dst, TRUE);
    struct stat ha = stat_of(f->dst, "hard_a"), hb = stat_of(f->dst, "dir/hard_b");
    g_assert_cmpuint(ha.st_ino, ==, hb.st_ino);
    g_assert_cmpuint(ha.st_nlink, ==, 2);
}

/* A second pass with delete: extra destination files go, excluded ones are protected, and only the changed
 * data moves. Both runs use the same channel, one sub-stream each way per run. */
static void test_delete_delta(Fixture *f, gconstpointer unused)
{
    if (!need_root())
        return;
    build_tree(f->src);
    FerryRsyncOptions options = {.xattrs = TRUE, .delete = TRUE, .compress = TRUE};
    transfer_ok(f, f->src, f->dst, &options);
    guint64 first = test_channel_bytes_written(f->a);
    g_assert_cmpuint(first, >, 4 * MIB);

    g_autofree char *big = path_in(f->src, "big");
    int fd = open(big, O_WRONLY | O_CLOEXEC);
    g_assert_cmpint(pwrite(fd, "CHANGED!", 8, 2 * MIB), ==, 8);
    close(fd);
    set_mtime(f->src, "big", 1700000000, 1);
    write_file(f->src, "new_file", "new\n", 4);
    write_file(f->src, "skipped.keep", "not sent\n", 9);
    write_file(f->dst, "extra", "remove me\n", 10);
    g_autofree char *extra_dir = path_in(f->dst, "dir/extra_dir");
    g_assert_no_errno(mkdir(extra_dir, 0700));
    write_file(f->dst, "dir/extra_dir/inside", "me too\n", 7);
    write_file(f->dst, "precious.keep", "protected by the exclude\n", 25);
    set_mtime(f->src, "", 1600000000, 5); /* the new files changed it */

    const char *excludes[] = {"*.keep", NULL};
    options.excludes = excludes;
    transfer_ok(f, f->src, f->dst, &options);
    guint64 second = test_channel_bytes_written(f->a) - first;
    g_test_message("first run %" G_GUINT64_FORMAT " bytes, second %" G_GUINT64_FORMAT, first, second);
    g_assert_cmpuint(second, <, 256 * 1024);

    g_assert_false(exists(f->dst, "extra"));
    g_assert_false(exists(f->dst, "dir/extra_dir"));
    g_assert_false(exists(f->dst, "skipped.keep"));
    g_assert_true(exists(f->dst, "precious.keep"));
    g_autofree char *skipped = path_in(f->src, "skipped.keep");
    g_autofree char *precious = path_in(f->dst, "precious.keep");
    g_assert_no_errno(unlink(skipped));
    g_assert_no_errno(unlink(precious));
    set_mtime(f->src, "", 1600000000, 5);
    set_mtime(f->dst, "", 1600000000, 5);
    assert_same_tree(f->src, f->dst, TRUE);
}

/* The receiver cannot write its destination: both sides fail with rsync's words, nobody hangs. */
static void test_receiver_fails(Fixture *f, gconstpointer unused)
{
    if (!need_root())
        return;
    build_tree(f->src);
    write_file(f->root, "not_a_dir", "", 0);
    g_autofree char *bad = g_build_filename(f->root, "not_a_dir", "dest", NULL);
    FerryRsyncOptions options = {.xattrs = TRUE};
    Side sender, receiver;
    gint64 start = g_get_monotonic_time();
    transfer(f, f->src, bad, &options, &options, &sender, &receiver);
    g_assert_cmpint(g_get_monotonic_time() - start, <, 10 * G_USEC_PER_SEC);
    g_assert_false(sender.ok);
    g_assert_false(receiver.ok);
    g_test_message("sender: %s", sender.error->message);
    g_test_message("receiver: %s", receiver.error->message);
    /* The failure is the receiver's: the sender says so by its code (its caller then waits for the peer's
     * account over `control`), the receiver's is its own. */
    g_assert_error(sender.error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE);
    g_assert_error(receiver.error, FERRY_ERROR, FERRY_ERROR_INTERNAL);
    /* The receiver's words stay on its stderr (the lead reports them over `control`); the sender gets the
     * status through the protocol. */
    g_assert_cmpstr(
        sender.error->message, ==,
        "Rsync send failed: rsync exited with status 3 (errors selecting input/output files, directories)");
    g_assert_true(
        g_str_has_prefix(receiver.error->message, "Rsync receive failed: rsync exited with status 3 "));
    g_assert_nonnull(strstr(receiver.error->message, "Not a directory"));
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

static void kill_receiver(gpointer data)
{
    pid_t pid = find_child("--server");
    g_assert_cmpint(pid, >, 0);
    g_assert_no_errno(kill(pid, SIGKILL));
}

/* The receiving rsync dies mid-transfer. */
static void test_receiver_killed(Fixture *f, gconstpointer unused)
{
    if (!need_root())
        return;
    write_random(f->src, "large", 32 * MIB);
    Trigger trigger = {.threshold = 2 * MIB, .action = kill_receiver};
    FerryRsyncOptions send_options = {
        .bwlimit_bytes_per_sec = 16 * MIB, .progress = trigger_progress, .progress_data = &trigger};
    FerryRsyncOptions recv_options = {0};
    Side sender, receiver;
    gint64 start = g_get_monotonic_time();
    transfer(f, f->src, f->dst, &send_options, &recv_options, &sender, &receiver);
    g_assert_true(trigger.fired);
    g_assert_cmpint(g_get_monotonic_time() - start, <, 10 * G_USEC_PER_SEC);
    g_assert_false(sender.ok);
    g_assert_false(receiver.ok);
    g_test_message("sender: %s", sender.error->message);
    g_test_message("receiver: %s", receiver.error->message);
    g_assert_true(g_str_has_prefix(sender.error->message, "Rsync send failed: rsync exited with status "));
    g_assert_true(
        g_str_has_prefix(receiver.error->message, "Rsync receive failed: rsync killed by signal 9"));
    /* The sender died of the receiver's death; the receiver's death was its own. */
    g_assert_error(sender.error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE);
    g_assert_error(receiver.error, FERRY_ERROR, FERRY_ERROR_INTERNAL);
    side_clear(&sender);
    side_clear(&receiver);
}

typedef struct {
    GCancellable *cancellable;
    gint64 at;
} CancelAt;

static void cancel_now(gpointer data)
{
    CancelAt *c = data;
    c->at = g_get_monotonic_time();
    g_cancellable_cancel(c->cancellable);
}

/* Cancelling one side mid-transfer kills its rsync; the channel abort makes the other side fail at once. */
static void run_cancel(Fixture *f, gboolean cancel_sender)
{
    write_random(f->src, "large", 32 * MIB);
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    CancelAt cancel = {.cancellable = cancellable};
    Trigger trigger = {.threshold = 2 * MIB, .action = cancel_now, .data = &cancel};
    FerryRsyncOptions send_options = {.bwlimit_bytes_per_sec = 16 * MIB};
    FerryRsyncOptions recv_options = {0};
    FerryRsyncOptions *cancelled = cancel_sender ? &send_options : &recv_options;
    cancelled->progress = trigger_progress;
    cancelled->progress_data = &trigger;

    Side sender = {
        .sending = TRUE, .dir = f->src, .channel = test_channel_iface(f->a), .options = send_options};
    Side receiver = {.dir = f->dst, .channel = test_channel_iface(f->b), .options = recv_options};
    (cancel_sender ? &sender : &receiver)->cancellable = cancellable;
    alarm(WATCHDOG_SECONDS);
    GThread *s = g_thread_new("sender", side_thread, &sender);
    GThread *r = g_thread_new("receiver", side_thread, &receiver);
    g_thread_join(s);
    g_thread_join(r);
    alarm(0);

    g_assert_true(trigger.fired);
    Side *self = cancel_sender ? &sender : &receiver;
    Side *peer = cancel_sender ? &receiver : &sender;
    g_test_message("cancelled side: %s; peer: %s", self->error->message, peer->error->message);
    g_assert_error(self->error, FERRY_ERROR, FERRY_ERROR_CANCELLED);
    g_assert_false(peer->ok);
    g_assert_cmpint(self->finished_at - cancel.at, <, 2 * G_USEC_PER_SEC);
    g_assert_cmpint(peer->finished_at - cancel.at, <, 2 * G_USEC_PER_SEC);
    side_clear(&sender);
    side_clear(&receiver);
}

static void test_cancel_sender(Fixture *f, gconstpointer unused)
{
    if (need_root())
        run_cancel(f, TRUE);
}

static void test_cancel_receiver(Fixture *f, gconstpointer unused)
{
    if (need_root())
        run_cancel(f, FALSE);
}

static void test_cancelled_before(Fixture *f, gconstpointer unused)
{
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_cancellable_cancel(cancellable);
    FerryRsyncOptions options = {0};
    FerryByteChannel channel = test_channel_iface(f->a);
    g_autoptr(GError) error = NULL;
    g_assert_false(ferry_rsync_send(f->src, &channel, &options, cancellable, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED);
}

static void remove_file(gpointer path)
{
    g_assert_no_errno(unlink(path));
}

/* A file vanishes between the file list and its turn (a running instance): exit 24, tolerated only with
 * allow_inconsistent. */
static void run_vanished(Fixture *f, gboolean allow)
{
    write_random(f->src, "aa", 16 * MIB);
    write_file(f->src, "zz", "gone soon\n", 10);
    g_autofree char *zz = path_in(f->src, "zz");
    Trigger trigger = {.threshold = 2 * MIB, .action = remove_file, .data = zz};
    FerryRsyncOptions options = {0};
    FerryRsyncOptions send_options = {.allow_inconsistent = allow};
    send_options.progress = trigger_progress;
    send_options.progress_data = &trigger;
    Side sender, receiver;
    transfer(f, f->src, f->dst, &send_options, &options, &sender, &receiver);
    g_assert_true(trigger.fired);
    if (allow) {
        g_assert_no_error(sender.error);
        g_assert_no_error(receiver.error);
        g_assert_true(exists(f->dst, "aa"));
        g_assert_false(exists(f->dst, "zz"));
    } else {
        g_assert_nonnull(sender.error);
        g_test_message("sender: %s", sender.error->message);
        g_assert_true(
            g_str_has_prefix(sender.error->message, "Rsync send failed: rsync exited with status 24"));
        g_assert_nonnull(strstr(sender.error->message, "vanished"));
        g_assert_error(sender.error, FERRY_ERROR, FERRY_ERROR_INTERNAL); /* the sender's own doing */
        /* The receiving rsync ends with 24 as well; that is the sender's call, never a receive failure. */
        g_assert_no_error(receiver.error);
    }
    side_clear(&sender);
    side_clear(&receiver);
}

static void test_vanished_tolerated(Fixture *f, gconstpointer unused)
{
    if (need_root())
        run_vanished(f, TRUE);
}

static void test_vanished_fails(Fixture *f, gconstpointer unused)
{
    if (need_root())
        run_vanished(f, FALSE);
}

/* rsync cannot start its remote shell: clean failures on both sides. */
static void test_missing_helper(Fixture *f, gconstpointer unused)
{
    write_file(f->src, "file", "x\n", 2);
    FerryRsyncOptions options = {0};
    FerryRsyncOptions send_options = {.helper_binary = "/nonexistent/ferryd"};
    Side sender, receiver;
    transfer(f, f->src, f->dst, &send_options, &options, &sender, &receiver);
    g_assert_false(sender.ok);
    g_assert_false(receiver.ok);
    g_test_message("sender: %s", sender.error->message);
    g_test_message("receiver: %s", receiver.error->message);
    g_assert_nonnull(strstr(sender.error->message, "/nonexistent/ferryd"));
    /* The sender's own failure; the receiver's end is a consequence. */
    g_assert_error(sender.error, FERRY_ERROR, FERRY_ERROR_INTERNAL);
    g_assert_error(receiver.error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE);
    side_clear(&sender);
    side_clear(&receiver);
}

/* rsync splits -e itself: a helper path with a space must still run. */
static void test_helper_path_with_space(Fixture *f, gconstpointer unused)
{
    g_autofree char *dir = g_build_filename(f->root, "with space", NULL);
    g_assert_no_errno(mkdir(dir, 0755));
    g_autofree char *helper = g_build_filename(dir, "helper", NULL);
    g_assert_no_errno(symlink(self_exe, helper));
    write_file(f->src, "file", "x\n", 2);
    FerryRsyncOptions options = {0};
    FerryRsyncOptions send_options = {.helper_binary = helper};
    Side sender, receiver;
    transfer(f, f->src, f->dst, &send_options, &options, &sender, &receiver);
    g_assert_no_error(sender.error);
    g_assert_no_error(receiver.error);
    g_assert_true(exists(f->dst, "file"));
}

static void test_netcat_bad_fd(void)
{
    char *not_socket[] = {"netcat", "1", NULL};
    char *garbage[] = {"netcat", "x3", NULL};
    char *missing[] = {"netcat", NULL};
    g_assert_cmpint(ferry_rsync_netcat_main(2, not_socket), ==, 2);
    g_assert_cmpint(ferry_rsync_netcat_main(2, garbage), ==, 2);
    g_assert_cmpint(ferry_rsync_netcat_main(1, missing), ==, 2);
}

int main(int argc, char **argv)
{
    /* rsync's remote shell: `<this program> netcat <fd> -- ...`. */
    if (argc > 1 && strcmp(argv[1], "netcat") == 0)
        return ferry_rsync_netcat_main(argc - 1, argv + 1);

    self_exe = g_file_read_link("/proc/self/exe", NULL);
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/migration/rsync/args", test_args);
    g_test_add_func("/migration/rsync/features", test_features);
    g_test_add_func("/migration/rsync/netcat-bad-fd", test_netcat_bad_fd);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
    ADD("/migration/rsync/tree", test_tree);
    ADD("/migration/rsync/tree-plain", test_uncompressed_no_xattrs);
    ADD("/migration/rsync/hard-links", test_hard_links);
    ADD("/migration/rsync/delete-delta", test_delete_delta);
    ADD("/migration/rsync/receiver-fails", test_receiver_fails);
    ADD("/migration/rsync/receiver-killed", test_receiver_killed);
    ADD("/migration/rsync/cancel-sender", test_cancel_sender);
    ADD("/migration/rsync/cancel-receiver", test_cancel_receiver);
    ADD("/migration/rsync/cancelled-before", test_cancelled_before);
    ADD("/migration/rsync/vanished-tolerated", test_vanished_tolerated);
    ADD("/migration/rsync/vanished-fails", test_vanished_fails);
    ADD("/migration/rsync/missing-helper", test_missing_helper);
    ADD("/migration/rsync/helper-path-with-space", test_helper_path_with_space);
#undef ADD
    int rc = g_test_run();
    g_free(self_exe);
    return rc;
}
