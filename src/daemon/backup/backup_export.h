/* Exporting an instance as an Incus-format backup tarball, streamed as it is made (see
 * docs/decisions/0006-export-streams.md): index.yaml, then each snapshot (oldest first) under
 * backup/snapshots/<name>/, then the instance under backup/container/. Owners are written as the container
 * sees them and the config says so (volatile.last_state.idmap "[]"), as Incus's exports do. */
#pragma once

#include "backup_writer.h"
#include "daemon.h"
#include "operations.h"

G_BEGIN_DECLS

typedef struct {
    gboolean instance_only;
    /* btrfs send streams (backup_btrfs.h) on btrfs pools; elsewhere ignored, as Incus ignores it where a
     * driver has no optimized form */
    gboolean optimized;
    FerryBackupCompression compression;
} FerryBackupOptions;

/* Write the backup of project/name through write. With op, progress (bytes of file data read, against the
 * total found by a walk first) is reported as "create_backup_progress" and ferry's "progress" object, and
 * the operation's cancellable stops it. 404 for an unknown instance. */
gboolean ferry_backup_export(FerryDaemon *daemon, FerryOperation *op, const char *project, const char *name,
                             const FerryBackupOptions *options, FerryBackupWriteFunc write,
                             gpointer user_data, GError **error);

G_END_DECLS
