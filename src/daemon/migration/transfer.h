/* One rsync pass of a directory over the migration's fs channel, with progress reported on the operation. */
#pragma once

#include "link.h"
#include "native.h"
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

/* How a pass moves a directory: rsync (any peer), or ferry's native transport when both ends are ferry. */
typedef struct {
    FerryRsyncOptions rsync; /* the RSYNC transport's negotiated options (allow_inconsistent applies to both) */
    gboolean native;
    gboolean zstd; /* native: compress the stream */
    /* native, receiving: the receiving directory is still being made a copy of basis_dir (see native.h). */
    const char *basis_dir;
    gboolean (*wait_ready)(gpointer data, GError **error);
    gpointer wait_data;
} FerryTransferOptions;

/* The fs channel as a byte channel (for transports other than rsync); FALSE when fs is not connected. */
gboolean ferry_transfer_channel(FerryMigrationLink *link, FerryByteChannel *channel_out, GError **error);

/* After a failed pass: when the trouble began at the peer (FERRY_ERROR_UNAVAILABLE), give its verdict on control
 * a moment to arrive, so the user hears the cause rather than our broken stream. */
void ferry_transfer_await_peer(FerryMigrationLink *link, const GError *error);
/* The message a failed side reports: its own error, unless that only echoes the peer's failure. */
char *ferry_transfer_failure_reason(const GError *local_error, const char *peer_failure);

gboolean ferry_transfer_send_dir(FerryMigrationLink *link, const char *dir, const FerryTransferOptions *options,
                                 FerryTransferProgress *progress, GCancellable *cancellable, GError **error);
gboolean ferry_transfer_receive_dir(FerryMigrationLink *link, const char *dir, const FerryTransferOptions *options,
                                    FerryTransferProgress *progress, GCancellable *cancellable, GError **error);

G_END_DECLS
