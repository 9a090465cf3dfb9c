#include "tls_cert.h"

#include "error.h"

#include <arpa/inet.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <string.h>
#include <unistd.h>

/* Incus makes its certificates valid ten years of 365 days. */
#define CERT_VALIDITY_SECONDS ((time_t)10 * 365 * 24 * 3600)

G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_x509_crt_t, gnutls_x509_crt_deinit, NULL)
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_x509_privkey_t, gnutls_x509_privkey_deinit, NULL)
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_privkey_t, gnutls_privkey_deinit, NULL)

static gboolean gnutls_failed(int ret, const char *what, GError **error)
{
    if (ret >= 0)
        return FALSE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "%s: %s", what, gnutls_strerror(ret));
    return TRUE;
}

static char *datum_to_string(gnutls_datum_t *datum)
{
    char *text = g_strndup((const char *)datum->data, datum->size);
    gnutls_free(datum->data);
    datum->data = NULL;
    return text;
}

static gboolean add_san_ip(gnutls_x509_crt_t crt, int family, const char *text, GError **error)
{
    guint8 raw[16];
    if (inet_pton(family, text, raw) != 1)
        return TRUE;
    int ret = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, raw, family == AF_INET ? 4 : 16,
                                                   GNUTLS_FSAN_APPEND);
    return !gnutls_failed(ret, "Failed to add IP address to certificate", error);
}

gboolean ferry_tls_cert_generate(FerryCertKind kind, char **cert_pem_out, char **key_pem_out, GError **error)
{
    g_auto(gnutls_x509_privkey_t) key = NULL;
    g_auto(gnutls_x509_crt_t) crt = NULL;
    g_auto(gnutls_privkey_t) signer = NULL;
    int ret;

    if (gnutls_failed(gnutls_x509_privkey_init(&key), "Failed to initialise key", error))
        return FALSE;
    ret = gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP384R1),
                                       0);
    if (gnutls_failed(ret, "Failed to generate key", error))
        return FALSE;

    if (gnutls_failed(gnutls_x509_crt_init(&crt), "Failed to initialise certificate", error))
        return FALSE;

    guint8 serial[16];
    ret = gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof serial);
    if (gnutls_failed(ret, "Failed to generate serial number", error))
        return FALSE;
    serial[0] &= 0x7f; /* a DER INTEGER with the top bit set would be negative */
    serial[0] |= 0x01;

    const char *hostname = g_get_host_name();
    g_autofree char *common_name = g_strdup_printf("%s@%s", g_get_user_name(), hostname);
    time_t now = time(NULL);
    const char *org = "Linux Containers";

    ret = gnutls_x509_crt_set_version(crt, 3);
    if (ret >= 0)
        ret = gnutls_x509_crt_set_serial(crt, serial, sizeof serial);
    if (ret >= 0)
        ret = gnutls_x509_crt_set_activation_time(crt, now);
    if (ret >= 0)
        ret = gnutls_x509_crt_set_expiration_time(crt, now + CERT_VALIDITY_SECONDS);
    if (ret >= 0)
        ret = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, org, strlen(org));
    if (ret >= 0)
        ret = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, common_name,
                                            strlen(common_name));
    if (ret >= 0)
        ret = gnutls_x509_crt_set_key(crt, key);
    if (ret >= 0)
        ret = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE | GNUTLS_KEY_KEY_ENCIPHERMENT);
    if (ret >= 0)
        ret = gnutls_x509_crt_set_key_purpose_oid(
            crt, kind == FERRY_CERT_SERVER ? GNUTLS_KP_TLS_WWW_SERVER : GNUTLS_KP_TLS_WWW_CLIENT, 0);
    if (ret >= 0)
        ret = gnutls_x509_crt_set_basic_constraints(crt, 0, -1);
    if (gnutls_failed(ret, "Failed to fill in certificate", error))
        return FALSE;

    guint8 key_id[64];
    size_t key_id_size = sizeof key_id;
    ret = gnutls_x509_crt_get_key_id(crt, 0, key_id, &key_id_size);
    if (ret >= 0)
        ret = gnutls_x509_crt_set_subject_key_id(crt, key_id, key_id_size);
    if (gnutls_failed(ret, "Failed to set certificate key id", error))
        return FALSE;

    if (kind == FERRY_CERT_SERVER) {
        ret = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, hostname, strlen(hostname),
                                                   GNUTLS_FSAN_APPEND);
        if (gnutls_failed(ret, "Failed to add hostname to certificate", error))
            return FALSE;
        if (!add_san_ip(crt, AF_INET, "127.0.0.1", error) || !add_san_ip(crt, AF_INET6, "::1", error))
            return FALSE;
    }

    ret = gnutls_privkey_init(&signer);
    if (ret >= 0)
        ret = gnutls_privkey_import_x509(signer, key, 0);
    if (ret >= 0)
        ret = gnutls_x509_crt_privkey_sign(crt, crt, signer, GNUTLS_DIG_SHA384, 0);
    if (gnutls_failed(ret, "Failed to sign certificate", error))
        return FALSE;

    gnutls_datum_t cert_pem = {NULL, 0};
    gnutls_datum_t key_pem = {NULL, 0};
    if (gnutls_failed(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &cert_pem),
                      "Failed to export certificate", error))
        return FALSE;
    ret = gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &key_pem);
    if (gnutls_failed(ret, "Failed to export key", error)) {
        gnutls_free(cert_pem.data);
        return FALSE;
    }
    *cert_pem_out = datum_to_string(&cert_pem);
    *key_pem_out = datum_to_string(&key_pem);
    return TRUE;
}

gboolean ferry_tls_cert_generate_files(FerryCertKind kind, const char *cert_path, const char *key_path,
                                       GError **error)
{
    g_autofree char *cert_pem = NULL;
    g_autofree char *key_pem = NULL;

    if (!ferry_tls_cert_generate(kind, &cert_pem, &key_pem, error))
        return FALSE;
    /* g_file_set_contents_full creates the temporary file with the final mode, so the key is never
     * world-readable on disk. */
    if (!g_file_set_contents_full(key_path, key_pem, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, error)) {
        g_prefix_error(error, "Failed to write %s: ", key_path);
        return FALSE;
    }
    explicit_bzero(key_pem, strlen(key_pem));
    if (!g_file_set_contents_full(cert_path, cert_pem, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0644, error)) {
        g_prefix_error(error, "Failed to write %s: ", cert_path);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_tls_cert_ensure_files(FerryCertKind kind, const char *cert_path, const char *key_path,
                                     GError **error)
{
    if (g_file_test(cert_path, G_FILE_TEST_EXISTS) && g_file_test(key_path, G_FILE_TEST_EXISTS))
        return TRUE;
    return ferry_tls_cert_generate_files(kind, cert_path, key_path, error);
}

char *ferry_tls_cert_fingerprint_der(const guint8 *der, gsize length)
{
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, der, length);
}

static gboolean import_pem(gnutls_x509_crt_t *crt_out, const char *pem, gsize length, GError **error)
{
    g_auto(gnutls_x509_crt_t) crt = NULL;
    gnutls_datum_t datum = {(unsigned char *)pem, (unsigned int)length};

    if (gnutls_failed(gnutls_x509_crt_init(&crt), "Failed to initialise certificate", error))
        return FALSE;
    int ret = gnutls_x509_crt_import(crt, &datum, GNUTLS_X509_FMT_PEM);
    if (ret < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid certificate: %s", gnutls_strerror(ret));
        return FALSE;
    }
    *crt_out = g_steal_pointer(&crt);
    return TRUE;
}

char *ferry_tls_cert_fingerprint_pem(const char *pem, gssize length, GError **error)
{
    g_auto(gnutls_x509_crt_t) crt = NULL;
    gnutls_datum_t der = {NULL, 0};

    if (!import_pem(&crt, pem, length < 0 ? strlen(pem) : (gsize)length, error))
        return NULL;
    if (gnutls_failed(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &der), "Failed to export certificate",
                      error))
        return NULL;
    char *fingerprint = ferry_tls_cert_fingerprint_der(der.data, der.size);
    gnutls_free(der.data);
    return fingerprint;
}

char *ferry_tls_cert_fingerprint(GTlsCertificate *cert)
{
    g_autoptr(GByteArray) der = NULL;

    g_object_get(cert, "certificate", &der, NULL);
    if (der == NULL)
        return NULL;
    return ferry_tls_cert_fingerprint_der(der->data, der->len);
}

GTlsCertificate *ferry_tls_cert_load(const char *cert_path, const char *key_path, GError **error)
{
    GTlsCertificate *cert = g_tls_certificate_new_from_files(cert_path, key_path, error);
    if (cert == NULL)
        g_prefix_error(error, "Failed to load certificate %s: ", cert_path);
    return cert;
}

GTlsCertificate *ferry_tls_cert_new_from_pem(const char *pem, GError **error)
{
    GTlsCertificate *cert = g_tls_certificate_new_from_pem(pem, -1, error);
    if (cert == NULL)
        g_prefix_error(error, "Invalid certificate: ");
    return cert;
}

GTlsCertificate *ferry_tls_cert_load_public(const char *cert_path, GError **error)
{
    g_autofree char *pem = NULL;

    if (!g_file_get_contents(cert_path, &pem, NULL, error))
        return NULL;
    GTlsCertificate *cert = g_tls_certificate_new_from_pem(pem, -1, error);
    if (cert == NULL)
        g_prefix_error(error, "Failed to load certificate %s: ", cert_path);
    return cert;
}

char *ferry_tls_cert_to_pem(GTlsCertificate *cert)
{
    char *pem = NULL;
    g_object_get(cert, "certificate-pem", &pem, NULL);
    return pem;
}

gboolean ferry_tls_cert_info(const char *pem, char **common_name_out, gint64 *not_before_out,
                             gint64 *not_after_out, GError **error)
{
    g_auto(gnutls_x509_crt_t) crt = NULL;

    if (!import_pem(&crt, pem, strlen(pem), error))
        return FALSE;
    if (common_name_out != NULL) {
        char buf[256];
        size_t size = sizeof buf;
        if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &size) >= 0)
            *common_name_out = g_strndup(buf, size);
        else
            *common_name_out = g_strdup("");
    }
    if (not_before_out != NULL)
        *not_before_out = gnutls_x509_crt_get_activation_time(crt);
    if (not_after_out != NULL)
        *not_after_out = gnutls_x509_crt_get_expiration_time(crt);
    return TRUE;
}
