/* Reading an instance backup tarball (Incus's layout) and extracting it beneath destinations the caller
 * chooses, one per tree: backup/container/ for the instance, backup/snapshots/<name>/ for each snapshot.
 *
 * backup/index.yaml must come before any data (Incus and ferry write it first); the caller sees it, checks it
 * and prepares destinations before a byte of data is written. Every entry is checked: no absolute paths or
 * '..' components, hard links only to an earlier entry of the same tree, entries outside the known layout
 * refused, each tree contiguous, every snapshot named by index.yaml present and no other. Data is written
 * through image_extract (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS beneath each destination, leaves made
 * afresh), so a hostile archive cannot write outside them. Owners beneath rootfs/ get the caller's shift.
 *
 * Errors are FERRY_ERROR_INVALID with a message saying what is wrong ("Invalid backup: ...", "Backup file is
 * not a tarball ...", "Backup tarball is corrupt or truncated: ...", "Unsafe path ..."), 500 for what the
 * system refused. On failure what was written stays in the destinations, for the caller to remove. */
#pragma once

#include "backup_index.h"
#include "image_reader.h"

#include <gio/gio.h>

G_BEGIN_DECLS

/* Reads up to size bytes of an entry's data: the count, 0 at its end, -1 with error set. */
typedef gssize (*FerryBackupStreamRead)(gpointer stream, void *buffer, gsize size, GError **error);

typedef struct {
    /* index.yaml is read: check it, claim names; FALSE stops the import with error. */
    gboolean (*index)(FerryBackupIndex *index, gpointer user_data, GError **error);
    /* The existing, empty directory that receives a tree (snapshot NULL: the instance), and the id shift for
     * its rootfs/ (0: none). */
    char *(*tree_begin)(const char *snapshot, guint32 *shift, gpointer user_data, GError **error);
    /* All of a tree's entries are written. */
    gboolean (*tree_end)(const char *snapshot, gpointer user_data, GError **error);
    /* Bytes of the (compressed) file consumed so far, and its size. */
    void (*progress)(guint64 done, guint64 total, gpointer user_data);
    /* Optimized backups (index.yaml's optimized: true; NULL: they are refused, 501). Their layout has no
     * trees: backup/optimized_header.yaml (header: its YAML as JSON), which must come before any stream,
     * then one storage stream per snapshot (backup/snapshots/<name>.bin, in index.yaml's order, oldest
     * first) and last the instance's (backup/container.bin, snapshot NULL). stream reads the entry's data;
     * what the callback leaves unread is an error. */
    gboolean (*optimized_header)(json_t *header, gpointer user_data, GError **error);
    gboolean (*optimized_stream)(const char *snapshot, FerryBackupStreamRead read, gpointer stream,
                                 gpointer user_data, GError **error);
} FerryBackupReadCallbacks;

gboolean ferry_backup_archive_read(const char *path, const FerryBackupReadCallbacks *callbacks,
                                   gpointer user_data, GCancellable *cancellable, GError **error);
/* The same from a stream (an upload as it arrives); size is its length when known (0: unknown). */
gboolean ferry_backup_archive_read_stream(ImageReadFunc read, gpointer read_data, guint64 size,
                                          const FerryBackupReadCallbacks *callbacks, gpointer user_data,
                                          GCancellable *cancellable, GError **error);

G_END_DECLS
