/* BTRFS migration transport: `btrfs send` / `btrfs receive` streams over a byte channel (the migration `fs`
 * websocket), compatible with Incus's btrfs driver (driver_btrfs_volumes.go MigrateVolume and
 * CreateVolumeFromMigration, driver_btrfs_utils.go) in both directions.
 *
 * Wire, after the MigrationHeader negotiated fs=BTRFS and the index header exchange (all on `fs`):
 *  1. Metadata header, only with btrfsFeatures.migration_header: source -> sink, one JSON document
 *     {"subvolumes":[{"path":"/","snapshot":"snap0","readonly":true,"uuid":"<uuid>"}, ...]}, a barrier.
 *     Entries: each snapshot (oldest first) root "/" then its nested subvolumes sorted by path ("/a",
 *     "/a/b"), then the volume itself (snapshot "", root readonly false) and its nested ones. uuid is the
 *     subvolume's own UUID ("" when unknown). Without the feature the sink assumes one read-only root per
 *     snapshot plus the volume's writable root (ferry_btrfs_header_default()).
 *  2. Refresh with header_subvolume_uuids only: the sink answers with the same JSON shape (the entries whose
 *     UUID matches none of its snapshots' received UUIDs), then a barrier; the source sends just those.
 *  3. One stream per entry (without header_subvolumes: roots only, and a source with nested subvolumes
 *     refuses): `btrfs send [-p <parent>] <subvolume>` output, then a barrier. One-way: the sink writes
 *     nothing back. The parent is the previous snapshot's subvolume at the same path when it exists (so only
 *     the delta moves); the volume is sent from a read-only recursive snapshot named ".migration-send",
 *     incremental on the last snapshot. No MultiSync/final pass with BTRFS.
 *  4. The sink runs `btrfs receive -e <dir>` per stream (the subvolume keeps the sender's basename and
 *     comes out read-only with a received UUID). After the last stream it makes each writable, renames it
 *     into place (a nested one replaces the empty placeholder directory its parent's stream left), keeps the
 *     received UUID (later incremental streams find their parent by it), then makes read-only what the
 *     header says: snapshots and their nested subvolumes; the volume stays writable.
 *
 * Errors are FERRY_ERROR, classified like rsync.h's: FERRY_ERROR_CANCELLED after a cancel;
 * FERRY_ERROR_UNAVAILABLE when the failure began at the peer (the channel failed, the peer never ended its
 * stream, or ended it before btrfs's end command: an Incus source ends the frame even when its btrfs send
 * failed), so the peer's own account over `control` is the one to wait for; FERRY_ERROR_INTERNAL when it
 * began here (400/404/409 where said). Functions that move bytes kill their btrfs on cancellation and
 * failure, abort the channel on a failure before a stream's end (the peer then fails at once instead of
 * waiting for a stream that will not come), and leave no subvolume or staging directory behind. */
#pragma once

#include "rsync.h" /* FerryByteChannel, FerryBytesFunc */

#include <gio/gio.h>
#include <jansson.h>

G_BEGIN_DECLS

/* One entry of Incus's BTRFSMetaDataHeader. */
typedef struct {
    char *path;        /* "/" for the (snapshot) volume's root subvolume, "/a/b" for a nested one */
    char *snapshot;    /* snapshot name, "" for the volume itself */
    gboolean readonly; /* how the subvolume is to be left on the sink */
    char *uuid;        /* the source subvolume's own UUID, "" when unknown */
} FerryBtrfsSubvolume;

FerryBtrfsSubvolume *ferry_btrfs_subvolume_new(const char *path, const char *snapshot, gboolean readonly,
                                               const char *uuid);
void ferry_btrfs_subvolume_free(FerryBtrfsSubvolume *subvolume);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryBtrfsSubvolume, ferry_btrfs_subvolume_free)

/* ---- metadata header ---- */

/* The subvolumes (GPtrArray of FerryBtrfsSubvolume) of volume_path and its snapshots, in sending order: each
 * snapshot_paths entry (oldest first; its snapshot name is the path's basename) root then nested sorted by
 * path, then the volume (root forced writable, as Incus restores a volume sent from a snapshot). Readonly
 * flags and UUIDs are read from disk. 404 when a path is missing, 400 when it is not a btrfs subvolume. */
GPtrArray *ferry_btrfs_volume_subvolumes(const char *volume_path, const char *const *snapshot_paths,
                                         GError **error);
/* {"subvolumes":[...]} of ferry_btrfs_volume_subvolumes(): the header frame the source sends. */
json_t *ferry_btrfs_migration_header(const char *volume_path, const char *const *snapshot_paths,
                                     GError **error);
json_t *ferry_btrfs_header_to_json(GPtrArray *subvolumes);
/* Parse a header from the peer (400 when malformed): paths must be "/" or absolute with plain components,
 * snapshot names single components; "subvolumes":null is an empty list; unknown members are ignored. */
GPtrArray *ferry_btrfs_header_parse(const json_t *header, GError **error);
/* The streams a sink is to receive, in the order they come: for each of snapshot_names (the negotiated
 * snapshotNames, oldest first; NULL or empty with --instance-only) the header's entries of that snapshot in
 * header order, then the volume's entries (snapshot ""). An Incus source lists every snapshot it has in the
 * header but sends only the requested ones, and its sink receives in exactly this order. Entries are shared
 * with subvolumes (the result owns none: free subvolumes after it). */
GPtrArray *ferry_btrfs_header_select(GPtrArray *subvolumes, const char *const *snapshot_names);
/* What a sink assumes without the migration_header feature: one read-only root per snapshot name (oldest
 * first), then the writable root of the volume. */
GPtrArray *ferry_btrfs_header_default(const char *const *snapshot_names);

/* ---- one stream ---- */

/* Send subvolume (an absolute path to a read-only subvolume) as `btrfs send [-p parent] subvolume` over the
 * channel, then our barrier once btrfs exited successfully. Nothing is read back (the stream is one-way).
 * parent (read-only, same filesystem, already received by the peer) makes an incremental stream.
 * progress gets the running total of stream bytes written. On failure the channel is aborted, no barrier. */
gboolean ferry_btrfs_send_subvolume(const char *subvolume, const char *parent, FerryByteChannel *channel,
                                    FerryBytesFunc progress, gpointer data, GCancellable *c, GError **error);

/* Receive one stream (up to the peer's barrier) with `btrfs receive -C -e` into a private staging directory
 * inside dest_dir (an existing directory on btrfs), then move the subvolume to dest_dir/<name it was sent
 * with>. Returns that path; the subvolume is read-only with its received UUID. The stream must end with
 * btrfs's end command and nothing after it (a truncated stream is an error even where btrfs-progs would
 * accept it). 409 if dest_dir/<name> exists. On any failure the received subvolume is deleted, and the
 * channel aborted unless the whole stream had arrived. progress gets the running total of stream bytes
 * read. */
char *ferry_btrfs_receive_subvolume(const char *dest_dir, FerryByteChannel *channel, FerryBytesFunc progress,
                                    gpointer data, GCancellable *c, GError **error);

/* ---- source side: a volume with its snapshots ---- */

typedef struct {
    /* btrfsFeatures.header_subvolumes negotiated: nested subvolumes are sent. Without it, a volume that has
     * nested subvolumes is refused ("Subvolumes detected in source but target does not support receiving
     * subvolumes"), as Incus does, rather than arriving incomplete. */
    gboolean subvolumes;
    /* Refresh: the newest source snapshot the peer already has (Incus: the one before the first snapshot to
     * send, else the latest), parent of the first stream. NULL: the first stream is a full one. */
    const char *parent;
    /* Running total of stream bytes over all the streams of the call. */
    FerryBytesFunc progress;
    gpointer progress_data;
} FerryBtrfsSendOptions;

/* Step 3 on the source. subvolumes says what to send: the list the header was made from
 * (ferry_btrfs_volume_subvolumes(), always computed from disk even when no header frame is sent, so nested
 * subvolumes are detected), or on a UUID refresh the sink's answer; NULL = computed here. For every
 * snapshot_paths entry (oldest first; matched to entries by basename), its entries root then nested, each
 * incremental on the previous snapshot's subvolume at the same path; then the volume's entries (snapshot "")
 * from a temporary read-only recursive snapshot ".migration-send" made in a staging directory beside
 * volume_path (deleted afterwards), incremental on the last snapshot. Subvolumes that are not read-only (a
 * nested one received writable) are made read-only for their send and writable again after. volume_path
 * may itself be a snapshot (copying a snapshot to a new instance). The header frame (step 1) is the
 * caller's. progress: running total over all streams. */
gboolean ferry_btrfs_send_volume(const char *volume_path, const char *const *snapshot_paths,
                                 GPtrArray *subvolumes, const FerryBtrfsSendOptions *options,
                                 FerryByteChannel *channel, GCancellable *c, GError **error);

/* Any filesystem volume sent with rsync from a btrfs pool: a read-only recursive snapshot of volume_path in a
 * ".ferry-tmp-snap-*" staging directory beside it, so a running instance is copied consistently (what Incus
 * does before an RSYNC send). Returns the snapshot's path; remove it with
 * ferry_btrfs_temporary_snapshot_delete(). */
char *ferry_btrfs_temporary_snapshot(const char *volume_path, GError **error);
gboolean ferry_btrfs_temporary_snapshot_delete(const char *snapshot_path, GError **error);

/* ---- sink side: receiving into staging, then placing ---- */

typedef struct _FerryBtrfsReceiver FerryBtrfsReceiver;

/* Staging for one migration: a ".ferry-tmp-migration-*" directory in work_parent, which must be on the
 * pool's btrfs filesystem (e.g. <pool>/containers: the pool's startup sweep removes it after a crash). */
FerryBtrfsReceiver *ferry_btrfs_receiver_new(const char *work_parent, GError **error);
/* Receive the next stream, the one for entry (its snapshot name and path say where it will go). */
gboolean ferry_btrfs_receiver_receive(FerryBtrfsReceiver *receiver, const FerryBtrfsSubvolume *entry,
                                      FerryByteChannel *channel, FerryBytesFunc progress, gpointer data,
                                      GCancellable *c, GError **error);
/* Every entry of subvolumes (ferry_btrfs_header_select() of the header), in order; progress is a running
 * total across them. */
gboolean ferry_btrfs_receiver_receive_all(FerryBtrfsReceiver *receiver, GPtrArray *subvolumes,
                                          FerryByteChannel *channel, FerryBytesFunc progress, gpointer data,
                                          GCancellable *c, GError **error);
/* Put everything received in place: the volume's root becomes volume_path (writable), snapshot s's root
 * snapshots_dir/s (created 0700 if missing), a nested subvolume replaces the placeholder directory at its
 * path inside its root. Received UUIDs are kept; then entries marked readonly are made read-only. Roots
 * must not exist yet (409): on a refresh Incus deletes the old volume between the last stream and this
 * step; committing to a staging name and exchanging is the atomic alternative. On failure whatever was
 * placed is deleted again (the rest stays for ferry_btrfs_receiver_free()). */
gboolean ferry_btrfs_receiver_commit(FerryBtrfsReceiver *receiver, const char *volume_path,
                                     const char *snapshots_dir, GError **error);
/* Deletes whatever was received and not committed, and the staging directory. */
void ferry_btrfs_receiver_free(FerryBtrfsReceiver *receiver);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryBtrfsReceiver, ferry_btrfs_receiver_free)

/* ---- small helpers ---- */

/* The subvolume's UUID and received UUID ("" when it has none), for refresh comparisons (an Incus sink
 * compares its snapshots' received UUIDs with the header's UUIDs). Any out pointer may be NULL. */
gboolean ferry_btrfs_subvolume_uuids(const char *path, char **uuid, char **received_uuid, gboolean *readonly,
                                     GError **error);
/* Delete a subvolume with every subvolume nested in it (read-only ones too). Missing is success. */
gboolean ferry_btrfs_delete_subvolume(const char *path, GError **error);

G_END_DECLS
