#include "image_archive.h"

#include "error.h"
#include "image_extract.h"
#include "image_reader.h"
#include "yaml.h"

#include <string.h>

/* metadata.yaml is a few hundred bytes; anything near this is not an image. */
#define METADATA_MAX_SIZE (1024 * 1024)

void ferry_image_info_free(FerryImageInfo *info)
{
    if (info == NULL)
        return;
    g_free(info->fingerprint);
    g_free(info->architecture);
    json_decref(info->properties);
    g_free(info->type);
    g_free(info);
}

/* Incus's architecture names and the aliases it accepts for them (shared/osarch). */
static const struct {
    const char *name;
    const char *aliases[6];
} architectures[] = {
    {"i686", {"i386", "i586", "386", "x86", "generic_32"}},
    {"x86_64", {"amd64", "generic_64"}},
    {"armv6l", {"armel", "arm"}},
    {"armv7l", {"armhf", "armhfp", "armv7a_hardfp", "armv7", "armv7a_vfpv3_hardfp"}},
    {"armv8l", {NULL}},
    {"aarch64", {"arm64", "arm64_generic"}},
    {"ppc", {"powerpc"}},
    {"ppc64", {"powerpc64"}},
    {"ppc64le", {"ppc64el"}},
    {"s390x", {NULL}},
    {"mips", {"mipsel", "mipsle"}},
    {"mips64", {"mips64el", "mips64le"}},
    {"riscv32", {NULL}},
    {"riscv64", {NULL}},
    {"loongarch64", {"loong64"}},
};

const char *ferry_image_architecture_canonical(const char *name)
{
    if (name == NULL)
        return NULL;
    for (guint i = 0; i < G_N_ELEMENTS(architectures); i++) {
        if (strcmp(name, architectures[i].name) == 0)
            return architectures[i].name;
        for (guint j = 0; j < G_N_ELEMENTS(architectures[i].aliases) && architectures[i].aliases[j]; j++) {
            if (strcmp(name, architectures[i].aliases[j]) == 0)
                return architectures[i].name;
        }
    }
    return NULL;
}

static gboolean parse_metadata(GBytes *yaml, FerryImageInfo *info, GError **error)
{
    gsize size;
    const char *yaml_text = g_bytes_get_data(yaml, &size);
    g_autoptr(json_t) metadata = ferry_yaml_parse(yaml_text, size, error);
    if (metadata == NULL) {
        g_prefix_error(error, "Invalid metadata.yaml: ");
        return FALSE;
    }
    if (!json_is_object(metadata)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid metadata.yaml: not a mapping");
        return FALSE;
    }

    json_t *architecture = json_object_get(metadata, "architecture");
    if (architecture == NULL || json_is_null(architecture) ||
        (json_is_string(architecture) && json_string_length(architecture) == 0)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Missing architecture in metadata.yaml");
        return FALSE;
    }
    g_autofree char *arch_text = ferry_yaml_scalar_text(architecture);
    const char *canonical = ferry_image_architecture_canonical(arch_text);
    if (canonical == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, 
                    "Unsupported architecture \"%s\" in metadata.yaml",
                    arch_text != NULL ? arch_text : "(not a string)");
        return FALSE;
    }
    info->architecture = g_strdup(canonical);

    json_t *creation_date = json_object_get(metadata, "creation_date");
    if (json_is_integer(creation_date)) {
        info->creation_date = json_integer_value(creation_date);
    } else if (creation_date != NULL && !json_is_null(creation_date)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                    "Invalid metadata.yaml: creation_date is not an integer");
        return FALSE;
    }

    info->properties = json_object();
    json_t *properties = json_object_get(metadata, "properties");
    if (properties != NULL && !json_is_null(properties) && !json_is_object(properties)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, 
                    "Invalid metadata.yaml: properties is not a mapping");
        return FALSE;
    }
    const char *key;
    json_t *value;
    json_object_foreach (properties, key, value) {
        /* go-yaml reads `release: 22.04` into Incus's map[string]string as "22.04"; so do we. */
        g_autofree char *text = ferry_yaml_scalar_text(value);
        if (text == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Invalid metadata.yaml: property \"%s\" is not a string", key);
            return FALSE;
        }
        json_object_set_new(info->properties, key, json_string(text));
    }
    return TRUE;
}

FerryImageInfo *ferry_image_archive_inspect(const char *tarball_path, GCancellable *cancellable,
                                            GError **error)
{
    g_autoptr(ImageReader) reader = image_reader_open(tarball_path, TRUE, cancellable, error);
    if (reader == NULL)
        return NULL;

    g_autoptr(GBytes) metadata = NULL;
    gboolean has_rootfs = FALSE, is_vm = FALSE;
    for (;;) {
        if (g_cancellable_set_error_if_cancelled(cancellable, error))
            return NULL;
        struct archive_entry *entry;
        if (!image_reader_next(reader, &entry, error))
            return NULL;
        if (entry == NULL)
            break;
        g_auto(ImageEntryInfo) info = {0};
        if (!image_entry_describe(entry, &info, error))
            return NULL;
        switch (info.section) {
        case IMAGE_SECTION_METADATA:
            if (metadata != NULL) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "Invalid image tarball: metadata.yaml appears twice");
                return NULL;
            }
            metadata = image_reader_data_all(reader, "metadata.yaml", METADATA_MAX_SIZE, error);
            if (metadata == NULL)
                return NULL;
            continue;
        case IMAGE_SECTION_ROOTFS:
            has_rootfs = TRUE;
            break;
        case IMAGE_SECTION_VM_DISK:
            is_vm = TRUE;
            break;
        default:
            break;
        }
        if (!image_reader_skip_data(reader, error))
            return NULL;
    }

    g_autoptr(FerryImageInfo) result = g_new0(FerryImageInfo, 1);
    result->fingerprint = image_reader_finish_hash(reader, error);
    if (result->fingerprint == NULL)
        return NULL;
    result->size = image_reader_consumed(reader);

    if (is_vm) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Virtual machine images are not supported");
        return NULL;
    }
    if (metadata == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Image tarball has no metadata.yaml");
        return NULL;
    }
    if (!parse_metadata(metadata, result, error))
        return NULL;
    if (!has_rootfs) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Image tarball has no rootfs");
        return NULL;
    }
    result->type = g_strdup("container");
    return g_steal_pointer(&result);
}

gboolean ferry_image_archive_unpack(const char *tarball_path, const char *dest_dir, guint32 uid_shift,
                                    guint32 gid_shift, FerryProgressFunc progress, gpointer user_data,
                                    GCancellable *cancellable, GError **error)
{
    g_autoptr(ImageReader) reader = image_reader_open(tarball_path, FALSE, cancellable, error);
    if (reader == NULL)
        return FALSE;
    g_autoptr(ImageExtractor) extractor =
        image_extractor_new(dest_dir, reader, progress, user_data, cancellable, error);
    if (extractor == NULL)
        return FALSE;

    gboolean has_metadata = FALSE, has_rootfs = FALSE;
    for (;;) {
        struct archive_entry *entry;
        if (!image_reader_next(reader, &entry, error))
            return FALSE;
        if (entry == NULL)
            break;
        g_auto(ImageEntryInfo) info = {0};
        if (!image_entry_describe(entry, &info, error))
            return FALSE;
        switch (info.section) {
        case IMAGE_SECTION_VM_DISK:
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Virtual machine images are not supported");
            return FALSE;
        case IMAGE_SECTION_METADATA:
            if (has_metadata) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                            "Invalid image tarball: metadata.yaml appears twice");
                return FALSE;
            }
            has_metadata = TRUE;
            /* Read by the daemon, never by the container: not shifted, as in Incus. */
            if (!image_extractor_write(extractor, entry, &info, 0, 0, error))
                return FALSE;
            break;
        case IMAGE_SECTION_TEMPLATES:
            if (!image_extractor_write(extractor, entry, &info, 0, 0, error))
                return FALSE;
            break;
        case IMAGE_SECTION_ROOTFS:
            has_rootfs = TRUE;
            if (!image_extractor_write(extractor, entry, &info, uid_shift, gid_shift, error))
                return FALSE;
            break;
        default:
            if (!image_reader_skip_data(reader, error))
                return FALSE;
            break;
        }
    }
    if (!has_metadata) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Image tarball has no metadata.yaml");
        return FALSE;
    }
    if (!has_rootfs) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Image tarball has no rootfs");
        return FALSE;
    }
    if (!image_extractor_finish(extractor, error))
        return FALSE;
    if (progress != NULL)
        progress(image_reader_size(reader), image_reader_size(reader), user_data);
    return TRUE;
}
