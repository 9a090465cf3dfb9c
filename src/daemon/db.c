#include "db.h"

#include "error.h"
#include "json.h"

#include <sqlite3.h>

struct _FerryDb {
    sqlite3 *handle;
    GRecMutex lock; /* one connection, serialised: simple and enough for a node database */
};

/* Each entry moves the schema one version up; never edit an entry once released, add a new one. */
static const char *const schema_updates[] = {
    /* 1: initial schema */
    "CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE objects ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  kind INTEGER NOT NULL,"
    "  project TEXT NOT NULL,"
    "  parent TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  doc TEXT NOT NULL CHECK (json_valid(doc)),"
    "  created_at INTEGER NOT NULL,"
    "  UNIQUE (kind, project, parent, name));"
    "CREATE INDEX objects_parent ON objects (kind, project, parent);",
};

static const char *const kind_labels[] = {
    [FERRY_KIND_PROJECT] = "Project",         [FERRY_KIND_PROFILE] = "Profile",
    [FERRY_KIND_POOL] = "Storage pool",       [FERRY_KIND_IMAGE] = "Image",
    [FERRY_KIND_IMAGE_ALIAS] = "Image alias", [FERRY_KIND_INSTANCE] = "Instance",
    [FERRY_KIND_SNAPSHOT] = "Snapshot",       [FERRY_KIND_CERTIFICATE] = "Certificate",
    [FERRY_KIND_TOKEN] = "Token",             [FERRY_KIND_VOLUME] = "Storage volume",
};

const char *ferry_kind_label(FerryKind kind)
{
    return kind_labels[kind];
}

static gboolean set_sqlite_error(FerryDb *db, GError **error, const char *what)
{
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Database error while %s: %s", what,
                sqlite3_errmsg(db->handle));
    return FALSE;
}

static gboolean exec_sql(FerryDb *db, const char *sql, GError **error)
{
    char *message = NULL;
    if (sqlite3_exec(db->handle, sql, NULL, NULL, &message) != SQLITE_OK) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Database error: %s", message);
        sqlite3_free(message);
        return FALSE;
    }
    return TRUE;
}

int ferry_db_schema_latest(void)
{
    return G_N_ELEMENTS(schema_updates);
}

int ferry_db_schema_version(FerryDb *db)
{
    g_rec_mutex_lock(&db->lock);
    sqlite3_stmt *stmt = NULL;
    int version = 0;
    if (sqlite3_prepare_v2(db->handle, "PRAGMA user_version", -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        version = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    g_rec_mutex_unlock(&db->lock);
    return version;
}

static gboolean apply_schema_updates(FerryDb *db, GError **error)
{
    int current = ferry_db_schema_version(db);
    if (current > ferry_db_schema_latest()) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "Database schema version %d is newer than this ferryd supports (%d)", current,
                    ferry_db_schema_latest());
        return FALSE;
    }
    for (int version = current; version < ferry_db_schema_latest(); version++) {
        g_autofree char *sql = g_strdup_printf("BEGIN; %s PRAGMA user_version = %d; COMMIT;",
                                               schema_updates[version], version + 1);
        if (!exec_sql(db, sql, error)) {
            exec_sql(db, "ROLLBACK", NULL);
            g_prefix_error(error, "Failed to update database schema to version %d: ", version + 1);
            return FALSE;
        }
    }
    return TRUE;
}

FerryDb *ferry_db_open(const char *path, GError **error)
{
    g_autofree char *dir = g_path_get_dirname(path);
    if (g_mkdir_with_parents(dir, 0700) < 0) {
        ferry_set_error_errno(error, errno, "Failed to create %s", dir);
        return NULL;
    }
    FerryDb *db = g_new0(FerryDb, 1);
    g_rec_mutex_init(&db->lock);
    if (sqlite3_open_v2(path, &db->handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        set_sqlite_error(db, error, "opening the database");
        ferry_db_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db->handle, 5000);
    if (!exec_sql(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                  error) ||
        !apply_schema_updates(db, error)) {
        ferry_db_close(db);
        return NULL;
    }
    return db;
}

void ferry_db_close(FerryDb *db)
{
    if (db == NULL)
        return;
    sqlite3_close_v2(db->handle);
    g_rec_mutex_clear(&db->lock);
    g_free(db);
}

void ferry_db_begin(FerryDb *db)
{
    g_rec_mutex_lock(&db->lock);
    exec_sql(db, "BEGIN IMMEDIATE", NULL);
}

gboolean ferry_db_commit(FerryDb *db, GError **error)
{
    gboolean ok = exec_sql(db, "COMMIT", error);
    if (!ok)
        exec_sql(db, "ROLLBACK", NULL);
    g_rec_mutex_unlock(&db->lock);
    return ok;
}

void ferry_db_rollback(FerryDb *db)
{
    exec_sql(db, "ROLLBACK", NULL);
    g_rec_mutex_unlock(&db->lock);
}

/* Prepared statement with text parameters bound in order; NULL parameters bind SQL NULL. */
static sqlite3_stmt *prepare(FerryDb *db, const char *sql, GError **error, int count, ...)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db->handle, sql, -1, &stmt, NULL) != SQLITE_OK) {
        set_sqlite_error(db, error, "preparing a query");
        return NULL;
    }
    va_list args;
    va_start(args, count);
    for (int i = 0; i < count; i++) {
        const char *value = va_arg(args, const char *);
        sqlite3_bind_text(stmt, i + 1, value, -1, SQLITE_TRANSIENT);
    }
    va_end(args);
    return stmt;
}

char *ferry_db_config_get(FerryDb *db, const char *key)
{
    g_rec_mutex_lock(&db->lock);
    char *value = NULL;
    sqlite3_stmt *stmt = prepare(db, "SELECT value FROM config WHERE key = ?", NULL, 1, key);
    if (stmt != NULL && sqlite3_step(stmt) == SQLITE_ROW)
        value = g_strdup((const char *)sqlite3_column_text(stmt, 0));
    sqlite3_finalize(stmt);
    g_rec_mutex_unlock(&db->lock);
    return value;
}

gboolean ferry_db_config_set(FerryDb *db, const char *key, const char *value, GError **error)
{
    g_rec_mutex_lock(&db->lock);
    sqlite3_stmt *stmt =
        value != NULL
            ? prepare(db, "INSERT INTO config (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                          "excluded.value",
                      error, 2, key, value)
            : prepare(db, "DELETE FROM config WHERE key = ?", error, 1, key);
    gboolean ok = stmt != NULL && (sqlite3_step(stmt) == SQLITE_DONE || set_sqlite_error(db, error, "saving config"));
    sqlite3_finalize(stmt);
    g_rec_mutex_unlock(&db->lock);
    return ok;
}

json_t *ferry_db_config_all(FerryDb *db)
{
    g_rec_mutex_lock(&db->lock);
    json_t *config = json_object();
    sqlite3_stmt *stmt = prepare(db, "SELECT key, value FROM config ORDER BY key", NULL, 0);
    while (stmt != NULL && sqlite3_step(stmt) == SQLITE_ROW)
        json_object_set_new(config, (const char *)sqlite3_column_text(stmt, 0),
                            json_string((const char *)sqlite3_column_text(stmt, 1)));
    sqlite3_finalize(stmt);
    g_rec_mutex_unlock(&db->lock);
    return config;
}

static void set_not_found(GError **error, FerryKind kind, const char *parent, const char *name)
{
    if (kind == FERRY_KIND_SNAPSHOT)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Snapshot \"%s/%s\" not found", parent, name);
    else
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "%s \"%s\" not found", kind_labels[kind], name);
}

static json_t *row_document(sqlite3_stmt *stmt, int doc_column)
{
    const char *text = (const char *)sqlite3_column_text(stmt, doc_column);
    json_t *doc = json_loads(text != NULL ? text : "{}", 0, NULL);
    return doc != NULL ? doc : json_object();
}

json_t *ferry_db_get(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name,
                     GError **error)
{
    g_rec_mutex_lock(&db->lock);
    g_autofree char *kind_text = g_strdup_printf("%d", kind);
    json_t *doc = NULL;
    sqlite3_stmt *stmt = prepare(db,
                                 "SELECT doc FROM objects WHERE kind = ? AND project = ? AND parent = ? AND name = ?",
                                 error, 4, kind_text, project ? project : "", parent ? parent : "", name);
    if (stmt != NULL) {
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW)
            doc = row_document(stmt, 0);
        else if (rc == SQLITE_DONE)
            set_not_found(error, kind, parent, name);
        else
            set_sqlite_error(db, error, "reading");
    }
    sqlite3_finalize(stmt);
    g_rec_mutex_unlock(&db->lock);
    return doc;
}

gboolean ferry_db_exists(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name)
{
    g_autoptr(json_t) doc = ferry_db_get(db, kind, project, parent, name, NULL);
    return doc != NULL;
}

gint64 ferry_db_created_at(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name)
{
    g_rec_mutex_lock(&db->lock);
    g_autofree char *kind_text = g_strdup_printf("%d", kind);
    gint64 created = 0;
    sqlite3_stmt *stmt =
        prepare(db, "SELECT created_at FROM objects WHERE kind = ? AND project = ? AND parent = ? AND name = ?",
                NULL, 4, kind_text, project ? project : "", parent ? parent : "", name);
    if (stmt != NULL && sqlite3_step(stmt) == SQLITE_ROW)
        created = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    g_rec_mutex_unlock(&db->lock);
    return created;
}

gboolean ferry_db_create(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name,
                         json_t *doc, GError **error)
{
    g_rec_mutex_lock(&db->lock);
    g_autofree char *kind_text = g_strdup_printf("%d", kind);
    g_autofree char *doc_text = ferry_json_dump(doc);
    g_autofree char *now = g_strdup_printf("%" G_GINT64_FORMAT, g_get_real_time());
    gboolean ok = FALSE;
    sqlite3_stmt *stmt = prepare(
        db, "INSERT INTO objects (kind, project, parent, name, doc, created_at) VALUES (?, ?, ?, ?, ?, ?)", error, 6,
        kind_text, project ? project : "", parent ? parent : "", name, doc_text, now);
    if (stmt != NULL) {
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_DONE)
            ok = TRUE;
        else if (sqlite3_extended_errcode(db->handle) == SQLITE_CONSTRAINT_UNIQUE) {
            if (kind == FERRY_KIND_SNAPSHOT)
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Snapshot \"%s/%s\" already exists", parent,
                            name);
            else
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "%s \"%s\" already exists",
                            kind_labels[kind], name);
        } else
            set_sqlite_error(db, error, "creating");
    }
    sqlite3_finalize(stmt);
    g_rec_mutex_unlock(&db->lock);
    return ok;
}

/* Run a statement that must change exactly one row; 404 otherwise. */
static gboolean change_one(FerryDb *db, sqlite3_stmt *stmt, FerryKind kind, const char *parent, const char *name,
                           GError **error)
{
    if (stmt == NULL)
        return FALSE;
    int rc = sqlite3_step(stmt);
    gboolean ok = FALSE;
    if (rc != SQLITE_DONE) {
        if (sqlite3_extended_errcode(db->handle) == SQLITE_CONSTRAINT_UNIQUE)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "%s name is already in use", kind_labels[kind]);
        else
            set_sqlite_error(db, error, "writing");
    } else if (sqlite3_changes(db->handle) == 0)
        set_not_found(error, kind, parent, name);
    else
        ok = TRUE;
    sqlite3_finalize(stmt);
    return ok;
}

gboolean ferry_db_update(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name,
                         json_t *doc, GError **error)
{
    g_rec_mutex_lock(&db->lock);
    g_autofree char *kind_text = g_strdup_printf("%d", kind);
    g_autofree char *doc_text = ferry_json_dump(doc);
    sqlite3_stmt *stmt =
        prepare(db, "UPDATE objects SET doc = ? WHERE kind = ? AND project = ? AND parent = ? AND name = ?", error,
                5, doc_text, kind_text, project ? project : "", parent ? parent : "", name);
    gboolean ok = change_one(db, stmt, kind, parent, name, error);
    g_rec_mutex_unlock(&db->lock);
    return ok;
}

gboolean ferry_db_rename(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name,
                         const char *new_name, GError **error)
{
    g_rec_mutex_lock(&db->lock);
    g_autofree char *kind_text = g_strdup_printf("%d", kind);
    g_autofree char *snapshot_kind = g_strdup_printf("%d", FERRY_KIND_SNAPSHOT);
    exec_sql(db, "SAVEPOINT rename_object", NULL);
    sqlite3_stmt *stmt =
        prepare(db, "UPDATE objects SET name = ? WHERE kind = ? AND project = ? AND parent = ? AND name = ?", error,
                5, new_name, kind_text, project ? project : "", parent ? parent : "", name);
    gboolean ok = change_one(db, stmt, kind, parent, name, error);
    if (ok && kind == FERRY_KIND_INSTANCE) {
        /* Snapshot rows hang off the instance by name. */
        stmt = prepare(db, "UPDATE objects SET parent = ? WHERE kind = ? AND project = ? AND parent = ?", error, 4,
                       new_name, snapshot_kind, project ? project : "", name);
        ok = stmt != NULL && (sqlite3_step(stmt) == SQLITE_DONE || set_sqlite_error(db, error, "renaming"));
        sqlite3_finalize(stmt);
    }
    exec_sql(db, ok ? "RELEASE rename_object" : "ROLLBACK TO rename_object; RELEASE rename_object", NULL);
    g_rec_mutex_unlock(&db->lock);
    return ok;
}

gboolean ferry_db_delete(FerryDb *db, FerryKind kind, const char *project, const char *parent, const char *name,
                         GError **error)
{
    g_rec_mutex_lock(&db->lock);
    g_autofree char *kind_text = g_strdup_printf("%d", kind);
    g_autofree char *snapshot_kind = g_strdup_printf("%d", FERRY_KIND_SNAPSHOT);
    exec_sql(db, "SAVEPOINT delete_object", NULL);
    sqlite3_stmt *stmt = prepare(db, "DELETE FROM objects WHERE kind = ? AND project = ? AND parent = ? AND name = ?",
                                 error, 4, kind_text, project ? project : "", parent ? parent : "", name);
    gboolean ok = change_one(db, stmt, kind, parent, name, error);
    if (ok && kind == FERRY_KIND_INSTANCE) {
        stmt = prepare(db, "DELETE FROM objects WHERE kind = ? AND project = ? AND parent = ?", error, 3,
                       snapshot_kind, project ? project : "", name);
        ok = stmt != NULL && (sqlite3_step(stmt) == SQLITE_DONE || set_sqlite_error(db, error, "deleting"));
        sqlite3_finalize(stmt);
    }
    exec_sql(db, ok ? "RELEASE delete_object" : "ROLLBACK TO delete_object; RELEASE delete_object", NULL);
    g_rec_mutex_unlock(&db->lock);
    return ok;
}

static sqlite3_stmt *prepare_list(FerryDb *db, FerryKind kind, const char *project, const char *parent)
{
    g_autofree char *kind_text = g_strdup_printf("%d", kind);
    if (project == NULL)
        return prepare(db, "SELECT name, doc, project FROM objects WHERE kind = ? AND parent = ? ORDER BY id", NULL,
                       2, kind_text, parent ? parent : "");
    return prepare(db,
                   "SELECT name, doc, project FROM objects WHERE kind = ? AND project = ? AND parent = ? ORDER BY id",
                   NULL, 3, kind_text, project, parent ? parent : "");
}

GPtrArray *ferry_db_list_names(FerryDb *db, FerryKind kind, const char *project, const char *parent)
{
    g_rec_mutex_lock(&db->lock);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    sqlite3_stmt *stmt = prepare_list(db, kind, project, parent);
    while (stmt != NULL && sqlite3_step(stmt) == SQLITE_ROW)
        g_ptr_array_add(names, g_strdup((const char *)sqlite3_column_text(stmt, 0)));
    sqlite3_finalize(stmt);
    g_rec_mutex_unlock(&db->lock);
    return names;
}

json_t *ferry_db_list(FerryDb *db, FerryKind kind, const char *project, const char *parent)
{
    g_rec_mutex_lock(&db->lock);
    json_t *list = json_array();
    sqlite3_stmt *stmt = prepare_list(db, kind, project, parent);
    while (stmt != NULL && sqlite3_step(stmt) == SQLITE_ROW) {
        json_t *doc = row_document(stmt, 1);
        json_object_set_new(doc, "name", json_string((const char *)sqlite3_column_text(stmt, 0)));
        const char *row_project = (const char *)sqlite3_column_text(stmt, 2);
        if (row_project != NULL && *row_project != '\0')
            json_object_set_new(doc, "project", json_string(row_project));
        json_array_append_new(list, doc);
    }
    sqlite3_finalize(stmt);
    g_rec_mutex_unlock(&db->lock);
    return list;
}

GPtrArray *ferry_db_instances_using_profile(FerryDb *db, const char *project, const char *profile)
{
    g_rec_mutex_lock(&db->lock);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *kind_text = g_strdup_printf("%d", FERRY_KIND_INSTANCE);
    sqlite3_stmt *stmt = prepare(db,
                                 "SELECT o.name FROM objects o, json_each(o.doc, '$.profiles') p "
                                 "WHERE o.kind = ? AND o.project = ? AND p.value = ? ORDER BY o.id",
                                 NULL, 3, kind_text, project, profile);
    while (stmt != NULL && sqlite3_step(stmt) == SQLITE_ROW)
        g_ptr_array_add(names, g_strdup((const char *)sqlite3_column_text(stmt, 0)));
    sqlite3_finalize(stmt);
    g_rec_mutex_unlock(&db->lock);
    return names;
}

gint64 ferry_db_count_where(FerryDb *db, FerryKind kind, const char *json_path, const char *value)
{
    g_rec_mutex_lock(&db->lock);
    g_autofree char *kind_text = g_strdup_printf("%d", kind);
    gint64 count = 0;
    sqlite3_stmt *stmt = prepare(db, "SELECT count(*) FROM objects WHERE kind = ? AND json_extract(doc, ?) = ?",
                                 NULL, 3, kind_text, json_path, value);
    if (stmt != NULL && sqlite3_step(stmt) == SQLITE_ROW)
        count = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    g_rec_mutex_unlock(&db->lock);
    return count;
}
