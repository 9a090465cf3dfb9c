#include "conf.h"

#include "error.h"
#include "json.h"
#include "tls_cert.h"
#include "yaml.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>

#define LOCAL_REMOTE "local"

char *cli_config_default_dir(void)
{
    const char *env = g_getenv("FERRY_CONF");
    if (env != NULL && *env != '\0')
        return g_strdup(env);
    return g_build_filename(g_get_home_dir(), ".config", "ferry", NULL);
}

/* Fill in what every configuration has: default-remote, remotes, and the local remote. */
static void complete_doc(json_t *doc)
{
    json_t *remotes = json_object_get(doc, "remotes");
    if (!json_is_object(remotes)) {
        remotes = json_object();
        json_object_set_new(doc, "remotes", remotes);
    }
    if (!json_is_object(json_object_get(remotes, LOCAL_REMOTE)))
        json_object_set_new(
            remotes, LOCAL_REMOTE,
            json_pack("{s:s, s:s, s:b}", "addr", "unix://", "protocol", "incus", "public", 0));
    const char *current = ferry_json_get_string(doc, "default-remote");
    if (current == NULL || !json_is_object(json_object_get(remotes, current)))
        json_object_set_new(doc, "default-remote", json_string(LOCAL_REMOTE));
}

CliConfig *cli_config_load_text(const char *dir, const char *yaml_text, GError **error)
{
    g_autoptr(json_t) doc = NULL;

    if (yaml_text != NULL) {
        doc = ferry_yaml_parse(yaml_text, strlen(yaml_text), error);
        if (doc == NULL) {
            g_prefix_error(error, "Failed to read the client configuration: ");
            return NULL;
        }
        if (!json_is_object(doc)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid client configuration: not a mapping");
            return NULL;
        }
    } else {
        doc = json_object();
    }
    /* "public" may have been written as a string by hand; normalise the remote entries. */
    json_t *remotes = json_object_get(doc, "remotes");
    if (remotes != NULL && !json_is_object(remotes)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid client configuration: remotes is not a mapping");
        return NULL;
    }
    const char *name;
    json_t *remote;
    json_object_foreach(remotes, name, remote)
    {
        if (!json_is_object(remote) || ferry_json_get_string(remote, "addr") == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid client configuration: remote %s has no addr", name);
            return NULL;
        }
    }
    complete_doc(doc);
    /* Written back with default-remote and remotes first, as Incus writes its config.yml. */
    json_t *ordered = json_object();
    json_object_set(ordered, "default-remote", json_object_get(doc, "default-remote"));
    json_object_set(ordered, "remotes", json_object_get(doc, "remotes"));
    const char *key;
    json_t *value;
    json_object_foreach(doc, key, value)
    {
        if (json_object_get(ordered, key) == NULL)
            json_object_set(ordered, key, value);
    }
    json_decref(doc);
    doc = ordered;

    CliConfig *config = g_new0(CliConfig, 1);
    config->dir = g_strdup(dir);
    config->doc = g_steal_pointer(&doc);
    return config;
}

CliConfig *cli_config_load(const char *dir, GError **error)
{
    g_autofree char *path = g_build_filename(dir, "config.yml", NULL);
    g_autofree char *text = NULL;
    g_autoptr(GError) local_error = NULL;

    if (!g_file_get_contents(path, &text, NULL, &local_error)) {
        if (!g_error_matches(local_error, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
            g_propagate_error(error, g_steal_pointer(&local_error));
            return NULL;
        }
    }
    return cli_config_load_text(dir, text, error);
}

char *cli_config_to_yaml(CliConfig *config, GError **error)
{
    return ferry_yaml_emit(config->doc, error);
}

gboolean cli_config_save(CliConfig *config, GError **error)
{
    if (g_mkdir_with_parents(config->dir, 0700) < 0) {
        ferry_set_error_errno(error, errno, "Failed to create %s", config->dir);
        return FALSE;
    }
    g_autofree char *text = cli_config_to_yaml(config, error);
    if (text == NULL)
        return FALSE;
    g_autofree char *path = g_build_filename(config->dir, "config.yml", NULL);
    if (!g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, error)) {
        g_prefix_error(error, "Failed to write %s: ", path);
        return FALSE;
    }
    return TRUE;
}

void cli_config_free(CliConfig *config)
{
    if (config == NULL)
        return;
    g_free(config->dir);
    json_decref(config->doc);
    g_free(config);
}

const char *cli_config_default_remote(CliConfig *config)
{
    return ferry_json_get_string(config->doc, "default-remote");
}

json_t *cli_config_remote(CliConfig *config, const char *name)
{
    json_t *remote = json_object_get(json_object_get(config->doc, "remotes"), name);
    return json_is_object(remote) ? remote : NULL;
}

gboolean cli_config_remote_is_static(const char *name)
{
    return g_strcmp0(name, LOCAL_REMOTE) == 0;
}

char *cli_config_path(CliConfig *config, const char *file)
{
    return g_build_filename(config->dir, file, NULL);
}

char *cli_config_server_cert_path(CliConfig *config, const char *remote)
{
    g_autofree char *file = g_strdup_printf("%s.crt", remote);
    return g_build_filename(config->dir, "servercerts", file, NULL);
}

gboolean cli_config_parse_remote(CliConfig *config, const char *raw, char **remote_out, char **name_out,
                                 GError **error)
{
    const char *colon = strchr(raw, ':');
    if (colon == NULL) {
        *remote_out = g_strdup(cli_config_default_remote(config));
        *name_out = g_strdup(raw);
        return TRUE;
    }
    g_autofree char *remote = g_strndup(raw, colon - raw);
    if (cli_config_remote(config, remote) == NULL) {
        /* A snapshot name may contain ':' ("c1/snap:1"), as Incus allows. */
        if (strchr(remote, '/') != NULL) {
            *remote_out = g_strdup(cli_config_default_remote(config));
            *name_out = g_strdup(raw);
            return TRUE;
        }
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "The remote \"%s\" doesn't exist", remote);
        return FALSE;
    }
    *remote_out = g_steal_pointer(&remote);
    *name_out = g_strdup(colon + 1);
    return TRUE;
}

void cli_split_snapshot(const char *name, char **instance_out, char **snapshot_out)
{
    const char *slash = strchr(name, '/');
    if (slash == NULL) {
        *instance_out = g_strdup(name);
        *snapshot_out = NULL;
        return;
    }
    *instance_out = g_strndup(name, slash - name);
    *snapshot_out = g_strdup(slash + 1);
}

char *cli_unix_socket_path(const char *addr)
{
    const char *rest = g_str_has_prefix(addr, "unix://") ? addr + strlen("unix://") : addr + strlen("unix:");
    if (*rest != '\0')
        return g_strdup(rest);
    const char *dir = g_getenv("FERRY_DIR");
    if (dir == NULL || *dir == '\0')
        dir = "/var/lib/ferry";
    return g_build_filename(dir, "unix.socket", NULL);
}

gboolean cli_config_ensure_client_cert(CliConfig *config, GError **error)
{
    if (g_mkdir_with_parents(config->dir, 0700) < 0) {
        ferry_set_error_errno(error, errno, "Failed to create %s", config->dir);
        return FALSE;
    }
    g_autofree char *cert = cli_config_path(config, "client.crt");
    g_autofree char *key = cli_config_path(config, "client.key");
    if (!ferry_tls_cert_ensure_files(FERRY_CERT_CLIENT, cert, key, error)) {
        g_prefix_error(error, "Failed to generate the client certificate: ");
        return FALSE;
    }
    return TRUE;
}

FerryClient *cli_config_connect(CliConfig *config, const char *remote, GError **error)
{
    json_t *entry = cli_config_remote(config, remote);
    if (entry == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "The remote \"%s\" doesn't exist", remote);
        return NULL;
    }
    const char *addr = ferry_json_get_string(entry, "addr");
    const char *protocol = ferry_json_get_string(entry, "protocol");
    if (protocol != NULL && g_strcmp0(protocol, "incus") != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Remote %s uses protocol %s, which ferry can't talk", remote, protocol);
        return NULL;
    }
    if (g_str_has_prefix(addr, "unix:")) {
        g_autofree char *socket = cli_unix_socket_path(addr);
        return ferry_client_new_unix(socket);
    }

    if (!cli_config_ensure_client_cert(config, error))
        return NULL;
    g_autofree char *cert_path = cli_config_path(config, "client.crt");
    g_autofree char *key_path = cli_config_path(config, "client.key");
    g_autoptr(GTlsCertificate) client_cert = ferry_tls_cert_load(cert_path, key_path, error);
    if (client_cert == NULL)
        return NULL;
    g_autofree char *server_path = cli_config_server_cert_path(config, remote);
    g_autoptr(GTlsCertificate) server_cert = ferry_tls_cert_load_public(server_path, error);
    if (server_cert == NULL) {
        g_prefix_error(error, "No trusted certificate for remote %s: ", remote);
        return NULL;
    }
    return ferry_client_new_https(addr, client_cert, server_cert, NULL, error);
}

json_t *cli_token_decode(const char *token, GError **error)
{
    g_autofree char *trimmed = g_strstrip(g_strdup(token));
    gsize length = 0;
    g_autofree guchar *raw = NULL;

    /* g_base64_decode accepts anything; check the alphabet first so that a typo is reported as such. */
    for (const char *c = trimmed; *c != '\0'; c++) {
        if (!g_ascii_isalnum(*c) && *c != '+' && *c != '/' && *c != '=') {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid trust token: not base64");
            return NULL;
        }
    }
    if (*trimmed == '\0') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid trust token: empty");
        return NULL;
    }
    raw = g_base64_decode(trimmed, &length);
    g_autoptr(json_t) decoded = ferry_json_parse((const char *)raw, length, NULL);
    if (decoded == NULL || !json_is_object(decoded)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid trust token: not a JSON object");
        return NULL;
    }
    const char *secret = ferry_json_get_string(decoded, "secret");
    const char *fingerprint = ferry_json_get_string(decoded, "fingerprint");
    json_t *addresses = json_object_get(decoded, "addresses");
    if (secret == NULL || *secret == '\0' || fingerprint == NULL || *fingerprint == '\0') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid trust token: no secret or fingerprint");
        return NULL;
    }
    if (!json_is_array(addresses)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid trust token: no addresses");
        return NULL;
    }
    gsize i;
    json_t *address;
    json_array_foreach(addresses, i, address)
    {
        if (!json_is_string(address)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid trust token: bad address");
            return NULL;
        }
    }
    return g_steal_pointer(&decoded);
}

char *cli_token_encode(const char *client_name, const char *fingerprint, json_t *addresses,
                       const char *secret, const char *expires_at)
{
    /* Field order and the zero time for "no expiry" are those of Incus's api.CertificateAddToken. */
    g_autoptr(json_t) token =
        json_pack("{s:s, s:s, s:O, s:s, s:s}", "client_name", client_name, "fingerprint", fingerprint,
                  "addresses", addresses, "secret", secret, "expires_at",
                  expires_at != NULL && *expires_at ? expires_at : FERRY_JSON_ZERO_TIME);
    g_autofree char *text = ferry_json_dump(token);
    return g_base64_encode((const guchar *)text, strlen(text));
}
