/* ferry query: a raw request, for debugging and scripts. */
#include "cli.h"

#include "error.h"

#include <stdio.h>
#include <string.h>

/* Incus prints query results indented with tabs (Go's json.MarshalIndent(v, "", "\t")). */
static char *indent_with_tabs(json_t *value)
{
    char *spaced = json_dumps(value, JSON_INDENT(1) | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    GString *out = g_string_new(NULL);
    gboolean line_start = TRUE;
    for (const char *c = spaced; c != NULL && *c != '\0'; c++) {
        if (line_start && *c == ' ') {
            g_string_append_c(out, '\t');
            continue;
        }
        line_start = *c == '\n';
        g_string_append_c(out, *c);
    }
    free(spaced);
    return g_string_free(out, FALSE);
}

int cli_cmd_query(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *method = NULL, *data = NULL;
    gboolean wait = FALSE, raw = FALSE;
    const CliOption options[] = {
        {"data", 'd', CLI_OPT_STRING, &data, "JSON", "Input data"},
        {"raw", 0, CLI_OPT_BOOL, &raw, NULL, "Print the raw response"},
        {"request", 'X', CLI_OPT_STRING, &method, "METHOD", "Action (defaults to GET)"},
        {"wait", 0, CLI_OPT_BOOL, &wait, NULL, "Wait for the operation to complete"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *path = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &path, error);
    if (client == NULL)
        return -1;
    if (!g_str_has_prefix(path, "/")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Query path must start with /");
        return -1;
    }
    g_autoptr(json_t) body = NULL;
    if (data != NULL && *data != '\0') {
        body = ferry_json_parse(data, strlen(data), error);
        if (body == NULL)
            return -1;
    }
    g_autoptr(FerryResponse) response =
        ferry_client_request(client, method != NULL ? method : "GET", path, body, NULL, error);
    if (response == NULL)
        return -1;
    g_autoptr(json_t) shown = json_incref(response->metadata);
    if (wait && g_strcmp0(response->type, "async") == 0 && response->operation != NULL) {
        json_decref(shown);
        shown = ferry_client_wait_operation(client, response->operation, NULL, NULL, error);
        if (shown == NULL)
            return -1;
    }
    if (raw) {
        g_autoptr(json_t) envelope =
            json_pack("{s:s, s:i, s:s, s:O}", "type", response->type, "status_code", response->status_code,
                      "operation", response->operation ?: "", "metadata", shown);
        g_autofree char *text = indent_with_tabs(envelope);
        printf("%s\n", text);
    } else if (!json_is_null(shown)) {
        g_autofree char *text = indent_with_tabs(shown);
        printf("%s\n", text);
    }
    return 0;
}
