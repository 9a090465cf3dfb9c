/* ferry trusts no certificate authority: after ferry_tls_trust_no_ca(), new TLS connections start with an
 * empty database (not the system CA bundle, which glib-networking would otherwise parse for each one), and that
 * database vouches for no certificate. */
#include "tls_cert.h"
#include "tls_trust.h"

#include <gio/gio.h>

static void test_new_connections_get_the_empty_database(void)
{
    ferry_tls_trust_no_ca();
    GTlsBackend *backend = g_tls_backend_get_default();
    g_assert_true(g_tls_backend_supports_tls(backend));
    g_autoptr(GTlsDatabase) database = g_tls_backend_get_default_database(backend);
    g_assert_nonnull(database);
    g_assert_cmpstr(G_OBJECT_TYPE_NAME(database), ==, "FerryNoCaDatabase");

    /* A client connection over any stream starts with that database. */
    g_autoptr(GInputStream) input = g_memory_input_stream_new();
    g_autoptr(GOutputStream) output = g_memory_output_stream_new_resizable();
    g_autoptr(GIOStream) base = g_simple_io_stream_new(input, output);
    g_autoptr(GError) error = NULL;
    g_autoptr(GIOStream) tls = g_tls_client_connection_new(base, NULL, &error);
    g_assert_no_error(error);
    g_assert_true(g_tls_connection_get_database(G_TLS_CONNECTION(tls)) == database);
}

static void test_vouches_for_nothing(void)
{
    ferry_tls_trust_no_ca();
    g_autoptr(GTlsDatabase) database = g_tls_backend_get_default_database(g_tls_backend_get_default());
    g_autofree char *cert_pem = NULL, *key_pem = NULL;
    g_autoptr(GError) error = NULL;
    g_assert_true(ferry_tls_cert_generate(FERRY_CERT_SERVER, &cert_pem, &key_pem, &error));
    g_autoptr(GTlsCertificate) cert = g_tls_certificate_new_from_pem(cert_pem, -1, &error);
    g_assert_no_error(error);
    GTlsCertificateFlags flags = g_tls_database_verify_chain(database, cert, G_TLS_DATABASE_PURPOSE_AUTHENTICATE_SERVER,
                                                             NULL, NULL, G_TLS_DATABASE_VERIFY_NONE, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(flags, ==, G_TLS_CERTIFICATE_UNKNOWN_CA);
    g_assert_null(g_tls_database_lookup_certificate_issuer(database, cert, NULL, G_TLS_DATABASE_LOOKUP_NONE, NULL,
                                                           &error));
    g_assert_no_error(error);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/tls_trust/new-connections", test_new_connections_get_the_empty_database);
    g_test_add_func("/tls_trust/vouches-for-nothing", test_vouches_for_nothing);
    return g_test_run();
}
