/* Disk usage of a volume: st_blocks of every entry, a hard-linked file once, through the dirfd walk (no
 * symlink followed, no mount entered, nested btrfs subvolumes counted). */
#include "pool_private.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>

typedef struct {
    dev_t dev;
    ino_t ino;
} InodeKey;

static guint inode_hash(gconstpointer key)
{
    const InodeKey *k = key;
    return (guint)(k->ino ^ (k->ino >> 32) ^ (k->dev * 2654435761u));
}

static gboolean inode_equal(gconstpointer a, gconstpointer b)
{
    const InodeKey *x = a, *y = b;
    return x->dev == y->dev && x->ino == y->ino;
}

typedef struct {
    GHashTable *seen; /* InodeKey of files with more than one link */
    guint64 bytes;
} UsageWalk;

static void count(UsageWalk *walk, const struct stat *st)
{
    if (!S_ISDIR(st->st_mode) && st->st_nlink > 1) {
        InodeKey key = {st->st_dev, st->st_ino};
        if (g_hash_table_contains(walk->seen, &key))
            return;
        g_hash_table_add(walk->seen, g_memdup2(&key, sizeof(key)));
    }
    walk->bytes += (guint64)st->st_blocks * 512;
}

static gboolean count_entry(FerryTreeEvent event, int dir_fd, const char *name, const char *relpath,
                            const struct stat *st, gboolean *descend, gpointer user_data, GError **error)
{
    if (event != FERRY_TREE_LEAVE)
        count(user_data, st);
    return TRUE;
}

gboolean ferry_tree_usage(int fd, guint64 *bytes_out, GError **error)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        ferry_set_error_errno(error, errno, "Failed to stat volume");
        return FALSE;
    }
    UsageWalk walk = {g_hash_table_new_full(inode_hash, inode_equal, g_free, NULL), 0};
    count(&walk, &st);
    gboolean ok = ferry_tree_walk(fd, count_entry, &walk, error);
    g_hash_table_unref(walk.seen);
    if (ok)
        *bytes_out = walk.bytes;
    return ok;
}
