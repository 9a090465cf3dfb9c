/* HTTP client for the Incus REST API, spoken by ferryd and by Incus itself.
 *
 * A FerryClient talks to one server, over its unix socket or over HTTPS with a client certificate and a
 * pinned server certificate (no CA: the peer's certificate must be the stored one, or have the expected
 * fingerprint). The API is synchronous, for the CLI: each call runs the client's private GMainContext until
 * it is done. Websockets are SoupWebsocketConnections attached to that same context; whoever uses them runs
 * it (ferry_client_get_context) while they are open.
 *
 * Errors: an Incus error response becomes a FERRY_ERROR whose code is its error_code and whose message is
 * the server's; a server that cannot be reached is FERRY_ERROR_UNAVAILABLE, naming the address. */
#pragma once

#include <gio/gio.h>
#include <jansson.h>
#include <libsoup/soup.h>

G_BEGIN_DECLS

typedef struct _FerryClient FerryClient;

/* Talk to the server on a unix socket. */
FerryClient *ferry_client_new_unix(const char *socket_path);

/* Talk to https://host:port. client_cert (with its key) is sent when the server asks for one.
 * The peer must present server_cert, or a certificate whose SHA-256 fingerprint is server_fingerprint;
 * with neither, any certificate is accepted and can be read back with ferry_client_get_peer_certificate
 * (for a user to confirm before trusting it). */
FerryClient *ferry_client_new_https(const char *url, GTlsCertificate *client_cert,
                                    GTlsCertificate *server_cert, const char *server_fingerprint,
                                    GError **error);

void ferry_client_free(FerryClient *client);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryClient, ferry_client_free)

/* The project added as ?project= to every request (NULL: none, the server's default). */
void ferry_client_set_project(FerryClient *client, const char *project);
const char *ferry_client_get_project(FerryClient *client);

/* "unix:<path>" or the https URL, for messages. */
const char *ferry_client_get_address(FerryClient *client);

/* The certificate the HTTPS server presented at the last handshake, or NULL. */
GTlsCertificate *ferry_client_get_peer_certificate(FerryClient *client);

/* The context every callback of this client runs in. */
GMainContext *ferry_client_get_context(FerryClient *client);

/* "/1.0/<segment>/<segment>..." with each segment percent-escaped; NULL-terminated. */
char *ferry_api_path(const char *first_segment, ...) G_GNUC_NULL_TERMINATED;

/* A decoded non-error response envelope. */
typedef struct {
    char *type;       /* "sync" or "async" */
    int status_code;  /* 200, or 100 for a created operation */
    char *operation;  /* async: "/1.0/operations/<uuid>" */
    char *etag;       /* the ETag header, when sent */
    json_t *metadata; /* never NULL (json null when absent) */
} FerryResponse;

void ferry_response_free(FerryResponse *response);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryResponse, ferry_response_free)

/* One request. path starts with "/1.0" and may carry a query string; body may be NULL.
 * etag, when not NULL, is sent as If-Match. */
FerryResponse *ferry_client_request(FerryClient *client, const char *method, const char *path, json_t *body,
                                    const char *etag, GError **error);

/* GET of a sync resource: its metadata (new reference); etag_out may be NULL. */
json_t *ferry_client_get(FerryClient *client, const char *path, char **etag_out, GError **error);

/* GET of a plain file (an instance log, an exported image): the body on success; an error envelope or
 * HTTP error becomes a GError as for ferry_client_request. */
GBytes *ferry_client_get_raw(FerryClient *client, const char *path, GError **error);

/* Progress of a long action, from an operation's metadata or a local transfer. */
typedef struct {
    const char *stage; /* what is going on ("Unpack", "Uploading image", an instance name), or NULL */
    const char *text;  /* Incus's free-form progress ("45% (12.30MB/s)") when that is all there is, or NULL */
    gint64 done;       /* bytes done, -1 unknown */
    gint64 total;      /* bytes in all, -1 unknown */
    gint64 rate;       /* bytes per second, -1 unknown */
} FerryProgress;

typedef void (*FerryProgressFunc)(const FerryProgress *progress, gpointer user_data);

/* Progress from an operation object: ferry's numbers in metadata "progress" {"done","total",
 * "rate","stage"} when present (Incus's own "progress" object has only "stage", "percent" and
 * "speed" strings: ferry adds its numbers beside them), else an Incus "*_progress" string (download, unpack,
 * fs_progress...).
 * FALSE when the operation carries no progress. Strings point into operation. */
gboolean ferry_progress_from_operation(const json_t *operation, FerryProgress *progress);

/* Wait for an operation (uuid or /1.0/operations/<uuid>) to end, through GET .../wait?timeout=-1.
 * With progress, updates to the operation are followed on the /1.0/events websocket meanwhile.
 * Returns the final operation object; an operation that failed or was cancelled is an error carrying its
 * message (FERRY_ERROR_CANCELLED when cancelled). */
json_t *ferry_client_wait_operation(FerryClient *client, const char *operation, FerryProgressFunc progress,
                                    gpointer user_data, GError **error);
/* The same, handing back the final operation in operation_out whether it succeeded or not (exec's exit
 * status is in the metadata of a failed operation too); operation_out stays NULL when there is none. */
gboolean ferry_client_wait_operation_full(FerryClient *client, const char *operation,
                                          FerryProgressFunc progress, gpointer user_data,
                                          json_t **operation_out, GError **error);

/* Following an operation without blocking: the wait request (and, with progress or follow_events, the
 * events websocket) start at once and make headway whenever the client's context runs. Start one before
 * doing the operation's work (exec's websockets) so that its last event, the only place where a failed
 * operation's metadata shows with Incus, is not missed. */
typedef struct _FerryOperationWatch FerryOperationWatch;
FerryOperationWatch *ferry_client_watch_operation(FerryClient *client, const char *operation,
                                                  FerryProgressFunc progress, gpointer user_data,
                                                  gboolean follow_events);
gboolean ferry_operation_watch_is_done(FerryOperationWatch *watch);
/* Run the context until the operation ends; results as ferry_client_wait_operation_full. */
gboolean ferry_operation_watch_finish(FerryOperationWatch *watch, json_t **operation_out, GError **error);
void ferry_operation_watch_free(FerryOperationWatch *watch);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryOperationWatch, ferry_operation_watch_free)

/* A request whose answer may be an operation: sync → its metadata; async → the final operation
 * (after waiting, with progress). */
json_t *ferry_client_run(FerryClient *client, const char *method, const char *path, json_t *body,
                         FerryProgressFunc progress, gpointer user_data, GError **error);

/* Send a file as an application/octet-stream body with extra headers (NULL-terminated name, value pairs),
 * reporting upload progress. Returns the response envelope (often async). */
FerryResponse *ferry_client_upload_file(FerryClient *client, const char *method, const char *path,
                                        const char *file_path, const char *const *headers,
                                        FerryProgressFunc progress, gpointer user_data, GError **error);

/* The same with the body from a stream of size bytes (-1: unknown, sent chunked), e.g. stdin. */
FerryResponse *ferry_client_upload_stream(FerryClient *client, const char *method, const char *path,
                                          GInputStream *input, gint64 size, const char *const *headers,
                                          FerryProgressFunc progress, gpointer user_data, GError **error);

/* Called once a download's response headers are in, with its X-Ferry-Operation header (the operation that
 * produces the body on a ferry server; NULL elsewhere). */
typedef void (*FerryDownloadStartFunc)(const char *operation, gpointer user_data);

/* GET path and write the body to out as it arrives (never all in memory), running the client's context
 * between reads so that other work on it (an operation watch) goes on. progress gets the bytes received
 * (total unknown). An error response becomes a GError as for ferry_client_request; a body that ends early
 * (a chunked response cut short) is FERRY_ERROR_UNAVAILABLE. */
gboolean ferry_client_download(FerryClient *client, const char *path, GOutputStream *out,
                               FerryDownloadStartFunc started, FerryProgressFunc progress, gpointer user_data,
                               GError **error);

/* Open a websocket on path (e.g. "/1.0/events?type=operation"). */
SoupWebsocketConnection *ferry_client_websocket(FerryClient *client, const char *path, GError **error);

/* Open the websocket of an operation: /1.0/operations/<id>/websocket?secret=<secret>. */
SoupWebsocketConnection *ferry_client_operation_websocket(FerryClient *client, const char *operation,
                                                          const char *secret, GError **error);

/* "abc-123" from "/1.0/operations/abc-123" (or the id itself). */
char *ferry_operation_id(const char *operation);

G_END_DECLS
