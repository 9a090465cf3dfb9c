/* The websockets of one migration (control, fs, and later criu), whichever side dials: the listening side
 * publishes one-time secrets in its operation and accepts one connection per secret; the dialling side
 * connects to the peer's operation with those secrets, pinning the peer's server certificate. */
#pragma once

#include <jansson.h>

#include "operations.h"
#include "websocket.h"

G_BEGIN_DECLS

typedef struct _FerryMigrationLink FerryMigrationLink;

FerryMigrationLink *ferry_migration_link_new(void);
void ferry_migration_link_free(FerryMigrationLink *link);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryMigrationLink, ferry_migration_link_free)

/* Listening side: make a secret per channel on op and route op's websocket connections here. Returns the
 * secrets map {"control": "...", "fs": "..."} (new reference) for the operation's metadata. */
json_t *ferry_migration_link_listen(FerryMigrationLink *link, FerryOperation *op, const char *const *channels);
/* The connect function to install on op (ferry_operation_set_connect) with the link as the op's data owner's
 * responsibility: ferry_migration_link_connect is what it must call. */
gboolean ferry_migration_link_connect(FerryMigrationLink *link, FerryOperation *op, SoupServerMessage *msg,
                                      const char *channel, GError **error);
/* Wait until the named channel is connected (timeout in seconds). The cancellable given here or to
 * ferry_migration_link_dial is taken as the migration's own (see ferry_migration_link_get_cancellable). */
gboolean ferry_migration_link_wait(FerryMigrationLink *link, const char *channel, guint timeout_seconds,
                                   GCancellable *cancellable, GError **error);

/* Dialling side: connect every channel of secrets to operation_url (https://host:port/1.0/operations/<id>),
 * trusting exactly certificate_pem. */
gboolean ferry_migration_link_dial(FerryMigrationLink *link, const char *operation_url, json_t *secrets,
                                   const char *certificate_pem, GCancellable *cancellable, GError **error);

/* The websocket of a connected channel (borrowed), NULL if not connected. */
FerryWebsocket *ferry_migration_link_get(FerryMigrationLink *link, const char *channel);

/* The bandwidth limit in bytes/s that applies to this migration's data (0 = none): the smaller of the
 * server's migration.bandwidth (ferry's key, every stream) and the pool's rsync.bwlimit (Incus's key). */
typedef struct _FerryDaemon FerryDaemon;
typedef struct _FerryPool FerryPool;
guint64 ferry_migration_bandwidth_limit(FerryDaemon *daemon, FerryPool *pool);
/* Apply migration.bandwidth to every connected channel's sends. */
void ferry_migration_link_limit(FerryMigrationLink *link, guint64 bytes_per_second);

/* Unblock every reader and writer (a failure somewhere: nobody may hang). */
void ferry_migration_link_abort(FerryMigrationLink *link);
/* At the end of a migration, when nobody uses the channels any more: abort and close them now rather than when
 * the operation is dropped (minutes later), so a busy server does not hold their sockets. */
void ferry_migration_link_release(FerryMigrationLink *link);

/* The migration's cancellable (from wait or dial; borrowed, NULL before). */
GCancellable *ferry_migration_link_get_cancellable(FerryMigrationLink *link);

/* The peer's verdict on control (its message, or the control connection ending), for a data pass that failed
 * because of the peer and would rather report what the peer says than the broken stream: the control monitor
 * announces that it is watching and then that the verdict is in; a data pass waits for it (timeout in ms).
 * Returns at once, FALSE, when nobody watches control or the migration is cancelled. */
void ferry_migration_link_watch_verdict(FerryMigrationLink *link);
void ferry_migration_link_set_verdict(FerryMigrationLink *link);
gboolean ferry_migration_link_wait_verdict(FerryMigrationLink *link, guint timeout_ms);

G_END_DECLS
