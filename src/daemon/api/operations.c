/* /1.0/operations: list, inspect, wait for, cancel, and connect to operations. */
#include "api.h"

#include "db.h"
#include "error.h"
#include "json.h"
#include "operations.h"

static FerryOperation *find(FerryRequest *request, GError **error)
{
    const char *id = ferry_request_param(request, "id");
    FerryOperation *op = ferry_operations_lookup(request->daemon->operations, id);
    if (op == NULL)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Operation \"%s\" not found", id);
    return op;
}

FerryResponse *api_operations_get(FerryRequest *request)
{
    const char *all = ferry_request_query(request, "all-projects");
    const char *project = all != NULL && g_str_equal(all, "true") ? NULL : request->project;
    return ferry_response_sync(
        ferry_operations_list(request->daemon->operations, project, ferry_request_recursion(request) > 0));
}

FerryResponse *api_operation_get(FerryRequest *request)
{
    GError *error = NULL;
    g_autoptr(FerryOperation) op = find(request, &error);
    if (op == NULL)
        return ferry_response_error(error);
    return ferry_response_sync(ferry_operation_to_json(op));
}

FerryResponse *api_operation_delete(FerryRequest *request)
{
    GError *error = NULL;
    g_autoptr(FerryOperation) op = find(request, &error);
    if (op == NULL)
        return ferry_response_error(error);
    if (!ferry_operation_cancel(op, &error))
        return ferry_response_error(error);
    /* Cancelling a token operation revokes the token. */
    if (ferry_operation_get_class(op) == FERRY_OPERATION_TOKEN)
        ferry_db_delete(request->daemon->db, FERRY_KIND_TOKEN, "", "", ferry_operation_get_id(op), NULL);
    return ferry_response_sync(NULL);
}

static void on_wait_done(FerryOperation *op, gpointer user_data)
{
    SoupServerMessage *msg = user_data;
    ferry_response_send_sync(msg, ferry_operation_to_json(op));
    soup_server_message_unpause(msg);
    g_object_unref(msg);
}

FerryResponse *api_operation_wait(FerryRequest *request)
{
    GError *error = NULL;
    g_autoptr(FerryOperation) op = find(request, &error);
    if (op == NULL)
        return ferry_response_error(error);
    const char *timeout_text = ferry_request_query(request, "timeout");
    int timeout = timeout_text != NULL ? atoi(timeout_text) : -1;
    if (ferry_operation_is_done(op) || timeout == 0)
        return ferry_response_sync(ferry_operation_to_json(op));
    /* Answer later, from the main loop, when the operation ends or the timeout fires. */
    soup_server_message_pause(request->msg);
    ferry_operation_add_waiter(op, timeout, on_wait_done, g_object_ref(request->msg));
    return ferry_response_handled();
}

FerryResponse *api_operation_websocket(FerryRequest *request)
{
    GError *error = NULL;
    g_autoptr(FerryOperation) op = find(request, &error);
    if (op == NULL)
        return ferry_response_error(error);
    const char *secret = ferry_request_query(request, "secret");
    if (secret == NULL || *secret == '\0')
        return ferry_response_error_new(400, "Missing websocket secret");
    if (ferry_operation_is_done(op))
        return ferry_response_error_new(400, "Operation \"%s\" has already finished", ferry_operation_get_id(op));
    g_autofree char *channel = ferry_operation_consume_secret(op, secret);
    if (channel == NULL)
        return ferry_response_error_new(403, "Forbidden: wrong or already used websocket secret");
    if (!ferry_operation_connect(op, request->msg, channel, &error))
        return ferry_response_error(error);
    return ferry_response_handled();
}
