#include "response.h"

#include "error.h"
#include "json.h"

typedef enum {
    RESPONSE_SYNC,
    RESPONSE_ASYNC,
    RESPONSE_ERROR,
    RESPONSE_RAW,
    RESPONSE_HANDLED,
} ResponseKind;

struct _FerryResponse {
    ResponseKind kind;
    int http_status;
    json_t *metadata;
    char *operation_url;
    char *error_message;
    char *location;
    char *etag;
    char *content_type;
    GBytes *raw;
};

static FerryResponse *response_new(ResponseKind kind, int http_status)
{
    FerryResponse *response = g_new0(FerryResponse, 1);
    response->kind = kind;
    response->http_status = http_status;
    return response;
}

static void response_free(FerryResponse *response)
{
    json_decref(response->metadata);
    g_free(response->operation_url);
    g_free(response->error_message);
    g_free(response->location);
    g_free(response->etag);
    g_free(response->content_type);
    if (response->raw != NULL)
        g_bytes_unref(response->raw);
    g_free(response);
}

FerryResponse *ferry_response_sync(json_t *metadata)
{
    FerryResponse *response = response_new(RESPONSE_SYNC, SOUP_STATUS_OK);
    response->metadata = metadata != NULL ? metadata : json_object();
    return response;
}

FerryResponse *ferry_response_created(json_t *metadata, const char *location)
{
    FerryResponse *response = ferry_response_sync(metadata);
    response->http_status = SOUP_STATUS_CREATED;
    response->location = g_strdup(location);
    return response;
}

FerryResponse *ferry_response_async(FerryOperation *op)
{
    FerryResponse *response = response_new(RESPONSE_ASYNC, SOUP_STATUS_ACCEPTED);
    response->metadata = ferry_operation_to_json(op);
    response->operation_url = g_strdup_printf("/1.0/operations/%s", ferry_operation_get_id(op));
    return response;
}

FerryResponse *ferry_response_error(GError *error)
{
    FerryResponse *response = response_new(RESPONSE_ERROR, ferry_error_http_status(error));
    response->error_message = g_strdup(error->message);
    g_error_free(error);
    return response;
}

FerryResponse *ferry_response_error_new(int status, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    FerryResponse *response = response_new(RESPONSE_ERROR, status);
    response->error_message = g_strdup_vprintf(format, args);
    va_end(args);
    return response;
}

FerryResponse *ferry_response_raw(const char *content_type, GBytes *bytes)
{
    FerryResponse *response = response_new(RESPONSE_RAW, SOUP_STATUS_OK);
    response->content_type = g_strdup(content_type);
    response->raw = bytes;
    return response;
}

void ferry_response_set_etag(FerryResponse *response, const char *etag)
{
    g_free(response->etag);
    response->etag = g_strdup(etag);
}

FerryResponse *ferry_response_handled(void)
{
    return response_new(RESPONSE_HANDLED, 0);
}

static void send_json(SoupServerMessage *msg, int http_status, json_t *envelope)
{
    g_autofree char *text = ferry_json_dump(envelope);
    gsize length = strlen(text);
    soup_server_message_set_status(msg, http_status, NULL);
    soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_TAKE, g_steal_pointer(&text), length);
}

void ferry_response_send_error(SoupServerMessage *msg, int status, const char *message)
{
    /* Incus sends the error code in both the body and the HTTP status. */
    if (status < 400 || status > 599)
        status = status == FERRY_ERROR_CANCELLED ? 400 : 500;
    g_autoptr(json_t) envelope = json_pack("{s:s, s:s, s:i, s:s, s:i, s:s, s:n}", "type", "error", "status", "",
                                           "status_code", 0, "operation", "", "error_code", status, "error",
                                           message, "metadata");
    send_json(msg, status, envelope);
}

void ferry_response_send_sync(SoupServerMessage *msg, json_t *metadata)
{
    g_autoptr(json_t) envelope = json_pack("{s:s, s:s, s:i, s:s, s:i, s:s, s:o}", "type", "sync", "status",
                                           "Success", "status_code", 200, "operation", "", "error_code", 0,
                                           "error", "", "metadata", metadata != NULL ? metadata : json_object());
    send_json(msg, SOUP_STATUS_OK, envelope);
}

void ferry_response_send(FerryResponse *response, SoupServerMessage *msg)
{
    SoupMessageHeaders *headers = soup_server_message_get_response_headers(msg);
    switch (response->kind) {
    case RESPONSE_SYNC: {
        if (response->etag != NULL)
            soup_message_headers_replace(headers, "ETag", response->etag);
        if (response->location != NULL)
            soup_message_headers_replace(headers, "Location", response->location);
        g_autoptr(json_t) envelope = json_pack("{s:s, s:s, s:i, s:s, s:i, s:s, s:O}", "type", "sync", "status",
                                               "Success", "status_code", 200, "operation", "", "error_code", 0,
                                               "error", "", "metadata", response->metadata);
        send_json(msg, response->http_status, envelope);
        break;
    }
    case RESPONSE_ASYNC: {
        soup_message_headers_replace(headers, "Location", response->operation_url);
        g_autoptr(json_t) envelope =
            json_pack("{s:s, s:s, s:i, s:s, s:i, s:s, s:O}", "type", "async", "status", "Operation created",
                      "status_code", 100, "operation", response->operation_url, "error_code", 0, "error", "",
                      "metadata", response->metadata);
        send_json(msg, response->http_status, envelope);
        break;
    }
    case RESPONSE_ERROR:
        ferry_response_send_error(msg, response->http_status, response->error_message);
        break;
    case RESPONSE_RAW: {
        soup_server_message_set_status(msg, response->http_status, NULL);
        gsize size = 0;
        gconstpointer data = g_bytes_get_data(response->raw, &size);
        soup_server_message_set_response(msg, response->content_type, SOUP_MEMORY_COPY, data, size);
        break;
    }
    case RESPONSE_HANDLED:
        break;
    }
    response_free(response);
}

char *ferry_response_etag_of(json_t *document)
{
    g_autofree char *text = json_dumps(document, JSON_COMPACT | JSON_SORT_KEYS);
    char *etag = g_compute_checksum_for_string(G_CHECKSUM_SHA256, text != NULL ? text : "", -1);
    free(g_steal_pointer(&text));
    return etag;
}
