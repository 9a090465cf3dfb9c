/* Moving instances between servers with Incus's migration protocol (docs/protocol/incus-migration-wire.md):
 * the source side (POST /1.0/instances/<name> {"migration": true}) and the sink side (POST /1.0/instances with
 * source type "migration"), in pull and push modes. Relay is pull on the source and push on the sink, with
 * the client joining them. */
#pragma once

#include "router.h"

G_BEGIN_DECLS

/* Source: snapshot is NULL to send the instance, or the snapshot to send as a new instance. */
FerryResponse *ferry_migration_source_start(FerryRequest *request, const char *snapshot);

/* Sink: the POST /1.0/instances request with source.type "migration". */
FerryResponse *ferry_migration_sink_start(FerryRequest *request);

G_END_DECLS
