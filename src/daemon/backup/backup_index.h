/* backup/index.yaml, the first entry of an Incus instance backup: what the tarball holds (instance name,
 * storage backend and pool, snapshot names oldest first, optimized or not, type) and, under "config", the
 * instance, its snapshots, pool, profiles and volume as Incus's backup.yaml has them (the same YAML field
 * names as the REST API's JSON). */
#pragma once

#include <glib.h>
#include <jansson.h>

G_BEGIN_DECLS

/* Largest index.yaml read: a backup's config is a few KiB per snapshot. */
#define FERRY_BACKUP_INDEX_MAX (16 * 1024 * 1024)

typedef struct {
    char *name;         /* instance name in the backup */
    char *backend;      /* storage driver it came from ("dir", "btrfs", ...) */
    char *pool;         /* storage pool it came from */
    char *type;         /* "container" */
    gboolean optimized; /* data as storage-driver streams (backup/container.bin) */
    gboolean optimized_header;
    GPtrArray *snapshots; /* names (char *), oldest first */
    json_t *config;       /* {container, snapshots, pool, profiles, volume, volume_snapshots}; never NULL */
} FerryBackupIndex;

void ferry_backup_index_free(FerryBackupIndex *index);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryBackupIndex, ferry_backup_index_free)

/* Parse and check an index.yaml. Refused (FERRY_ERROR_INVALID, "Invalid backup index.yaml: ..."): not YAML,
 * not a mapping, a missing or bad name, a type other than "container" (virtual machines and custom volumes
 * are 501), snapshot names that are not valid or repeat, no config.container. */
FerryBackupIndex *ferry_backup_index_parse(const char *text, gsize length, GError **error);

/* The config.snapshots entry of a snapshot (borrowed), or NULL. */
json_t *ferry_backup_index_snapshot_config(FerryBackupIndex *index, const char *snapshot);

/* index.yaml text. config has the backup.yaml keys (container, snapshots, pool, ...). */
char *ferry_backup_index_render(const char *name, const char *backend, const char *pool, GPtrArray *snapshots,
                                gboolean optimized, json_t *config, GError **error);

G_END_DECLS
