/* Incus "unified" image tarballs: metadata.yaml + rootfs/ + optional templates/, in any compression
 * libarchive detects (xz, gzip, zstd, bzip2, lzma, lz4 or none).
 *
 * The daemon keeps an imported image as $FERRY_DIR/images/<fingerprint> (the tarball itself) and unpacks
 * it into each new instance volume, or once into an image volume on copy-on-write pools. */
#pragma once

#include <gio/gio.h>
#include <jansson.h>

G_BEGIN_DECLS

typedef struct {
    char *fingerprint;    /* sha256 hex of the tarball bytes, as Incus computes it for unified images */
    guint64 size;         /* tarball size in bytes */
    char *architecture;   /* metadata.yaml architecture, canonical Incus name ("amd64" becomes "x86_64") */
    gint64 creation_date; /* metadata.yaml creation_date (seconds since the epoch, 0 when absent) */
    json_t *properties;   /* metadata.yaml properties: object of string -> string (never NULL) */
    char *type;           /* "container" (virtual-machine images are refused) */
} FerryImageInfo;

void ferry_image_info_free(FerryImageInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FerryImageInfo, ferry_image_info_free)

/* Canonical Incus name of an architecture or one of its aliases ("amd64" -> "x86_64"), NULL if unknown. */
const char *ferry_image_architecture_canonical(const char *name);

/* Read the whole tarball, hash it and parse metadata.yaml. Every entry is checked as unpack would
 * (absolute paths, '..' components and hard links leaving rootfs/ or templates/ are refused), so an
 * image that inspects cleanly only fails to unpack because of what is already on disk or a symbolic link
 * in a parent path. Errors (FERRY_ERROR_INVALID unless said otherwise):
 *   "Image file is not a tarball", "Image tarball is corrupt or truncated: ...",
 *   "Image tarball has no metadata.yaml", "Invalid metadata.yaml: ...",
 *   "Missing architecture in metadata.yaml", "Unsupported architecture \"...\" in metadata.yaml",
 *   "Image tarball has no rootfs", "Virtual machine images are not supported",
 *   "Unsafe path \"...\" in image tarball: ..."; a missing file is FERRY_ERROR_NOT_FOUND, a read error
 *   FERRY_ERROR_INTERNAL, cancellation G_IO_ERROR_CANCELLED. */
FerryImageInfo *ferry_image_archive_inspect(const char *tarball_path, GCancellable *cancellable,
                                            GError **error);

/* bytes of the (compressed) tarball consumed so far, and its size */
typedef void (*FerryProgressFunc)(guint64 done, guint64 total, gpointer user_data);

/* Unpack metadata.yaml, templates/ and rootfs/ into dest_dir (an existing, normally empty, directory: the
 * instance or image volume); other entries are ignored. Runs as root.
 *
 * Owners under rootfs/ get uid_shift/gid_shift added (0 = privileged), and so do the ids inside POSIX
 * ACLs; file capabilities become namespaced to the shifted root. metadata.yaml and templates/ stay as the
 * archive says, as Incus keeps them: they are read by the daemon, never seen by the container. Modes
 * (setuid included), xattrs, ACLs, hard links, symbolic links, device nodes, FIFOs, sparse files and mtimes
 * are kept; device nodes are left out where the kernel refuses mknod (inside a user namespace), as Incus
 * does, and sockets always.
 *
 * Every path is resolved beneath dest_dir without following symbolic links (openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS), files are created afresh (O_EXCL, never written through an existing link), so a
 * hostile archive cannot write outside dest_dir. Refused with FERRY_ERROR_INVALID: the inspect errors
 * above, entries whose parent path goes through a symbolic link ("Refusing to extract ..."), rootfs or
 * templates that are not directories, symbolic links, devices or FIFOs under templates/ (the template
 * renderer reads those files), hard links whose target is not an earlier entry of the same directory tree.
 * On failure what was written stays beneath dest_dir, for the caller to delete. */
gboolean ferry_image_archive_unpack(const char *tarball_path, const char *dest_dir, guint32 uid_shift,
                                    guint32 gid_shift, FerryProgressFunc progress, gpointer user_data,
                                    GCancellable *cancellable, GError **error);

G_END_DECLS
