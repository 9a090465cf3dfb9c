/* Id maps of unprivileged containers: shifting a rootfs on disk between host ids and container ids, and
 * Incus's JSON form of a map (volatile.last_state.idmap, the migration header's idmap). */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* One contiguous range, the same for uids and gids: container id N is host id host_base + N,
 * for 0 <= N < range. */
typedef struct {
    guint32 host_base;
    guint32 range;
} FerryIdmap;

#define FERRY_IDMAP_DEFAULT_BASE 1000000
#define FERRY_IDMAP_DEFAULT_RANGE 1000000000

/* Add delta to the owner uid and gid of every inode beneath root, root included (+host_base shifts a rootfs
 * from container ids to host ids, -host_base back). Never follows a symlink: every inode is pinned by an
 * O_PATH|O_NOFOLLOW fd opened beneath its parent's fd. Also shifts the ids in POSIX ACLs
 * (system.posix_acl_access/default) and the root id of file capabilities (security.capability), restores the
 * setuid/setgid bits and capabilities that chown clears, and shifts an inode with several hard links once.
 * Fails with FERRY_ERROR_INVALID, before changing anything, if any id would leave [0, 2^32 - 1)
 * (2^32 - 1 is (uid_t)-1, which chown reads as "leave unchanged"). Does not descend into other mounts'
 * directories that happen to be mounted beneath root; the tree must not be in use (container stopped). */
gboolean ferry_idmap_shift_tree(const char *root, gint64 delta, GCancellable *cancellable, GError **error);

/* Incus's volatile.last_state.idmap JSON for map, or "[]" when map is NULL (privileged: no map):
 * [{"Isuid":true,"Isgid":false,"Hostid":1000000,"Nsid":0,"Maprange":1000000000},{"Isuid":false,...}] */
char *ferry_idmap_to_json(const FerryIdmap *map);

/* Parse Incus's idmap JSON. "[]", "null" and "" mean privileged (*is_privileged = TRUE, map_out zeroed).
 * Maps that ferry cannot represent (several ranges, nsid other than 0, different uid and gid maps) fail
 * with FERRY_ERROR_NOT_IMPLEMENTED; malformed JSON with FERRY_ERROR_INVALID. */
gboolean ferry_idmap_from_json(const char *json, FerryIdmap *map_out, gboolean *is_privileged,
                               GError **error);

G_END_DECLS
