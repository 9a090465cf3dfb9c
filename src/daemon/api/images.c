/* /1.0/images and /1.0/images/aliases: per-project images stored as $FERRY_DIR/images/<fingerprint>.
 *
 * The tarball is shared by every project that has an image with its fingerprint; it goes when the last of
 * them is deleted, with the unpacked copies on the pools. An upload is checked and stored in an operation, as
 * in Incus: the router's temp file is linked to a name of our own first, since it vanishes with the request.
 */
#include "api.h"
#include "projects.h"

#include "error.h"
#include "events.h"
#include "image_archive.h"
#include "instances.h"
#include "json.h"
#include "names.h"
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

/* Serialises what makes or removes an image file and its rows, so that two uploads of the same image, or an
 * upload racing a delete in another project, never leave a row without its file. */
static GMutex images_lock;

static char *image_url(const char *fingerprint)
{
    return g_strdup_printf("/1.0/images/%s", fingerprint);
}

static char *alias_url(const char *name)
{
    g_autofree char *escaped = g_uri_escape_string(name, NULL, FALSE);
    return g_strdup_printf("/1.0/images/aliases/%s", escaped);
}

static gboolean check_if_match(FerryRequest *request, json_t *etag_source, GError **error)
{
    if (request->msg == NULL)
        return TRUE;
    const char *wanted =
        soup_message_headers_get_one(soup_server_message_get_request_headers(request->msg), "If-Match");
    if (wanted == NULL || *wanted == '\0')
        return TRUE;
    g_autofree char *etag = ferry_response_etag_of(etag_source);
    if (!g_str_equal(wanted, etag)) {
        g_set_error(error, FERRY_ERROR, 412, "ETag doesn't match: %s vs %s", wanted, etag);
        return FALSE;
    }
    return TRUE;
}

/* Incus's X-Incus-<name> request header, or LXD's X-LXD-<name>. */
static const char *upload_header(FerryRequest *request, const char *name)
{
    SoupMessageHeaders *headers = soup_server_message_get_request_headers(request->msg);
    g_autofree char *incus = g_strdup_printf("X-Incus-%s", name);
    const char *value = soup_message_headers_get_one(headers, incus);
    if (value == NULL) {
        g_autofree char *lxd = g_strdup_printf("X-LXD-%s", name);
        value = soup_message_headers_get_one(headers, lxd);
    }
    return value;
}

/* Values of key in a URL-encoded query string ("alias=a&alias=b"), in order. */
static GPtrArray *query_values(const char *query, const char *key, GError **error)
{
    GPtrArray *values = g_ptr_array_new_with_free_func(g_free);
    if (query == NULL || *query == '\0')
        return values;
    GUriParamsIter iter;
    g_uri_params_iter_init(&iter, query, -1, "&", G_URI_PARAMS_WWW_FORM);
    char *name = NULL;
    char *value = NULL;
    GError *local_error = NULL;
    while (g_uri_params_iter_next(&iter, &name, &value, &local_error)) {
        if (key == NULL || g_str_equal(name, key))
            g_ptr_array_add(values, key == NULL ? g_strdup_printf("%s=%s", name, value) : g_strdup(value));
        g_free(name);
        g_free(value);
    }
    if (local_error != NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid header value \"%s\": %s", query,
                    local_error->message);
        g_error_free(local_error);
        g_ptr_array_unref(values);
        return NULL;
    }
    return values;
}

/* Alias names may have '/'-separated parts ("debian/12"); each part follows the entity name rules. */
static gboolean validate_alias_name(const char *name, GError **error)
{
    if (name == NULL || *name == '\0') {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid image alias name: Name is empty");
        return FALSE;
    }
    g_auto(GStrv) parts = g_strsplit(name, "/", -1);
    for (guint i = 0; parts[i] != NULL; i++) {
        g_autoptr(GError) part_error = NULL;
        if (!ferry_validate_entity_name("image alias", parts[i], &part_error) || strlen(name) > 255) {
            g_set_error(
                error, FERRY_ERROR, FERRY_ERROR_INVALID,
                "Invalid image alias name \"%s\": Name must be 1-255 characters without quotes, whitespace "
                "or empty '/'-separated parts",
                name);
            return FALSE;
        }
    }
    return TRUE;
}

/* The one image of project whose fingerprint starts with prefix: 404 for none, 400 for several. */
static char *resolve_fingerprint(FerryDaemon *daemon, const char *project, const char *prefix, GError **error)
{
    g_autoptr(GPtrArray) names = ferry_db_list_names(daemon->db, FERRY_KIND_IMAGE, project, "");
    char *match = NULL;
    for (guint i = 0; prefix != NULL && *prefix != '\0' && i < names->len; i++) {
        if (!g_str_has_prefix(names->pdata[i], prefix))
            continue;
        if (match != NULL) {
            g_free(match);
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Partial fingerprint matches more than one image");
            return NULL;
        }
        match = g_strdup(names->pdata[i]);
    }
    if (match == NULL)
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Image \"%s\" not found",
                    prefix != NULL ? prefix : "");
    return match;
}

static json_t *image_aliases(FerryDaemon *daemon, const char *project, const char *fingerprint)
{
    json_t *aliases = json_array();
    g_autoptr(json_t) rows = ferry_db_list(daemon->db, FERRY_KIND_IMAGE_ALIAS, project, "");
    size_t index;
    json_t *row;
    json_array_foreach(rows, index, row) {
        if (g_strcmp0(ferry_json_get_string(row, "target"), fingerprint) != 0)
            continue;
        const char *description = ferry_json_get_string(row, "description");
        json_array_append_new(aliases, json_pack("{s:s, s:s}", "name", ferry_json_get_string(row, "name"),
                                                 "description", description != NULL ? description : ""));
    }
    return aliases;
}

static json_t *image_render(FerryDaemon *daemon, const char *project, const char *fingerprint, GError **error)
{
    json_t *image = ferry_db_get(daemon->db, FERRY_KIND_IMAGE, project, "", fingerprint, error);
    if (image == NULL)
        return NULL;
    json_object_set_new(image, "fingerprint", json_string(fingerprint));
    json_object_set_new(image, "aliases", image_aliases(daemon, project, fingerprint));
    json_object_set_new(image, "project", json_string(project));
    return image;
}

static json_t *image_etag_source(json_t *image)
{
    return json_pack("{s:O?, s:O?, s:O?}", "public", json_object_get(image, "public"), "auto_update",
                     json_object_get(image, "auto_update"), "properties",
                     json_object_get(image, "properties"));
}

static gboolean fingerprint_elsewhere(FerryDaemon *daemon, const char *fingerprint)
{
    g_autoptr(json_t) images = ferry_db_list(daemon->db, FERRY_KIND_IMAGE, NULL, "");
    size_t index;
    json_t *image;
    json_array_foreach(images, index, image) {
        if (g_strcmp0(ferry_json_get_string(image, "name"), fingerprint) == 0)
            return TRUE;
    }
    return FALSE;
}

/* The tarball and the unpacked copies on every pool; called with images_lock held once no row is left. */
static void remove_image_files(FerryDaemon *daemon, const char *fingerprint)
{
    g_autofree char *path = ferry_image_path(daemon, fingerprint);
    if (g_unlink(path) < 0 && errno != ENOENT)
        g_warning("Failed to remove image file %s: %s", path, g_strerror(errno));
    g_mutex_lock(&daemon->pools_lock);
    g_autofree gpointer *names = g_hash_table_get_keys_as_array(daemon->pools, NULL);
    g_auto(GStrv) pool_names = g_strdupv((char **)names);
    g_mutex_unlock(&daemon->pools_lock);
    for (guint i = 0; pool_names[i] != NULL; i++) {
        FerryPool *pool = ferry_daemon_get_pool(daemon, pool_names[i], NULL);
        if (pool == NULL || !ferry_pool_volume_exists(pool, FERRY_VOLUME_IMAGE, fingerprint))
            continue;
        g_autoptr(GError) error = NULL;
        if (!ferry_pool_delete_volume(pool, FERRY_VOLUME_IMAGE, fingerprint, &error))
            g_warning("Failed to remove image %s from storage pool \"%s\": %s", fingerprint, pool_names[i],
                      error->message);
    }
}

static gboolean check_profiles(FerryDaemon *daemon, const char *project, json_t *profiles, GError **error)
{
    if (!json_is_array(profiles)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Field \"profiles\" must be a list of names");
        return FALSE;
    }
    size_t index;
    json_t *profile;
    json_array_foreach(profiles, index, profile) {
        if (!json_is_string(profile)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID,
                        "Field \"profiles\" must be a list of names");
            return FALSE;
        }
        if (!ferry_db_exists(daemon->db, FERRY_KIND_PROFILE, project, "", json_string_value(profile))) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Profile \"%s\" doesn't exist",
                        json_string_value(profile));
            return FALSE;
        }
    }
    return TRUE;
}

/* --- /1.0/images --- */

FerryResponse *api_images_get(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, request->project, &error))
        return ferry_response_error(error);
    gboolean recursive = ferry_request_recursion(request) > 0;
    g_autoptr(GPtrArray) names = ferry_db_list_names(daemon->db, FERRY_KIND_IMAGE, request->project, "");
    json_t *result = json_array();
    for (guint i = 0; i < names->len; i++) {
        if (!recursive) {
            g_autofree char *url = image_url(names->pdata[i]);
            json_array_append_new(result, json_string(url));
            continue;
        }
        json_t *image = image_render(daemon, request->project, names->pdata[i], NULL);
        if (image != NULL)
            json_array_append_new(result, image);
    }
    return ferry_response_sync(result);
}

typedef struct {
    char *project;
    char *staged; /* our link to the upload; renamed into images/ or removed */
    char *expected_fingerprint;
    char *filename;
    gboolean public;
    json_t *properties; /* from X-Incus-properties: override metadata.yaml's */
    json_t *profiles;
    GPtrArray *aliases;
} UploadJob;

static void upload_job_free(gpointer data)
{
    UploadJob *job = data;
    if (job->staged != NULL)
        g_unlink(job->staged);
    g_free(job->project);
    g_free(job->staged);
    g_free(job->expected_fingerprint);
    g_free(job->filename);
    json_decref(job->properties);
    json_decref(job->profiles);
    g_ptr_array_unref(job->aliases);
    g_free(job);
}

static json_t *image_document(UploadJob *job, FerryImageInfo *info)
{
    json_t *properties = json_deep_copy(info->properties);
    json_object_update(properties, job->properties);
    g_autofree char *created = ferry_json_timestamp(info->creation_date * G_USEC_PER_SEC);
    g_autofree char *uploaded = ferry_json_timestamp(g_get_real_time());
    return json_pack("{s:s, s:I, s:s, s:s, s:b, s:b, s:o, s:s, s:s, s:s, s:s, s:b, s:O}", "filename",
                     job->filename != NULL ? job->filename : "", "size", (json_int_t)info->size,
                     "architecture", info->architecture, "type",
                     info->type != NULL ? info->type : "container", "public", job->public, "auto_update",
                     FALSE, "properties", properties, "created_at", created, "uploaded_at", uploaded,
                     "expires_at", FERRY_JSON_ZERO_TIME, "last_used_at", FERRY_JSON_ZERO_TIME, "cached",
                     FALSE, "profiles", job->profiles);
}

/* Rows and file of a checked upload, all or nothing. */
static gboolean store_upload(FerryDaemon *daemon, UploadJob *job, FerryImageInfo *info, GError **error)
{
    const char *fingerprint = info->fingerprint;
    FerryDb *db = daemon->db;
    g_autofree char *target = ferry_image_path(daemon, fingerprint);
    g_autoptr(json_t) doc = image_document(job, info);
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&images_lock);
    ferry_db_begin(db);
    if (ferry_db_exists(db, FERRY_KIND_IMAGE, job->project, "", fingerprint)) {
        ferry_db_rollback(db);
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Image with same fingerprint already exists");
        return FALSE;
    }
    if (!ferry_db_create(db, FERRY_KIND_IMAGE, job->project, "", fingerprint, doc, error)) {
        ferry_db_rollback(db);
        return FALSE;
    }
    for (guint i = 0; i < job->aliases->len; i++) {
        const char *alias = job->aliases->pdata[i];
        g_autoptr(json_t) row =
            json_pack("{s:s, s:s, s:s}", "target", fingerprint, "description", "", "type", "container");
        if (ferry_db_exists(db, FERRY_KIND_IMAGE_ALIAS, job->project, "", alias)) {
            ferry_db_rollback(db);
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Alias \"%s\" already exists", alias);
            return FALSE;
        }
        if (!ferry_db_create(db, FERRY_KIND_IMAGE_ALIAS, job->project, "", alias, row, error)) {
            ferry_db_rollback(db);
            return FALSE;
        }
    }
    /* Another project may already have the same bytes under this name. */
    gboolean placed = FALSE;
    if (!g_file_test(target, G_FILE_TEST_EXISTS)) {
        if (rename(job->staged, target) < 0) {
            ferry_set_error_errno(error, errno, "Failed to store image %s", fingerprint);
            ferry_db_rollback(db);
            return FALSE;
        }
        g_clear_pointer(&job->staged, g_free);
        placed = TRUE;
    }
    if (!ferry_db_commit(db, error)) {
        if (placed)
            g_unlink(target);
        return FALSE;
    }
    return TRUE;
}

static gboolean import_upload(FerryOperation *op, UploadJob *job, GError **error)
{
    FerryDaemon *daemon = ferry_operation_get_daemon(op);
    g_autoptr(FerryImageInfo) info =
        ferry_image_archive_inspect(job->staged, ferry_operation_get_cancellable(op), error);
    if (info == NULL)
        return FALSE;
    g_autofree char *size = g_strdup_printf("%" G_GUINT64_FORMAT, info->size);
    ferry_operation_set_metadata(op, json_pack("{s:s, s:s}", "fingerprint", info->fingerprint, "size", size));
    if (job->expected_fingerprint != NULL && !g_str_equal(job->expected_fingerprint, info->fingerprint)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Fingerprints don't match, got %s expected %s",
                    info->fingerprint, job->expected_fingerprint);
        return FALSE;
    }
    if (!store_upload(daemon, job, info, error))
        return FALSE;
    for (guint i = 0; i < job->aliases->len; i++) {
        g_autofree char *source = alias_url(job->aliases->pdata[i]);
        ferry_events_lifecycle(daemon->events, job->project, "image-alias-created", source);
    }
    g_autofree char *source = image_url(info->fingerprint);
    ferry_events_lifecycle(daemon->events, job->project, "image-created", source);
    return TRUE;
}

static gboolean run_upload(FerryOperation *op, gpointer data, GError **error)
{
    UploadJob *job = data;
    gboolean ok = import_upload(op, job, error);
    /* Finished operations linger for a while; their uploads should not. */
    if (job->staged != NULL) {
        g_unlink(job->staged);
        g_clear_pointer(&job->staged, g_free);
    }
    return ok;
}

/* Everything about an upload that can be checked before its bytes are read. */
static UploadJob *upload_job_new(FerryRequest *request, GError **error)
{
    FerryDaemon *daemon = request->daemon;
    g_autoptr(GPtrArray) aliases = query_values(upload_header(request, "aliases"), "alias", error);
    if (aliases == NULL)
        return NULL;
    g_autoptr(GPtrArray) profile_names = query_values(upload_header(request, "profiles"), "profile", error);
    if (profile_names == NULL)
        return NULL;
    g_autoptr(GPtrArray) properties = query_values(upload_header(request, "properties"), NULL, error);
    if (properties == NULL)
        return NULL;

    for (guint i = 0; i < aliases->len; i++) {
        const char *alias = aliases->pdata[i];
        if (!validate_alias_name(alias, error))
            return NULL;
        if (ferry_db_exists(daemon->db, FERRY_KIND_IMAGE_ALIAS, request->project, "", alias)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Alias \"%s\" already exists", alias);
            return NULL;
        }
    }
    g_autoptr(json_t) profiles = json_array();
    for (guint i = 0; i < profile_names->len; i++)
        json_array_append_new(profiles, json_string(profile_names->pdata[i]));
    if (profile_names->len == 0)
        json_array_append_new(profiles, json_string("default"));
    if (!check_profiles(daemon, request->project, profiles, error))
        return NULL;

    const char *expected = upload_header(request, "fingerprint");
    if (expected != NULL && *expected != '\0' &&
        ferry_db_exists(daemon->db, FERRY_KIND_IMAGE, request->project, "", expected)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_CONFLICT, "Image with same fingerprint already exists");
        return NULL;
    }

    UploadJob *job = g_new0(UploadJob, 1);
    job->project = g_strdup(request->project);
    job->expected_fingerprint = expected != NULL && *expected != '\0' ? g_strdup(expected) : NULL;
    job->filename = g_strdup(upload_header(request, "filename"));
    const char *public = upload_header(request, "public");
    job->public = public != NULL && (g_ascii_strcasecmp(public, "true") == 0 || g_str_equal(public, "1"));
    job->properties = json_object();
    for (guint i = 0; i < properties->len; i++) {
        g_auto(GStrv) pair = g_strsplit(properties->pdata[i], "=", 2);
        json_object_set_new(job->properties, pair[0], json_string(pair[1] != NULL ? pair[1] : ""));
    }
    job->profiles = g_steal_pointer(&profiles);
    job->aliases = g_steal_pointer(&aliases);
    return job;
}

FerryResponse *api_images_post(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, request->project, &error))
        return ferry_response_error(error);
    if (request->upload_path == NULL) {
        if (request->body == NULL)
            return ferry_response_error_new(400, "Invalid request: empty body");
        json_t *source = json_object_get(request->body, "source");
        const char *type = ferry_json_get_string(source, "type");
        return ferry_response_error_new(501,
                                        "Image source \"%s\" is not supported: import an image file instead",
                                        type != NULL ? type : "");
    }
    const char *content_type =
        soup_message_headers_get_content_type(soup_server_message_get_request_headers(request->msg), NULL);
    if (content_type != NULL && g_str_has_prefix(content_type, "multipart/"))
        return ferry_response_error_new(501,
                                        "Split images are not supported: import a unified image tarball");

    UploadJob *job = upload_job_new(request, &error);
    if (job == NULL)
        return ferry_response_error(error);
    /* The router deletes its file when the request ends; a second name keeps the bytes for the operation. */
    g_autofree char *id = g_uuid_string_random();
    g_autofree char *leaf = g_strdup_printf("image-%s", id);
    job->staged = ferry_daemon_path(daemon, "uploads", leaf, NULL);
    if (link(request->upload_path, job->staged) < 0) {
        int saved = errno;
        g_clear_pointer(&job->staged, g_free);
        upload_job_free(job);
        return ferry_response_error_new(500, "Failed to keep the uploaded image: %s", g_strerror(saved));
    }
    g_autoptr(FerryOperation) op =
        ferry_operation_new(daemon, FERRY_OPERATION_TASK, request->project, "Downloading image", NULL, NULL,
                            run_upload, job, upload_job_free);
    ferry_operation_start(op);
    return ferry_response_async(op);
}

FerryResponse *api_image_get(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, request->project, &error))
        return ferry_response_error(error);
    g_autofree char *fingerprint =
        resolve_fingerprint(daemon, request->project, ferry_request_param(request, "fingerprint"), &error);
    if (fingerprint == NULL)
        return ferry_response_error(error);
    json_t *image = image_render(daemon, request->project, fingerprint, &error);
    if (image == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) etag_source = image_etag_source(image);
    g_autofree char *etag = ferry_response_etag_of(etag_source);
    FerryResponse *response = ferry_response_sync(image);
    ferry_response_set_etag(response, etag);
    return response;
}

/* PUT replaces public, auto_update, properties and profiles; PATCH changes only the fields given. */
FerryResponse *api_image_put(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *project = request->project;
    gboolean patch = g_str_equal(request->method, "PATCH");
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, project, &error))
        return ferry_response_error(error);
    g_autofree char *fingerprint =
        resolve_fingerprint(daemon, project, ferry_request_param(request, "fingerprint"), &error);
    if (fingerprint == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) doc = ferry_db_get(daemon->db, FERRY_KIND_IMAGE, project, "", fingerprint, &error);
    if (doc == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) etag_source = image_etag_source(doc);
    if (!check_if_match(request, etag_source, &error))
        return ferry_response_error(error);
    json_t *body = request->body;
    if (body == NULL)
        return ferry_response_error_new(400, "Invalid request: empty body");
    if (!ferry_json_check_string_map(body, "properties", &error))
        return ferry_response_error(error);
    static const char *const flags[] = {"public", "auto_update"};
    for (gsize i = 0; i < G_N_ELEMENTS(flags); i++) {
        json_t *value = json_object_get(body, flags[i]);
        if (value != NULL && !json_is_boolean(value))
            return ferry_response_error_new(400, "Field \"%s\" must be a boolean", flags[i]);
        if (value != NULL || !patch)
            json_object_set_new(doc, flags[i], json_boolean(json_is_true(value)));
    }
    json_t *properties = json_object_get(body, "properties");
    if (json_is_object(properties) && patch) {
        json_t *merged = ferry_json_object_or_empty(doc, "properties");
        json_object_update(merged, properties);
        json_object_set_new(doc, "properties", merged);
    } else if (!patch) {
        json_object_set_new(doc, "properties", ferry_json_object_or_empty(body, "properties"));
    }
    json_t *profiles = json_object_get(body, "profiles");
    if (profiles != NULL && !json_is_null(profiles)) {
        if (!check_profiles(daemon, project, profiles, &error))
            return ferry_response_error(error);
        json_object_set(doc, "profiles", profiles);
    } else if (!patch) {
        json_object_set_new(doc, "profiles", json_pack("[s]", "default"));
    }
    json_t *expires_at = json_object_get(body, "expires_at");
    if (expires_at != NULL && !json_is_null(expires_at)) {
        if (!json_is_string(expires_at))
            return ferry_response_error_new(400, "Field \"expires_at\" must be a timestamp");
        g_autoptr(GDateTime) parsed = g_date_time_new_from_iso8601(json_string_value(expires_at), NULL);
        if (parsed == NULL)
            return ferry_response_error_new(400, "Invalid timestamp \"%s\"", json_string_value(expires_at));
        if (g_date_time_get_year(parsed) > 1)
            json_object_set(doc, "expires_at", expires_at);
    }
    if (!ferry_db_update(daemon->db, FERRY_KIND_IMAGE, project, "", fingerprint, doc, &error))
        return ferry_response_error(error);
    g_autofree char *source = image_url(fingerprint);
    ferry_events_lifecycle(daemon->events, project, "image-updated", source);
    return ferry_response_sync(NULL);
}

typedef struct {
    char *project;
    char *fingerprint;
} DeleteJob;

static void delete_job_free(gpointer data)
{
    DeleteJob *job = data;
    g_free(job->project);
    g_free(job->fingerprint);
    g_free(job);
}

static gboolean run_delete(FerryOperation *op, gpointer data, GError **error)
{
    DeleteJob *job = data;
    FerryDaemon *daemon = ferry_operation_get_daemon(op);
    FerryDb *db = daemon->db;
    g_autoptr(GPtrArray) removed_aliases = g_ptr_array_new_with_free_func(g_free);
    {
        g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&images_lock);
        ferry_db_begin(db);
        if (!ferry_db_exists(db, FERRY_KIND_IMAGE, job->project, "", job->fingerprint)) {
            ferry_db_rollback(db);
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Image \"%s\" not found",
                        job->fingerprint);
            return FALSE;
        }
        g_autoptr(json_t) aliases = ferry_db_list(db, FERRY_KIND_IMAGE_ALIAS, job->project, "");
        size_t index;
        json_t *alias;
        json_array_foreach(aliases, index, alias) {
            const char *name = ferry_json_get_string(alias, "name");
            if (g_strcmp0(ferry_json_get_string(alias, "target"), job->fingerprint) != 0)
                continue;
            if (!ferry_db_delete(db, FERRY_KIND_IMAGE_ALIAS, job->project, "", name, error)) {
                ferry_db_rollback(db);
                return FALSE;
            }
            g_ptr_array_add(removed_aliases, g_strdup(name));
        }
        if (!ferry_db_delete(db, FERRY_KIND_IMAGE, job->project, "", job->fingerprint, error)) {
            ferry_db_rollback(db);
            return FALSE;
        }
        if (!ferry_db_commit(db, error))
            return FALSE;
        if (!fingerprint_elsewhere(daemon, job->fingerprint))
            remove_image_files(daemon, job->fingerprint);
    }
    for (guint i = 0; i < removed_aliases->len; i++) {
        g_autofree char *source = alias_url(removed_aliases->pdata[i]);
        ferry_events_lifecycle(daemon->events, job->project, "image-alias-deleted", source);
    }
    g_autofree char *source = image_url(job->fingerprint);
    ferry_events_lifecycle(daemon->events, job->project, "image-deleted", source);
    return TRUE;
}

FerryResponse *api_image_delete(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, request->project, &error))
        return ferry_response_error(error);
    g_autofree char *fingerprint =
        resolve_fingerprint(daemon, request->project, ferry_request_param(request, "fingerprint"), &error);
    if (fingerprint == NULL)
        return ferry_response_error(error);
    DeleteJob *job = g_new0(DeleteJob, 1);
    job->project = g_strdup(request->project);
    job->fingerprint = g_strdup(fingerprint);
    g_autofree char *url = image_url(fingerprint);
    json_t *resources = json_pack("{s:[s]}", "images", url);
    g_autoptr(FerryOperation) op =
        ferry_operation_new(daemon, FERRY_OPERATION_TASK, request->project, "Deleting image", resources, NULL,
                            run_delete, job, delete_job_free);
    ferry_operation_start(op);
    return ferry_response_async(op);
}

/* The file extension Incus would give the tarball, from its compression's magic bytes. */
static const char *tarball_extension(GBytes *bytes)
{
    static const struct {
        const char *magic;
        gsize length;
        const char *extension;
    } formats[] = {
        {"\xfd"
         "7zXZ\x00",
         6, ".tar.xz"},
        {"\x1f\x8b", 2, ".tar.gz"},
        {"\x28\xb5\x2f\xfd", 4, ".tar.zst"},
        {"BZh", 3, ".tar.bz2"},
        {"\x04\x22\x4d\x18", 4, ".tar.lz4"},
        {"\x5d\x00\x00", 3, ".tar.lzma"},
    };
    gsize size = 0;
    const guint8 *data = g_bytes_get_data(bytes, &size);
    for (gsize i = 0; i < G_N_ELEMENTS(formats); i++) {
        if (size >= formats[i].length && memcmp(data, formats[i].magic, formats[i].length) == 0)
            return formats[i].extension;
    }
    return ".tar";
}

/* The file is mapped and handed to libsoup as is: no copy, and the kernel pages it in as it is written. */
FerryResponse *api_image_export(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, request->project, &error))
        return ferry_response_error(error);
    g_autofree char *fingerprint =
        resolve_fingerprint(daemon, request->project, ferry_request_param(request, "fingerprint"), &error);
    if (fingerprint == NULL)
        return ferry_response_error(error);
    g_autofree char *path = ferry_image_path(daemon, fingerprint);
    g_autoptr(GError) map_error = NULL;
    GMappedFile *mapped = g_mapped_file_new(path, FALSE, &map_error);
    if (mapped == NULL)
        return ferry_response_error_new(500, "Failed to read image %s: %s", fingerprint, map_error->message);
    g_autoptr(GBytes) bytes = g_mapped_file_get_bytes(mapped);
    g_mapped_file_unref(mapped);

    SoupMessageHeaders *headers = soup_server_message_get_response_headers(request->msg);
    g_autofree char *disposition =
        g_strdup_printf("attachment; filename=%s%s", fingerprint, tarball_extension(bytes));
    soup_message_headers_replace(headers, "Content-Disposition", disposition);
    soup_message_headers_replace(headers, "X-Incus-Type", "incus");
    soup_message_headers_set_content_type(headers, "application/octet-stream", NULL);
    soup_message_headers_set_content_length(headers, (goffset)g_bytes_get_size(bytes));
    soup_server_message_set_status(request->msg, SOUP_STATUS_OK, NULL);
    soup_message_body_append_bytes(soup_server_message_get_response_body(request->msg), bytes);
    g_autofree char *source = image_url(fingerprint);
    ferry_events_lifecycle(daemon->events, request->project, "image-retrieved", source);
    return ferry_response_handled();
}

/* --- /1.0/images/aliases --- */

static json_t *alias_render(FerryDaemon *daemon, const char *project, const char *name, GError **error)
{
    g_autoptr(json_t) row = ferry_db_get(daemon->db, FERRY_KIND_IMAGE_ALIAS, project, "", name, error);
    if (row == NULL)
        return NULL;
    const char *description = ferry_json_get_string(row, "description");
    const char *type = ferry_json_get_string(row, "type");
    return json_pack("{s:s, s:s, s:s, s:s}", "name", name, "description",
                     description != NULL ? description : "", "target",
                     ferry_json_get_string(row, "target") ?: "", "type", type != NULL ? type : "container");
}

static json_t *alias_etag_source(json_t *alias)
{
    return json_pack("{s:O?, s:O?}", "description", json_object_get(alias, "description"), "target",
                     json_object_get(alias, "target"));
}

FerryResponse *api_image_aliases_get(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, request->project, &error))
        return ferry_response_error(error);
    gboolean recursive = ferry_request_recursion(request) > 0;
    g_autoptr(GPtrArray) names =
        ferry_db_list_names(daemon->db, FERRY_KIND_IMAGE_ALIAS, request->project, "");
    json_t *result = json_array();
    for (guint i = 0; i < names->len; i++) {
        if (!recursive) {
            g_autofree char *url = alias_url(names->pdata[i]);
            json_array_append_new(result, json_string(url));
            continue;
        }
        json_t *alias = alias_render(daemon, request->project, names->pdata[i], NULL);
        if (alias != NULL)
            json_array_append_new(result, alias);
    }
    return ferry_response_sync(result);
}

static gboolean check_alias_body(json_t *body, GError **error)
{
    if (body == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid request: empty body");
        return FALSE;
    }
    static const char *const fields[] = {"name", "target", "description", "type"};
    for (gsize i = 0; i < G_N_ELEMENTS(fields); i++) {
        json_t *value = json_object_get(body, fields[i]);
        if (value != NULL && !json_is_string(value) && !json_is_null(value)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Field \"%s\" must be a string", fields[i]);
            return FALSE;
        }
    }
    const char *type = ferry_json_get_string(body, "type");
    if (type != NULL && *type != '\0' && !g_str_equal(type, "container")) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Unsupported image alias type \"%s\"", type);
        return FALSE;
    }
    return TRUE;
}

FerryResponse *api_image_aliases_post(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *project = request->project;
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, project, &error) || !check_alias_body(request->body, &error))
        return ferry_response_error(error);
    const char *name = ferry_json_get_string(request->body, "name");
    const char *target = ferry_json_get_string(request->body, "target");
    if (name == NULL || *name == '\0' || target == NULL || *target == '\0')
        return ferry_response_error_new(400, "Name and target are required");
    if (!validate_alias_name(name, &error))
        return ferry_response_error(error);
    if (ferry_db_exists(daemon->db, FERRY_KIND_IMAGE_ALIAS, project, "", name))
        return ferry_response_error_new(409, "Alias \"%s\" already exists", name);
    g_autofree char *fingerprint = resolve_fingerprint(daemon, project, target, &error);
    if (fingerprint == NULL)
        return ferry_response_error(error);
    const char *description = ferry_json_get_string(request->body, "description");
    g_autoptr(json_t) row = json_pack("{s:s, s:s, s:s}", "target", fingerprint, "description",
                                      description != NULL ? description : "", "type", "container");
    if (!ferry_db_create(daemon->db, FERRY_KIND_IMAGE_ALIAS, project, "", name, row, &error)) {
        if (error->code == FERRY_ERROR_CONFLICT) {
            g_clear_error(&error);
            return ferry_response_error_new(409, "Alias \"%s\" already exists", name);
        }
        return ferry_response_error(error);
    }
    g_autofree char *location = alias_url(name);
    ferry_events_lifecycle(daemon->events, project, "image-alias-created", location);
    return ferry_response_created(NULL, location);
}

FerryResponse *api_image_alias_get(FerryRequest *request)
{
    GError *error = NULL;
    if (!ferry_project_check_exists(request->daemon, request->project, &error))
        return ferry_response_error(error);
    json_t *alias =
        alias_render(request->daemon, request->project, ferry_request_param(request, "alias"), &error);
    if (alias == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) etag_source = alias_etag_source(alias);
    g_autofree char *etag = ferry_response_etag_of(etag_source);
    FerryResponse *response = ferry_response_sync(alias);
    ferry_response_set_etag(response, etag);
    return response;
}

/* PUT needs a target and replaces the description; PATCH changes what it names. */
FerryResponse *api_image_alias_put(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *project = request->project;
    const char *name = ferry_request_param(request, "alias");
    gboolean patch = g_str_equal(request->method, "PATCH");
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, project, &error))
        return ferry_response_error(error);
    g_autoptr(json_t) current = alias_render(daemon, project, name, &error);
    if (current == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) etag_source = alias_etag_source(current);
    if (!check_if_match(request, etag_source, &error) || !check_alias_body(request->body, &error))
        return ferry_response_error(error);
    const char *target = ferry_json_get_string(request->body, "target");
    const char *description = ferry_json_get_string(request->body, "description");
    if (!patch && (target == NULL || *target == '\0'))
        return ferry_response_error_new(400, "The target field is required");
    if (target == NULL)
        target = ferry_json_get_string(current, "target");
    if (description == NULL)
        description = patch ? ferry_json_get_string(current, "description") : "";
    g_autofree char *fingerprint = resolve_fingerprint(daemon, project, target, &error);
    if (fingerprint == NULL)
        return ferry_response_error(error);
    g_autoptr(json_t) row =
        json_pack("{s:s, s:s, s:s}", "target", fingerprint, "description", description, "type", "container");
    if (!ferry_db_update(daemon->db, FERRY_KIND_IMAGE_ALIAS, project, "", name, row, &error))
        return ferry_response_error(error);
    g_autofree char *source = alias_url(name);
    ferry_events_lifecycle(daemon->events, project, "image-alias-updated", source);
    return ferry_response_sync(NULL);
}

FerryResponse *api_image_alias_post(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *project = request->project;
    const char *name = ferry_request_param(request, "alias");
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, project, &error) || !check_alias_body(request->body, &error))
        return ferry_response_error(error);
    const char *new_name = ferry_json_get_string(request->body, "name");
    if (!validate_alias_name(new_name, &error))
        return ferry_response_error(error);
    if (!ferry_db_exists(daemon->db, FERRY_KIND_IMAGE_ALIAS, project, "", name))
        return ferry_response_error_new(404, "Image alias \"%s\" not found", name);
    if (ferry_db_exists(daemon->db, FERRY_KIND_IMAGE_ALIAS, project, "", new_name))
        return ferry_response_error_new(409, "Alias \"%s\" already exists", new_name);
    if (!ferry_db_rename(daemon->db, FERRY_KIND_IMAGE_ALIAS, project, "", name, new_name, &error))
        return ferry_response_error(error);
    g_autofree char *location = alias_url(new_name);
    ferry_events_lifecycle(daemon->events, project, "image-alias-renamed", location);
    return ferry_response_created(NULL, location);
}

FerryResponse *api_image_alias_delete(FerryRequest *request)
{
    FerryDaemon *daemon = request->daemon;
    const char *project = request->project;
    const char *name = ferry_request_param(request, "alias");
    GError *error = NULL;
    if (!ferry_project_check_exists(daemon, project, &error))
        return ferry_response_error(error);
    if (!ferry_db_delete(daemon->db, FERRY_KIND_IMAGE_ALIAS, project, "", name, &error))
        return ferry_response_error(error);
    g_autofree char *source = alias_url(name);
    ferry_events_lifecycle(daemon->events, project, "image-alias-deleted", source);
    return ferry_response_sync(NULL);
}
