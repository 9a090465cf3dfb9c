#include "native_entry.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <xxhash.h>

/* More attributes than any real file has; a stream that claims more is broken. */
#define MAX_XATTRS 1024
#define MAX_XATTR_NAME 255
#define MAX_XATTR_VALUE (64 * 1024)

static void xattr_clear(gpointer data)
{
    FerryNativeXattr *xattr = data;
    g_free(xattr->name);
    g_free(xattr->value);
}

void ferry_native_meta_clear(FerryNativeMeta *meta)
{
    g_clear_pointer(&meta->xattrs, g_array_unref);
}

static GArray *new_xattrs(void)
{
    GArray *xattrs = g_array_new(FALSE, TRUE, sizeof(FerryNativeXattr));
    g_array_set_clear_func(xattrs, xattr_clear);
    return xattrs;
}

static gint compare_xattrs(gconstpointer a, gconstpointer b)
{
    return strcmp(((const FerryNativeXattr *)a)->name, ((const FerryNativeXattr *)b)->name);
}

/* An entry's xattrs: through its descriptor when we hold one (regular files, directories), otherwise by name
 * beneath its directory: the directory's /proc link resolves to the directory we hold, and the l* calls never
 * follow the entry itself (a symlink or a device node, which cannot be opened safely). */
typedef struct {
    int fd;
    char *path;
} XattrTarget;

static void xattr_target_init(XattrTarget *target, int fd, int dir_fd, const char *name)
{
    target->fd = fd;
    target->path = fd >= 0 ? NULL : g_strdup_printf("/proc/self/fd/%d/%s", dir_fd, name);
}

static ssize_t target_list(XattrTarget *target, char *list, size_t size)
{
    return target->fd >= 0 ? flistxattr(target->fd, list, size) : llistxattr(target->path, list, size);
}

/* The entry's attribute names but security.selinux (never carried: a label of the source's policy). NULL
 * with errno set if they cannot be listed; none where the filesystem has no xattrs. */
static GPtrArray *target_names(XattrTarget *target)
{
    char small[1024];
    g_autofree char *large = NULL;
    ssize_t size = target_list(target, small, sizeof small);
    if (size < 0 && errno == ERANGE) {
        ssize_t needed = target_list(target, NULL, 0);
        if (needed > 0) {
            large = g_malloc((gsize)needed);
            size = target_list(target, large, (size_t)needed);
        }
    }
    if (size < 0 && errno != ENOTSUP)
        return NULL;
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    const char *list = large != NULL ? large : small;
    for (ssize_t at = 0; at < size; at += (ssize_t)strlen(list + at) + 1) {
        if (strcmp(list + at, "security.selinux") != 0)
            g_ptr_array_add(names, g_strdup(list + at));
    }
    return names;
}

static ssize_t target_get(XattrTarget *target, const char *key, void *value, size_t size)
{
    return target->fd >= 0 ? fgetxattr(target->fd, key, value, size) : lgetxattr(target->path, key, value, size);
}

static int target_set(XattrTarget *target, const char *key, const void *value, size_t size)
{
    return target->fd >= 0 ? fsetxattr(target->fd, key, value, size, 0)
                           : lsetxattr(target->path, key, value, size, 0);
}

static gboolean read_xattrs(int dir_fd, const char *name, const struct stat *st, FerryNativeMeta *meta,
                            GError **error)
{
    int fd = -1;
    if (S_ISREG(st->st_mode) || S_ISDIR(st->st_mode)) {
        fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0) {
            if (errno == ENOENT)
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "\"%s\" is gone", name);
            else
                ferry_set_error_errno(error, errno, "Failed to open \"%s\"", name);
            return FALSE;
        }
    }
    XattrTarget target;
    xattr_target_init(&target, fd, dir_fd, name);
    g_autoptr(GPtrArray) names = target_names(&target);
    gboolean ok = names != NULL;
    if (!ok)
        ferry_set_error_errno(error, errno, "Failed to list the extended attributes of \"%s\"", name);
    for (guint i = 0; ok && i < names->len; i++) {
        const char *key = names->pdata[i];
        ssize_t length = target_get(&target, key, NULL, 0);
        if (length < 0 && errno == ENODATA)
            continue;
        g_autofree guint8 *value = length >= 0 ? g_malloc((gsize)length + 1) : NULL;
        if (length >= 0)
            length = target_get(&target, key, value, (size_t)length);
        if (length < 0) {
            ferry_set_error_errno(error, errno, "Failed to read extended attribute \"%s\" of \"%s\"", key, name);
            ok = FALSE;
            break;
        }
        if (meta->xattrs == NULL)
            meta->xattrs = new_xattrs();
        FerryNativeXattr xattr = {g_strdup(key), g_steal_pointer(&value), (gsize)length};
        g_array_append_val(meta->xattrs, xattr);
    }
    if (fd >= 0)
        close(fd);
    g_free(target.path);
    if (ok && meta->xattrs != NULL)
        g_array_sort(meta->xattrs, compare_xattrs);
    return ok;
}

gboolean ferry_native_meta_read(int dir_fd, const char *name, const struct stat *st, FerryNativeMeta *meta,
                                GError **error)
{
    memset(meta, 0, sizeof *meta);
    meta->mode = st->st_mode;
    meta->uid = st->st_uid;
    meta->gid = st->st_gid;
    meta->atime_sec = st->st_atim.tv_sec;
    meta->atime_nsec = (guint32)st->st_atim.tv_nsec;
    meta->mtime_sec = st->st_mtim.tv_sec;
    meta->mtime_nsec = (guint32)st->st_mtim.tv_nsec;
    meta->rdev = S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode) ? st->st_rdev : 0;
    return read_xattrs(dir_fd, name, st, meta, error);
}

guint64 ferry_native_xattr_digest(const FerryNativeMeta *meta)
{
    if (meta->xattrs == NULL || meta->xattrs->len == 0)
        return 0;
    XXH3_state_t *state = XXH3_createState();
    XXH3_64bits_reset(state);
    for (guint i = 0; i < meta->xattrs->len; i++) {
        const FerryNativeXattr *xattr = &g_array_index(meta->xattrs, FerryNativeXattr, i);
        guint64 length = xattr->length;
        XXH3_64bits_update(state, xattr->name, strlen(xattr->name) + 1);
        XXH3_64bits_update(state, &length, sizeof length);
        XXH3_64bits_update(state, xattr->value, xattr->length);
    }
    guint64 digest = XXH3_64bits_digest(state);
    XXH3_freeState(state);
    return digest == 0 ? 1 : digest;
}

gboolean ferry_native_put_meta(FerryNativeWriter *writer, const FerryNativeMeta *meta)
{
    guint count = meta->xattrs != NULL ? meta->xattrs->len : 0;
    ferry_native_put_u32(writer, meta->mode);
    ferry_native_put_u32(writer, meta->uid);
    ferry_native_put_u32(writer, meta->gid);
    ferry_native_put_u64(writer, (guint64)meta->atime_sec);
    ferry_native_put_u32(writer, meta->atime_nsec);
    ferry_native_put_u64(writer, (guint64)meta->mtime_sec);
    ferry_native_put_u32(writer, meta->mtime_nsec);
    ferry_native_put_u64(writer, meta->rdev);
    ferry_native_put_u32(writer, count);
    for (guint i = 0; i < count; i++) {
        const FerryNativeXattr *xattr = &g_array_index(meta->xattrs, FerryNativeXattr, i);
        ferry_native_put_string(writer, xattr->name);
        ferry_native_put_bytes(writer, xattr->value, xattr->length);
    }
    return ferry_native_writer_error(writer) == NULL;
}

static gboolean valid_time_nsec(guint32 nsec)
{
    return nsec < 1000000000u;
}

gboolean ferry_native_get_meta(FerryNativeReader *reader, FerryNativeMeta *meta)
{
    memset(meta, 0, sizeof *meta);
    guint64 atime = 0, mtime = 0;
    guint32 count = 0;
    if (!ferry_native_get_u32(reader, &meta->mode) || !ferry_native_get_u32(reader, &meta->uid) ||
        !ferry_native_get_u32(reader, &meta->gid) || !ferry_native_get_u64(reader, &atime) ||
        !ferry_native_get_u32(reader, &meta->atime_nsec) || !ferry_native_get_u64(reader, &mtime) ||
        !ferry_native_get_u32(reader, &meta->mtime_nsec) || !ferry_native_get_u64(reader, &meta->rdev) ||
        !ferry_native_get_u32(reader, &count))
        return FALSE;
    meta->atime_sec = (gint64)atime;
    meta->mtime_sec = (gint64)mtime;
    if (!valid_time_nsec(meta->atime_nsec) || !valid_time_nsec(meta->mtime_nsec))
        return ferry_native_reader_fail(reader, "a time with more than 10^9 nanoseconds");
    if (count > MAX_XATTRS)
        return ferry_native_reader_fail(reader, "%u extended attributes on one file", count);
    for (guint32 i = 0; i < count; i++) {
        FerryNativeXattr xattr = {0};
        if (!ferry_native_get_string(reader, MAX_XATTR_NAME, &xattr.name))
            return FALSE;
        if (!ferry_native_get_bytes(reader, MAX_XATTR_VALUE, &xattr.value, &xattr.length)) {
            g_free(xattr.name);
            return FALSE;
        }
        if (meta->xattrs == NULL)
            meta->xattrs = new_xattrs();
        g_array_append_val(meta->xattrs, xattr);
    }
    return TRUE;
}

gboolean ferry_native_meta_apply_times(int fd, int dir_fd, const char *name, const FerryNativeMeta *meta,
                                       GError **error)
{
    struct timespec times[2] = {
        {.tv_sec = meta->atime_sec, .tv_nsec = meta->atime_nsec},
        {.tv_sec = meta->mtime_sec, .tv_nsec = meta->mtime_nsec},
    };
    int r = fd >= 0 ? futimens(fd, times) : utimensat(dir_fd, name, times, AT_SYMLINK_NOFOLLOW);
    if (r < 0) {
        ferry_set_error_errno(error, errno, "Failed to set the times of \"%s\"", name);
        return FALSE;
    }
    return TRUE;
}

static gboolean has_xattr(const FerryNativeMeta *meta, const char *key)
{
    for (guint i = 0; meta->xattrs != NULL && i < meta->xattrs->len; i++) {
        if (strcmp(g_array_index(meta->xattrs, FerryNativeXattr, i).name, key) == 0)
            return TRUE;
    }
    return FALSE;
}

/* An entry that existed before (a directory, a file whose metadata changed) may carry attributes the source
 * no longer has. */
static gboolean remove_stale_xattrs(XattrTarget *target, const FerryNativeMeta *meta, const char *name,
                                    GError **error)
{
    g_autoptr(GPtrArray) names = target_names(target);
    for (guint i = 0; names != NULL && i < names->len; i++) {
        const char *key = names->pdata[i];
        if (has_xattr(meta, key))
            continue;
        int r = target->fd >= 0 ? fremovexattr(target->fd, key) : lremovexattr(target->path, key);
        if (r < 0 && errno != ENODATA) {
            ferry_set_error_errno(error, errno, "Failed to remove extended attribute \"%s\" from \"%s\"", key,
                                  name);
            return FALSE;
        }
    }
    return TRUE;
}

gboolean ferry_native_meta_apply(int fd, int dir_fd, const char *name, const FerryNativeMeta *meta,
                                 gboolean skip_times, GError **error)
{
    int r = fd >= 0 ? fchown(fd, meta->uid, meta->gid)
                    : fchownat(dir_fd, name, meta->uid, meta->gid, AT_SYMLINK_NOFOLLOW);
    if (r < 0) {
        ferry_set_error_errno(error, errno, "Failed to set the owner of \"%s\"", name);
        return FALSE;
    }
    /* A symlink has no mode of its own; anything else reached by name here is a node we just made. */
    if (!S_ISLNK(meta->mode)) {
        r = fd >= 0 ? fchmod(fd, meta->mode & 07777) : fchmodat(dir_fd, name, meta->mode & 07777, 0);
        if (r < 0) {
            ferry_set_error_errno(error, errno, "Failed to set the mode of \"%s\"", name);
            return FALSE;
        }
    }
    XattrTarget target;
    xattr_target_init(&target, fd, dir_fd, name);
    g_autofree char *path = target.path;
    if (!remove_stale_xattrs(&target, meta, name, error))
        return FALSE;
    if (meta->xattrs != NULL && meta->xattrs->len > 0) {
        for (guint i = 0; i < meta->xattrs->len; i++) {
            const FerryNativeXattr *xattr = &g_array_index(meta->xattrs, FerryNativeXattr, i);
            if (target_set(&target, xattr->name, xattr->value, xattr->length) < 0) {
                /* user.* attributes cannot be set on symlinks and device nodes: rsync skips them too. */
                if (errno == EPERM && !S_ISREG(meta->mode) && !S_ISDIR(meta->mode))
                    continue;
                ferry_set_error_errno(error, errno, "Failed to set extended attribute \"%s\" on \"%s\"",
                                      xattr->name, name);
                return FALSE;
            }
        }
    }
    return skip_times || ferry_native_meta_apply_times(fd, dir_fd, name, meta, error);
}
