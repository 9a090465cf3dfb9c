/* Both sides of a migration keep a reader on "control" while data flows: a failure message from the peer, or
 * the connection dropping, must stop the local transfer at once (by aborting the link) instead of leaving it
 * blocked on a dead stream. */
#pragma once

#include "link.h"

G_BEGIN_DECLS

typedef struct _FerryControlMonitor FerryControlMonitor;

/* Start reading control on a thread. peer names the other side in errors ("target", "source"). */
FerryControlMonitor *ferry_control_monitor_start(FerryMigrationLink *link, const char *peer);
/* Wait for the peer's verdict: TRUE when it sent MigrationControl{success}; with accept_close, a clean close of
 * the connection also counts as success (the sink waits for the source to close, as Incus's source never sends
 * a success message). timeout_seconds < 0 waits until then, or until the migration's cancellable (the link's)
 * is cancelled: FERRY_ERROR_CANCELLED. */
gboolean ferry_control_monitor_finish(FerryControlMonitor *monitor, gboolean accept_close, int timeout_seconds,
                                      GError **error);
/* Has the peer reported a failure already? Its message, or NULL (borrowed, valid until finish). */
const char *ferry_control_monitor_peer_failure(FerryControlMonitor *monitor);
/* Did the peer send a failure message (rather than the connection just dropping)? */
gboolean ferry_control_monitor_peer_reported(FerryControlMonitor *monitor);
void ferry_control_monitor_free(FerryControlMonitor *monitor);

G_END_DECLS
