/* Who may talk to us: the trusted client certificates and one-time trust tokens (Incus's model). */
#pragma once

#include <jansson.h>
#include <libsoup/soup.h>

#include "daemon.h"
#include "operations.h"

G_BEGIN_DECLS

/* Is the HTTPS client's certificate in the trust store? Sets *fingerprint_out (may be NULL) either way when a
 * certificate was presented. */
gboolean ferry_trust_check_client(FerryDaemon *daemon, SoupServerMessage *msg, char **fingerprint_out);

/* Add a client certificate (PEM) under name; 409 when its fingerprint is already trusted. */
gboolean ferry_trust_add_certificate(FerryDaemon *daemon, const char *name, const char *pem, const char *type,
                                     GError **error);

/* Create a trust token for a future client called name: a token operation whose metadata carries what
 * `incus config trust add` turns into the printed token. */
FerryOperation *ferry_trust_create_token(FerryDaemon *daemon, const char *name, GError **error);

/* Redeem a token secret presented by an untrusted client: constant-time comparison against every pending
 * token; expired tokens fail. On success returns the client name the token was made for and forgets it. */
char *ferry_trust_redeem_token(FerryDaemon *daemon, const char *secret, GError **error);

/* Recreate the token operations of pending tokens after a restart. */
void ferry_trust_restore_tokens(FerryDaemon *daemon);

/* from plus an Incus expiry expression "<count><unit>": S seconds, M minutes, H hours, d days, w weeks,
 * m months, y years (lowercase s and h are taken too). NULL and a 400 error when the expression is not one. */
GDateTime *ferry_trust_expiry_after(GDateTime *from, const char *expression, GError **error);

/* Addresses a client can reach us on ("127.0.0.1:8443"), for tokens and GET /1.0. */
json_t *ferry_trust_server_addresses(FerryDaemon *daemon);

G_END_DECLS
