/* One rsync pass of a directory over the migration's fs channel, with progress reported on the operation. */
#pragma once

#include "link.h"
#include "operations.h"
#include "rsync.h"

G_BEGIN_DECLS

typedef struct {
    FerryOperation *op;       /* progress goes to its metadata ("fs_progress" + "progress") */
    guint64 total_bytes;      /* 0 when unknown */
    guint64 done_bytes;       /* across passes */
    const char *stage;        /* "snapshot snap0", "instance", "final sync" */
    guint64 pass_bytes;       /* internal: bytes of the pass under way */
} FerryTransferProgress;

/* The fs channel as a byte channel (for transports other than rsync); FALSE when fs is not connected. */
gboolean ferry_transfer_channel(FerryMigrationLink *link, FerryByteChannel *channel_out, GError **error);

gboolean ferry_transfer_send_dir(FerryMigrationLink *link, const char *dir, const FerryRsyncOptions *options,
                                 FerryTransferProgress *progress, GCancellable *cancellable, GError **error);
gboolean ferry_transfer_receive_dir(FerryMigrationLink *link, const char *dir, const FerryRsyncOptions *options,
                                    FerryTransferProgress *progress, GCancellable *cancellable, GError **error);

G_END_DECLS
