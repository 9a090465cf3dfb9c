#include "image_reader.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_CHUNK (256 * 1024)

/* libarchive's errno for "Unrecognized archive format" (archive_platform.h, not installed). */
#ifndef ARCHIVE_ERRNO_FILE_FORMAT
#define ARCHIVE_ERRNO_FILE_FORMAT EILSEQ
#endif

struct ImageReader {
    struct archive *archive;
    int fd;
    guint64 size;
    guint64 consumed;
    GChecksum *checksum;
    GCancellable *cancellable;
    GError *read_error; /* why the read callback failed, reported instead of libarchive's message */
    gboolean seen_header;
    guint8 *buffer;
    const char *kind; /* "Image" or "Backup", for messages */
    ImageReadFunc read_func; /* a stream instead of fd */
    gpointer read_data;
};

static la_ssize_t read_callback(struct archive *archive, void *data, const void **buffer)
{
    ImageReader *reader = data;
    if (reader->read_error == NULL && g_cancellable_set_error_if_cancelled(reader->cancellable,
                                                                           &reader->read_error)) {
        archive_set_error(archive, ECANCELED, "Cancelled");
        return -1;
    }
    ssize_t n;
    if (reader->read_func != NULL) {
        n = reader->read_func(reader->buffer, READ_CHUNK, reader->read_data, &reader->read_error);
        if (n < 0) {
            archive_set_error(archive, EIO, "Read error");
            return -1;
        }
        reader->consumed += n;
        *buffer = reader->buffer;
        return n;
    }
    do {
        n = read(reader->fd, reader->buffer, READ_CHUNK);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        int saved_errno = errno;
        if (reader->read_error == NULL)
            ferry_set_error_errno(&reader->read_error, saved_errno, "Failed to read the %s tarball",
                                  g_str_equal(reader->kind, "Image") ? "image" : "backup");
        archive_set_error(archive, saved_errno, "Read error");
        return -1;
    }
    if (reader->checksum != NULL)
        g_checksum_update(reader->checksum, reader->buffer, n);
    reader->consumed += n;
    *buffer = reader->buffer;
    return n;
}

static gboolean set_archive_error(ImageReader *reader, GError **error)
{
    if (reader->read_error != NULL) {
        g_propagate_error(error, g_steal_pointer(&reader->read_error));
        return FALSE;
    }
    const char *message = archive_error_string(reader->archive);
    if (message == NULL)
        message = "unknown error";
    if (!reader->seen_header && archive_errno(reader->archive) == ARCHIVE_ERRNO_FILE_FORMAT)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "%s file is not a tarball", reader->kind);
    else
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "%s tarball is corrupt or truncated: %s",
                    reader->kind, message);
    return FALSE;
}

static gboolean open_archive(ImageReader *reader, GCancellable *cancellable, GError **error);

ImageReader *image_reader_open(const char *path, gboolean hash, GCancellable *cancellable, GError **error)
{
    return image_reader_open_kind(path, "Image", hash, cancellable, error);
}

ImageReader *image_reader_open_kind(const char *path, const char *kind, gboolean hash, GCancellable *cancellable,
                                    GError **error)
{
    g_autoptr(ImageReader) reader = g_new0(ImageReader, 1);
    reader->kind = kind;
    g_autofree char *lower = g_ascii_strdown(kind, -1);
    reader->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (reader->fd < 0) {
        int saved_errno = errno;
        if (saved_errno == ENOENT)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "%s file \"%s\" not found", kind, path);
        else
            ferry_set_error_errno(error, saved_errno, "Failed to open %s file \"%s\"", lower, path);
        return NULL;
    }
    struct stat st;
    if (fstat(reader->fd, &st) < 0) {
        ferry_set_error_errno(error, errno, "Failed to stat %s file \"%s\"", lower, path);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || st.st_size == 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "%s file is not a tarball", kind);
        return NULL;
    }
    reader->size = st.st_size;
    reader->checksum = hash ? g_checksum_new(G_CHECKSUM_SHA256) : NULL;
    if (!open_archive(reader, cancellable, error))
        return NULL;
    return g_steal_pointer(&reader);
}

ImageReader *image_reader_open_stream(ImageReadFunc read, gpointer user_data, guint64 size, const char *kind,
                                      GCancellable *cancellable, GError **error)
{
    g_autoptr(ImageReader) reader = g_new0(ImageReader, 1);
    reader->kind = kind;
    reader->fd = -1;
    reader->read_func = read;
    reader->read_data = user_data;
    reader->size = size;
    if (!open_archive(reader, cancellable, error))
        return NULL;
    return g_steal_pointer(&reader);
}

static gboolean open_archive(ImageReader *reader, GCancellable *cancellable, GError **error)
{
    reader->buffer = g_malloc(READ_CHUNK);
    reader->cancellable = cancellable != NULL ? g_object_ref(cancellable) : NULL;

    /* Only tar, and only in-process decompressors: filter_all would also run external programs. */
    reader->archive = archive_read_new();
    archive_read_support_format_tar(reader->archive);
    archive_read_support_filter_gzip(reader->archive);
    archive_read_support_filter_bzip2(reader->archive);
    archive_read_support_filter_xz(reader->archive);
    archive_read_support_filter_lzma(reader->archive);
    archive_read_support_filter_zstd(reader->archive);
    archive_read_support_filter_lz4(reader->archive);
    /* Opening already decompresses the first block: a broken stream can fail here. */
    if (archive_read_open(reader->archive, reader, NULL, read_callback, NULL) != ARCHIVE_OK) {
        set_archive_error(reader, error);
        return FALSE;
    }
    return TRUE;
}

void image_reader_free(ImageReader *reader)
{
    if (reader == NULL)
        return;
    if (reader->archive != NULL)
        archive_read_free(reader->archive);
    if (reader->fd >= 0)
        close(reader->fd);
    if (reader->checksum != NULL)
        g_checksum_free(reader->checksum);
    g_clear_object(&reader->cancellable);
    g_clear_error(&reader->read_error);
    g_free(reader->buffer);
    g_free(reader);
}

gboolean image_reader_next(ImageReader *reader, struct archive_entry **entry, GError **error)
{
    *entry = NULL;
    int r = archive_read_next_header(reader->archive, entry);
    if (r == ARCHIVE_EOF) {
        *entry = NULL;
        return TRUE;
    }
    /* Warnings are about charset conversions and unknown pax keys: the entry is still usable. */
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
        *entry = NULL;
        return set_archive_error(reader, error);
    }
    reader->seen_header = TRUE;
    return TRUE;
}

gboolean image_reader_data_block(ImageReader *reader, const void **buffer, gsize *size, gint64 *offset,
                                 GError **error)
{
    size_t block_size = 0;
    la_int64_t block_offset = 0;
    int r = archive_read_data_block(reader->archive, buffer, &block_size, &block_offset);
    if (r == ARCHIVE_EOF) {
        *size = 0;
        *offset = block_offset;
        return TRUE;
    }
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
        return set_archive_error(reader, error);
    if (block_offset < 0) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "%s tarball is corrupt or truncated: %s",
                    reader->kind, "negative data offset");
        return FALSE;
    }
    *size = block_size;
    *offset = block_offset;
    return TRUE;
}

GBytes *image_reader_data_all(ImageReader *reader, const char *name, gsize limit, GError **error)
{
    g_autoptr(GByteArray) data = g_byte_array_new();
    for (;;) {
        const void *buffer;
        gsize size;
        gint64 offset;
        if (!image_reader_data_block(reader, &buffer, &size, &offset, error))
            return NULL;
        if (size == 0)
            break;
        if ((guint64)offset > limit || size > limit - offset) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid %s tarball: %s is larger than %" G_GSIZE_FORMAT " bytes",
                        g_str_equal(reader->kind, "Image") ? "image" : "backup", name, limit);
            return NULL;
        }
        /* Holes in sparse entries read as zeros. */
        if ((gsize)offset > data->len) {
            gsize old_len = data->len;
            g_byte_array_set_size(data, offset);
            memset(data->data + old_len, 0, offset - old_len);
        }
        if ((gsize)offset < data->len)
            g_byte_array_set_size(data, offset);
        g_byte_array_append(data, buffer, size);
    }
    return g_byte_array_free_to_bytes(g_steal_pointer(&data));
}

gboolean image_reader_skip_data(ImageReader *reader, GError **error)
{
    int r = archive_read_data_skip(reader->archive);
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
        return set_archive_error(reader, error);
    return TRUE;
}

guint64 image_reader_consumed(ImageReader *reader)
{
    return reader->consumed;
}

guint64 image_reader_size(ImageReader *reader)
{
    return reader->size;
}

char *image_reader_finish_hash(ImageReader *reader, GError **error)
{
    g_return_val_if_fail(reader->checksum != NULL, NULL);
    /* libarchive stops at the end-of-archive blocks; the fingerprint covers the whole file. */
    for (;;) {
        if (g_cancellable_set_error_if_cancelled(reader->cancellable, error))
            return NULL;
        ssize_t n = read(reader->fd, reader->buffer, READ_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ferry_set_error_errno(error, errno, "Failed to read the %s tarball",
                                  g_str_equal(reader->kind, "Image") ? "image" : "backup");
            return NULL;
        }
        if (n == 0)
            break;
        g_checksum_update(reader->checksum, reader->buffer, n);
        reader->consumed += n;
    }
    return g_strdup(g_checksum_get_string(reader->checksum));
}

/* ---- entry checks ---- */

void image_entry_info_clear(ImageEntryInfo *info)
{
    g_clear_pointer(&info->path, g_free);
    g_clear_pointer(&info->hardlink, g_free);
    g_clear_pointer(&info->symlink, g_free);
}

static char *normalise_path(const char *raw, GError **error)
{
    if (raw[0] == '/') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Unsafe path \"%s\" in image tarball: absolute paths are not allowed", raw);
        return NULL;
    }
    if (strlen(raw) >= PATH_MAX) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, 
                    "Unsafe path in image tarball: path is too long");
        return NULL;
    }
    g_auto(GStrv) components = g_strsplit(raw, "/", -1);
    g_autoptr(GString) path = g_string_new(NULL);
    for (char **c = components; *c != NULL; c++) {
        if (**c == '\0' || strcmp(*c, ".") == 0)
            continue;
        if (strcmp(*c, "..") == 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Unsafe path \"%s\" in image tarball: '..' components are not allowed", raw);
            return NULL;
        }
        if (path->len > 0)
            g_string_append_c(path, '/');
        g_string_append(path, *c);
    }
    return g_string_free(g_steal_pointer(&path), FALSE);
}

static ImageSection path_section(const char *path, gboolean *section_root)
{
    static const struct {
        const char *name;
        ImageSection section;
        gboolean tree;
    } sections[] = {
        {"metadata.yaml", IMAGE_SECTION_METADATA, FALSE},
        {"rootfs", IMAGE_SECTION_ROOTFS, TRUE},
        {"templates", IMAGE_SECTION_TEMPLATES, TRUE},
        {"rootfs.img", IMAGE_SECTION_VM_DISK, FALSE},
    };
    *section_root = FALSE;
    for (guint i = 0; i < G_N_ELEMENTS(sections); i++) {
        gsize len = strlen(sections[i].name);
        if (strncmp(path, sections[i].name, len) != 0)
            continue;
        if (path[len] == '\0') {
            *section_root = sections[i].tree;
            return sections[i].section;
        }
        if (path[len] == '/' && sections[i].tree)
            return sections[i].section;
    }
    return IMAGE_SECTION_NONE;
}

static gboolean check_type(const ImageEntryInfo *info, GError **error)
{
    switch (info->section) {
    case IMAGE_SECTION_METADATA:
        if (info->hardlink != NULL || info->type != AE_IFREG) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid image tarball: metadata.yaml is not a regular file");
            return FALSE;
        }
        return TRUE;
    case IMAGE_SECTION_ROOTFS:
    case IMAGE_SECTION_TEMPLATES:
        if (info->section_root && (info->hardlink != NULL || info->type != AE_IFDIR)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, 
                        "Invalid image tarball: %s is not a directory",
                        info->path);
            return FALSE;
        }
        if (info->hardlink != NULL)
            return TRUE;
        switch (info->type) {
        case AE_IFREG:
        case AE_IFDIR:
            return TRUE;
        case AE_IFLNK:
        case AE_IFCHR:
        case AE_IFBLK:
        case AE_IFIFO:
        case AE_IFSOCK:
            if (info->section == IMAGE_SECTION_ROOTFS)
                return TRUE;
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid image tarball: \"%s\" is not a regular file or directory", info->path);
            return FALSE;
        default:
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid image tarball: \"%s\" has an unsupported file type", info->path);
            return FALSE;
        }
    default:
        return TRUE;
    }
}

gboolean image_entry_describe(struct archive_entry *entry, ImageEntryInfo *info, GError **error)
{
    memset(info, 0, sizeof(*info));
    /* The bytes as stored: in the C locale libarchive keeps undecodable UTF-8 names raw (with a warning). */
    const char *raw = archive_entry_pathname(entry);
    if (raw == NULL)
        raw = archive_entry_pathname_utf8(entry);
    if (raw == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, 
                    "Image tarball has an entry without a valid name");
        return FALSE;
    }
    info->path = normalise_path(raw, error);
    if (info->path == NULL)
        return FALSE;
    info->section = path_section(info->path, &info->section_root);
    info->type = archive_entry_filetype(entry);

    const char *hardlink = archive_entry_hardlink(entry);
    if (hardlink == NULL)
        hardlink = archive_entry_hardlink_utf8(entry);
    if (hardlink != NULL) {
        info->type = 0;
        info->hardlink = normalise_path(hardlink, error);
        if (info->hardlink == NULL)
            return FALSE;
        gboolean target_root;
        ImageSection target_section = path_section(info->hardlink, &target_root);
        if ((info->section == IMAGE_SECTION_ROOTFS || info->section == IMAGE_SECTION_TEMPLATES) &&
            (target_section != info->section || target_root)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Unsafe hard link \"%s\" in image tarball: its target \"%s\" is outside %s", raw,
                        hardlink, info->section == IMAGE_SECTION_ROOTFS ? "rootfs" : "templates");
            return FALSE;
        }
    } else if (info->type == AE_IFLNK) {
        const char *target = archive_entry_symlink(entry);
        if (target == NULL)
            target = archive_entry_symlink_utf8(entry);
        if (target == NULL || *target == '\0' || strlen(target) >= PATH_MAX) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid image tarball: symbolic link \"%s\" has an invalid target", raw);
            return FALSE;
        }
        info->symlink = g_strdup(target);
    }
    return check_type(info, error);
}
