/* Operations: every long action runs as an Incus-style operation on a worker thread, observable through
 * /1.0/operations (+/wait, /websocket, DELETE to cancel) and /1.0/events. */
#pragma once

#include <gio/gio.h>
#include <jansson.h>
#include <libsoup/soup.h>

G_BEGIN_DECLS

typedef struct _FerryDaemon FerryDaemon;
typedef struct _FerryOperation FerryOperation;
typedef struct _FerryOperations FerryOperations;

typedef enum {
    FERRY_OPERATION_TASK,
    FERRY_OPERATION_WEBSOCKET,
    FERRY_OPERATION_TOKEN,
} FerryOperationClass;

/* Incus status codes. */
enum {
    FERRY_STATUS_CREATED = 100,
    FERRY_STATUS_RUNNING = 103,
    FERRY_STATUS_SUCCESS = 200,
    FERRY_STATUS_FAILURE = 400,
    FERRY_STATUS_CANCELLED = 401,
};
const char *ferry_status_text(int status_code);

/* Runs on a worker thread; returns FALSE with error set on failure. */
typedef gboolean (*FerryOperationRunFunc)(FerryOperation *op, gpointer data, GError **error);
/* A websocket connection for this operation arrived with a valid secret (main thread); the function takes
 * over the message (upgrade) or fails. */
typedef gboolean (*FerryOperationConnectFunc)(FerryOperation *op, gpointer data, SoupServerMessage *msg,
                                              const char *secret_name, GError **error);

FerryOperations *ferry_operations_new(FerryDaemon *daemon);
void ferry_operations_free(FerryOperations *operations);

FerryOperation *ferry_operation_new(FerryDaemon *daemon, FerryOperationClass klass, const char *project,
                                    const char *description, json_t *resources /* stolen, may be NULL */,
                                    json_t *metadata /* stolen, may be NULL */, FerryOperationRunFunc run,
                                    gpointer data, GDestroyNotify data_free);
/* Websocket operations carry named one-time secrets (also put in metadata["fds"] or metadata directly). */
void ferry_operation_set_connect(FerryOperation *op, FerryOperationConnectFunc connect);
/* Register and start it on the worker pool. */
void ferry_operation_start(FerryOperation *op);

FerryOperation *ferry_operation_ref(FerryOperation *op);
void ferry_operation_unref(FerryOperation *op);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryOperation, ferry_operation_unref)

FerryOperation *ferry_operations_lookup(FerryOperations *operations, const char *id); /* new ref or NULL */
/* All operations as JSON (project NULL = all). */
json_t *ferry_operations_list(FerryOperations *operations, const char *project, gboolean recursive);

const char *ferry_operation_get_id(FerryOperation *op);
const char *ferry_operation_get_project(FerryOperation *op);
FerryOperationClass ferry_operation_get_class(FerryOperation *op);
FerryDaemon *ferry_operation_get_daemon(FerryOperation *op);
GCancellable *ferry_operation_get_cancellable(FerryOperation *op);
gboolean ferry_operation_is_done(FerryOperation *op);
json_t *ferry_operation_to_json(FerryOperation *op);

/* Replace or merge metadata (thread-safe); emits an operation event. */
void ferry_operation_set_metadata(FerryOperation *op, json_t *metadata /* stolen */);
void ferry_operation_update_metadata(FerryOperation *op, const char *key, json_t *value /* stolen */);
/* Report transfer progress: metadata[key] = "<done> (<rate>/s)" like Incus, plus ferry's "progress" object
 * {stage, done, total, percent, rate, eta_seconds} that ferry's CLI shows. total 0 = unknown. */
void ferry_operation_report_progress(FerryOperation *op, const char *key, const char *stage, guint64 done,
                                     guint64 total);

/* Request cancellation; FALSE with 403-ish error when the operation can't be cancelled. */
gboolean ferry_operation_cancel(FerryOperation *op, GError **error);
/* Block (worker threads only) until the named websockets all connected, the timeout elapsed or cancel. */
gboolean ferry_operation_wait_connected(FerryOperation *op, guint expected, guint timeout_seconds, GError **error);
/* Called by a connect handler once a websocket is attached. */
void ferry_operation_mark_connected(FerryOperation *op);

/* Secrets of a websocket/token operation: name -> secret. */
void ferry_operation_add_secret(FerryOperation *op, const char *name, const char *secret);
/* Check a presented secret in constant time; returns the channel name (caller frees) or NULL. A secret is good
 * for one connection only. */
char *ferry_operation_consume_secret(FerryOperation *op, const char *secret);

/* Hand a websocket request with a valid secret to the operation's connect function. */
gboolean ferry_operation_connect(FerryOperation *op, SoupServerMessage *msg, const char *channel, GError **error);

/* Finish a token operation from outside (used or revoked). */
void ferry_operation_finish(FerryOperation *op, gboolean success, const char *error_message);

/* /wait support: call func on the main thread when the op is done or after timeout_seconds (-1 = never). */
typedef void (*FerryOperationWaitFunc)(FerryOperation *op, gpointer user_data);
void ferry_operation_add_waiter(FerryOperation *op, int timeout_seconds, FerryOperationWaitFunc func,
                                gpointer user_data);

/* Cancel everything (shutdown) and wait for workers. */
void ferry_operations_shutdown(FerryOperations *operations);

G_END_DECLS
