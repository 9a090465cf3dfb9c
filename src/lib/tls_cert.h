/* Self-signed TLS certificates as Incus makes them, and SHA-256 fingerprints.
 *
 * Certificates are ECDSA P-384 signed with SHA-384, valid ten years, subject O=Linux Containers,
 * CN=<user>@<hostname>. Server certificates carry the serverAuth purpose and subject alternative names
 * for the hostname, 127.0.0.1 and ::1; client certificates carry clientAuth. A fingerprint is the lowercase
 * hex SHA-256 of the DER encoding, the form Incus shows and stores. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef enum {
    FERRY_CERT_CLIENT,
    FERRY_CERT_SERVER,
} FerryCertKind;

/* A new certificate and its private key, both PEM (key in SEC1 "EC PRIVATE KEY" form). */
gboolean ferry_tls_cert_generate(FerryCertKind kind, char **cert_pem_out, char **key_pem_out, GError **error);

/* Generate and write cert_path (0644) and key_path (0600); each file is written atomically and the key is
 * never readable by others, even for a moment. Parent directories must exist. */
gboolean ferry_tls_cert_generate_files(FerryCertKind kind, const char *cert_path, const char *key_path,
                                       GError **error);

/* Generate the pair unless both files exist already. */
gboolean ferry_tls_cert_ensure_files(FerryCertKind kind, const char *cert_path, const char *key_path,
                                     GError **error);

/* Fingerprint of DER bytes. */
char *ferry_tls_cert_fingerprint_der(const guint8 *der, gsize length);
/* Fingerprint of the first certificate of a PEM text (length -1: NUL-terminated). */
char *ferry_tls_cert_fingerprint_pem(const char *pem, gssize length, GError **error);
/* Fingerprint of a GTlsCertificate (its DER). */
char *ferry_tls_cert_fingerprint(GTlsCertificate *cert);

/* A certificate with its key (for a TLS client or server) from two PEM files. */
GTlsCertificate *ferry_tls_cert_load(const char *cert_path, const char *key_path, GError **error);
/* A certificate alone (a pinned peer certificate) from a PEM file or text. */
GTlsCertificate *ferry_tls_cert_load_public(const char *cert_path, GError **error);
GTlsCertificate *ferry_tls_cert_new_from_pem(const char *pem, GError **error);

/* The PEM text of a certificate (certificate only, no key). */
char *ferry_tls_cert_to_pem(GTlsCertificate *cert);

/* Subject common name and validity (unix seconds) of a PEM certificate; any out argument may be NULL. */
gboolean ferry_tls_cert_info(const char *pem, char **common_name_out, gint64 *not_before_out,
                             gint64 *not_after_out, GError **error);

G_END_DECLS
