/* RSYNC migration transport: the real rsync binary, its protocol stream carried over a byte channel (the
 * migration `fs` websocket), compatible with Incus's internal/rsync in both directions.
 *
 * Wire facts (Incus internal/rsync/rsync.go):
 *  - sender = rsync client: `rsync -ar --devices --numeric-ids --partial --sparse [--bwlimit K]
 *    [--xattrs --filter=-x security.selinux] [--delete] [--compress --compress-level=2] [extra] <dir>/
 *    localhost:<ignored> -e "<helper> netcat ..."`; the remote-shell helper's stdio is the stream;
 *  - receiver = `rsync --server -vlogDtpre.iLsfx --numeric-ids --devices --partial --sparse
 *    --modify-window=-1 [feature args] . <dir>` with stdin/stdout on the stream;
 *  - the receiver's option string is fixed, so the sender may only use options that string agrees with:
 *    no -H (hard links arrive as separate copies) and no -A (POSIX ACLs are not preserved) against Incus;
 *  - each side ends its direction with a barrier when its rsync's output ends and reads until the peer's. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* Progress: the running total of payload bytes moved so far by one call (the same typedef as websocket.h's;
 * C11 allows the identical redefinition). Called from a worker thread. */
typedef void (*FerryBytesFunc)(guint64 bytes, gpointer user_data);

/* A bidirectional byte channel cut into sub-streams by barriers, like the migration websockets.
 * Threads: read is called from one thread while write/end are called from another; abort may be called
 * from any thread at any time and must make pending and later read/write/end fail promptly. */
typedef struct {
    /* read up to size bytes of the peer's current sub-stream; 0 = the peer's barrier (EOF); -1 + error.
     * Cancelling c must make a blocked read return -1 (it may abort the channel: we only cancel it when
     * aborting anyway). */
    gssize (*read)(gpointer channel, void *buffer, gsize size, GCancellable *c, GError **error);
    gboolean (*write)(gpointer channel, const void *data, gsize length, GError **error);
    gboolean (*end)(gpointer channel, GError **error); /* our barrier */
    void (*abort)(gpointer channel);                   /* unblock everything after a failure */
    gpointer channel;
} FerryByteChannel;

typedef struct {
    /* Negotiated rsyncFeatures: both sides MUST use the same values (they change the protocol). */
    gboolean xattrs, delete, compress;
    /* Sender: rsync --bwlimit in KiB/s (at least 1). Receiver: the incoming stream is throttled by us
     * (rsync's own limit only paces what a process writes, and a receiver writes little). 0 = none. */
    guint64 bwlimit_bytes_per_sec;
    /* Sender: treat rsync exit 24 ("some files vanished") as success (copying a running instance).
     * The receiver always accepts 24 (its rsync mirrors the sender's status; the sender decides). */
    gboolean allow_inconsistent;
    /* Sender only (Incus passes extra args only there): --exclude patterns. With delete they travel to the
     * receiver and protect matching destination files from deletion. */
    const char *const *excludes;
    /* Sender only: the program rsync runs as its remote shell, called as `<helper> netcat <fd> -- ...`
     * (see ferry_rsync_netcat_main). NULL = this executable (/proc/self/exe). */
    const char *helper_binary;
    /* Payload bytes of the sender->receiver direction: what the sender writes / the receiver reads. */
    FerryBytesFunc progress;
    gpointer progress_data;
    /* ferry extension, ferry<->ferry ONLY: preserve hard links (-H on both sides). Incus's receiver would
     * misparse a sender's -H file list and Incus's sender never sends one, so never set this against
     * Incus; both sides must agree (e.g. both offered ferry's own header field). */
    gboolean hard_links;
    /* Receiver only: files unchanged from this directory's (absolute path) are hard-linked from it rather than
     * received, and changed ones are built as new files: the receiving directory starts empty and the one
     * named here is never written (rsync's --link-dest). */
    const char *link_dest;
    /* Who is at the other end of the channel, for errors ("target", "source"); NULL: "peer". */
    const char *peer;
} FerryRsyncOptions;

/* Errors of both calls: FERRY_ERROR_CANCELLED after a cancel; FERRY_ERROR_UNAVAILABLE when the failure began
 * at the peer (the channel failed, the peer never ended its stream, or the peer's rsync stopped and ours died
 * of it), so its own account is the one to wait for; FERRY_ERROR_INTERNAL when it began here. */

/* Send the contents of source_dir (an absolute directory; its contents, like a trailing "/") as ONE rsync
 * run: the local rsync is the client/sender, its remote-shell stdio bridged to the channel through the
 * `netcat` helper; when rsync's output ends we send our barrier; we read until the peer's barrier.
 * Errors carry rsync's exit status and the last lines of its stderr. On cancellation both the local rsync
 * and its helper are killed, the channel is aborted, and the error is FERRY_ERROR_CANCELLED. */
gboolean ferry_rsync_send(const char *source_dir, FerryByteChannel *channel, const FerryRsyncOptions *options,
                          GCancellable *c, GError **error);

/* Receive one rsync run into dest_dir (an existing absolute directory): `rsync --server ... . <dest_dir>`
 * with stdin/stdout bridged to the channel; same barrier, error and cancellation rules. */
gboolean ferry_rsync_receive(const char *dest_dir, FerryByteChannel *channel,
                             const FerryRsyncOptions *options, GCancellable *c, GError **error);

/* What this host's rsync supports, for the offer: xattrs/delete/compress = TRUE when available (all FALSE
 * when rsync is missing). Runs `rsync --version` once per process. */
void ferry_rsync_features(gboolean *xattrs, gboolean *delete, gboolean *compress);

/* The rsync option arguments (without paths and -e) each side uses, for logs and tests. */
GPtrArray *ferry_rsync_sender_args(const FerryRsyncOptions *options);
GPtrArray *ferry_rsync_receiver_args(const FerryRsyncOptions *options);

/* `ferryd netcat <fd> [-- ignored...]`: rsync's remote shell. Copies its stdin to the inherited socket <fd>
 * and the socket to its stdout, half-closing each direction at its end; exits when both ends are done or
 * rsync is gone. argv[0] is the subcommand name ("netcat"): main() calls it as
 * `ferry_rsync_netcat_main(argc - 1, argv + 1)` before any other initialisation. Returns the exit status. */
int ferry_rsync_netcat_main(int argc, char **argv);

G_END_DECLS
