#include "idmap.h"

#include "error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define XATTR_ACL_ACCESS "system.posix_acl_access"
#define XATTR_ACL_DEFAULT "system.posix_acl_default"
#define XATTR_CAPS "security.capability"

/* On-disk layouts the kernel exposes through getxattr (little-endian), from linux/posix_acl_xattr.h and
 * linux/capability.h: an ACL is a 4-byte version (2) then 8-byte entries {u16 tag, u16 perm, u32 id}; only
 * ACL_USER and ACL_GROUP entries carry an id. File capabilities v1/v2 hold no owner; v3 adds the host uid of
 * the user namespace root they belong to, which is what a shift must move. */
#define ACL_XATTR_VERSION 2
#define ACL_TAG_USER 0x02
#define ACL_TAG_GROUP 0x08
#define CAP_REVISION_MASK 0xFF000000u
#define CAP_REVISION_1 0x01000000u
#define CAP_REVISION_2 0x02000000u
#define CAP_REVISION_3 0x03000000u
#define CAP_FLAGS_EFFECTIVE 0x000001u
#define CAP_SIZE_1 12
#define CAP_SIZE_2 20
#define CAP_SIZE_3 24

/* (uid_t)-1 means "unchanged" to chown, so the highest usable id is one below it. */
#define ID_LIMIT G_GINT64_CONSTANT(0xFFFFFFFF)

typedef int ShiftFd;
static void shift_fd_close(ShiftFd fd)
{
    if (fd >= 0)
        close(fd);
}
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(ShiftFd, shift_fd_close, -1)

typedef enum {
    SHIFT_CHECK, /* only verify that every id stays in range */
    SHIFT_APPLY,
} ShiftPass;

typedef struct {
    const char *root;
    gint64 delta;
    ShiftPass pass;
    gboolean check_mounts;
    guint64 root_mnt_id;
    GHashTable *seen; /* "dev:ino" of multiply-linked inodes already shifted */
    GCancellable *cancellable;
    guint visited;
} ShiftWalk;

typedef struct {
    DIR *dir;
    char *path; /* relative to the walk's root, "" for the root itself */
} WalkFrame;

static void walk_frame_free(gpointer data)
{
    WalkFrame *frame = data;
    if (frame->dir != NULL)
        closedir(frame->dir);
    g_free(frame->path);
    g_free(frame);
}

static char *display_path(const ShiftWalk *walk, const char *rel)
{
    return rel[0] == '\0' ? g_strdup(walk->root) : g_build_filename(walk->root, rel, NULL);
}

static gboolean shift_id(const ShiftWalk *walk, const char *rel, const char *what, guint32 id, guint32 *out,
                         GError **error)
{
    gint64 shifted = (gint64)id + walk->delta;
    if (shifted < 0 || shifted >= ID_LIMIT) {
        g_autofree char *path = display_path(walk, rel);
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Cannot shift \"%s\" by %" G_GINT64_FORMAT ": %s %u would be out of range", path,
                    walk->delta, what, id);
        return FALSE;
    }
    *out = (guint32)shifted;
    return TRUE;
}

/* Reads xattr name of the inode behind proc_path; *out is NULL when it has none. */
static gboolean read_xattr(const ShiftWalk *walk, const char *rel, const char *proc_path, const char *name,
                           GByteArray **out, GError **error)
{
    *out = NULL;
    for (int attempt = 0; attempt < 5; attempt++) {
        ssize_t size = getxattr(proc_path, name, NULL, 0);
        if (size < 0) {
            if (errno == ENODATA || errno == ENOTSUP)
                return TRUE;
            g_autofree char *path = display_path(walk, rel);
            ferry_set_error_errno(error, errno, "Failed to read %s of \"%s\"", name, path);
            return FALSE;
        }
        g_autoptr(GByteArray) value = g_byte_array_sized_new(size);
        g_byte_array_set_size(value, size);
        ssize_t got = getxattr(proc_path, name, value->data, value->len);
        if (got >= 0) {
            g_byte_array_set_size(value, got);
            *out = g_steal_pointer(&value);
            return TRUE;
        }
        if (errno != ERANGE) {
            g_autofree char *path = display_path(walk, rel);
            ferry_set_error_errno(error, errno, "Failed to read %s of \"%s\"", name, path);
            return FALSE;
        }
        /* It grew between the two calls: ask for its size again. */
    }
    g_autofree char *path = display_path(walk, rel);
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to read %s of \"%s\": it keeps changing",
                name, path);
    return FALSE;
}

static gboolean write_xattr(const ShiftWalk *walk, const char *rel, const char *proc_path, const char *name,
                            const GByteArray *value, GError **error)
{
    if (setxattr(proc_path, name, value->data, value->len, 0) < 0) {
        g_autofree char *path = display_path(walk, rel);
        ferry_set_error_errno(error, errno, "Failed to write %s of \"%s\"", name, path);
        return FALSE;
    }
    return TRUE;
}

static gboolean shift_acl(const ShiftWalk *walk, const char *rel, GByteArray *acl, GError **error)
{
    if (acl->len < 4 || (acl->len - 4) % 8 != 0 ||
        GUINT32_FROM_LE(*(guint32 *)acl->data) != ACL_XATTR_VERSION) {
        g_autofree char *path = display_path(walk, rel);
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Unsupported POSIX ACL on \"%s\"", path);
        return FALSE;
    }
    for (gsize offset = 4; offset < acl->len; offset += 8) {
        guint16 tag;
        guint32 id;
        memcpy(&tag, acl->data + offset, sizeof(tag));
        memcpy(&id, acl->data + offset + 4, sizeof(id));
        tag = GUINT16_FROM_LE(tag);
        if (tag != ACL_TAG_USER && tag != ACL_TAG_GROUP)
            continue;
        guint32 shifted = 0;
        if (!shift_id(walk, rel, tag == ACL_TAG_USER ? "ACL uid" : "ACL gid", GUINT32_FROM_LE(id), &shifted,
                      error))
            return FALSE;
        shifted = GUINT32_TO_LE(shifted);
        memcpy(acl->data + offset + 4, &shifted, sizeof(shifted));
    }
    return TRUE;
}

/* Rewrites caps in place for the shifted root id: v3 when the root id is not 0, else v2 (what the kernel
 * itself stores for capabilities set by the initial namespace's root). */
static gboolean shift_caps(const ShiftWalk *walk, const char *rel, GByteArray *caps, GError **error)
{
    guint32 magic = 0;
    if (caps->len >= 4)
        memcpy(&magic, caps->data, sizeof(magic));
    magic = GUINT32_FROM_LE(magic);
    guint32 revision = magic & CAP_REVISION_MASK;
    guint32 data[4] = {0}; /* permitted/inheritable pairs for the low and high 32 capabilities */
    guint32 rootid = 0;
    if (revision == CAP_REVISION_1 && caps->len == CAP_SIZE_1) {
        memcpy(data, caps->data + 4, 8);
    } else if (revision == CAP_REVISION_2 && caps->len == CAP_SIZE_2) {
        memcpy(data, caps->data + 4, 16);
    } else if (revision == CAP_REVISION_3 && caps->len == CAP_SIZE_3) {
        memcpy(data, caps->data + 4, 16);
        memcpy(&rootid, caps->data + 20, 4);
        rootid = GUINT32_FROM_LE(rootid);
    } else {
        g_autofree char *path = display_path(walk, rel);
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Unsupported file capabilities on \"%s\"", path);
        return FALSE;
    }
    guint32 shifted = 0;
    if (!shift_id(walk, rel, "file capability root uid", rootid, &shifted, error))
        return FALSE;
    guint32 flags = magic & CAP_FLAGS_EFFECTIVE;
    guint32 new_magic = GUINT32_TO_LE((shifted == 0 ? CAP_REVISION_2 : CAP_REVISION_3) | flags);
    g_byte_array_set_size(caps, shifted == 0 ? CAP_SIZE_2 : CAP_SIZE_3);
    memcpy(caps->data, &new_magic, 4);
    memcpy(caps->data + 4, data, 16);
    if (shifted != 0) {
        shifted = GUINT32_TO_LE(shifted);
        memcpy(caps->data + 20, &shifted, 4);
    }
    return TRUE;
}

/* Which of the xattrs a shift cares about the inode has: one listxattr instead of three getxattr for the
 * common inode without any. */
static gboolean list_relevant_xattrs(const ShiftWalk *walk, const char *rel, const char *proc_path,
                                     gboolean *acl_access, gboolean *acl_default, gboolean *caps,
                                     GError **error)
{
    *acl_access = *acl_default = *caps = FALSE;
    g_autofree char *names = NULL;
    ssize_t size = 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        size = listxattr(proc_path, NULL, 0);
        if (size <= 0)
            break;
        g_free(names);
        names = g_malloc(size);
        size = listxattr(proc_path, names, size);
        if (size >= 0 || errno != ERANGE)
            break;
    }
    if (size < 0) {
        if (errno == ENOTSUP)
            return TRUE;
        g_autofree char *path = display_path(walk, rel);
        ferry_set_error_errno(error, errno, "Failed to list extended attributes of \"%s\"", path);
        return FALSE;
    }
    for (ssize_t offset = 0; offset < size; offset += strlen(names + offset) + 1) {
        const char *name = names + offset;
        if (strcmp(name, XATTR_ACL_ACCESS) == 0)
            *acl_access = TRUE;
        else if (strcmp(name, XATTR_ACL_DEFAULT) == 0)
            *acl_default = TRUE;
        else if (strcmp(name, XATTR_CAPS) == 0)
            *caps = TRUE;
    }
    return TRUE;
}

/* fd is an O_PATH fd of the inode: every change below goes through it (or /proc/self/fd/N, which names
 * exactly that inode), so a rename or a symlink swapped in meanwhile cannot redirect it. */
static gboolean shift_inode(ShiftWalk *walk, int fd, const struct statx *stx, const char *rel, GError **error)
{
    /* Another link to an inode shifted already: its ids are host ids now, shifting them again is wrong. */
    if (walk->pass == SHIFT_APPLY && !S_ISDIR(stx->stx_mode) && stx->stx_nlink > 1) {
        char *key = g_strdup_printf("%u:%u:%" G_GUINT64_FORMAT, stx->stx_dev_major, stx->stx_dev_minor,
                                    (guint64)stx->stx_ino);
        if (!g_hash_table_add(walk->seen, key))
            return TRUE;
    }

    gboolean is_link = S_ISLNK(stx->stx_mode);
    guint32 uid = 0, gid = 0;
    if (!shift_id(walk, rel, "uid", stx->stx_uid, &uid, error) ||
        !shift_id(walk, rel, "gid", stx->stx_gid, &gid, error))
        return FALSE;

    /* Symlinks carry neither ACLs nor capabilities, and a path through /proc/self/fd would follow them. */
    g_autoptr(GByteArray) acl_access = NULL;
    g_autoptr(GByteArray) acl_default = NULL;
    g_autoptr(GByteArray) caps = NULL;
    g_autofree char *proc_path = g_strdup_printf("/proc/self/fd/%d", fd);
    if (!is_link) {
        gboolean has_access, has_default, has_caps;
        if (!list_relevant_xattrs(walk, rel, proc_path, &has_access, &has_default, &has_caps, error))
            return FALSE;
        if (has_access && !read_xattr(walk, rel, proc_path, XATTR_ACL_ACCESS, &acl_access, error))
            return FALSE;
        if (has_default && !read_xattr(walk, rel, proc_path, XATTR_ACL_DEFAULT, &acl_default, error))
            return FALSE;
        if (has_caps && S_ISREG(stx->stx_mode) && !read_xattr(walk, rel, proc_path, XATTR_CAPS, &caps, error))
            return FALSE;
        if ((acl_access != NULL && !shift_acl(walk, rel, acl_access, error)) ||
            (acl_default != NULL && !shift_acl(walk, rel, acl_default, error)) ||
            (caps != NULL && !shift_caps(walk, rel, caps, error)))
            return FALSE;
    }
    if (walk->pass == SHIFT_CHECK)
        return TRUE;

    if (fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
        g_autofree char *path = display_path(walk, rel);
        ferry_set_error_errno(error, errno, "Failed to change the owner of \"%s\"", path);
        return FALSE;
    }
    if (is_link)
        return TRUE;
    /* chown dropped the capabilities (and the setuid/setgid bits, below): put them back, shifted. */
    if (caps != NULL && !write_xattr(walk, rel, proc_path, XATTR_CAPS, caps, error))
        return FALSE;
    if (acl_access != NULL && !write_xattr(walk, rel, proc_path, XATTR_ACL_ACCESS, acl_access, error))
        return FALSE;
    if (acl_default != NULL && !write_xattr(walk, rel, proc_path, XATTR_ACL_DEFAULT, acl_default, error))
        return FALSE;
    if ((stx->stx_mode & (S_ISUID | S_ISGID)) != 0) {
        struct stat now;
        if (fstat(fd, &now) < 0 || ((now.st_mode & 07777) != (stx->stx_mode & 07777) &&
                                    chmod(proc_path, stx->stx_mode & 07777) < 0)) {
            g_autofree char *path = display_path(walk, rel);
            ferry_set_error_errno(error, errno, "Failed to restore the mode of \"%s\"", path);
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean stat_fd(const ShiftWalk *walk, int fd, const char *rel, struct statx *stx, GError **error)
{
    if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_MNT_ID, stx) < 0) {
        g_autofree char *path = display_path(walk, rel);
        ferry_set_error_errno(error, errno, "Failed to stat \"%s\"", path);
        return FALSE;
    }
    return TRUE;
}

static gboolean push_directory(GPtrArray *stack, const ShiftWalk *walk, int fd, char *rel, GError **error)
{
    g_autofree char *owned_rel = rel;
    /* Reopening "." of the O_PATH fd reads the very directory that was stat'ed. */
    int dir_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = dir_fd >= 0 ? fdopendir(dir_fd) : NULL;
    if (dir == NULL) {
        int saved = errno;
        if (dir_fd >= 0)
            close(dir_fd);
        g_autofree char *path = display_path(walk, owned_rel);
        ferry_set_error_errno(error, saved, "Failed to open directory \"%s\"", path);
        return FALSE;
    }
    WalkFrame *frame = g_new0(WalkFrame, 1);
    frame->dir = dir;
    frame->path = g_steal_pointer(&owned_rel);
    g_ptr_array_add(stack, frame);
    return TRUE;
}

/* Depth-first walk with one open directory per level (no recursion: the tree is the container's to shape). */
static gboolean walk_tree(ShiftWalk *walk, GError **error)
{
    g_auto(ShiftFd) root_fd = open(walk->root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root_fd < 0) {
        ferry_set_error_errno(error, errno, "Failed to open \"%s\"", walk->root);
        return FALSE;
    }
    struct statx stx;
    if (!stat_fd(walk, root_fd, "", &stx, error))
        return FALSE;
    walk->check_mounts = (stx.stx_mask & STATX_MNT_ID) != 0;
    walk->root_mnt_id = stx.stx_mnt_id;
    if (!shift_inode(walk, root_fd, &stx, "", error))
        return FALSE;

    g_autoptr(GPtrArray) stack = g_ptr_array_new_with_free_func(walk_frame_free);
    if (!push_directory(stack, walk, root_fd, g_strdup(""), error))
        return FALSE;
    while (stack->len > 0) {
        WalkFrame *top = g_ptr_array_index(stack, stack->len - 1);
        errno = 0;
        struct dirent *entry = readdir(top->dir);
        if (entry == NULL) {
            if (errno != 0) {
                g_autofree char *path = display_path(walk, top->path);
                ferry_set_error_errno(error, errno, "Failed to read directory \"%s\"", path);
                return FALSE;
            }
            g_ptr_array_remove_index(stack, stack->len - 1);
            continue;
        }
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        if (++walk->visited % 256 == 0 && g_cancellable_set_error_if_cancelled(walk->cancellable, error))
            return FALSE;

        g_autofree char *rel =
            top->path[0] == '\0' ? g_strdup(entry->d_name) : g_strconcat(top->path, "/", entry->d_name, NULL);
        g_auto(ShiftFd) fd = openat(dirfd(top->dir), entry->d_name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT)
                continue; /* removed while we walked */
            g_autofree char *path = display_path(walk, rel);
            ferry_set_error_errno(error, errno, "Failed to open \"%s\"", path);
            return FALSE;
        }
        if (!stat_fd(walk, fd, rel, &stx, error))
            return FALSE;
        /* Something mounted beneath the tree belongs to someone else (a host bind mount, say). */
        if (walk->check_mounts && stx.stx_mnt_id != walk->root_mnt_id)
            continue;
        if (!shift_inode(walk, fd, &stx, rel, error))
            return FALSE;
        if (S_ISDIR(stx.stx_mode) && !push_directory(stack, walk, fd, g_steal_pointer(&rel), error))
            return FALSE;
    }
    return TRUE;
}

gboolean ferry_idmap_shift_tree(const char *root, gint64 delta, GCancellable *cancellable, GError **error)
{
    g_return_val_if_fail(root != NULL, FALSE);
    if (delta == 0)
        return TRUE;
    if (delta <= -ID_LIMIT || delta >= ID_LIMIT) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Id shift %" G_GINT64_FORMAT " is out of range",
                    delta);
        return FALSE;
    }
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    ShiftWalk walk = {
        .root = root,
        .delta = delta,
        .pass = SHIFT_CHECK,
        .seen = seen,
        .cancellable = cancellable,
    };
    /* A first pass that changes nothing, so that an id out of range fails before the tree is half shifted. */
    if (!walk_tree(&walk, error))
        return FALSE;
    walk.pass = SHIFT_APPLY;
    walk.visited = 0;
    return walk_tree(&walk, error);
}

char *ferry_idmap_to_json(const FerryIdmap *map)
{
    json_t *entries = json_array();
    if (map != NULL) {
        for (int is_uid = 1; is_uid >= 0; is_uid--) {
            json_array_append_new(entries, json_pack("{s:b, s:b, s:I, s:i, s:I}", "Isuid", is_uid, "Isgid",
                                                     !is_uid, "Hostid", (json_int_t)map->host_base, "Nsid", 0,
                                                     "Maprange", (json_int_t)map->range));
        }
    }
    char *dumped = json_dumps(entries, JSON_COMPACT);
    json_decref(entries);
    char *result = g_strdup(dumped);
    free(dumped);
    return result;
}

typedef struct {
    json_int_t host_id;
    json_int_t range;
    int count;
} IdRange;

gboolean ferry_idmap_from_json(const char *json, FerryIdmap *map_out, gboolean *is_privileged, GError **error)
{
    memset(map_out, 0, sizeof(*map_out));
    *is_privileged = FALSE;
    if (json == NULL || json[0] == '\0') {
        *is_privileged = TRUE;
        return TRUE;
    }
    json_error_t json_error;
    json_t *root = json_loads(json, JSON_DECODE_ANY, &json_error);
    if (root == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid id map: %s", json_error.text);
        return FALSE;
    }
    gboolean ok = FALSE;
    IdRange uids = {0}, gids = {0};
    if (json_is_null(root)) {
        *is_privileged = TRUE;
        ok = TRUE;
        goto out;
    }
    if (!json_is_array(root)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid id map: not a JSON array");
        goto out;
    }
    if (json_array_size(root) == 0) {
        *is_privileged = TRUE;
        ok = TRUE;
        goto out;
    }
    for (size_t index = 0; index < json_array_size(root); index++) {
        json_t *entry = json_array_get(root, index);
        int is_uid = 0, is_gid = 0;
        json_int_t host_id = 0, ns_id = 0, range = 0;
        if (json_unpack_ex(entry, &json_error, JSON_STRICT, "{s?b, s?b, s:I, s:I, s:I}", "Isuid", &is_uid,
                           "Isgid", &is_gid, "Hostid", &host_id, "Nsid", &ns_id, "Maprange", &range) < 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid id map entry %zu: %s", index,
                        json_error.text);
            goto out;
        }
        if (host_id < 0 || ns_id < 0 || range <= 0 || host_id + range > ID_LIMIT ||
            ns_id + range > ID_LIMIT) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid id map entry %zu: ids out of range",
                        index);
            goto out;
        }
        if (ns_id != 0) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                        "Unsupported id map: entry %zu does not start at container id 0", index);
            goto out;
        }
        IdRange *targets[2] = {is_uid ? &uids : NULL, is_gid ? &gids : NULL};
        for (int i = 0; i < 2; i++) {
            if (targets[i] == NULL)
                continue;
            targets[i]->host_id = host_id;
            targets[i]->range = range;
            targets[i]->count++;
        }
    }
    if (uids.count != 1 || gids.count != 1 || uids.host_id != gids.host_id || uids.range != gids.range) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                    "Unsupported id map: only one range shared by uids and gids is supported");
        goto out;
    }
    map_out->host_base = (guint32)uids.host_id;
    map_out->range = (guint32)uids.range;
    ok = TRUE;
out:
    json_decref(root);
    return ok;
}
