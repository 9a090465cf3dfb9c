#include "trust.h"

#include "error.h"
#include "server.h"
#include "json.h"
#include "operations.h"
#include "tls_cert.h"

#include <ifaddrs.h>
#include <netinet/in.h>

/* Tokens not redeemed within a day are useless; core.remote_token_expiry overrides (Incus's key). */
#define DEFAULT_TOKEN_EXPIRY_SECONDS (24 * 3600)

gboolean ferry_trust_check_client(FerryDaemon *daemon, SoupServerMessage *msg, char **fingerprint_out)
{
    GTlsCertificate *peer = ferry_server_peer_certificate(msg);
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

/* Append every global unicast address of this host in family (G_SOCKET_FAMILY_INVALID: both) as "ip:port". */
static void append_host_addresses(json_t *addresses, GSocketFamily family, guint port)
{
    struct ifaddrs *interfaces = NULL;
    if (getifaddrs(&interfaces) < 0)
        return;
    for (struct ifaddrs *entry = interfaces; entry != NULL; entry = entry->ifa_next) {
        if (entry->ifa_addr == NULL ||
            (entry->ifa_addr->sa_family != AF_INET && entry->ifa_addr->sa_family != AF_INET6))
            continue;
        gsize length = entry->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                                             : sizeof(struct sockaddr_in6);
        g_autoptr(GSocketAddress) native = g_socket_address_new_from_native(entry->ifa_addr, length);
        GInetAddress *ip = g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(native));
        if ((family != G_SOCKET_FAMILY_INVALID && g_inet_address_get_family(ip) != family) ||
            g_inet_address_get_is_loopback(ip) || g_inet_address_get_is_link_local(ip) ||
            g_inet_address_get_is_any(ip))
            continue;
        g_autofree char *text = g_inet_address_to_string(ip);
        json_array_append_new(addresses, g_inet_address_get_family(ip) == G_SOCKET_FAMILY_IPV6
                                             ? json_sprintf("[%s]:%u", text, port)
                                             : json_sprintf("%s:%u", text, port));
    }
    freeifaddrs(interfaces);
}

json_t *ferry_trust_server_addresses(FerryDaemon *daemon)
{
    json_t *addresses = json_array();
    const char *address = daemon->https_address;
    if (address == NULL || *address == '\0')
        return addresses;
    g_autofree char *host = NULL;
    guint port = 8443;
    if (address[0] == ':') {
        host = g_strdup("::");
        port = (guint)g_ascii_strtoull(address + 1, NULL, 10);
    } else {
        g_autoptr(GSocketConnectable) parsed = g_network_address_parse(address, 8443, NULL);
        if (parsed == NULL) {
            json_array_append_new(addresses, json_string(address));
            return addresses;
        }
        host = g_strdup(g_network_address_get_hostname(G_NETWORK_ADDRESS(parsed)));
        port = g_network_address_get_port(G_NETWORK_ADDRESS(parsed));
    }
    g_autoptr(GInetAddress) ip = g_inet_address_new_from_string(host);
    if (ip == NULL || !g_inet_address_get_is_any(ip)) {
        /* Always with the port: a bare "127.0.0.1" listens on 8443 and clients must be told so. */
        json_array_append_new(addresses, strchr(host, ':') != NULL ? json_sprintf("[%s]:%u", host, port)
                                                                    : json_sprintf("%s:%u", host, port));
        return addresses;
    }
    /* A wildcard listener is reached on the host's own addresses, as Incus lists them ("0.0.0.0" means IPv4
     * only, "::" both); loopback comes last so a token still works on this machine when it has no other. */
    gboolean ipv4_only = g_inet_address_get_family(ip) == G_SOCKET_FAMILY_IPV4;
    append_host_addresses(addresses, ipv4_only ? G_SOCKET_FAMILY_IPV4 : G_SOCKET_FAMILY_INVALID, port);
    json_array_append_new(addresses, json_sprintf("127.0.0.1:%u", port));
    return addresses;
}

GDateTime *ferry_trust_expiry_after(GDateTime *from, const char *expression, GError **error)
{
    const char *unit = expression;
    while (g_ascii_isdigit(*unit))
        unit++;
    g_autofree char *digits = g_strndup(expression, unit - expression);
    guint64 count = 0;
    if (unit == expression || unit[0] == '\0' || unit[1] != '\0' ||
        !g_ascii_string_to_unsigned(digits, 10, 0, 1000000, &count, NULL) ||
        strchr("SsMHhdwmy", *unit) == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid expiry expression \"%s\" (expected <count><unit>, unit one of S M H d w m y)",
                    expression);
        return NULL;
    }
    gint n = (gint)count;
    GDateTime *expiry;
    switch (*unit) {
    case 'S':
    case 's':
        expiry = g_date_time_add_seconds(from, n);
        break;
    case 'M':
        expiry = g_date_time_add_minutes(from, n);
        break;
    case 'H':
    case 'h':
        expiry = g_date_time_add_hours(from, n);
        break;
    case 'd':
        expiry = g_date_time_add_days(from, n);
        break;
    case 'w':
        expiry = g_date_time_add_weeks(from, n);
        break;
    case 'm': /* months, as in Incus: "15M" is fifteen minutes */
        expiry = g_date_time_add_months(from, n);
        break;
    default:
        expiry = g_date_time_add_years(from, n);
        break;
    }
    if (expiry == NULL) /* past the year 9999 */
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Expiry \"%s\" is too far in the future", expression);
    return expiry;
}

/* When a token made now expires, in unix seconds, rounded up so it lives at least as long as configured. */
static gint64 token_expires_at(FerryDaemon *daemon)
{
    g_autoptr(GDateTime) now = g_date_time_new_now_utc();
    g_autofree char *configured = ferry_db_config_get(daemon->db, "core.remote_token_expiry");
    g_autoptr(GDateTime) expires = NULL;
    if (configured != NULL && *configured != '\0')
        expires = ferry_trust_expiry_after(now, configured, NULL);
    if (expires == NULL)
        expires = g_date_time_add_seconds(now, DEFAULT_TOKEN_EXPIRY_SECONDS);
    return g_date_time_to_unix(expires) + (g_date_time_get_microsecond(expires) > 0 ? 1 : 0);
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
    gint64 expires_at = token_expires_at(daemon);
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
    if (json_integer_value(json_object_get(match, "expires_at")) * G_USEC_PER_SEC <= g_get_real_time()) {
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
