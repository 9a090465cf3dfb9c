/* ferry trusts no certificate authority: every peer is pinned by its certificate (remotes, cluster members,
 * migration sources), and every TLS connection it makes is given no CA database. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Make an empty database the process's default TLS database (once; later calls do nothing). glib-networking
 * builds the default database for each new TLS connection before ferry can say it wants none, and the system
 * one means parsing the whole CA bundle: about 7 ms per connection here, a tenth of a small copy's time over a
 * dozen connections. The HTTPS client and the websocket dial call it before their first connection; the
 * daemon calls it at start, before it accepts any. */
void ferry_tls_trust_no_ca(void);

G_END_DECLS
