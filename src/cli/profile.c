/* ferry profile: profiles, their config and devices, and which profiles an instance has. */
#include "cli.h"
#include "output.h"

#include "error.h"
#include "yaml.h"

#include <stdio.h>
#include <string.h>

static FerryClient *open_profile(Cli *cli, GPtrArray *args, char **name_out, char **path_out, GError **error)
{
    FerryClient *client = cli_connect_name(cli, g_ptr_array_index(args, 0), name_out, error);
    if (client != NULL)
        *path_out = ferry_api_path("profiles", *name_out, NULL);
    return client;
}

static gboolean put_profile(FerryClient *client, const char *path, json_t *profile, GError **error)
{
    g_autoptr(json_t) body = cli_writable(profile, cli_profile_writable);
    g_autoptr(json_t) result = ferry_client_run(client, "PUT", path, body, NULL, NULL, error);
    return result != NULL;
}

static int cmd_list(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *format = NULL;
    const CliOption options[] = {
        {"format", 'f', CLI_OPT_STRING, &format, "FORMAT", "Format (csv|json|table|yaml|compact)"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 0, 1, error))
        return -1;
    if (format != NULL && !cli_format_check(format, error))
        return -1;
    g_autoptr(FerryClient) client = args->len ? cli_connect_name(cli, g_ptr_array_index(args, 0), NULL, error)
                                              : cli_connect(cli, NULL, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) profiles = ferry_client_get(client, "/1.0/profiles?recursion=1", NULL, error);
    if (profiles == NULL)
        return -1;
    g_autoptr(GPtrArray) rows = cli_rows_new();
    gsize i;
    json_t *profile;
    json_array_foreach(profiles, i, profile)
    {
        json_t *used_by = json_object_get(profile, "used_by");
        g_autofree char *count =
            g_strdup_printf("%zu", json_is_array(used_by) ? json_array_size(used_by) : (gsize)0);
        cli_rows_add(rows, ferry_json_get_string(profile, "name") ?: "",
                     ferry_json_get_string(profile, "description") ?: "", count, NULL);
    }
    cli_rows_sort(rows);
    static const char *const headers[] = {"NAME", "DESCRIPTION", "USED BY", NULL};
    return cli_print_list(format, headers, rows, profiles, error) ? 0 : -1;
}

static int cmd_show(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_profile(cli, args, &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) profile = ferry_client_get(client, path, NULL, error);
    return profile != NULL && cli_print_yaml(profile, error) ? 0 : -1;
}

static int cmd_create(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *description = NULL;
    const CliOption options[] = {
        {"description", 0, CLI_OPT_STRING, &description, "TEXT", "Profile description"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &name, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) body = json_pack("{s:s, s:s, s:{}, s:{}}", "name", name, "description",
                                       description != NULL ? description : "", "config", "devices");
    /* A YAML document on stdin fills in the new profile, as Incus's create does. */
    if (!cli_stdin_is_terminal()) {
        g_autofree char *text = cli_read_stdin(error);
        if (text == NULL)
            return -1;
        if (*g_strstrip(text) != '\0') {
            g_autoptr(json_t) given = ferry_yaml_parse(text, strlen(text), error);
            if (given == NULL)
                return -1;
            g_autoptr(json_t) writable = cli_writable(given, cli_profile_writable);
            json_object_update(body, writable);
        }
    }
    g_autoptr(json_t) result = ferry_client_run(client, "POST", "/1.0/profiles", body, NULL, NULL, error);
    if (result == NULL)
        return -1;
    if (!cli->quiet)
        printf("Profile %s created\n", name);
    return 0;
}

static int cmd_delete(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, -1, error))
        return -1;
    for (guint i = 0; i < args->len; i++) {
        g_autofree char *name = NULL;
        g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, i), &name, error);
        if (client == NULL)
            return -1;
        g_autofree char *path = ferry_api_path("profiles", name, NULL);
        g_autoptr(json_t) result = ferry_client_run(client, "DELETE", path, NULL, NULL, NULL, error);
        if (result == NULL)
            return -1;
        if (!cli->quiet)
            printf("Profile %s deleted\n", name);
    }
    return 0;
}

static int cmd_copy(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *target_project = NULL;
    gboolean refresh = FALSE;
    const CliOption options[] = {
        {"refresh", 0, CLI_OPT_BOOL, &refresh, NULL,
         "Update the target profile from the source if it already "
         "exists"},
        {"target-project", 0, CLI_OPT_STRING, &target_project, "PROJECT",
         "Copy to a project different from the "
         "source"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    g_autofree char *source_name = NULL, *source_path = NULL, *target_name = NULL;
    g_autoptr(FerryClient) source = open_profile(cli, args, &source_name, &source_path, error);
    if (source == NULL)
        return -1;
    g_autoptr(json_t) profile = ferry_client_get(source, source_path, NULL, error);
    if (profile == NULL)
        return -1;
    g_autoptr(FerryClient) target = cli_connect_name(cli, g_ptr_array_index(args, 1), &target_name, error);
    if (target == NULL)
        return -1;
    if (target_project != NULL)
        ferry_client_set_project(target, target_project);
    g_autoptr(json_t) body = cli_writable(profile, cli_profile_writable);
    if (refresh) {
        g_autofree char *target_path = ferry_api_path("profiles", target_name, NULL);
        g_autoptr(GError) missing = NULL;
        g_autoptr(json_t) existing = ferry_client_get(target, target_path, NULL, &missing);
        if (existing != NULL)
            return put_profile(target, target_path, body, error) ? 0 : -1;
    }
    json_object_set_new(body, "name", json_string(target_name));
    g_autoptr(json_t) result = ferry_client_run(target, "POST", "/1.0/profiles", body, NULL, NULL, error);
    return result != NULL ? 0 : -1;
}

static int cmd_get(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_profile(cli, args, &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) profile = ferry_client_get(client, path, NULL, error);
    if (profile == NULL)
        return -1;
    printf("%s\n",
           ferry_json_get_string(json_object_get(profile, "config"), g_ptr_array_index(args, 1)) ?: "");
    return 0;
}

static int cmd_set_unset(Cli *cli, int argc, char **argv, GError **error)
{
    gboolean unset = strcmp(cli->command->name, "unset") == 0;
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) ||
        !cli_check_args(cli, args, 2, unset ? 2 : -1, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_profile(cli, args, &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) profile = ferry_client_get(client, path, NULL, error);
    if (profile == NULL)
        return -1;
    json_t *config = json_object_get(profile, "config");
    if (!json_is_object(config)) {
        config = json_object();
        json_object_set_new(profile, "config", config);
    }
    if (unset) {
        json_object_del(config, g_ptr_array_index(args, 1));
    } else if (args->len == 3 && strchr(g_ptr_array_index(args, 1), '=') == NULL) {
        json_object_set_new(config, g_ptr_array_index(args, 1), json_string(g_ptr_array_index(args, 2)));
    } else if (!cli_parse_key_values(args, 1, config, error)) {
        return -1;
    }
    return put_profile(client, path, profile, error) ? 0 : -1;
}

static int cmd_edit(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_profile(cli, args, &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) profile = ferry_client_get(client, path, NULL, error);
    if (profile == NULL)
        return -1;
    g_autoptr(json_t) edited = cli_edit_yaml(profile,
                                             "### This is a YAML representation of the profile.\n"
                                             "### Any line starting with a '# will be ignored.",
                                             error);
    return edited != NULL && put_profile(client, path, edited, error) ? 0 : -1;
}

static int cmd_rename(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_profile(cli, args, &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) body = json_pack("{s:s}", "name", (char *)g_ptr_array_index(args, 1));
    g_autoptr(json_t) result = ferry_client_run(client, "POST", path, body, NULL, NULL, error);
    if (result == NULL)
        return -1;
    if (!cli->quiet)
        printf("Profile %s renamed to %s\n", name, (char *)g_ptr_array_index(args, 1));
    return 0;
}

static int cmd_device(Cli *cli, int argc, char **argv, GError **error)
{
    const char *action = cli->command->name;
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error))
        return -1;
    guint min = strcmp(action, "add") == 0                                   ? 3
                : strcmp(action, "list") == 0 || strcmp(action, "show") == 0 ? 1
                                                                             : 2;
    if (strcmp(action, "get") == 0 || strcmp(action, "unset") == 0 || strcmp(action, "set") == 0)
        min = 3;
    if (!cli_check_args(cli, args, min, -1, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_profile(cli, args, &name, &path, error);
    if (client == NULL)
        return -1;
    return cli_device_action(cli, client, action, path, TRUE, args, 1, error);
}

/* profile assign|add|remove on an instance. */
static int cmd_instance_profiles(Cli *cli, int argc, char **argv, GError **error)
{
    const char *action = cli->command->name;
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    g_autofree char *instance = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &instance, error);
    if (client == NULL)
        return -1;
    g_autofree char *path = ferry_api_path("instances", instance, NULL);
    g_autoptr(json_t) current = ferry_client_get(client, path, NULL, error);
    if (current == NULL)
        return -1;
    json_t *profiles = json_object_get(current, "profiles");
    if (!json_is_array(profiles)) {
        profiles = json_array();
        json_object_set_new(current, "profiles", profiles);
    }
    const char *profile = g_ptr_array_index(args, 1);
    if (strcmp(action, "assign") == 0) {
        json_array_clear(profiles);
        g_auto(GStrv) names = g_strsplit(profile, ",", -1);
        for (char **p = names; *p != NULL; p++)
            if (**p != '\0')
                json_array_append_new(profiles, json_string(*p));
    } else {
        gsize i;
        json_t *entry;
        gssize found = -1;
        json_array_foreach(profiles, i, entry)
        {
            if (g_strcmp0(json_string_value(entry), profile) == 0)
                found = (gssize)i;
        }
        if (strcmp(action, "add") == 0) {
            if (found >= 0) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Profile %s is already applied to %s",
                            profile, instance);
                return -1;
            }
            json_array_append_new(profiles, json_string(profile));
        } else {
            if (found < 0) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND,
                            "Profile %s isn't currently applied to %s", profile, instance);
                return -1;
            }
            json_array_remove(profiles, (gsize)found);
        }
    }
    g_autoptr(json_t) body = cli_writable(current, cli_instance_writable);
    g_autoptr(json_t) result = ferry_client_run(client, "PUT", path, body, NULL, NULL, error);
    if (result == NULL)
        return -1;
    if (!cli->quiet) {
        if (strcmp(action, "assign") == 0)
            printf("Profiles %s applied to %s\n", profile, instance);
        else if (strcmp(action, "add") == 0)
            printf("Profile %s added to %s\n", profile, instance);
        else
            printf("Profile %s removed from %s\n", profile, instance);
    }
    return 0;
}

const CliCommand cli_profile_device_commands[] = {
    {"add", NULL, "[<remote>:]<profile> <device> <type> [key=value...]", "Add instance devices", NULL,
     cmd_device, NULL},
    {"get", NULL, "[<remote>:]<profile> <device> <key>", "Get values for device configuration keys", NULL,
     cmd_device, NULL},
    {"list", "ls", "[<remote>:]<profile>", "List instance devices", NULL, cmd_device, NULL},
    {"remove", "rm", "[<remote>:]<profile> <name>...", "Remove instance devices", NULL, cmd_device, NULL},
    {"set", NULL, "[<remote>:]<profile> <device> <key>=<value>...", "Set device configuration keys", NULL,
     cmd_device, NULL},
    {"show", NULL, "[<remote>:]<profile>", "Show full device configuration", NULL, cmd_device, NULL},
    {"unset", NULL, "[<remote>:]<profile> <device> <key>", "Unset device configuration keys", NULL,
     cmd_device, NULL},
    {NULL},
};

const CliCommand cli_profile_commands[] = {
    {"add", NULL, "[<remote>:]<instance> <profile>", "Add profiles to instances", NULL, cmd_instance_profiles,
     NULL},
    {"assign", "apply", "[<remote>:]<instance> <profiles>", "Assign sets of profiles to instances",
     "Profiles are a comma-separated list; \"\" removes them all.", cmd_instance_profiles, NULL},
    {"copy", "cp", "[<remote>:]<profile> [<remote>:]<profile>", "Copy profiles", NULL, cmd_copy, NULL},
    {"create", NULL, "[<remote>:]<profile>", "Create profiles", NULL, cmd_create, NULL},
    {"delete", "rm", "[<remote>:]<profile>...", "Delete profiles", NULL, cmd_delete, NULL},
    {"device", NULL, NULL, "Manage devices", NULL, NULL, cli_profile_device_commands},
    {"edit", NULL, "[<remote>:]<profile>", "Edit profile configurations as YAML", NULL, cmd_edit, NULL},
    {"get", NULL, "[<remote>:]<profile> <key>", "Get values for profile configuration keys", NULL, cmd_get,
     NULL},
    {"list", "ls", "[<remote>:]", "List profiles", NULL, cmd_list, NULL},
    {"remove", NULL, "[<remote>:]<instance> <profile>", "Remove profiles from instances", NULL,
     cmd_instance_profiles, NULL},
    {"rename", "mv", "[<remote>:]<profile> <new-name>", "Rename profiles", NULL, cmd_rename, NULL},
    {"set", NULL, "[<remote>:]<profile> <key><value>...", "Set profile configuration keys", NULL,
     cmd_set_unset, NULL},
    {"show", NULL, "[<remote>:]<profile>", "Show profile configurations", NULL, cmd_show, NULL},
    {"unset", NULL, "[<remote>:]<profile> <key>", "Unset profile configuration keys", NULL, cmd_set_unset,
     NULL},
    {NULL},
};
