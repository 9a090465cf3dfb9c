#include "backup_btrfs.h"

#include "error.h"
#include "migration/btrfs_transport.h"
#include "yaml.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <xxhash.h>

/* ---- export ---- */

typedef struct {
    char *entry;     /* tar entry name */
    char *what;      /* for errors: snapshot "x" / the instance */
    char *subvolume; /* read-only subvolume to send */
    char *parent;    /* the previous snapshot, NULL for a full stream */
    guint64 size;
    XXH64_hash_t digest;
} Stream;

struct _FerryBackupBtrfsExport {
    char *snapshot; /* read-only snapshot of the volume, sent as the instance */
    char *header_yaml;
    GPtrArray *streams;
    guint64 total;
    GCancellable *cancellable;
};

static void stream_free(gpointer data)
{
    Stream *s = data;
    g_free(s->entry);
    g_free(s->what);
    g_free(s->subvolume);
    g_free(s->parent);
    g_free(s);
}

void ferry_backup_btrfs_export_free(FerryBackupBtrfsExport *export)
{
    if (export == NULL)
        return;
    if (export->snapshot != NULL) {
        g_autoptr(GError) error = NULL;
        if (!ferry_btrfs_temporary_snapshot_delete(export->snapshot, &error))
            g_warning("Failed to delete the export snapshot %s: %s", export->snapshot, error->message);
        g_free(export->snapshot);
    }
    g_free(export->header_yaml);
    g_clear_pointer(&export->streams, g_ptr_array_unref);
    g_clear_object(&export->cancellable);
    g_free(export);
}

/* One run of a stream: its length and digest; with a writer, the bytes also go into the tar entry. */
typedef struct {
    const Stream *stream;
    FerryBackupWriter *writer;
    XXH3_state_t *hash;
    guint64 length;
} Run;

static gssize run_read(gpointer channel, void *buffer, gsize size, GCancellable *c, GError **error)
{
    g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "A backup stream is not read back");
    return -1;
}

static gboolean run_write(gpointer channel, const void *data, gsize length, GError **error)
{
    Run *run = channel;
    if (run->writer != NULL && run->length + length > run->stream->size) {
        g_set_error(
            error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
            "The btrfs send stream of %s is longer than when it was measured (more than %" G_GUINT64_FORMAT
            " bytes): it must not change between its two runs",
            run->stream->what, run->stream->size);
        return FALSE;
    }
    XXH3_64bits_update(run->hash, data, length);
    run->length += length;
    return run->writer == NULL || ferry_backup_writer_write_data(run->writer, data, length, error);
}

static gboolean run_end(gpointer channel, GError **error)
{
    return TRUE;
}

static void run_abort(gpointer channel)
{
}

static gboolean run_stream(const Stream *stream, FerryBackupWriter *writer, guint64 *length,
                           XXH64_hash_t *digest, GCancellable *cancellable, GError **error)
{
    Run run = {.stream = stream, .writer = writer, .hash = XXH3_createState()};
    XXH3_64bits_reset(run.hash);
    FerryByteChannel channel = {run_read, run_write, run_end, run_abort, &run};
    gboolean ok = ferry_btrfs_send_subvolume(stream->subvolume, stream->parent, &channel, NULL, NULL,
                                             cancellable, error);
    *length = run.length;
    *digest = XXH3_64bits_digest(run.hash);
    XXH3_freeState(run.hash);
    if (!ok)
        g_prefix_error(error, "Failed to export %s: ", stream->what);
    return ok;
}

static void add_stream(FerryBackupBtrfsExport *export, char *entry, char *what, const char *subvolume,
                       const char *parent)
{
    Stream *s = g_new0(Stream, 1);
    s->entry = entry;
    s->what = what;
    s->subvolume = g_strdup(subvolume);
    s->parent = g_strdup(parent);
    g_ptr_array_add(export->streams, s);
}

static gboolean set_readonly(int fd, gboolean readonly, const char *path, GError **error)
{
    guint64 flags = 0;
    if (ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) < 0) {
        ferry_set_error_errno(error, errno, "Failed to read the flags of %s", path);
        return FALSE;
    }
    flags = readonly ? flags | BTRFS_SUBVOL_RDONLY : flags & ~(guint64)BTRFS_SUBVOL_RDONLY;
    if (ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &flags) < 0) {
        ferry_set_error_errno(error, errno, "Failed to make %s %s", path,
                              readonly ? "read-only" : "writable");
        return FALSE;
    }
    return TRUE;
}

/* Incus keeps backup.yaml in every instance volume and its import of an optimized backup rewrites the one it
 * receives (a missing one fails it), so the instance's stream carries one: written into the export's own
 * snapshot, never into the instance. */
static gboolean add_backup_yaml(const char *snapshot, const char *backup_yaml, GError **error)
{
    int fd = open(snapshot, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "Failed to open %s", snapshot);
        return FALSE;
    }
    g_autofree char *path = g_build_filename(snapshot, "backup.yaml", NULL);
    gboolean ok = set_readonly(fd, FALSE, snapshot, error);
    if (ok) {
        int file = openat(fd, "backup.yaml", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0400);
        gsize size = strlen(backup_yaml);
        if (file < 0 || write(file, backup_yaml, size) != (gssize)size) {
            ferry_set_error_errno(error, errno, "Failed to write %s", path);
            ok = FALSE;
        }
        if (file >= 0)
            close(file);
        ok = set_readonly(fd, TRUE, snapshot, ok ? error : NULL) && ok;
    }
    close(fd);
    return ok;
}

FerryBackupBtrfsExport *ferry_backup_btrfs_export_new(const char *volume_path, GPtrArray *snapshot_paths,
                                                      const char *backup_yaml, GCancellable *cancellable,
                                                      GError **error)
{
    g_autoptr(GPtrArray) paths = g_ptr_array_new();
    for (guint i = 0; i < snapshot_paths->len; i++)
        g_ptr_array_add(paths, snapshot_paths->pdata[i]);
    g_ptr_array_add(paths, NULL);
    g_autoptr(GPtrArray) subvolumes =
        ferry_btrfs_volume_subvolumes(volume_path, (const char *const *)paths->pdata, error);
    if (subvolumes == NULL)
        return NULL;
    for (guint i = 0; i < subvolumes->len; i++) {
        const FerryBtrfsSubvolume *sub = subvolumes->pdata[i];
        if (!g_str_equal(sub->path, "/")) {
            g_set_error(
                error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                "Optimized backups of volumes with nested subvolumes are not supported (\"%s\" in %s): "
                "export without --optimized-storage",
                sub->path, *sub->snapshot != '\0' ? sub->snapshot : "the instance");
            return NULL;
        }
    }
    g_autoptr(json_t) header = ferry_btrfs_header_to_json(subvolumes);

    g_autoptr(FerryBackupBtrfsExport) export = g_new0(FerryBackupBtrfsExport, 1);
    export->cancellable = cancellable != NULL ? g_object_ref(cancellable) : NULL;
    export->streams = g_ptr_array_new_with_free_func(stream_free);
    export->header_yaml = ferry_yaml_emit(header, error);
    if (export->header_yaml == NULL)
        return NULL;
    export->snapshot = ferry_btrfs_temporary_snapshot(volume_path, error);
    if (export->snapshot == NULL || !add_backup_yaml(export->snapshot, backup_yaml, error))
        return NULL;

    const char *parent = NULL;
    for (guint i = 0; i < snapshot_paths->len; i++) {
        const char *path = snapshot_paths->pdata[i];
        g_autofree char *name = g_path_get_basename(path);
        add_stream(export, g_strdup_printf("backup/snapshots/%s.bin", name),
                   g_strdup_printf("snapshot \"%s\"", name), path, parent);
        parent = path;
    }
    add_stream(export, g_strdup("backup/container.bin"), g_strdup("the instance"), export->snapshot, parent);

    /* The first run only measures: the entry's header needs the size before the data. */
    for (guint i = 0; i < export->streams->len; i++) {
        Stream *s = export->streams->pdata[i];
        if (!run_stream(s, NULL, &s->size, &s->digest, cancellable, error))
            return NULL;
        export->total += s->size;
    }
    return g_steal_pointer(&export);
}

guint64 ferry_backup_btrfs_export_size(FerryBackupBtrfsExport *export)
{
    return export->total;
}

gboolean ferry_backup_btrfs_export_write(FerryBackupBtrfsExport *export, FerryBackupWriter *writer,
                                         GError **error)
{
    if (!ferry_backup_writer_add_file(writer, "backup/optimized_header.yaml", export->header_yaml,
                                      strlen(export->header_yaml), 0644, error))
        return FALSE;
    for (guint i = 0; i < export->streams->len; i++) {
        const Stream *s = export->streams->pdata[i];
        guint64 length = 0;
        XXH64_hash_t digest = 0;
        if (!ferry_backup_writer_begin_file(writer, s->entry, s->size, 0600, error) ||
            !run_stream(s, writer, &length, &digest, export->cancellable, error))
            return FALSE;
        /* Same subvolumes, same parent: btrfs send repeats itself; if it ever did not, the entry would hold
         * a stream that is not the one measured, so the export fails rather than write a corrupt archive. */
        if (length != s->size || digest != s->digest) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                        "The btrfs send stream of %s changed between its two runs (%" G_GUINT64_FORMAT
                        " bytes, then %" G_GUINT64_FORMAT " bytes%s): the export is abandoned",
                        s->what, s->size, length, length == s->size ? " with other contents" : "");
            return FALSE;
        }
        if (!ferry_backup_writer_end_file(writer, error))
            return FALSE;
    }
    return TRUE;
}

/* ---- import ---- */

struct _FerryBackupBtrfsImport {
    FerryBtrfsReceiver *receiver;
    GPtrArray *names;      /* snapshot names, oldest first, NULL-terminated */
    GPtrArray *subvolumes; /* FerryBtrfsSubvolume: what the header (or the default shape) says */
    GPtrArray *order;      /* the entries of subvolumes streams are expected for (borrowed) */
    gboolean streaming;    /* a stream was received: the header can no longer change the shape */
};

void ferry_backup_btrfs_import_free(FerryBackupBtrfsImport *import)
{
    if (import == NULL)
        return;
    g_clear_pointer(&import->order, g_ptr_array_unref);
    g_clear_pointer(&import->subvolumes, g_ptr_array_unref);
    g_clear_pointer(&import->names, g_ptr_array_unref);
    g_clear_pointer(&import->receiver, ferry_btrfs_receiver_free);
    g_free(import);
}

static void set_shape(FerryBackupBtrfsImport *import, GPtrArray *subvolumes)
{
    g_clear_pointer(&import->order, g_ptr_array_unref);
    g_clear_pointer(&import->subvolumes, g_ptr_array_unref);
    import->subvolumes = subvolumes;
    import->order = ferry_btrfs_header_select(subvolumes, (const char *const *)import->names->pdata);
}

FerryBackupBtrfsImport *ferry_backup_btrfs_import_new(const char *work_parent, GPtrArray *snapshot_names,
                                                      GError **error)
{
    g_autoptr(FerryBackupBtrfsImport) import = g_new0(FerryBackupBtrfsImport, 1);
    import->names = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < snapshot_names->len; i++)
        g_ptr_array_add(import->names, g_strdup(snapshot_names->pdata[i]));
    g_ptr_array_add(import->names, NULL);
    set_shape(import, ferry_btrfs_header_default((const char *const *)import->names->pdata));
    import->receiver = ferry_btrfs_receiver_new(work_parent, error);
    if (import->receiver == NULL)
        return NULL;
    return g_steal_pointer(&import);
}

static const FerryBtrfsSubvolume *find_root(GPtrArray *order, const char *snapshot)
{
    for (guint i = 0; i < order->len; i++) {
        const FerryBtrfsSubvolume *sub = order->pdata[i];
        if (g_str_equal(sub->snapshot, snapshot) && g_str_equal(sub->path, "/"))
            return sub;
    }
    return NULL;
}

gboolean ferry_backup_btrfs_import_header(FerryBackupBtrfsImport *import, json_t *header, GError **error)
{
    if (import->streaming) {
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "Invalid backup: backup/optimized_header.yaml comes after a storage stream");
        return FALSE;
    }
    g_autoptr(GPtrArray) subvolumes = ferry_btrfs_header_parse(header, error);
    if (subvolumes == NULL) {
        g_prefix_error(error, "Invalid backup: backup/optimized_header.yaml: ");
        return FALSE;
    }
    for (guint i = 0; i < subvolumes->len; i++) {
        const FerryBtrfsSubvolume *sub = subvolumes->pdata[i];
        if (!g_str_equal(sub->path, "/")) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                        "Optimized backups with nested subvolumes (\"%s\") can't be imported here",
                        sub->path);
            return FALSE;
        }
    }
    set_shape(import, g_steal_pointer(&subvolumes));
    guint count = import->names->len - 1; /* without the NULL */
    for (guint i = 0; i <= count; i++) {
        const char *name = i < count ? import->names->pdata[i] : "";
        if (find_root(import->order, name) == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid backup: backup/optimized_header.yaml has no subvolume for %s%s%s",
                        *name != '\0' ? "snapshot \"" : "the instance", name, *name != '\0' ? "\"" : "");
            return FALSE;
        }
    }
    return TRUE;
}

typedef struct {
    FerryBackupStreamRead read;
    gpointer stream;
} EntryChannel;

static gssize entry_read(gpointer channel, void *buffer, gsize size, GCancellable *c, GError **error)
{
    EntryChannel *entry = channel;
    if (g_cancellable_set_error_if_cancelled(c, error))
        return -1;
    return entry->read(entry->stream, buffer, size, error);
}

static gboolean entry_write(gpointer channel, const void *data, gsize length, GError **error)
{
    g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "A backup stream is not written back");
    return FALSE;
}

static gboolean entry_end(gpointer channel, GError **error)
{
    return TRUE;
}

static void entry_abort(gpointer channel)
{
}

gboolean ferry_backup_btrfs_import_stream(FerryBackupBtrfsImport *import, const char *snapshot,
                                          FerryBackupStreamRead read, gpointer stream,
                                          GCancellable *cancellable, GError **error)
{
    import->streaming = TRUE;
    const FerryBtrfsSubvolume *entry = find_root(import->order, snapshot != NULL ? snapshot : "");
    if (entry == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid backup: the optimized header has no subvolume for snapshot \"%s\"", snapshot);
        return FALSE;
    }
    EntryChannel channel_data = {read, stream};
    FerryByteChannel channel = {entry_read, entry_write, entry_end, entry_abort, &channel_data};
    if (!ferry_btrfs_receiver_receive(import->receiver, entry, &channel, NULL, NULL, cancellable, error)) {
        if (snapshot != NULL)
            g_prefix_error(error, "Snapshot \"%s\": ", snapshot);
        return FALSE;
    }
    return TRUE;
}

gboolean ferry_backup_btrfs_import_commit(FerryBackupBtrfsImport *import, const char *volume_path,
                                          const char *snapshots_dir, GError **error)
{
    if (!ferry_btrfs_receiver_commit(import->receiver, volume_path, snapshots_dir, error))
        return FALSE;
    /* ferry keeps the records in its database, not a backup.yaml in the volume (an export adds its own). */
    g_autofree char *backup_yaml = g_build_filename(volume_path, "backup.yaml", NULL);
    if (unlink(backup_yaml) < 0 && errno != ENOENT) {
        ferry_set_error_errno(error, errno, "Failed to remove %s", backup_yaml);
        return FALSE;
    }
    return TRUE;
}
