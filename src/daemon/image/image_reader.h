/* Reading an image tarball with libarchive: a file reader that hashes and counts the bytes it hands to
 * libarchive and honours a GCancellable, libarchive errors turned into ferry errors, and the checks every
 * entry must pass (path normalisation, which part of a unified image it belongs to, allowed types). */
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <gio/gio.h>

G_BEGIN_DECLS

typedef enum {
    IMAGE_SECTION_NONE,      /* anything else: ignored */
    IMAGE_SECTION_METADATA,  /* metadata.yaml */
    IMAGE_SECTION_ROOTFS,    /* rootfs and below */
    IMAGE_SECTION_TEMPLATES, /* templates and below */
    IMAGE_SECTION_VM_DISK,   /* rootfs.img: a virtual-machine image */
} ImageSection;

typedef struct ImageReader ImageReader;

/* Open the tarball for reading; with hash, a sha256 of every byte of the file is kept. */
ImageReader *image_reader_open(const char *path, gboolean hash, GCancellable *cancellable, GError **error);
/* The same for another kind of tarball: kind ("Backup") starts the error messages instead of "Image". */
ImageReader *image_reader_open_kind(const char *path, const char *kind, gboolean hash, GCancellable *cancellable,
                                    GError **error);
void image_reader_free(ImageReader *reader);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImageReader, image_reader_free)

/* Reads up to size bytes into buffer: the count, 0 at the end, -1 with error set. */
typedef gssize (*ImageReadFunc)(void *buffer, gsize size, gpointer user_data, GError **error);
/* A reader of a stream (an upload as it arrives): size is its length when known (0: unknown), for progress. */
ImageReader *image_reader_open_stream(ImageReadFunc read, gpointer user_data, guint64 size, const char *kind,
                                      GCancellable *cancellable, GError **error);

/* The next header: TRUE with *entry set, TRUE with *entry NULL at the end of the archive. */
gboolean image_reader_next(ImageReader *reader, struct archive_entry **entry, GError **error);

/* The next block of the current entry's data at *offset (sparse files skip holes); *size 0 at its end. */
gboolean image_reader_data_block(ImageReader *reader, const void **buffer, gsize *size, gint64 *offset,
                                 GError **error);

/* Read the rest of the current entry's data, up to limit bytes (a larger entry is an error naming it). */
GBytes *image_reader_data_all(ImageReader *reader, const char *name, gsize limit, GError **error);

gboolean image_reader_skip_data(ImageReader *reader, GError **error);

/* Bytes of the file read so far, and its size. */
guint64 image_reader_consumed(ImageReader *reader);
guint64 image_reader_size(ImageReader *reader);

/* After the last entry: read what follows the end of the archive and return the sha256 hex of the
 * whole file (the reader must have been opened with hash). */
char *image_reader_finish_hash(ImageReader *reader, GError **error);

typedef struct {
    char *path;           /* normalised: no leading "/" or "./", no empty, "." or ".." components */
    ImageSection section;
    gboolean section_root; /* the entry is "rootfs" or "templates" itself */
    char *hardlink;       /* normalised target of a hard link, else NULL */
    char *symlink;        /* target of a symbolic link as stored (never followed), else NULL */
    mode_t type;          /* AE_IFREG, AE_IFDIR... (0 for hard links) */
} ImageEntryInfo;

void image_entry_info_clear(ImageEntryInfo *info);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(ImageEntryInfo, image_entry_info_clear)

/* Check an entry as far as the archive alone allows: absolute paths and '..' components (in names and
 * hard link targets), hard links leaving their tree, rootfs/templates that are not directories,
 * metadata.yaml that is not a regular file, links/devices under templates/. Errors are FERRY_ERROR_INVALID.
 * The archive root ("./") comes back with an empty path and IMAGE_SECTION_NONE. */
gboolean image_entry_describe(struct archive_entry *entry, ImageEntryInfo *info, GError **error);

G_END_DECLS
