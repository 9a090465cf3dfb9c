/* Read-ahead of one sub-stream of a FerryByteChannel: a thread of its own reads the peer's bytes up to its
 * barrier (on a migration websocket: receiving, TLS decryption, unmasking) while the consumer works on what
 * came before (on the receiving side of ferry's native transport: creating and writing files). On two cores
 * that overlap is most of the speed of a copy.
 *
 * The thread reads nothing past the barrier: the next sub-stream belongs to whoever reads next. */
#pragma once

#include "rsync.h" /* FerryByteChannel */

G_BEGIN_DECLS

typedef struct _FerryReadAhead FerryReadAhead;

/* Starts the thread. The cancellable is passed to the channel's reads (cancelling it unblocks them). */
FerryReadAhead *ferry_read_ahead_new(FerryByteChannel *channel, GCancellable *cancellable);
/* Like FerryByteChannel.read: up to size bytes of the sub-stream, 0 at the barrier (and after it), -1 with
 * the channel's error (which stays: every later call fails with a copy of it). */
gssize ferry_read_ahead_read(FerryReadAhead *ahead, void *buffer, gsize size, GError **error);
/* Stops and joins the thread. If the barrier was not reached — the consumer gave up on the stream — the
 * channel is aborted first, so that a thread waiting on a silent peer returns. */
void ferry_read_ahead_free(FerryReadAhead *ahead);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryReadAhead, ferry_read_ahead_free)

G_END_DECLS
