/* The client's configuration: $FERRY_CONF (default ~/.config/ferry) with config.yml, the client certificate
 * and the pinned server certificates, as Incus keeps ~/.config/incus.
 *
 * config.yml:
 *   default-remote: local
 *   remotes:
 *     local: {addr: "unix://", protocol: incus, public: false}
 *     b:     {addr: "https://10.0.0.2:8443", protocol: incus, public: false, project: default}
 * Unknown keys are kept. The remote "local" is always there: the daemon on $FERRY_DIR/unix.socket. */
#pragma once

#include "client.h"

#include <glib.h>
#include <jansson.h>

G_BEGIN_DECLS

typedef struct {
    char *dir;
    json_t *doc; /* the whole config.yml, with default-remote and remotes always present */
} CliConfig;

/* The configuration directory: $FERRY_CONF, else ~/.config/ferry. */
char *cli_config_default_dir(void);
/* Load dir/config.yml; a missing file is the default configuration. */
CliConfig *cli_config_load(const char *dir, GError **error);
CliConfig *cli_config_load_text(const char *dir, const char *yaml_text, GError **error);
/* Write dir/config.yml (creating dir, mode 0700). */
gboolean cli_config_save(CliConfig *config, GError **error);
char *cli_config_to_yaml(CliConfig *config, GError **error);
void cli_config_free(CliConfig *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CliConfig, cli_config_free)

const char *cli_config_default_remote(CliConfig *config);
/* The remote's entry (borrowed) or NULL. */
json_t *cli_config_remote(CliConfig *config, const char *name);
gboolean cli_config_remote_is_static(const char *name);
/* dir/<file> */
char *cli_config_path(CliConfig *config, const char *file);
/* dir/servercerts/<remote>.crt */
char *cli_config_server_cert_path(CliConfig *config, const char *remote);

/* "[<remote>:]<name>": the remote must exist; without one, the default remote. */
gboolean cli_config_parse_remote(CliConfig *config, const char *raw, char **remote_out, char **name_out,
                                 GError **error);
/* "c1/snap0" → "c1", "snap0"; "c1" → "c1", NULL. */
void cli_split_snapshot(const char *name, char **instance_out, char **snapshot_out);

/* The unix socket of a "unix://" or "unix:///path" address ($FERRY_DIR/unix.socket for the bare form). */
char *cli_unix_socket_path(const char *addr);

/* Generate client.crt/client.key in the config dir unless present. */
gboolean cli_config_ensure_client_cert(CliConfig *config, GError **error);
/* A client for the named remote (without project). */
FerryClient *cli_config_connect(CliConfig *config, const char *remote, GError **error);

/* Incus's trust token: base64 of {"client_name","fingerprint","addresses","secret","expires_at"}.
 * Returns the decoded object after checking that the fields are there. */
json_t *cli_token_decode(const char *token, GError **error);
/* Encode an operation's token metadata as `incus config trust add` prints it. */
char *cli_token_encode(const char *client_name, const char *fingerprint, json_t *addresses,
                       const char *secret, const char *expires_at);

G_END_DECLS
