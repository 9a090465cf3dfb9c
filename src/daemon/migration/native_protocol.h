/* ferry's native migration stream: the record kinds and sizes both sides share (see native.h for the phases
 * and docs/protocol/ferry-native.md for the bytes). */
#pragma once

#include "native_entry.h"

G_BEGIN_DECLS

typedef enum {
    NATIVE_END = 'E',
    NATIVE_MANIFEST_ENTRY = 'e', /* A: path, summary */
    NATIVE_CANDIDATE = 'c',      /* B: path */
    NATIVE_DIR = 'D',            /* D: path, meta */
    NATIVE_FILE = 'F',           /* D: path, meta, size, extents */
    NATIVE_PATCH = 'P',          /* D: path, meta, size, extents over the receiver's current content */
    NATIVE_SYMLINK = 'L',        /* D: path, meta, target */
    NATIVE_HARDLINK = 'H',       /* D: path, path of an entry sent earlier in this phase */
    NATIVE_NODE = 'N',           /* D: path, meta (device number in meta.rdev) */
    NATIVE_META = 'M',           /* D: path, meta of an entry whose content is unchanged */
    NATIVE_DELETE = 'X',         /* D: path */
} FerryNativeRecord;

/* Block size of the digests of phase C; files smaller than FERRY_NATIVE_DELTA_MIN are sent whole. */
#define FERRY_NATIVE_BLOCK_SIZE (64 * 1024)
#define FERRY_NATIVE_DELTA_MIN (1024 * 1024)
/* Digests of one file: up to this many blocks (a larger file gets larger blocks). */
#define FERRY_NATIVE_MAX_BLOCKS (1024 * 1024)
#define FERRY_NATIVE_DIGEST_SIZE 16
#define FERRY_NATIVE_MAX_PATH 4096

/* What phase A says about an entry: enough to tell whether it is the same as the sender's. */
typedef struct {
    guint32 mode, uid, gid;
    guint64 size; /* regular files */
    gint64 mtime_sec;
    guint32 mtime_nsec;
    guint64 rdev;
    guint64 xattr_digest;
    char *link_target; /* symlinks; NULL otherwise */
} FerryNativeSummary;

void ferry_native_summary_free(FerryNativeSummary *summary);
void ferry_native_summary_fill(FerryNativeSummary *summary, const struct stat *st, const FerryNativeMeta *meta,
                               const char *link_target);
gboolean ferry_native_put_summary(FerryNativeWriter *writer, const FerryNativeSummary *summary);
gboolean ferry_native_get_summary(FerryNativeReader *reader, FerryNativeSummary *summary);
/* Same type, mode, owner, times (not for directories), size, device, xattrs and symlink target. */
gboolean ferry_native_summary_equal(const FerryNativeSummary *a, const FerryNativeSummary *b);

/* Validate a relative path from the peer: non-empty components, no "." or "..", no leading or doubled "/",
 * at most FERRY_NATIVE_MAX_PATH bytes. The empty path (the root) only where allow_root. */
gboolean ferry_native_check_path(const char *path, gboolean allow_root);

/* After a failed pass: abort the channel (the peer stops too) and, when the pass was cancelled, make the error
 * say so rather than what the abort broke. */
void ferry_native_fail_pass(FerryByteChannel *channel, GCancellable *cancellable, GError **error);

/* A checked relpath's last component (borrowed from relpath) and its directory's path (newly allocated; "" for
 * the root). */
const char *ferry_native_split_path(const char *relpath, char **parent);
/* relpath's directory opened beneath root_fd without following a symlink, and its last component in *name. */
int ferry_native_open_parent(int root_fd, const char *relpath, const char **name, GError **error);

/* Block size the receiver uses for a file of this size. */
guint32 ferry_native_block_size(guint64 size);

G_END_DECLS
