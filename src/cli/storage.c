/* ferry storage: storage pools and their volumes. */
#include "cli.h"
#include "output.h"

#include "error.h"

#include <stdio.h>
#include <string.h>

static const char *const pool_writable[] = {"config", "description", NULL};

static json_t *size_value(gint64 bytes, gboolean raw);

static FerryClient *open_pool(Cli *cli, const char *raw, char **name_out, char **path_out, GError **error)
{
    FerryClient *client = cli_connect_name(cli, raw, name_out, error);
    if (client != NULL && path_out != NULL)
        *path_out = ferry_api_path("storage-pools", *name_out, NULL);
    return client;
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
    g_autoptr(json_t) pools = ferry_client_get(client, "/1.0/storage-pools?recursion=1", NULL, error);
    if (pools == NULL)
        return -1;
    g_autoptr(GPtrArray) rows = cli_rows_new();
    gsize i;
    json_t *pool;
    json_array_foreach(pools, i, pool)
    {
        json_t *used_by = json_object_get(pool, "used_by");
        g_autofree char *count =
            g_strdup_printf("%zu", json_is_array(used_by) ? json_array_size(used_by) : (gsize)0);
        g_autofree char *state = g_ascii_strup(ferry_json_get_string(pool, "status") ?: "", -1);
        cli_rows_add(rows, ferry_json_get_string(pool, "name") ?: "",
                     ferry_json_get_string(pool, "driver") ?: "",
                     ferry_json_get_string(pool, "description") ?: "", count, state, NULL);
    }
    cli_rows_sort(rows);
    static const char *const headers[] = {"NAME", "DRIVER", "DESCRIPTION", "USED BY", "STATE", NULL};
    return cli_print_list(format, headers, rows, pools, error) ? 0 : -1;
}

static int cmd_show(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_pool(cli, g_ptr_array_index(args, 0), &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) pool = ferry_client_get(client, path, NULL, error);
    return pool != NULL && cli_print_yaml(pool, error) ? 0 : -1;
}

static int cmd_info(Cli *cli, int argc, char **argv, GError **error)
{
    gboolean bytes = FALSE;
    const CliOption options[] = {
        {"bytes", 0, CLI_OPT_BOOL, &bytes, NULL, "Show the used and free space in bytes"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_pool(cli, g_ptr_array_index(args, 0), &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) pool = ferry_client_get(client, path, NULL, error);
    if (pool == NULL)
        return -1;
    g_autofree char *resources_path = ferry_api_path("storage-pools", name, "resources", NULL);
    g_autoptr(json_t) resources = ferry_client_get(client, resources_path, NULL, error);
    if (resources == NULL)
        return -1;
    json_t *space = json_object_get(resources, "space");
    gint64 used = json_integer_value(json_object_get(space, "used"));
    gint64 total = json_integer_value(json_object_get(space, "total"));

    g_autoptr(json_t) info = json_object();
    json_object_set_new(info, "description", json_string(ferry_json_get_string(pool, "description") ?: ""));
    json_object_set_new(info, "driver", json_string(ferry_json_get_string(pool, "driver") ?: ""));
    json_object_set_new(info, "name", json_string(name));
    json_object_set_new(info, "space used", size_value(used, bytes));
    json_object_set_new(info, "total space", size_value(total, bytes));
    /* "used by" groups the users by kind: /1.0/instances/c1 → instances: [c1]. */
    g_autoptr(json_t) used_by = json_object();
    gsize i;
    json_t *url;
    json_array_foreach(json_object_get(pool, "used_by"), i, url)
    {
        g_auto(GStrv) parts = g_strsplit(json_string_value(url), "/", -1);
        guint n = g_strv_length(parts);
        if (n < 4)
            continue;
        g_autofree char *last = g_strdup(parts[n - 1]);
        char *query = strchr(last, '?');
        if (query != NULL)
            *query = '\0';
        g_autofree char *unescaped = g_uri_unescape_string(last, NULL);
        const char *kind = parts[2];
        if (strcmp(kind, "storage-pools") == 0 && n >= 7)
            kind = parts[5];
        json_t *list = json_object_get(used_by, kind);
        if (list == NULL) {
            list = json_array();
            json_object_set_new(used_by, kind, list);
        }
        json_array_append_new(list, json_string(unescaped != NULL ? unescaped : last));
    }
    g_autoptr(json_t) document = json_pack("{s:O, s:O}", "info", info, "used by", used_by);
    return cli_print_yaml(document, error) ? 0 : -1;
}

static int cmd_create(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *description = NULL;
    const CliOption options[] = {
        {"description", 0, CLI_OPT_STRING, &description, "TEXT", "Description of the storage pool"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, -1, error))
        return -1;
    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = open_pool(cli, g_ptr_array_index(args, 0), &name, NULL, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) config = json_object();
    if (!cli_parse_key_values(args, 2, config, error))
        return -1;
    g_autoptr(json_t) body =
        json_pack("{s:s, s:s, s:s, s:O}", "name", name, "driver", (char *)g_ptr_array_index(args, 1),
                  "description", description != NULL ? description : "", "config", config);
    g_autoptr(json_t) result =
        ferry_client_run(client, "POST", "/1.0/storage-pools", body, NULL, NULL, error);
    if (result == NULL)
        return -1;
    if (!cli->quiet)
        printf("Storage pool %s created\n", name);
    return 0;
}

static int cmd_delete(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_pool(cli, g_ptr_array_index(args, 0), &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) result = ferry_client_run(client, "DELETE", path, NULL, NULL, NULL, error);
    if (result == NULL)
        return -1;
    if (!cli->quiet)
        printf("Storage pool %s deleted\n", name);
    return 0;
}

static int cmd_get(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_pool(cli, g_ptr_array_index(args, 0), &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) pool = ferry_client_get(client, path, NULL, error);
    if (pool == NULL)
        return -1;
    printf("%s\n", ferry_json_get_string(json_object_get(pool, "config"), g_ptr_array_index(args, 1)) ?: "");
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
    g_autoptr(FerryClient) client = open_pool(cli, g_ptr_array_index(args, 0), &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) pool = ferry_client_get(client, path, NULL, error);
    if (pool == NULL)
        return -1;
    json_t *config = json_object_get(pool, "config");
    if (!json_is_object(config)) {
        config = json_object();
        json_object_set_new(pool, "config", config);
    }
    if (unset)
        json_object_del(config, g_ptr_array_index(args, 1));
    else if (args->len == 3 && strchr(g_ptr_array_index(args, 1), '=') == NULL)
        json_object_set_new(config, g_ptr_array_index(args, 1), json_string(g_ptr_array_index(args, 2)));
    else if (!cli_parse_key_values(args, 1, config, error))
        return -1;
    g_autoptr(json_t) body = cli_writable(pool, pool_writable);
    g_autoptr(json_t) result = ferry_client_run(client, "PUT", path, body, NULL, NULL, error);
    return result != NULL ? 0 : -1;
}

static int cmd_edit(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *name = NULL, *path = NULL;
    g_autoptr(FerryClient) client = open_pool(cli, g_ptr_array_index(args, 0), &name, &path, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) pool = ferry_client_get(client, path, NULL, error);
    if (pool == NULL)
        return -1;
    g_autoptr(json_t) edited = cli_edit_yaml(pool,
                                             "### This is a YAML representation of a storage pool.\n"
                                             "### Any line starting with a '# will be ignored.",
                                             error);
    if (edited == NULL)
        return -1;
    g_autoptr(json_t) body = cli_writable(edited, pool_writable);
    g_autoptr(json_t) result = ferry_client_run(client, "PUT", path, body, NULL, NULL, error);
    return result != NULL ? 0 : -1;
}

static gint compare_volume_rows(gconstpointer a, gconstpointer b)
{
    char **left = *(char ***)a;
    char **right = *(char ***)b;
    int c = strcmp(left[1], right[1]);
    return c != 0 ? c : strcmp(left[0], right[0]);
}

static json_t *size_value(gint64 bytes, gboolean raw)
{
    g_autofree char *text =
        raw ? g_strdup_printf("%" G_GINT64_FORMAT, bytes) : cli_format_size(bytes, TRUE, 2);
    return json_string(text);
}

static int cmd_volume_list(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *format = NULL;
    const CliOption options[] = {
        {"format", 'f', CLI_OPT_STRING, &format, "FORMAT", "Format (csv|json|table|yaml|compact)"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    if (format != NULL && !cli_format_check(format, error))
        return -1;
    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = open_pool(cli, g_ptr_array_index(args, 0), &name, NULL, error);
    if (client == NULL)
        return -1;
    g_autofree char *base = ferry_api_path("storage-pools", name, "volumes", NULL);
    g_autofree char *path = g_strconcat(base, "?recursion=1", NULL);
    g_autoptr(json_t) volumes = ferry_client_get(client, path, NULL, error);
    if (volumes == NULL)
        return -1;
    g_autoptr(GPtrArray) rows = cli_rows_new();
    gsize i;
    json_t *volume;
    json_array_foreach(volumes, i, volume)
    {
        const char *volume_name = ferry_json_get_string(volume, "name") ?: "";
        const char *type = ferry_json_get_string(volume, "type") ?: "";
        g_autofree char *shown_type =
            strchr(volume_name, '/') != NULL ? g_strdup_printf("%s (snapshot)", type) : g_strdup(type);
        json_t *used_by = json_object_get(volume, "used_by");
        g_autofree char *count =
            g_strdup_printf("%zu", json_is_array(used_by) ? json_array_size(used_by) : (gsize)0);
        cli_rows_add(rows, shown_type, volume_name, ferry_json_get_string(volume, "description") ?: "",
                     ferry_json_get_string(volume, "content_type") ?: "filesystem", count, NULL);
    }
    /* Incus orders volumes by name, a snapshot after its volume. */
    static const char *const headers[] = {"TYPE", "NAME", "DESCRIPTION", "CONTENT-TYPE", "USED BY", NULL};
    g_ptr_array_sort(rows, compare_volume_rows);
    return cli_print_list(format, headers, rows, volumes, error) ? 0 : -1;
}

static int cmd_volume_show(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = open_pool(cli, g_ptr_array_index(args, 0), &name, NULL, error);
    if (client == NULL)
        return -1;
    /* "[<type>/]<volume>[/<snapshot>]", type "custom" by default. */
    const char *spec = g_ptr_array_index(args, 1);
    g_auto(GStrv) parts = g_strsplit(spec, "/", 3);
    const char *type = "custom", *volume = parts[0], *snapshot = NULL;
    if (parts[1] != NULL && (strcmp(parts[0], "custom") == 0 || strcmp(parts[0], "container") == 0 ||
                             strcmp(parts[0], "virtual-machine") == 0 || strcmp(parts[0], "image") == 0)) {
        type = parts[0];
        volume = parts[1];
        snapshot = parts[2];
    } else if (parts[1] != NULL) {
        snapshot = parts[1];
    }
    g_autofree char *path =
        snapshot != NULL
            ? ferry_api_path("storage-pools", name, "volumes", type, volume, "snapshots", snapshot, NULL)
            : ferry_api_path("storage-pools", name, "volumes", type, volume, NULL);
    g_autoptr(json_t) info = ferry_client_get(client, path, NULL, error);
    return info != NULL && cli_print_yaml(info, error) ? 0 : -1;
}

const CliCommand cli_storage_volume_commands[] = {
    {"list", "ls", "[<remote>:]<pool>", "List storage volumes", NULL, cmd_volume_list, NULL},
    {"show", NULL, "[<remote>:]<pool> [<type>/]<volume>[/<snapshot>]", "Show storage volume configurations",
     NULL, cmd_volume_show, NULL},
    {NULL},
};

const CliCommand cli_storage_commands[] = {
    {"create", NULL, "[<remote>:]<pool> <driver> [key=value...]", "Create storage pools", NULL, cmd_create,
     NULL},
    {"delete", "rm", "[<remote>:]<pool>", "Delete storage pools", NULL, cmd_delete, NULL},
    {"edit", NULL, "[<remote>:]<pool>", "Edit storage pool configurations as YAML", NULL, cmd_edit, NULL},
    {"get", NULL, "[<remote>:]<pool> <key>", "Get values for storage pool configuration keys", NULL, cmd_get,
     NULL},
    {"info", NULL, "[<remote>:]<pool>", "Show useful information about storage pools", NULL, cmd_info, NULL},
    {"list", "ls", "[<remote>:]", "List available storage pools", NULL, cmd_list, NULL},
    {"set", NULL, "[<remote>:]<pool> <key> <value>", "Set storage pool configuration keys", NULL,
     cmd_set_unset, NULL},
    {"show", NULL, "[<remote>:]<pool>", "Show storage pool configurations and resources", NULL, cmd_show,
     NULL},
    {"unset", NULL, "[<remote>:]<pool> <key>", "Unset storage pool configuration keys", NULL, cmd_set_unset,
     NULL},
    {"volume", NULL, NULL, "Manage storage volumes", NULL, NULL, cli_storage_volume_commands},
    {NULL},
};
