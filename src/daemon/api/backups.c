/* /1.0/instances/{name}/backups: Incus's backup API, with backups that are made as they are downloaded.
 *
 * POST records what to export (name, expiry, instance_only, compression) and its operation ends at once; GET
 * .../export then produces the tarball on a worker thread and streams it to the client as it is made, so no
 * copy is ever written on the server (docs/decisions/0006-export-streams.md). The records live in memory:
 * they hold no data, and a restart forgets them as it forgets finished operations. Import is the octet-stream
 * body of POST /1.0/instances (api_backup_import). */
#include "api.h"
#include "projects.h"

#include "backup/backup_export.h"
#include "backup/backup_import.h"
#include "error.h"
#include "json.h"
#include "names.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *name;
    gint64 created_at; /* µs since the epoch */
    gint64 expires_at; /* 0: never */
    FerryBackupOptions options;
} BackupRecord;

/* "project/instance" -> GPtrArray of BackupRecord, creation order. Main thread only. */
static GHashTable *records;

static void record_free(gpointer data)
{
    BackupRecord *record = data;
    g_free(record->name);
    g_free(record);
}

static GPtrArray *instance_records(const char *project, const char *instance, gboolean create)
{
    if (records == NULL)
        records = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_ptr_array_unref);
    g_autofree char *key = g_strdup_printf("%s/%s", project, instance);
    GPtrArray *list = g_hash_table_lookup(records, key);
    if (list == NULL && create) {
        list = g_ptr_array_new_with_free_func(record_free);
        g_hash_table_insert(records, g_steal_pointer(&key), list);
    }
    /* Expired records go when they are next looked at. */
    gint64 now = g_get_real_time();
    for (guint i = 0; list != NULL && i < list->len;) {
        BackupRecord *record = list->pdata[i];
        if (record->expires_at > 0 && record->expires_at < now)
            g_ptr_array_remove_index(list, i);
        else
            i++;
    }
    return list;
}

static BackupRecord *find_record(const char *project, const char *instance, const char *name,
                                 guint *index_out)
{
    GPtrArray *list = instance_records(project, instance, FALSE);
    for (guint i = 0; list != NULL && i < list->len; i++) {
        BackupRecord *record = list->pdata[i];
        if (g_str_equal(record->name, name)) {
            if (index_out != NULL)
                *index_out = i;
            return record;
        }
    }
    return NULL;
}

static char *backup_url(const char *project, const char *instance, const char *name)
{
    g_autofree char *escaped_instance = g_uri_escape_string(instance, NULL, FALSE);
    g_autofree char *escaped_name = g_uri_escape_string(name, NULL, FALSE);
    if (g_str_equal(project, "default"))
        return g_strdup_printf("/1.0/instances/%s/backups/%s", escaped_instance, escaped_name);
    return g_strdup_printf("/1.0/instances/%s/backups/%s?project=%s", escaped_instance, escaped_name,
                           project);
}

static char *instance_url(const char *project, const char *instance)
{
    if (g_str_equal(project, "default"))
        return g_strdup_printf("/1.0/instances/%s", instance);
    return g_strdup_printf("/1.0/instances/%s?project=%s", instance, project);
}

static json_t *render_record(const char *project, const char *instance, const BackupRecord *record)
{
    g_autofree char *created = ferry_json_timestamp(record->created_at);
    g_autofree char *expires = record->expires_at > 0 ? ferry_json_timestamp(record->expires_at) : NULL;
    return json_pack("{s:s, s:s, s:s, s:b, s:b, s:s}", "name", record->name, "created_at", created,
                     "expires_at", expires != NULL ? expires : FERRY_JSON_ZERO_TIME, "instance_only",
                     record->options.instance_only, "optimized_storage", record->options.optimized,
                     "compression_algorithm", ferry_backup_compression_name(record->options.compression));
}

/* The instance must exist (404 otherwise). */
static FerryResponse *check_instance(FerryRequest *request, const char **instance_out)
{
    const char *instance = ferry_request_param(request, "name");
    GError *error = NULL;
    if (!ferry_project_check_exists(request->daemon, request->project, &error))
        return ferry_response_error(error);
    if (!ferry_db_exists(request->daemon->db, FERRY_KIND_INSTANCE, request->project, "", instance))
        return ferry_response_error_new(404, "Instance \"%s\" not found", instance);
    *instance_out = instance;
    return NULL;
}

FerryResponse *api_backups_get(FerryRequest *request)
{
    const char *instance = NULL;
    FerryResponse *failed = check_instance(request, &instance);
    if (failed != NULL)
        return failed;
    GPtrArray *list = instance_records(request->project, instance, FALSE);
    json_t *result = json_array();
    for (guint i = 0; list != NULL && i < list->len; i++) {
        BackupRecord *record = list->pdata[i];
        if (ferry_request_recursion(request) > 0)
            json_array_append_new(result, render_record(request->project, instance, record));
        else {
            g_autofree char *url = backup_url(request->project, instance, record->name);
            json_array_append_new(result, json_string(url));
        }
    }
    return ferry_response_sync(result);
}

static gboolean run_nothing(FerryOperation *op, gpointer data, GError **error)
{
    return TRUE;
}

/* A finished-at-once operation: the record changes are already done; Incus clients wait for one. */
static FerryResponse *record_operation(FerryRequest *request, const char *description, const char *instance,
                                       const char *backup)
{
    g_autofree char *url = instance_url(request->project, instance);
    g_autofree char *burl = backup != NULL ? backup_url(request->project, instance, backup) : NULL;
    json_t *resources = json_pack("{s:[s]}", "instances", url);
    if (burl != NULL)
        json_object_set_new(resources, "backups", json_pack("[s]", burl));
    g_autoptr(FerryOperation) op =
        ferry_operation_new(request->daemon, FERRY_OPERATION_TASK, request->project, description, resources,
                            NULL, run_nothing, NULL, NULL);
    ferry_operation_start(op);
    return ferry_response_async(op);
}

static gboolean check_backup_name(const char *name, GError **error)
{
    if (name == NULL || *name == '\0' || strchr(name, '/') != NULL ||
        !ferry_validate_snapshot_name(name, NULL)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid backup name \"%s\"",
                    name != NULL ? name : "");
        return FALSE;
    }
    return TRUE;
}

FerryResponse *api_backups_post(FerryRequest *request)
{
    const char *instance = NULL;
    FerryResponse *failed = check_instance(request, &instance);
    if (failed != NULL)
        return failed;
    json_t *body = request->body;
    GError *error = NULL;
    BackupRecord record = {0};
    if (!ferry_backup_compression_parse(ferry_json_get_string(body, "compression_algorithm"),
                                        &record.options.compression, &error))
        return ferry_response_error(error);
    record.options.instance_only = ferry_json_get_bool(body, "instance_only", FALSE);
    record.options.optimized = ferry_json_get_bool(body, "optimized_storage", FALSE);
    const char *expires = ferry_json_get_string(body, "expires_at");
    if (expires != NULL && *expires != '\0' && !g_str_has_prefix(expires, "0001-01-01")) {
        g_autoptr(GDateTime) when = g_date_time_new_from_iso8601(expires, NULL);
        if (when == NULL)
            return ferry_response_error_new(400, "Invalid expires_at \"%s\"", expires);
        record.expires_at = g_date_time_to_unix(when) * G_USEC_PER_SEC;
    }
    const char *name = ferry_json_get_string(body, "name");
    g_autofree char *generated = NULL;
    if (name == NULL || *name == '\0') {
        for (int i = 0; generated == NULL; i++) {
            char *candidate = g_strdup_printf("backup%d", i);
            if (find_record(request->project, instance, candidate, NULL) == NULL)
                generated = candidate;
            else
                g_free(candidate);
        }
        name = generated;
    }
    if (!check_backup_name(name, &error))
        return ferry_response_error(error);
    if (find_record(request->project, instance, name, NULL) != NULL)
        return ferry_response_error_new(409, "Backup \"%s\" already exists", name);
    BackupRecord *stored = g_memdup2(&record, sizeof(record));
    stored->name = g_strdup(name);
    stored->created_at = g_get_real_time();
    g_ptr_array_add(instance_records(request->project, instance, TRUE), stored);
    return record_operation(request, "Backing up instance", instance, name);
}

static FerryResponse *lookup(FerryRequest *request, const char **instance_out, BackupRecord **record_out,
                             guint *index_out)
{
    FerryResponse *failed = check_instance(request, instance_out);
    if (failed != NULL)
        return failed;
    const char *name = ferry_request_param(request, "backup");
    *record_out = find_record(request->project, *instance_out, name, index_out);
    if (*record_out == NULL)
        return ferry_response_error_new(404, "Instance backup \"%s\" not found", name);
    return NULL;
}

FerryResponse *api_backup_get(FerryRequest *request)
{
    const char *instance;
    BackupRecord *record;
    FerryResponse *failed = lookup(request, &instance, &record, NULL);
    if (failed != NULL)
        return failed;
    return ferry_response_sync(render_record(request->project, instance, record));
}

FerryResponse *api_backup_post(FerryRequest *request)
{
    const char *instance;
    BackupRecord *record;
    FerryResponse *failed = lookup(request, &instance, &record, NULL);
    if (failed != NULL)
        return failed;
    const char *new_name = ferry_json_get_string(request->body, "name");
    GError *error = NULL;
    if (!check_backup_name(new_name, &error))
        return ferry_response_error(error);
    if (find_record(request->project, instance, new_name, NULL) != NULL)
        return ferry_response_error_new(409, "Backup \"%s\" already exists", new_name);
    g_free(record->name);
    record->name = g_strdup(new_name);
    return record_operation(request, "Renaming instance backup", instance, new_name);
}

FerryResponse *api_backup_delete(FerryRequest *request)
{
    const char *instance;
    BackupRecord *record;
    guint index = 0;
    FerryResponse *failed = lookup(request, &instance, &record, &index);
    if (failed != NULL)
        return failed;
    g_ptr_array_remove_index(instance_records(request->project, instance, FALSE), index);
    return record_operation(request, "Deleting instance backup", instance, NULL);
}

/* --- export: the tarball as it is made --- */

typedef struct {
    GIOStream *stream;
    char *project;
    char *instance;
    char *filename;
    FerryBackupOptions options;
    char *operation_url;
    gboolean headers_sent;
} ExportTask;

static void export_task_free(gpointer data)
{
    ExportTask *task = data;
    if (task->stream != NULL) {
        g_io_stream_close(task->stream, NULL, NULL);
        g_object_unref(task->stream);
    }
    g_free(task->project);
    g_free(task->instance);
    g_free(task->filename);
    g_free(task->operation_url);
    g_free(task);
}

static gboolean send_all(ExportTask *task, const void *data, gsize size, GError **error)
{
    GOutputStream *out = g_io_stream_get_output_stream(task->stream);
    if (!g_output_stream_write_all(out, data, size, NULL, NULL, error)) {
        g_prefix_error(error, "Failed to send the backup to the client: ");
        return FALSE;
    }
    return TRUE;
}

static gboolean send_headers(ExportTask *task, GError **error)
{
    /* The response is written here, after libsoup handed the connection over: chunked, so that a backup
     * that fails half-way ends without the final chunk and the client sees an error, never a short file. */
    g_autofree char *headers = g_strdup_printf("HTTP/1.1 200 OK\r\n"
                                               "Content-Type: application/octet-stream\r\n"
                                               "Content-Disposition: attachment; filename=\"%s\"\r\n"
                                               "X-Ferry-Operation: %s\r\n"
                                               "Transfer-Encoding: chunked\r\n"
                                               "Connection: close\r\n\r\n",
                                               task->filename, task->operation_url);
    task->headers_sent = TRUE;
    return send_all(task, headers, strlen(headers), error);
}

static gboolean send_chunk(const void *data, gsize size, gpointer user_data, GError **error)
{
    ExportTask *task = user_data;
    if (!task->headers_sent && !send_headers(task, error))
        return FALSE;
    if (size == 0)
        return TRUE;
    char head[32];
    int length = g_snprintf(head, sizeof(head), "%" G_GSIZE_MODIFIER "x\r\n", size);
    return send_all(task, head, length, error) && send_all(task, data, size, error) &&
           send_all(task, "\r\n", 2, error);
}

/* A failure before the first byte is still an ordinary Incus error response. */
static void send_error_response(ExportTask *task, const GError *error)
{
    int status = error->domain == FERRY_ERROR && error->code >= 400 && error->code < 600 ? error->code : 500;
    g_autoptr(json_t) envelope =
        json_pack("{s:s, s:s, s:i, s:i, s:s, s:{}}", "type", "error", "status", "", "status_code", 0,
                  "error_code", status, "error", error->message, "metadata");
    g_autofree char *body = ferry_json_dump(envelope);
    g_autofree char *response = g_strdup_printf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                                                "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                                                status, soup_status_get_phrase(status), strlen(body), body);
    send_all(task, response, strlen(response), NULL);
}

static gboolean run_export(FerryOperation *op, gpointer data, GError **error)
{
    ExportTask *task = data;
    FerryDaemon *daemon = ferry_operation_get_daemon(op);
    g_autoptr(GError) local_error = NULL;
    gboolean ok = ferry_backup_export(daemon, op, task->project, task->instance, &task->options, send_chunk,
                                      task, &local_error) &&
                  send_chunk(NULL, 0, task, &local_error) && send_all(task, "0\r\n\r\n", 5, &local_error) &&
                  g_output_stream_flush(g_io_stream_get_output_stream(task->stream), NULL, &local_error);
    if (!ok) {
        if (!task->headers_sent)
            send_error_response(task, local_error);
        g_propagate_error(error, g_steal_pointer(&local_error));
    }
    /* Closing now tells the client the stream ended; the operation may linger. */
    g_io_stream_close(task->stream, NULL, NULL);
    g_clear_object(&task->stream);
    return ok;
}

FerryResponse *api_backup_export(FerryRequest *request)
{
    const char *instance;
    BackupRecord *record;
    FerryResponse *failed = lookup(request, &instance, &record, NULL);
    if (failed != NULL)
        return failed;
    ExportTask *task = g_new0(ExportTask, 1);
    task->project = g_strdup(request->project);
    task->instance = g_strdup(instance);
    task->options = record->options;
    task->filename = g_strdup_printf("%s%s", record->name,
                                     ferry_backup_compression_extension(record->options.compression));
    g_autofree char *url = instance_url(request->project, instance);
    g_autofree char *burl = backup_url(request->project, instance, record->name);
    g_autoptr(FerryOperation) op = ferry_operation_new(
        request->daemon, FERRY_OPERATION_TASK, request->project, "Exporting instance backup",
        json_pack("{s:[s], s:[s]}", "instances", url, "backups", burl), NULL, run_export, task,
        export_task_free);
    task->operation_url = g_strdup_printf("/1.0/operations/%s", ferry_operation_get_id(op));
    /* From here the connection is ours: the worker writes the response itself, with blocking I/O, at the pace
     * the client reads it. */
    task->stream = g_object_ref(soup_server_message_steal_connection(request->msg));
    ferry_operation_start(op);
    return ferry_response_handled();
}

/* --- import --- */

typedef struct {
    char *project;
    char *path; /* our own link to the upload */
    char *name;
    char *pool;
} ImportTask;

static void import_task_free(gpointer data)
{
    ImportTask *task = data;
    if (task->path != NULL)
        g_unlink(task->path);
    g_free(task->path);
    g_free(task->project);
    g_free(task->name);
    g_free(task->pool);
    g_free(task);
}

static gboolean run_import(FerryOperation *op, gpointer data, GError **error)
{
    ImportTask *task = data;
    gboolean ok = ferry_backup_import(ferry_operation_get_daemon(op), op, task->project, task->path,
                                      task->name, task->pool, error);
    /* Finished operations linger for a while; their uploads should not. */
    g_unlink(task->path);
    g_clear_pointer(&task->path, g_free);
    return ok;
}

static const char *upload_header(FerryRequest *request, const char *name)
{
    SoupMessageHeaders *headers = soup_server_message_get_request_headers(request->msg);
    g_autofree char *incus = g_strdup_printf("X-Incus-%s", name);
    const char *value = soup_message_headers_get_one(headers, incus);
    if (value == NULL) {
        g_autofree char *lxd = g_strdup_printf("X-LXD-%s", name);
        value = soup_message_headers_get_one(headers, lxd);
    }
    return value != NULL && *value != '\0' ? value : NULL;
}

FerryResponse *api_backup_import(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, request->project, &error))
        return ferry_response_error(error);
    const char *name = upload_header(request, "name");
    const char *pool = upload_header(request, "pool");
    /* What the headers alone show is refused before an operation starts; the archive is checked in it. */
    if (name != NULL) {
        if (!ferry_validate_instance_name(name, &error))
            return ferry_response_error(error);
        if (ferry_db_exists(daemon->db, FERRY_KIND_INSTANCE, request->project, "", name))
            return ferry_response_error_new(409, "Instance \"%s\" already exists", name);
    }
    if (pool != NULL && ferry_daemon_get_pool(daemon, pool, &error) == NULL)
        return ferry_response_error(error);

    ImportTask *task = g_new0(ImportTask, 1);
    task->project = g_strdup(request->project);
    task->name = g_strdup(name);
    task->pool = g_strdup(pool);
    /* The router deletes its file when the request ends; a second name keeps the bytes for the operation. */
    g_autofree char *id = g_uuid_string_random();
    g_autofree char *leaf = g_strdup_printf("backup-%s", id);
    task->path = ferry_daemon_path(daemon, "uploads", leaf, NULL);
    if (link(request->upload_path, task->path) < 0) {
        int saved = errno;
        g_clear_pointer(&task->path, g_free);
        import_task_free(task);
        return ferry_response_error_new(500, "Failed to keep the uploaded backup: %s", g_strerror(saved));
    }
    json_t *resources = json_pack("{s:[]}", "instances");
    if (name != NULL) {
        g_autofree char *url = instance_url(request->project, name);
        json_array_append_new(json_object_get(resources, "instances"), json_string(url));
    }
    g_autoptr(FerryOperation) op =
        ferry_operation_new(daemon, FERRY_OPERATION_TASK, request->project, "Creating instance", resources,
                            NULL, run_import, task, import_task_free);
    ferry_operation_start(op);
    return ferry_response_async(op);
}

/* --- import while the upload arrives --- */

/* The request body as it arrives on a connection taken over from libsoup: Content-Length or chunked. */
typedef struct {
    GDataInputStream *data;
    gboolean chunked;
    guint64 remaining; /* of the body (Content-Length) or of the current chunk */
    gboolean done;
} BodyReader;

static gssize body_read(void *buffer, gsize size, gpointer user_data, GError **error)
{
    BodyReader *body = user_data;
    if (body->done)
        return 0;
    if (body->chunked && body->remaining == 0) {
        gsize length = 0;
        g_autofree char *line = g_data_input_stream_read_line(body->data, &length, NULL, error);
        if (line == NULL) {
            if (error != NULL && *error == NULL)
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "The upload ended early");
            return -1;
        }
        char *end = NULL;
        guint64 chunk = g_ascii_strtoull(line, &end, 16);
        if (end == line || (*end != '\0' && *end != ';' && *end != ' ')) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Bad chunk in the upload");
            return -1;
        }
        if (chunk == 0) {
            /* Trailers, up to the empty line. */
            for (;;) {
                g_autofree char *trailer = g_data_input_stream_read_line(body->data, &length, NULL, error);
                if (trailer == NULL || *trailer == '\0')
                    break;
            }
            body->done = TRUE;
            return 0;
        }
        body->remaining = chunk;
    }
    if (body->remaining == 0) {
        body->done = TRUE;
        return 0;
    }
    gssize n =
        g_input_stream_read(G_INPUT_STREAM(body->data), buffer, MIN(size, body->remaining), NULL, error);
    if (n == 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "The upload ended early");
        return -1;
    }
    if (n < 0)
        return -1;
    body->remaining -= n;
    if (body->chunked && body->remaining == 0) {
        gsize length = 0;
        g_autofree char *crlf = g_data_input_stream_read_line(body->data, &length, NULL, NULL);
    }
    return n;
}

typedef struct {
    GIOStream *stream;
    char *project;
    char *name;
    char *pool;
    gboolean expect_continue;
    gboolean chunked;
    guint64 length;
} StreamImportTask;

static void stream_import_task_free(gpointer data)
{
    StreamImportTask *task = data;
    if (task->stream != NULL) {
        g_io_stream_close(task->stream, NULL, NULL);
        g_object_unref(task->stream);
    }
    g_free(task->project);
    g_free(task->name);
    g_free(task->pool);
    g_free(task);
}

static gboolean write_response(GIOStream *stream, int status, json_t *envelope, const char *location)
{
    g_autofree char *body = ferry_json_dump(envelope);
    g_autofree char *extra = location != NULL ? g_strdup_printf("Location: %s\r\n", location) : g_strdup("");
    g_autofree char *head = g_strdup_printf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                                            "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
                                            status, soup_status_get_phrase(status), strlen(body), extra);
    GOutputStream *out = g_io_stream_get_output_stream(stream);
    return g_output_stream_write_all(out, head, strlen(head), NULL, NULL, NULL) &&
           g_output_stream_write_all(out, body, strlen(body), NULL, NULL, NULL) &&
           g_output_stream_flush(out, NULL, NULL);
}

static void write_error_response(GIOStream *stream, const GError *error)
{
    int status = error->domain == FERRY_ERROR && error->code >= 400 && error->code < 600 ? error->code : 500;
    g_autoptr(json_t) envelope =
        json_pack("{s:s, s:s, s:i, s:i, s:s, s:{}}", "type", "error", "status", "", "status_code", 0,
                  "error_code", status, "error", error->message, "metadata");
    write_response(stream, status, envelope, NULL);
}

static gboolean run_stream_import(FerryOperation *op, gpointer data, GError **error)
{
    StreamImportTask *task = data;
    GOutputStream *out = g_io_stream_get_output_stream(task->stream);
    if (task->expect_continue &&
        !g_output_stream_write_all(out, "HTTP/1.1 100 Continue\r\n\r\n", 25, NULL, NULL, error))
        return FALSE;
    g_autoptr(GDataInputStream) data_stream =
        g_data_input_stream_new(g_io_stream_get_input_stream(task->stream));
    g_buffered_input_stream_set_buffer_size(G_BUFFERED_INPUT_STREAM(data_stream), 1024 * 1024);
    g_data_input_stream_set_newline_type(data_stream, G_DATA_STREAM_NEWLINE_TYPE_CR_LF);
    BodyReader body = {data_stream, task->chunked, task->chunked ? 0 : task->length, FALSE};
    gboolean ok = ferry_backup_import_stream(ferry_operation_get_daemon(op), op, task->project, body_read,
                                             &body, task->length, task->name, task->pool, error);
    /* The client sends its whole body before it reads the answer: take the rest (tar padding, or all of it
     * after a refusal) so that it gets the operation, whose error says what went wrong. */
    g_autofree guint8 *sink = g_malloc(256 * 1024);
    g_autoptr(GError) drain_error = NULL;
    while (body_read(sink, 256 * 1024, &body, &drain_error) > 0)
        ;
    if (drain_error == NULL) {
        g_autoptr(json_t) metadata = ferry_operation_to_json(op);
        g_autofree char *url = g_strdup_printf("/1.0/operations/%s", ferry_operation_get_id(op));
        g_autoptr(json_t) envelope = json_pack("{s:s, s:s, s:i, s:s, s:i, s:s, s:O}", "type", "async",
                                               "status", "Operation created", "status_code", 100, "operation",
                                               url, "error_code", 0, "error", "", "metadata", metadata);
        write_response(task->stream, 202, envelope, url);
    }
    g_io_stream_close(task->stream, NULL, NULL);
    g_clear_object(&task->stream);
    return ok;
}

gboolean api_backup_import_stream(FerryDaemon *daemon, SoupServerMessage *msg)
{
    SoupMessageHeaders *headers = soup_server_message_get_request_headers(msg);
    const char *content_type = soup_message_headers_get_content_type(headers, NULL);
    GUri *uri = soup_server_message_get_uri(msg);
    /* Only a client that waits for "100 Continue" before its body (ferry's CLI) is read here: nothing of the
     * body can then be in libsoup's buffers when the connection is taken over. Others go through the upload
     * file. */
    if (!g_str_equal(soup_server_message_get_method(msg), "POST") ||
        !g_str_equal(g_uri_get_path(uri), "/1.0/instances") || content_type == NULL ||
        !g_str_equal(content_type, "application/octet-stream") ||
        !(soup_message_headers_get_expectations(headers) & SOUP_EXPECTATION_CONTINUE))
        return FALSE;
    SoupEncoding encoding = soup_message_headers_get_encoding(headers);
    if (encoding != SOUP_ENCODING_CONTENT_LENGTH && encoding != SOUP_ENCODING_CHUNKED)
        return FALSE;

    StreamImportTask *task = g_new0(StreamImportTask, 1);
    g_autoptr(GHashTable) query =
        g_uri_get_query(uri) != NULL
            ? g_uri_parse_params(g_uri_get_query(uri), -1, "&", G_URI_PARAMS_NONE, NULL)
            : NULL;
    const char *project = query != NULL ? g_hash_table_lookup(query, "project") : NULL;
    task->project = g_strdup(project != NULL && *project != '\0' ? project : "default");
    const char *name = soup_message_headers_get_one(headers, "X-Incus-name")
                           ?: soup_message_headers_get_one(headers, "X-LXD-name");
    const char *pool = soup_message_headers_get_one(headers, "X-Incus-pool")
                           ?: soup_message_headers_get_one(headers, "X-LXD-pool");
    task->name = name != NULL && *name != '\0' ? g_strdup(name) : NULL;
    task->pool = pool != NULL && *pool != '\0' ? g_strdup(pool) : NULL;
    task->expect_continue = TRUE;
    task->chunked = encoding == SOUP_ENCODING_CHUNKED;
    task->length = task->chunked ? 0 : (guint64)soup_message_headers_get_content_length(headers);
    task->stream = g_object_ref(soup_server_message_steal_connection(msg));

    /* What the headers alone show is refused before the client sends a byte of its body. */
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, task->project, &error) ||
        (task->name != NULL && !ferry_validate_instance_name(task->name, &error)) ||
        (task->pool != NULL && ferry_daemon_get_pool(daemon, task->pool, &error) == NULL)) {
        write_error_response(task->stream, error);
        g_error_free(error);
        stream_import_task_free(task);
        return TRUE;
    }
    if (task->name != NULL &&
        ferry_db_exists(daemon->db, FERRY_KIND_INSTANCE, task->project, "", task->name)) {
        g_set_error(&error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Instance \"%s\" already exists", task->name);
        write_error_response(task->stream, error);
        g_error_free(error);
        stream_import_task_free(task);
        return TRUE;
    }
    json_t *resources = json_pack("{s:[]}", "instances");
    if (task->name != NULL) {
        g_autofree char *url = instance_url(task->project, task->name);
        json_array_append_new(json_object_get(resources, "instances"), json_string(url));
    }
    g_autoptr(FerryOperation) op =
        ferry_operation_new(daemon, FERRY_OPERATION_TASK, task->project, "Creating instance", resources, NULL,
                            run_stream_import, task, stream_import_task_free);
    ferry_operation_start(op);
    return TRUE;
}
