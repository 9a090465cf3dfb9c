/* Walking, opening and deleting directory trees whose content is attacker-controlled (a container's rootfs):
 * dirfd-relative steps that never follow a symlink nor cross a mount. Used by the storage drivers and by the
 * migration transports that read and write volumes. */
#pragma once

#include <glib.h>
#include <sys/stat.h>

G_BEGIN_DECLS

typedef enum {
    FERRY_TREE_ENTER, /* a directory, before its children; the callback may clear *descend */
    FERRY_TREE_LEAVE, /* a directory entered earlier, after its children */
    FERRY_TREE_OTHER, /* anything but a directory */
} FerryTreeEvent;

/* dir_fd/name is the entry, relpath its path from the walk's root. For ENTER, *descend starts TRUE when the
 * directory is on the same filesystem (a nested btrfs subvolume counts as the same) and FALSE for a mount
 * point. Returning FALSE with error set stops the walk. */
typedef gboolean (*FerryTreeFunc)(FerryTreeEvent event, int dir_fd, const char *name, const char *relpath,
                                  const struct stat *st, gboolean *descend, gpointer user_data,
                                  GError **error);

/* Walk the tree under root_fd (a directory; not itself reported). Holds two fds at any depth. */
gboolean ferry_tree_walk(int root_fd, FerryTreeFunc func, gpointer user_data, GError **error);
/* Remove parent_fd/name whatever it is: file, directory tree, btrfs subvolume (with nested ones).
 * Missing is success. */
gboolean ferry_tree_delete(int parent_fd, const char *name, GError **error);
/* Open a directory beneath dir_fd without following symlinks (O_PATH-free: usable for fchmod/ioctl). */
int ferry_open_dir_at(int dir_fd, const char *name, GError **error);
/* Open relpath (components separated by '/', no "..") beneath root_fd, following no symlink. */
int ferry_open_dir_beneath(int root_fd, const char *relpath, GError **error);
/* Disk blocks of the tree at fd (fd itself included), hard links once. */
gboolean ferry_tree_usage(int fd, guint64 *bytes_out, GError **error);

G_END_DECLS
