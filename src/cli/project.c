/* ferry project: projects and which one a remote works in. */
#include "cli.h"
#include "output.h"

#include "error.h"

#include <stdio.h>
#include <string.h>

static const char *const project_writable[] = {"config", "description", NULL};

static FerryClient *open_project(Cli *cli, const char *raw, char **name_out, char **path_out, GError **error)
{
    FerryClient *client = cli_connect_name(cli, raw, name_out, error);
    if (client != NULL && path_out != NULL)
        *path_out = ferry_api_path("projects", *name_out, NULL);
    return client;
}

static gboolean put_project(FerryClient *client, const char *path, json_t *project, GError **error)
{
    g_autoptr(json_t) body = cli_writable(project, project_writable);
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
    g_autofree char *remote = NULL, *rest = NULL;
    if (args->len == 1 &&
        !cli_config_parse_remote(cli->config, g_ptr_array_index(args, 0), &remote, &rest, error))
        return -1;
    if (remote == NULL)
        remote = g_strdup(cli_config_default_remote(cli->config));
    g_autoptr(FerryClient) client = cli_connect(cli, remote, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) projects = ferry_client_get(client, "/1.0/projects?recursion=1", NULL, error);
    if (projects == NULL)
        return -1;
    const char *current = cli->project;
    if (current == NULL)
        current = ferry_json_get_string(cli_config_remote(cli->config, remote), "project");
    if (current == NULL || *current == '\0')
        current = "default";

    static const char *const features[] = {"features.images",          "features.profiles",
                                           "features.storage.volumes", "features.storage.buckets",
                                           "features.networks",        "features.networks.zones"};
    g_autoptr(GPtrArray) rows = cli_rows_new();
    gsize i;
    json_t *project;
    json_array_foreach(projects, i, project)
    {
        const char *name = ferry_json_get_string(project, "name") ?: "";
        json_t *config = json_object_get(project, "config");
        json_t *used_by = json_object_get(project, "used_by");
        char **row = g_new0(char *, 10);
        row[0] = strcmp(name, current) == 0 ? g_strdup_printf("%s (current)", name) : g_strdup(name);
        for (gsize f = 0; f < G_N_ELEMENTS(features); f++)
            row[1 + f] =
                g_strdup(g_strcmp0(ferry_json_get_string(config, features[f]), "true") == 0 ? "YES" : "NO");
        row[7] = g_strdup(ferry_json_get_string(project, "description") ?: "");
        row[8] = g_strdup_printf("%zu", json_is_array(used_by) ? json_array_size(used_by) : (gsize)0);
        g_ptr_array_add(rows, row);
    }
    cli_rows_sort(rows);
    static const char *const headers[] = {
        "NAME",     "IMAGES",        "PROFILES",    "STORAGE VOLUMES", "STORAGE BUCKETS",
        "NETWORKS", "NETWORK ZONES", "DESCRIPTION", "USED BY",         NULL};
    return cli_print_list(format, headers, rows, projects, error) ? 0 : -1;
}

static int cmd_show(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_project(cli, g_ptr_array_index(args, 0), &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) project = ferry_client_get(client, path, NULL, error);
    return project != NULL && cli_print_yaml(project, error) ? 0 : -1;
}

static int cmd_create(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) config = NULL;
    g_autofree char *description = NULL;
    const CliOption options[] = {
        {"config", 'c', CLI_OPT_STRV, &config, "KEY=VALUE", "Config key/value to apply to the new project"},
        {"description", 0, CLI_OPT_STRING, &description, "TEXT", "Project description"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = open_project(cli, g_ptr_array_index(args, 0), &name, NULL, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) settings = json_object();
    if (!cli_parse_key_values(config, 0, settings, error))
        return -1;
    g_autoptr(json_t) body = json_pack("{s:s, s:s, s:O}", "name", name, "description",
                                       description != NULL ? description : "", "config", settings);
    g_autoptr(json_t) result = ferry_client_run(client, "POST", "/1.0/projects", body, NULL, NULL, error);
    if (result == NULL)
        return -1;
    if (!cli->quiet)
        printf("Project %s created\n", name);
    return 0;
}

static int cmd_delete(Cli *cli, int argc, char **argv, GError **error)
{
    gboolean force = FALSE;
    const CliOption options[] = {
        {"force", 'f', CLI_OPT_BOOL, &force, NULL, "Force delete the project and everything it contains"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, -1, error))
        return -1;
    for (guint i = 0; i < args->len; i++) {
        g_autofree char *name = NULL, *path = NULL;
        g_autoptr(FerryClient) client = open_project(cli, g_ptr_array_index(args, i), &name, &path, error);
        if (client == NULL)
            return -1;
        g_autofree char *full = force ? g_strconcat(path, "?force=1", NULL) : g_strdup(path);
        g_autoptr(json_t) result = ferry_client_run(client, "DELETE", full, NULL, NULL, NULL, error);
        if (result == NULL)
            return -1;
        if (!cli->quiet)
            printf("Project %s deleted\n", name);
    }
    return 0;
}

static int cmd_get(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_project(cli, g_ptr_array_index(args, 0), &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) project = ferry_client_get(client, path, NULL, error);
    if (project == NULL)
        return -1;
    printf("%s\n",
           ferry_json_get_string(json_object_get(project, "config"), g_ptr_array_index(args, 1)) ?: "");
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
    g_autoptr(FerryClient) client = open_project(cli, g_ptr_array_index(args, 0), &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) project = ferry_client_get(client, path, NULL, error);
    if (project == NULL)
        return -1;
    json_t *config = json_object_get(project, "config");
    if (!json_is_object(config)) {
        config = json_object();
        json_object_set_new(project, "config", config);
    }
    if (unset)
        json_object_del(config, g_ptr_array_index(args, 1));
    else if (args->len == 3 && strchr(g_ptr_array_index(args, 1), '=') == NULL)
        json_object_set_new(config, g_ptr_array_index(args, 1), json_string(g_ptr_array_index(args, 2)));
    else if (!cli_parse_key_values(args, 1, config, error))
        return -1;
    return put_project(client, path, project, error) ? 0 : -1;
}

static int cmd_edit(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_project(cli, g_ptr_array_index(args, 0), &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) project = ferry_client_get(client, path, NULL, error);
    if (project == NULL)
        return -1;
    g_autoptr(json_t) view = cli_writable(project, project_writable);
    g_autoptr(json_t) edited = cli_edit_yaml(view,
                                             "### This is a YAML representation of the project.\n"
                                             "### Any line starting with a '# will be ignored.",
                                             error);
    return edited != NULL && put_project(client, path, edited, error) ? 0 : -1;
}

static int cmd_rename(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_project(cli, g_ptr_array_index(args, 0), &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) body = json_pack("{s:s}", "name", (char *)g_ptr_array_index(args, 1));
    g_autoptr(json_t) result = ferry_client_run(client, "POST", path, body, NULL, NULL, error);
    if (result == NULL)
        return -1;
    if (!cli->quiet)
        printf("Project %s renamed to %s\n", name, (char *)g_ptr_array_index(args, 1));
    return 0;
}

static int cmd_switch(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *remote = NULL, *name = NULL;
    if (!cli_config_parse_remote(cli->config, g_ptr_array_index(args, 0), &remote, &name, error))
        return -1;
    g_autoptr(FerryClient) client = cli_config_connect(cli->config, remote, error);
    if (client == NULL)
        return -1;
    g_autofree char *path = ferry_api_path("projects", name, NULL);
    g_autoptr(json_t) project = ferry_client_get(client, path, NULL, error);
    if (project == NULL)
        return -1;
    json_object_set_new(cli_config_remote(cli->config, remote), "project", json_string(name));
    return cli_config_save(cli->config, error) ? 0 : -1;
}

static int cmd_get_current(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 0, 1, error))
        return -1;
    g_autofree char *remote = NULL, *rest = NULL;
    if (args->len == 1 &&
        !cli_config_parse_remote(cli->config, g_ptr_array_index(args, 0), &remote, &rest, error))
        return -1;
    const char *project = ferry_json_get_string(
        cli_config_remote(cli->config, remote != NULL ? remote : cli_config_default_remote(cli->config)),
        "project");
    printf("%s\n", project != NULL && *project ? project : "default");
    return 0;
}

const CliCommand cli_project_commands[] = {
    {"create", NULL, "[<remote>:]<project>", "Create projects", NULL, cmd_create, NULL},
    {"delete", "rm", "[<remote>:]<project>...", "Delete projects", NULL, cmd_delete, NULL},
    {"edit", NULL, "[<remote>:]<project>", "Edit project configurations as YAML", NULL, cmd_edit, NULL},
    {"get", NULL, "[<remote>:]<project> <key>", "Get values for project configuration keys", NULL, cmd_get,
     NULL},
    {"get-current", NULL, "[<remote>:]", "Show the current project", NULL, cmd_get_current, NULL},
    {"list", "ls", "[<remote>:]", "List projects", NULL, cmd_list, NULL},
    {"rename", "mv", "[<remote>:]<project> <new-name>", "Rename projects", NULL, cmd_rename, NULL},
    {"set", NULL, "[<remote>:]<project> <key>=<value>...", "Set project configuration keys", NULL,
     cmd_set_unset, NULL},
    {"show", NULL, "[<remote>:]<project>", "Show project options", NULL, cmd_show, NULL},
    {"switch", NULL, "[<remote>:]<project>", "Switch the current project", NULL, cmd_switch, NULL},
    {"unset", NULL, "[<remote>:]<project> <key>", "Unset project configuration keys", NULL, cmd_set_unset,
     NULL},
    {NULL},
};
