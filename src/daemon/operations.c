#include "operations.h"

#include "daemon.h"
#include "error.h"
#include "events.h"
#include "json.h"

#include <string.h>

/* Finished operations stay listed for a while so clients can still fetch their result. */
#define FINISHED_RETENTION_SECONDS 300

struct _FerryOperations {
    FerryDaemon *daemon;
    GMutex lock;
    GHashTable *by_id; /* id -> FerryOperation* (owned ref) */
    GThreadPool *workers;
};

typedef struct {
    FerryOperationWaitFunc func;
    gpointer user_data;
    GSource *timeout;
    FerryOperation *op;
} Waiter;

struct _FerryOperation {
    gint refcount;
    FerryDaemon *daemon;
    char *id;
    FerryOperationClass klass;
    char *project;
    char *description;
    gint64 created_at;
    GMutex lock; /* guards the fields below */
    GCond changed;
    gint64 updated_at;
    int status_code;
    json_t *resources;
    json_t *metadata;
    char *error_message;
    GCancellable *cancellable;
    GHashTable *secrets; /* name -> secret, removed when used */
    guint connected;
    GList *waiters;      /* main thread only */
    FerryOperationRunFunc run;
    FerryOperationConnectFunc connect;
    gpointer data;
    GDestroyNotify data_free;
    gint64 last_progress_event;
};

const char *ferry_status_text(int status_code)
{
    switch (status_code) {
    case FERRY_STATUS_CREATED:
        return "Pending";
    case FERRY_STATUS_RUNNING:
        return "Running";
    case FERRY_STATUS_SUCCESS:
        return "Success";
    case FERRY_STATUS_FAILURE:
        return "Failure";
    case FERRY_STATUS_CANCELLED:
        return "Cancelled";
    default:
        return "Unknown";
    }
}

static const char *class_text(FerryOperationClass klass)
{
    switch (klass) {
    case FERRY_OPERATION_WEBSOCKET:
        return "websocket";
    case FERRY_OPERATION_TOKEN:
        return "token";
    case FERRY_OPERATION_TASK:
    default:
        return "task";
    }
}

FerryOperation *ferry_operation_ref(FerryOperation *op)
{
    g_atomic_int_inc(&op->refcount);
    return op;
}

void ferry_operation_unref(FerryOperation *op)
{
    if (op == NULL || !g_atomic_int_dec_and_test(&op->refcount))
        return;
    if (op->data_free != NULL && op->data != NULL)
        op->data_free(op->data);
    g_free(op->id);
    g_free(op->project);
    g_free(op->description);
    json_decref(op->resources);
    json_decref(op->metadata);
    g_free(op->error_message);
    g_clear_object(&op->cancellable);
    g_hash_table_unref(op->secrets);
    g_mutex_clear(&op->lock);
    g_cond_clear(&op->changed);
    g_free(op);
}

const char *ferry_operation_get_id(FerryOperation *op)
{
    return op->id;
}
const char *ferry_operation_get_project(FerryOperation *op)
{
    return op->project;
}
FerryOperationClass ferry_operation_get_class(FerryOperation *op)
{
    return op->klass;
}
FerryDaemon *ferry_operation_get_daemon(FerryOperation *op)
{
    return op->daemon;
}
GCancellable *ferry_operation_get_cancellable(FerryOperation *op)
{
    return op->cancellable;
}

static gboolean status_is_final(int status_code)
{
    return status_code >= FERRY_STATUS_SUCCESS;
}

gboolean ferry_operation_is_done(FerryOperation *op)
{
    g_mutex_lock(&op->lock);
    gboolean done = status_is_final(op->status_code);
    g_mutex_unlock(&op->lock);
    return done;
}

static json_t *to_json_locked(FerryOperation *op)
{
    g_autofree char *created = ferry_json_timestamp(op->created_at);
    g_autofree char *updated = ferry_json_timestamp(op->updated_at);
    json_t *metadata = op->metadata != NULL ? json_deep_copy(op->metadata) : json_null();
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:O, s:o, s:b, s:s, s:s}", "id", op->id, "class",
                     class_text(op->klass), "description", op->description, "created_at", created, "updated_at",
                     updated, "status", ferry_status_text(op->status_code), "status_code", op->status_code,
                     "resources", op->resources != NULL ? op->resources : json_null(), "metadata", metadata,
                     "may_cancel", op->klass != FERRY_OPERATION_TASK || op->cancellable != NULL, "err",
                     op->error_message != NULL ? op->error_message : "", "location", "none");
}

json_t *ferry_operation_to_json(FerryOperation *op)
{
    g_mutex_lock(&op->lock);
    json_t *json = to_json_locked(op);
    g_mutex_unlock(&op->lock);
    return json;
}

static void emit_event(FerryOperation *op)
{
    json_t *json = ferry_operation_to_json(op);
    ferry_events_emit(op->daemon->events, "operation", op->project, json);
}

FerryOperations *ferry_operations_new(FerryDaemon *daemon)
{
    FerryOperations *operations = g_new0(FerryOperations, 1);
    operations->daemon = daemon;
    g_mutex_init(&operations->lock);
    operations->by_id = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify)ferry_operation_unref);
    return operations;
}

FerryOperation *ferry_operation_new(FerryDaemon *daemon, FerryOperationClass klass, const char *project,
                                    const char *description, json_t *resources, json_t *metadata,
                                    FerryOperationRunFunc run, gpointer data, GDestroyNotify data_free)
{
    FerryOperation *op = g_new0(FerryOperation, 1);
    op->refcount = 1;
    op->daemon = daemon;
    op->id = g_uuid_string_random();
    op->klass = klass;
    op->project = g_strdup(project != NULL ? project : "default");
    op->description = g_strdup(description);
    op->created_at = op->updated_at = g_get_real_time();
    g_mutex_init(&op->lock);
    g_cond_init(&op->changed);
    op->status_code = FERRY_STATUS_CREATED;
    op->resources = resources;
    op->metadata = metadata != NULL ? metadata : json_object();
    op->cancellable = g_cancellable_new();
    op->secrets = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    op->run = run;
    op->data = data;
    op->data_free = data_free;
    return op;
}

void ferry_operation_set_connect(FerryOperation *op, FerryOperationConnectFunc connect)
{
    op->connect = connect;
}

gboolean ferry_operation_connect(FerryOperation *op, SoupServerMessage *msg, const char *channel, GError **error)
{
    if (op->connect == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Operation \"%s\" takes no websocket connections",
                    op->id);
        return FALSE;
    }
    return op->connect(op, op->data, msg, channel, error);
}

void ferry_operation_add_secret(FerryOperation *op, const char *name, const char *secret)
{
    g_mutex_lock(&op->lock);
    g_hash_table_replace(op->secrets, g_strdup(name), g_strdup(secret));
    g_mutex_unlock(&op->lock);
}

char *ferry_operation_consume_secret(FerryOperation *op, const char *secret)
{
    char *found = NULL;
    g_mutex_lock(&op->lock);
    GHashTableIter iter;
    gpointer name, expected;
    g_hash_table_iter_init(&iter, op->secrets);
    /* Compare against every secret so the time taken does not reveal which one matched. */
    while (g_hash_table_iter_next(&iter, &name, &expected)) {
        if (ferry_secret_equal(expected, secret) && found == NULL)
            found = g_strdup(name);
    }
    if (found != NULL)
        g_hash_table_remove(op->secrets, found);
    g_mutex_unlock(&op->lock);
    return found;
}

static gboolean forget_operation(gpointer user_data)
{
    FerryOperation *op = user_data;
    FerryOperations *operations = op->daemon->operations;
    g_mutex_lock(&operations->lock);
    g_hash_table_remove(operations->by_id, op->id);
    g_mutex_unlock(&operations->lock);
    return G_SOURCE_REMOVE;
}

static void run_waiters(FerryOperation *op)
{
    GList *waiters = g_steal_pointer(&op->waiters);
    for (GList *l = waiters; l != NULL; l = l->next) {
        Waiter *waiter = l->data;
        if (waiter->timeout != NULL) {
            g_source_destroy(waiter->timeout);
            g_source_unref(waiter->timeout);
        }
        waiter->func(op, waiter->user_data);
        ferry_operation_unref(waiter->op);
        g_free(waiter);
    }
    g_list_free(waiters);
}

/* The main-thread part of finishing: answer waiters, publish the event, schedule removal. */
static gboolean finish_on_main(gpointer user_data)
{
    FerryOperation *op = user_data;
    emit_event(op);
    run_waiters(op);
    GSource *source = g_timeout_source_new_seconds(FINISHED_RETENTION_SECONDS);
    g_source_set_callback(source, forget_operation, ferry_operation_ref(op), (GDestroyNotify)ferry_operation_unref);
    g_source_attach(source, op->daemon->main_context);
    g_source_unref(source);
    return G_SOURCE_REMOVE;
}

static void set_final(FerryOperation *op, int status_code, const char *error_message)
{
    g_mutex_lock(&op->lock);
    if (status_is_final(op->status_code)) {
        g_mutex_unlock(&op->lock);
        return;
    }
    op->status_code = status_code;
    op->updated_at = g_get_real_time();
    g_free(op->error_message);
    op->error_message = g_strdup(error_message);
    g_hash_table_remove_all(op->secrets); /* unused secrets die with the operation */
    g_cond_broadcast(&op->changed);
    g_mutex_unlock(&op->lock);
    g_main_context_invoke_full(op->daemon->main_context, G_PRIORITY_DEFAULT, finish_on_main, ferry_operation_ref(op),
                               (GDestroyNotify)ferry_operation_unref);
}

void ferry_operation_finish(FerryOperation *op, gboolean success, const char *error_message)
{
    set_final(op, success ? FERRY_STATUS_SUCCESS : FERRY_STATUS_FAILURE, error_message);
}

static void worker(gpointer data, gpointer user_data)
{
    FerryOperation *op = data;
    g_autoptr(GError) error = NULL;
    gboolean ok = op->run(op, op->data, &error);
    if (ok)
        set_final(op, FERRY_STATUS_SUCCESS, NULL);
    else if (g_cancellable_is_cancelled(op->cancellable) ||
             (error != NULL && ferry_error_http_status(error) == FERRY_ERROR_CANCELLED))
        set_final(op, FERRY_STATUS_CANCELLED, error != NULL ? error->message : "Operation cancelled");
    else
        set_final(op, FERRY_STATUS_FAILURE, error != NULL ? error->message : "Operation failed");
    ferry_operation_unref(op);
}

void ferry_operation_start(FerryOperation *op)
{
    FerryOperations *operations = op->daemon->operations;
    g_mutex_lock(&operations->lock);
    g_hash_table_insert(operations->by_id, op->id, ferry_operation_ref(op));
    if (operations->workers == NULL)
        operations->workers = g_thread_pool_new(worker, NULL, 64, FALSE, NULL);
    g_mutex_unlock(&operations->lock);

    g_mutex_lock(&op->lock);
    op->status_code = FERRY_STATUS_RUNNING;
    op->updated_at = g_get_real_time();
    g_mutex_unlock(&op->lock);
    emit_event(op);
    if (op->run != NULL)
        g_thread_pool_push(operations->workers, ferry_operation_ref(op), NULL);
}

FerryOperation *ferry_operations_lookup(FerryOperations *operations, const char *id)
{
    g_mutex_lock(&operations->lock);
    FerryOperation *op = g_hash_table_lookup(operations->by_id, id);
    if (op != NULL)
        ferry_operation_ref(op);
    g_mutex_unlock(&operations->lock);
    return op;
}

static gint compare_created(gconstpointer a, gconstpointer b)
{
    const FerryOperation *op_a = *(FerryOperation *const *)a;
    const FerryOperation *op_b = *(FerryOperation *const *)b;
    return op_a->created_at < op_b->created_at ? -1 : op_a->created_at > op_b->created_at;
}

json_t *ferry_operations_list(FerryOperations *operations, const char *project, gboolean recursive)
{
    g_autoptr(GPtrArray) ops = g_ptr_array_new_with_free_func((GDestroyNotify)ferry_operation_unref);
    g_mutex_lock(&operations->lock);
    GHashTableIter iter;
    gpointer value;
    g_hash_table_iter_init(&iter, operations->by_id);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        FerryOperation *op = value;
        if (project == NULL || g_str_equal(op->project, project))
            g_ptr_array_add(ops, ferry_operation_ref(op));
    }
    g_mutex_unlock(&operations->lock);
    g_ptr_array_sort(ops, compare_created);

    /* Incus groups operations by status: {"running": [...], "success": [...]}. */
    json_t *grouped = json_object();
    for (guint i = 0; i < ops->len; i++) {
        FerryOperation *op = ops->pdata[i];
        json_t *entry;
        g_mutex_lock(&op->lock);
        g_autofree char *status = g_ascii_strdown(ferry_status_text(op->status_code), -1);
        if (recursive)
            entry = to_json_locked(op);
        else
            entry = json_sprintf("/1.0/operations/%s", op->id);
        g_mutex_unlock(&op->lock);
        json_t *bucket = json_object_get(grouped, status);
        if (bucket == NULL) {
            bucket = json_array();
            json_object_set_new(grouped, status, bucket);
        }
        json_array_append_new(bucket, entry);
    }
    return grouped;
}

void ferry_operation_set_metadata(FerryOperation *op, json_t *metadata)
{
    g_mutex_lock(&op->lock);
    json_decref(op->metadata);
    op->metadata = metadata;
    op->updated_at = g_get_real_time();
    g_mutex_unlock(&op->lock);
    emit_event(op);
}

void ferry_operation_update_metadata(FerryOperation *op, const char *key, json_t *value)
{
    g_mutex_lock(&op->lock);
    json_object_set_new(op->metadata, key, value);
    op->updated_at = g_get_real_time();
    g_mutex_unlock(&op->lock);
    emit_event(op);
}

static char *human_bytes(double bytes)
{
    static const char *units[] = {"B", "kB", "MB", "GB", "TB"};
    guint unit = 0;
    while (bytes >= 1000 && unit < G_N_ELEMENTS(units) - 1) {
        bytes /= 1000;
        unit++;
    }
    return g_strdup_printf(unit == 0 ? "%.0f%s" : "%.2f%s", bytes, units[unit]);
}

void ferry_operation_report_progress(FerryOperation *op, const char *key, const char *stage, guint64 done,
                                     guint64 total)
{
    gint64 now = g_get_monotonic_time();
    g_mutex_lock(&op->lock);
    /* At most a few events per second: progress is for humans. */
    gboolean finished = total > 0 && done >= total;
    if (!finished && now - op->last_progress_event < G_USEC_PER_SEC / 4) {
        g_mutex_unlock(&op->lock);
        return;
    }
    op->last_progress_event = now;
    double elapsed = (double)(g_get_real_time() - op->created_at) / G_USEC_PER_SEC;
    double rate = elapsed > 0 ? (double)done / elapsed : 0;
    g_autofree char *done_text = human_bytes((double)done);
    g_autofree char *rate_text = human_bytes(rate);
    json_object_set_new(op->metadata, key, json_sprintf("%s (%s/s)", done_text, rate_text));
    json_t *progress = json_pack("{s:s, s:I, s:I, s:I}", "stage", stage, "done", (json_int_t)done, "total",
                                 (json_int_t)total, "rate", (json_int_t)rate);
    if (total > 0) {
        json_object_set_new(progress, "percent", json_integer((json_int_t)(done * 100 / total)));
        if (rate > 0)
            json_object_set_new(progress, "eta_seconds", json_integer((json_int_t)((double)(total - MIN(done, total)) / rate)));
    }
    json_object_set_new(op->metadata, "progress", progress);
    op->updated_at = g_get_real_time();
    g_mutex_unlock(&op->lock);
    emit_event(op);
}

gboolean ferry_operation_cancel(FerryOperation *op, GError **error)
{
    if (ferry_operation_is_done(op)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Operation \"%s\" has already finished", op->id);
        return FALSE;
    }
    g_cancellable_cancel(op->cancellable);
    g_mutex_lock(&op->lock);
    g_cond_broadcast(&op->changed);
    g_mutex_unlock(&op->lock);
    /* Operations without a worker (tokens, websockets not yet running) end right here. */
    if (op->run == NULL)
        set_final(op, FERRY_STATUS_CANCELLED, "Operation cancelled");
    return TRUE;
}

void ferry_operation_mark_connected(FerryOperation *op)
{
    g_mutex_lock(&op->lock);
    op->connected++;
    g_cond_broadcast(&op->changed);
    g_mutex_unlock(&op->lock);
}

gboolean ferry_operation_wait_connected(FerryOperation *op, guint expected, guint timeout_seconds, GError **error)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_seconds * G_USEC_PER_SEC;
    g_mutex_lock(&op->lock);
    while (op->connected < expected && !g_cancellable_is_cancelled(op->cancellable)) {
        if (!g_cond_wait_until(&op->changed, &op->lock, deadline))
            break;
    }
    gboolean ok = op->connected >= expected;
    g_mutex_unlock(&op->lock);
    if (!ok && g_cancellable_is_cancelled(op->cancellable))
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "Operation cancelled");
    else if (!ok)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "Timed out after %us waiting for the client to connect to the operation's websockets",
                    timeout_seconds);
    return ok;
}

static gboolean waiter_timed_out(gpointer user_data)
{
    Waiter *waiter = user_data;
    FerryOperation *op = waiter->op;
    op->waiters = g_list_remove(op->waiters, waiter);
    g_source_unref(waiter->timeout);
    waiter->timeout = NULL;
    waiter->func(op, waiter->user_data);
    ferry_operation_unref(op);
    g_free(waiter);
    return G_SOURCE_REMOVE;
}

void ferry_operation_add_waiter(FerryOperation *op, int timeout_seconds, FerryOperationWaitFunc func,
                                gpointer user_data)
{
    if (ferry_operation_is_done(op)) {
        func(op, user_data);
        return;
    }
    Waiter *waiter = g_new0(Waiter, 1);
    waiter->func = func;
    waiter->user_data = user_data;
    waiter->op = ferry_operation_ref(op);
    if (timeout_seconds >= 0) {
        waiter->timeout = g_timeout_source_new_seconds((guint)timeout_seconds);
        g_source_set_callback(waiter->timeout, waiter_timed_out, waiter, NULL);
        g_source_attach(waiter->timeout, op->daemon->main_context);
    }
    op->waiters = g_list_prepend(op->waiters, waiter);
}

void ferry_operations_shutdown(FerryOperations *operations)
{
    g_mutex_lock(&operations->lock);
    GHashTableIter iter;
    gpointer value;
    g_hash_table_iter_init(&iter, operations->by_id);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        FerryOperation *op = value;
        g_cancellable_cancel(op->cancellable);
        g_mutex_lock(&op->lock);
        g_cond_broadcast(&op->changed);
        g_mutex_unlock(&op->lock);
    }
    GThreadPool *workers = g_steal_pointer(&operations->workers);
    g_mutex_unlock(&operations->lock);
    if (workers != NULL)
        g_thread_pool_free(workers, FALSE, TRUE); /* let running actions finish their cleanup */
}

void ferry_operations_free(FerryOperations *operations)
{
    if (operations == NULL)
        return;
    ferry_operations_shutdown(operations);
    g_hash_table_unref(operations->by_id);
    g_mutex_clear(&operations->lock);
    g_free(operations);
}
