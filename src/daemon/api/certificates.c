/* /1.0/certificates: the trust store, and trust tokens. */
#include "api.h"

#include "error.h"
#include "server.h"
#include "events.h"
#include "json.h"
#include "names.h"
#include "tls_cert.h"
#include "trust.h"

static json_t *render_certificate(FerryDaemon *daemon, const char *fingerprint, GError **error)
{
    json_t *doc = ferry_db_get(daemon->db, FERRY_KIND_CERTIFICATE, "", "", fingerprint, error);
    if (doc != NULL)
        json_object_set_new(doc, "fingerprint", json_string(fingerprint));
    return doc;
}

FerryResponse *api_certificates_get(FerryRequest *request)
{
    g_autoptr(GPtrArray) names = ferry_db_list_names(request->daemon->db, FERRY_KIND_CERTIFICATE, "", "");
    json_t *list = json_array();
    for (guint i = 0; i < names->len; i++) {
        if (ferry_request_recursion(request) > 0)
            json_array_append_new(list, render_certificate(request->daemon, names->pdata[i], NULL));
        else
            json_array_append_new(list, json_sprintf("/1.0/certificates/%s", (char *)names->pdata[i]));
    }
    return ferry_response_sync(list);
}

/* The certificate of the request: the "certificate" field (base64 DER or PEM) or the TLS peer's. */
static char *request_certificate_pem(FerryRequest *request, GError **error)
{
    const char *given = ferry_json_get_string(request->body, "certificate");
    if (given != NULL && *given != '\0') {
        if (g_str_has_prefix(given, "-----BEGIN"))
            return g_strdup(given);
        gsize length = 0;
        g_autofree guint8 *der = g_base64_decode(given, &length);
        g_autofree char *base64 = g_base64_encode(der, length);
        GString *pem = g_string_new("-----BEGIN CERTIFICATE-----\n");
        gsize base64_length = strlen(base64);
        for (gsize offset = 0; offset < base64_length; offset += 64)
            g_string_append_printf(pem, "%.64s\n", base64 + offset);
        g_string_append(pem, "-----END CERTIFICATE-----\n");
        return g_string_free(pem, FALSE);
    }
    GTlsCertificate *peer = ferry_server_peer_certificate(request->msg);
    if (peer == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "No client certificate provided (send one in \"certificate\" or over TLS)");
        return NULL;
    }
    return ferry_tls_cert_to_pem(peer);
}

/* The secret inside a full trust token, or NULL when text is not one. */
static char *secret_of_token(const char *text)
{
    gsize length = 0;
    g_autofree guchar *decoded = g_base64_decode(text, &length);
    if (decoded == NULL || length == 0)
        return NULL;
    g_autoptr(json_t) token = ferry_json_parse((const char *)decoded, length, NULL);
    const char *secret = token != NULL ? ferry_json_get_string(token, "secret") : NULL;
    return g_strdup(secret);
}

FerryResponse *api_certificates_post(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    if (!request->trusted) {
        /* The one thing an untrusted client may do: redeem a token for its own TLS certificate. */
        const char *secret = ferry_json_get_string(request->body, "trust_token");
        if (secret == NULL)
            secret = ferry_json_get_string(request->body, "password"); /* older clients */
        if (secret == NULL || *secret == '\0')
            return ferry_response_error_new(403, "Forbidden: client certificate not trusted");
        /* The incus client sends the whole token (base64 JSON); older clients send only its secret. */
        g_autofree char *token_secret = secret_of_token(secret);
        if (token_secret != NULL)
            secret = token_secret;
        GTlsCertificate *peer = ferry_server_peer_certificate(request->msg);
        if (peer == NULL)
            return ferry_response_error_new(400, "A client certificate is required to redeem a trust token");
        g_autofree char *client_name = ferry_trust_redeem_token(daemon, secret, &error);
        if (client_name == NULL)
            return ferry_response_error(error);
        g_autofree char *pem = ferry_tls_cert_to_pem(peer);
        if (!ferry_trust_add_certificate(daemon, client_name, pem, "client", &error))
            return ferry_response_error(error);
        ferry_events_lifecycle(daemon->events, NULL, "certificate-created", "/1.0/certificates");
        return ferry_response_created(NULL, "/1.0/certificates");
    }

    if (request->body == NULL)
        return ferry_response_error_new(400, "Missing request body");
    const char *type = ferry_json_get_string(request->body, "type");
    if (type != NULL && *type != '\0' && !g_str_equal(type, "client"))
        return ferry_response_error_new(400, "Unsupported certificate type \"%s\" (only \"client\")", type);
    const char *name = ferry_json_get_string(request->body, "name");
    /* ferry has no project restrictions yet: a restricted certificate would silently get full access. */
    if (ferry_json_get_bool(request->body, "restricted", FALSE))
        return ferry_response_error_new(400, "Restricted certificates are not supported");

    if (ferry_json_get_bool(request->body, "token", FALSE)) {
        if (name == NULL || *name == '\0')
            return ferry_response_error_new(400, "A token needs the name of the client it is for");
        if (!ferry_validate_entity_name("client", name, &error))
            return ferry_response_error(error);
        if (daemon->https_address == NULL || *daemon->https_address == '\0')
            return ferry_response_error_new(400, "The server isn't listening on the network: set "
                                                 "core.https_address first");
        g_autoptr(FerryOperation) op = ferry_trust_create_token(daemon, name, &error);
        if (op == NULL)
            return ferry_response_error(error);
        return ferry_response_async(op);
    }

    g_autofree char *pem = request_certificate_pem(request, &error);
    if (pem == NULL)
        return ferry_response_error(error);
    if (!ferry_trust_add_certificate(daemon, name != NULL && *name != '\0' ? name : "client", pem, "client", &error))
        return ferry_response_error(error);
    ferry_events_lifecycle(daemon->events, NULL, "certificate-created", "/1.0/certificates");
    return ferry_response_created(NULL, "/1.0/certificates");
}

/* Certificates are addressed by a unique prefix of the fingerprint, as in Incus. */
static char *resolve_fingerprint(FerryDaemon *daemon, const char *prefix, GError **error)
{
    g_autoptr(GPtrArray) names = ferry_db_list_names(daemon->db, FERRY_KIND_CERTIFICATE, "", "");
    char *match = NULL;
    for (guint i = 0; i < names->len; i++) {
        if (!g_str_has_prefix(names->pdata[i], prefix))
            continue;
        if (match != NULL) {
            g_free(match);
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Certificate fingerprint \"%s\" is ambiguous", prefix);
            return NULL;
        }
        match = g_strdup(names->pdata[i]);
    }
    if (match == NULL)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Certificate \"%s\" not found", prefix);
    return match;
}

FerryResponse *api_certificate_get(FerryRequest *request)
{
    GError *error = NULL;
    g_autofree char *fingerprint =
        resolve_fingerprint(request->daemon, ferry_request_param(request, "fingerprint"), &error);
    if (fingerprint == NULL)
        return ferry_response_error(error);
    json_t *certificate = render_certificate(request->daemon, fingerprint, &error);
    return certificate != NULL ? ferry_response_sync(certificate) : ferry_response_error(error);
}

FerryResponse *api_certificate_put(FerryRequest *request)
{
    GError *error = NULL;
    FerryDaemon *daemon = request->daemon;
    g_autofree char *fingerprint = resolve_fingerprint(daemon, ferry_request_param(request, "fingerprint"), &error);
    if (fingerprint == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_CERTIFICATE, "", "", fingerprint, &error);
    if (doc == NULL)
        return ferry_response_error(error);
    if (request->body != NULL && ferry_json_get_bool(request->body, "restricted", FALSE))
        return ferry_response_error_new(400, "Restricted certificates are not supported");
    const char *name = request->body != NULL ? ferry_json_get_string(request->body, "name") : NULL;
    const char *description = request->body != NULL ? ferry_json_get_string(request->body, "description") : NULL;
    if (name != NULL) {
        if (!ferry_validate_entity_name("certificate", name, &error))
            return ferry_response_error(error);
        json_object_set_new(doc, "name", json_string(name));
    }
    if (description != NULL)
        json_object_set_new(doc, "description", json_string(description));
    if (!ferry_db_update(daemon->db, FERRY_KIND_CERTIFICATE, "", "", fingerprint, doc, &error))
        return ferry_response_error(error);
    return ferry_response_sync(NULL);
}

FerryResponse *api_certificate_delete(FerryRequest *request)
{
    GError *error = NULL;
    FerryDaemon *daemon = request->daemon;
    g_autofree char *fingerprint = resolve_fingerprint(daemon, ferry_request_param(request, "fingerprint"), &error);
    if (fingerprint == NULL || !ferry_db_delete(daemon->db, FERRY_KIND_CERTIFICATE, "", "", fingerprint, &error))
        return ferry_response_error(error);
    ferry_events_lifecycle(daemon->events, NULL, "certificate-deleted", "/1.0/certificates");
    return ferry_response_sync(NULL);
}
