/* Optimized backups of instances on btrfs pools (Incus's optimized_storage, driver_btrfs_volumes.go
 * BackupVolume and CreateVolumeFromBackup): instead of file trees the tarball holds
 * backup/optimized_header.yaml (the subvolumes, as the BTRFS migration header lists them) and one
 * `btrfs send` stream per volume: backup/snapshots/<name>.bin for each snapshot (oldest first, each
 * incremental on the one before), then backup/container.bin (a read-only snapshot of the instance,
 * incremental on the last snapshot). Root subvolumes only: a volume with nested subvolumes is refused both
 * ways (501), where Incus writes backup/<prefix>_<encoded path>.bin entries.
 *
 * Export streams (docs/decisions/0006-export-streams.md, "Optimized backups"): a tar entry needs its size
 * first, so each stream is sent twice from the same read-only subvolumes, the first time only to count its
 * bytes and hash them (XXH3), the second into the entry; a second run that differs fails the export.
 * Import pipes each entry into `btrfs receive` in staging and places the subvolumes at the end, as the
 * migration sink does (btrfs_transport.h's receiver). */
#pragma once

#include "backup_reader.h"
#include "backup_writer.h"

#include <gio/gio.h>
#include <jansson.h>

G_BEGIN_DECLS

typedef struct _FerryBackupBtrfsExport FerryBackupBtrfsExport;

/* Take a read-only snapshot of volume_path (so a running instance exports consistently) with backup_yaml
 * added as its backup.yaml (Incus's import needs one there), and count each stream. snapshot_paths: the
 * snapshots to export, oldest first (their basenames are their names). 501 for nested subvolumes. */
FerryBackupBtrfsExport *ferry_backup_btrfs_export_new(const char *volume_path, GPtrArray *snapshot_paths,
                                                      const char *backup_yaml, GCancellable *cancellable,
                                                      GError **error);
/* Bytes of all the streams together (for progress). */
guint64 ferry_backup_btrfs_export_size(FerryBackupBtrfsExport *export);
/* Write backup/optimized_header.yaml and the .bin entries. */
gboolean ferry_backup_btrfs_export_write(FerryBackupBtrfsExport *export, FerryBackupWriter *writer,
                                         GError **error);
/* Deletes the read-only snapshot. */
void ferry_backup_btrfs_export_free(FerryBackupBtrfsExport *export);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryBackupBtrfsExport, ferry_backup_btrfs_export_free)

typedef struct _FerryBackupBtrfsImport FerryBackupBtrfsImport;

/* Staging in work_parent (on the pool's filesystem) for the streams of snapshot_names (oldest first) and the
 * instance. Without a header the shape is Incus's default: one read-only root per snapshot, then the
 * instance's writable root. */
FerryBackupBtrfsImport *ferry_backup_btrfs_import_new(const char *work_parent, GPtrArray *snapshot_names,
                                                      GError **error);
/* backup/optimized_header.yaml's document ({"subvolumes": [...]}); 501 for nested subvolumes. */
gboolean ferry_backup_btrfs_import_header(FerryBackupBtrfsImport *import, json_t *header, GError **error);
/* `btrfs receive` of one entry's stream (snapshot NULL: the instance) straight from read. */
gboolean ferry_backup_btrfs_import_stream(FerryBackupBtrfsImport *import, const char *snapshot,
                                          FerryBackupStreamRead read, gpointer stream,
                                          GCancellable *cancellable, GError **error);
/* Everything received becomes volume_path and snapshots_dir/<name> (the instance's backup.yaml removed); on
 * failure nothing is left placed. */
gboolean ferry_backup_btrfs_import_commit(FerryBackupBtrfsImport *import, const char *volume_path,
                                          const char *snapshots_dir, GError **error);
/* Deletes whatever was received and not committed, and the staging directory. */
void ferry_backup_btrfs_import_free(FerryBackupBtrfsImport *import);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryBackupBtrfsImport, ferry_backup_btrfs_import_free)

G_END_DECLS
