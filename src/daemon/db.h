/* The node database: SQLite (WAL) with versioned schema updates.
 *
 * Each entity is a row keyed the way Incus keys it (project + name, fingerprint, ...) with its Incus-shaped
 * body (config, devices, description, ...) kept as a JSON document column: the API reads and writes whole
 * objects, and SQLite's JSON1 functions answer the few questions that look inside (which instances use a
 * profile). See docs/decisions/0002-db-json-documents.md. All functions are thread-safe. */
#pragma once

#include <glib.h>
#include <jansson.h>

G_BEGIN_DECLS

typedef struct _FerryDb FerryDb;

FerryDb *ferry_db_open(const char *path, GError **error);
void ferry_db_close(FerryDb *db);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryDb, ferry_db_close)

int ferry_db_schema_version(FerryDb *db);
int ferry_db_schema_latest(void);

/* A transaction around several calls (the lock is recursive: calls inside keep working). */
void ferry_db_begin(FerryDb *db);
gboolean ferry_db_commit(FerryDb *db, GError **error);
void ferry_db_rollback(FerryDb *db);

/* Server config (core.https_address, ...). */
char *ferry_db_config_get(FerryDb *db, const char *key);
gboolean ferry_db_config_set(FerryDb *db, const char *key, const char *value /* NULL deletes */, GError **error);
json_t *ferry_db_config_all(FerryDb *db);

/* Generic documents. kind is one of the tables below; project is "" for global kinds; parent is "" except
 * for snapshots (the instance name). Documents are JSON objects; created_at is kept by the DB. */
typedef enum {
    FERRY_KIND_PROJECT,
    FERRY_KIND_PROFILE,
    FERRY_KIND_POOL,
    FERRY_KIND_IMAGE,
    FERRY_KIND_IMAGE_ALIAS,
    FERRY_KIND_INSTANCE,
    FERRY_KIND_SNAPSHOT,
    FERRY_KIND_CERTIFICATE,
    FERRY_KIND_TOKEN,
    FERRY_KIND_VOLUME,
} FerryKind;

const char *ferry_kind_label(FerryKind kind); /* "Instance", "Profile", ... for error messages */

/* Fetch one; 404 FERRY_ERROR with "<Kind> "name" not found" when absent. */
json_t *ferry_db_get(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name,
                     GError **error);
gboolean ferry_db_exists(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name);
/* Insert; 409 "<Kind> "name" already exists" when taken. */
gboolean ferry_db_create(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name,
                         json_t *doc, GError **error);
/* Replace the document; 404 when absent. */
gboolean ferry_db_update(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name,
                         json_t *doc, GError **error);
gboolean ferry_db_rename(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name,
                         const char *new_name, GError **error);
/* Delete; 404 when absent. Deleting an instance deletes its snapshot rows. */
gboolean ferry_db_delete(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name,
                         GError **error);
/* Names in creation order (project NULL = every project); documents with "name" (and "project") set. */
GPtrArray *ferry_db_list_names(FerryDb *db, FerryKind kind, const char *project, const char *parent);
json_t *ferry_db_list(FerryDb *db, FerryKind kind, const char *project, const char *parent);
/* Creation time (µs since the epoch) of a row, 0 when absent. */
gint64 ferry_db_created_at(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name);

/* Instances (project, name) whose document field "profiles" contains profile. */
GPtrArray *ferry_db_instances_using_profile(FerryDb *db, const char *project, const char *profile);
/* Count rows of a kind whose document's string field at JSON path (e.g. "$.pool") equals value. */
gint64 ferry_db_count_where(FerryDb *db, FerryKind kind, const char *json_path, const char *value);

G_END_DECLS
