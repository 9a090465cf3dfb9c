#include "native_protocol.h"

#include "error.h"
#include "tree.h"

#include <string.h>

void ferry_native_summary_free(FerryNativeSummary *summary)
{
    if (summary == NULL)
        return;
    g_free(summary->link_target);
    g_free(summary);
}

void ferry_native_summary_fill(FerryNativeSummary *summary, const struct stat *st, const FerryNativeMeta *meta,
                               const char *link_target)
{
    summary->mode = st->st_mode;
    summary->uid = st->st_uid;
    summary->gid = st->st_gid;
    summary->size = S_ISREG(st->st_mode) ? (guint64)st->st_size : 0;
    summary->mtime_sec = st->st_mtim.tv_sec;
    summary->mtime_nsec = (guint32)st->st_mtim.tv_nsec;
    summary->rdev = S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode) ? st->st_rdev : 0;
    summary->xattr_digest = ferry_native_xattr_digest(meta);
    summary->link_target = g_strdup(link_target);
}

gboolean ferry_native_put_summary(FerryNativeWriter *writer, const FerryNativeSummary *summary)
{
    ferry_native_put_u32(writer, summary->mode);
    ferry_native_put_u32(writer, summary->uid);
    ferry_native_put_u32(writer, summary->gid);
    ferry_native_put_u64(writer, summary->size);
    ferry_native_put_u64(writer, (guint64)summary->mtime_sec);
    ferry_native_put_u32(writer, summary->mtime_nsec);
    ferry_native_put_u64(writer, summary->rdev);
    ferry_native_put_u64(writer, summary->xattr_digest);
    return ferry_native_put_string(writer, summary->link_target != NULL ? summary->link_target : "");
}

gboolean ferry_native_get_summary(FerryNativeReader *reader, FerryNativeSummary *summary)
{
    guint64 mtime = 0;
    if (!ferry_native_get_u32(reader, &summary->mode) || !ferry_native_get_u32(reader, &summary->uid) ||
        !ferry_native_get_u32(reader, &summary->gid) || !ferry_native_get_u64(reader, &summary->size) ||
        !ferry_native_get_u64(reader, &mtime) || !ferry_native_get_u32(reader, &summary->mtime_nsec) ||
        !ferry_native_get_u64(reader, &summary->rdev) || !ferry_native_get_u64(reader, &summary->xattr_digest) ||
        !ferry_native_get_string(reader, FERRY_NATIVE_MAX_PATH, &summary->link_target))
        return FALSE;
    summary->mtime_sec = (gint64)mtime;
    if (!S_ISLNK(summary->mode))
        g_clear_pointer(&summary->link_target, g_free);
    return TRUE;
}

gboolean ferry_native_summary_equal(const FerryNativeSummary *a, const FerryNativeSummary *b)
{
    if (a->mode != b->mode || a->uid != b->uid || a->gid != b->gid || a->size != b->size || a->rdev != b->rdev ||
        a->xattr_digest != b->xattr_digest)
        return FALSE;
    /* A directory's mtime changes with its entries: directories are always sent, their times set last. */
    if (!S_ISDIR(a->mode) && (a->mtime_sec != b->mtime_sec || a->mtime_nsec != b->mtime_nsec))
        return FALSE;
    return g_strcmp0(a->link_target, b->link_target) == 0;
}

gboolean ferry_native_check_path(const char *path, gboolean allow_root)
{
    gsize length = strlen(path);
    if (length == 0)
        return allow_root;
    if (length > FERRY_NATIVE_MAX_PATH || path[0] == '/' || path[length - 1] == '/')
        return FALSE;
    for (const char *part = path; part != NULL;) {
        const char *slash = strchr(part, '/');
        gsize size = slash != NULL ? (gsize)(slash - part) : strlen(part);
        if (size == 0 || size > 255 || (size == 1 && part[0] == '.') ||
            (size == 2 && part[0] == '.' && part[1] == '.'))
            return FALSE;
        part = slash != NULL ? slash + 1 : NULL;
    }
    return TRUE;
}

const char *ferry_native_split_path(const char *relpath, char **parent)
{
    const char *slash = strrchr(relpath, '/');
    *parent = slash != NULL ? g_strndup(relpath, (gsize)(slash - relpath)) : g_strdup("");
    return slash != NULL ? slash + 1 : relpath;
}

int ferry_native_open_parent(int root_fd, const char *relpath, const char **name, GError **error)
{
    g_autofree char *parent = NULL;
    *name = ferry_native_split_path(relpath, &parent);
    return ferry_open_dir_beneath(root_fd, parent, error);
}

guint32 ferry_native_block_size(guint64 size)
{
    guint64 block = FERRY_NATIVE_BLOCK_SIZE;
    while (size / block > FERRY_NATIVE_MAX_BLOCKS)
        block *= 2;
    return (guint32)block;
}

void ferry_native_fail_pass(FerryByteChannel *channel, GCancellable *cancellable, GError **error)
{
    channel->abort(channel->channel);
    if (g_cancellable_is_cancelled(cancellable) && error != NULL && *error != NULL &&
        !g_error_matches(*error, FERRY_ERROR, FERRY_ERROR_CANCELLED)) {
        g_clear_error(error);
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "The migration was cancelled");
    }
}
