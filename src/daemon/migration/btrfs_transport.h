/* BTRFS migration transport: `btrfs send` / `btrfs receive` streams over a byte channel (the migration `fs`
 * websocket), compatible with Incus's btrfs driver (internal/server/storage/drivers/driver_btrfs_volumes.go
 * MigrateVolume / CreateVolumeFromMigration) in both directions.
 *
 * Wire facts (after the MigrationHeader negotiated fs=BTRFS and the index header exchange):
 *  1. Metadata header, only when btrfsFeatures.migration_header was negotiated: source -> sink, one JSON
 *     document {"subvolumes":[{"path":"/","snapshot":"snap0","readonly":true,"uuid":"..."}, ...]} then a
 *     barrier. Entries: for each snapshot (oldest first) its root ("/") then its nested subvolumes sorted by
 *     path ("/a", "/a/b"), then the volume itself (snapshot "", root readonly false) and its nested ones.
 *     Without the feature the sink assumes one root per snapshot plus the volume's (header_default()).
 *  2. Refresh only, with header_subvolume_uuids: the sink answers with the same JSON shape listing what it
 *     still needs (its snapshots' received UUIDs compared with the header's UUIDs), then a barrier.
 *  3. One stream per subvolume, in header order (snapshots oldest first, each root then nested; then the
 *     volume): the output of `btrfs send [-p <parent>] <subvolume>` then a barrier. The stream is one-way:
 *     the sink never writes on `fs` while streams flow (no barrier back). Parent = the previous snapshot's
 *     subvolume at the same path when there is one, so only the delta moves. The volume is sent from a
 *     read-only recursive snapshot named ".migration-send".
 *  4. The sink runs `btrfs receive -e <tmpdir>` per stream (the received subvolume keeps the sender's basename
 *     and is read-only with a received UUID), and only after the last stream makes each one writable,
 *     renames it into place (nested ones replace their empty placeholder directory), keeps its received UUID
 *     (so later incremental sends find it as a parent), then makes read-only what the header says.
 * No MultiSync/final pass: a running instance is sent once from its snapshot.
 *
 * Errors are FERRY_ERROR (500 unless said otherwise; 499 when cancelled). Every function that runs btrfs
 * kills it on cancellation and on failure, aborts the channel after a failure (so the peer fails at once
 * instead of waiting on a stream that will never end), and leaves no subvolume behind. */
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
 * accept it). 409 if dest_dir/<name> exists. On any failure the partial subvolume is deleted and the
 * channel aborted. progress gets the running total of stream bytes read. */
char *ferry_btrfs_receive_subvolume(const char *dest_dir, FerryByteChannel *channel, FerryBytesFunc progress,
                                    gpointer data, GCancellable *c, GError **error);

/* ---- source side: a volume with its snapshots ---- */

typedef struct {
    /* btrfsFeatures.header_subvolumes negotiated: nested subvolumes are sent. Without it, a volume that has
     * nested subvolumes is refused ("Subvolumes detected in source but target does not support receiving
     * subvolumes"), as Incus does, rather than arriving incomplete. */
    gboolean subvolumes;
    /* Refresh: the source snapshot the peer already has, parent of the first stream (NULL: a full send). */
    const char *parent;
    /* Running total of stream bytes over all the streams of the call. */
    FerryBytesFunc progress;
    gpointer progress_data;
} FerryBtrfsSendOptions;

/* Step 3 on the source: every snapshot_paths entry (oldest first) root then nested, each incremental on the
 * previous one, then the volume from a temporary read-only recursive snapshot ".migration-send" made in a
 * staging directory beside it (deleted afterwards), incremental on the last snapshot. Subvolumes that are
 * not read-only (a nested one received writable) are made read-only for the send and restored after.
 * volume_path may itself be a snapshot (copying a snapshot to a new instance). The header (step 1) is the
 * caller's: send ferry_btrfs_migration_header() with the same arguments first when negotiated. */
gboolean ferry_btrfs_send_volume(const char *volume_path, const char *const *snapshot_paths,
                                 const FerryBtrfsSendOptions *options, FerryByteChannel *channel,
                                 GCancellable *c, GError **error);

/* Any filesystem volume sent with rsync from a btrfs pool: a read-only recursive snapshot of volume_path in a
 * ".ferry-tmp-snap-*" staging directory beside it, so a running instance is copied consistently (what Incus
 * does before an RSYNC send). Returns the snapshot's path; remove with ferry_btrfs_temporary_snapshot_delete. */
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
/* Every entry of subvolumes, in order, progress as a running total across them. */
gboolean ferry_btrfs_receiver_receive_all(FerryBtrfsReceiver *receiver, GPtrArray *subvolumes,
                                          FerryByteChannel *channel, FerryBytesFunc progress, gpointer data,
                                          GCancellable *c, GError **error);
/* Put everything received in place: the volume's root becomes volume_path (writable), snapshot s's root
 * snapshots_dir/s (created 0700 if missing), a nested subvolume replaces the placeholder directory at its
 * path inside its root. Received UUIDs are kept; then entries marked readonly are made read-only. Roots
 * must not exist yet (409). On failure whatever was placed is deleted again. */
gboolean ferry_btrfs_receiver_commit(FerryBtrfsReceiver *receiver, const char *volume_path,
                                     const char *snapshots_dir, GError **error);
/* Deletes whatever was received and not committed, and the staging directory. */
void ferry_btrfs_receiver_free(FerryBtrfsReceiver *receiver);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryBtrfsReceiver, ferry_btrfs_receiver_free)

/* ---- small helpers ---- */

/* The subvolume's UUID and received UUID ("" when it has none), for refresh comparisons (an Incus sink
 * compares its snapshots' received UUIDs with the header's UUIDs). Either out pointer may be NULL. */
gboolean ferry_btrfs_subvolume_uuids(const char *path, char **uuid, char **received_uuid, gboolean *readonly,
                                     GError **error);
/* Delete a subvolume with every subvolume nested in it (read-only ones too). Missing is success. */
gboolean ferry_btrfs_delete_subvolume(const char *path, GError **error);

G_END_DECLS
