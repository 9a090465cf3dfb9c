/* BTRFS migration transport: real `btrfs send` / `btrfs receive` on a loop-mounted btrfs, talking through the
 * in-process channel pair. Needs root (mount, subvolume ioctls, owners, devices, trusted.* xattrs).
 *
 * Everything lives in a private mount namespace: the loop filesystem and the tmpfs (the "not btrfs"
 * destination) disappear with the process however it ends, the loop device detaches itself (autoclear) and
 * its image file is unlinked as soon as it is mounted. A signal handler removes the empty mount directories
 * when an assertion aborts. */
#include "btrfs_transport.h"
#include "test_channel.h"
#include "test_tree.h"

#include "error.h"
#include "json.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define MIB (1024 * 1024)
#define WATCHDOG_SECONDS 90

/* ---- the test filesystems ---- */

static char *env_skip;  /* why everything is skipped, or NULL */
static char *root_dir;  /* temporary directory holding the mount points */
static char *btrfs_mnt; /* the loop btrfs */
static char *tmpfs_mnt; /* a filesystem that is not btrfs */
static char cleanup_paths[3][PATH_MAX];

static void remove_mounts(void)
{
    /* Async-signal-safe: called from the abort handler too. */
    for (int i = 0; i < 2; i++)
        if (cleanup_paths[i][0]) {
            umount2(cleanup_paths[i], MNT_DETACH);
            rmdir(cleanup_paths[i]);
        }
    if (cleanup_paths[2][0])
        rmdir(cleanup_paths[2]);
}

static void on_fatal_signal(int sig)
{
    remove_mounts();
    signal(sig, SIG_DFL);
    raise(sig);
}

static gboolean run(const char *const *argv, GError **error)
{
    g_autofree char *err = NULL;
    int status = 0;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                      NULL, &err, &status, error))
        return FALSE;
    if (!g_spawn_check_wait_status(status, NULL)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "%s failed: %s", argv[0], err ? err : "");
        return FALSE;
    }
    return TRUE;
}

static char *setup_environment(void)
{
    if (getuid() != 0)
        return g_strdup("needs root (mount, btrfs ioctls, owners, devices)");
    g_autofree char *btrfs = g_find_program_in_path("btrfs");
    g_autofree char *mkfs_btrfs = g_find_program_in_path("mkfs.btrfs");
    if (btrfs == NULL || mkfs_btrfs == NULL)
        return g_strdup("btrfs-progs are not installed");
    if (unshare(CLONE_NEWNS) < 0)
        return g_strdup_printf("unshare(CLONE_NEWNS): %s", g_strerror(errno));
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return g_strdup_printf("making / private: %s", g_strerror(errno));

    g_autoptr(GError) error = NULL;
    root_dir = g_dir_make_tmp("ferry-btrfs-XXXXXX", &error);
    if (root_dir == NULL)
        return g_strdup(error->message);
    btrfs_mnt = g_build_filename(root_dir, "btrfs", NULL);
    tmpfs_mnt = g_build_filename(root_dir, "tmpfs", NULL);
    g_strlcpy(cleanup_paths[0], btrfs_mnt, PATH_MAX);
    g_strlcpy(cleanup_paths[1], tmpfs_mnt, PATH_MAX);
    g_strlcpy(cleanup_paths[2], root_dir, PATH_MAX);
    atexit(remove_mounts);
    int signals[] = {SIGABRT, SIGALRM, SIGSEGV, SIGTERM, SIGINT, SIGBUS};
    for (gsize i = 0; i < G_N_ELEMENTS(signals); i++)
        signal(signals[i], on_fatal_signal);

    g_autofree char *image = g_build_filename(root_dir, "disk.img", NULL);
    int fd = open(image, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, 300 * MIB) < 0)
        return g_strdup_printf("image file: %s", g_strerror(errno));
    close(fd);
    const char *mkfs[] = {"mkfs.btrfs", "-q", "-f", image, NULL};
    const char *mount_loop[] = {"mount", "-o", "loop", image, btrfs_mnt, NULL};
    gboolean ok = g_mkdir_with_parents(btrfs_mnt, 0700) == 0 && g_mkdir_with_parents(tmpfs_mnt, 0700) == 0 &&
                  run(mkfs, &error) && run(mount_loop, &error);
    unlink(image); /* the loop device holds it until the filesystem goes */
    if (!ok)
        return g_strdup(error ? error->message : "mkdir failed");
    if (mount("tmpfs", tmpfs_mnt, "tmpfs", 0, "size=64m") < 0)
        return g_strdup_printf("tmpfs: %s", g_strerror(errno));
    return NULL;
}

/* ---- fixture ---- */

typedef struct {
    char *dir, *src, *dst;
    TestChannel *a, *b; /* a: the sender's end */
    guint open_fds;
    guint subvolumes; /* in the whole filesystem at setup */
} Fixture;

/* Subvolumes of the test filesystem (btrfs's own list, so a stray one anywhere counts). */
static guint count_subvolumes(void)
{
    const char *argv[] = {"btrfs", "subvolume", "list", btrfs_mnt, NULL};
    g_autofree char *out = NULL;
    int status = 0;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL,
                               NULL, NULL, &out, NULL, &status, NULL));
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    guint n = 0;
    for (const char *p = out; (p = strstr(p, "ID ")) != NULL; p += 3)
        n++;
    return n;
}

static int stray_processes(void);

static gboolean skip_if_needed(void)
{
    if (env_skip == NULL)
        return FALSE;
    g_test_skip(env_skip);
    return TRUE;
}

static void fixture_setup(Fixture *f, gconstpointer unused)
{
    if (env_skip != NULL)
        return;
    static guint counter;
    f->dir = g_strdup_printf("%s/t%u", btrfs_mnt, counter++);
    f->src = g_build_filename(f->dir, "src", NULL);
    f->dst = g_build_filename(f->dir, "dst", NULL);
    g_assert_no_errno(g_mkdir_with_parents(f->src, 0755));
    g_assert_no_errno(g_mkdir_with_parents(f->dst, 0755));
    test_channel_pair(&f->a, &f->b);
    f->open_fds = count_open_fds();
    f->subvolumes = count_subvolumes();
}

/* Remove everything under dir: subvolumes (with nested ones), directories, files. */
static void remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return;
    if (S_ISDIR(st.st_mode) && st.st_ino == 256) {
        g_autoptr(GError) error = NULL;
        g_assert_true(ferry_btrfs_delete_subvolume(path, &error));
        g_assert_no_error(error);
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        g_assert_no_errno(unlink(path));
        return;
    }
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    const char *name;
    while ((name = g_dir_read_name(dir)) != NULL) {
        g_autofree char *child = g_build_filename(path, name, NULL);
        remove_tree(child);
    }
    g_assert_no_errno(rmdir(path));
}

static void fixture_teardown(Fixture *f, gconstpointer unused)
{
    if (env_skip != NULL)
        return;
    for (int i = 0; i < 100 && stray_processes() > 0; i++)
        g_usleep(20000);
    g_assert_cmpint(stray_processes(), ==, 0);
    g_assert_cmpuint(count_open_fds(), ==, f->open_fds);
    test_channel_free(f->a);
    test_channel_free(f->b);
    remove_tree(f->dir);
    g_free(f->dir);
    g_free(f->src);
    g_free(f->dst);
}

/* ---- processes ---- */

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
        return -1;
    return ppid;
}

static int stray_processes(void)
{
    int count = 0;
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    const char *name;
    while ((name = g_dir_read_name(proc)) != NULL)
        if (g_ascii_isdigit(name[0]) && process_ppid(name) == getpid()) {
            g_test_message("stray process %s", name);
            count++;
        }
    return count;
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

static void make_subvolume(const char *path)
{
    const char *argv[] = {"btrfs", "subvolume", "create", path, NULL};
    g_autoptr(GError) error = NULL;
    run(argv, &error);
    g_assert_no_error(error);
}

static void set_ro(const char *path, gboolean ro)
{
    const char *argv[] = {"btrfs", "property", "set", "-f", "-ts", path, "ro", ro ? "true" : "false", NULL};
    g_autoptr(GError) error = NULL;
    run(argv, &error);
    g_assert_no_error(error);
}

static void snapshot_ro(const char *src, const char *dst)
{
    const char *argv[] = {"btrfs", "subvolume", "snapshot", "-r", src, dst, NULL};
    g_autoptr(GError) error = NULL;
    run(argv, &error);
    g_assert_no_error(error);
}

/* A read-only snapshot with nested subvolumes in place, read-only too (what ferry's storage makes). */
static void snapshot_recursive_ro(const char *src, const char *dst, const char *const *nested)
{
    const char *argv[] = {"btrfs", "subvolume", "snapshot", src, dst, NULL};
    g_autoptr(GError) error = NULL;
    run(argv, &error);
    g_assert_no_error(error);
    for (gsize i = 0; nested[i] != NULL; i++) {
        g_autofree char *from = path_in(src, nested[i]);
        g_autofree char *to = path_in(dst, nested[i]);
        g_assert_no_errno(rmdir(to));
        const char *snap[] = {"btrfs", "subvolume", "snapshot", from, to, NULL};
        run(snap, &error);
        g_assert_no_error(error);
    }
    for (gsize i = g_strv_length((char **)nested); i > 0; i--) {
        g_autofree char *to = path_in(dst, nested[i - 1]);
        set_ro(to, TRUE);
    }
    set_ro(dst, TRUE);
}

/* A sparse file, symlinks, a hard link, a fifo, devices, owners, setuid, xattrs, nanosecond mtimes. */
static void build_tree(const char *src)
{
    const char *dirs[] = {"dir", "dir/sub", "empty"};
    for (gsize i = 0; i < G_N_ELEMENTS(dirs); i++) {
        g_autofree char *path = path_in(src, dirs[i]);
        g_assert_no_errno(mkdir(path, 0755));
    }
    write_file(src, "file1", "hello world\n", 12);
    g_autofree char *file1 = path_in(src, "file1");
    g_assert_no_errno(lchown(file1, 1000000, 1000000));
    g_assert_no_errno(lsetxattr(file1, "user.test", "user value", 10, 0));
    g_assert_no_errno(lsetxattr(file1, "trusted.test", "trusted value", 13, 0));
    g_autofree char *dir = path_in(src, "dir");
    g_assert_no_errno(lsetxattr(dir, "user.dir", "on a directory", 14, 0));
    g_assert_no_errno(lchown(dir, 1000000, 1000000));

    write_file(src, "suid", "#!/bin/true\n", 12);
    g_autofree char *suid = path_in(src, "suid");
    g_assert_no_errno(lchown(suid, 1000000, 1000000));
    g_assert_no_errno(chmod(suid, 04755));

    write_random(src, "dir/sub/deep", 300 * 1024);
    write_random(src, "big", 4 * MIB);
    write_file(src, "empty_file", "", 0);

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
    g_autofree char *link_rel = path_in(src, "link_rel");
    g_assert_no_errno(lchown(link_rel, 1000000, 1000000));

    write_file(src, "hard_a", "two names\n", 10);
    g_autofree char *hard_a = path_in(src, "hard_a");
    g_autofree char *hard_b = path_in(src, "dir/hard_b");
    g_assert_no_errno(link(hard_a, hard_b));

    g_autofree char *fifo = path_in(src, "fifo");
    g_assert_no_errno(mkfifo(fifo, 0600));
    g_autofree char *chardev = path_in(src, "chardev");
    g_assert_no_errno(mknod(chardev, S_IFCHR | 0620, makedev(1, 3)));
    g_assert_no_errno(lchown(chardev, 0, 5));
    g_autofree char *blockdev = path_in(src, "blockdev");
    g_assert_no_errno(mknod(blockdev, S_IFBLK | 0600, makedev(7, 200)));

    const char *order[] = {"file1",
                           "suid",
                           "dir/sub/deep",
                           "big",
                           "empty_file",
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

/* Names, types, modes, owners, sizes, contents, link targets, devices, xattrs, mtimes and link counts. */
static void assert_same_tree(const char *src, const char *dst)
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
        if (!S_ISDIR(s.st_mode))
            g_assert_cmpuint(s.st_nlink, ==, d.st_nlink);
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
        g_autofree char *sx = xattr_dump(sp);
        g_autofree char *dx = xattr_dump(dp);
        g_assert_cmpstr(sx, ==, dx);
    }
}

static gboolean exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static gboolean is_readonly(const char *path)
{
    gboolean ro = FALSE;
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_btrfs_subvolume_uuids(path, NULL, NULL, &ro, &error));
    return ro;
}

static char *uuid_of(const char *path, gboolean received)
{
    char *uuid = NULL, *received_uuid = NULL;
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_btrfs_subvolume_uuids(path, &uuid, &received_uuid, NULL, &error));
    if (received) {
        g_free(uuid);
        return received_uuid;
    }
    g_free(received_uuid);
    return uuid;
}

/* No ".ferry-tmp-*" staging left in dir. */
static void assert_no_staging(const char *dir)
{
    g_autoptr(GDir) handle = g_dir_open(dir, 0, NULL);
    const char *name;
    while (handle != NULL && (name = g_dir_read_name(handle)) != NULL)
        g_assert_false(g_str_has_prefix(name, ".ferry-tmp-"));
}

/* ---- running both sides ---- */

typedef struct {
    guint64 last;
    guint calls;
    guint64 threshold; /* when reached, action runs once */
    void (*action)(gpointer data);
    gpointer action_data;
    gboolean fired;
} Progress;

static void on_progress(guint64 bytes, gpointer data)
{
    Progress *p = data;
    g_assert_cmpuint(bytes, >=, p->last);
    p->last = bytes;
    p->calls++;
    if (p->action != NULL && !p->fired && bytes >= p->threshold) {
        p->fired = TRUE;
        p->action(p->action_data);
    }
}

typedef enum { SEND_ONE, RECEIVE_ONE, SEND_VOLUME, RECEIVE_VOLUME, SEND_RAW } Job;

typedef struct {
    Job job;
    FerryByteChannel channel;
    GCancellable *cancellable;
    Progress progress;
    /* one subvolume */
    const char *path, *parent;
    char *received; /* RECEIVE_ONE's result */
    /* a volume */
    const char *const *snapshots;
    GPtrArray *subvolumes;
    FerryBtrfsSendOptions options;
    const char *work_parent, *volume_target, *snapshots_target;
    /* SEND_RAW: bytes written as they are, then a barrier */
    GBytes *raw;
    gboolean ok;
    GError *error;
    gint64 finished_at;
} Side;

static gpointer side_thread(gpointer data)
{
    Side *s = data;
    switch (s->job) {
    case SEND_ONE:
        s->ok = ferry_btrfs_send_subvolume(s->path, s->parent, &s->channel, on_progress, &s->progress,
                                           s->cancellable, &s->error);
        break;
    case RECEIVE_ONE:
        s->received = ferry_btrfs_receive_subvolume(s->path, &s->channel, on_progress, &s->progress,
                                                    s->cancellable, &s->error);
        s->ok = s->received != NULL;
        break;
    case SEND_VOLUME:
        s->options.progress = on_progress;
        s->options.progress_data = &s->progress;
        s->ok = ferry_btrfs_send_volume(s->path, s->snapshots, s->subvolumes, &s->options, &s->channel,
                                        s->cancellable, &s->error);
        break;
    case RECEIVE_VOLUME: {
        g_autoptr(FerryBtrfsReceiver) receiver = ferry_btrfs_receiver_new(s->work_parent, &s->error);
        s->ok = receiver != NULL &&
                ferry_btrfs_receiver_receive_all(receiver, s->subvolumes, &s->channel, on_progress,
                                                 &s->progress, s->cancellable, &s->error) &&
                ferry_btrfs_receiver_commit(receiver, s->volume_target, s->snapshots_target, &s->error);
        break;
    }
    case SEND_RAW: {
        gsize len = 0;
        const char *bytes = g_bytes_get_data(s->raw, &len);
        s->ok = s->channel.write(s->channel.channel, bytes, len, &s->error) &&
                s->channel.end(s->channel.channel, &s->error);
        break;
    }
    }
    s->finished_at = g_get_monotonic_time();
    return NULL;
}

static void side_clear(Side *s)
{
    g_clear_error(&s->error);
    g_clear_pointer(&s->received, g_free);
}

static void run_pair(Side *sender, Side *receiver)
{
    alarm(WATCHDOG_SECONDS);
    GThread *s = g_thread_new("sender", side_thread, sender);
    GThread *r = g_thread_new("receiver", side_thread, receiver);
    g_thread_join(s);
    g_thread_join(r);
    alarm(0);
}

/* Send path (parent) from a to b, received into dest_dir; both must succeed. Returns the received path. */
static char *transfer_one(Fixture *f, const char *path, const char *parent, const char *dest_dir,
                          guint64 *bytes)
{
    Side sender = {.job = SEND_ONE, .channel = test_channel_iface(f->a), .path = path, .parent = parent};
    Side receiver = {.job = RECEIVE_ONE, .channel = test_channel_iface(f->b), .path = dest_dir};
    guint64 before = test_channel_bytes_written(f->a);
    run_pair(&sender, &receiver);
    g_assert_no_error(sender.error);
    g_assert_no_error(receiver.error);
    g_assert_true(sender.ok && receiver.ok);
    /* Progress is the stream as it went over the channel. */
    g_assert_cmpuint(sender.progress.last, ==, test_channel_bytes_written(f->a) - before);
    g_assert_cmpuint(receiver.progress.last, ==, sender.progress.last);
    if (bytes)
        *bytes = sender.progress.last;
    return g_steal_pointer(&receiver.received);
}

/* ---- tests ---- */

static json_t *parse(const char *text, GError **error)
{
    return ferry_json_parse(text, strlen(text), error);
}

static void test_header_parse(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_t) header =
        parse("{\"subvolumes\":[{\"path\":\"/\",\"snapshot\":\"snap0\",\"readonly\":true,\"uuid\":\"u1\"},"
              "{\"path\":\"/var/lib/docker\",\"snapshot\":\"snap0\",\"readonly\":false,\"uuid\":\"\"},"
              "{\"path\":\"/\",\"snapshot\":\"\",\"readonly\":false,\"uuid\":\"u3\",\"future\":1}]}",
              &error);
    g_assert_no_error(error);
    g_autoptr(GPtrArray) list = ferry_btrfs_header_parse(header, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(list->len, ==, 3);
    FerryBtrfsSubvolume *s = list->pdata[1];
    g_assert_cmpstr(s->path, ==, "/var/lib/docker");
    g_assert_cmpstr(s->snapshot, ==, "snap0");
    g_assert_false(s->readonly);
    s = list->pdata[0];
    g_assert_true(s->readonly);
    g_assert_cmpstr(s->uuid, ==, "u1");

    /* Round trip, member names as Incus marshals them. */
    g_autoptr(json_t) again = ferry_btrfs_header_to_json(list);
    g_autofree char *text = ferry_json_dump(again);
    g_assert_nonnull(
        strstr(text, "{\"path\":\"/\",\"snapshot\":\"snap0\",\"readonly\":true,\"uuid\":\"u1\"}"));

    g_autoptr(json_t) null_list = parse("{\"subvolumes\":null}", &error);
    g_autoptr(GPtrArray) empty = ferry_btrfs_header_parse(null_list, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(empty->len, ==, 0);

    const char *bad[] = {
        "{\"subvolumes\":[{\"path\":\"../x\",\"snapshot\":\"\"}]}",
        "{\"subvolumes\":[{\"path\":\"/a/../b\",\"snapshot\":\"\"}]}",
        "{\"subvolumes\":[{\"path\":\"/a//b\",\"snapshot\":\"\"}]}",
        "{\"subvolumes\":[{\"path\":\"/\",\"snapshot\":\"a/b\"}]}",
        "{\"subvolumes\":[{\"path\":\"/\",\"snapshot\":\"..\"}]}",
        "{\"subvolumes\":[{\"snapshot\":\"s\"}]}",
        "{\"subvolumes\":[{\"path\":\"/\",\"readonly\":\"yes\"}]}",
        "{\"subvolumes\":{}}",
        "[]",
    };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) parse_error = NULL;
        g_autoptr(json_t) value = parse(bad[i], &parse_error);
        g_assert_no_error(parse_error);
        g_autoptr(GPtrArray) none = ferry_btrfs_header_parse(value, &parse_error);
        g_assert_null(none);
        g_assert_error(parse_error, FERRY_ERROR, FERRY_ERROR_INVALID);
    }

    /* The sink's order follows the negotiated snapshot list; unrequested snapshots are skipped. */
    const char *wanted[] = {"snap0", NULL};
    g_autoptr(GPtrArray) selected = ferry_btrfs_header_select(list, wanted);
    g_assert_cmpuint(selected->len, ==, 3);
    g_assert_true(selected->pdata[0] == list->pdata[0] && selected->pdata[1] == list->pdata[1] &&
                  selected->pdata[2] == list->pdata[2]);
    g_autoptr(GPtrArray) volume_only = ferry_btrfs_header_select(list, NULL);
    g_assert_cmpuint(volume_only->len, ==, 1);
    g_assert_true(volume_only->pdata[0] == list->pdata[2]);

    const char *names[] = {"snap0", "snap1", NULL};
    g_autoptr(GPtrArray) defaults = ferry_btrfs_header_default(names);
    g_assert_cmpuint(defaults->len, ==, 3);
    s = defaults->pdata[1];
    g_assert_cmpstr(s->snapshot, ==, "snap1");
    g_assert_cmpstr(s->path, ==, "/");
    g_assert_true(s->readonly);
    s = defaults->pdata[2];
    g_assert_cmpstr(s->snapshot, ==, "");
    g_assert_false(s->readonly);
}

/* One full stream: every kind of file arrives intact; the result is read-only with the source's UUID as its
 * received UUID; nothing is left in staging. */
static void test_send_receive(Fixture *f, gconstpointer unused)
{
    if (skip_if_needed())
        return;
    g_autofree char *vol = path_in(f->src, "vol");
    g_autofree char *snap = path_in(f->src, "snap");
    make_subvolume(vol);
    build_tree(vol);
    snapshot_ro(vol, snap);

    guint64 bytes = 0;
    g_autofree char *received = transfer_one(f, snap, NULL, f->dst, &bytes);
    g_autofree char *expected = path_in(f->dst, "snap");
    g_assert_cmpstr(received, ==, expected);
    assert_same_tree(snap, received);
    assert_no_staging(f->dst);

    struct stat sparse = stat_of(received, "sparse");
    g_assert_cmpint(sparse.st_size, ==, 20 * MIB);
    g_assert_cmpint(sparse.st_blocks * 512, <, 1 * MIB);
    struct stat ha = stat_of(received, "hard_a"), hb = stat_of(received, "dir/hard_b");
    g_assert_cmpuint(ha.st_ino, ==, hb.st_ino);
    g_assert_cmpuint(ha.st_nlink, ==, 2);
    g_assert_true(S_ISLNK(stat_of(received, "link_etc").st_mode));
    g_assert_cmpuint(stat_of(received, "suid").st_mode & 07777, ==, 04755);

    g_assert_true(is_readonly(received));
    g_autofree char *src_uuid = uuid_of(snap, FALSE);
    g_autofree char *got = uuid_of(received, TRUE);
    g_assert_cmpstr(got, ==, src_uuid);
    g_assert_cmpuint(bytes, >, 4 * MIB);
    g_assert_cmpuint(bytes, <, 8 * MIB); /* the 20 MiB sparse file's holes do not travel */

    /* The same name again: 409, and the second copy does not stay. */
    Side sender = {.job = SEND_ONE, .channel = test_channel_iface(f->a), .path = snap};
    Side receiver = {.job = RECEIVE_ONE, .channel = test_channel_iface(f->b), .path = f->dst};
    guint before = count_subvolumes();
    run_pair(&sender, &receiver);
    g_assert_no_error(sender.error);
    g_assert_error(receiver.error, FERRY_ERROR, FERRY_ERROR_CONFLICT);
    g_assert_cmpuint(count_subvolumes(), ==, before);
    assert_no_staging(f->dst);
    side_clear(&sender);
    side_clear(&receiver);
}

/* A second snapshot sent against the first: only the delta moves, and the receiver finds the parent by its
 * received UUID. */
static void test_incremental(Fixture *f, gconstpointer unused)
{
    if (skip_if_needed())
        return;
    g_autofree char *vol = path_in(f->src, "vol");
    g_autofree char *snap1 = path_in(f->src, "snap1");
    g_autofree char *snap2 = path_in(f->src, "snap2");
    make_subvolume(vol);
    write_random(vol, "big", 8 * MIB);
    write_file(vol, "small", "version 1\n", 10);
    snapshot_ro(vol, snap1);
    write_file(vol, "small", "version 2!\n", 11);
    write_file(vol, "new", "new file\n", 9);
    g_autofree char *big = path_in(vol, "big");
    int fd = open(big, O_WRONLY | O_CLOEXEC);
    g_assert_cmpint(pwrite(fd, "CHANGED!", 8, 4 * MIB), ==, 8);
    close(fd);
    snapshot_ro(vol, snap2);

    guint64 full = 0, delta = 0;
    g_autofree char *r1 = transfer_one(f, snap1, NULL, f->dst, &full);
    g_autofree char *r2 = transfer_one(f, snap2, snap1, f->dst, &delta);
    g_test_message("full %" G_GUINT64_FORMAT " bytes, incremental %" G_GUINT64_FORMAT, full, delta);
    g_assert_cmpuint(full, >, 8 * MIB);
    g_assert_cmpuint(delta, <, 256 * 1024);
    assert_same_tree(snap1, r1);
    assert_same_tree(snap2, r2);
    assert_no_staging(f->dst);
}

/* The destination is not on btrfs: the receiver fails at once, the sender fails instead of streaming into
 * nothing, and no subvolume or staging directory stays anywhere. */
static void test_receiver_not_btrfs(Fixture *f, gconstpointer unused)
{
    if (skip_if_needed())
        return;
    g_autofree char *vol = path_in(f->src, "vol");
    g_autofree char *snap = path_in(f->src, "snap");
    make_subvolume(vol);
    write_random(vol, "big", 16 * MIB);
    snapshot_ro(vol, snap);
    guint before = count_subvolumes();

    Side sender = {.job = SEND_ONE, .channel = test_channel_iface(f->a), .path = snap};
    Side receiver = {.job = RECEIVE_ONE, .channel = test_channel_iface(f->b), .path = tmpfs_mnt};
    gint64 start = g_get_monotonic_time();
    run_pair(&sender, &receiver);
    g_assert_cmpint(g_get_monotonic_time() - start, <, 5 * G_USEC_PER_SEC);
    g_assert_false(sender.ok);
    g_assert_false(receiver.ok);
    g_test_message("sender: %s", sender.error->message);
    g_test_message("receiver: %s", receiver.error->message);
    g_assert_error(receiver.error, FERRY_ERROR, FERRY_ERROR_INTERNAL);
    g_assert_true(g_str_has_prefix(receiver.error->message, "Btrfs receive failed: "));
    g_assert_nonnull(strstr(receiver.error->message, "is not on a btrfs filesystem"));
    g_assert_true(
        g_str_has_prefix(sender.error->message, "Btrfs send failed: Failed to send to the migration"));
    g_assert_error(sender.error, FERRY_ERROR,
                   FERRY_ERROR_UNAVAILABLE); /* the receiver's account is the one */
    g_assert_cmpuint(count_subvolumes(), ==, before);
    g_autoptr(GDir) dir = g_dir_open(tmpfs_mnt, 0, NULL);
    g_assert_null(g_dir_read_name(dir));
    side_clear(&sender);
    side_clear(&receiver);
}

/* A stream of our own making: cut short, garbage, empty, or with data after the end. The receiver refuses
 * each and deletes what btrfs had started. */
static void run_bad_stream(Fixture *f, GBytes *raw, int code, const char *expected)
{
    guint before = count_subvolumes();
    Side sender = {.job = SEND_RAW, .channel = test_channel_iface(f->a), .raw = raw};
    Side receiver = {.job = RECEIVE_ONE, .channel = test_channel_iface(f->b), .path = f->dst};
    run_pair(&sender, &receiver);
    g_assert_false(receiver.ok);
    g_test_message("receiver: %s", receiver.error->message);
    g_assert_error(receiver.error, FERRY_ERROR, code);
    g_assert_nonnull(strstr(receiver.error->message, expected));
    g_assert_cmpuint(count_subvolumes(), ==, before);
    g_autoptr(GDir) dir = g_dir_open(f->dst, 0, NULL);
    g_assert_null(g_dir_read_name(dir));
    side_clear(&sender);
    side_clear(&receiver);
    /* Each run aborted the channel: the next one needs a fresh pair. */
    test_channel_free(f->a);
    test_channel_free(f->b);
    test_channel_pair(&f->a, &f->b);
}

static void test_bad_streams(Fixture *f, gconstpointer unused)
{
    if (skip_if_needed())
        return;
    g_autofree char *vol = path_in(f->src, "vol");
    g_autofree char *snap = path_in(f->src, "snap");
    make_subvolume(vol);
    write_random(vol, "data", 1 * MIB);
    write_file(vol, "small", "x\n", 2);
    snapshot_ro(vol, snap);
    g_autofree char *stream_file = path_in(f->dir, "stream");
    const char *argv[] = {"btrfs", "send", "-q", "-f", stream_file, snap, NULL};
    g_autoptr(GError) error = NULL;
    run(argv, &error);
    g_assert_no_error(error);
    g_autofree char *stream = NULL;
    gsize len = 0;
    g_file_get_contents(stream_file, &stream, &len, &error);
    g_assert_no_error(error);
    g_assert_no_errno(unlink(stream_file));
    g_assert_cmpuint(len, >, 1 * MIB);

    /* Find the last command (the end command) to cut exactly at a command boundary. */
    gsize off = 17, last = 0;
    while (off < len) {
        last = off;
        guint32 payload = (guint8)stream[off] | ((guint8)stream[off + 1] << 8) |
                          ((guint8)stream[off + 2] << 16) | ((guint32)(guint8)stream[off + 3] << 24);
        off += 10 + payload;
    }
    g_assert_cmpuint(off, ==, len);
    g_assert_cmpuint((guint8)stream[last + 4], ==, 21);

    g_autoptr(GBytes) cut_at_boundary = g_bytes_new(stream, last);
    run_bad_stream(f, cut_at_boundary, FERRY_ERROR_UNAVAILABLE, "");
    g_autoptr(GBytes) cut_midway = g_bytes_new(stream, len / 2);
    run_bad_stream(f, cut_midway, FERRY_ERROR_UNAVAILABLE, "");
    g_autoptr(GBytes) garbage = g_bytes_new_static("this is not a btrfs stream at all, not even close", 49);
    run_bad_stream(f, garbage, FERRY_ERROR_INTERNAL, "");
    g_autoptr(GBytes) empty = g_bytes_new_static("", 0);
    run_bad_stream(f, empty, FERRY_ERROR_UNAVAILABLE, "");
    g_autofree char *longer = g_malloc(len + 100);
    memcpy(longer, stream, len);
    memset(longer + len, 'x', 100);
    g_autoptr(GBytes) trailing = g_bytes_new(longer, len + 100);
    run_bad_stream(f, trailing, FERRY_ERROR_INTERNAL, "Data follows the end of the btrfs stream");

    /* And the intact stream, through the same path, is accepted. */
    g_autoptr(GBytes) whole = g_bytes_new(stream, len);
    Side sender = {.job = SEND_RAW, .channel = test_channel_iface(f->a), .raw = whole};
    Side receiver = {.job = RECEIVE_ONE, .channel = test_channel_iface(f->b), .path = f->dst};
    run_pair(&sender, &receiver);
    g_assert_no_error(receiver.error);
    assert_same_tree(snap, receiver.received);
    side_clear(&sender);
    side_clear(&receiver);
}

/* Sending something that is not a read-only subvolume fails on the sender, which aborts the channel: the
 * receiver fails too and keeps nothing. */
static void test_sender_fails(Fixture *f, gconstpointer unused)
{
    if (skip_if_needed())
        return;
    g_autofree char *vol = path_in(f->src, "vol");
    make_subvolume(vol);
    write_file(vol, "file", "x\n", 2);
    guint before = count_subvolumes();
    Side sender = {.job = SEND_ONE, .channel = test_channel_iface(f->a), .path = vol};
    Side receiver = {.job = RECEIVE_ONE, .channel = test_channel_iface(f->b), .path = f->dst};
    run_pair(&sender, &receiver);
    g_assert_false(sender.ok);
    g_assert_false(receiver.ok);
    g_test_message("sender: %s", sender.error->message);
    g_test_message("receiver: %s", receiver.error->message);
    g_assert_true(g_str_has_prefix(sender.error->message, "Btrfs send failed: "));
    g_assert_nonnull(strstr(sender.error->message, "read-only"));
    g_assert_error(sender.error, FERRY_ERROR, FERRY_ERROR_INTERNAL);
    g_assert_error(receiver.error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE);
    g_assert_null(strstr(receiver.error->message, "killed by signal"));
    g_assert_cmpuint(count_subvolumes(), ==, before);
    assert_no_staging(f->dst);
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

static pid_t find_btrfs(const char *verb)
{
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    const char *name;
    while ((name = g_dir_read_name(proc)) != NULL) {
        if (!g_ascii_isdigit(name[0]) || process_ppid(name) != getpid())
            continue;
        g_autofree char *path = g_strdup_printf("/proc/%s/cmdline", name);
        g_autofree char *cmdline = NULL;
        gsize len = 0;
        if (!g_file_get_contents(path, &cmdline, &len, NULL) || len == 0)
            continue;
        const char *arg1 = cmdline + strlen(cmdline) + 1;
        if ((gsize)(arg1 - cmdline) < len && strcmp(arg1, verb) == 0)
            return (pid_t)atoi(name);
    }
    return -1;
}

typedef struct {
    CancelAt cancel;
    pid_t send_pid, receive_pid;
} CancelProbe;

static void cancel_and_watch(gpointer data)
{
    CancelProbe *probe = data;
    /* Both processes are running right now, mid-stream. */
    probe->send_pid = find_btrfs("send");
    probe->receive_pid = find_btrfs("receive");
    cancel_now(&probe->cancel);
}

/* Cancelling one side mid-stream kills its btrfs at once; the channel abort makes the other side fail (and
 * kill its btrfs) at once; no subvolume, staging directory or process stays. */
static void run_cancel(Fixture *f, gboolean cancel_sender)
{
    g_autofree char *vol = path_in(f->src, "vol");
    g_autofree char *snap = path_in(f->src, "snap");
    make_subvolume(vol);
    write_random(vol, "large", 64 * MIB);
    snapshot_ro(vol, snap);
    guint before = count_subvolumes();

    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    CancelProbe probe = {.cancel = {.cancellable = cancellable}};
    Side sender = {.job = SEND_ONE, .channel = test_channel_iface(f->a), .path = snap};
    Side receiver = {.job = RECEIVE_ONE, .channel = test_channel_iface(f->b), .path = f->dst};
    Side *self = cancel_sender ? &sender : &receiver;
    Side *peer = cancel_sender ? &receiver : &sender;
    self->cancellable = cancellable;
    self->progress.threshold = 2 * MIB;
    self->progress.action = cancel_and_watch;
    self->progress.action_data = &probe;
    run_pair(&sender, &receiver);

    g_assert_true(self->progress.fired);
    g_assert_cmpint(probe.send_pid, >, 0);
    g_assert_cmpint(probe.receive_pid, >, 0);
    g_test_message("cancelled side: %s; peer: %s", self->error->message, peer->error->message);
    g_assert_error(self->error, FERRY_ERROR, FERRY_ERROR_CANCELLED);
    g_assert_false(peer->ok);
    g_assert_error(peer->error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE);
    g_assert_null(strstr(peer->error->message, "killed by signal"));
    g_assert_cmpint(self->finished_at - probe.cancel.at, <, 2 * G_USEC_PER_SEC);
    g_assert_cmpint(peer->finished_at - probe.cancel.at, <, 2 * G_USEC_PER_SEC);
    /* Both btrfs processes are gone (reaped by the calls), not merely orphaned. */
    g_assert_cmpint(kill(probe.send_pid, 0), <, 0);
    g_assert_cmpint(kill(probe.receive_pid, 0), <, 0);
    g_assert_cmpuint(sender.progress.last, <, 64 * MIB);
    g_assert_cmpuint(count_subvolumes(), ==, before);
    assert_no_staging(f->dst);
    side_clear(&sender);
    side_clear(&receiver);
}

static void test_cancel_sender(Fixture *f, gconstpointer unused)
{
    if (!skip_if_needed())
        run_cancel(f, TRUE);
}

static void test_cancel_receiver(Fixture *f, gconstpointer unused)
{
    if (!skip_if_needed())
        run_cancel(f, FALSE);
}

static void test_cancelled_before(Fixture *f, gconstpointer unused)
{
    if (skip_if_needed())
        return;
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_cancellable_cancel(cancellable);
    FerryByteChannel channel = test_channel_iface(f->b);
    g_autoptr(GError) error = NULL;
    g_assert_null(ferry_btrfs_receive_subvolume(f->dst, &channel, NULL, NULL, cancellable, &error));
    g_assert_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED);
    assert_no_staging(f->dst);
}

/* A container volume with nested subvolumes and two snapshots, the whole Incus sequence: header, streams
 * (snapshots oldest first, each root then nested, each incremental on the previous one; then the volume from
 * its temporary snapshot), placement. */
static void test_volume(Fixture *f, gconstpointer unused)
{
    if (skip_if_needed())
        return;
    g_autofree char *containers = path_in(f->src, "containers");
    g_autofree char *snapshots = path_in(f->src, "containers-snapshots/default_c1");
    g_assert_no_errno(g_mkdir_with_parents(containers, 0711));
    g_assert_no_errno(g_mkdir_with_parents(snapshots, 0700));
    g_autofree char *vol = path_in(containers, "default_c1");
    make_subvolume(vol);
    build_tree(vol);
    g_autofree char *nested = path_in(vol, "dir/nested");
    g_autofree char *deeper = path_in(vol, "dir/nested/deeper");
    make_subvolume(nested);
    write_random(nested, "blob", 2 * MIB);
    make_subvolume(deeper);
    write_file(deeper, "leaf", "leaf\n", 5);
    set_mtime(vol, "dir", 1600000000, 1);
    set_mtime(vol, "dir/nested", 1600000000, 2);
    set_mtime(vol, "dir/nested/deeper", 1600000000, 3);
    const char *nested_paths[] = {"dir/nested", "dir/nested/deeper", NULL};
    g_autofree char *snap0 = path_in(snapshots, "snap0");
    g_autofree char *snap1 = path_in(snapshots, "snap1");
    snapshot_recursive_ro(vol, snap0, nested_paths);
    write_file(vol, "file1", "changed after snap0\n", 20);
    write_file(nested, "more", "more\n", 5);
    snapshot_recursive_ro(vol, snap1, nested_paths);
    write_file(vol, "after", "after snap1\n", 12);
    set_mtime(vol, "", 1600000000, 4);
    set_mtime(vol, "dir/nested", 1600000000, 5);

    /* The header, as the source builds it. */
    const char *snapshot_paths[] = {snap0, snap1, NULL};
    g_autoptr(GError) error = NULL;
    g_autoptr(json_t) header = ferry_btrfs_migration_header(vol, snapshot_paths, &error);
    g_assert_no_error(error);
    g_autofree char *header_text = ferry_json_dump(header);
    g_test_message("header: %s", header_text);
    g_autoptr(GPtrArray) list = ferry_btrfs_header_parse(header, &error);
    g_assert_no_error(error);
    const struct {
        const char *path, *snapshot;
        gboolean readonly;
        const char *on_disk;
    } expected[] = {
        {"/", "snap0", TRUE, snap0},
        {"/dir/nested", "snap0", TRUE, NULL},
        {"/dir/nested/deeper", "snap0", TRUE, NULL},
        {"/", "snap1", TRUE, snap1},
        {"/dir/nested", "snap1", TRUE, NULL},
        {"/dir/nested/deeper", "snap1", TRUE, NULL},
        {"/", "", FALSE, vol},
        {"/dir/nested", "", FALSE, nested},
        {"/dir/nested/deeper", "", FALSE, deeper},
    };
    g_assert_cmpuint(list->len, ==, G_N_ELEMENTS(expected));
    for (guint i = 0; i < list->len; i++) {
        const FerryBtrfsSubvolume *s = list->pdata[i];
        g_assert_cmpstr(s->path, ==, expected[i].path);
        g_assert_cmpstr(s->snapshot, ==, expected[i].snapshot);
        g_assert_cmpint(s->readonly, ==, expected[i].readonly);
        g_assert_cmpuint(strlen(s->uuid), ==, 36);
        if (expected[i].on_disk) {
            g_autofree char *uuid = uuid_of(expected[i].on_disk, FALSE);
            g_assert_cmpstr(s->uuid, ==, uuid);
        }
    }

    /* Without the subvolumes feature the source refuses rather than sending an incomplete volume. */
    {
        Side sender = {.job = SEND_VOLUME,
                       .channel = test_channel_iface(f->a),
                       .path = vol,
                       .snapshots = snapshot_paths,
                       .subvolumes = list};
        side_thread(&sender);
        g_assert_false(sender.ok);
        g_assert_cmpstr(sender.error->message, ==,
                        "Subvolumes detected in source but target does not support receiving subvolumes");
        side_clear(&sender);
        test_channel_free(f->a);
        test_channel_free(f->b);
        test_channel_pair(&f->a, &f->b);
    }

    guint before = count_subvolumes();
    g_autofree char *dst_containers = path_in(f->dst, "containers");
    g_autofree char *dst_snapshots_top = path_in(f->dst, "containers-snapshots");
    g_assert_no_errno(g_mkdir_with_parents(dst_containers, 0711));
    g_assert_no_errno(g_mkdir_with_parents(dst_snapshots_top, 0700));
    g_autofree char *dst_vol = path_in(dst_containers, "default_c1");
    g_autofree char *dst_snapshots = path_in(dst_snapshots_top, "default_c1");
    Side sender = {.job = SEND_VOLUME,
                   .channel = test_channel_iface(f->a),
                   .path = vol,
                   .snapshots = snapshot_paths,
                   .subvolumes = list,
                   .options = {.subvolumes = TRUE}};
    const char *snapshot_names[] = {"snap0", "snap1", NULL};
    g_autoptr(GPtrArray) to_receive = ferry_btrfs_header_select(list, snapshot_names);
    Side receiver = {.job = RECEIVE_VOLUME,
                     .channel = test_channel_iface(f->b),
                     .subvolumes = to_receive,
                     .work_parent = dst_containers,
                     .volume_target = dst_vol,
                     .snapshots_target = dst_snapshots};
    run_pair(&sender, &receiver);
    g_assert_no_error(sender.error);
    g_assert_no_error(receiver.error);
    g_test_message("volume with snapshots: %" G_GUINT64_FORMAT " bytes", sender.progress.last);
    g_assert_cmpuint(sender.progress.last, ==, receiver.progress.last);
    g_assert_cmpuint(sender.progress.last, ==, test_channel_bytes_written(f->a));
    /* Incremental after the first snapshot: the 4 MiB "big" and 2 MiB "blob" travel once. */
    g_assert_cmpuint(sender.progress.last, >, 6 * MIB);
    g_assert_cmpuint(sender.progress.last, <, 9 * MIB);
    g_assert_cmpuint(count_subvolumes(), ==, before + 9);
    assert_no_staging(containers);
    assert_no_staging(dst_containers);

    /* Placed: trees equal (nested contents included), flags as the header says, received UUIDs kept. */
    g_autofree char *dst_snap0 = path_in(dst_snapshots, "snap0");
    g_autofree char *dst_snap1 = path_in(dst_snapshots, "snap1");
    assert_same_tree(snap0, dst_snap0);
    assert_same_tree(snap1, dst_snap1);
    assert_same_tree(vol, dst_vol);
    const char *roots[][2] = {{snap0, dst_snap0}, {snap1, dst_snap1}};
    for (gsize i = 0; i < G_N_ELEMENTS(roots); i++) {
        for (gsize j = 0; j < 3; j++) {
            const char *rel = j == 0 ? "" : nested_paths[j - 1];
            g_autofree char *s = path_in(roots[i][0], rel);
            g_autofree char *d = path_in(roots[i][1], rel);
            g_assert_cmpuint(stat_of(d, "").st_ino, ==, 256);
            g_assert_true(is_readonly(d));
            g_autofree char *su = uuid_of(s, FALSE);
            g_autofree char *dr = uuid_of(d, TRUE);
            g_assert_cmpstr(su, ==, dr);
        }
    }
    g_assert_false(is_readonly(dst_vol));
    g_autofree char *dst_nested = path_in(dst_vol, "dir/nested");
    g_autofree char *dst_deeper = path_in(dst_vol, "dir/nested/deeper");
    g_assert_false(is_readonly(dst_nested));
    g_assert_false(is_readonly(dst_deeper));
    g_assert_cmpuint(stat_of(dst_deeper, "").st_ino, ==, 256);
    write_file(dst_vol, "writable", "yes\n", 4);
    write_file(dst_deeper, "writable", "yes\n", 4);
    /* The source's own subvolumes were left as they were. */
    g_assert_false(is_readonly(vol));
    g_assert_false(is_readonly(nested));

    /* Placement kept what incremental streams need: a later snapshot goes against the placed snap1. */
    g_autofree char *snap2 = path_in(snapshots, "snap2");
    snapshot_ro(vol, snap2);
    guint64 delta = 0;
    g_autofree char *r2 = transfer_one(f, snap2, snap1, dst_snapshots, &delta);
    g_assert_cmpuint(delta, <, 256 * 1024);
    assert_same_tree(snap2, r2);
}

/* A failing commit (the volume's target exists) leaves the target alone and, once the receiver is freed, no
 * received subvolume anywhere. */
static void test_commit_conflict(Fixture *f, gconstpointer unused)
{
    if (skip_if_needed())
        return;
    g_autofree char *vol = path_in(f->src, "vol");
    g_autofree char *snap = path_in(f->src, "snap0");
    make_subvolume(vol);
    write_file(vol, "file", "x\n", 2);
    snapshot_ro(vol, snap);
    const char *snapshot_paths[] = {snap, NULL};
    guint before = count_subvolumes();
    g_autofree char *taken = path_in(f->dst, "vol");
    g_assert_no_errno(mkdir(taken, 0700));
    g_autofree char *snapdir = path_in(f->dst, "snaps");

    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) list = ferry_btrfs_volume_subvolumes(vol, snapshot_paths, &error);
    g_assert_no_error(error);
    Side sender = {.job = SEND_VOLUME,
                   .channel = test_channel_iface(f->a),
                   .path = vol,
                   .snapshots = snapshot_paths,
                   .subvolumes = list};
    Side receiver = {.job = RECEIVE_VOLUME,
                     .channel = test_channel_iface(f->b),
                     .subvolumes = list,
                     .work_parent = f->dst,
                     .volume_target = taken,
                     .snapshots_target = snapdir};
    run_pair(&sender, &receiver);
    g_assert_no_error(sender.error);
    g_assert_error(receiver.error, FERRY_ERROR, FERRY_ERROR_CONFLICT);
    g_test_message("receiver: %s", receiver.error->message);
    g_assert_cmpuint(count_subvolumes(), ==, before);
    g_assert_false(exists(snapdir));
    g_assert_true(exists(taken));
    assert_no_staging(f->dst);
    assert_no_staging(f->src);
    side_clear(&sender);
    side_clear(&receiver);
}

/* The temporary read-only snapshot for RSYNC sends: nested subvolumes included, all read-only, removed. */
static void test_temporary_snapshot(Fixture *f, gconstpointer unused)
{
    if (skip_if_needed())
        return;
    g_autofree char *vol = path_in(f->src, "vol");
    make_subvolume(vol);
    write_file(vol, "file", "x\n", 2);
    g_autofree char *nested = path_in(vol, "nested");
    make_subvolume(nested);
    write_file(nested, "inner", "y\n", 2);
    guint before = count_subvolumes();
    g_autoptr(GError) error = NULL;
    g_autofree char *snap = ferry_btrfs_temporary_snapshot(vol, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(count_subvolumes(), ==, before + 2);
    g_assert_true(is_readonly(snap));
    g_autofree char *snap_nested = path_in(snap, "nested");
    g_assert_true(is_readonly(snap_nested));
    g_autofree char *inner = path_in(snap_nested, "inner");
    g_assert_true(exists(inner));
    g_assert_true(ferry_btrfs_temporary_snapshot_delete(snap, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(count_subvolumes(), ==, before);
    assert_no_staging(f->src);
    g_assert_false(is_readonly(vol));
}

int main(int argc, char **argv)
{
    /* Before any thread exists: unshare(CLONE_NEWNS) refuses a multithreaded process. */
    env_skip = setup_environment();
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/migration/btrfs/header-parse", test_header_parse);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
    ADD("/migration/btrfs/send-receive", test_send_receive);
    ADD("/migration/btrfs/incremental", test_incremental);
    ADD("/migration/btrfs/receiver-not-btrfs", test_receiver_not_btrfs);
    ADD("/migration/btrfs/bad-streams", test_bad_streams);
    ADD("/migration/btrfs/sender-fails", test_sender_fails);
    ADD("/migration/btrfs/cancel-sender", test_cancel_sender);
    ADD("/migration/btrfs/cancel-receiver", test_cancel_receiver);
    ADD("/migration/btrfs/cancelled-before", test_cancelled_before);
    ADD("/migration/btrfs/volume", test_volume);
    ADD("/migration/btrfs/commit-conflict", test_commit_conflict);
    ADD("/migration/btrfs/temporary-snapshot", test_temporary_snapshot);
#undef ADD
    int rc = g_test_run();
    remove_mounts();
    g_free(env_skip);
    return rc;
}
