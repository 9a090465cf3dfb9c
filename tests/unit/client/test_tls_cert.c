/* Self-signed certificates: what they hold, fingerprints, files. */
#include "tls_cert.h"

#include <glib/gstdio.h>
#include <gnutls/x509.h>
#include <string.h>
#include <sys/stat.h>

static gnutls_x509_crt_t import(const char *pem)
{
    gnutls_x509_crt_t crt;
    gnutls_datum_t datum = {(unsigned char *)pem, (unsigned int)strlen(pem)};
    g_assert_cmpint(gnutls_x509_crt_init(&crt), ==, 0);
    g_assert_cmpint(gnutls_x509_crt_import(crt, &datum, GNUTLS_X509_FMT_PEM), ==, 0);
    return crt;
}

static gboolean has_purpose(gnutls_x509_crt_t crt, const char *oid)
{
    for (unsigned i = 0;; i++) {
        char buf[128];
        size_t size = sizeof buf;
        if (gnutls_x509_crt_get_key_purpose_oid(crt, i, buf, &size, NULL) < 0)
            return FALSE;
        if (strcmp(buf, oid) == 0)
            return TRUE;
    }
}

static void test_generate_kinds(void)
{
    for (int kind = FERRY_CERT_CLIENT; kind <= FERRY_CERT_SERVER; kind++) {
        g_autofree char *cert = NULL, *key = NULL;
        g_autoptr(GError) error = NULL;
        g_assert_true(ferry_tls_cert_generate(kind, &cert, &key, &error));
        g_assert_no_error(error);
        g_assert_true(g_str_has_prefix(cert, "-----BEGIN CERTIFICATE-----"));
        g_assert_true(g_str_has_prefix(key, "-----BEGIN EC PRIVATE KEY-----"));

        gnutls_x509_crt_t crt = import(cert);
        unsigned bits = 0;
        g_assert_cmpint(gnutls_x509_crt_get_pk_algorithm(crt, &bits), ==, GNUTLS_PK_ECDSA);
        g_assert_cmpint(gnutls_x509_crt_get_signature_algorithm(crt), ==, GNUTLS_SIGN_ECDSA_SHA384);
        time_t lifetime = gnutls_x509_crt_get_expiration_time(crt) - gnutls_x509_crt_get_activation_time(crt);
        g_assert_cmpint(lifetime, ==, (time_t)10 * 365 * 24 * 3600);
        if (kind == FERRY_CERT_SERVER) {
            g_assert_true(has_purpose(crt, GNUTLS_KP_TLS_WWW_SERVER));
            char san[256];
            size_t size = sizeof san;
            unsigned type = 0;
            g_assert_cmpint(gnutls_x509_crt_get_subject_alt_name2(crt, 0, san, &size, &type, NULL), >=, 0);
            g_assert_cmpint(type, ==, GNUTLS_SAN_DNSNAME);
            size = sizeof san;
            g_assert_cmpint(gnutls_x509_crt_get_subject_alt_name2(crt, 1, san, &size, &type, NULL), >=, 0);
            g_assert_cmpint(type, ==, GNUTLS_SAN_IPADDRESS);
            g_assert_cmpuint(size, ==, 4);
            g_assert_cmpmem(san, 4, "\x7f\x00\x00\x01", 4);
        } else {
            g_assert_true(has_purpose(crt, GNUTLS_KP_TLS_WWW_CLIENT));
            g_assert_false(has_purpose(crt, GNUTLS_KP_TLS_WWW_SERVER));
        }
        gnutls_x509_crt_deinit(crt);

        g_autofree char *common_name = NULL;
        g_assert_true(ferry_tls_cert_info(cert, &common_name, NULL, NULL, &error));
        g_autofree char *expected = g_strdup_printf("%s@%s", g_get_user_name(), g_get_host_name());
        g_assert_cmpstr(common_name, ==, expected);
    }
}

static void test_fingerprints_agree(void)
{
    g_autofree char *cert = NULL, *key = NULL;
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_tls_cert_generate(FERRY_CERT_SERVER, &cert, &key, &error));

    g_autofree char *from_pem = ferry_tls_cert_fingerprint_pem(cert, -1, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(strlen(from_pem), ==, 64);
    for (const char *c = from_pem; *c; c++)
        g_assert_true(g_ascii_isdigit(*c) || (*c >= 'a' && *c <= 'f'));

    g_autoptr(GTlsCertificate) tls = ferry_tls_cert_new_from_pem(cert, &error);
    g_assert_no_error(error);
    g_autofree char *from_tls = ferry_tls_cert_fingerprint(tls);
    g_assert_cmpstr(from_pem, ==, from_tls);

    g_autoptr(GByteArray) der = NULL;
    g_object_get(tls, "certificate", &der, NULL);
    g_autofree char *from_der = ferry_tls_cert_fingerprint_der(der->data, der->len);
    g_assert_cmpstr(from_der, ==, from_pem);

    g_autofree char *round_trip = ferry_tls_cert_to_pem(tls);
    g_autofree char *again = ferry_tls_cert_fingerprint_pem(round_trip, -1, &error);
    g_assert_cmpstr(again, ==, from_pem);
}

static void test_bad_pem(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *fp = ferry_tls_cert_fingerprint_pem("-----BEGIN CERTIFICATE-----\nnope\n", -1, &error);
    g_assert_null(fp);
    g_assert_error(error, g_quark_from_static_string("ferry-error-quark"), 400);
}

static void test_files(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("ferry-cert-XXXXXX", &error);
    g_autofree char *cert_path = g_build_filename(dir, "client.crt", NULL);
    g_autofree char *key_path = g_build_filename(dir, "client.key", NULL);

    g_assert_true(ferry_tls_cert_ensure_files(FERRY_CERT_CLIENT, cert_path, key_path, &error));
    g_assert_no_error(error);
    struct stat st;
    g_assert_cmpint(stat(key_path, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 0777, ==, 0600);
    g_assert_cmpint(stat(cert_path, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 0777, ==, 0644);

    g_autoptr(GTlsCertificate) loaded = ferry_tls_cert_load(cert_path, key_path, &error);
    g_assert_no_error(error);
    g_autofree char *first = ferry_tls_cert_fingerprint(loaded);

    /* A second ensure keeps the existing pair. */
    g_assert_true(ferry_tls_cert_ensure_files(FERRY_CERT_CLIENT, cert_path, key_path, &error));
    g_autoptr(GTlsCertificate) public_only = ferry_tls_cert_load_public(cert_path, &error);
    g_assert_no_error(error);
    g_autofree char *second = ferry_tls_cert_fingerprint(public_only);
    g_assert_cmpstr(first, ==, second);

    g_unlink(cert_path);
    g_unlink(key_path);
    g_rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/tls_cert/generate", test_generate_kinds);
    g_test_add_func("/tls_cert/fingerprints", test_fingerprints_agree);
    g_test_add_func("/tls_cert/bad-pem", test_bad_pem);
    g_test_add_func("/tls_cert/files", test_files);
    return g_test_run();
}
