/* ferry snapshot: create, list, show, rename, restore and delete instance snapshots (Incus 6 syntax). */
#include "cli.h"
#include "output.h"

#include "error.h"

#include <stdio.h>
#include <string.h>

static FerryClient *open_instance(Cli *cli, GPtrArray *args, char **instance_out, GError **error)
{
    return cli_connect_name(cli, g_ptr_array_index(args, 0), instance_out, error);
}

static int cmd_create(Cli *cli, int argc, char **argv, GError **error)
{
    gboolean stateful = FALSE, no_expiry = FALSE, reuse = FALSE;
    const CliOption options[] = {
        {"no-expiry", 0, CLI_OPT_BOOL, &no_expiry, NULL,
         "Ignore any configured auto-expiry for the instance"},
        {"reuse", 0, CLI_OPT_BOOL, &reuse, NULL,
         "If the snapshot name already exists, delete and create a new one"},
        {"stateful", 0, CLI_OPT_BOOL, &stateful, NULL,
         "Whether or not to snapshot the instance's running state"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 2, error))
        return -1;
    g_autofree char *instance = NULL;
    g_autoptr(FerryClient) client = open_instance(cli, args, &instance, error);
    if (client == NULL)
        return -1;
    const char *name = args->len > 1 ? g_ptr_array_index(args, 1) : "";
    if (reuse && *name != '\0') {
        g_autofree char *existing = ferry_api_path("instances", instance, "snapshots", name, NULL);
        g_autoptr(GError) ignored = NULL;
        g_autoptr(json_t) deleted = ferry_client_run(client, "DELETE", existing, NULL, NULL, NULL, &ignored);
    }
    g_autoptr(json_t) body = json_pack("{s:s, s:b}", "name", name, "stateful", stateful);
    if (no_expiry)
        json_object_set_new(body, "expires_at", json_string("0001-01-01T00:00:00Z"));
    g_autofree char *path = ferry_api_path("instances", instance, "snapshots", NULL);
    g_autoptr(json_t) op = ferry_client_run(client, "POST", path, body, NULL, NULL, error);
    return op != NULL ? 0 : -1;
}

static int cmd_delete(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, -1, error))
        return -1;
    g_autofree char *instance = NULL;
    g_autoptr(FerryClient) client = open_instance(cli, args, &instance, error);
    if (client == NULL)
        return -1;
    for (guint i = 1; i < args->len; i++) {
        g_autofree char *path =
            ferry_api_path("instances", instance, "snapshots", (char *)g_ptr_array_index(args, i), NULL);
        g_autoptr(json_t) op = ferry_client_run(client, "DELETE", path, NULL, NULL, NULL, error);
        if (op == NULL)
            return -1;
    }
    return 0;
}

static int cmd_rename(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 3, 3, error))
        return -1;
    g_autofree char *instance = NULL;
    g_autoptr(FerryClient) client = open_instance(cli, args, &instance, error);
    if (client == NULL)
        return -1;
    g_autofree char *path =
        ferry_api_path("instances", instance, "snapshots", (char *)g_ptr_array_index(args, 1), NULL);
    g_autoptr(json_t) body = json_pack("{s:s}", "name", (char *)g_ptr_array_index(args, 2));
    g_autoptr(json_t) op = ferry_client_run(client, "POST", path, body, NULL, NULL, error);
    return op != NULL ? 0 : -1;
}

static int cmd_list(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *format = NULL;
    g_autofree char *columns = NULL;
    const CliOption options[] = {
        {"columns", 'c', CLI_OPT_STRING, &columns, "COLUMNS", "Columns (default nTEs)"},
        {"format", 'f', CLI_OPT_STRING, &format, "FORMAT", "Format (csv|json|table|yaml|compact)"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    if (format != NULL && !cli_format_check(format, error))
        return -1;
    g_autofree char *instance = NULL;
    g_autoptr(FerryClient) client = open_instance(cli, args, &instance, error);
    if (client == NULL)
        return -1;
    g_autofree char *base = ferry_api_path("instances", instance, "snapshots", NULL);
    g_autofree char *path = g_strconcat(base, "?recursion=1", NULL);
    g_autoptr(json_t) snapshots = ferry_client_get(client, path, NULL, error);
    if (snapshots == NULL)
        return -1;

    const char *letters = columns != NULL ? columns : "nTEs";
    g_autoptr(GPtrArray) headers = g_ptr_array_new();
    for (const char *c = letters; *c; c++) {
        switch (*c) {
        case 'n':
            g_ptr_array_add(headers, "NAME");
            break;
        case 'T':
            g_ptr_array_add(headers, "TAKEN AT");
            break;
        case 'E':
            g_ptr_array_add(headers, "EXPIRES AT");
            break;
        case 's':
            g_ptr_array_add(headers, "STATEFUL");
            break;
        case ',':
            break;
        default:
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Unknown column shorthand char '%c' in '%s'",
                        *c, letters);
            return -1;
        }
    }
    g_ptr_array_add(headers, NULL);
    g_autoptr(GPtrArray) rows = cli_rows_new();
    gsize i;
    json_t *snapshot;
    json_array_foreach(snapshots, i, snapshot)
    {
        const char *full = ferry_json_get_string(snapshot, "name") ?: "";
        const char *slash = strrchr(full, '/');
        g_autoptr(GStrvBuilder) row = g_strv_builder_new();
        for (const char *c = letters; *c; c++) {
            switch (*c) {
            case 'n':
                g_strv_builder_add(row, slash != NULL ? slash + 1 : full);
                break;
            case 'T':
                cli_row_take(row, cli_format_date(ferry_json_get_string(snapshot, "created_at")));
                break;
            case 'E':
                cli_row_take(row, cli_format_date(ferry_json_get_string(snapshot, "expires_at")));
                break;
            case 's':
                g_strv_builder_add(row, ferry_json_get_bool(snapshot, "stateful", FALSE) ? "YES" : "NO");
                break;
            default:
                break;
            }
        }
        g_ptr_array_add(rows, g_strv_builder_end(row));
    }
    cli_rows_sort(rows);
    return cli_print_list(format, (const char *const *)headers->pdata, rows, snapshots, error) ? 0 : -1;
}

static int cmd_show(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    g_autofree char *instance = NULL;
    g_autoptr(FerryClient) client = open_instance(cli, args, &instance, error);
    if (client == NULL)
        return -1;
    g_autofree char *path =
        ferry_api_path("instances", instance, "snapshots", (char *)g_ptr_array_index(args, 1), NULL);
    g_autoptr(json_t) snapshot = ferry_client_get(client, path, NULL, error);
    return snapshot != NULL && cli_print_yaml(snapshot, error) ? 0 : -1;
}

const CliCommand cli_snapshot_commands[] = {
    {"create", NULL, "[<remote>:]<instance> [<snapshot name>]", "Create instance snapshot",
     "When --stateful is used, attempt to checkpoint the instance's running state, including process memory "
     "state,\nTCP connections, ...",
     cmd_create, NULL},
    {"delete", "rm", "[<remote>:]<instance> <snapshot name>...", "Delete instance snapshots", NULL,
     cmd_delete, NULL},
    {"list", "ls", "[<remote>:]<instance>", "List instance snapshots", NULL, cmd_list, NULL},
    {"rename", NULL, "[<remote>:]<instance> <old snapshot name> <new snapshot name>",
     "Rename instance snapshots", NULL, cmd_rename, NULL},
    {"restore", NULL, "[<remote>:]<instance> <snapshot name>", "Restore instance snapshots", NULL,
     cli_cmd_restore, NULL},
    {"show", NULL, "[<remote>:]<instance> <snapshot name>", "Show instance snapshot configuration", NULL,
     cmd_show, NULL},
    {NULL},
};
