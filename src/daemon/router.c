#include "router.h"

#include "api/api.h"
#include "error.h"
#include "json.h"
#include "response.h"
#include "trust.h"

#include <string.h>

/* JSON bodies larger than this are refused (413); uploads stream to disk instead. */
#define MAX_JSON_BODY (4 * 1024 * 1024)

/* First match wins: literal routes come before the captures that would also match them. */
static const FerryRoute routes[] = {
    {"GET", "/", api_server_get, TRUE}, /* Incus answers "/" with the supported API versions; we serve /1.0 */
    {"GET", "/1.0", api_server_get, TRUE},
    {"PUT", "/1.0", api_server_put, FALSE},
    {"PATCH", "/1.0", api_server_put, FALSE},
    {"GET", "/1.0/resources", api_resources_get, FALSE},

    /* POST is reachable untrusted only to redeem a trust token; the handler enforces that. */
    {"GET", "/1.0/certificates", api_certificates_get, FALSE},
    {"POST", "/1.0/certificates", api_certificates_post, TRUE},
    {"GET", "/1.0/certificates/{fingerprint}", api_certificate_get, FALSE},
    {"PUT", "/1.0/certificates/{fingerprint}", api_certificate_put, FALSE},
    {"PATCH", "/1.0/certificates/{fingerprint}", api_certificate_put, FALSE},
    {"DELETE", "/1.0/certificates/{fingerprint}", api_certificate_delete, FALSE},

    {"GET", "/1.0/events", api_events_get, FALSE},

    {"GET", "/1.0/operations", api_operations_get, FALSE},
    {"GET", "/1.0/operations/{id}", api_operation_get, FALSE},
    {"DELETE", "/1.0/operations/{id}", api_operation_delete, FALSE},
    {"GET", "/1.0/operations/{id}/wait", api_operation_wait, FALSE},
    /* Authenticated by the operation's one-time secret, not by certificate (Incus's migration model). */
    {"GET", "/1.0/operations/{id}/websocket", api_operation_websocket, TRUE},

    {"GET", "/1.0/instances", api_instances_get, FALSE},
    {"POST", "/1.0/instances", api_instances_post, FALSE},
    {"GET", "/1.0/instances/{name}", api_instance_get, FALSE},
    {"PUT", "/1.0/instances/{name}", api_instance_put, FALSE},
    {"PATCH", "/1.0/instances/{name}", api_instance_patch, FALSE},
    {"DELETE", "/1.0/instances/{name}", api_instance_delete, FALSE},
    {"POST", "/1.0/instances/{name}", api_instance_post, FALSE},
    {"GET", "/1.0/instances/{name}/state", api_instance_state_get, FALSE},
    {"PUT", "/1.0/instances/{name}/state", api_instance_state_put, FALSE},
    {"GET", "/1.0/instances/{name}/snapshots", api_snapshots_get, FALSE},
    {"POST", "/1.0/instances/{name}/snapshots", api_snapshots_post, FALSE},
    {"GET", "/1.0/instances/{name}/snapshots/{snapshot}", api_snapshot_get, FALSE},
    {"PUT", "/1.0/instances/{name}/snapshots/{snapshot}", api_snapshot_put, FALSE},
    {"PATCH", "/1.0/instances/{name}/snapshots/{snapshot}", api_snapshot_put, FALSE},
    {"POST", "/1.0/instances/{name}/snapshots/{snapshot}", api_snapshot_post, FALSE},
    {"DELETE", "/1.0/instances/{name}/snapshots/{snapshot}", api_snapshot_delete, FALSE},
    {"POST", "/1.0/instances/{name}/exec", api_instance_exec, FALSE},
    {"GET", "/1.0/instances/{name}/backups", api_backups_get, FALSE},
    {"POST", "/1.0/instances/{name}/backups", api_backups_post, FALSE},
    {"GET", "/1.0/instances/{name}/backups/{backup}", api_backup_get, FALSE},
    {"POST", "/1.0/instances/{name}/backups/{backup}", api_backup_post, FALSE},
    {"DELETE", "/1.0/instances/{name}/backups/{backup}", api_backup_delete, FALSE},
    {"GET", "/1.0/instances/{name}/backups/{backup}/export", api_backup_export, FALSE},
    {"GET", "/1.0/instances/{name}/logs", api_instance_logs_get, FALSE},
    {"GET", "/1.0/instances/{name}/logs/{file}", api_instance_log_get, FALSE},

    {"GET", "/1.0/images/aliases", api_image_aliases_get, FALSE},
    {"POST", "/1.0/images/aliases", api_image_aliases_post, FALSE},
    {"GET", "/1.0/images/aliases/{alias}", api_image_alias_get, FALSE},
    {"PUT", "/1.0/images/aliases/{alias}", api_image_alias_put, FALSE},
    {"PATCH", "/1.0/images/aliases/{alias}", api_image_alias_put, FALSE},
    {"POST", "/1.0/images/aliases/{alias}", api_image_alias_post, FALSE},
    {"DELETE", "/1.0/images/aliases/{alias}", api_image_alias_delete, FALSE},
    {"GET", "/1.0/images", api_images_get, FALSE},
    {"POST", "/1.0/images", api_images_post, FALSE},
    {"GET", "/1.0/images/{fingerprint}", api_image_get, FALSE},
    {"PUT", "/1.0/images/{fingerprint}", api_image_put, FALSE},
    {"PATCH", "/1.0/images/{fingerprint}", api_image_put, FALSE},
    {"DELETE", "/1.0/images/{fingerprint}", api_image_delete, FALSE},
    {"GET", "/1.0/images/{fingerprint}/export", api_image_export, FALSE},

    {"GET", "/1.0/profiles", api_profiles_get, FALSE},
    {"POST", "/1.0/profiles", api_profiles_post, FALSE},
    {"GET", "/1.0/profiles/{name}", api_profile_get, FALSE},
    {"PUT", "/1.0/profiles/{name}", api_profile_put, FALSE},
    {"PATCH", "/1.0/profiles/{name}", api_profile_patch, FALSE},
    {"POST", "/1.0/profiles/{name}", api_profile_post, FALSE},
    {"DELETE", "/1.0/profiles/{name}", api_profile_delete, FALSE},

    {"GET", "/1.0/projects", api_projects_get, FALSE},
    {"POST", "/1.0/projects", api_projects_post, FALSE},
    {"GET", "/1.0/projects/{name}", api_project_get, FALSE},
    {"PUT", "/1.0/projects/{name}", api_project_put, FALSE},
    {"PATCH", "/1.0/projects/{name}", api_project_patch, FALSE},
    {"POST", "/1.0/projects/{name}", api_project_post, FALSE},
    {"DELETE", "/1.0/projects/{name}", api_project_delete, FALSE},

    {"GET", "/1.0/storage-pools", api_pools_get, FALSE},
    {"POST", "/1.0/storage-pools", api_pools_post, FALSE},
    {"GET", "/1.0/storage-pools/{pool}", api_pool_get, FALSE},
    {"PUT", "/1.0/storage-pools/{pool}", api_pool_put, FALSE},
    {"PATCH", "/1.0/storage-pools/{pool}", api_pool_patch, FALSE},
    {"DELETE", "/1.0/storage-pools/{pool}", api_pool_delete, FALSE},
    {"GET", "/1.0/storage-pools/{pool}/resources", api_pool_resources_get, FALSE},
    {"GET", "/1.0/storage-pools/{pool}/volumes", api_volumes_get, FALSE},
    {"GET", "/1.0/storage-pools/{pool}/volumes/{type}", api_volumes_type_get, FALSE},
    {"GET", "/1.0/storage-pools/{pool}/volumes/{type}/{volume}", api_volume_get, FALSE},
    {"GET", "/1.0/storage-pools/{pool}/volumes/{type}/{volume}/snapshots/{snapshot}", api_volume_get, FALSE},

    {"GET", "/1.0/networks", api_networks_get, FALSE},
};

static gboolean match_pattern(const char *pattern, const char *path, GHashTable *params)
{
    g_auto(GStrv) pattern_parts = g_strsplit(pattern, "/", -1);
    g_auto(GStrv) path_parts = g_strsplit(path, "/", -1);
    if (g_strv_length(pattern_parts) != g_strv_length(path_parts))
        return FALSE;
    for (guint i = 0; pattern_parts[i] != NULL; i++) {
        const char *want = pattern_parts[i];
        const char *have = path_parts[i];
        if (want[0] == '{') {
            if (*have == '\0')
                return FALSE;
            g_autofree char *key = g_strndup(want + 1, strlen(want) - 2);
            char *value = g_uri_unescape_string(have, NULL);
            if (value == NULL)
                return FALSE;
            if (params != NULL)
                g_hash_table_replace(params, g_steal_pointer(&key), value);
            else
                g_free(value);
        } else if (!g_str_equal(want, have)) {
            return FALSE;
        }
    }
    return TRUE;
}

const FerryRoute *ferry_router_match(const char *method, const char *path, GHashTable *params, gboolean *path_known)
{
    g_autofree char *trimmed = g_strdup(path);
    gsize length = strlen(trimmed);
    while (length > 1 && trimmed[length - 1] == '/')
        trimmed[--length] = '\0';
    if (path_known != NULL)
        *path_known = FALSE;
    for (gsize i = 0; i < G_N_ELEMENTS(routes); i++) {
        if (!match_pattern(routes[i].pattern, trimmed, NULL))
            continue;
        if (path_known != NULL)
            *path_known = TRUE;
        if (g_str_equal(routes[i].method, method)) {
            match_pattern(routes[i].pattern, trimmed, params);
            return &routes[i];
        }
    }
    return NULL;
}

gboolean ferry_router_is_upload(const char *method, const char *path, const char *content_type)
{
    if (!g_str_equal(method, "POST") || content_type == NULL)
        return FALSE;
    if (!g_str_has_prefix(content_type, "application/octet-stream") && !g_str_has_prefix(content_type, "multipart/"))
        return FALSE;
    return g_str_equal(path, "/1.0/images") || g_str_equal(path, "/1.0/instances");
}

const char *ferry_request_param(FerryRequest *request, const char *name)
{
    return g_hash_table_lookup(request->params, name);
}

const char *ferry_request_query(FerryRequest *request, const char *name)
{
    return g_hash_table_lookup(request->query, name);
}

int ferry_request_recursion(FerryRequest *request)
{
    const char *recursion = ferry_request_query(request, "recursion");
    return recursion != NULL ? atoi(recursion) : 0;
}

static GHashTable *parse_query(SoupServerMessage *msg)
{
    GUri *uri = soup_server_message_get_uri(msg);
    const char *query = g_uri_get_query(uri);
    GHashTable *table = NULL;
    if (query != NULL)
        table = g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, NULL);
    return table != NULL ? table : g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

void ferry_router_dispatch(FerryDaemon *daemon, SoupServerMessage *msg, gboolean via_unix_socket,
                           const char *upload_path)
{
    const char *method = soup_server_message_get_method(msg);
    const char *path = g_uri_get_path(soup_server_message_get_uri(msg));
    g_debug("%s %s", method, path);
    g_autoptr(GHashTable) params = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GHashTable) query = parse_query(msg);

    gboolean path_known = FALSE;
    const FerryRoute *route = ferry_router_match(method, path, params, &path_known);

    g_autofree char *fingerprint = NULL;
    gboolean trusted = via_unix_socket || ferry_trust_check_client(daemon, msg, &fingerprint);
    if (!via_unix_socket)
        g_debug("HTTPS client certificate %s: %s", fingerprint != NULL ? fingerprint : "(none)",
                trusted ? "trusted" : "untrusted");

    if (route == NULL) {
        /* Untrusted clients learn nothing about which paths exist. */
        if (!trusted)
            ferry_response_send_error(msg, 403, "Forbidden: client certificate not trusted");
        else if (path_known)
            ferry_response_send_error(msg, 405, "Method not allowed");
        else
            ferry_response_send_error(msg, 404, "Not found");
        return;
    }
    if (!trusted && !route->allow_untrusted) {
        ferry_response_send_error(msg, 403, "Forbidden: client certificate not trusted");
        return;
    }

    FerryRequest request = {
        .daemon = daemon,
        .msg = msg,
        .method = method,
        .path = path,
        .params = params,
        .query = query,
        .trusted = trusted,
        .via_unix_socket = via_unix_socket,
        .client_fingerprint = fingerprint,
        .upload_path = upload_path,
    };
    const char *project = g_hash_table_lookup(query, "project");
    request.project = project != NULL && *project != '\0' ? project : "default";

    g_autoptr(json_t) body = NULL;
    /* A GET's body means nothing, and Incus's client sends one (`incus query` sends the JSON string ""). */
    gboolean reads_body = !g_str_equal(method, "GET") && !g_str_equal(method, "HEAD");
    if (upload_path == NULL && reads_body) {
        SoupMessageBody *request_body = soup_server_message_get_request_body(msg);
        if (request_body->length > MAX_JSON_BODY) {
            ferry_response_send_error(msg, 413, "Request body too large");
            return;
        }
        if (request_body->length > 0) {
            g_autoptr(GBytes) bytes = soup_message_body_flatten(request_body);
            gsize size = 0;
            const char *data = g_bytes_get_data(bytes, &size);
            g_autoptr(GError) error = NULL;
            body = ferry_json_parse(data, size, &error);
            if (body == NULL) {
                ferry_response_send_error(msg, 400, error->message);
                return;
            }
            if (!json_is_object(body)) {
                ferry_response_send_error(msg, 400, "Invalid request: body must be a JSON object");
                return;
            }
        }
    }
    request.body = body;

    FerryResponse *response = route->handler(&request);
    ferry_response_send(response, msg);
}
