#include "backup_reader.h"

#include "error.h"
#include "image_extract.h"
#include "image_reader.h"
#include "names.h"
#include "yaml.h"

#include <limits.h>
#include <string.h>

typedef struct {
    const FerryBackupReadCallbacks *callbacks;
    gpointer user_data;
    GCancellable *cancellable;
    ImageReader *reader;
    FerryBackupIndex *index;
    /* the tree being written: its name ("" for the instance) and extractor */
    char *tree;
    ImageExtractor *extractor;
    guint32 shift;
    GHashTable *done_trees; /* names of finished trees (optimized: streams) */
    guint streams;          /* optimized: storage streams read so far */
    /* optimized: the current entry's block not yet handed on */
    const guint8 *block;
    gsize block_left;
    gint64 block_end; /* entry offset just past the last block */
} ReadState;

static void progress_trampoline(guint64 done, guint64 total, gpointer user_data)
{
    ReadState *state = user_data;
    if (state->callbacks->progress != NULL)
        state->callbacks->progress(done, total, state->user_data);
}

/* "a/./b//c" -> "a/b/c"; absolute paths and '..' are refused. */
static char *normalise_path(const char *raw, const char *what, GError **error)
{
    if (raw[0] == '/') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Unsafe %s \"%s\" in backup: absolute paths are not allowed", what, raw);
        return NULL;
    }
    if (strlen(raw) >= PATH_MAX) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Unsafe %s in backup: path is too long", what);
        return NULL;
    }
    g_auto(GStrv) components = g_strsplit(raw, "/", -1);
    g_autoptr(GString) path = g_string_new(NULL);
    for (char **c = components; *c != NULL; c++) {
        if (**c == '\0' || strcmp(*c, ".") == 0)
            continue;
        if (strcmp(*c, "..") == 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Unsafe %s \"%s\" in backup: '..' components are not allowed", what, raw);
            return NULL;
        }
        if (path->len > 0)
            g_string_append_c(path, '/');
        g_string_append(path, *c);
    }
    return g_string_free(g_steal_pointer(&path), FALSE);
}

typedef enum {
    PLACE_SKIP, /* a directory of the layout itself, or a backup.yaml ferry rebuilds */
    PLACE_INDEX,
    PLACE_TREE, /* *tree ("" = instance) and *rest (path beneath the tree, "" = its root) */
    PLACE_OPTIMIZED_HEADER,
    PLACE_OPTIMIZED, /* *tree: "" for the instance, else the snapshot */
    PLACE_UNKNOWN,
} Place;

/* Where a normalised path belongs. tree and rest point into path or are static. */
static Place classify(const char *path, char **tree, const char **rest)
{
    *tree = NULL;
    *rest = NULL;
    if (strcmp(path, "backup") == 0 || strcmp(path, "backup/snapshots") == 0)
        return PLACE_SKIP;
    if (strcmp(path, "backup/index.yaml") == 0)
        return PLACE_INDEX;
    if (strcmp(path, "backup/optimized_header.yaml") == 0)
        return PLACE_OPTIMIZED_HEADER;
    if (strcmp(path, "backup/container.bin") == 0) {
        *tree = g_strdup("");
        return PLACE_OPTIMIZED;
    }
    if (g_str_has_prefix(path, "backup/container") &&
        (path[strlen("backup/container")] == '\0' || path[strlen("backup/container")] == '/')) {
        const char *r = path + strlen("backup/container");
        *tree = g_strdup("");
        *rest = *r == '/' ? r + 1 : r;
        return PLACE_TREE;
    }
    if (g_str_has_prefix(path, "backup/snapshots/")) {
        const char *name = path + strlen("backup/snapshots/");
        const char *slash = strchr(name, '/');
        if (slash == NULL && strlen(name) > strlen(".bin") && g_str_has_suffix(name, ".bin")) {
            *tree = g_strndup(name, strlen(name) - strlen(".bin"));
            return PLACE_OPTIMIZED;
        }
        *tree = slash != NULL ? g_strndup(name, slash - name) : g_strdup(name);
        *rest = slash != NULL ? slash + 1 : "";
        return PLACE_TREE;
    }
    return PLACE_UNKNOWN;
}

static gboolean end_tree(ReadState *state, GError **error)
{
    if (state->tree == NULL)
        return TRUE;
    g_autofree char *tree = g_steal_pointer(&state->tree);
    g_autoptr(ImageExtractor) extractor = g_steal_pointer(&state->extractor);
    g_hash_table_add(state->done_trees, g_strdup(tree));
    if (!image_extractor_finish(extractor, error))
        return FALSE;
    return state->callbacks->tree_end(*tree != '\0' ? tree : NULL, state->user_data, error);
}

static gboolean snapshot_listed(FerryBackupIndex *index, const char *name)
{
    for (guint i = 0; i < index->snapshots->len; i++) {
        if (g_str_equal(index->snapshots->pdata[i], name))
            return TRUE;
    }
    return FALSE;
}

static gboolean begin_tree(ReadState *state, const char *tree, GError **error)
{
    if (state->tree != NULL && g_str_equal(state->tree, tree))
        return TRUE;
    if (!end_tree(state, error))
        return FALSE;
    if (*tree != '\0' && !snapshot_listed(state->index, tree)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid backup: snapshot \"%s\" has data but is not listed in index.yaml", tree);
        return FALSE;
    }
    if (g_hash_table_contains(state->done_trees, tree)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid backup: the entries of %s%s%s are not together",
                    *tree != '\0' ? "snapshot \"" : "the instance", tree, *tree != '\0' ? "\"" : "");
        return FALSE;
    }
    guint32 shift = 0;
    g_autofree char *dest =
        state->callbacks->tree_begin(*tree != '\0' ? tree : NULL, &shift, state->user_data, error);
    if (dest == NULL)
        return FALSE;
    state->extractor =
        image_extractor_new(dest, state->reader, progress_trampoline, state, state->cancellable, error);
    if (state->extractor == NULL)
        return FALSE;
    state->tree = g_strdup(tree);
    state->shift = shift;
    return TRUE;
}

static gboolean read_index(ReadState *state, GError **error)
{
    g_autoptr(GBytes) bytes =
        image_reader_data_all(state->reader, "index.yaml", FERRY_BACKUP_INDEX_MAX, error);
    if (bytes == NULL)
        return FALSE;
    gsize size = 0;
    const char *text = g_bytes_get_data(bytes, &size);
    state->index = ferry_backup_index_parse(text != NULL ? text : "", size, error);
    if (state->index == NULL)
        return FALSE;
    if (state->index->optimized && state->callbacks->optimized_stream == NULL) {
        g_set_error(
            error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
            "Optimized backups (%s storage streams) can't be imported here: export the instance without "
            "--optimized-storage",
            state->index->backend != NULL ? state->index->backend : "driver");
        return FALSE;
    }
    return state->callbacks->index(state->index, state->user_data, error);
}

/* ---- optimized backups: storage streams instead of trees ---- */

static gssize stream_read(gpointer data, void *buffer, gsize size, GError **error)
{
    ReadState *state = data;
    while (state->block_left == 0) {
        const void *block = NULL;
        gsize length = 0;
        gint64 offset = 0;
        if (!image_reader_data_block(state->reader, &block, &length, &offset, error))
            return -1;
        if (length == 0)
            return 0;
        /* A sparse entry would need zeros the stream never had: no writer makes one of a .bin. */
        if (offset != state->block_end) {
            g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                                "Invalid backup: a storage stream is stored as a sparse file");
            return -1;
        }
        state->block = block;
        state->block_left = length;
        state->block_end = offset + (gint64)length;
        progress_trampoline(image_reader_consumed(state->reader), image_reader_size(state->reader), state);
    }
    gsize n = MIN(size, state->block_left);
    memcpy(buffer, state->block, n);
    state->block += n;
    state->block_left -= n;
    return (gssize)n;
}

static gboolean handle_stream(ReadState *state, const char *path, const char *tree, GError **error)
{
    guint count = state->index->snapshots->len;
    if (state->streams > count) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid backup: \"%s\" comes after the instance", path);
        return FALSE;
    }
    const char *expected = state->streams < count ? state->index->snapshots->pdata[state->streams] : "";
    if (!g_str_equal(tree, expected)) {
        if (*tree != '\0' && !snapshot_listed(state->index, tree))
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid backup: \"%s\" is not a snapshot listed in index.yaml", path);
        else
            g_set_error(
                error, FERRY_ERROR, FERRY_ERROR_INVALID,
                "Invalid backup: \"%s\" is out of order (each snapshot's stream oldest first, then the "
                "instance's: backup/%s%s.bin expected)",
                path, *expected != '\0' ? "snapshots/" : "container", expected);
        return FALSE;
    }
    state->streams++;
    state->block = NULL;
    state->block_left = 0;
    state->block_end = 0;
    if (!state->callbacks->optimized_stream(*tree != '\0' ? tree : NULL, stream_read, state, state->user_data,
                                            error))
        return FALSE;
    guint8 rest[1];
    gssize more = stream_read(state, rest, sizeof(rest), error);
    if (more != 0) {
        if (more > 0)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid backup: \"%s\" has data after the end of its stream", path);
        return FALSE;
    }
    g_hash_table_add(state->done_trees, g_strdup(tree));
    return TRUE;
}

static gboolean handle_optimized_entry(ReadState *state, Place place, const char *path, const char *tree,
                                       mode_t type, const char *hardlink, GError **error)
{
    if (place != PLACE_OPTIMIZED && place != PLACE_OPTIMIZED_HEADER) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid backup: unexpected entry \"%s\" in an optimized backup", path);
        return FALSE;
    }
    if (type != AE_IFREG || hardlink != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid backup: \"%s\" is not a regular file",
                    path);
        return FALSE;
    }
    if (place == PLACE_OPTIMIZED)
        return handle_stream(state, path, tree, error);
    if (state->streams > 0) {
        g_set_error_literal(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "Invalid backup: backup/optimized_header.yaml comes after a storage stream");
        return FALSE;
    }
    g_autoptr(GBytes) bytes =
        image_reader_data_all(state->reader, "optimized_header.yaml", FERRY_BACKUP_INDEX_MAX, error);
    if (bytes == NULL)
        return FALSE;
    gsize size = 0;
    const char *text = g_bytes_get_data(bytes, &size);
    g_autoptr(GError) parse_error = NULL;
    g_autoptr(json_t) header = ferry_yaml_parse(text != NULL ? text : "", size, &parse_error);
    if (header == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid backup: backup/optimized_header.yaml: %s", parse_error->message);
        return FALSE;
    }
    return state->callbacks->optimized_header == NULL ||
           state->callbacks->optimized_header(header, state->user_data, error);
}

/* Check one entry, work out its place and write it. */
static gboolean handle_entry(ReadState *state, struct archive_entry *entry, GError **error);

static gboolean open_failed(GError *open_error, GError **error)
{
    if (g_error_matches(open_error, FERRY_ERROR, FERRY_ERROR_INVALID) &&
        g_str_has_suffix(open_error->message, "is not a tarball")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Backup file is not a tarball, or its compression is unknown (supported: zstd, gzip, xz, "
                    "bzip2, lzma, lz4 or none)");
        g_error_free(open_error);
    } else {
        g_propagate_error(error, open_error);
    }
    return FALSE;
}

static gboolean read_all(ImageReader *reader, const FerryBackupReadCallbacks *callbacks, gpointer user_data,
                         GCancellable *cancellable, GError **error)
{
    ReadState state = {
        .callbacks = callbacks,
        .user_data = user_data,
        .cancellable = cancellable,
        .reader = reader,
        .done_trees = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL),
    };
    gboolean ok = FALSE;
    for (;;) {
        struct archive_entry *entry = NULL;
        if (!image_reader_next(reader, &entry, error))
            goto out;
        if (entry == NULL)
            break;
        if (!handle_entry(&state, entry, error))
            goto out;
    }
    if (state.index == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid backup: no backup/index.yaml");
        goto out;
    }
    if (!end_tree(&state, error))
        goto out;
    if (!g_hash_table_contains(state.done_trees, "")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid backup: no backup/container%s",
                    state.index->optimized ? ".bin" : "");
        goto out;
    }
    for (guint i = 0; i < state.index->snapshots->len; i++) {
        if (!g_hash_table_contains(state.done_trees, state.index->snapshots->pdata[i])) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid backup: snapshot \"%s\" is listed in index.yaml but has no data",
                        (const char *)state.index->snapshots->pdata[i]);
            goto out;
        }
    }
    if (callbacks->progress != NULL)
        callbacks->progress(image_reader_consumed(reader),
                            MAX(image_reader_size(reader), image_reader_consumed(reader)), user_data);
    ok = TRUE;
out:
    g_clear_pointer(&state.extractor, image_extractor_free);
    g_free(state.tree);
    g_hash_table_unref(state.done_trees);
    ferry_backup_index_free(state.index);
    return ok;
}

static gboolean handle_entry(ReadState *state, struct archive_entry *entry, GError **error)
{
    const char *raw = archive_entry_pathname(entry);
    if (raw == NULL)
        raw = archive_entry_pathname_utf8(entry);
    if (raw == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid backup: an entry has no valid name");
        return FALSE;
    }
    g_autofree char *path = normalise_path(raw, "path", error);
    if (path == NULL)
        return FALSE;
    g_autofree char *tree = NULL;
    const char *rest = NULL;
    Place place = classify(path, &tree, &rest);
    mode_t type = archive_entry_filetype(entry);
    const char *hardlink_raw = archive_entry_hardlink(entry);

    if (place == PLACE_INDEX) {
        if (state->index != NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid backup: index.yaml appears twice");
            return FALSE;
        }
        if (type != AE_IFREG || hardlink_raw != NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid backup: index.yaml is not a regular file");
            return FALSE;
        }
        return read_index(state, error);
    }
    if (state->index == NULL) {
        if (place == PLACE_SKIP && type == AE_IFDIR)
            return TRUE;
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid backup: backup/index.yaml is missing or not the first entry (found \"%s\")",
                    path);
        return FALSE;
    }
    if (place == PLACE_SKIP)
        return image_reader_skip_data(state->reader, error);
    if (state->index->optimized)
        return handle_optimized_entry(state, place, path, tree, type, hardlink_raw, error);
    if (place == PLACE_OPTIMIZED || place == PLACE_OPTIMIZED_HEADER) {
        g_set_error(
            error, FERRY_ERROR, FERRY_ERROR_INVALID,
            "Invalid backup: \"%s\" is an optimized storage stream but index.yaml says it is not optimized",
            path);
        return FALSE;
    }
    if (place == PLACE_UNKNOWN) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid backup: unexpected entry \"%s\"", path);
        return FALSE;
    }
    if (*tree != '\0' && !ferry_validate_snapshot_name(tree, NULL)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid backup: bad snapshot directory \"%s\"",
                    path);
        return FALSE;
    }
    if (*rest == '\0') {
        /* The tree's own directory: its data comes next. */
        if (type != AE_IFDIR || hardlink_raw != NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid backup: \"%s\" is not a directory",
                        path);
            return FALSE;
        }
        return begin_tree(state, tree, error);
    }
    if (strcmp(rest, "backup.yaml") == 0)
        return image_reader_skip_data(state->reader, error); /* rebuilt from the records, as Incus does */
    if (!begin_tree(state, tree, error))
        return FALSE;

    g_auto(ImageEntryInfo) info = {0};
    info.path = g_strdup(rest);
    info.type = type;
    info.section = IMAGE_SECTION_NONE;
    if (hardlink_raw != NULL) {
        g_autofree char *target = normalise_path(hardlink_raw, "hard link", error);
        if (target == NULL)
            return FALSE;
        g_autofree char *target_tree = NULL;
        const char *target_rest = NULL;
        if (classify(target, &target_tree, &target_rest) != PLACE_TREE || g_strcmp0(target_tree, tree) != 0 ||
            *target_rest == '\0' || strcmp(target_rest, "backup.yaml") == 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Unsafe hard link \"%s\" in backup: its target \"%s\" is outside its tree", raw,
                        hardlink_raw);
            return FALSE;
        }
        info.hardlink = g_strdup(target_rest);
        info.type = 0;
    } else if (type == AE_IFLNK) {
        const char *target = archive_entry_symlink(entry);
        if (target == NULL || *target == '\0' || strlen(target) >= PATH_MAX) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid backup: symbolic link \"%s\" has an invalid target", raw);
            return FALSE;
        }
        info.symlink = g_strdup(target);
    } else {
        switch (type) {
        case AE_IFREG:
        case AE_IFDIR:
        case AE_IFCHR:
        case AE_IFBLK:
        case AE_IFIFO:
        case AE_IFSOCK:
            break;
        default:
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid backup: \"%s\" has an unsupported file type", raw);
            return FALSE;
        }
    }
    /* Only the container's files are in its id map; metadata.yaml and templates/ are the daemon's. */
    gboolean in_rootfs = strcmp(rest, "rootfs") == 0 || g_str_has_prefix(rest, "rootfs/");
    guint32 shift = in_rootfs ? state->shift : 0;
    return image_extractor_write(state->extractor, entry, &info, shift, shift, error);
}

gboolean ferry_backup_archive_read(const char *path, const FerryBackupReadCallbacks *callbacks,
                                   gpointer user_data, GCancellable *cancellable, GError **error)
{
    g_autoptr(GError) open_error = NULL;
    g_autoptr(ImageReader) reader = image_reader_open_kind(path, "Backup", FALSE, cancellable, &open_error);
    if (reader == NULL)
        return open_failed(g_steal_pointer(&open_error), error);
    return read_all(reader, callbacks, user_data, cancellable, error);
}

gboolean ferry_backup_archive_read_stream(ImageReadFunc read, gpointer read_data, guint64 size,
                                          const FerryBackupReadCallbacks *callbacks, gpointer user_data,
                                          GCancellable *cancellable, GError **error)
{
    g_autoptr(GError) open_error = NULL;
    g_autoptr(ImageReader) reader =
        image_reader_open_stream(read, read_data, size, "Backup", cancellable, &open_error);
    if (reader == NULL)
        return open_failed(g_steal_pointer(&open_error), error);
    return read_all(reader, callbacks, user_data, cancellable, error);
}
