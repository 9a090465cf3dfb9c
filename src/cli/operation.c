/* ferry operation: background operations of a server. */
#include "cli.h"
#include "output.h"

#include "error.h"

#include <stdio.h>
#include <string.h>

static int cmd_list(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *format = NULL;
    gboolean all_projects = FALSE;
    const CliOption options[] = {
        {"all-projects", 0, CLI_OPT_BOOL, &all_projects, NULL, "List operations from all projects"},
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
    g_autoptr(json_t) by_status = ferry_client_get(
        client,
        all_projects ? "/1.0/operations?recursion=1&all-projects=true" : "/1.0/operations?recursion=1", NULL,
        error);
    if (by_status == NULL)
        return -1;
    g_autoptr(json_t) operations = json_array();
    g_autoptr(GPtrArray) rows = cli_rows_new();
    const char *status;
    json_t *list;
    json_object_foreach(by_status, status, list)
    {
        gsize i;
        json_t *op;
        json_array_foreach(list, i, op)
        {
            json_array_append(operations, op);
            g_autofree char *class = g_ascii_strup(ferry_json_get_string(op, "class") ?: "", -1);
            g_autofree char *state = g_ascii_strup(ferry_json_get_string(op, "status") ?: "", -1);
            g_autofree char *created = cli_format_date(ferry_json_get_string(op, "created_at"));
            cli_rows_add(rows, ferry_json_get_string(op, "id") ?: "", class,
                         ferry_json_get_string(op, "description") ?: "", state,
                         ferry_json_get_bool(op, "may_cancel", FALSE) ? "YES" : "NO", created, NULL);
        }
    }
    cli_rows_sort(rows);
    static const char *const headers[] = {"ID",         "TYPE",    "DESCRIPTION", "STATE",
                                          "CANCELABLE", "CREATED", NULL};
    return cli_print_list(format, headers, rows, operations, error) ? 0 : -1;
}

static int cmd_show(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *id = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &id, error);
    if (client == NULL)
        return -1;
    g_autofree char *path = ferry_api_path("operations", id, NULL);
    g_autoptr(json_t) op = ferry_client_get(client, path, NULL, error);
    return op != NULL && cli_print_yaml(op, error) ? 0 : -1;
}

static int cmd_delete(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *id = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &id, error);
    if (client == NULL)
        return -1;
    g_autofree char *path = ferry_api_path("operations", id, NULL);
    g_autoptr(FerryResponse) response = ferry_client_request(client, "DELETE", path, NULL, NULL, error);
    if (response == NULL)
        return -1;
    if (!cli->quiet)
        printf("Operation %s deleted\n", id);
    return 0;
}

const CliCommand cli_operation_commands[] = {
    {"delete", "cancel rm", "[<remote>:]<operation>",
     "Delete a background operation (will attempt to cancel)", NULL, cmd_delete, NULL},
    {"list", "ls", "[<remote>:]", "List background operations", NULL, cmd_list, NULL},
    {"show", NULL, "[<remote>:]<operation>", "Show details on a background operation", NULL, cmd_show, NULL},
    {NULL},
};
