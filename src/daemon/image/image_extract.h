/* Writing checked archive entries beneath a destination directory without ever leaving it: every path is
 * opened relative to the destination's fd with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), leaves are
 * created afresh, and ownership, modes, xattrs, POSIX ACLs, file capabilities and times are applied with
 * an id shift. */
#pragma once

#include "image_archive.h"
#include "image_reader.h"

G_BEGIN_DECLS

typedef struct ImageExtractor ImageExtractor;

/* dest_dir must exist. progress, when set, is called as data blocks are written. */
ImageExtractor *image_extractor_new(const char *dest_dir, ImageReader *reader, FerryProgressFunc progress,
                                    gpointer user_data, GCancellable *cancellable, GError **error);
void image_extractor_free(ImageExtractor *extractor);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImageExtractor, image_extractor_free)

/* Write the reader's current entry, described (and checked) by info, reading its data. Owners, and ids in
 * ACLs and capabilities, get uid_shift/gid_shift added; missing parent directories are created as
 * uid_shift:gid_shift, mode 0755. */
gboolean image_extractor_write(ImageExtractor *extractor, struct archive_entry *entry,
                               const ImageEntryInfo *info, guint32 uid_shift, guint32 gid_shift,
                               GError **error);

/* Set directory times, which writing their children changed. */
gboolean image_extractor_finish(ImageExtractor *extractor, GError **error);

G_END_DECLS
