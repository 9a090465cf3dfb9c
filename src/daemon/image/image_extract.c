#include "image_extract.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <linux/posix_acl.h>
#include <linux/posix_acl_xattr.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define ACL_XATTR_ACCESS "system.posix_acl_access"
#define ACL_XATTR_DEFAULT "system.posix_acl_default"
#define CAPS_XATTR "security.capability"

typedef struct {
    char *path;
    struct timespec times[2];
} DirTimes;

struct ImageExtractor {
    int dest_fd;
    ImageReader *reader;
    FerryProgressFunc progress;
    gpointer progress_data;
    guint64 reported;
    GCancellable *cancellable;
    GArray *dir_times; /* of DirTimes */
};

static void dir_times_clear(gpointer data)
{
    g_free(((DirTimes *)data)->path);
}

ImageExtractor *image_extractor_new(const char *dest_dir, ImageReader *reader, FerryProgressFunc progress,
                                    gpointer user_data, GCancellable *cancellable, GError **error)
{
    int fd = open(dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        ferry_set_error_errno(error, errno, "Failed to open \"%s\"", dest_dir);
        return NULL;
    }
    ImageExtractor *extractor = g_new0(ImageExtractor, 1);
    extractor->dest_fd = fd;
    extractor->reader = reader;
    extractor->progress = progress;
    extractor->progress_data = user_data;
    extractor->cancellable = cancellable != NULL ? g_object_ref(cancellable) : NULL;
    extractor->dir_times = g_array_new(FALSE, TRUE, sizeof(DirTimes));
    g_array_set_clear_func(extractor->dir_times, dir_times_clear);
    return extractor;
}

void image_extractor_free(ImageExtractor *extractor)
{
    if (extractor == NULL)
        return;
    close(extractor->dest_fd);
    g_clear_object(&extractor->cancellable);
    g_array_unref(extractor->dir_times);
    g_free(extractor);
}

/* Errors caused by the archive's content are the client's (400); a full or broken disk is ours (500). */
static gboolean set_extract_error(GError **error, int errnum, const char *path, const char *what)
{
    int code = FERRY_ERROR_INVALID;
    switch (errnum) {
    case ENOSPC:
    case EDQUOT:
    case EIO:
    case EROFS:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
        code = FERRY_ERROR_INTERNAL;
        break;
    default:
        break;
    }
    g_set_error(error, FERRY_ERROR, code, "Failed to extract \"%s\": %s: %s", path, what, g_strerror(errnum));
    return FALSE;
}

/* ---- path resolution ---- */

/* Open path beneath dirfd without following any symbolic link; -1 with errno on failure. */
static int open_beneath(int dirfd, const char *path, int flags)
{
    if (*path == '\0')
        return fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
    struct open_how how = {
        /* not O_NOFOLLOW: it would turn a final symlink into ENOTDIR instead of ELOOP */
        .flags = flags | O_CLOEXEC,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    int fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    if (fd >= 0 || errno != ENOSYS)
        return fd;

    /* Kernels before 5.6: one component at a time, never following a link. Paths were normalised, so
     * there are no ".." components to climb out with. */
    g_auto(GStrv) components = g_strsplit(path, "/", -1);
    int current = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
    for (char **c = components; current >= 0 && *c != NULL; c++) {
        gboolean last = c[1] == NULL;
        int next = openat(current, *c, (last ? flags : O_RDONLY | O_DIRECTORY) | O_CLOEXEC | O_NOFOLLOW);
        int saved_errno = errno;
        close(current);
        errno = saved_errno;
        current = next;
    }
    return current;
}

static gboolean set_resolve_error(GError **error, int errnum, const char *path)
{
    switch (errnum) {
    case ELOOP:
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Refusing to extract \"%s\": its path goes through a symbolic link", path);
        return FALSE;
    case ENOTDIR:
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Refusing to extract \"%s\": a parent in its path is not a directory", path);
        return FALSE;
    case EXDEV:
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Refusing to extract \"%s\": its path leaves the destination", path);
        return FALSE;
    default:
        return set_extract_error(error, errnum, path, "parent directory");
    }
}

static void split_path(const char *path, char **parent, const char **leaf)
{
    const char *slash = strrchr(path, '/');
    *parent = slash != NULL ? g_strndup(path, slash - path) : g_strdup("");
    *leaf = slash != NULL ? slash + 1 : path;
}

/* The parent directory of path, creating missing directories as owner, mode 0755. */
static int open_parent(ImageExtractor *extractor, const char *path, uid_t uid, gid_t gid, const char **leaf,
                       GError **error)
{
    g_autofree char *parent = NULL;
    split_path(path, &parent, leaf);
    int fd = open_beneath(extractor->dest_fd, parent, O_RDONLY | O_DIRECTORY);
    if (fd >= 0)
        return fd;
    if (errno != ENOENT) {
        set_resolve_error(error, errno, path);
        return -1;
    }

    g_auto(GStrv) components = g_strsplit(parent, "/", -1);
    int current = fcntl(extractor->dest_fd, F_DUPFD_CLOEXEC, 3);
    for (char **c = components; current >= 0 && *c != NULL; c++) {
        int next = open_beneath(current, *c, O_RDONLY | O_DIRECTORY);
        if (next < 0 && errno == ENOENT) {
            if (mkdirat(current, *c, 0700) < 0 && errno != EEXIST) {
                set_extract_error(error, errno, path, "mkdir");
                close(current);
                return -1;
            }
            next = open_beneath(current, *c, O_RDONLY | O_DIRECTORY);
            if (next >= 0 && (fchown(next, uid, gid) < 0 || fchmod(next, 0755) < 0)) {
                set_extract_error(error, errno, path, "parent directory owner");
                close(next);
                close(current);
                return -1;
            }
        }
        if (next < 0) {
            set_resolve_error(error, errno, path);
            close(current);
            return -1;
        }
        close(current);
        current = next;
    }
    if (current < 0)
        set_extract_error(error, errno, path, "open");
    return current;
}

/* Make room for a new entry at parent_fd/leaf: tar semantics, a later entry replaces an earlier one. An
 * existing directory stays when a directory is wanted. */
static gboolean clear_leaf(int parent_fd, const char *leaf, gboolean want_dir, gboolean *exists_as_dir,
                           const char *path, GError **error)
{
    struct stat st;
    *exists_as_dir = FALSE;
    if (fstatat(parent_fd, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return TRUE;
        return set_extract_error(error, errno, path, "stat");
    }
    if (S_ISDIR(st.st_mode)) {
        if (want_dir) {
            *exists_as_dir = TRUE;
            return TRUE;
        }
        if (unlinkat(parent_fd, leaf, AT_REMOVEDIR) < 0)
            return set_extract_error(error, errno, path, "replace directory");
        return TRUE;
    }
    if (unlinkat(parent_fd, leaf, 0) < 0)
        return set_extract_error(error, errno, path, "replace");
    return TRUE;
}

/* ---- ids ---- */

static gboolean shift_id(gint64 id, guint32 shift, guint32 *out)
{
    /* (uid_t)-1 means "unchanged" to chown and the ACL code. */
    if (id < 0 || (guint64)id + shift >= G_MAXUINT32)
        return FALSE;
    *out = (guint32)(id + shift);
    return TRUE;
}

/* ---- xattrs, ACLs and capabilities ---- */

typedef struct {
    guint16 tag;
    guint16 perm;
    guint32 id;
} AclEntry;

static int compare_acl_entries(gconstpointer a, gconstpointer b)
{
    const AclEntry *x = a, *y = b;
    if (x->tag != y->tag)
        return x->tag < y->tag ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static GBytes *acl_to_xattr(GArray *entries)
{
    g_array_sort(entries, compare_acl_entries);
    gsize size = sizeof(struct posix_acl_xattr_header) + entries->len * sizeof(struct posix_acl_xattr_entry);
    guint8 *data = g_malloc(size);
    struct posix_acl_xattr_header header = {.a_version = GUINT32_TO_LE(POSIX_ACL_XATTR_VERSION)};
    memcpy(data, &header, sizeof(header));
    for (guint i = 0; i < entries->len; i++) {
        const AclEntry *e = &g_array_index(entries, AclEntry, i);
        struct posix_acl_xattr_entry out = {
            .e_tag = GUINT16_TO_LE(e->tag),
            .e_perm = GUINT16_TO_LE(e->perm),
            .e_id = GUINT32_TO_LE(e->id),
        };
        memcpy(data + sizeof(header) + i * sizeof(out), &out, sizeof(out));
    }
    return g_bytes_new_take(data, size);
}

/* A POSIX ACL from libarchive's parsed ACL (pax SCHILY.acl.*), ids shifted; NULL when there is none. */
static GBytes *acl_from_entry(struct archive_entry *entry, int type, guint32 uid_shift, guint32 gid_shift,
                              const char *path, GError **error)
{
    if (archive_entry_acl_reset(entry, type) <= 0)
        return NULL;
    g_autoptr(GArray) entries = g_array_new(FALSE, TRUE, sizeof(AclEntry));
    gboolean named = FALSE, has_mask = FALSE;
    guint16 group_class = 0;
    int entry_type, permset, tag, qual;
    const char *name;
    while (archive_entry_acl_next(entry, type, &entry_type, &permset, &tag, &qual, &name) == ARCHIVE_OK) {
        AclEntry e = {.perm = permset & (ACL_READ | ACL_WRITE | ACL_EXECUTE), .id = ACL_UNDEFINED_ID};
        gboolean ok = TRUE;
        switch (tag) {
        case ARCHIVE_ENTRY_ACL_USER_OBJ:
            e.tag = ACL_USER_OBJ;
            break;
        case ARCHIVE_ENTRY_ACL_USER:
            e.tag = ACL_USER;
            ok = shift_id(qual, uid_shift, &e.id);
            break;
        case ARCHIVE_ENTRY_ACL_GROUP_OBJ:
            e.tag = ACL_GROUP_OBJ;
            break;
        case ARCHIVE_ENTRY_ACL_GROUP:
            e.tag = ACL_GROUP;
            ok = shift_id(qual, gid_shift, &e.id);
            break;
        case ARCHIVE_ENTRY_ACL_MASK:
            e.tag = ACL_MASK;
            has_mask = TRUE;
            break;
        case ARCHIVE_ENTRY_ACL_OTHER:
            e.tag = ACL_OTHER;
            break;
        default:
            continue;
        }
        if (!ok) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, 
                        "Failed to extract \"%s\": ACL id %d is out of range",
                        path, qual);
            return NULL;
        }
        if (e.tag == ACL_USER || e.tag == ACL_GROUP)
            named = TRUE;
        if (e.tag == ACL_USER || e.tag == ACL_GROUP || e.tag == ACL_GROUP_OBJ)
            group_class |= e.perm;
        g_array_append_val(entries, e);
    }
    if (named && !has_mask) {
        AclEntry mask = {.tag = ACL_MASK, .perm = group_class, .id = ACL_UNDEFINED_ID};
        g_array_append_val(entries, mask);
    }
    return acl_to_xattr(entries);
}

/* Shift the ids of named users and groups in a raw system.posix_acl_* value (as Incus's own exports
 * carry them in SCHILY.xattr). */
static GBytes *shift_acl_xattr(const void *value, gsize size, guint32 uid_shift, guint32 gid_shift,
                               const char *path, GError **error)
{
    const gsize header = sizeof(struct posix_acl_xattr_header);
    const gsize entry_size = sizeof(struct posix_acl_xattr_entry);
    struct posix_acl_xattr_header h;
    if (size < header || (size - header) % entry_size != 0)
        goto invalid;
    memcpy(&h, value, header);
    if (GUINT32_FROM_LE(h.a_version) != POSIX_ACL_XATTR_VERSION)
        goto invalid;
    guint8 *data = g_memdup2(value, size);
    for (gsize offset = header; offset < size; offset += entry_size) {
        struct posix_acl_xattr_entry e;
        memcpy(&e, data + offset, entry_size);
        guint16 tag = GUINT16_FROM_LE(e.e_tag);
        guint32 id = GUINT32_FROM_LE(e.e_id);
        if (tag == ACL_USER || tag == ACL_GROUP) {
            if (!shift_id(id, tag == ACL_USER ? uid_shift : gid_shift, &id)) {
                g_free(data);
                goto invalid;
            }
            e.e_id = GUINT32_TO_LE(id);
            memcpy(data + offset, &e, entry_size);
        }
    }
    return g_bytes_new_take(data, size);

invalid:
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Failed to extract \"%s\": invalid ACL", path);
    return NULL;
}

/* File capabilities written from the host are v2, which the kernel honours only for the initial user
 * namespace's root; a shifted container needs v3 with its root as rootid. */
static GBytes *shift_caps_xattr(const void *value, gsize size, guint32 uid_shift, const char *path,
                                GError **error)
{
    struct vfs_ns_cap_data caps;
    if (size != XATTR_CAPS_SZ_2 && size != XATTR_CAPS_SZ_3)
        return g_bytes_new(value, size); /* v1 or unknown: the kernel judges it */
    memset(&caps, 0, sizeof(caps));
    memcpy(&caps, value, size);
    guint32 magic = GUINT32_FROM_LE(caps.magic_etc);
    guint32 rootid = 0;
    if ((magic & VFS_CAP_REVISION_MASK) == VFS_CAP_REVISION_3)
        rootid = GUINT32_FROM_LE(caps.rootid);
    else if ((magic & VFS_CAP_REVISION_MASK) != VFS_CAP_REVISION_2 || size != XATTR_CAPS_SZ_2)
        return g_bytes_new(value, size);
    if (!shift_id(rootid, uid_shift, &rootid)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Failed to extract \"%s\": file capability root id is out of range", path);
        return NULL;
    }
    caps.magic_etc = GUINT32_TO_LE((magic & ~VFS_CAP_REVISION_MASK) | VFS_CAP_REVISION_3);
    caps.rootid = GUINT32_TO_LE(rootid);
    return g_bytes_new(&caps, XATTR_CAPS_SZ_3);
}

typedef struct {
    int fd;            /* the entry itself (regular files and directories), else -1 */
    int parent_fd;
    const char *leaf;
    const char *path;
    gboolean is_symlink;
} Target;

static gboolean set_xattr(const Target *target, const char *name, GBytes *value, GError **error)
{
    gsize size;
    const void *data = g_bytes_get_data(value, &size);
    int r;
    if (target->fd >= 0) {
        r = fsetxattr(target->fd, name, data, size, 0);
    } else {
        /* No *at() xattr calls: go through the parent's fd, not following the leaf. */
        g_autofree char *proc_path = g_strdup_printf("/proc/self/fd/%d/%s", target->parent_fd, target->leaf);
        r = lsetxattr(proc_path, name, data, size, 0);
    }
    if (r == 0)
        return TRUE;
    /* The filesystem can't store it (or, for user.* on symlinks, the kernel won't): as tar, carry on. */
    if (errno == ENOTSUP || errno == EOPNOTSUPP || (target->is_symlink && errno == EPERM))
        return TRUE;
    g_autofree char *what = g_strdup_printf("extended attribute %s", name);
    return set_extract_error(error, errno, target->path, what);
}

static gboolean xattr_allowed(const char *name)
{
    return g_str_has_prefix(name, "user.") || g_str_has_prefix(name, "trusted.") ||
           g_str_has_prefix(name, "security.") || strcmp(name, ACL_XATTR_ACCESS) == 0 ||
           strcmp(name, ACL_XATTR_DEFAULT) == 0;
}

static gboolean apply_xattrs(const Target *target, struct archive_entry *entry, guint32 uid_shift,
                             guint32 gid_shift, GError **error)
{
    const char *name;
    const void *value;
    size_t size;
    archive_entry_xattr_reset(entry);
    while (archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK) {
        if (name == NULL || !xattr_allowed(name))
            continue;
        g_autoptr(GBytes) bytes = NULL;
        if (strcmp(name, ACL_XATTR_ACCESS) == 0 || strcmp(name, ACL_XATTR_DEFAULT) == 0)
            bytes = shift_acl_xattr(value, size, uid_shift, gid_shift, target->path, error);
        else if (strcmp(name, CAPS_XATTR) == 0 && uid_shift != 0)
            bytes = shift_caps_xattr(value, size, uid_shift, target->path, error);
        else
            bytes = g_bytes_new(value, size);
        if (bytes == NULL || !set_xattr(target, name, bytes, error))
            return FALSE;
    }
    return TRUE;
}

static gboolean apply_acls(const Target *target, struct archive_entry *entry, gboolean is_dir,
                           guint32 uid_shift, guint32 gid_shift, GError **error)
{
    static const struct {
        int type;
        const char *xattr;
    } kinds[] = {
        {ARCHIVE_ENTRY_ACL_TYPE_ACCESS, ACL_XATTR_ACCESS},
        {ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, ACL_XATTR_DEFAULT},
    };
    for (guint i = 0; i < G_N_ELEMENTS(kinds); i++) {
        if (kinds[i].type == ARCHIVE_ENTRY_ACL_TYPE_DEFAULT && !is_dir)
            continue;
        g_autoptr(GError) local_error = NULL;
        g_autoptr(GBytes) acl = acl_from_entry(entry, kinds[i].type, uid_shift, gid_shift, target->path,
                                               &local_error);
        if (local_error != NULL) {
            g_propagate_error(error, g_steal_pointer(&local_error));
            return FALSE;
        }
        if (acl != NULL && !set_xattr(target, kinds[i].xattr, acl, error))
            return FALSE;
    }
    return TRUE;
}

/* ---- entries ---- */

static void entry_times(struct archive_entry *entry, struct timespec times[2])
{
    times[0] = (struct timespec){.tv_nsec = UTIME_OMIT};
    times[1] = (struct timespec){.tv_nsec = UTIME_OMIT};
    if (archive_entry_atime_is_set(entry) && archive_entry_atime_nsec(entry) >= 0 &&
        archive_entry_atime_nsec(entry) < 1000000000)
        times[0] = (struct timespec){archive_entry_atime(entry), archive_entry_atime_nsec(entry)};
    if (archive_entry_mtime_is_set(entry) && archive_entry_mtime_nsec(entry) >= 0 &&
        archive_entry_mtime_nsec(entry) < 1000000000)
        times[1] = (struct timespec){archive_entry_mtime(entry), archive_entry_mtime_nsec(entry)};
}

static gboolean set_times(const Target *target, struct archive_entry *entry, GError **error)
{
    struct timespec times[2];
    entry_times(entry, times);
    int r = target->fd >= 0 ? futimens(target->fd, times)
                            : utimensat(target->parent_fd, target->leaf, times, AT_SYMLINK_NOFOLLOW);
    /* Out-of-range times from the archive are not worth failing for. */
    if (r < 0 && errno != EINVAL && errno != EOVERFLOW)
        return set_extract_error(error, errno, target->path, "set times");
    return TRUE;
}

static void report_progress(ImageExtractor *extractor)
{
    guint64 done = image_reader_consumed(extractor->reader);
    if (extractor->progress == NULL || done == extractor->reported)
        return;
    extractor->reported = done;
    extractor->progress(done, image_reader_size(extractor->reader), extractor->progress_data);
}

static gboolean write_all(int fd, const guint8 *data, gsize size, gint64 offset)
{
    while (size > 0) {
        ssize_t n = pwrite(fd, data, size, offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return FALSE;
        data += n;
        size -= n;
        offset += n;
    }
    return TRUE;
}

static gboolean write_file_data(ImageExtractor *extractor, int fd, struct archive_entry *entry,
                                const char *path, GError **error)
{
    for (;;) {
        if (g_cancellable_set_error_if_cancelled(extractor->cancellable, error))
            return FALSE;
        const void *buffer;
        gsize size;
        gint64 offset;
        if (!image_reader_data_block(extractor->reader, &buffer, &size, &offset, error))
            return FALSE;
        report_progress(extractor);
        if (size == 0)
            break;
        if (!write_all(fd, buffer, size, offset))
            return set_extract_error(error, errno, path, "write");
    }
    /* A sparse file's trailing hole has no data block. */
    if (archive_entry_size_is_set(entry) && ftruncate(fd, archive_entry_size(entry)) < 0)
        return set_extract_error(error, errno, path, "truncate");
    return TRUE;
}

static gboolean write_hardlink(ImageExtractor *extractor, int parent_fd, const char *leaf,
                               const ImageEntryInfo *info, GError **error)
{
    if (strcmp(info->hardlink, info->path) == 0)
        return TRUE;
    g_autofree char *target_parent = NULL;
    const char *target_leaf;
    split_path(info->hardlink, &target_parent, &target_leaf);
    int target_fd = open_beneath(extractor->dest_fd, target_parent, O_RDONLY | O_DIRECTORY);
    if (target_fd < 0) {
        if (errno == ENOENT) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Failed to extract hard link \"%s\": its target \"%s\" does not exist", info->path,
                        info->hardlink);
            return FALSE;
        }
        return set_resolve_error(error, errno, info->hardlink);
    }
    gboolean exists_as_dir;
    gboolean ok = clear_leaf(parent_fd, leaf, FALSE, &exists_as_dir, info->path, error);
    /* flags 0: a symbolic link target is linked itself, never followed. */
    if (ok && linkat(target_fd, target_leaf, parent_fd, leaf, 0) < 0) {
        if (errno == ENOENT)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Failed to extract hard link \"%s\": its target \"%s\" does not exist", info->path,
                        info->hardlink);
        else
            set_extract_error(error, errno, info->path, "hard link");
        ok = FALSE;
    }
    close(target_fd);
    return ok;
}

/* Ownership, xattrs, ACLs, mode, times: chown clears setuid bits and file capabilities, so it goes
 * first, and the mode after the ACLs so that the group bits end up as the archive says. */
static gboolean apply_metadata(ImageExtractor *extractor, const Target *target, struct archive_entry *entry,
                               mode_t type, guint32 uid_shift, guint32 gid_shift, GError **error)
{
    guint32 uid, gid;
    if (!shift_id(archive_entry_uid(entry), uid_shift, &uid) ||
        !shift_id(archive_entry_gid(entry), gid_shift, &gid)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, 
                    "Failed to extract \"%s\": owner is out of range",
                    target->path);
        return FALSE;
    }
    int r = target->fd >= 0 ? fchown(target->fd, uid, gid)
                            : fchownat(target->parent_fd, target->leaf, uid, gid, AT_SYMLINK_NOFOLLOW);
    if (r < 0)
        return set_extract_error(error, errno, target->path, "chown");

    if (!apply_xattrs(target, entry, uid_shift, gid_shift, error))
        return FALSE;
    if (target->is_symlink)
        return set_times(target, entry, error);

    if (!apply_acls(target, entry, type == AE_IFDIR, uid_shift, gid_shift, error))
        return FALSE;
    mode_t mode = archive_entry_perm(entry) & 07777;
    r = target->fd >= 0 ? fchmod(target->fd, mode) : fchmodat(target->parent_fd, target->leaf, mode, 0);
    if (r < 0)
        return set_extract_error(error, errno, target->path, "chmod");

    if (type != AE_IFDIR)
        return set_times(target, entry, error);
    DirTimes dir = {.path = g_strdup(target->path)};
    entry_times(entry, dir.times);
    g_array_append_val(extractor->dir_times, dir);
    return TRUE;
}

gboolean image_extractor_write(ImageExtractor *extractor, struct archive_entry *entry,
                               const ImageEntryInfo *info, guint32 uid_shift, guint32 gid_shift,
                               GError **error)
{
    if (g_cancellable_set_error_if_cancelled(extractor->cancellable, error))
        return FALSE;
    if (info->type == AE_IFSOCK) /* sockets are bound by their server, not restored */
        return TRUE;

    const char *leaf;
    int parent_fd = open_parent(extractor, info->path, uid_shift, gid_shift, &leaf, error);
    if (parent_fd < 0)
        return FALSE;
    Target target = {.fd = -1, .parent_fd = parent_fd, .leaf = leaf, .path = info->path};
    gboolean ok = FALSE;
    gboolean exists_as_dir = FALSE;

    if (info->hardlink != NULL) {
        ok = write_hardlink(extractor, parent_fd, leaf, info, error);
        goto out;
    }
    if (!clear_leaf(parent_fd, leaf, info->type == AE_IFDIR, &exists_as_dir, info->path, error))
        goto out;

    switch (info->type) {
    case AE_IFREG:
        target.fd = openat(parent_fd, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (target.fd < 0) {
            set_extract_error(error, errno, info->path, "create");
            goto out;
        }
        if (!write_file_data(extractor, target.fd, entry, info->path, error))
            goto out;
        break;
    case AE_IFDIR:
        if (!exists_as_dir && mkdirat(parent_fd, leaf, 0700) < 0) {
            set_extract_error(error, errno, info->path, "mkdir");
            goto out;
        }
        target.fd = open_beneath(parent_fd, leaf, O_RDONLY | O_DIRECTORY);
        if (target.fd < 0) {
            set_resolve_error(error, errno, info->path);
            goto out;
        }
        break;
    case AE_IFLNK:
        if (symlinkat(info->symlink, parent_fd, leaf) < 0) {
            set_extract_error(error, errno, info->path, "symlink");
            goto out;
        }
        target.is_symlink = TRUE;
        break;
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO: {
        dev_t rdev = info->type == AE_IFIFO ? 0 : makedev(archive_entry_rdevmajor(entry),
                                                           archive_entry_rdevminor(entry));
        if (mknodat(parent_fd, leaf, info->type | 0600, rdev) < 0) {
            /* Inside a user namespace devices can't be made; Incus leaves them out there too. */
            if (errno == EPERM && info->type != AE_IFIFO) {
                ok = TRUE;
                goto out;
            }
            set_extract_error(error, errno, info->path, "mknod");
            goto out;
        }
        break;
    }
    default:
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, 
                    "Failed to extract \"%s\": unsupported file type",
                    info->path);
        goto out;
    }
    ok = apply_metadata(extractor, &target, entry, info->type, uid_shift, gid_shift, error);

out:
    if (target.fd >= 0)
        close(target.fd);
    close(parent_fd);
    report_progress(extractor);
    return ok;
}

gboolean image_extractor_finish(ImageExtractor *extractor, GError **error)
{
    for (guint i = 0; i < extractor->dir_times->len; i++) {
        const DirTimes *dir = &g_array_index(extractor->dir_times, DirTimes, i);
        int fd = open_beneath(extractor->dest_fd, dir->path, O_RDONLY | O_DIRECTORY);
        if (fd < 0)
            continue; /* replaced by a later entry */
        int r = futimens(fd, dir->times);
        int saved_errno = errno;
        close(fd);
        if (r < 0 && saved_errno != EINVAL && saved_errno != EOVERFLOW)
            return set_extract_error(error, saved_errno, dir->path, "set times");
    }
    report_progress(extractor);
    return TRUE;
}
