/* The migration's messages on the wire: protobuf on "control" (one message per binary websocket message, as
 * Incus frames them), JSON documents on "fs" (a sub-stream ended by a barrier). */
#pragma once

#include <jansson.h>

#include "migrate.pb-c.h"
#include "websocket.h"

G_BEGIN_DECLS

/* A header decoded from the wire (protobuf-c's allocation), as opposed to one we build (offer.h). */
typedef Migration__MigrationHeader FerryReceivedHeader;
void ferry_received_header_free(FerryReceivedHeader *header);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryReceivedHeader, ferry_received_header_free)

gboolean ferry_migration_send_header(FerryWebsocket *control, const Migration__MigrationHeader *header,
                                     GError **error);
/* The peer's header. A MigrationControl{success=false} in its place is the peer failing: its message becomes
 * the error ("<peer> failed: ..."), as Incus's receivers read it. */
FerryReceivedHeader *ferry_migration_receive_header(FerryWebsocket *control, const char *peer,
                                                           GCancellable *cancellable, GError **error);

gboolean ferry_migration_send_control(FerryWebsocket *control, gboolean success, const char *message,
                                      GError **error);
/* Wait for the peer's MigrationControl: TRUE when it reports success; otherwise an error carrying its message
 * (or saying the connection dropped). */
gboolean ferry_migration_receive_control(FerryWebsocket *control, const char *peer, GCancellable *cancellable,
                                         GError **error);

/* A JSON document as one sub-stream of fs: binary message(s), then a barrier. */
gboolean ferry_migration_send_json(FerryWebsocket *fs, json_t *value, GError **error);
json_t *ferry_migration_receive_json(FerryWebsocket *fs, GCancellable *cancellable, GError **error);

/* Incus's numeric architecture ids in Snapshot.architecture. */
int ferry_migration_architecture_id(const char *name);
const char *ferry_migration_architecture_name(int id);

G_END_DECLS
