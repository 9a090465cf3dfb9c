/* What the two sides tell each other: the MigrationHeader offer and response, snapshots as protobuf, and the
 * JSON index header that precedes the data on fs. */
#pragma once

#include <jansson.h>

#include "daemon.h"
#include "migrate.pb-c.h"

G_BEGIN_DECLS

/* Incus's "zero time" in Unix seconds: what it sends for "never". */
#define FERRY_GO_ZERO_TIME_UNIX (-62135596800LL)

/* A heap-allocated header (free with ferry_offer_free). */
Migration__MigrationHeader *ferry_offer_new(void);
void ferry_offer_free(Migration__MigrationHeader *header);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Migration__MigrationHeader, ferry_offer_free)

void ferry_offer_set_rsync_features(Migration__MigrationHeader *header, gboolean xattrs, gboolean delete,
                                    gboolean compress, gboolean bidirectional);
void ferry_offer_set_btrfs_features(Migration__MigrationHeader *header, gboolean migration_header,
                                    gboolean subvolumes, gboolean subvolume_uuids);
void ferry_offer_set_idmap(Migration__MigrationHeader *header, const char *last_state_idmap_json);
/* snapshot: a rendered Incus snapshot object (ferry_snapshot_render). */
void ferry_offer_add_snapshot(Migration__MigrationHeader *header, json_t *snapshot);
/* ferry's own field: version 1 = rsync keeps hard links; version 3 = ferry's native transport (native.h), with
 * blocks compressed where it pays when compress. Version 2 was the native transport with each phase one zstd
 * frame: a source offering it gets rsync, a target answering with it an error (source.c). An Incus peer
 * ignores the field. */
#define FERRY_OFFER_VERSION_HARD_LINKS 1
#define FERRY_OFFER_VERSION_NATIVE 3
void ferry_offer_set_ferry(Migration__MigrationHeader *header, guint64 total_bytes, guint32 version,
                           gboolean compress);
/* The version the peer's header offers or agreed to (0: not ferry). */
guint32 ferry_offer_ferry_version(const Migration__MigrationHeader *header);

/* The index header's Incus "backup config" (Go field names as keys, as Incus sends them). */
json_t *ferry_offer_index_header(FerryDaemon *daemon, const char *project, json_t *instance, json_t *snapshots,
                                 const char *pool_name, gboolean include_container);

/* Case-insensitive member lookup: Incus's Go decoder reads "Snapshots" and "snapshots" alike. */
json_t *ferry_offer_member(json_t *object, const char *key);

/* The on-disk id map the offer's idmap entries describe, as volatile.last_state.idmap JSON ("[]" if none). */
char *ferry_offer_idmap_json(const Migration__MigrationHeader *header);

G_END_DECLS
