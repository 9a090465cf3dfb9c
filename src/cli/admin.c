/* ferry admin init: first configuration of a server (--auto, --preseed, --dump), through the API. */
#include "cli.h"

#include "error.h"
#include "yaml.h"

#include <stdio.h>
#include <string.h>

static gboolean exists(FerryClient *client, const char *path, GError **error)
{
    g_autoptr(GError) lookup_error = NULL;
    g_autoptr(json_t) found = ferry_client_get(client, path, NULL, &lookup_error);
    if (found != NULL)
        return TRUE;
    if (lookup_error->code != FERRY_ERROR_NOT_FOUND)
        g_propagate_error(error, g_steal_pointer(&lookup_error));
    return FALSE;
}

static gboolean merge_server_config(FerryClient *client, json_t *settings, GError **error)
{
    if (!json_is_object(settings) || json_object_size(settings) == 0)
        return TRUE;
    g_autoptr(json_t) server = ferry_client_get(client, "/1.0", NULL, error);
    if (server == NULL)
        return FALSE;
    json_t *config = json_object_get(server, "config");
    g_autoptr(json_t) merged = json_is_object(config) ? json_deep_copy(config) : json_object();
    const char *key;
    json_t *value;
    json_object_foreach(settings, key, value)
    {
        g_autofree char *text =
            json_is_string(value) ? g_strdup(json_string_value(value)) : ferry_yaml_scalar_text(value);
        json_object_set_new(merged, key, json_string(text != NULL ? text : ""));
    }
    g_autoptr(json_t) body = json_pack("{s:O}", "config", merged);
    g_autoptr(json_t) result = ferry_client_run(client, "PUT", "/1.0", body, NULL, NULL, error);
    if (result == NULL)
        g_prefix_error(error, "Failed to update server configuration: ");
    return result != NULL;
}

/* Create a resource, or update the writable part of an existing one. */
static gboolean apply_entity(FerryClient *client, const char *collection, json_t *entity,
                             const char *const *writable, GError **error)
{
    const char *name = ferry_json_get_string(entity, "name");
    if (name == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Entry of %s without a name", collection);
        return FALSE;
    }
    g_autofree char *path = ferry_api_path(collection, name, NULL);
    g_autofree char *collection_path = ferry_api_path(collection, NULL);
    GError *lookup_error = NULL;
    gboolean present = exists(client, path, &lookup_error);
    if (lookup_error != NULL) {
        g_propagate_error(error, lookup_error);
        return FALSE;
    }
    g_autoptr(json_t) result = NULL;
    if (present) {
        g_autoptr(json_t) current = ferry_client_get(client, path, NULL, error);
        if (current == NULL)
            return FALSE;
        g_autoptr(json_t) body = cli_writable(current, writable);
        g_autoptr(json_t) given = cli_writable(entity, writable);
        json_t *config = json_object_get(given, "config");
        if (json_is_object(config) && json_is_object(json_object_get(body, "config"))) {
            json_object_update(json_object_get(body, "config"), config);
            json_object_del(given, "config");
        }
        json_object_update(body, given);
        result = ferry_client_run(client, "PUT", path, body, NULL, NULL, error);
    } else {
        result = ferry_client_run(client, "POST", collection_path, entity, NULL, NULL, error);
    }
    if (result == NULL)
        g_prefix_error(error, "Failed to %s %s \"%s\": ", present ? "update" : "create", collection, name);
    return result != NULL;
}

static gboolean apply_preseed(FerryClient *client, json_t *preseed, GError **error)
{
    static const char *const pool_writable[] = {"config", "description", NULL};
    static const char *const project_writable[] = {"config", "description", NULL};
    if (!merge_server_config(client, json_object_get(preseed, "config"), error))
        return FALSE;
    gsize i;
    json_t *entry;
    json_array_foreach(json_object_get(preseed, "storage_pools"), i, entry)
    {
        if (!apply_entity(client, "storage-pools", entry, pool_writable, error))
            return FALSE;
    }
    json_array_foreach(json_object_get(preseed, "projects"), i, entry)
    {
        if (!apply_entity(client, "projects", entry, project_writable, error))
            return FALSE;
    }
    json_array_foreach(json_object_get(preseed, "profiles"), i, entry)
    {
        if (!apply_entity(client, "profiles", entry, cli_profile_writable, error))
            return FALSE;
    }
    if (json_array_size(json_object_get(preseed, "networks")) > 0)
        g_printerr("Warning: networks in the preseed are ignored (not supported)\n");
    return TRUE;
}

static json_t *auto_preseed(FerryClient *client, const char *backend, int loop_size, const char *address,
                            int port, GError **error)
{
    g_autoptr(json_t) preseed = json_object();
    if (address != NULL) {
        g_autofree char *listen = strchr(address, ':') != NULL && address[0] != '['
                                      ? g_strdup_printf("[%s]:%d", address, port)
                                      : g_strdup_printf("%s:%d", address, port);
        json_object_set_new(preseed, "config", json_pack("{s:s}", "core.https_address", listen));
    }
    g_autoptr(json_t) pools = ferry_client_get(client, "/1.0/storage-pools", NULL, error);
    if (pools == NULL)
        return NULL;
    if (json_array_size(pools) == 0) {
        json_t *config = json_object();
        if (strcmp(backend, "btrfs") == 0 && loop_size > 0)
            json_object_set_new(config, "size", json_sprintf("%dGiB", loop_size));
        json_object_set_new(preseed, "storage_pools",
                            json_pack("[{s:s, s:s, s:s, s:o}]", "name", "default", "driver", backend,
                                      "description", "", "config", config));
    }
    g_autoptr(json_t) profile = ferry_client_get(client, "/1.0/profiles/default", NULL, error);
    if (profile == NULL)
        return NULL;
    json_t *devices = json_object_get(profile, "devices");
    gboolean has_root = FALSE;
    const char *name;
    json_t *device;
    json_object_foreach(devices, name, device)
    {
        if (g_strcmp0(ferry_json_get_string(device, "type"), "disk") == 0 &&
            g_strcmp0(ferry_json_get_string(device, "path"), "/") == 0)
            has_root = TRUE;
    }
    if (!has_root) {
        json_t *merged = json_is_object(devices) ? json_deep_copy(devices) : json_object();
        json_object_set_new(merged, "root",
                            json_pack("{s:s, s:s, s:s}", "path", "/", "pool", "default", "type", "disk"));
        json_object_set_new(preseed, "profiles",
                            json_pack("[{s:s, s:o}]", "name", "default", "devices", merged));
    }
    return g_steal_pointer(&preseed);
}

static int cmd_init(Cli *cli, int argc, char **argv, GError **error)
{
    gboolean auto_mode = FALSE, preseed = FALSE, dump = FALSE;
    g_autofree char *backend = NULL, *address = NULL;
    int port = 8443, loop_size = 0;
    const CliOption options[] = {
        {"auto", 0, CLI_OPT_BOOL, &auto_mode, NULL, "Automatic (non-interactive) mode"},
        {"dump", 0, CLI_OPT_BOOL, &dump, NULL, "Dump YAML config to stdout"},
        {"network-address", 0, CLI_OPT_STRING, &address, "ADDRESS", "Address to bind to (default: none)"},
        {"network-port", 0, CLI_OPT_INT, &port, "PORT", "Port to bind to (default: 8443)"},
        {"preseed", 0, CLI_OPT_BOOL, &preseed, NULL, "Pre-seed mode, expects YAML config from stdin"},
        {"storage-backend", 0, CLI_OPT_STRING, &backend, "BACKEND", "Storage backend to use (btrfs or dir)"},
        {"storage-create-loop", 0, CLI_OPT_INT, &loop_size, "SIZE",
         "Setup loop based storage with SIZE in GiB"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 0, 1, error))
        return -1;
    if ((auto_mode ? 1 : 0) + (preseed ? 1 : 0) + (dump ? 1 : 0) > 1) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Can't use --auto, --preseed and --dump together");
        return -1;
    }
    if (!auto_mode && (backend != NULL || address != NULL || loop_size > 0)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Configuration flags require --auto");
        return -1;
    }
    if (backend != NULL && strcmp(backend, "dir") != 0 && strcmp(backend, "btrfs") != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "The requested backend '%s' isn't supported by init", backend);
        return -1;
    }
    g_autoptr(FerryClient) client = args->len ? cli_connect_name(cli, g_ptr_array_index(args, 0), NULL, error)
                                              : cli_connect(cli, NULL, error);
    if (client == NULL)
        return -1;

    if (dump) {
        g_autoptr(json_t) server = ferry_client_get(client, "/1.0", NULL, error);
        g_autoptr(json_t) pools =
            server ? ferry_client_get(client, "/1.0/storage-pools?recursion=1", NULL, error) : NULL;
        g_autoptr(json_t) profiles =
            pools ? ferry_client_get(client, "/1.0/profiles?recursion=1", NULL, error) : NULL;
        g_autoptr(json_t) projects =
            profiles ? ferry_client_get(client, "/1.0/projects?recursion=1", NULL, error) : NULL;
        if (projects == NULL)
            return -1;
        static const char *const pool_keys[] = {"config", "description", "name", "driver", NULL};
        static const char *const profile_keys[] = {"config", "description", "devices", "name", NULL};
        static const char *const project_keys[] = {"config", "description", "name", NULL};
        g_autoptr(json_t) document =
            json_pack("{s:O, s:[], s:[], s:[]}", "config", json_object_get(server, "config"), "storage_pools",
                      "profiles", "projects");
        struct {
            json_t *from;
            const char *key;
            const char *const *keys;
        } parts[] = {{pools, "storage_pools", pool_keys},
                     {profiles, "profiles", profile_keys},
                     {projects, "projects", project_keys}};
        for (gsize p = 0; p < G_N_ELEMENTS(parts); p++) {
            gsize i;
            json_t *entry;
            json_array_foreach(parts[p].from, i, entry) json_array_append_new(
                json_object_get(document, parts[p].key), cli_writable(entry, parts[p].keys));
        }
        return cli_print_yaml(document, error) ? 0 : -1;
    }

    g_autoptr(json_t) plan = NULL;
    if (preseed) {
        g_autofree char *text = cli_read_stdin(error);
        if (text == NULL)
            return -1;
        plan = ferry_yaml_parse(text, strlen(text), error);
        if (plan == NULL) {
            g_prefix_error(error, "Failed to parse the preseed: ");
            return -1;
        }
    } else if (auto_mode) {
        plan = auto_preseed(client, backend != NULL ? backend : "dir", loop_size, address, port, error);
        if (plan == NULL)
            return -1;
    } else {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                    "Interactive init isn't supported: use --auto or --preseed");
        return -1;
    }
    return apply_preseed(client, plan, error) ? 0 : -1;
}

const CliCommand cli_admin_commands[] = {
    {"init", NULL, "", "Configure the daemon",
     "--auto creates the storage pool \"default\" (dir, or btrfs with --storage-backend) when there is "
     "none,\n"
     "gives the default profile a root disk on it and, with --network-address, listens on HTTPS.\n"
     "--preseed applies a YAML document from stdin (config, storage_pools, projects, profiles).",
     cmd_init, NULL},
    {NULL},
};
