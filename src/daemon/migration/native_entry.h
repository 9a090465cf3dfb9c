/* ferry's native migration stream, what it says about one file: its metadata (type and mode, owner, times,
 * extended attributes, device number) as read from the disk, written to and read from the stream, compared,
 * and applied to a newly made entry. */
#pragma once

#include "native_stream.h"

#include <sys/stat.h>

G_BEGIN_DECLS

typedef struct {
    char *name;
    guint8 *value;
    gsize length;
} FerryNativeXattr;

typedef struct {
    guint32 mode; /* st_mode: type and permission bits */
    guint32 uid, gid;
    gint64 atime_sec, mtime_sec;
    guint32 atime_nsec, mtime_nsec;
    guint64 rdev;
    GArray *xattrs; /* of FerryNativeXattr, sorted by name; NULL when none */
} FerryNativeMeta;

void ferry_native_meta_clear(FerryNativeMeta *meta);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(FerryNativeMeta, ferry_native_meta_clear)

/* The metadata of dir_fd/name (not followed), with its xattrs except security.selinux (a label of the
 * source's policy, as Incus's rsync filter drops it). */
gboolean ferry_native_meta_read(int dir_fd, const char *name, const struct stat *st, FerryNativeMeta *meta,
                                GError **error);
/* A digest of the xattrs (0 when there are none), for comparing trees without sending values. */
guint64 ferry_native_xattr_digest(const FerryNativeMeta *meta);

gboolean ferry_native_put_meta(FerryNativeWriter *writer, const FerryNativeMeta *meta);
gboolean ferry_native_get_meta(FerryNativeReader *reader, FerryNativeMeta *meta);

/* Apply owner, mode, xattrs (in that order: chown clears set-id bits and file capabilities) and, unless
 * skip_times, the times. fd is the entry opened (regular file, directory) or -1 to work through dir_fd/name
 * without following it (symlinks, device nodes, fifos, sockets). */
gboolean ferry_native_meta_apply(int fd, int dir_fd, const char *name, const FerryNativeMeta *meta,
                                 gboolean skip_times, GError **error);
gboolean ferry_native_meta_apply_times(int fd, int dir_fd, const char *name, const FerryNativeMeta *meta,
                                       GError **error);

G_END_DECLS
