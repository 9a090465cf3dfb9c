/* Devices of an instance ("config device") or a profile ("profile device"). */
#include "cli.h"

#include "error.h"

#include <stdio.h>
#include <string.h>

const char *const cli_instance_writable[] = {"architecture", "config",   "devices",     "ephemeral",
                                             "profiles",     "stateful", "description", NULL};
const char *const cli_profile_writable[] = {"config", "description", "devices", NULL};

static int compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char **)a, *(const char **)b);
}

/* Everything after the device name: "k=v k2=v2" or a single "k v". */
static gboolean parse_settings(GPtrArray *args, guint first, json_t *out, GError **error)
{
    if (args->len == first + 2 && strchr(g_ptr_array_index(args, first), '=') == NULL) {
        json_object_set_new(out, g_ptr_array_index(args, first),
                            json_string(g_ptr_array_index(args, first + 1)));
        return TRUE;
    }
    return cli_parse_key_values(args, first, out, error);
}

static gboolean store(FerryClient *client, const char *path, json_t *resource, gboolean profile,
                      GError **error)
{
    g_autoptr(json_t) body = cli_writable(resource, profile ? cli_profile_writable : cli_instance_writable);
    g_autoptr(json_t) result = ferry_client_run(client, "PUT", path, body, NULL, NULL, error);
    return result != NULL;
}

int cli_device_action(Cli *cli, FerryClient *client, const char *action, const char *path, gboolean profile,
                      GPtrArray *args, guint first, GError **error)
{
    g_autoptr(json_t) resource = ferry_client_get(client, path, NULL, error);
    if (resource == NULL)
        return -1;
    json_t *devices = json_object_get(resource, "devices");
    if (!json_is_object(devices)) {
        devices = json_object();
        json_object_set_new(resource, "devices", devices);
    }
    json_t *expanded = json_object_get(resource, "expanded_devices");
    const char *device = args->len > first ? g_ptr_array_index(args, first) : NULL;

    if (strcmp(action, "list") == 0) {
        g_autoptr(GPtrArray) names = g_ptr_array_new();
        const char *name;
        json_t *value;
        json_object_foreach(devices, name, value) g_ptr_array_add(names, (gpointer)name);
        g_ptr_array_sort(names, compare_names);
        for (guint i = 0; i < names->len; i++)
            printf("%s\n", (char *)g_ptr_array_index(names, i));
        return 0;
    }
    if (strcmp(action, "show") == 0)
        return cli_print_yaml_devices(devices, error) ? 0 : -1;

    if (strcmp(action, "add") == 0) {
        if (json_object_get(devices, device) != NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "The device already exists");
            return -1;
        }
        json_t *entry = json_pack("{s:s}", "type", (char *)g_ptr_array_index(args, first + 1));
        json_object_set_new(devices, device, entry);
        if (!cli_parse_key_values(args, first + 2, entry, error))
            return -1;
        if (!store(client, path, resource, profile, error))
            return -1;
        if (!cli->quiet)
            printf("Device %s added to %s\n", device, ferry_json_get_string(resource, "name"));
        return 0;
    }
    if (strcmp(action, "override") == 0) {
        if (json_object_get(devices, device) != NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "The device already exists");
            return -1;
        }
        json_t *from_profile = json_object_get(expanded, device);
        if (from_profile == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "The profile device doesn't exist");
            return -1;
        }
        json_t *entry = json_deep_copy(from_profile);
        json_object_set_new(devices, device, entry);
        if (!cli_parse_key_values(args, first + 1, entry, error))
            return -1;
        if (!store(client, path, resource, profile, error))
            return -1;
        if (!cli->quiet)
            printf("Device %s overridden for %s\n", device, ferry_json_get_string(resource, "name"));
        return 0;
    }
    if (strcmp(action, "remove") == 0) {
        for (guint i = first; i < args->len; i++) {
            const char *name = g_ptr_array_index(args, i);
            if (json_object_get(devices, name) == NULL) {
                if (!profile && json_object_get(expanded, name) != NULL)
                    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                                "Device from profile(s) cannot be removed from individual instance. "
                                "Override device or modify profile instead");
                else
                    g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Device doesn't exist");
                return -1;
            }
            json_object_del(devices, name);
        }
        if (!store(client, path, resource, profile, error))
            return -1;
        if (!cli->quiet)
            printf("Device %s removed from %s\n", device, ferry_json_get_string(resource, "name"));
        return 0;
    }

    json_t *entry = json_object_get(devices, device);
    if (entry == NULL) {
        if (!profile && json_object_get(expanded, device) != NULL && strcmp(action, "get") != 0)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Device from profile(s) cannot be modified for individual instance. "
                        "Override device or modify profile instead");
        else
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Device doesn't exist");
        if (!profile && strcmp(action, "get") == 0 && json_object_get(expanded, device) != NULL) {
            g_clear_error(error);
            entry = json_object_get(expanded, device);
        } else {
            return -1;
        }
    }
    if (strcmp(action, "get") == 0) {
        printf("%s\n", ferry_json_get_string(entry, g_ptr_array_index(args, first + 1)) ?: "");
        return 0;
    }
    if (strcmp(action, "set") == 0) {
        if (!parse_settings(args, first + 1, entry, error))
            return -1;
        return store(client, path, resource, profile, error) ? 0 : -1;
    }
    if (strcmp(action, "unset") == 0) {
        json_object_del(entry, g_ptr_array_index(args, first + 1));
        return store(client, path, resource, profile, error) ? 0 : -1;
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Unknown device action %s", action);
    return -1;
}
