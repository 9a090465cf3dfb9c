/* Importing an instance from a backup tarball (Incus's layout, from Incus or ferry): the index is checked and
 * the instance's row inserted as "creating" before any data is written; each tree is extracted beneath its
 * own destination (the new volume, a snapshot directory or, on btrfs, a staging subvolume that becomes the
 * snapshot); the snapshot rows and the finished instance row are written in one transaction at the end. Any
 * failure removes everything: volume, snapshots, staging, rows. */
#pragma once

#include "daemon.h"
#include "image_reader.h"
#include "operations.h"

G_BEGIN_DECLS

/* name and pool override the backup's (NULL: keep them; a pool the backup names that does not exist here
 * falls back to the profiles' root disk). Errors: 409 name taken, 404 pool or profile missing, 400 for
 * everything wrong with the archive (see backup_reader.h), 501 for what ferry can't import. */
gboolean ferry_backup_import(FerryDaemon *daemon, FerryOperation *op, const char *project, const char *path,
                             const char *name, const char *pool, GError **error);

/* The same, reading the tarball from a stream as it arrives (size: its length when known, else 0). */
gboolean ferry_backup_import_stream(FerryDaemon *daemon, FerryOperation *op, const char *project,
                                    ImageReadFunc read, gpointer read_data, guint64 size, const char *name,
                                    const char *pool, GError **error);

G_END_DECLS
