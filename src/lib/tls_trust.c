#include "tls_trust.h"

#include <gio/gio.h>

/* A GTlsDatabase that holds no certificate: nothing it is asked to verify has a known issuer. */
typedef struct {
    GTlsDatabase parent_instance;
} FerryNoCaDatabase;

typedef struct {
    GTlsDatabaseClass parent_class;
} FerryNoCaDatabaseClass;

G_DEFINE_TYPE(FerryNoCaDatabase, ferry_no_ca_database, G_TYPE_TLS_DATABASE)

static GTlsCertificateFlags verify_chain(GTlsDatabase *database, GTlsCertificate *chain, const char *purpose,
                                         GSocketConnectable *identity, GTlsInteraction *interaction,
                                         GTlsDatabaseVerifyFlags flags, GCancellable *cancellable, GError **error)
{
    if (g_cancellable_set_error_if_cancelled(cancellable, error))
        return G_TLS_CERTIFICATE_GENERIC_ERROR;
    return G_TLS_CERTIFICATE_UNKNOWN_CA;
}

static GTlsCertificate *lookup_certificate_issuer(GTlsDatabase *database, GTlsCertificate *certificate,
                                                  GTlsInteraction *interaction, GTlsDatabaseLookupFlags flags,
                                                  GCancellable *cancellable, GError **error)
{
    return NULL;
}

static GList *lookup_certificates_issued_by(GTlsDatabase *database, GByteArray *issuer_raw_dn,
                                            GTlsInteraction *interaction, GTlsDatabaseLookupFlags flags,
                                            GCancellable *cancellable, GError **error)
{
    return NULL;
}

static void ferry_no_ca_database_class_init(FerryNoCaDatabaseClass *klass)
{
    GTlsDatabaseClass *database_class = G_TLS_DATABASE_CLASS(klass);
    database_class->verify_chain = verify_chain;
    database_class->lookup_certificate_issuer = lookup_certificate_issuer;
    database_class->lookup_certificates_issued_by = lookup_certificates_issued_by;
}

static void ferry_no_ca_database_init(FerryNoCaDatabase *database)
{
}

void ferry_tls_trust_no_ca(void)
{
    static gsize done = 0;
    if (!g_once_init_enter(&done))
        return;
    GTlsBackend *backend = g_tls_backend_get_default();
    if (g_tls_backend_supports_tls(backend)) {
        g_autoptr(GTlsDatabase) database = g_object_new(ferry_no_ca_database_get_type(), NULL);
        g_tls_backend_set_default_database(backend, database);
    }
    g_once_init_leave(&done, 1);
}
