/* Writing an instance backup tarball with libarchive: pax tar through zstd (multithreaded), gzip, xz or no
 * compression, handed to a write function as it is produced (nothing is spooled on disk).
 *
 * Trees are walked through directory fds without ever following a symbolic link or crossing into another
 * mount; owners are written as the container sees them (host ids in [base, base + range) lose base, and so do
 * the ids in POSIX ACLs and the root id of file capabilities), which is how Incus stores them. Modes, xattrs
 * (ACLs as system.posix_acl_* xattrs, as Incus writes them), symbolic links, hard links (once per inode),
 * sparse files (their holes are not stored), device nodes, FIFOs and mtimes are kept; sockets are left out.
 */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef enum {
    FERRY_BACKUP_COMPRESSION_NONE,
    FERRY_BACKUP_COMPRESSION_ZSTD,
    FERRY_BACKUP_COMPRESSION_GZIP,
    FERRY_BACKUP_COMPRESSION_XZ,
} FerryBackupCompression;

/* "zstd" (also "" and NULL: the default), "gzip", "xz", "none". Anything else is 400 naming the choices. */
gboolean ferry_backup_compression_parse(const char *name, FerryBackupCompression *out, GError **error);
const char *ferry_backup_compression_name(FerryBackupCompression compression);
/* ".tar.zst", ".tar.gz", ".tar.xz", ".tar" */
const char *ferry_backup_compression_extension(FerryBackupCompression compression);

/* Receives the compressed stream; FALSE with error set stops the backup. */
typedef gboolean (*FerryBackupWriteFunc)(const void *data, gsize size, gpointer user_data, GError **error);
/* Bytes of file data read so far. */
typedef void (*FerryBackupProgressFunc)(guint64 done, gpointer user_data);

typedef struct FerryBackupWriter FerryBackupWriter;

FerryBackupWriter *ferry_backup_writer_new(FerryBackupCompression compression, FerryBackupWriteFunc write,
                                           gpointer user_data, GCancellable *cancellable, GError **error);
void ferry_backup_writer_free(FerryBackupWriter *writer);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryBackupWriter, ferry_backup_writer_free)

void ferry_backup_writer_set_progress(FerryBackupWriter *writer, FerryBackupProgressFunc progress,
                                      gpointer user_data);

/* A regular file (mode 0644-style permissions, owned by root, mtime now) with the given contents. */
gboolean ferry_backup_writer_add_file(FerryBackupWriter *writer, const char *path, const void *data,
                                      gsize size, mode_t mode, GError **error);

/* A regular file of size bytes (permissions from mode, owned by root, mtime now) whose data comes in pieces
 * through write_data, as it is produced (counted as file data for progress). end_file refuses an entry that
 * got less or more than size: libarchive would pad or cut it silently. */
gboolean ferry_backup_writer_begin_file(FerryBackupWriter *writer, const char *path, guint64 size, mode_t mode,
                                        GError **error);
gboolean ferry_backup_writer_write_data(FerryBackupWriter *writer, const void *data, gsize size,
                                        GError **error);
gboolean ferry_backup_writer_end_file(FerryBackupWriter *writer, GError **error);

/* The directory source_dir as the entry prefix (its mode and mtime) and everything beneath it as prefix/...
 * Host ids in [unshift_base, unshift_base + unshift_range) are written minus unshift_base (range 0: as is).
 */
gboolean ferry_backup_writer_add_tree(FerryBackupWriter *writer, const char *source_dir, const char *prefix,
                                      guint32 unshift_base, guint32 unshift_range, GError **error);

/* Finish the archive (end blocks, compressor flush). */
gboolean ferry_backup_writer_close(FerryBackupWriter *writer, GError **error);

/* Bytes of regular file data beneath dir (hard-linked files once), for progress totals. */
gboolean ferry_backup_tree_size(const char *dir, guint64 *bytes_out, GCancellable *cancellable,
                                GError **error);

G_END_DECLS
