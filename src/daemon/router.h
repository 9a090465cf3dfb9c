/* Request routing: a table of (method, path pattern) -> handler, and the request/response types handlers use.
 * Handlers run on the main thread and must not block: long work becomes an operation. */
#pragma once

#include <jansson.h>
#include <libsoup/soup.h>

#include "daemon.h"

G_BEGIN_DECLS

typedef struct {
    FerryDaemon *daemon;
    SoupServerMessage *msg;
    const char *method;
    const char *path;
    GHashTable *params;       /* pattern captures, URL-decoded: "name", "snapshot", ... */
    GHashTable *query;        /* query string, decoded (may be empty, never NULL) */
    const char *project;      /* ?project= or "default" */
    gboolean trusted;
    gboolean via_unix_socket;
    const char *client_fingerprint; /* HTTPS client certificate fingerprint, NULL on the unix socket */
    json_t *body;             /* parsed JSON body for JSON requests (NULL when absent) */
    const char *upload_path;  /* octet-stream bodies are streamed to this file instead */
} FerryRequest;

typedef struct _FerryResponse FerryResponse;

typedef FerryResponse *(*FerryHandler)(FerryRequest *request);

typedef struct {
    const char *method;
    const char *pattern;      /* "/1.0/instances/{name}/snapshots/{snapshot}" */
    FerryHandler handler;
    gboolean allow_untrusted;
} FerryRoute;

/* Match method + path; on success fills params and returns the route. Sets *path_known when the path matched
 * some route with another method (405 rather than 404). */
const FerryRoute *ferry_router_match(const char *method, const char *path, GHashTable *params, gboolean *path_known);

/* Does this request stream its body to a file (image upload, backup import)? */
gboolean ferry_router_is_upload(const char *method, const char *path, const char *content_type);

/* Dispatch a fully read request (main thread). */
void ferry_router_dispatch(FerryDaemon *daemon, SoupServerMessage *msg, gboolean via_unix_socket,
                           const char *upload_path);

/* Parameter helpers. */
const char *ferry_request_param(FerryRequest *request, const char *name);
const char *ferry_request_query(FerryRequest *request, const char *name);
/* ?recursion=N, 0 when absent. */
int ferry_request_recursion(FerryRequest *request);

G_END_DECLS
