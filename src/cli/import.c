/* ferry import: create an instance from a backup tarball (ferry's or Incus's), from a file or stdin. */
#include "cli.h"

#include "error.h"

#include <gio/gunixinputstream.h>
#include <stdio.h>
#include <unistd.h>

int cli_cmd_import(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *storage = NULL;
    const CliOption options[] = {
        {"storage", 's', CLI_OPT_STRING, &storage, "POOL", "Storage pool name"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 3, error))
        return -1;
    guint first = 0;
    g_autofree char *remote = NULL;
    const char *arg0 = g_ptr_array_index(args, 0);
    if (g_str_has_suffix(arg0, ":") && args->len > 1) {
        g_autofree char *rest = NULL;
        if (!cli_config_parse_remote(cli->config, arg0, &remote, &rest, error))
            return -1;
        first = 1;
    }
    if (args->len - first < 1 || args->len - first > 2) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Usage: ferry import [<remote>:] <backup file> [<instance name>]");
        return -1;
    }
    const char *file = g_ptr_array_index(args, first);
    const char *name = args->len - first > 1 ? g_ptr_array_index(args, first + 1) : NULL;
    gboolean from_stdin = g_str_equal(file, "-");
    if (!from_stdin && !g_file_test(file, G_FILE_TEST_IS_REGULAR)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "No such file: %s", file);
        return -1;
    }
    g_autoptr(FerryClient) client = cli_connect(cli, remote, error);
    if (client == NULL)
        return -1;
    /* Waiting for "100 Continue" lets a ferry server extract the archive as it arrives (Incus answers it
     * too). */
    const char *headers[7] = {"Expect", "100-continue", NULL};
    guint n = 2;
    if (name != NULL) {
        headers[n++] = "X-Incus-name";
        headers[n++] = name;
    }
    if (storage != NULL) {
        headers[n++] = "X-Incus-pool";
        headers[n++] = storage;
    }
    g_autoptr(CliProgress) progress = cli_progress_new(cli, "Importing instance");
    g_autoptr(FerryResponse) response = NULL;
    if (from_stdin) {
        g_autoptr(GInputStream) input = g_unix_input_stream_new(STDIN_FILENO, FALSE);
        response = ferry_client_upload_stream(client, "POST", "/1.0/instances", input, -1, headers,
                                              cli_progress_update, progress, error);
    } else {
        response = ferry_client_upload_file(client, "POST", "/1.0/instances", file, headers,
                                            cli_progress_update, progress, error);
    }
    if (response == NULL)
        return -1;
    const char *operation = response->operation ?: ferry_json_get_string(response->metadata, "id");
    if (operation == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "The server answered the upload without an operation");
        return -1;
    }
    g_autoptr(json_t) op =
        ferry_client_wait_operation(client, operation, cli_progress_update, progress, error);
    return op != NULL ? 0 : -1;
}
