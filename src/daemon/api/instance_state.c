/* /1.0/instances/{name}/state: runtime state, and start/stop/restart/freeze/unfreeze. */
#include "api.h"
#include "instance_action.h"

#include "error.h"
#include "instances.h"
#include "json.h"
#include "lxc_runtime.h"

FerryResponse *api_instance_state_get(FerryRequest *request)
{
    GError *error = NULL;
    json_t *state =
        ferry_instance_render_state(request->daemon, request->project, ferry_request_param(request, "name"), &error);
    return state != NULL ? ferry_response_sync(state) : ferry_response_error(error);
}

/* Incus: force or timeout 0 stops at once; otherwise a clean shutdown waiting timeout seconds (-1: forever). */
static gboolean stop_with(FerryDaemon *daemon, const char *project, const char *name, json_t *args, GError **error)
{
    gboolean force = ferry_json_get_bool(args, "force", FALSE);
    json_int_t timeout = json_integer_value(json_object_get(args, "timeout"));
    if (json_object_get(args, "timeout") == NULL)
        timeout = -1;
    return ferry_instance_stop(daemon, project, name, force || timeout == 0, (int)timeout, error);
}

static gboolean change_state(FerryDaemon *daemon, const char *project, const char *name, json_t *args,
                             GError **error)
{
    const char *action = ferry_json_get_string(args, "action");
    if (g_str_equal(action, "start"))
        return ferry_instance_start(daemon, project, name, error);
    if (g_str_equal(action, "stop"))
        return stop_with(daemon, project, name, args, error);
    if (g_str_equal(action, "restart")) {
        int code = 0;
        ferry_instance_status(daemon, project, name, &code);
        if (code != 102 && !stop_with(daemon, project, name, args, error))
            return FALSE;
        return ferry_instance_start(daemon, project, name, error);
    }
    g_autofree char *lxcpath = ferry_daemon_path(daemon, "containers", NULL);
    g_autofree char *lxc_name = ferry_instance_volume_name(project, name);
    if (g_str_equal(action, "freeze"))
        return ferry_container_freeze(lxcpath, lxc_name, error);
    return ferry_container_unfreeze(lxcpath, lxc_name, error);
}

FerryResponse *api_instance_state_put(FerryRequest *request)
{
    static const char *const actions[] = {"start", "stop", "restart", "freeze", "unfreeze", NULL};
    if (request->body == NULL)
        return ferry_response_error_new(400, "Missing request body");
    const char *action = ferry_json_get_string(request->body, "action");
    if (action == NULL || !g_strv_contains(actions, action))
        return ferry_response_error_new(400, "Unknown action \"%s\" (start, stop, restart, freeze, unfreeze)",
                                        action != NULL ? action : "");
    if (ferry_json_get_bool(request->body, "stateful", FALSE))
        return ferry_response_error_new(501, "Stateful start/stop is not supported yet");
    /* Say "already running/stopped" straight away rather than through a failed operation. */
    const char *name = ferry_request_param(request, "name");
    int code = 0;
    if (ferry_db_exists(request->daemon->db, FERRY_KIND_INSTANCE, request->project, "", name)) {
        ferry_instance_status(request->daemon, request->project, name, &code);
        if (g_str_equal(action, "start") && code == 103)
            return ferry_response_error_new(400, "The instance is already running");
        if ((g_str_equal(action, "stop") || g_str_equal(action, "restart")) && code == 102)
            return ferry_response_error_new(400, g_str_equal(action, "stop") ? "The instance is already stopped"
                                                                             : "The instance isn't running");
    }
    static const char *const descriptions[] = {"Starting instance", "Stopping instance", "Restarting instance",
                                               "Freezing instance", "Unfreezing instance"};
    const char *description = descriptions[0];
    for (gsize i = 0; actions[i] != NULL; i++) {
        if (g_str_equal(actions[i], action))
            description = descriptions[i];
    }
    return ferry_api_instance_action(request, description, action, change_state, json_deep_copy(request->body));
}
