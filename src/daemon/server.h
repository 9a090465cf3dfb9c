/* The HTTP side: the root-only unix socket and, when configured, HTTPS with client certificates. */
#pragma once

#include <libsoup/soup.h>

#include "daemon.h"

G_BEGIN_DECLS

SoupServer *ferry_server_new_unix(FerryDaemon *daemon, const char *socket_path, GError **error);
SoupServer *ferry_server_new_https(FerryDaemon *daemon, const char *address, GError **error);

/* Upgrade msg to a websocket (server side) after the caller's own checks. ready runs on the main thread once
 * the 101 response is written; it gets a borrowed connection (ref it to keep it). The handler then returns
 * ferry_response_handled(). On TRUE, user_data belongs to the upgrade: destroy (may be NULL) runs once, after
 * ready, or without it when the client goes away before the 101 is out. On FALSE the caller keeps it. */
typedef void (*FerryWebsocketReadyFunc)(SoupWebsocketConnection *connection, gpointer user_data);
gboolean ferry_server_accept_websocket(SoupServerMessage *msg, FerryWebsocketReadyFunc ready, gpointer user_data,
                                       GDestroyNotify destroy, GError **error);

/* The same upgrade, handing over the raw connection (borrowed: ref it) for ferry's own blocking websocket
 * framing on a worker thread (migration data channels). */
typedef void (*FerryStreamReadyFunc)(GIOStream *stream, gpointer user_data);
gboolean ferry_server_accept_stream(SoupServerMessage *msg, FerryStreamReadyFunc ready, gpointer user_data,
                                    GDestroyNotify destroy, GError **error);

/* The TLS client certificate of the connection msg arrived on (borrowed; NULL when none). */
GTlsCertificate *ferry_server_peer_certificate(SoupServerMessage *msg);

G_END_DECLS
