/* ferry config trust: trusted client certificates and trust tokens. */
#include "cli.h"
#include "output.h"

#include "error.h"
#include "tls_cert.h"

#include <stdio.h>
#include <string.h>

static FerryClient *connect_server_arg(Cli *cli, GPtrArray *args, guint index, char **name_out,
                                       GError **error)
{
    if (args->len <= index)
        return cli_connect(cli, NULL, error);
    return cli_connect_name(cli, g_ptr_array_index(args, index), name_out, error);
}

static int cmd_add(Cli *cli, int argc, char **argv, GError **error)
{
    gboolean restricted = FALSE;
    g_autofree char *projects = NULL;
    const CliOption options[] = {
        {"projects", 0, CLI_OPT_STRING, &projects, "LIST", "List of projects to restrict the certificate to"},
        {"restricted", 0, CLI_OPT_BOOL, &restricted, NULL,
         "Restrict the certificate to one or more projects"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &name, error);
    if (client == NULL)
        return -1;

    g_autoptr(json_t) body = json_pack("{s:s, s:s, s:b, s:b}", "name", name, "type", "client", "token", 1,
                                       "restricted", restricted);
    if (projects != NULL) {
        json_t *list = json_array();
        g_auto(GStrv) names = g_strsplit(projects, ",", -1);
        for (char **p = names; *p != NULL; p++)
            json_array_append_new(list, json_string(*p));
        json_object_set_new(body, "projects", list);
    }
    /* The token lives as a running operation until used or revoked: read it, don't wait for it. */
    g_autoptr(FerryResponse) response =
        ferry_client_request(client, "POST", "/1.0/certificates", body, NULL, error);
    if (response == NULL)
        return -1;
    json_t *metadata = json_object_get(response->metadata, "metadata");
    const char *client_name = ferry_json_get_string(json_object_get(metadata, "request"), "name");
    const char *fingerprint = ferry_json_get_string(metadata, "fingerprint");
    const char *secret = ferry_json_get_string(metadata, "secret");
    json_t *addresses = json_object_get(metadata, "addresses");
    if (client_name == NULL || fingerprint == NULL || secret == NULL || !json_is_array(addresses)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "Failed converting token operation to certificate add token: incomplete metadata");
        return -1;
    }
    g_autofree char *token = cli_token_encode(client_name, fingerprint, addresses, secret,
                                              ferry_json_get_string(metadata, "expiresAt"));
    if (!cli->quiet)
        printf("Client %s certificate add token:\n", name);
    printf("%s\n", token);
    return 0;
}

static int cmd_list(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *format = NULL;
    g_autofree char *columns = NULL;
    const CliOption options[] = {
        {"columns", 'c', CLI_OPT_STRING, &columns, "COLUMNS", "Columns (default ntdfe)"},
        {"format", 'f', CLI_OPT_STRING, &format, "FORMAT", "Format (csv|json|table|yaml|compact)"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 0, 1, error))
        return -1;
    if (format != NULL && !cli_format_check(format, error))
        return -1;
    g_autoptr(FerryClient) client = connect_server_arg(cli, args, 0, NULL, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) certificates = ferry_client_get(client, "/1.0/certificates?recursion=1", NULL, error);
    if (certificates == NULL)
        return -1;

    const char *letters = columns != NULL ? columns : "ntdfe";
    g_autoptr(GPtrArray) headers = g_ptr_array_new();
    for (const char *c = letters; *c; c++) {
        const char *header = NULL;
        switch (*c) {
        case 'n':
            header = "NAME";
            break;
        case 't':
            header = "TYPE";
            break;
        case 'c':
            header = "COMMON NAME";
            break;
        case 'f':
            header = "FINGERPRINT";
            break;
        case 'd':
            header = "DESCRIPTION";
            break;
        case 'i':
            header = "ISSUE DATE";
            break;
        case 'e':
            header = "EXPIRY DATE";
            break;
        case 'r':
            header = "RESTRICTED";
            break;
        case 'p':
            header = "PROJECTS";
            break;
        case ',':
            continue;
        default:
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Unknown column shorthand char '%c' in '%s'",
                        *c, letters);
            return -1;
        }
        g_ptr_array_add(headers, (gpointer)header);
    }
    g_ptr_array_add(headers, NULL);

    g_autoptr(GPtrArray) rows = cli_rows_new();
    gsize i;
    json_t *certificate;
    json_array_foreach(certificates, i, certificate)
    {
        const char *pem = ferry_json_get_string(certificate, "certificate");
        g_autofree char *common_name = NULL;
        gint64 not_before = 0, not_after = 0;
        if (pem == NULL || !ferry_tls_cert_info(pem, &common_name, &not_before, &not_after, error)) {
            if (error != NULL && *error == NULL)
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid certificate");
            return -1;
        }
        g_autoptr(GStrvBuilder) row = g_strv_builder_new();
        for (const char *c = letters; *c; c++) {
            const char *fingerprint = ferry_json_get_string(certificate, "fingerprint") ?: "";
            switch (*c) {
            case 'n':
                g_strv_builder_add(row, ferry_json_get_string(certificate, "name") ?: "");
                break;
            case 't':
                g_strv_builder_add(row, ferry_json_get_string(certificate, "type") ?: "");
                break;
            case 'c':
                g_strv_builder_add(row, common_name);
                break;
            case 'f':
                cli_row_take(row, g_strndup(fingerprint, 12));
                break;
            case 'd':
                g_strv_builder_add(row, ferry_json_get_string(certificate, "description") ?: "");
                break;
            case 'i':
                cli_row_take(row, cli_format_unix_date(not_before));
                break;
            case 'e':
                cli_row_take(row, cli_format_unix_date(not_after));
                break;
            case 'r':
                g_strv_builder_add(row, ferry_json_get_bool(certificate, "restricted", FALSE) ? "yes" : "no");
                break;
            case 'p': {
                g_autoptr(GPtrArray) names = g_ptr_array_new();
                gsize j;
                json_t *project;
                json_array_foreach(json_object_get(certificate, "projects"), j, project)
                    g_ptr_array_add(names, (gpointer)json_string_value(project));
                g_ptr_array_add(names, NULL);
                cli_row_take(row, g_strjoinv("\n", (char **)names->pdata));
                break;
            }
            default:
                break;
            }
        }
        g_ptr_array_add(rows, g_strv_builder_end(row));
    }
    cli_rows_sort(rows);
    return cli_print_list(format, (const char *const *)headers->pdata, rows, certificates, error) ? 0 : -1;
}

/* Running token operations (class "token" with a certificate request), as trust tokens. */
static json_t *token_operations(FerryClient *client, GError **error)
{
    g_autoptr(json_t) operations = ferry_client_get(client, "/1.0/operations?recursion=1", NULL, error);
    if (operations == NULL)
        return NULL;
    json_t *tokens = json_array();
    json_t *running = json_object_get(operations, "running");
    gsize i;
    json_t *op;
    json_array_foreach(running, i, op)
    {
        json_t *metadata = json_object_get(op, "metadata");
        if (g_strcmp0(ferry_json_get_string(op, "class"), "token") != 0 ||
            !json_is_object(json_object_get(metadata, "request")) ||
            ferry_json_get_string(metadata, "secret") == NULL)
            continue;
        json_array_append(tokens, op);
    }
    return tokens;
}

static char *token_of(json_t *op)
{
    json_t *metadata = json_object_get(op, "metadata");
    g_autoptr(json_t) none = json_array();
    json_t *addresses = json_object_get(metadata, "addresses");
    return cli_token_encode(
        ferry_json_get_string(json_object_get(metadata, "request"), "name") ?: "",
        ferry_json_get_string(metadata, "fingerprint") ?: "", json_is_array(addresses) ? addresses : none,
        ferry_json_get_string(metadata, "secret") ?: "", ferry_json_get_string(metadata, "expiresAt"));
}

static int cmd_list_tokens(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *format = NULL;
    const CliOption options[] = {
        {"format", 'f', CLI_OPT_STRING, &format, "FORMAT", "Format (csv|json|table|yaml|compact)"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 0, 1, error))
        return -1;
    g_autoptr(FerryClient) client = connect_server_arg(cli, args, 0, NULL, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) tokens = token_operations(client, error);
    if (tokens == NULL)
        return -1;
    g_autoptr(GPtrArray) rows = cli_rows_new();
    g_autoptr(json_t) raw = json_array();
    gsize i;
    json_t *op;
    json_array_foreach(tokens, i, op)
    {
        json_t *metadata = json_object_get(op, "metadata");
        const char *name = ferry_json_get_string(json_object_get(metadata, "request"), "name") ?: "";
        g_autofree char *token = token_of(op);
        g_autofree char *expires = cli_format_date(ferry_json_get_string(metadata, "expiresAt"));
        cli_rows_add(rows, name, token, expires, NULL);
        json_array_append_new(raw,
                              json_pack("{s:s, s:s, s:s}", "client_name", name, "token", token, "expires_at",
                                        ferry_json_get_string(metadata, "expiresAt") ?: ""));
    }
    cli_rows_sort(rows);
    static const char *const headers[] = {"NAME", "TOKEN", "EXPIRES AT", NULL};
    return cli_print_list(format, headers, rows, raw, error) ? 0 : -1;
}

static int cmd_revoke_token(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &name, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) tokens = token_operations(client, error);
    if (tokens == NULL)
        return -1;
    gsize i;
    json_t *op;
    json_array_foreach(tokens, i, op)
    {
        json_t *request = json_object_get(json_object_get(op, "metadata"), "request");
        if (g_strcmp0(ferry_json_get_string(request, "name"), name) != 0)
            continue;
        g_autofree char *path = ferry_api_path("operations", ferry_json_get_string(op, "id"), NULL);
        g_autoptr(FerryResponse) response = ferry_client_request(client, "DELETE", path, NULL, NULL, error);
        return response != NULL ? 0 : -1;
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "No certificate add token for member %s on remote",
                name);
    return -1;
}

/* A fingerprint (or a unique prefix the server resolves) or a certificate name. */
static char *resolve_certificate(FerryClient *client, const char *key, GError **error)
{
    g_autofree char *path = ferry_api_path("certificates", key, NULL);
    g_autoptr(GError) lookup_error = NULL;
    g_autoptr(json_t) certificate = ferry_client_get(client, path, NULL, &lookup_error);
    if (certificate != NULL)
        return g_strdup(ferry_json_get_string(certificate, "fingerprint"));
    if (lookup_error->code != FERRY_ERROR_NOT_FOUND) {
        g_propagate_error(error, g_steal_pointer(&lookup_error));
        return NULL;
    }
    g_autoptr(json_t) all = ferry_client_get(client, "/1.0/certificates?recursion=1", NULL, error);
    if (all == NULL)
        return NULL;
    char *found = NULL;
    gsize i;
    json_t *entry;
    json_array_foreach(all, i, entry)
    {
        if (g_strcmp0(ferry_json_get_string(entry, "name"), key) != 0)
            continue;
        if (found != NULL) {
            g_free(found);
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT,
                        "More than one certificate is named \"%s\": use its fingerprint", key);
            return NULL;
        }
        found = g_strdup(ferry_json_get_string(entry, "fingerprint"));
    }
    if (found == NULL)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Certificate not found");
    return found;
}

static int cmd_remove(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *key = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &key, error);
    if (client == NULL)
        return -1;
    g_autofree char *fingerprint = resolve_certificate(client, key, error);
    if (fingerprint == NULL)
        return -1;
    g_autofree char *path = ferry_api_path("certificates", fingerprint, NULL);
    g_autoptr(FerryResponse) response = ferry_client_request(client, "DELETE", path, NULL, NULL, error);
    return response != NULL ? 0 : -1;
}

static int cmd_show(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *key = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &key, error);
    if (client == NULL)
        return -1;
    g_autofree char *fingerprint = resolve_certificate(client, key, error);
    if (fingerprint == NULL)
        return -1;
    g_autofree char *path = ferry_api_path("certificates", fingerprint, NULL);
    g_autoptr(json_t) certificate = ferry_client_get(client, path, NULL, error);
    return certificate != NULL && cli_print_yaml(certificate, error) ? 0 : -1;
}

const CliCommand cli_config_trust_commands[] = {
    {"add", NULL, "[<remote>:]<name>", "Add new trusted client",
     "This will issue a trust token to be used by the client to add itself to the trust store.", cmd_add,
     NULL},
    {"list", "ls", "[<remote>:]", "List trusted clients", NULL, cmd_list, NULL},
    {"list-tokens", NULL, "[<remote>:]", "List all active certificate add tokens", NULL, cmd_list_tokens,
     NULL},
    {"remove", "rm", "[<remote>:]<fingerprint>|<name>", "Remove trusted client", NULL, cmd_remove, NULL},
    {"revoke-token", NULL, "[<remote>:]<name>", "Revoke certificate add token", NULL, cmd_revoke_token, NULL},
    {"show", NULL, "[<remote>:]<fingerprint>|<name>", "Show trust configurations", NULL, cmd_show, NULL},
    {NULL},
};
