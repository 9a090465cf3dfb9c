#include "offer.h"

#include "idmap.h"
#include "json.h"
#include "messages.h"

#include <string.h>

Migration__MigrationHeader *ferry_offer_new(void)
{
    Migration__MigrationHeader *header = g_new0(Migration__MigrationHeader, 1);
    migration__migration_header__init(header);
    return header;
}

static void free_config_list(Migration__Config **configs, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        g_free(configs[i]->key);
        g_free(configs[i]->value);
        g_free(configs[i]);
    }
    g_free(configs);
}

void ferry_offer_free(Migration__MigrationHeader *header)
{
    if (header == NULL)
        return;
    for (size_t i = 0; i < header->n_idmap; i++)
        g_free(header->idmap[i]);
    g_free(header->idmap);
    for (size_t i = 0; i < header->n_snapshotnames; i++)
        g_free(header->snapshotnames[i]);
    g_free(header->snapshotnames);
    for (size_t i = 0; i < header->n_snapshots; i++) {
        Migration__Snapshot *snap = header->snapshots[i];
        g_free(snap->name);
        g_free(snap->description);
        free_config_list(snap->localconfig, snap->n_localconfig);
        for (size_t j = 0; j < snap->n_profiles; j++)
            g_free(snap->profiles[j]);
        g_free(snap->profiles);
        for (size_t j = 0; j < snap->n_localdevices; j++) {
            g_free(snap->localdevices[j]->name);
            free_config_list(snap->localdevices[j]->config, snap->localdevices[j]->n_config);
            g_free(snap->localdevices[j]);
        }
        g_free(snap->localdevices);
        g_free(snap);
    }
    g_free(header->snapshots);
    g_free(header->rsyncfeatures);
    g_free(header->btrfsfeatures);
    g_free(header->ferry);
    g_free(header);
}

void ferry_offer_set_rsync_features(Migration__MigrationHeader *header, gboolean xattrs, gboolean delete,
                                    gboolean compress, gboolean bidirectional)
{
    if (header->rsyncfeatures == NULL) {
        header->rsyncfeatures = g_new0(Migration__RsyncFeatures, 1);
        migration__rsync_features__init(header->rsyncfeatures);
    }
    /* Incus always sends all four, so "false" is explicit rather than absent. */
    Migration__RsyncFeatures *f = header->rsyncfeatures;
    f->has_xattrs = f->has_delete_ = f->has_compress = f->has_bidirectional = TRUE;
    f->xattrs = xattrs;
    f->delete_ = delete;
    f->compress = compress;
    f->bidirectional = bidirectional;
}

void ferry_offer_set_btrfs_features(Migration__MigrationHeader *header, gboolean migration_header,
                                    gboolean subvolumes, gboolean subvolume_uuids)
{
    if (header->btrfsfeatures == NULL) {
        header->btrfsfeatures = g_new0(Migration__BtrfsFeatures, 1);
        migration__btrfs_features__init(header->btrfsfeatures);
    }
    Migration__BtrfsFeatures *f = header->btrfsfeatures;
    f->has_migration_header = f->has_header_subvolumes = f->has_header_subvolume_uuids = TRUE;
    f->migration_header = migration_header;
    f->header_subvolumes = subvolumes;
    f->header_subvolume_uuids = subvolume_uuids;
}

void ferry_offer_set_idmap(Migration__MigrationHeader *header, const char *last_state_idmap_json)
{
    FerryIdmap map;
    gboolean privileged = TRUE;
    if (last_state_idmap_json == NULL || !ferry_idmap_from_json(last_state_idmap_json, &map, &privileged, NULL) ||
        privileged)
        return;
    header->n_idmap = 2;
    header->idmap = g_new0(Migration__IDMapType *, 2);
    for (int i = 0; i < 2; i++) {
        Migration__IDMapType *entry = g_new0(Migration__IDMapType, 1);
        migration__idmap_type__init(entry);
        entry->isuid = i == 0;
        entry->isgid = i == 1;
        entry->hostid = (int32_t)map.host_base;
        entry->nsid = 0;
        entry->maprange = (int32_t)map.range;
        header->idmap[i] = entry;
    }
}

char *ferry_offer_idmap_json(const Migration__MigrationHeader *header)
{
    /* ferry keeps one map for uids and gids; an Incus map with separate entries collapses to the uid one. */
    for (size_t i = 0; i < header->n_idmap; i++) {
        const Migration__IDMapType *entry = header->idmap[i];
        if (entry->isuid && entry->nsid == 0 && entry->hostid > 0) {
            FerryIdmap map = {(guint32)entry->hostid, (guint32)entry->maprange};
            return ferry_idmap_to_json(&map);
        }
    }
    return g_strdup("[]");
}

static Migration__Config **config_list(json_t *object, size_t *count_out)
{
    size_t count = json_is_object(object) ? json_object_size(object) : 0;
    Migration__Config **list = g_new0(Migration__Config *, MAX(count, 1));
    size_t i = 0;
    const char *key;
    json_t *value;
    if (count > 0) {
        json_object_foreach(object, key, value) {
            Migration__Config *config = g_new0(Migration__Config, 1);
            migration__config__init(config);
            config->key = g_strdup(key);
            config->value = g_strdup(json_is_string(value) ? json_string_value(value) : "");
            list[i++] = config;
        }
    }
    *count_out = i;
    return list;
}

static gint64 unix_seconds(const char *timestamp)
{
    if (timestamp == NULL || g_str_has_prefix(timestamp, "0001-01-01"))
        return FERRY_GO_ZERO_TIME_UNIX;
    g_autoptr(GDateTime) when = g_date_time_new_from_iso8601(timestamp, NULL);
    return when != NULL ? g_date_time_to_unix(when) : FERRY_GO_ZERO_TIME_UNIX;
}

void ferry_offer_add_snapshot(Migration__MigrationHeader *header, json_t *snapshot)
{
    Migration__Snapshot *snap = g_new0(Migration__Snapshot, 1);
    migration__snapshot__init(snap);
    snap->name = g_strdup(ferry_json_get_string(snapshot, "name"));
    snap->localconfig = config_list(json_object_get(snapshot, "config"), &snap->n_localconfig);
    json_t *profiles = json_object_get(snapshot, "profiles");
    snap->n_profiles = json_array_size(profiles);
    snap->profiles = g_new0(char *, MAX(snap->n_profiles, 1));
    for (size_t i = 0; i < snap->n_profiles; i++)
        snap->profiles[i] = g_strdup(json_string_value(json_array_get(profiles, i)));
    json_t *devices = json_object_get(snapshot, "devices");
    snap->n_localdevices = json_is_object(devices) ? json_object_size(devices) : 0;
    snap->localdevices = g_new0(Migration__Device *, MAX(snap->n_localdevices, 1));
    size_t index = 0;
    const char *name;
    json_t *device;
    if (snap->n_localdevices > 0) {
        json_object_foreach(devices, name, device) {
            Migration__Device *dev = g_new0(Migration__Device, 1);
            migration__device__init(dev);
            dev->name = g_strdup(name);
            dev->config = config_list(device, &dev->n_config);
            snap->localdevices[index++] = dev;
        }
    }
    snap->ephemeral = FALSE;
    snap->architecture = ferry_migration_architecture_id(ferry_json_get_string(snapshot, "architecture"));
    snap->stateful = ferry_json_get_bool(snapshot, "stateful", FALSE);
    snap->has_creation_date = snap->has_last_used_date = snap->has_expiry_date = TRUE;
    snap->creation_date = unix_seconds(ferry_json_get_string(snapshot, "created_at"));
    snap->last_used_date = unix_seconds(ferry_json_get_string(snapshot, "last_used_at"));
    snap->expiry_date = unix_seconds(ferry_json_get_string(snapshot, "expires_at"));
    snap->description = g_strdup(ferry_json_get_string(snapshot, "description") ?: "");

    header->snapshots = g_renew(Migration__Snapshot *, header->snapshots, header->n_snapshots + 1);
    header->snapshots[header->n_snapshots++] = snap;
    header->snapshotnames = g_renew(char *, header->snapshotnames, header->n_snapshotnames + 1);
    header->snapshotnames[header->n_snapshotnames++] = g_strdup(snap->name);
}

void ferry_offer_set_ferry(Migration__MigrationHeader *header, guint64 total_bytes, guint32 version,
                           gboolean compress)
{
    if (header->ferry == NULL) {
        header->ferry = g_new0(Migration__FerryFeatures, 1);
        migration__ferry_features__init(header->ferry);
    }
    header->ferry->has_version = TRUE;
    header->ferry->version = version;
    header->ferry->has_zstd = TRUE;
    header->ferry->zstd = compress;
    header->ferry->has_streams = TRUE;
    header->ferry->streams = 1;
    header->ferry->has_total_bytes = TRUE;
    header->ferry->total_bytes = (int64_t)total_bytes;
}

guint32 ferry_offer_ferry_version(const Migration__MigrationHeader *header)
{
    return header->ferry != NULL && header->ferry->has_version ? header->ferry->version : 0;
}

json_t *ferry_offer_member(json_t *object, const char *key)
{
    const char *name;
    json_t *value;
    json_object_foreach(object, name, value) {
        if (g_ascii_strcasecmp(name, key) == 0)
            return value;
    }
    return NULL;
}

json_t *ferry_offer_index_header(FerryDaemon *daemon, const char *project, json_t *instance, json_t *snapshots,
                                 const char *pool_name, gboolean include_container)
{
    g_autoptr(json_t) pool_doc = ferry_db_get(daemon->db, FERRY_KIND_POOL, "", "", pool_name, NULL);
    json_t *pool = json_pack("{s:O, s:s, s:s, s:s, s:n, s:s, s:[s]}", "config",
                             pool_doc != NULL ? json_object_get(pool_doc, "config") : json_object(), "description",
                             pool_doc != NULL ? ferry_json_get_string(pool_doc, "description") ?: "" : "", "name",
                             pool_name, "driver",
                             pool_doc != NULL ? ferry_json_get_string(pool_doc, "driver") ?: "dir" : "dir", "used_by",
                             "status", "Created", "locations", "none");
    json_t *profiles = json_array();
    size_t index;
    json_t *profile_name;
    json_array_foreach(json_object_get(instance, "profiles"), index, profile_name) {
        json_t *profile = ferry_db_get(daemon->db, FERRY_KIND_PROFILE, project, "", json_string_value(profile_name),
                                       NULL);
        if (profile != NULL) {
            json_object_set(profile, "name", profile_name);
            json_object_set_new(profile, "project", json_string(project));
            json_array_append_new(profiles, profile);
        }
    }
    json_t *volume = json_pack("{s:{}, s:s, s:O, s:s, s:n, s:s, s:s, s:s, s:O}", "config", "description", "",
                               "name", json_object_get(instance, "name"), "type", "container", "used_by", "location",
                               "none", "content_type", "filesystem", "project", project, "created_at",
                               json_object_get(instance, "created_at"));
    json_t *volume_snapshots = json_array();
    json_t *snapshot;
    json_array_foreach(snapshots, index, snapshot) {
        json_array_append_new(volume_snapshots,
                              json_pack("{s:s, s:O, s:O, s:{}, s:s, s:O}", "description", "", "expires_at",
                                        json_object_get(snapshot, "expires_at"), "name",
                                        json_object_get(snapshot, "name"), "config", "content_type", "filesystem",
                                        "created_at", json_object_get(snapshot, "created_at")));
    }
    gboolean any_snapshots = json_array_size(snapshots) > 0;
    json_t *config = json_object();
    json_object_set(config, "Container", include_container ? instance : json_null());
    json_object_set(config, "Snapshots", any_snapshots ? snapshots : json_null());
    json_object_set_new(config, "Pool", pool);
    json_object_set_new(config, "Profiles", profiles);
    json_object_set_new(config, "Volume", volume);
    if (any_snapshots)
        json_object_set_new(config, "VolumeSnapshots", volume_snapshots);
    else {
        json_decref(volume_snapshots);
        json_object_set_new(config, "VolumeSnapshots", json_null());
    }
    json_object_set_new(config, "Bucket", json_null());
    json_object_set_new(config, "BucketKeys", json_null());
    return json_pack("{s:o}", "config", config);
}
