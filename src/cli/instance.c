/* Instance life cycle: init/launch, start/stop/restart, delete, rename, restore. */
#include "cli.h"

#include "error.h"

#include <stdio.h>
#include <string.h>

/* A name for an instance created without one, in Incus's adjective-animal style. */
static char *random_instance_name(void)
{
    static const char *const adjectives[] = {
        "able",  "bold",   "brave", "bright", "calm",  "clever", "crisp", "eager", "fair",
        "fancy", "fast",   "fine",  "glad",   "grand", "happy",  "keen",  "kind",  "lively",
        "lucky", "merry",  "neat",  "noble",  "proud", "quick",  "quiet", "rapid", "sharp",
        "smart", "steady", "sunny", "swift",  "tidy",  "vast",   "warm",  "wise",  "witty",
    };
    static const char *const animals[] = {
        "badger", "beaver",  "bison",   "camel",  "condor", "crane",  "dingo", "eagle",   "falcon",
        "ferret", "gecko",   "heron",   "ibex",   "jackal", "koala",  "lemur", "lobster", "lynx",
        "marmot", "moose",   "narwhal", "otter",  "panda",  "puffin", "quail", "raven",   "salmon",
        "seal",   "sparrow", "tapir",   "toucan", "walrus", "wombat",
    };
    return g_strdup_printf("%s-%s", adjectives[g_random_int_range(0, G_N_ELEMENTS(adjectives))],
                           animals[g_random_int_range(0, G_N_ELEMENTS(animals))]);
}

/* The devices of the profiles an instance will get, later profiles overriding earlier ones. */
static json_t *profile_devices(FerryClient *client, json_t *profiles, GError **error)
{
    g_autoptr(json_t) devices = json_object();
    gsize i;
    json_t *name;
    json_array_foreach(profiles, i, name)
    {
        g_autofree char *path = ferry_api_path("profiles", json_string_value(name), NULL);
        g_autoptr(json_t) profile = ferry_client_get(client, path, NULL, error);
        if (profile == NULL)
            return NULL;
        json_t *own = json_object_get(profile, "devices");
        if (json_is_object(own))
            json_object_update(devices, own);
    }
    return g_steal_pointer(&devices);
}

static const char *root_disk_name(json_t *devices)
{
    const char *name;
    json_t *device;
    json_object_foreach(devices, name, device)
    {
        if (g_strcmp0(ferry_json_get_string(device, "type"), "disk") == 0 &&
            g_strcmp0(ferry_json_get_string(device, "path"), "/") == 0 &&
            ferry_json_get_string(device, "source") == NULL)
            return name;
    }
    return NULL;
}

/* -d <device>,<key>=<value>[,<key>=<value>...] overrides a device of the profiles, as Incus's --device. */
static gboolean apply_device_overrides(GPtrArray *overrides, json_t *profile_devs, json_t *devices,
                                       GError **error)
{
    for (guint i = 0; overrides != NULL && i < overrides->len; i++) {
        g_auto(GStrv) fields = g_strsplit(g_ptr_array_index(overrides, i), ",", -1);
        const char *name = fields[0];
        if (fields[1] == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Bad device override syntax, expecting "
                        "<device>,<key>=<value>: %s",
                        (char *)g_ptr_array_index(overrides, i));
            return FALSE;
        }
        json_t *device = json_object_get(devices, name);
        if (device == NULL) {
            json_t *from_profile = json_object_get(profile_devs, name);
            if (from_profile == NULL) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "Cannot override config for device \"%s\": Device not found in profile devices",
                            name);
                return FALSE;
            }
            device = json_deep_copy(from_profile);
            json_object_set_new(devices, name, device);
        }
        for (char **field = fields + 1; *field != NULL; field++) {
            const char *equals = strchr(*field, '=');
            if (equals == NULL) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Bad key=value pair: %s", *field);
                return FALSE;
            }
            g_autofree char *key = g_strndup(*field, equals - *field);
            json_object_set_new(device, key, json_string(equals + 1));
        }
    }
    return TRUE;
}

/* The source of a new instance: an alias or a (partial) fingerprint of an image on that server. */
static json_t *image_source(FerryClient *client, const char *image, GError **error)
{
    g_autofree char *alias_path = ferry_api_path("images", "aliases", image, NULL);
    g_autoptr(GError) alias_error = NULL;
    g_autoptr(json_t) alias = ferry_client_get(client, alias_path, NULL, &alias_error);
    if (alias != NULL)
        return json_pack("{s:s, s:s}", "type", "image", "alias", image);
    if (alias_error->code != FERRY_ERROR_NOT_FOUND) {
        g_propagate_error(error, g_steal_pointer(&alias_error));
        return NULL;
    }
    g_autofree char *image_path = ferry_api_path("images", image, NULL);
    g_autoptr(GError) image_error = NULL;
    g_autoptr(json_t) info = ferry_client_get(client, image_path, NULL, &image_error);
    if (info == NULL) {
        /* Name the image the user gave; other 404s (an unknown project) keep the server's message. */
        if (image_error->code == FERRY_ERROR_NOT_FOUND && g_str_has_prefix(image_error->message, "Image"))
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Image \"%s\" not found", image);
        else
            g_propagate_error(error, g_steal_pointer(&image_error));
        return NULL;
    }
    const char *fingerprint = ferry_json_get_string(info, "fingerprint");
    return json_pack("{s:s, s:s}", "type", "image", "fingerprint", fingerprint != NULL ? fingerprint : image);
}

static gboolean change_state(Cli *cli, FerryClient *client, const char *name, const char *action, int timeout,
                             gboolean force, gboolean stateful, GError **error)
{
    g_autofree char *path = ferry_api_path("instances", name, "state", NULL);
    g_autoptr(json_t) body = json_pack("{s:s, s:i, s:b, s:b}", "action", action, "timeout", timeout, "force",
                                       force, "stateful", stateful);
    g_autoptr(json_t) op = ferry_client_run(client, "PUT", path, body, NULL, NULL, error);
    return op != NULL;
}

static int create_instance(Cli *cli, int argc, char **argv, gboolean launch, GError **error)
{
    g_autoptr(GPtrArray) config = NULL;
    g_autoptr(GPtrArray) profiles = NULL;
    g_autoptr(GPtrArray) device_overrides = NULL;
    g_autofree char *storage = NULL;
    g_autofree char *description = NULL;
    gboolean no_profiles = FALSE, empty = FALSE, ephemeral = FALSE, vm = FALSE;
    const CliOption options[] = {
        {"config", 'c', CLI_OPT_STRV, &config, "KEY=VALUE", "Config key/value to apply to the new instance"},
        {"device", 'd', CLI_OPT_STRV, &device_overrides, "DEV,KEY=VALUE",
         "New key/value to apply to a "
         "specific device"},
        {"description", 0, CLI_OPT_STRING, &description, "TEXT", "Instance description"},
        {"empty", 0, CLI_OPT_BOOL, &empty, NULL, "Create an empty instance"},
        {"ephemeral", 'e', CLI_OPT_BOOL, &ephemeral, NULL, "Ephemeral instance"},
        {"no-profiles", 0, CLI_OPT_BOOL, &no_profiles, NULL, "Create the instance with no profiles applied"},
        {"profile", 'p', CLI_OPT_STRV, &profiles, "PROFILE", "Profile to apply to the new instance"},
        {"storage", 's', CLI_OPT_STRING, &storage, "POOL", "Storage pool name"},
        {"vm", 0, CLI_OPT_BOOL, &vm, NULL, "Create a virtual machine"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error))
        return -1;
    if (!cli_check_args(cli, args, empty ? 0 : 1, empty ? 1 : 2, error))
        return -1;
    if (no_profiles && profiles != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "--no-profiles cannot be used with --profile");
        return -1;
    }

    /* Which server, which image, which name. */
    g_autofree char *image_remote = NULL, *image = NULL, *remote = NULL, *name = NULL;
    const char *target = empty ? (args->len > 0 ? g_ptr_array_index(args, 0) : NULL)
                               : (args->len > 1 ? g_ptr_array_index(args, 1) : NULL);
    if (!empty &&
        !cli_config_parse_remote(cli->config, g_ptr_array_index(args, 0), &image_remote, &image, error))
        return -1;
    if (target != NULL) {
        if (!cli_config_parse_remote(cli->config, target, &remote, &name, error))
            return -1;
    } else {
        remote = g_strdup(image_remote != NULL ? image_remote : cli_config_default_remote(cli->config));
    }
    if (image_remote != NULL && strcmp(image_remote, remote) != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                    "Creating an instance from an image on another remote (%s) isn't supported yet; "
                    "import the image on %s first",
                    image_remote, remote);
        return -1;
    }
    gboolean generated = name == NULL || *name == '\0';
    if (generated) {
        g_free(name);
        name = random_instance_name();
    }

    g_autoptr(FerryClient) client = cli_connect(cli, remote, error);
    if (client == NULL)
        return -1;

    g_autoptr(json_t) body = json_object();
    json_object_set_new(body, "name", json_string(name));
    json_object_set_new(body, "type", json_string(vm ? "virtual-machine" : "container"));
    if (description != NULL)
        json_object_set_new(body, "description", json_string(description));
    json_object_set_new(body, "ephemeral", json_boolean(ephemeral));

    g_autoptr(json_t) instance_config = json_object();
    if (!cli_parse_key_values(config, 0, instance_config, error))
        return -1;
    json_object_set(body, "config", instance_config);

    g_autoptr(json_t) profile_list = json_array();
    if (profiles != NULL) {
        for (guint i = 0; i < profiles->len; i++)
            json_array_append_new(profile_list, json_string(g_ptr_array_index(profiles, i)));
    } else if (!no_profiles) {
        json_array_append_new(profile_list, json_string("default"));
    }
    if (profiles != NULL || no_profiles)
        json_object_set(body, "profiles", profile_list);

    g_autoptr(json_t) devices = json_object();
    if (device_overrides != NULL || storage != NULL) {
        g_autoptr(json_t) from_profiles = profile_devices(client, profile_list, error);
        if (from_profiles == NULL)
            return -1;
        if (!apply_device_overrides(device_overrides, from_profiles, devices, error))
            return -1;
        if (storage != NULL) {
            const char *root = root_disk_name(devices);
            if (root == NULL)
                root = root_disk_name(from_profiles);
            if (root == NULL) {
                json_object_set_new(
                    devices, "root",
                    json_pack("{s:s, s:s, s:s}", "type", "disk", "path", "/", "pool", storage));
            } else {
                json_t *device = json_object_get(devices, root);
                if (device == NULL) {
                    device = json_deep_copy(json_object_get(from_profiles, root));
                    json_object_set_new(devices, root, device);
                }
                json_object_set_new(device, "pool", json_string(storage));
            }
        }
    }
    json_object_set(body, "devices", devices);

    if (empty) {
        json_object_set_new(body, "source", json_pack("{s:s}", "type", "none"));
    } else {
        json_t *source = image_source(client, image, error);
        if (source == NULL)
            return -1;
        json_object_set_new(body, "source", source);
    }

    if (!cli->quiet) {
        if (generated)
            printf("%s the instance\n", launch ? "Launching" : "Creating");
        else
            printf("%s %s\n", launch ? "Launching" : "Creating", name);
        fflush(stdout);
    }
    {
        g_autoptr(CliProgress) progress = cli_progress_new(cli, "Retrieving image");
        g_autoptr(json_t) op =
            ferry_client_run(client, "POST", "/1.0/instances", body, cli_progress_update, progress, error);
        if (op == NULL)
            return -1;
    }
    if (generated && !cli->quiet)
        printf("Instance name is: %s\n", name);

    if (launch) {
        if (!change_state(cli, client, name, "start", -1, FALSE, FALSE, error)) {
            g_prefix_error(error, "Failed to start instance \"%s\": ", name);
            return -1;
        }
    }
    return 0;
}

int cli_cmd_init(Cli *cli, int argc, char **argv, GError **error)
{
    return create_instance(cli, argc, argv, FALSE, error);
}

int cli_cmd_launch(Cli *cli, int argc, char **argv, GError **error)
{
    return create_instance(cli, argc, argv, TRUE, error);
}

static int state_verb(Cli *cli, int argc, char **argv, const char *action, GError **error)
{
    gboolean all = FALSE, force = FALSE, stateful = FALSE, stateless = FALSE;
    int timeout = -1;
    CliOption options[] = {
        {"all", 0, CLI_OPT_BOOL, &all, NULL, "Run against all instances"},
        {"stateful", 0, CLI_OPT_BOOL, &stateful, NULL, "Store the instance state"},
        {"stateless", 0, CLI_OPT_BOOL, &stateless, NULL, "Ignore the instance state"},
        {"force", 'f', CLI_OPT_BOOL, &force, NULL, "Force the instance to stop"},
        {"timeout", 0, CLI_OPT_INT, &timeout, "SECONDS", "Time to wait for the instance to shutdown cleanly"},
        {NULL},
    };
    if (strcmp(action, "start") == 0)
        options[3] = options[4] = (CliOption){NULL};
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error))
        return -1;
    if (!cli_check_args(cli, args, all ? 0 : 1, all ? 1 : -1, error))
        return -1;

    g_autoptr(GPtrArray) targets = g_ptr_array_new_with_free_func(g_free);
    if (all) {
        const char *remote_arg = args->len > 0 ? g_ptr_array_index(args, 0) : NULL;
        g_autofree char *remote = NULL, *rest = NULL;
        if (remote_arg != NULL && !cli_config_parse_remote(cli->config, remote_arg, &remote, &rest, error))
            return -1;
        g_autoptr(FerryClient) client = cli_connect(cli, remote, error);
        if (client == NULL)
            return -1;
        g_autoptr(json_t) instances = ferry_client_get(client, "/1.0/instances?recursion=1", NULL, error);
        if (instances == NULL)
            return -1;
        gsize i;
        json_t *instance;
        json_array_foreach(instances, i, instance)
        {
            const char *status = ferry_json_get_string(instance, "status");
            gboolean running = g_strcmp0(status, "Running") == 0;
            if ((strcmp(action, "start") == 0 && running) || (strcmp(action, "stop") == 0 && !running))
                continue;
            g_ptr_array_add(targets,
                            g_strdup_printf("%s%s%s", remote != NULL ? remote : "", remote ? ":" : "",
                                            ferry_json_get_string(instance, "name")));
        }
    } else {
        for (guint i = 0; i < args->len; i++)
            g_ptr_array_add(targets, g_strdup(g_ptr_array_index(args, i)));
    }

    g_autoptr(GString) failures = g_string_new(NULL);
    for (guint i = 0; i < targets->len; i++) {
        g_autoptr(GError) local_error = NULL;
        g_autofree char *name = NULL;
        g_autoptr(FerryClient) client =
            cli_connect_name(cli, g_ptr_array_index(targets, i), &name, &local_error);
        if (client != NULL)
            change_state(cli, client, name, action, timeout, force, stateful && !stateless, &local_error);
        if (local_error != NULL) {
            if (targets->len == 1) {
                g_propagate_error(error, g_steal_pointer(&local_error));
                return -1;
            }
            g_string_append_printf(failures, "\n%s: %s",
                                   name != NULL ? name : (char *)g_ptr_array_index(targets, i),
                                   local_error->message);
        }
    }
    if (failures->len > 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Some instances failed to %s:%s", action,
                    failures->str);
        return -1;
    }
    return 0;
}

int cli_cmd_start(Cli *cli, int argc, char **argv, GError **error)
{
    return state_verb(cli, argc, argv, "start", error);
}

int cli_cmd_stop(Cli *cli, int argc, char **argv, GError **error)
{
    return state_verb(cli, argc, argv, "stop", error);
}

int cli_cmd_restart(Cli *cli, int argc, char **argv, GError **error)
{
    return state_verb(cli, argc, argv, "restart", error);
}

static gboolean delete_one(Cli *cli, const char *target, gboolean force, gboolean interactive, GError **error)
{
    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, target, &name, error);
    if (client == NULL)
        return FALSE;
    g_autofree char *instance = NULL, *snapshot = NULL;
    cli_split_snapshot(name, &instance, &snapshot);

    if (interactive) {
        g_autofree char *question = g_strdup_printf("Remove %s (yes/no): ", name);
        if (!cli_ask_bool(question, FALSE)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CANCELLED, "User aborted delete operation");
            return FALSE;
        }
    }

    if (snapshot != NULL) {
        g_autofree char *path = ferry_api_path("instances", instance, "snapshots", snapshot, NULL);
        g_autoptr(json_t) op = ferry_client_run(client, "DELETE", path, NULL, NULL, NULL, error);
        return op != NULL;
    }

    g_autofree char *path = ferry_api_path("instances", instance, NULL);
    g_autoptr(json_t) info = ferry_client_get(client, path, NULL, error);
    if (info == NULL)
        return FALSE;
    const char *status = ferry_json_get_string(info, "status");
    if (g_strcmp0(status, "Stopped") != 0) {
        if (!force) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT,
                        "The instance is currently running, stop it first or pass --force");
            return FALSE;
        }
        if (!change_state(cli, client, instance, "stop", -1, TRUE, FALSE, error)) {
            g_prefix_error(error, "Stopping the instance failed: ");
            return FALSE;
        }
        /* An ephemeral instance deletes itself when it stops. */
        if (ferry_json_get_bool(info, "ephemeral", FALSE))
            return TRUE;
    }
    g_autoptr(json_t) op = ferry_client_run(client, "DELETE", path, NULL, NULL, NULL, error);
    return op != NULL;
}

int cli_cmd_delete(Cli *cli, int argc, char **argv, GError **error)
{
    gboolean force = FALSE, interactive = FALSE;
    const CliOption options[] = {
        {"force", 'f', CLI_OPT_BOOL, &force, NULL, "Force the removal of running instances"},
        {"interactive", 'i', CLI_OPT_BOOL, &interactive, NULL, "Require user confirmation"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, -1, error))
        return -1;
    for (guint i = 0; i < args->len; i++) {
        if (!delete_one(cli, g_ptr_array_index(args, i), force, interactive, error))
            return -1;
    }
    return 0;
}

int cli_cmd_rename(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    g_autofree char *remote = NULL, *old_name = NULL, *new_remote = NULL, *new_name = NULL;
    if (!cli_config_parse_remote(cli->config, g_ptr_array_index(args, 0), &remote, &old_name, error) ||
        !cli_config_parse_remote(cli->config, g_ptr_array_index(args, 1), &new_remote, &new_name, error))
        return -1;
    if (strchr((char *)g_ptr_array_index(args, 1), ':') != NULL && strcmp(remote, new_remote) != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Can't rename across remotes; use move");
        return -1;
    }
    g_autoptr(FerryClient) client = cli_connect(cli, remote, error);
    if (client == NULL)
        return -1;

    g_autofree char *instance = NULL, *snapshot = NULL, *new_instance = NULL, *new_snapshot = NULL;
    cli_split_snapshot(old_name, &instance, &snapshot);
    cli_split_snapshot(new_name, &new_instance, &new_snapshot);
    if ((snapshot == NULL) != (new_snapshot == NULL) ||
        (snapshot != NULL && strcmp(instance, new_instance) != 0)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Renaming a snapshot needs the same instance on both sides (c1/snap0 c1/snap1)");
        return -1;
    }
    g_autofree char *path = snapshot != NULL
                                ? ferry_api_path("instances", instance, "snapshots", snapshot, NULL)
                                : ferry_api_path("instances", instance, NULL);
    g_autoptr(json_t) body = json_pack("{s:s}", "name", snapshot != NULL ? new_snapshot : new_instance);
    g_autoptr(json_t) op = ferry_client_run(client, "POST", path, body, NULL, NULL, error);
    return op != NULL ? 0 : -1;
}

int cli_cmd_restore(Cli *cli, int argc, char **argv, GError **error)
{
    gboolean stateful = FALSE;
    const CliOption options[] = {
        {"stateful", 0, CLI_OPT_BOOL, &stateful, NULL,
         "Whether or not to restore the instance's running state "
         "from snapshot (if available)"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &name, error);
    if (client == NULL)
        return -1;
    const char *snapshot = g_ptr_array_index(args, 1);
    /* Incus accepts "c1/snap0" as the snapshot argument too. */
    const char *slash = strchr(snapshot, '/');
    if (slash != NULL)
        snapshot = slash + 1;
    g_autofree char *path = ferry_api_path("instances", name, NULL);
    g_autoptr(json_t) body = json_pack("{s:s, s:b}", "restore", snapshot, "stateful", stateful);
    g_autoptr(json_t) op = ferry_client_run(client, "PUT", path, body, NULL, NULL, error);
    return op != NULL ? 0 : -1;
}
