/* The byte copier behind `ferryd netcat`, rsync's remote shell on the sending side: rsync talks to the
 * helper's stdin/stdout, the helper relays to a socket inherited from ferryd. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Relay in_fd -> sock_fd and sock_fd -> out_fd until the sock_fd direction has ended (delivered and out_fd
 * half-closed) or out_fd's reader is gone (rsync exited); what in_fd already holds is then passed on and
 * sock_fd half-closed. The end of in_fd half-closes sock_fd (shutdown SHUT_WR) once everything read is
 * delivered. in_fd and out_fd may be the same socket. */
gboolean ferry_netcat_bridge(int in_fd, int out_fd, int sock_fd, GError **error);

G_END_DECLS
