/* The byte copier behind `ferryd netcat`, rsync's remote shell on the sending side: rsync talks to the
 * helper's stdin/stdout, the helper relays to a socket inherited from ferryd. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Relay in_fd -> sock_fd and sock_fd -> out_fd until both directions have ended. The end of in_fd
 * half-closes sock_fd (shutdown SHUT_WR) once everything read is delivered; the end of sock_fd half-closes
 * out_fd. When out_fd's reader is gone (rsync exited) what still arrives for it is dropped, but in_fd is
 * drained first so rsync's last bytes reach the socket. in_fd and out_fd may be the same socket. */
gboolean ferry_netcat_bridge(int in_fd, int out_fd, int sock_fd, GError **error);

G_END_DECLS
