/* The receiving side of a native pass (phases in native.h). Everything the sender names is checked and
 * resolved beneath the receiving directory without following a symlink; new content is always built as a new
 * inode, so a tree sharing inodes with ours (a refresh's hard-linked staging copy) is never changed. */
#include "native.h"

#include "error.h"
#include "native_protocol.h"
#include "tree.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define BUFFER_SIZE (1024 * 1024)
#define PROGRESS_STEP (4 * 1024 * 1024)
/* Prefix of the names new entries are built under before they replace an existing one. */
#define TEMP_PREFIX ".ferry-new-"

typedef struct {
    char *relpath;
    FerryNativeMeta meta; /* times only */
} DirTimes;

static void dir_times_free(gpointer data)
{
    DirTimes *times = data;
    g_free(times->relpath);
    g_free(times);
}

typedef struct {
    const FerryNativeOptions *options;
    GCancellable *cancellable;
    int root_fd;  /* the receiving directory (phase D) */
    int basis_fd; /* what we have (phases A and C): root_fd, or the tree root_fd is a copy of */
    /* The directory of the last entry: entries come in walk order, so most share it. */
    char *parent_path;
    int parent_fd;
    GPtrArray *dir_times; /* DirTimes: directory times are set last (their entries change them) */
    guint8 *buffer;
    guint64 data_bytes, reported;
    FerryNativeReader *reader;
} Receiver;

static void count_data(Receiver *receiver, gsize bytes)
{
    receiver->data_bytes += bytes;
    if (receiver->options->progress != NULL && receiver->data_bytes - receiver->reported >= PROGRESS_STEP) {
        receiver->reported = receiver->data_bytes;
        receiver->options->progress(receiver->data_bytes, receiver->options->progress_data);
    }
}

static void forget_parent(Receiver *receiver)
{
    if (receiver->parent_fd >= 0)
        close(receiver->parent_fd);
    receiver->parent_fd = -1;
    g_clear_pointer(&receiver->parent_path, g_free);
}

/* The directory holding relpath (borrowed fd) and relpath's last component. */
static int parent_of(Receiver *receiver, const char *relpath, const char **name, GError **error)
{
    g_autofree char *parent = NULL;
    *name = ferry_native_split_path(relpath, &parent);
    if (receiver->parent_fd >= 0 && g_strcmp0(parent, receiver->parent_path) == 0)
        return receiver->parent_fd;
    forget_parent(receiver);
    int fd = ferry_open_dir_beneath(receiver->root_fd, parent, error);
    if (fd < 0) {
        g_prefix_error(error, "No directory for \"%s\": ", relpath);
        return -1;
    }
    receiver->parent_fd = fd;
    receiver->parent_path = g_steal_pointer(&parent);
    return fd;
}

static gboolean fail_errno(GError **error, const char *what, const char *relpath)
{
    ferry_set_error_errno(error, errno, "Failed to %s \"%s\"", what, relpath);
    return FALSE;
}

/* A fresh name in dir_fd for building an entry that will replace another. */
static char *temp_name(void)
{
    return g_strdup_printf(TEMP_PREFIX "%08x%08x", g_random_int(), g_random_int());
}

/* Move dir_fd/temp over dir_fd/name, whatever name is now (a directory tree of another type goes first). */
static gboolean replace_entry(Receiver *receiver, int dir_fd, const char *temp, const char *name,
                              const char *relpath, GError **error)
{
    if (renameat(dir_fd, temp, dir_fd, name) == 0)
        return TRUE;
    if (errno != EISDIR && errno != ENOTEMPTY && errno != EEXIST && errno != ENOTDIR)
        return fail_errno(error, "replace", relpath);
    /* The cached parent stays: it is dir_fd itself (callers get it from parent_of), never inside the tree
     * deleted here, and dropping it would close the fd used below. */
    if (!ferry_tree_delete(dir_fd, name, error))
        return FALSE;
    if (renameat(dir_fd, temp, dir_fd, name) < 0)
        return fail_errno(error, "replace", relpath);
    return TRUE;
}

/* ---- phase A: what we have ---- */

typedef struct {
    FerryNativeWriter *writer;
    GCancellable *cancellable;
} ManifestWalk;

static gboolean on_manifest_entry(FerryTreeEvent event, int dir_fd, const char *name, const char *relpath,
                                  const struct stat *st, gboolean *descend, gpointer user_data, GError **error)
{
    ManifestWalk *walk = user_data;
    if (event == FERRY_TREE_LEAVE)
        return TRUE;
    if (g_cancellable_set_error_if_cancelled(walk->cancellable, error))
        return FALSE;
    g_auto(FerryNativeMeta) meta = {0};
    if (!ferry_native_meta_read(dir_fd, name, st, &meta, error))
        return FALSE;
    g_autofree char *link_target = NULL;
    if (S_ISLNK(st->st_mode)) {
        char target[PATH_MAX + 1];
        ssize_t n = readlinkat(dir_fd, name, target, PATH_MAX);
        if (n < 0)
            return fail_errno(error, "read the symlink", relpath);
        link_target = g_strndup(target, (gsize)n);
    }
    FerryNativeSummary summary = {0};
    ferry_native_summary_fill(&summary, st, &meta, link_target);
    ferry_native_put_u8(walk->writer, NATIVE_MANIFEST_ENTRY);
    ferry_native_put_string(walk->writer, relpath);
    ferry_native_put_summary(walk->writer, &summary);
    g_free(summary.link_target);
    const GError *failure = ferry_native_writer_error(walk->writer);
    if (failure != NULL) {
        g_propagate_error(error, g_error_copy(failure));
        return FALSE;
    }
    return TRUE;
}

static gboolean send_manifest(Receiver *receiver, FerryByteChannel *channel, GError **error)
{
    g_autoptr(FerryNativeWriter) writer =
        ferry_native_writer_new(channel, receiver->options->zstd, receiver->options->peer);
    ManifestWalk walk = {writer, receiver->cancellable};
    if (!ferry_tree_walk(receiver->basis_fd, on_manifest_entry, &walk, error))
        return FALSE;
    ferry_native_put_u8(writer, NATIVE_END);
    return ferry_native_writer_end(writer, error);
}

/* ---- phases B and C: block digests of the candidates ---- */

static GPtrArray *read_candidates(Receiver *receiver, FerryByteChannel *channel, GError **error)
{
    g_autoptr(FerryNativeReader) reader =
        ferry_native_reader_new(channel, receiver->options->zstd, receiver->options->peer, receiver->cancellable);
    g_autoptr(GPtrArray) candidates = g_ptr_array_new_with_free_func(g_free);
    for (;;) {
        guint8 kind = 0;
        char *path = NULL;
        if (!ferry_native_get_u8(reader, &kind) || kind == NATIVE_END)
            break;
        if (kind != NATIVE_CANDIDATE) {
            ferry_native_reader_fail(reader, "record '%c' among the candidates", kind);
            break;
        }
        if (!ferry_native_get_string(reader, FERRY_NATIVE_MAX_PATH, &path))
            break;
        g_ptr_array_add(candidates, path);
        if (!ferry_native_check_path(path, FALSE)) {
            ferry_native_reader_fail(reader, "the path \"%s\" among the candidates", path);
            break;
        }
    }
    if (!ferry_native_reader_end(reader, error))
        return NULL;
    return g_steal_pointer(&candidates);
}

/* Open dir_fd/name for reading only if it is a regular file: opening a device node the sender names could
 * have effects of its own. */
static int open_regular(int dir_fd, const char *name)
{
    struct stat st;
    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
        return -1;
    return openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
}

static gboolean digest_file(Receiver *receiver, FerryNativeWriter *writer, const char *relpath, GError **error)
{
    const char *name = NULL;
    int dir_fd = ferry_native_open_parent(receiver->basis_fd, relpath, &name, NULL);
    int fd = dir_fd >= 0 ? open_regular(dir_fd, name) : -1;
    if (dir_fd >= 0)
        close(dir_fd);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        /* Not a regular file here (any more): no digests, and the sender sends the whole file. */
        if (fd >= 0)
            close(fd);
        ferry_native_put_u32(writer, 0);
        ferry_native_put_u64(writer, 0);
        ferry_native_put_u64(writer, 0);
        return TRUE;
    }
    guint64 size = (guint64)st.st_size;
    guint32 block = ferry_native_block_size(size);
    guint64 count = (size + block - 1) / block;
    ferry_native_put_u32(writer, block);
    ferry_native_put_u64(writer, size);
    ferry_native_put_u64(writer, count);
    g_autofree guint8 *large = block > BUFFER_SIZE ? g_malloc(block) : NULL;
    guint8 *buffer = large != NULL ? large : receiver->buffer;
    gsize chunk = block >= BUFFER_SIZE ? block : BUFFER_SIZE - BUFFER_SIZE % block;
    gboolean ok = TRUE;
    for (guint64 offset = 0, index = 0; ok && index < count;) {
        ssize_t n = pread(fd, buffer, (size_t)MIN(chunk, size - offset), (off_t)offset);
        if (n < 0) {
            ok = fail_errno(error, "read", relpath);
            break;
        }
        if (n == 0) {
            /* Our own copy does not change under us; if it did, a patch on top of it would be wrong. */
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "\"%s\" changed while it was read", relpath);
            ok = FALSE;
            break;
        }
        for (gsize at = 0; at < (gsize)n; at += block, index++) {
            XXH128_canonical_t canonical;
            XXH128_canonicalFromHash(&canonical, XXH3_128bits(buffer + at, MIN(block, (gsize)n - at)));
            ferry_native_put(writer, &canonical, sizeof canonical);
        }
        offset += (guint64)n;
        if (g_cancellable_set_error_if_cancelled(receiver->cancellable, error))
            ok = FALSE;
    }
    close(fd);
    return ok;
}

static gboolean send_digests(Receiver *receiver, FerryByteChannel *channel, GPtrArray *candidates, GError **error)
{
    g_autoptr(FerryNativeWriter) writer =
        ferry_native_writer_new(channel, receiver->options->zstd, receiver->options->peer);
    for (guint i = 0; i < candidates->len; i++) {
        if (!digest_file(receiver, writer, candidates->pdata[i], error))
            return FALSE;
    }
    return ferry_native_writer_end(writer, error);
}

/* ---- phase D: the changes ---- */

static gboolean reader_failed(Receiver *receiver, GError **error)
{
    const GError *failure = ferry_native_reader_error(receiver->reader);
    g_propagate_error(error, g_error_copy(failure));
    return FALSE;
}

static gboolean expect_type(Receiver *receiver, const FerryNativeMeta *meta, gboolean ok, const char *relpath,
                            GError **error)
{
    if (ok)
        return TRUE;
    ferry_native_reader_fail(receiver->reader, "\"%s\" has the wrong file type (mode %o)", relpath, meta->mode);
    return reader_failed(receiver, error);
}

/* Extents of the sender's data into fd, each within size. */
static gboolean receive_extents(Receiver *receiver, int fd, guint64 size, const char *relpath, GError **error)
{
    for (;;) {
        guint64 length = 0, offset = 0;
        if (!ferry_native_get_u64(receiver->reader, &length))
            return reader_failed(receiver, error);
        if (length == 0)
            return TRUE;
        if (!ferry_native_get_u64(receiver->reader, &offset))
            return reader_failed(receiver, error);
        if (offset > size || length > size - offset) {
            ferry_native_reader_fail(receiver->reader, "data beyond the end of \"%s\"", relpath);
            return reader_failed(receiver, error);
        }
        while (length > 0) {
            gsize n = (gsize)MIN(length, BUFFER_SIZE);
            if (!ferry_native_get(receiver->reader, receiver->buffer, n))
                return reader_failed(receiver, error);
            for (gsize done = 0; done < n;) {
                ssize_t w = pwrite(fd, receiver->buffer + done, n - done, (off_t)(offset + done));
                if (w < 0)
                    return fail_errno(error, "write", relpath);
                done += (gsize)w;
            }
            count_data(receiver, n);
            offset += n;
            length -= n;
        }
    }
}

/* Copy from's data (holes stay holes, and btrfs shares the extents) into to, up to limit bytes. */
static gboolean copy_content(int from, int to, guint64 limit, const char *relpath, GError **error)
{
    guint64 position = 0;
    while (position < limit) {
        off_t data = lseek(from, (off_t)position, SEEK_DATA);
        if (data < 0 && errno == ENXIO)
            break;
        if (data < 0)
            return fail_errno(error, "read", relpath);
        off_t hole = lseek(from, data, SEEK_HOLE);
        guint64 end = hole < 0 ? limit : MIN((guint64)hole, limit);
        off_t in = data, out = data;
        while ((guint64)in < end) {
            ssize_t n = copy_file_range(from, &in, to, &out, (size_t)(end - (guint64)in), 0);
            if (n < 0)
                return fail_errno(error, "copy", relpath);
            if (n == 0)
                break;
        }
        position = end;
    }
    return TRUE;
}

/* A new regular file (F) or one patched over the current one (P), built beside it when the name is taken. */
static gboolean apply_file(Receiver *receiver, const char *relpath, const FerryNativeMeta *meta, gboolean patch,
                           GError **error)
{
    guint64 size = 0;
    if (!ferry_native_get_u64(receiver->reader, &size))
        return reader_failed(receiver, error);
    if (!expect_type(receiver, meta, S_ISREG(meta->mode), relpath, error))
        return FALSE;
    const char *name = NULL;
    int dir_fd = parent_of(receiver, relpath, &name, error);
    if (dir_fd < 0)
        return FALSE;
    g_autofree char *temp = NULL;
    int fd = patch ? -1 : openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && !patch && errno != EEXIST)
        return fail_errno(error, "create", relpath);
    if (fd < 0) {
        temp = temp_name();
        fd = openat(dir_fd, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
            return fail_errno(error, "create", relpath);
    }
    gboolean ok = TRUE;
    if (patch) {
        int old = open_regular(dir_fd, name);
        struct stat st;
        if (old < 0 || fstat(old, &st) < 0 || !S_ISREG(st.st_mode)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "No file \"%s\" to patch", relpath);
            ok = FALSE;
        } else {
            ok = copy_content(old, fd, MIN((guint64)st.st_size, size), relpath, error);
        }
        if (old >= 0)
            close(old);
    }
    ok = ok && receive_extents(receiver, fd, size, relpath, error);
    /* Only when a hole ends the file: on ext4 a truncate to the size a file already has is no cheaper than a
     * real one, and most files are written to their end. */
    struct stat written;
    if (ok && fstat(fd, &written) < 0)
        ok = fail_errno(error, "resize", relpath);
    if (ok && (guint64)written.st_size != size && ftruncate(fd, (off_t)size) < 0)
        ok = fail_errno(error, "resize", relpath);
    ok = ok && ferry_native_meta_apply(fd, -1, relpath, meta, FALSE, error);
    close(fd);
    if (temp != NULL) {
        ok = ok && replace_entry(receiver, dir_fd, temp, name, relpath, error);
        if (!ok)
            unlinkat(dir_fd, temp, 0);
    }
    return ok;
}

static gboolean apply_dir(Receiver *receiver, const char *relpath, const FerryNativeMeta *meta, GError **error)
{
    if (!expect_type(receiver, meta, S_ISDIR(meta->mode), relpath, error))
        return FALSE;
    int fd = -1;
    if (relpath[0] == '\0') {
        fd = dup(receiver->root_fd);
    } else {
        const char *name = NULL;
        int dir_fd = parent_of(receiver, relpath, &name, error);
        if (dir_fd < 0)
            return FALSE;
        struct stat st;
        if (mkdirat(dir_fd, name, 0700) < 0) {
            if (errno != EEXIST)
                return fail_errno(error, "create the directory", relpath);
            if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode)) {
                if (unlinkat(dir_fd, name, 0) < 0 || mkdirat(dir_fd, name, 0700) < 0)
                    return fail_errno(error, "replace with a directory", relpath);
            }
        }
        fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0)
        return fail_errno(error, "open the directory", relpath);
    gboolean ok = ferry_native_meta_apply(fd, -1, relpath, meta, TRUE, error);
    close(fd);
    if (ok) {
        DirTimes *times = g_new0(DirTimes, 1);
        times->relpath = g_strdup(relpath);
        times->meta.atime_sec = meta->atime_sec;
        times->meta.atime_nsec = meta->atime_nsec;
        times->meta.mtime_sec = meta->mtime_sec;
        times->meta.mtime_nsec = meta->mtime_nsec;
        g_ptr_array_add(receiver->dir_times, times);
    }
    return ok;
}

/* A symlink or a node, made under a temporary name when the name is taken. make() creates dir_fd/name. */
typedef int (*MakeFunc)(int dir_fd, const char *name, const FerryNativeMeta *meta, const char *extra);

static int make_symlink(int dir_fd, const char *name, const FerryNativeMeta *meta, const char *target)
{
    return symlinkat(target, dir_fd, name);
}

static int make_node(int dir_fd, const char *name, const FerryNativeMeta *meta, const char *unused)
{
    return mknodat(dir_fd, name, meta->mode & (S_IFMT | 07777), (dev_t)meta->rdev);
}

static gboolean apply_special(Receiver *receiver, const char *relpath, const FerryNativeMeta *meta, MakeFunc make,
                              const char *extra, GError **error)
{
    const char *name = NULL;
    int dir_fd = parent_of(receiver, relpath, &name, error);
    if (dir_fd < 0)
        return FALSE;
    g_autofree char *temp = NULL;
    if (make(dir_fd, name, meta, extra) < 0) {
        if (errno != EEXIST)
            return fail_errno(error, "create", relpath);
        temp = temp_name();
        if (make(dir_fd, temp, meta, extra) < 0)
            return fail_errno(error, "create", relpath);
    }
    gboolean ok = ferry_native_meta_apply(-1, dir_fd, temp != NULL ? temp : name, meta, FALSE, error);
    if (temp != NULL) {
        ok = ok && replace_entry(receiver, dir_fd, temp, name, relpath, error);
        if (!ok)
            unlinkat(dir_fd, temp, 0);
    }
    return ok;
}

static gboolean apply_hardlink(Receiver *receiver, const char *relpath, GError **error)
{
    g_autofree char *existing = NULL;
    if (!ferry_native_get_string(receiver->reader, FERRY_NATIVE_MAX_PATH, &existing))
        return reader_failed(receiver, error);
    if (!ferry_native_check_path(existing, FALSE)) {
        ferry_native_reader_fail(receiver->reader, "a hard link to \"%s\"", existing);
        return reader_failed(receiver, error);
    }
    const char *existing_name = NULL;
    int from_fd = ferry_native_open_parent(receiver->root_fd, existing, &existing_name, error);
    if (from_fd < 0)
        return FALSE;
    struct stat st;
    gboolean ok = TRUE;
    if (fstatat(from_fd, existing_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Bad migration stream: \"%s\" links to \"%s\", "
                    "which is not a file here", relpath, existing);
        ok = FALSE;
    }
    const char *name = NULL;
    int dir_fd = ok ? parent_of(receiver, relpath, &name, error) : -1;
    ok = ok && dir_fd >= 0;
    g_autofree char *temp = NULL;
    /* Already a name of that inode (a refresh links every later name again): nothing to do, and rename()
     * between two names of one inode would succeed without removing the temporary name. */
    struct stat current;
    if (ok && fstatat(dir_fd, name, &current, AT_SYMLINK_NOFOLLOW) == 0 && current.st_dev == st.st_dev &&
        current.st_ino == st.st_ino) {
        close(from_fd);
        return TRUE;
    }
    if (ok && linkat(from_fd, existing_name, dir_fd, name, 0) < 0) {
        if (errno != EEXIST) {
            ok = fail_errno(error, "link", relpath);
        } else {
            temp = temp_name();
            if (linkat(from_fd, existing_name, dir_fd, temp, 0) < 0)
                ok = fail_errno(error, "link", relpath);
            else if (!replace_entry(receiver, dir_fd, temp, name, relpath, error)) {
                unlinkat(dir_fd, temp, 0);
                ok = FALSE;
            }
        }
    }
    close(from_fd);
    return ok;
}

/* New metadata for an entry whose content stays. A file with other links gets it on a copy of itself: the
 * other names may be another tree's. */
static gboolean apply_meta(Receiver *receiver, const char *relpath, const FerryNativeMeta *meta, GError **error)
{
    if (S_ISDIR(meta->mode))
        return apply_dir(receiver, relpath, meta, error);
    if (!ferry_native_check_path(relpath, FALSE)) {
        ferry_native_reader_fail(receiver->reader, "metadata for the root");
        return reader_failed(receiver, error);
    }
    const char *name = NULL;
    int dir_fd = parent_of(receiver, relpath, &name, error);
    if (dir_fd < 0)
        return FALSE;
    struct stat st;
    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return fail_errno(error, "find", relpath);
    if ((st.st_mode & S_IFMT) != (meta->mode & S_IFMT))
        return expect_type(receiver, meta, FALSE, relpath, error);
    if (!S_ISREG(st.st_mode))
        return ferry_native_meta_apply(-1, dir_fd, name, meta, FALSE, error);
    int old = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (old < 0)
        return fail_errno(error, "open", relpath);
    if (st.st_nlink == 1) {
        gboolean ok = ferry_native_meta_apply(old, -1, relpath, meta, FALSE, error);
        close(old);
        return ok;
    }
    g_autofree char *temp = temp_name();
    int fd = openat(dir_fd, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    gboolean ok = fd >= 0;
    if (!ok)
        fail_errno(error, "create", relpath);
    ok = ok && copy_content(old, fd, (guint64)st.st_size, relpath, error);
    if (ok && ftruncate(fd, st.st_size) < 0)
        ok = fail_errno(error, "resize", relpath);
    ok = ok && ferry_native_meta_apply(fd, -1, relpath, meta, FALSE, error);
    close(old);
    if (fd >= 0)
        close(fd);
    ok = ok && replace_entry(receiver, dir_fd, temp, name, relpath, error);
    if (!ok && fd >= 0)
        unlinkat(dir_fd, temp, 0);
    return ok;
}

static gboolean apply_delete(Receiver *receiver, const char *relpath, GError **error)
{
    forget_parent(receiver);
    const char *name = NULL;
    g_autoptr(GError) open_error = NULL;
    int dir_fd = ferry_native_open_parent(receiver->root_fd, relpath, &name, &open_error);
    if (dir_fd < 0)
        return TRUE; /* its directory is gone or is no directory any more: so is the entry */
    gboolean ok = ferry_tree_delete(dir_fd, name, error);
    close(dir_fd);
    return ok;
}

static gboolean apply_record(Receiver *receiver, guint8 kind, GError **error)
{
    g_autofree char *relpath = NULL;
    if (!ferry_native_get_string(receiver->reader, FERRY_NATIVE_MAX_PATH, &relpath))
        return reader_failed(receiver, error);
    g_autofree char *parent = NULL;
    if (!ferry_native_check_path(relpath, kind == NATIVE_DIR || kind == NATIVE_META) ||
        g_str_has_prefix(ferry_native_split_path(relpath, &parent), TEMP_PREFIX)) {
        ferry_native_reader_fail(receiver->reader, "the path \"%s\"", relpath);
        return reader_failed(receiver, error);
    }
    if (kind == NATIVE_DELETE)
        return apply_delete(receiver, relpath, error);
    if (kind == NATIVE_HARDLINK)
        return apply_hardlink(receiver, relpath, error);
    g_auto(FerryNativeMeta) meta = {0};
    if (!ferry_native_get_meta(receiver->reader, &meta))
        return reader_failed(receiver, error);
    gboolean ok;
    switch (kind) {
    case NATIVE_DIR:
        ok = apply_dir(receiver, relpath, &meta, error);
        break;
    case NATIVE_FILE:
    case NATIVE_PATCH:
        ok = apply_file(receiver, relpath, &meta, kind == NATIVE_PATCH, error);
        break;
    case NATIVE_SYMLINK: {
        g_autofree char *target = NULL;
        if (!ferry_native_get_string(receiver->reader, FERRY_NATIVE_MAX_PATH, &target))
            return reader_failed(receiver, error);
        ok = expect_type(receiver, &meta, S_ISLNK(meta.mode) && target[0] != '\0', relpath, error) &&
             apply_special(receiver, relpath, &meta, make_symlink, target, error);
        break;
    }
    case NATIVE_NODE:
        ok = expect_type(receiver, &meta,
                         S_ISCHR(meta.mode) || S_ISBLK(meta.mode) || S_ISFIFO(meta.mode) || S_ISSOCK(meta.mode),
                         relpath, error) &&
             apply_special(receiver, relpath, &meta, make_node, NULL, error);
        break;
    case NATIVE_META:
        ok = apply_meta(receiver, relpath, &meta, error);
        break;
    default:
        g_assert_not_reached();
    }
    return ok;
}

static gboolean receive_changes(Receiver *receiver, FerryByteChannel *channel, GError **error)
{
    receiver->reader =
        ferry_native_reader_new(channel, receiver->options->zstd, receiver->options->peer, receiver->cancellable);
    gboolean ok = TRUE;
    for (;;) {
        guint8 kind = 0;
        if (!ferry_native_get_u8(receiver->reader, &kind)) {
            ok = reader_failed(receiver, error);
            break;
        }
        if (kind == NATIVE_END)
            break;
        if (strchr("DFPLHNMX", kind) == NULL || kind == 0) {
            ferry_native_reader_fail(receiver->reader, "unknown record '%c'", kind);
            ok = reader_failed(receiver, error);
            break;
        }
        if (!apply_record(receiver, kind, error) ||
            g_cancellable_set_error_if_cancelled(receiver->cancellable, error)) {
            ok = FALSE;
            break;
        }
    }
    ok = ok && ferry_native_reader_end(receiver->reader, error);
    g_clear_pointer(&receiver->reader, ferry_native_reader_free);
    forget_parent(receiver);
    /* Directory times last: every entry made above changed its directory's mtime. */
    for (guint i = 0; ok && i < receiver->dir_times->len; i++) {
        DirTimes *times = receiver->dir_times->pdata[i];
        int fd = ferry_open_dir_beneath(receiver->root_fd, times->relpath, error);
        ok = fd >= 0 && ferry_native_meta_apply_times(fd, -1, times->relpath, &times->meta, error);
        if (fd >= 0)
            close(fd);
    }
    if (receiver->options->progress != NULL)
        receiver->options->progress(receiver->data_bytes, receiver->options->progress_data);
    return ok;
}

static void abort_channel(GCancellable *cancellable, gpointer data)
{
    FerryByteChannel *channel = data;
    channel->abort(channel->channel);
}

gboolean ferry_native_receive(const char *dest_dir, FerryByteChannel *channel, const FerryNativeOptions *options,
                              GCancellable *cancellable, GError **error)
{
    Receiver receiver = {
        .options = options,
        .cancellable = cancellable,
        .parent_fd = -1,
        .dir_times = g_ptr_array_new_with_free_func(dir_times_free),
        .buffer = g_malloc(BUFFER_SIZE),
    };
    receiver.root_fd = receiver.basis_fd = -1;
    const char *basis_dir = options->basis_dir != NULL ? options->basis_dir : dest_dir;
    receiver.basis_fd = open(basis_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    gboolean ok = receiver.basis_fd >= 0;
    if (!ok)
        ferry_set_error_errno(error, errno, "Failed to open \"%s\"", basis_dir);
    /* A cancel must also free a side blocked on the channel (a stalled peer): aborting it does. */
    gulong cancel_id = cancellable != NULL ? g_cancellable_connect(cancellable, G_CALLBACK(abort_channel), channel,
                                                                   NULL)
                                           : 0;
    ok = ok && send_manifest(&receiver, channel, error);
    g_autoptr(GPtrArray) candidates = ok ? read_candidates(&receiver, channel, error) : NULL;
    ok = candidates != NULL && send_digests(&receiver, channel, candidates, error);
    if (ok && options->basis_dir != NULL) {
        ok = options->wait_ready == NULL || options->wait_ready(options->wait_data, error);
        if (ok)
            receiver.root_fd = open(dest_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (ok && receiver.root_fd < 0)
            ok = fail_errno(error, "open", dest_dir);
    } else if (ok) {
        receiver.root_fd = dup(receiver.basis_fd);
        if (receiver.root_fd < 0)
            ok = fail_errno(error, "open", dest_dir);
    }
    ok = ok && receive_changes(&receiver, channel, error);
    if (ok) {
        /* Phase E: an empty phase tells the sender everything is in place. */
        g_autoptr(FerryNativeWriter) writer = ferry_native_writer_new(channel, options->zstd, options->peer);
        ok = ferry_native_writer_end(writer, error);
    }
    if (cancel_id != 0)
        g_cancellable_disconnect(cancellable, cancel_id);
    if (!ok)
        ferry_native_fail_pass(channel, cancellable, error);
    forget_parent(&receiver);
    if (receiver.root_fd >= 0)
        close(receiver.root_fd);
    if (receiver.basis_fd >= 0)
        close(receiver.basis_fd);
    g_ptr_array_unref(receiver.dir_times);
    g_free(receiver.buffer);
    return ok;
}
