/* ferry config: server and instance configuration (get/set/unset/show/edit), devices, trust. */
#include "cli.h"

#include "error.h"

#include <stdio.h>
#include <string.h>

/* The object a config command works on: the server of a remote, or one of its instances. */
typedef struct {
    FerryClient *client;
    char *instance; /* NULL: the server */
    char *path;
} ConfigTarget;

static void target_clear(ConfigTarget *target)
{
    g_clear_pointer(&target->client, ferry_client_free);
    g_clear_pointer(&target->instance, g_free);
    g_clear_pointer(&target->path, g_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(ConfigTarget, target_clear)

/* raw NULL: the default remote's server. "b:" is remote b's server; "[b:]c1" an instance. */
static gboolean target_open(Cli *cli, const char *raw, ConfigTarget *target, GError **error)
{
    g_autofree char *remote = NULL, *name = NULL;
    if (raw != NULL && !cli_config_parse_remote(cli->config, raw, &remote, &name, error))
        return FALSE;
    target->client = cli_connect(cli, remote, error);
    if (target->client == NULL)
        return FALSE;
    if (name != NULL && *name != '\0') {
        target->instance = g_steal_pointer(&name);
        g_autofree char *instance = NULL, *snapshot = NULL;
        cli_split_snapshot(target->instance, &instance, &snapshot);
        target->path = snapshot != NULL ? ferry_api_path("instances", instance, "snapshots", snapshot, NULL)
                                        : ferry_api_path("instances", instance, NULL);
    } else {
        target->path = g_strdup("/1.0");
    }
    return TRUE;
}

/* GET the target and the object to change in place. */
static json_t *target_get(ConfigTarget *target, GError **error)
{
    return ferry_client_get(target->client, target->path, NULL, error);
}

static gboolean target_put(ConfigTarget *target, json_t *current, GError **error)
{
    static const char *const server_writable[] = {"config", NULL};
    g_autoptr(json_t) body =
        cli_writable(current, target->instance != NULL ? cli_instance_writable : server_writable);
    g_autoptr(json_t) result = ferry_client_run(target->client, "PUT", target->path, body, NULL, NULL, error);
    return result != NULL;
}

static json_t *config_of(json_t *object)
{
    json_t *config = json_object_get(object, "config");
    if (!json_is_object(config)) {
        config = json_object();
        json_object_set_new(object, "config", config);
    }
    return config;
}

static int cmd_get(Cli *cli, int argc, char **argv, GError **error)
{
    gboolean expanded = FALSE;
    const CliOption options[] = {
        {"expanded", 'e', CLI_OPT_BOOL, &expanded, NULL, "Access the expanded configuration"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 2, error))
        return -1;
    g_auto(ConfigTarget) target = {0};
    if (!target_open(cli, args->len == 2 ? g_ptr_array_index(args, 0) : NULL, &target, error))
        return -1;
    g_autoptr(json_t) object = target_get(&target, error);
    if (object == NULL)
        return -1;
    json_t *config = json_object_get(object, expanded && target.instance ? "expanded_config" : "config");
    json_t *value = json_object_get(config, g_ptr_array_index(args, args->len - 1));
    if (json_is_string(value))
        printf("%s\n", json_string_value(value));
    else if (value != NULL && !json_is_null(value)) {
        g_autofree char *text = ferry_json_dump(value);
        printf("%s\n", text);
    } else
        printf("\n");
    return 0;
}

static int cmd_set(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, -1, error))
        return -1;

    /* Incus's rules: "key=value..." or "key value" alone set the server; a first word without '=' followed
     * by settings names the instance (or "remote:" for that remote's server). */
    const char *raw_target = NULL;
    guint first = 0;
    const char *arg0 = g_ptr_array_index(args, 0);
    if (args->len == 1) {
        first = 0;
    } else if (args->len == 2) {
        const char *arg1 = g_ptr_array_index(args, 1);
        if (strchr(arg1, '=') != NULL && strchr(arg0, '=') == NULL) {
            raw_target = arg0;
            first = 1;
        }
    } else if (strchr(arg0, '=') == NULL) {
        raw_target = arg0;
        first = 1;
    }

    g_autoptr(json_t) settings = json_object();
    guint remaining = args->len - first;
    if (remaining == 2 && strchr(g_ptr_array_index(args, first), '=') == NULL) {
        json_object_set_new(settings, g_ptr_array_index(args, first),
                            json_string(g_ptr_array_index(args, first + 1)));
    } else if (!cli_parse_key_values(args, first, settings, error)) {
        return -1;
    }

    g_auto(ConfigTarget) target = {0};
    if (!target_open(cli, raw_target, &target, error))
        return -1;
    g_autoptr(json_t) object = target_get(&target, error);
    if (object == NULL)
        return -1;
    json_object_update(config_of(object), settings);
    return target_put(&target, object, error) ? 0 : -1;
}

static int cmd_unset(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 2, error))
        return -1;
    g_auto(ConfigTarget) target = {0};
    if (!target_open(cli, args->len == 2 ? g_ptr_array_index(args, 0) : NULL, &target, error))
        return -1;
    g_autoptr(json_t) object = target_get(&target, error);
    if (object == NULL)
        return -1;
    const char *key = g_ptr_array_index(args, args->len - 1);
    json_t *config = config_of(object);
    if (json_object_get(config, key) == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Can't unset key '%s', it's not currently set",
                    key);
        return -1;
    }
    json_object_del(config, key);
    return target_put(&target, object, error) ? 0 : -1;
}

static json_t *shown_view(ConfigTarget *target, json_t *object, gboolean expanded)
{
    if (target->instance == NULL) {
        static const char *const server_shown[] = {"config", NULL};
        return cli_writable(object, server_shown);
    }
    if (strchr(target->instance, '/') != NULL)
        return json_incref(object);
    json_t *view = cli_writable(object, cli_instance_writable);
    if (expanded) {
        json_t *config = json_object_get(object, "expanded_config");
        json_t *devices = json_object_get(object, "expanded_devices");
        if (config != NULL)
            json_object_set(view, "config", config);
        if (devices != NULL)
            json_object_set(view, "devices", devices);
    }
    return view;
}

static int cmd_show(Cli *cli, int argc, char **argv, GError **error)
{
    gboolean expanded = FALSE;
    const CliOption options[] = {
        {"expanded", 'e', CLI_OPT_BOOL, &expanded, NULL, "Show the expanded configuration"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 0, 1, error))
        return -1;
    g_auto(ConfigTarget) target = {0};
    if (!target_open(cli, args->len == 1 ? g_ptr_array_index(args, 0) : NULL, &target, error))
        return -1;
    g_autoptr(json_t) object = target_get(&target, error);
    if (object == NULL)
        return -1;
    g_autoptr(json_t) view = shown_view(&target, object, expanded);
    return cli_print_yaml(view, error) ? 0 : -1;
}

static int cmd_edit(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 0, 1, error))
        return -1;
    g_auto(ConfigTarget) target = {0};
    if (!target_open(cli, args->len == 1 ? g_ptr_array_index(args, 0) : NULL, &target, error))
        return -1;
    g_autoptr(json_t) object = target_get(&target, error);
    if (object == NULL)
        return -1;
    g_autoptr(json_t) view = shown_view(&target, object, FALSE);
    g_autoptr(json_t) edited = cli_edit_yaml(view,
                                             "### This is a YAML representation of the configuration.\n"
                                             "### Any line starting with a '# will be ignored.",
                                             error);
    if (edited == NULL)
        return -1;
    return target_put(&target, edited, error) ? 0 : -1;
}

/* config device <action> [<remote>:]<instance> <device> ... */
static int cmd_device(Cli *cli, int argc, char **argv, GError **error)
{
    const char *action = cli->command->name;
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error))
        return -1;
    guint min = 2, max = 2;
    if (strcmp(action, "add") == 0)
        min = 3, max = G_MAXINT;
    else if (strcmp(action, "remove") == 0 || strcmp(action, "override") == 0)
        max = G_MAXINT;
    else if (strcmp(action, "list") == 0 || strcmp(action, "show") == 0)
        min = max = 1;
    else if (strcmp(action, "get") == 0 || strcmp(action, "unset") == 0)
        min = max = 3;
    else if (strcmp(action, "set") == 0)
        min = 3, max = G_MAXINT;
    if (!cli_check_args(cli, args, min, max == G_MAXINT ? -1 : (int)max, error))
        return -1;
    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &name, error);
    if (client == NULL)
        return -1;
    g_autofree char *path = ferry_api_path("instances", name, NULL);
    return cli_device_action(cli, client, action, path, FALSE, args, 1, error);
}

const CliCommand cli_config_device_commands[] = {
    {"add", NULL, "[<remote>:]<instance> <device> <type> [key=value...]", "Add instance devices", NULL,
     cmd_device, NULL},
    {"get", NULL, "[<remote>:]<instance> <device> <key>", "Get values for device configuration keys", NULL,
     cmd_device, NULL},
    {"list", "ls", "[<remote>:]<instance>", "List instance devices", NULL, cmd_device, NULL},
    {"override", NULL, "[<remote>:]<instance> <device> [key=value...]",
     "Copy profile inherited devices and "
     "override configuration keys",
     NULL, cmd_device, NULL},
    {"remove", "rm", "[<remote>:]<instance> <name>...", "Remove instance devices", NULL, cmd_device, NULL},
    {"set", NULL, "[<remote>:]<instance> <device> <key>=<value>...", "Set device configuration keys", NULL,
     cmd_device, NULL},
    {"show", NULL, "[<remote>:]<instance>", "Show full device configuration", NULL, cmd_device, NULL},
    {"unset", NULL, "[<remote>:]<instance> <device> <key>", "Unset device configuration keys", NULL,
     cmd_device, NULL},
    {NULL},
};

const CliCommand cli_config_commands[] = {
    {"device", NULL, NULL, "Manage devices", NULL, NULL, cli_config_device_commands},
    {"edit", NULL, "[<remote>:][<instance>[/<snapshot>]]", "Edit instance or server configurations as YAML",
     NULL, cmd_edit, NULL},
    {"get", NULL, "[<remote>:][<instance>] <key>", "Get values for instance or server configuration keys",
     NULL, cmd_get, NULL},
    {"set", NULL, "[<remote>:][<instance>] <key>=<value>...", "Set instance or server configuration keys",
     NULL, cmd_set, NULL},
    {"show", NULL, "[<remote>:][<instance>[/<snapshot>]]", "Show instance or server configurations", NULL,
     cmd_show, NULL},
    {"trust", NULL, NULL, "Manage trusted clients", NULL, NULL, cli_config_trust_commands},
    {"unset", NULL, "[<remote>:][<instance>] <key>", "Unset instance or server configuration keys", NULL,
     cmd_unset, NULL},
    {NULL},
};
