/* The sending side of a native pass (phases in native.h): learn what the receiver has, ask for the block
 * digests of the large files that changed, then walk the tree once and send what differs. */
#include "native.h"

#include "error.h"
#include "native_protocol.h"
#include "tree.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

/* Read size for file data: large enough that each read is cheap per byte, a multiple of every block size
 * up to 1 MiB. */
#define READ_SIZE (1024 * 1024)
/* Progress is reported at most this often (bytes). */
#define PROGRESS_STEP (4 * 1024 * 1024)

typedef struct {
    guint32 block_size;
    guint64 size;
    guint64 count;
    guint8 *digests; /* count * FERRY_NATIVE_DIGEST_SIZE */
} Digests;

static void digests_free(gpointer data)
{
    Digests *digests = data;
    g_free(digests->digests);
    g_free(digests);
}

typedef struct {
    const FerryNativeOptions *options;
    GCancellable *cancellable;
    int root_fd;
    GHashTable *manifest; /* relpath -> FerryNativeSummary: the receiver's entries not walked yet */
    GHashTable *digests;  /* relpath -> Digests, for the candidates */
    GHashTable *links;    /* "dev:ino" -> relpath sent first, for files with several links */
    FerryNativeWriter *writer;
    guint8 *buffer;
    guint64 data_bytes, reported;
} Sender;

static gboolean writer_failed(Sender *sender, GError **error)
{
    const GError *failure = ferry_native_writer_error(sender->writer);
    if (failure == NULL)
        return FALSE;
    g_propagate_error(error, g_error_copy(failure));
    return TRUE;
}

static gboolean writer_error(Sender *sender, GError **error)
{
    writer_failed(sender, error);
    return FALSE;
}

static void count_data(Sender *sender, gsize bytes)
{
    sender->data_bytes += bytes;
    if (sender->options->progress != NULL && sender->data_bytes - sender->reported >= PROGRESS_STEP) {
        sender->reported = sender->data_bytes;
        sender->options->progress(sender->data_bytes, sender->options->progress_data);
    }
}

/* An entry gone since its directory was read: as if we had walked a moment later, when the user accepted an
 * inconsistent copy of a running instance (which is not frozen then); otherwise something changed a volume
 * that should be still, and the copy would not be the point-in-time one promised. */
static gboolean vanished(Sender *sender, const char *relpath, GError **error)
{
    if (sender->options->allow_inconsistent)
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT,
                "\"%s\" vanished while it was being sent: the instance changed during the copy", relpath);
    return FALSE;
}

/* ---- phases A to C ---- */

static gboolean read_manifest(Sender *sender, FerryByteChannel *channel, GError **error)
{
    g_autoptr(FerryNativeReader) reader =
        ferry_native_reader_new(channel, sender->options->zstd, sender->options->peer, sender->cancellable);
    for (;;) {
        guint8 kind = 0;
        if (!ferry_native_get_u8(reader, &kind))
            break;
        if (kind == NATIVE_END)
            break;
        g_autofree char *path = NULL;
        FerryNativeSummary *summary = g_new0(FerryNativeSummary, 1);
        if (kind != NATIVE_MANIFEST_ENTRY) {
            ferry_native_reader_fail(reader, "record '%c' in the manifest", kind);
        } else if (ferry_native_get_string(reader, FERRY_NATIVE_MAX_PATH, &path) &&
                   ferry_native_get_summary(reader, summary)) {
            if (!ferry_native_check_path(path, FALSE)) {
                ferry_native_reader_fail(reader, "the path \"%s\" in the manifest", path);
            } else {
                g_hash_table_replace(sender->manifest, g_steal_pointer(&path), summary);
                continue;
            }
        }
        ferry_native_summary_free(summary);
        break;
    }
    return ferry_native_reader_end(reader, error);
}

/* Large regular files both sides have whose size or mtime differ: a block patch may be much less to send. */
static GPtrArray *find_candidates(Sender *sender)
{
    GPtrArray *candidates = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter iter;
    gpointer key, value;
    g_hash_table_iter_init(&iter, sender->manifest);
    while (g_hash_table_iter_next(&iter, &key, &value)) {
        const FerryNativeSummary *theirs = value;
        if (!S_ISREG(theirs->mode) || theirs->size < FERRY_NATIVE_DELTA_MIN)
            continue;
        const char *name = NULL;
        int parent = ferry_native_open_parent(sender->root_fd, key, &name, NULL);
        if (parent < 0)
            continue;
        struct stat st;
        gboolean ours = fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
                        (guint64)st.st_size >= FERRY_NATIVE_DELTA_MIN;
        close(parent);
        if (ours && ((guint64)st.st_size != theirs->size || st.st_mtim.tv_sec != theirs->mtime_sec ||
                     (guint32)st.st_mtim.tv_nsec != theirs->mtime_nsec))
            g_ptr_array_add(candidates, g_strdup(key));
    }
    return candidates;
}

static gboolean send_candidates(Sender *sender, FerryByteChannel *channel, GPtrArray *candidates, GError **error)
{
    g_autoptr(FerryNativeWriter) writer =
        ferry_native_writer_new(channel, sender->options->zstd, sender->options->peer);
    for (guint i = 0; i < candidates->len; i++) {
        ferry_native_put_u8(writer, NATIVE_CANDIDATE);
        ferry_native_put_string(writer, candidates->pdata[i]);
    }
    ferry_native_put_u8(writer, NATIVE_END);
    return ferry_native_writer_end(writer, error);
}

static gboolean read_digests(Sender *sender, FerryByteChannel *channel, GPtrArray *candidates, GError **error)
{
    g_autoptr(FerryNativeReader) reader =
        ferry_native_reader_new(channel, sender->options->zstd, sender->options->peer, sender->cancellable);
    for (guint i = 0; i < candidates->len; i++) {
        Digests *digests = g_new0(Digests, 1);
        if (!ferry_native_get_u32(reader, &digests->block_size) || !ferry_native_get_u64(reader, &digests->size) ||
            !ferry_native_get_u64(reader, &digests->count)) {
            digests_free(digests);
            break;
        }
        guint64 expected = digests->block_size > 0
                               ? (digests->size + digests->block_size - 1) / digests->block_size
                               : 0;
        if (digests->count > FERRY_NATIVE_MAX_BLOCKS || digests->count != expected ||
            (digests->count > 0 && digests->block_size != ferry_native_block_size(digests->size))) {
            digests_free(digests);
            ferry_native_reader_fail(reader, "block digests that do not fit their file");
            break;
        }
        digests->digests = g_malloc(digests->count * FERRY_NATIVE_DIGEST_SIZE + 1);
        if (!ferry_native_get(reader, digests->digests, digests->count * FERRY_NATIVE_DIGEST_SIZE)) {
            digests_free(digests);
            break;
        }
        /* No digests: the receiver's file is not what the manifest said; it gets the whole file. */
        if (digests->count > 0)
            g_hash_table_replace(sender->digests, g_strdup(candidates->pdata[i]), digests);
        else
            digests_free(digests);
    }
    return ferry_native_reader_end(reader, error);
}

/* ---- phase D ---- */

static void put_path_meta(Sender *sender, FerryNativeRecord kind, const char *relpath, const FerryNativeMeta *meta)
{
    ferry_native_put_u8(sender->writer, kind);
    ferry_native_put_string(sender->writer, relpath);
    ferry_native_put_meta(sender->writer, meta);
}

static gboolean put_extent(Sender *sender, guint64 offset, const guint8 *data, gsize length)
{
    ferry_native_put_u64(sender->writer, length);
    ferry_native_put_u64(sender->writer, offset);
    ferry_native_put(sender->writer, data, length);
    count_data(sender, length);
    return ferry_native_writer_error(sender->writer) == NULL;
}

static gboolean read_failed(const char *relpath, GError **error)
{
    ferry_set_error_errno(error, errno, "Failed to read \"%s\"", relpath);
    return FALSE;
}

/* The data of fd up to size as extents, holes left out. A file that shrinks meanwhile ends early (only a
 * running instance's files change under us, and its final pass catches up). */
static gboolean send_extents(Sender *sender, int fd, guint64 size, const char *relpath, GError **error)
{
    guint64 position = 0;
    while (position < size) {
        off_t data = lseek(fd, (off_t)position, SEEK_DATA);
        if (data < 0 && errno == ENXIO)
            break;
        if (data < 0)
            return read_failed(relpath, error);
        off_t hole = lseek(fd, data, SEEK_HOLE);
        guint64 end = hole < 0 ? size : MIN((guint64)hole, size);
        guint64 offset = (guint64)data;
        while (offset < end) {
            ssize_t n = pread(fd, sender->buffer, MIN(READ_SIZE, end - offset), (off_t)offset);
            if (n < 0)
                return read_failed(relpath, error);
            if (n == 0)
                break;
            if (!put_extent(sender, offset, sender->buffer, (gsize)n))
                return writer_error(sender, error);
            offset += (guint64)n;
        }
        if (offset < end)
            break; /* shrunk meanwhile */
        position = end;
        if (g_cancellable_set_error_if_cancelled(sender->cancellable, error))
            return FALSE;
    }
    ferry_native_put_u64(sender->writer, 0);
    return !writer_failed(sender, error);
}

/* The blocks of fd that differ from the receiver's digests, as extents. */
static gboolean send_patch(Sender *sender, int fd, guint64 size, const Digests *digests, const char *relpath,
                           GError **error)
{
    gsize block = digests->block_size;
    gsize chunk = block >= READ_SIZE ? block : READ_SIZE - READ_SIZE % block;
    g_autofree guint8 *large = block > READ_SIZE ? g_malloc(block) : NULL;
    guint8 *buffer = large != NULL ? large : sender->buffer;
    for (guint64 offset = 0; offset < size;) {
        ssize_t n = pread(fd, buffer, MIN(chunk, size - offset), (off_t)offset);
        if (n < 0)
            return read_failed(relpath, error);
        if (n == 0)
            break;
        /* Runs of changed blocks go as one extent each. */
        gsize run_start = 0, run_length = 0;
        for (gsize at = 0; at < (gsize)n; at += block) {
            gsize length = MIN(block, (gsize)n - at);
            guint64 index = (offset + at) / block;
            gboolean same = FALSE;
            if (index < digests->count) {
                XXH128_canonical_t canonical;
                XXH128_canonicalFromHash(&canonical, XXH3_128bits(buffer + at, length));
                same = memcmp(&canonical, digests->digests + index * FERRY_NATIVE_DIGEST_SIZE,
                              FERRY_NATIVE_DIGEST_SIZE) == 0;
            }
            if (!same) {
                if (run_length == 0)
                    run_start = at;
                run_length += length;
                continue;
            }
            if (run_length > 0 && !put_extent(sender, offset + run_start, buffer + run_start, run_length))
                return writer_error(sender, error);
            run_length = 0;
        }
        if (run_length > 0 && !put_extent(sender, offset + run_start, buffer + run_start, run_length))
            return writer_error(sender, error);
        offset += (guint64)n;
        if (g_cancellable_set_error_if_cancelled(sender->cancellable, error))
            return FALSE;
    }
    ferry_native_put_u64(sender->writer, 0);
    return !writer_failed(sender, error);
}

static gboolean send_regular(Sender *sender, int dir_fd, const char *name, const char *relpath,
                             const struct stat *st, const FerryNativeMeta *meta,
                             const FerryNativeSummary *theirs, GError **error)
{
    g_autofree char *inode = st->st_nlink > 1 ? g_strdup_printf("%ju:%ju", (uintmax_t)st->st_dev,
                                                                (uintmax_t)st->st_ino)
                                              : NULL;
    if (inode != NULL) {
        const char *first = g_hash_table_lookup(sender->links, inode);
        if (first != NULL) {
            ferry_native_put_u8(sender->writer, NATIVE_HARDLINK);
            ferry_native_put_string(sender->writer, relpath);
            ferry_native_put_string(sender->writer, first);
            return !writer_failed(sender, error);
        }
    }
    /* Same content (size and mtime), other metadata: only the metadata, unless the file has other names
     * (they are sent as links to one fresh copy, which keeps them together). */
    if (theirs != NULL && S_ISREG(theirs->mode) && theirs->size == (guint64)st->st_size &&
        theirs->mtime_sec == st->st_mtim.tv_sec && theirs->mtime_nsec == (guint32)st->st_mtim.tv_nsec &&
        inode == NULL) {
        put_path_meta(sender, NATIVE_META, relpath, meta);
        return !writer_failed(sender, error);
    }
    int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
    if (fd < 0 && errno == EPERM)
        fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return vanished(sender, relpath, error);
        ferry_set_error_errno(error, errno, "Failed to open \"%s\"", relpath);
        return FALSE;
    }
    const Digests *digests = g_hash_table_lookup(sender->digests, relpath);
    put_path_meta(sender, digests != NULL ? NATIVE_PATCH : NATIVE_FILE, relpath, meta);
    ferry_native_put_u64(sender->writer, (guint64)st->st_size);
    gboolean ok = digests != NULL ? send_patch(sender, fd, (guint64)st->st_size, digests, relpath, error)
                                  : send_extents(sender, fd, (guint64)st->st_size, relpath, error);
    close(fd);
    if (ok && writer_failed(sender, error))
        ok = FALSE;
    if (ok && inode != NULL)
        g_hash_table_replace(sender->links, g_steal_pointer(&inode), g_strdup(relpath));
    return ok;
}

/* A name of a file with several names that the receiver has as it is. It still takes part in the links: a
 * name added since the last pass (sent before or after this one) must become a link, not a copy. So the first
 * name of an inode is remembered even when not sent, and every later one is linked to it again. */
static gboolean link_unchanged(Sender *sender, const char *relpath, const struct stat *st, GError **error)
{
    g_autofree char *inode = g_strdup_printf("%ju:%ju", (uintmax_t)st->st_dev, (uintmax_t)st->st_ino);
    const char *first = g_hash_table_lookup(sender->links, inode);
    if (first == NULL) {
        g_hash_table_replace(sender->links, g_steal_pointer(&inode), g_strdup(relpath));
        return TRUE;
    }
    ferry_native_put_u8(sender->writer, NATIVE_HARDLINK);
    ferry_native_put_string(sender->writer, relpath);
    ferry_native_put_string(sender->writer, first);
    return !writer_failed(sender, error);
}

static gboolean on_entry(FerryTreeEvent event, int dir_fd, const char *name, const char *relpath,
                         const struct stat *st, gboolean *descend, gpointer user_data, GError **error)
{
    Sender *sender = user_data;
    if (event == FERRY_TREE_LEAVE)
        return TRUE;
    if (g_cancellable_set_error_if_cancelled(sender->cancellable, error))
        return FALSE;
    g_auto(FerryNativeMeta) meta = {0};
    if (!ferry_native_meta_read(dir_fd, name, st, &meta, error)) {
        if (g_error_matches(*error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND)) {
            g_clear_error(error);
            return vanished(sender, relpath, error);
        }
        g_prefix_error(error, "%s: ", relpath);
        return FALSE;
    }
    g_autofree char *link_target = NULL;
    if (S_ISLNK(st->st_mode)) {
        char target[PATH_MAX + 1];
        ssize_t n = readlinkat(dir_fd, name, target, PATH_MAX);
        if (n < 0) {
            if (errno == ENOENT)
                return vanished(sender, relpath, error);
            ferry_set_error_errno(error, errno, "Failed to read the symlink \"%s\"", relpath);
            return FALSE;
        }
        link_target = g_strndup(target, (gsize)n);
    }
    g_autofree char *key = NULL;
    g_autofree FerryNativeSummary *theirs = NULL;
    g_hash_table_steal_extended(sender->manifest, relpath, (gpointer *)&key, (gpointer *)&theirs);
    g_autofree char *their_target = theirs != NULL ? theirs->link_target : NULL;

    if (event == FERRY_TREE_ENTER) {
        put_path_meta(sender, NATIVE_DIR, relpath, &meta);
        return !writer_failed(sender, error);
    }
    FerryNativeSummary ours = {0};
    ferry_native_summary_fill(&ours, st, &meta, link_target);
    gboolean unchanged = theirs != NULL && ferry_native_summary_equal(&ours, theirs);
    g_free(ours.link_target);
    if (unchanged && S_ISREG(st->st_mode) && st->st_nlink > 1)
        return link_unchanged(sender, relpath, st, error);
    if (unchanged)
        return TRUE;
    if (S_ISREG(st->st_mode))
        return send_regular(sender, dir_fd, name, relpath, st, &meta, theirs, error);
    if (S_ISLNK(st->st_mode)) {
        put_path_meta(sender, NATIVE_SYMLINK, relpath, &meta);
        ferry_native_put_string(sender->writer, link_target);
    } else {
        put_path_meta(sender, NATIVE_NODE, relpath, &meta);
    }
    return !writer_failed(sender, error);
}

static gboolean send_changes(Sender *sender, FerryByteChannel *channel, GError **error)
{
    sender->writer = ferry_native_writer_new(channel, sender->options->zstd, sender->options->peer);
    struct stat root_st;
    g_auto(FerryNativeMeta) root_meta = {0};
    gboolean ok = fstat(sender->root_fd, &root_st) == 0;
    if (!ok)
        ferry_set_error_errno(error, errno, "Failed to read the volume's root");
    if (ok)
        ok = ferry_native_meta_read(sender->root_fd, ".", &root_st, &root_meta, error);
    if (ok) {
        put_path_meta(sender, NATIVE_DIR, "", &root_meta);
        ok = ferry_tree_walk(sender->root_fd, on_entry, sender, error);
    }
    if (ok) {
        /* What the receiver has and we do not. */
        GHashTableIter iter;
        gpointer key;
        g_hash_table_iter_init(&iter, sender->manifest);
        while (g_hash_table_iter_next(&iter, &key, NULL)) {
            ferry_native_put_u8(sender->writer, NATIVE_DELETE);
            ferry_native_put_string(sender->writer, key);
        }
        ferry_native_put_u8(sender->writer, NATIVE_END);
        ok = ferry_native_writer_end(sender->writer, error);
    }
    if (sender->options->progress != NULL)
        sender->options->progress(sender->data_bytes, sender->options->progress_data);
    g_clear_pointer(&sender->writer, ferry_native_writer_free);
    return ok;
}

static void abort_channel(GCancellable *cancellable, gpointer data)
{
    FerryByteChannel *channel = data;
    channel->abort(channel->channel);
}

gboolean ferry_native_send(const char *source_dir, FerryByteChannel *channel, const FerryNativeOptions *options,
                           GCancellable *cancellable, GError **error)
{
    Sender sender = {
        .options = options,
        .cancellable = cancellable,
        .manifest = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                          (GDestroyNotify)ferry_native_summary_free),
        .digests = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, digests_free),
        .links = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free),
        .buffer = g_malloc(READ_SIZE),
    };
    sender.root_fd = open(source_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    gboolean ok = sender.root_fd >= 0;
    if (!ok)
        ferry_set_error_errno(error, errno, "Failed to open \"%s\"", source_dir);
    /* A cancel must also free a side blocked on the channel (a stalled peer): aborting it does. */
    gulong cancel_id = cancellable != NULL ? g_cancellable_connect(cancellable, G_CALLBACK(abort_channel), channel,
                                                                   NULL)
                                           : 0;
    g_autoptr(GPtrArray) candidates = NULL;
    if (ok)
        ok = read_manifest(&sender, channel, error);
    if (ok) {
        candidates = find_candidates(&sender);
        ok = send_candidates(&sender, channel, candidates, error) &&
             read_digests(&sender, channel, candidates, error);
    }
    if (ok)
        ok = send_changes(&sender, channel, error);
    if (ok) {
        /* The receiver's empty phase E: everything is applied. */
        g_autoptr(FerryNativeReader) reader = ferry_native_reader_new(channel, options->zstd, options->peer,
                                                                     cancellable);
        ok = ferry_native_reader_end(reader, error);
    }
    if (cancel_id != 0)
        g_cancellable_disconnect(cancellable, cancel_id);
    if (!ok)
        ferry_native_fail_pass(channel, cancellable, error);
    if (sender.root_fd >= 0)
        close(sender.root_fd);
    g_hash_table_unref(sender.manifest);
    g_hash_table_unref(sender.digests);
    g_hash_table_unref(sender.links);
    g_free(sender.buffer);
    return ok;
}
