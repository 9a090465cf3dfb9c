#include "trust.h"

#include "error.h"
#include "json.h"
#include "operations.h"
#include "tls_cert.h"

/* Tokens not redeemed within a day are useless; core.remote_token_expiry overrides (Incus's key). */
#define DEFAULT_TOKEN_EXPIRY_SECONDS (24 * 3600)

gboolean ferry_trust_check_client(FerryDaemon *daemon, SoupServerMessage *msg, char **fingerprint_out)
{
    GTlsCertificate *peer = soup_server_message_get_tls_peer_certificate(msg);
    if (peer == NULL)
        return FALSE;
    g_autofree char *fingerprint = ferry_tls_cert_fingerprint(peer);
    gboolean trusted = ferry_db_exists(daemon->db, FERRY_KIND_CERTIFICATE, "", "", fingerprint);
    if (fingerprint_out != NULL)
        *fingerprint_out = g_steal_pointer(&fingerprint);
    return trusted;
}

gboolean ferry_trust_add_certificate(FerryDaemon *daemon, const char *name, const char *pem, const char *type,
                                     GError **error)
{
    g_autofree char *fingerprint = ferry_tls_cert_fingerprint_pem(pem, -1, error);
    if (fingerprint == NULL) {
        g_prefix_error(error, "Invalid certificate: ");
        if (*error != NULL)
            (*error)->code = FERRY_ERROR_INVALID;
        return FALSE;
    }
    if (ferry_db_exists(daemon->db, FERRY_KIND_CERTIFICATE, "", "", fingerprint)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Certificate already in trust store");
        return FALSE;
    }
    g_autoptr(json_t) doc = json_pack("{s:s, s:s, s:b, s:[], s:s, s:s}", "name", name, "type",
                                      type != NULL ? type : "client", "restricted", FALSE, "projects",
                                      "certificate", pem, "description", "");
    return ferry_db_create(daemon->db, FERRY_KIND_CERTIFICATE, "", "", fingerprint, doc, error);
}

json_t *ferry_trust_server_addresses(FerryDaemon *daemon)
{
    json_t *addresses = json_array();
    if (daemon->https_address == NULL || *daemon->https_address == '\0')
        return addresses;
    const char *address = daemon->https_address;
    /* A wildcard listener (":8443", "0.0.0.0:8443") is reachable on loopback at least. */
    if (address[0] == ':')
        json_array_append_new(addresses, json_sprintf("127.0.0.1%s", address));
    else if (g_str_has_prefix(address, "0.0.0.0:"))
        json_array_append_new(addresses, json_sprintf("127.0.0.1%s", address + 7));
    else if (g_str_has_prefix(address, "[::]:"))
        json_array_append_new(addresses, json_sprintf("[::1]%s", address + 4));
    else
        json_array_append_new(addresses, json_string(address));
    return addresses;
}

static gint64 token_expiry_seconds(FerryDaemon *daemon)
{
    g_autofree char *configured = ferry_db_config_get(daemon->db, "core.remote_token_expiry");
    if (configured == NULL || *configured == '\0')
        return DEFAULT_TOKEN_EXPIRY_SECONDS;
    /* Incus takes Go-like durations; accept "<n>s|m|h|d". */
    char *end = NULL;
    gint64 value = g_ascii_strtoll(configured, &end, 10);
    switch (end != NULL ? *end : 0) {
    case 'm':
        return value * 60;
    case 'h':
        return value * 3600;
    case 'd':
        return value * 86400;
    default:
        return value;
    }
}

static json_t *token_metadata(FerryDaemon *daemon, json_t *doc)
{
    g_autofree char *expires = ferry_json_timestamp(json_integer_value(json_object_get(doc, "expires_at")) *
                                                    G_USEC_PER_SEC);
    return json_pack("{s:{s:s, s:s}, s:s, s:s, s:O, s:s, s:s}", "request", "name",
                     ferry_json_get_string(doc, "name"), "type", "client", "clientName",
                     ferry_json_get_string(doc, "name"), "fingerprint", daemon->server_fingerprint, "addresses",
                     json_object_get(doc, "addresses"), "secret", ferry_json_get_string(doc, "secret"), "expiresAt",
                     expires);
}

static FerryOperation *token_operation(FerryDaemon *daemon, json_t *doc)
{
    FerryOperation *op = ferry_operation_new(daemon, FERRY_OPERATION_TOKEN, "default", "Executing operation",
                                             NULL, token_metadata(daemon, doc), NULL, NULL, NULL);
    return op;
}

FerryOperation *ferry_trust_create_token(FerryDaemon *daemon, const char *name, GError **error)
{
    g_autofree char *secret = ferry_random_secret();
    gint64 expires_at = g_get_real_time() / G_USEC_PER_SEC + token_expiry_seconds(daemon);
    g_autoptr(json_t) doc = json_pack("{s:s, s:s, s:I, s:o}", "name", name, "secret", secret, "expires_at",
                                      (json_int_t)expires_at, "addresses", ferry_trust_server_addresses(daemon));
    FerryOperation *op = token_operation(daemon, doc);
    /* The row is keyed by the operation id so revoking the operation revokes the token. */
    if (!ferry_db_create(daemon->db, FERRY_KIND_TOKEN, "", "", ferry_operation_get_id(op), doc, error)) {
        ferry_operation_unref(op);
        return NULL;
    }
    ferry_operation_start(op);
    return op;
}

char *ferry_trust_redeem_token(FerryDaemon *daemon, const char *secret, GError **error)
{
    g_autoptr(json_t) tokens = ferry_db_list(daemon->db, FERRY_KIND_TOKEN, "", "");
    gint64 now = g_get_real_time() / G_USEC_PER_SEC;
    json_t *match = NULL;
    size_t index;
    json_t *token;
    /* Look at every token, whatever matched, so timing reveals nothing about the secrets. */
    json_array_foreach(tokens, index, token) {
        if (ferry_secret_equal(ferry_json_get_string(token, "secret"), secret) && match == NULL)
            match = token;
    }
    if (match == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_FORBIDDEN, "No matching trust token");
        return NULL;
    }
    const char *id = ferry_json_get_string(match, "name"); /* the row name is the operation id */
    g_autoptr(json_t) row = ferry_db_get(daemon->db, FERRY_KIND_TOKEN, "", "", id, NULL);
    ferry_db_delete(daemon->db, FERRY_KIND_TOKEN, "", "", id, NULL);
    g_autoptr(FerryOperation) op = ferry_operations_lookup(daemon->operations, id);
    if (json_integer_value(json_object_get(match, "expires_at")) < now) {
        if (op != NULL)
            ferry_operation_finish(op, FALSE, "Token expired");
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_FORBIDDEN, "Trust token has expired");
        return NULL;
    }
    if (op != NULL)
        ferry_operation_finish(op, TRUE, NULL);
    return g_strdup(row != NULL ? ferry_json_get_string(row, "name") : "client");
}

void ferry_trust_restore_tokens(FerryDaemon *daemon)
{
    g_autoptr(json_t) tokens = ferry_db_list(daemon->db, FERRY_KIND_TOKEN, "", "");
    size_t index;
    json_t *token;
    json_array_foreach(tokens, index, token) {
        /* The listed document has "name" overwritten by the row name (operation id); reload the body. */
        const char *id = ferry_json_get_string(token, "name");
        g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_TOKEN, "", "", id, NULL);
        if (doc == NULL)
            continue;
        g_autoptr(FerryOperation) op = token_operation(daemon, doc);
        /* Old operation ids cannot be reused, so the row moves to the new operation's id. */
        ferry_db_rename(daemon->db, FERRY_KIND_TOKEN, "", "", id, ferry_operation_get_id(op), NULL);
        ferry_operation_start(op);
    }
}
