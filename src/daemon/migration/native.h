/* ferry's native migration transport, used when both ends are ferry (negotiated in the offer; against Incus
 * the RSYNC transport is used). One pass makes the receiving directory an exact copy of the sending one,
 * sending only what differs from what the receiver already holds:
 *
 *   A  receiver -> sender   manifest: every entry the receiver has (type, mode, owner, size, mtime, xattr
 *                           digest, symlink target);
 *   B  sender -> receiver   candidates: large regular files present on both sides whose size or mtime differ;
 *   C  receiver -> sender   block digests (XXH3-128 per block) of each candidate's current content;
 *   D  sender -> receiver   the changes, in walk order: directories, new or changed files (data as extents,
 *                           holes skipped), block patches of candidates, symlinks, hard links, device nodes,
 *                           metadata-only changes, then deletions;
 *   E  receiver -> sender   an empty phase: everything is applied.
 *
 * Each phase is a run of blocks, raw or zstd-compressed, ended by a barrier of the channel
 * (docs/protocol/ferry-native.md).
 *
 * The receiver never writes into an existing file: a changed file is built beside it and renamed over it,
 * and a metadata change to a file with other links goes to a copy. So the receiving directory may share
 * inodes with another tree (a refresh's staging copy made of hard links) without changing that tree. Every
 * path from the sender is checked and resolved beneath the receiving directory, following no symlink. */
#pragma once

#include "rsync.h" /* FerryByteChannel, FerryBytesFunc */

G_BEGIN_DECLS

typedef struct {
    gboolean zstd; /* compress blocks where it pays (negotiated: both sides must agree) */
    /* Sender: entries that vanish during the walk are skipped (a running instance that is not frozen);
     * otherwise a vanishing entry fails the pass. */
    gboolean allow_inconsistent;
    /* Payload bytes of file data sent (sender) or received (receiver) in this pass. Called often. */
    FerryBytesFunc progress;
    gpointer progress_data;
    const char *peer; /* "target" / "source", for messages */
    /* Receiver: the tree dest_dir is being made a copy of, by another thread, while the pass starts. What we
     * have (phases A and C) is read from here, and dest_dir is only opened once wait_ready has returned TRUE,
     * before the changes (phase D). NULL: dest_dir is ready and is read itself. */
    const char *basis_dir;
    gboolean (*wait_ready)(gpointer data, GError **error);
    gpointer wait_data;
} FerryNativeOptions;

/* Errors: FERRY_ERROR_UNAVAILABLE when the channel failed (the peer's account on control is the better
 * one), FERRY_ERROR_INVALID for a malformed stream, FERRY_ERROR_CANCELLED, FERRY_ERROR_INTERNAL otherwise.
 * On failure the channel is aborted, so the peer's side stops promptly too. */
gboolean ferry_native_send(const char *source_dir, FerryByteChannel *channel, const FerryNativeOptions *options,
                           GCancellable *cancellable, GError **error);
gboolean ferry_native_receive(const char *dest_dir, FerryByteChannel *channel, const FerryNativeOptions *options,
                              GCancellable *cancellable, GError **error);

G_END_DECLS
