#include "backup_writer.h"

#include "error.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/posix_acl.h>
#include <linux/posix_acl_xattr.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define DATA_CHUNK (1024 * 1024)
/* Deeper trees than this are refused rather than holding a directory fd per level. */
#define MAX_DEPTH 512

struct FerryBackupWriter {
    struct archive *archive;
    struct archive_entry *entry;
    FerryBackupWriteFunc write;
    gpointer write_data;
    GError *write_error;
    GCancellable *cancellable;
    FerryBackupProgressFunc progress;
    gpointer progress_data;
    guint64 done;
    guint64 file_left; /* data still owed to the entry begun by ferry_backup_writer_begin_file() */
    GHashTable *links; /* "dev:ino" -> archive path of the first name of a hard-linked inode */
    guint8 *buffer;
    guint8 *zeros;
    /* the tree being added */
    guint32 base;
    guint32 range;
    dev_t root_dev;
};

gboolean ferry_backup_compression_parse(const char *name, FerryBackupCompression *out, GError **error)
{
    if (name == NULL || *name == '\0' || g_str_equal(name, "zstd"))
        *out = FERRY_BACKUP_COMPRESSION_ZSTD;
    else if (g_str_equal(name, "gzip"))
        *out = FERRY_BACKUP_COMPRESSION_GZIP;
    else if (g_str_equal(name, "xz"))
        *out = FERRY_BACKUP_COMPRESSION_XZ;
    else if (g_str_equal(name, "none"))
        *out = FERRY_BACKUP_COMPRESSION_NONE;
    else {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Unsupported compression algorithm \"%s\" (choose zstd, gzip, xz or none)", name);
        return FALSE;
    }
    return TRUE;
}

const char *ferry_backup_compression_name(FerryBackupCompression compression)
{
    static const char *const names[] = {"none", "zstd", "gzip", "xz"};
    return names[compression];
}

const char *ferry_backup_compression_extension(FerryBackupCompression compression)
{
    static const char *const extensions[] = {".tar", ".tar.zst", ".tar.gz", ".tar.xz"};
    return extensions[compression];
}

static void report(FerryBackupWriter *writer, gsize bytes);

static la_ssize_t on_write(struct archive *archive, void *data, const void *buffer, size_t length)
{
    FerryBackupWriter *writer = data;
    if (writer->write_error == NULL &&
        !writer->write(buffer, length, writer->write_data, &writer->write_error)) {
        archive_set_error(archive, EIO, "%s", writer->write_error->message);
        return -1;
    }
    return writer->write_error == NULL ? (la_ssize_t)length : -1;
}

static gboolean set_archive_error(FerryBackupWriter *writer, const char *what, GError **error)
{
    if (writer->write_error != NULL) {
        g_propagate_error(error, g_steal_pointer(&writer->write_error));
        return FALSE;
    }
    const char *message = archive_error_string(writer->archive);
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to write the backup (%s): %s", what,
                message != NULL ? message : "unknown error");
    return FALSE;
}

FerryBackupWriter *ferry_backup_writer_new(FerryBackupCompression compression, FerryBackupWriteFunc write,
                                           gpointer user_data, GCancellable *cancellable, GError **error)
{
    g_autoptr(FerryBackupWriter) writer = g_new0(FerryBackupWriter, 1);
    writer->write = write;
    writer->write_data = user_data;
    writer->cancellable = cancellable != NULL ? g_object_ref(cancellable) : NULL;
    writer->links = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    writer->buffer = g_malloc(DATA_CHUNK);
    writer->zeros = g_malloc0(DATA_CHUNK);
    writer->entry = archive_entry_new();
    writer->archive = archive_write_new();
    archive_write_set_format_pax(writer->archive);
    g_autofree char *threads = g_strdup_printf("%u", MAX(g_get_num_processors(), 1));
    int r = ARCHIVE_OK;
    switch (compression) {
    case FERRY_BACKUP_COMPRESSION_ZSTD:
        r = archive_write_add_filter_zstd(writer->archive);
        /* Level 3 is zstd's own default; the threads option needs a libzstd built with them. */
        if (r == ARCHIVE_OK &&
            archive_write_set_filter_option(writer->archive, "zstd", "threads", threads) < ARCHIVE_OK)
            g_debug("zstd without threads: %s", archive_error_string(writer->archive));
        break;
    case FERRY_BACKUP_COMPRESSION_GZIP:
        r = archive_write_add_filter_gzip(writer->archive);
        break;
    case FERRY_BACKUP_COMPRESSION_XZ:
        r = archive_write_add_filter_xz(writer->archive);
        if (r == ARCHIVE_OK &&
            archive_write_set_filter_option(writer->archive, "xz", "threads", threads) < ARCHIVE_OK)
            g_debug("xz without threads: %s", archive_error_string(writer->archive));
        break;
    case FERRY_BACKUP_COMPRESSION_NONE:
        break;
    }
    if (r != ARCHIVE_OK) {
        set_archive_error(writer, ferry_backup_compression_name(compression), error);
        return NULL;
    }
    /* Big blocks for few write calls; no padding of the last one beyond tar's own end blocks. */
    archive_write_set_bytes_per_block(writer->archive, 256 * 1024);
    archive_write_set_bytes_in_last_block(writer->archive, 1);
    if (archive_write_open2(writer->archive, writer, NULL, on_write, NULL, NULL) != ARCHIVE_OK) {
        set_archive_error(writer, "open", error);
        return NULL;
    }
    return g_steal_pointer(&writer);
}

void ferry_backup_writer_free(FerryBackupWriter *writer)
{
    if (writer == NULL)
        return;
    if (writer->archive != NULL)
        archive_write_free(writer->archive); /* after a failure: no close, nothing more is written */
    if (writer->entry != NULL)
        archive_entry_free(writer->entry);
    g_clear_error(&writer->write_error);
    g_clear_object(&writer->cancellable);
    g_hash_table_unref(writer->links);
    g_free(writer->buffer);
    g_free(writer->zeros);
    g_free(writer);
}

void ferry_backup_writer_set_progress(FerryBackupWriter *writer, FerryBackupProgressFunc progress,
                                      gpointer user_data)
{
    writer->progress = progress;
    writer->progress_data = user_data;
}

gboolean ferry_backup_writer_close(FerryBackupWriter *writer, GError **error)
{
    if (archive_write_close(writer->archive) != ARCHIVE_OK)
        return set_archive_error(writer, "close", error);
    return TRUE;
}

gboolean ferry_backup_writer_begin_file(FerryBackupWriter *writer, const char *path, guint64 size,
                                        mode_t mode, GError **error)
{
    struct archive_entry *entry = writer->entry;
    archive_entry_clear(entry);
    archive_entry_set_pathname(entry, path);
    archive_entry_set_filetype(entry, AE_IFREG);
    archive_entry_set_perm(entry, mode & 07777);
    archive_entry_set_size(entry, (la_int64_t)size);
    archive_entry_set_mtime(entry, g_get_real_time() / G_USEC_PER_SEC, 0);
    if (archive_write_header(writer->archive, entry) != ARCHIVE_OK)
        return set_archive_error(writer, path, error);
    writer->file_left = size;
    return TRUE;
}

gboolean ferry_backup_writer_write_data(FerryBackupWriter *writer, const void *data, gsize size,
                                        GError **error)
{
    /* libarchive would silently drop what goes past the size in the header: that must never happen. */
    if (size > writer->file_left) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "Failed to write the backup: %s has more data than its size said",
                    archive_entry_pathname(writer->entry));
        return FALSE;
    }
    if (size > 0 && archive_write_data(writer->archive, data, size) != (la_ssize_t)size)
        return set_archive_error(writer, archive_entry_pathname(writer->entry), error);
    writer->file_left -= size;
    report(writer, size);
    return TRUE;
}

gboolean ferry_backup_writer_end_file(FerryBackupWriter *writer, GError **error)
{
    /* libarchive would pad a short entry with zeros: a corrupt member, so refuse instead. */
    if (writer->file_left != 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                    "Failed to write the backup: %s has %" G_GUINT64_FORMAT
                    " bytes less data than its size said",
                    archive_entry_pathname(writer->entry), writer->file_left);
        return FALSE;
    }
    if (archive_write_finish_entry(writer->archive) != ARCHIVE_OK)
        return set_archive_error(writer, archive_entry_pathname(writer->entry), error);
    return TRUE;
}

gboolean ferry_backup_writer_add_file(FerryBackupWriter *writer, const char *path, const void *data,
                                      gsize size, mode_t mode, GError **error)
{
    if (!ferry_backup_writer_begin_file(writer, path, size, mode, error))
        return FALSE;
    if (size > 0 && archive_write_data(writer->archive, data, size) != (la_ssize_t)size)
        return set_archive_error(writer, path, error);
    writer->file_left = 0;
    return ferry_backup_writer_end_file(writer, error);
}

/* ---- ids ---- */

static guint32 unshift(FerryBackupWriter *writer, guint32 id)
{
    if (writer->range > 0 && id >= writer->base && id - writer->base < writer->range)
        return id - writer->base;
    return id;
}

static void unshift_acl(FerryBackupWriter *writer, guint8 *value, gsize size)
{
    const gsize header = sizeof(struct posix_acl_xattr_header);
    const gsize entry_size = sizeof(struct posix_acl_xattr_entry);
    if (size < header || (size - header) % entry_size != 0)
        return;
    for (gsize offset = header; offset < size; offset += entry_size) {
        struct posix_acl_xattr_entry e;
        memcpy(&e, value + offset, entry_size);
        guint16 tag = GUINT16_FROM_LE(e.e_tag);
        if (tag != ACL_USER && tag != ACL_GROUP)
            continue;
        e.e_id = GUINT32_TO_LE(unshift(writer, GUINT32_FROM_LE(e.e_id)));
        memcpy(value + offset, &e, entry_size);
    }
}

/* A v3 capability whose root is the container's root becomes the v2 form, which every importer shifts to
 * its own root. Returns the new size. */
static gsize unshift_caps(FerryBackupWriter *writer, guint8 *value, gsize size)
{
    struct vfs_ns_cap_data caps;
    if (size != XATTR_CAPS_SZ_3)
        return size;
    memcpy(&caps, value, size);
    guint32 magic = GUINT32_FROM_LE(caps.magic_etc);
    if ((magic & VFS_CAP_REVISION_MASK) != VFS_CAP_REVISION_3)
        return size;
    guint32 rootid = unshift(writer, GUINT32_FROM_LE(caps.rootid));
    if (rootid != 0) {
        caps.rootid = GUINT32_TO_LE(rootid);
        memcpy(value, &caps, size);
        return size;
    }
    caps.magic_etc = GUINT32_TO_LE((magic & ~VFS_CAP_REVISION_MASK) | VFS_CAP_REVISION_2);
    memcpy(value, &caps, XATTR_CAPS_SZ_2);
    return XATTR_CAPS_SZ_2;
}

/* ---- xattrs ---- */

static gboolean xattr_wanted(const char *name)
{
    return g_str_has_prefix(name, "user.") || g_str_has_prefix(name, "trusted.") ||
           g_str_has_prefix(name, "security.") || strcmp(name, "system.posix_acl_access") == 0 ||
           strcmp(name, "system.posix_acl_default") == 0;
}

static ssize_t list_xattrs(int fd, const char *path, char *list, size_t size)
{
    return fd >= 0 ? flistxattr(fd, list, size) : llistxattr(path, list, size);
}

static ssize_t get_xattr(int fd, const char *path, const char *name, void *value, size_t size)
{
    return fd >= 0 ? fgetxattr(fd, name, value, size) : lgetxattr(path, name, value, size);
}

static gboolean unsupported_errno(int e)
{
    return e == ENOTSUP || e == EOPNOTSUPP || e == ENODATA;
}

/* xattrs through the entry's fd, or (links, devices, FIFOs: no fd) by path through the parent's fd. */
static gboolean add_xattrs(FerryBackupWriter *writer, int fd, int parent_fd, const char *name,
                           const char *archive_path, GError **error)
{
    g_autofree char *path = fd < 0 ? g_strdup_printf("/proc/self/fd/%d/%s", parent_fd, name) : NULL;
    ssize_t size = list_xattrs(fd, path, NULL, 0);
    if (size <= 0) {
        if (size < 0 && !unsupported_errno(errno)) {
            ferry_set_error_errno(error, errno, "Failed to list the extended attributes of \"%s\"",
                                  archive_path);
            return FALSE;
        }
        return TRUE;
    }
    g_autofree char *list = g_malloc(size + 1);
    size = list_xattrs(fd, path, list, size);
    if (size < 0) {
        if (errno == ERANGE || unsupported_errno(errno))
            return TRUE; /* changed under us: a running container; what we have is as good as any */
        ferry_set_error_errno(error, errno, "Failed to list the extended attributes of \"%s\"", archive_path);
        return FALSE;
    }
    for (char *key = list; key < list + size; key += strlen(key) + 1) {
        if (!xattr_wanted(key))
            continue;
        ssize_t length = get_xattr(fd, path, key, NULL, 0);
        if (length < 0)
            continue;
        g_autofree guint8 *value = g_malloc(MAX(length, 1));
        length = get_xattr(fd, path, key, value, length);
        if (length < 0)
            continue;
        if (g_str_has_prefix(key, "system.posix_acl_"))
            unshift_acl(writer, value, length);
        else if (strcmp(key, "security.capability") == 0)
            length = (ssize_t)unshift_caps(writer, value, length);
        archive_entry_xattr_add_entry(writer->entry, key, value, length);
    }
    return TRUE;
}

/* ---- data ---- */

static void report(FerryBackupWriter *writer, gsize bytes)
{
    writer->done += bytes;
    if (writer->progress != NULL)
        writer->progress(writer->done, writer->progress_data);
}

static gboolean write_bytes(FerryBackupWriter *writer, const void *data, gsize size, const char *path,
                            GError **error)
{
    la_ssize_t written = archive_write_data(writer->archive, data, size);
    if (written < 0)
        return set_archive_error(writer, path, error);
    return TRUE;
}

/* Holes go to the archive as zeros, which the pax writer drops again for the entry's sparse map. */
static gboolean write_zeros(FerryBackupWriter *writer, guint64 count, const char *path, GError **error)
{
    while (count > 0) {
        gsize n = MIN(count, DATA_CHUNK);
        if (!write_bytes(writer, writer->zeros, n, path, error))
            return FALSE;
        count -= n;
    }
    return TRUE;
}

static gboolean write_range(FerryBackupWriter *writer, int fd, guint64 offset, guint64 length,
                            const char *path, GError **error)
{
    while (length > 0) {
        if (g_cancellable_set_error_if_cancelled(writer->cancellable, error))
            return FALSE;
        ssize_t n = pread(fd, writer->buffer, MIN(length, DATA_CHUNK), (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ferry_set_error_errno(error, errno, "Failed to read \"%s\"", path);
            return FALSE;
        }
        if (n == 0)
            return write_zeros(writer, length, path,
                               error); /* shrank while we read: keep the header's size */
        if (!write_bytes(writer, writer->buffer, n, path, error))
            return FALSE;
        report(writer, n);
        offset += n;
        length -= n;
    }
    return TRUE;
}

typedef struct {
    guint64 offset;
    guint64 length;
} DataRange;

/* The data ranges of a file with holes (SEEK_DATA/SEEK_HOLE); NULL when it has none worth mapping. */
static GArray *data_ranges(int fd, const struct stat *st)
{
    if (st->st_size == 0 || (guint64)st->st_blocks * 512 >= (guint64)st->st_size)
        return NULL;
    GArray *ranges = g_array_new(FALSE, FALSE, sizeof(DataRange));
    off_t position = 0;
    while (position < st->st_size) {
        off_t data = lseek(fd, position, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO)
                break; /* only a hole is left */
            g_array_unref(ranges);
            return NULL; /* no SEEK_DATA here: store it whole */
        }
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0 || hole > st->st_size)
            hole = st->st_size;
        DataRange range = {(guint64)data, (guint64)(hole - data)};
        if (range.length > 0)
            g_array_append_val(ranges, range);
        position = hole;
    }
    return ranges;
}

static gboolean write_file_data(FerryBackupWriter *writer, int fd, const struct stat *st, GArray *ranges,
                                const char *path, GError **error)
{
    if (ranges == NULL)
        return write_range(writer, fd, 0, st->st_size, path, error);
    guint64 position = 0;
    for (guint i = 0; i < ranges->len; i++) {
        const DataRange *range = &g_array_index(ranges, DataRange, i);
        if (!write_zeros(writer, range->offset - position, path, error) ||
            !write_range(writer, fd, range->offset, range->length, path, error))
            return FALSE;
        position = range->offset + range->length;
    }
    return write_zeros(writer, (guint64)st->st_size - position, path, error);
}

/* ---- the walk ---- */

static gboolean add_contents(FerryBackupWriter *writer, int dir_fd, const char *archive_dir, guint depth,
                             GError **error);

static gboolean add_entry(FerryBackupWriter *writer, int parent_fd, const char *name,
                          const char *archive_path, guint depth, GError **error)
{
    if (g_cancellable_set_error_if_cancelled(writer->cancellable, error))
        return FALSE;
    struct stat st;
    if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return TRUE; /* gone meanwhile (a running container) */
        ferry_set_error_errno(error, errno, "Failed to stat \"%s\"", archive_path);
        return FALSE;
    }
    if (S_ISSOCK(st.st_mode))
        return TRUE; /* sockets belong to the process that bound them */

    int fd = -1;
    if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
        /* Pin the inode: never through a link, and what we read is what we stat. */
        fd = openat(parent_fd, name,
                    O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
                        (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0));
        if (fd < 0) {
            if (errno == ENOENT || errno == ELOOP || errno == ENOTDIR)
                return TRUE; /* replaced meanwhile */
            ferry_set_error_errno(error, errno, "Failed to open \"%s\"", archive_path);
            return FALSE;
        }
        if (fstat(fd, &st) < 0) {
            ferry_set_error_errno(error, errno, "Failed to stat \"%s\"", archive_path);
            close(fd);
            return FALSE;
        }
    }
    gboolean ok = FALSE;
    g_autoptr(GArray) ranges = NULL;
    struct archive_entry *entry = writer->entry;
    archive_entry_clear(entry);
    archive_entry_set_pathname(entry, archive_path);
    archive_entry_set_mode(entry, st.st_mode);
    archive_entry_set_uid(entry, unshift(writer, st.st_uid));
    archive_entry_set_gid(entry, unshift(writer, st.st_gid));
    archive_entry_set_mtime(entry, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);

    if (S_ISREG(st.st_mode) && st.st_nlink > 1) {
        g_autofree char *key = g_strdup_printf("%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
        const char *first = g_hash_table_lookup(writer->links, key);
        if (first != NULL) {
            archive_entry_set_hardlink(entry, first);
            archive_entry_set_size(entry, 0);
            if (archive_write_header(writer->archive, entry) != ARCHIVE_OK) {
                set_archive_error(writer, archive_path, error);
                goto out;
            }
            ok = TRUE;
            goto out;
        }
        g_hash_table_insert(writer->links, g_steal_pointer(&key), g_strdup(archive_path));
    }
    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX + 1];
        ssize_t n = readlinkat(parent_fd, name, target, PATH_MAX);
        if (n < 0) {
            ferry_set_error_errno(error, errno, "Failed to read the link \"%s\"", archive_path);
            goto out;
        }
        target[n] = '\0';
        archive_entry_set_symlink(entry, target);
    } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
        archive_entry_set_rdev(entry, st.st_rdev);
    } else if (S_ISREG(st.st_mode)) {
        archive_entry_set_size(entry, st.st_size);
        ranges = data_ranges(fd, &st);
        for (guint i = 0; ranges != NULL && i < ranges->len; i++) {
            const DataRange *range = &g_array_index(ranges, DataRange, i);
            archive_entry_sparse_add_entry(entry, (la_int64_t)range->offset, (la_int64_t)range->length);
        }
    }
    if (!add_xattrs(writer, fd, parent_fd, name, archive_path, error))
        goto out;
    if (archive_write_header(writer->archive, entry) != ARCHIVE_OK) {
        set_archive_error(writer, archive_path, error);
        goto out;
    }
    if (S_ISREG(st.st_mode) && !write_file_data(writer, fd, &st, ranges, archive_path, error))
        goto out;
    if (archive_write_finish_entry(writer->archive) != ARCHIVE_OK) {
        set_archive_error(writer, archive_path, error);
        goto out;
    }
    /* Another filesystem mounted beneath the tree is not part of the volume. */
    if (S_ISDIR(st.st_mode) && st.st_dev == writer->root_dev) {
        if (depth >= MAX_DEPTH) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Directory tree too deep at \"%s\"",
                        archive_path);
            goto out;
        }
        if (!add_contents(writer, fd, archive_path, depth + 1, error))
            goto out;
    }
    ok = TRUE;
out:
    if (fd >= 0)
        close(fd);
    return ok;
}

static gint compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Names in a directory, sorted so that an archive of the same tree comes out the same. */
static GPtrArray *list_directory(int dir_fd, const char *archive_dir, GError **error)
{
    int fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (dir == NULL) {
        ferry_set_error_errno(error, errno, "Failed to read the directory \"%s\"", archive_dir);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    rewinddir(dir);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    struct dirent *d;
    while ((d = readdir(dir)) != NULL) {
        if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0)
            g_ptr_array_add(names, g_strdup(d->d_name));
    }
    closedir(dir);
    g_ptr_array_sort(names, compare_names);
    return names;
}

static gboolean add_contents(FerryBackupWriter *writer, int dir_fd, const char *archive_dir, guint depth,
                             GError **error)
{
    g_autoptr(GPtrArray) names = list_directory(dir_fd, archive_dir, error);
    if (names == NULL)
        return FALSE;
    for (guint i = 0; i < names->len; i++) {
        g_autofree char *path = g_strdup_printf("%s/%s", archive_dir, (const char *)names->pdata[i]);
        if (!add_entry(writer, dir_fd, names->pdata[i], path, depth, error))
            return FALSE;
    }
    return TRUE;
}

gboolean ferry_backup_writer_add_tree(FerryBackupWriter *writer, const char *source_dir, const char *prefix,
                                      guint32 unshift_base, guint32 unshift_range, GError **error)
{
    int fd = open(source_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "Failed to open \"%s\"", source_dir);
        return FALSE;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        ferry_set_error_errno(error, errno, "Failed to stat \"%s\"", source_dir);
        close(fd);
        return FALSE;
    }
    writer->base = unshift_base;
    writer->range = unshift_range;
    writer->root_dev = st.st_dev;
    g_hash_table_remove_all(writer->links);
    /* The root itself is "." relative to its own fd: the same code writes it and walks beneath it. */
    gboolean ok = add_entry(writer, fd, ".", prefix, 0, error);
    close(fd);
    return ok;
}

/* ---- sizes ---- */

static gboolean tree_size(int dir_fd, GHashTable *seen, guint64 *bytes, dev_t root_dev, guint depth,
                          GCancellable *cancellable, GError **error)
{
    if (g_cancellable_set_error_if_cancelled(cancellable, error))
        return FALSE;
    if (depth > MAX_DEPTH)
        return TRUE;
    g_autoptr(GPtrArray) names = list_directory(dir_fd, ".", error);
    if (names == NULL)
        return FALSE;
    for (guint i = 0; i < names->len; i++) {
        struct stat st;
        if (fstatat(dir_fd, names->pdata[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISREG(st.st_mode)) {
            if (st.st_nlink > 1) {
                g_autofree char *key = g_strdup_printf("%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
                if (!g_hash_table_add(seen, g_steal_pointer(&key)))
                    continue;
            }
            *bytes += (guint64)st.st_size;
        } else if (S_ISDIR(st.st_mode) && st.st_dev == root_dev) {
            int fd = openat(dir_fd, names->pdata[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0)
                continue;
            gboolean ok = tree_size(fd, seen, bytes, root_dev, depth + 1, cancellable, error);
            close(fd);
            if (!ok)
                return FALSE;
        }
    }
    return TRUE;
}

gboolean ferry_backup_tree_size(const char *dir, guint64 *bytes_out, GCancellable *cancellable,
                                GError **error)
{
    *bytes_out = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        ferry_set_error_errno(error, errno, "Failed to open \"%s\"", dir);
        if (fd >= 0)
            close(fd);
        return FALSE;
    }
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    gboolean ok = tree_size(fd, seen, bytes_out, st.st_dev, 0, cancellable, error);
    close(fd);
    return ok;
}
