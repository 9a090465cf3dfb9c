/* ferry remote: the servers this client knows, and joining one's trust store with a token. */
#include "cli.h"
#include "output.h"

#include "error.h"
#include "tls_cert.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_PORT 8443

/* "host", "host:port", "[v6]:port", "https://host[:port]" → "https://host:port". */
static char *normalise_url(const char *addr, GError **error)
{
    g_autofree char *with_scheme =
        strstr(addr, "://") != NULL ? g_strdup(addr) : g_strconcat("https://", addr, NULL);
    g_autoptr(GUri) uri = g_uri_parse(with_scheme, G_URI_FLAGS_NONE, NULL);
    if (uri == NULL || g_uri_get_host(uri) == NULL || *g_uri_get_host(uri) == '\0') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid URL %s", addr);
        return NULL;
    }
    if (g_strcmp0(g_uri_get_scheme(uri), "https") != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid URL scheme \"%s\" in \"%s\"",
                    g_uri_get_scheme(uri), addr);
        return NULL;
    }
    const char *host = g_uri_get_host(uri);
    int port = g_uri_get_port(uri) > 0 ? g_uri_get_port(uri) : DEFAULT_PORT;
    if (strchr(host, ':') != NULL)
        return g_strdup_printf("https://[%s]:%d", host, port);
    return g_strdup_printf("https://%s:%d", host, port);
}

/* Base64 text that no host name or address looks like: long, or with characters hosts never have. */
static gboolean looks_like_token(const char *text)
{
    gboolean base64_only_signs = FALSE;
    for (const char *c = text; *c != '\0'; c++) {
        if (*c == '+' || *c == '/' || *c == '=')
            base64_only_signs = TRUE;
        else if (!g_ascii_isalnum(*c))
            return FALSE;
    }
    return base64_only_signs || strlen(text) >= 32;
}

static gboolean write_server_cert(CliConfig *config, const char *remote, GTlsCertificate *cert,
                                  GError **error)
{
    g_autofree char *path = cli_config_server_cert_path(config, remote);
    g_autofree char *dir = g_path_get_dirname(path);
    if (g_mkdir_with_parents(dir, 0700) < 0) {
        ferry_set_error_errno(error, errno, "Failed to create %s", dir);
        return FALSE;
    }
    g_autofree char *pem = ferry_tls_cert_to_pem(cert);
    return g_file_set_contents_full(path, pem, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0644, error);
}

static GTlsCertificate *load_client_cert(CliConfig *config, GError **error)
{
    if (!cli_config_ensure_client_cert(config, error))
        return NULL;
    g_autofree char *cert = cli_config_path(config, "client.crt");
    g_autofree char *key = cli_config_path(config, "client.key");
    return ferry_tls_cert_load(cert, key, error);
}

static gboolean server_trusts_us(FerryClient *client, GError **error)
{
    g_autoptr(json_t) server = ferry_client_get(client, "/1.0", NULL, error);
    if (server == NULL)
        return FALSE;
    return g_strcmp0(ferry_json_get_string(server, "auth"), "trusted") == 0;
}

/* Present the token to a server we can reach: POST /1.0/certificates as Incus's client does, with the
 * token itself (the server decodes it and matches its secret). joined: whether the token was used (a server
 * that trusts us already is not asked). */
static gboolean join_with_token(FerryClient *client, const char *token, gboolean *joined, GError **error)
{
    *joined = FALSE;
    g_autoptr(GError) local_error = NULL;
    gboolean trusted = server_trusts_us(client, &local_error);
    if (local_error != NULL) {
        g_propagate_error(error, g_steal_pointer(&local_error));
        return FALSE;
    }
    if (trusted)
        return TRUE;
    if (token == NULL) {
        g_set_error(
            error, FERRY_ERROR, FERRY_ERROR_FORBIDDEN,
            "The server doesn't trust this client: create a token with `ferry config trust add <name>` on "
            "the server and pass it with --token");
        return FALSE;
    }
    g_autoptr(json_t) body = json_pack("{s:s, s:s}", "type", "client", "trust_token", token);
    g_autoptr(FerryResponse) response =
        ferry_client_request(client, "POST", "/1.0/certificates", body, NULL, error);
    if (response == NULL) {
        g_prefix_error(error, "Failed to create certificate: ");
        return FALSE;
    }
    if (!server_trusts_us(client, error)) {
        if (error == NULL || *error == NULL)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_FORBIDDEN,
                        "Server doesn't trust us after authentication");
        return FALSE;
    }
    *joined = TRUE;
    return TRUE;
}

static void report_joined(Cli *cli, const char *name, gboolean joined)
{
    if (joined && !cli->quiet)
        printf("Client certificate now trusted by server: %s\n", name);
}

static gboolean save_remote(CliConfig *config, const char *name, const char *url, gboolean public,
                            const char *project, GTlsCertificate *server_cert, GError **error)
{
    if (server_cert != NULL && !write_server_cert(config, name, server_cert, error))
        return FALSE;
    json_t *entry = json_pack("{s:s, s:s, s:b}", "addr", url, "protocol", "incus", "public", public);
    if (project != NULL)
        json_object_set_new(entry, "project", json_string(project));
    json_object_set_new(json_object_get(config->doc, "remotes"), name, entry);
    return cli_config_save(config, error);
}

static int add_from_token(Cli *cli, const char *name, const char *token, json_t *decoded, gboolean public,
                          const char *project, GError **error)
{
    g_autoptr(GTlsCertificate) client_cert = load_client_cert(cli->config, error);
    if (client_cert == NULL)
        return -1;
    const char *fingerprint = ferry_json_get_string(decoded, "fingerprint");
    g_autoptr(GString) failures = g_string_new(NULL);
    gsize i;
    json_t *address;
    json_array_foreach(json_object_get(decoded, "addresses"), i, address)
    {
        g_autoptr(GError) attempt_error = NULL;
        g_autofree char *url = normalise_url(json_string_value(address), &attempt_error);
        g_autoptr(FerryClient) client =
            url != NULL ? ferry_client_new_https(url, client_cert, NULL, fingerprint, &attempt_error) : NULL;
        gboolean joined = FALSE;
        if (client != NULL && join_with_token(client, token, &joined, &attempt_error)) {
            if (!save_remote(cli->config, name, url, public, project,
                             ferry_client_get_peer_certificate(client), error))
                return -1;
            report_joined(cli, name, joined);
            return 0;
        }
        /* Another address may work; a refusal by a server that we reached will not change. */
        if (attempt_error->code != FERRY_ERROR_UNAVAILABLE) {
            g_propagate_error(error, g_steal_pointer(&attempt_error));
            return -1;
        }
        g_string_append_printf(failures, "%s%s (%s)", failures->len ? "; " : "", json_string_value(address),
                               attempt_error->message);
    }
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_UNAVAILABLE,
                "Unable to connect to any of the addresses in the token: %s",
                failures->len ? failures->str : "the token has none");
    return -1;
}

static int add_from_url(Cli *cli, const char *name, const char *addr, const char *token, gboolean accept,
                        gboolean public, const char *project, GError **error)
{
    if (g_str_has_prefix(addr, "unix:")) {
        json_t *entry = json_pack("{s:s, s:s, s:b}", "addr", addr, "protocol", "incus", "public", public);
        json_object_set_new(json_object_get(cli->config->doc, "remotes"), name, entry);
        return cli_config_save(cli->config, error) ? 0 : -1;
    }
    g_autofree char *url = normalise_url(addr, error);
    if (url == NULL)
        return -1;
    g_autoptr(GTlsCertificate) client_cert = load_client_cert(cli->config, error);
    if (client_cert == NULL)
        return -1;

    /* First contact: take whatever certificate the server shows, then have it confirmed. */
    g_autoptr(FerryClient) probe = ferry_client_new_https(url, client_cert, NULL, NULL, error);
    if (probe == NULL)
        return -1;
    g_autoptr(json_t) server = ferry_client_get(probe, "/1.0", NULL, error);
    if (server == NULL)
        return -1;
    GTlsCertificate *peer = ferry_client_get_peer_certificate(probe);
    if (peer == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "No certificate from %s", url);
        return -1;
    }
    g_autofree char *fingerprint = ferry_tls_cert_fingerprint(peer);
    if (!accept) {
        if (!cli_stdin_is_terminal()) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_FORBIDDEN,
                        "Certificate fingerprint %s not confirmed (use --accept-certificate)", fingerprint);
            return -1;
        }
        printf("Certificate fingerprint: %s\n", fingerprint);
        char answer[128];
        printf("ok (y/n/[fingerprint])? ");
        fflush(stdout);
        if (fgets(answer, sizeof answer, stdin) == NULL)
            answer[0] = '\0';
        g_strstrip(answer);
        if (g_ascii_strcasecmp(answer, "y") != 0 && g_ascii_strcasecmp(answer, fingerprint) != 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_FORBIDDEN, "Server certificate NACKed by user");
            return -1;
        }
    }

    g_autoptr(FerryClient) client = ferry_client_new_https(url, client_cert, peer, NULL, error);
    gboolean joined = FALSE;
    if (client == NULL || !join_with_token(client, token, &joined, error))
        return -1;
    if (!save_remote(cli->config, name, url, public, project, peer, error))
        return -1;
    report_joined(cli, name, joined);
    return 0;
}

static int cmd_add(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *token = NULL, *protocol = NULL, *project = NULL, *auth_type = NULL;
    gboolean accept = FALSE, public = FALSE;
    const CliOption options[] = {
        {"accept-certificate", 0, CLI_OPT_BOOL, &accept, NULL, "Accept certificate"},
        {"auth-type", 0, CLI_OPT_STRING, &auth_type, "TYPE", "Server authentication type (tls)"},
        {"project", 0, CLI_OPT_STRING, &project, "PROJECT", "Project to use for the remote"},
        {"protocol", 0, CLI_OPT_STRING, &protocol, "PROTOCOL", "Server protocol (incus)"},
        {"public", 0, CLI_OPT_BOOL, &public, NULL, "Public image server"},
        {"token", 0, CLI_OPT_STRING, &token, "TOKEN", "Remote trust token"},
        {NULL},
    };
    /* --project here names the remote's project, not the request's: parse it as ours. */
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    if (cli->project != NULL && project == NULL)
        project = g_strdup(cli->project);
    if (protocol != NULL && strcmp(protocol, "incus") != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Unsupported protocol \"%s\" (ferry speaks incus)", protocol);
        return -1;
    }
    if (auth_type != NULL && strcmp(auth_type, "tls") != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Unsupported authentication type \"%s\"",
                    auth_type);
        return -1;
    }
    const char *name = g_ptr_array_index(args, 0);
    const char *addr = g_ptr_array_index(args, 1);
    if (cli_config_remote(cli->config, name) != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Remote %s exists as <%s>", name,
                    ferry_json_get_string(cli_config_remote(cli->config, name), "addr"));
        return -1;
    }
    if (*name == '\0' || strchr(name, ':') != NULL || strchr(name, '/') != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid remote name \"%s\"", name);
        return -1;
    }

    if (strstr(addr, "://") == NULL) {
        g_autoptr(GError) token_error = NULL;
        g_autoptr(json_t) decoded = cli_token_decode(addr, &token_error);
        if (decoded != NULL)
            return add_from_token(cli, name, addr, decoded, public, project, error);
        /* A damaged token would otherwise be looked up as a host name: say what is wrong with it instead. */
        if (looks_like_token(addr)) {
            g_propagate_error(error, g_steal_pointer(&token_error));
            return -1;
        }
    }
    if (token != NULL) {
        g_autoptr(json_t) check = cli_token_decode(token, error);
        if (check == NULL)
            return -1;
    }
    return add_from_url(cli, name, addr, token, accept, public, project, error);
}

static int cmd_list(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *format = NULL;
    const CliOption options[] = {
        {"format", 'f', CLI_OPT_STRING, &format, "FORMAT", "Format (csv|json|table|yaml|compact)"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 0, 0, error))
        return -1;
    if (format != NULL && !cli_format_check(format, error))
        return -1;
    const char *current = cli_config_default_remote(cli->config);
    g_autoptr(GPtrArray) rows = cli_rows_new();
    json_t *remotes = json_object_get(cli->config->doc, "remotes");
    const char *name;
    json_t *remote;
    json_object_foreach(remotes, name, remote)
    {
        const char *addr = ferry_json_get_string(remote, "addr");
        g_autofree char *shown =
            g_strcmp0(name, current) == 0 ? g_strdup_printf("%s (current)", name) : g_strdup(name);
        gboolean is_unix = g_str_has_prefix(addr, "unix:");
        cli_rows_add(rows, shown, addr, ferry_json_get_string(remote, "protocol") ?: "incus",
                     is_unix ? "file access" : "tls",
                     ferry_json_get_bool(remote, "public", FALSE) ? "YES" : "NO",
                     cli_config_remote_is_static(name) ? "YES" : "NO", "NO", NULL);
    }
    cli_rows_sort(rows);
    static const char *const headers[] = {"NAME",   "URL",    "PROTOCOL", "AUTH TYPE",
                                          "PUBLIC", "STATIC", "GLOBAL",   NULL};
    return cli_print_list(format, headers, rows, remotes, error) ? 0 : -1;
}

static gboolean check_changeable(CliConfig *config, const char *name, GError **error)
{
    if (cli_config_remote(config, name) == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Remote %s doesn't exist", name);
        return FALSE;
    }
    if (cli_config_remote_is_static(name)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Remote %s is static and cannot be modified",
                    name);
        return FALSE;
    }
    return TRUE;
}

static int cmd_remove(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    const char *name = g_ptr_array_index(args, 0);
    if (!check_changeable(cli->config, name, error))
        return -1;
    if (g_strcmp0(cli_config_default_remote(cli->config), name) == 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Can't remove the default remote");
        return -1;
    }
    json_object_del(json_object_get(cli->config->doc, "remotes"), name);
    g_autofree char *cert = cli_config_server_cert_path(cli->config, name);
    g_unlink(cert);
    return cli_config_save(cli->config, error) ? 0 : -1;
}

static int cmd_rename(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    const char *old_name = g_ptr_array_index(args, 0);
    const char *new_name = g_ptr_array_index(args, 1);
    if (!check_changeable(cli->config, old_name, error))
        return -1;
    if (cli_config_remote(cli->config, new_name) != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Remote %s already exists", new_name);
        return -1;
    }
    json_t *remotes = json_object_get(cli->config->doc, "remotes");
    json_object_set(remotes, new_name, json_object_get(remotes, old_name));
    json_object_del(remotes, old_name);
    g_autofree char *old_cert = cli_config_server_cert_path(cli->config, old_name);
    g_autofree char *new_cert = cli_config_server_cert_path(cli->config, new_name);
    if (g_file_test(old_cert, G_FILE_TEST_EXISTS) && g_rename(old_cert, new_cert) < 0) {
        ferry_set_error_errno(error, errno, "Failed to rename %s", old_cert);
        return -1;
    }
    if (g_strcmp0(cli_config_default_remote(cli->config), old_name) == 0)
        json_object_set_new(cli->config->doc, "default-remote", json_string(new_name));
    return cli_config_save(cli->config, error) ? 0 : -1;
}

static int cmd_switch(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    const char *name = g_ptr_array_index(args, 0);
    if (cli_config_remote(cli->config, name) == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Remote %s doesn't exist", name);
        return -1;
    }
    json_object_set_new(cli->config->doc, "default-remote", json_string(name));
    return cli_config_save(cli->config, error) ? 0 : -1;
}

static int cmd_get_default(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 0, 0, error))
        return -1;
    printf("%s\n", cli_config_default_remote(cli->config));
    return 0;
}

const CliCommand cli_remote_commands[] = {
    {"add", NULL, "<remote> <IP|FQDN|URL|token>", "Add new remote servers",
     "A token (from `ferry config trust add` or `incus config trust add` on the server) holds the server's\n"
     "addresses and certificate fingerprint: nothing more is needed. With an address, the server's\n"
     "certificate is shown for confirmation (or --accept-certificate) and --token authenticates.",
     cmd_add, NULL},
    {"get-default", NULL, "", "Show the default remote", NULL, cmd_get_default, NULL},
    {"list", "ls", "", "List the available remotes", NULL, cmd_list, NULL},
    {"remove", "rm", "<remote>", "Remove remotes", NULL, cmd_remove, NULL},
    {"rename", "mv", "<remote> <new-name>", "Rename remotes", NULL, cmd_rename, NULL},
    {"switch", NULL, "<remote>", "Switch the default remote", NULL, cmd_switch, NULL},
    {NULL},
};
