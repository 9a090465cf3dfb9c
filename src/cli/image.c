/* ferry image: import, list, show, info, delete images and manage their aliases. */
#include "cli.h"
#include "output.h"

#include "error.h"

#include <stdio.h>
#include <string.h>

/* An alias or a (partial) fingerprint → the image's full fingerprint. */
static char *resolve_image(FerryClient *client, const char *name, GError **error)
{
    g_autofree char *alias_path = ferry_api_path("images", "aliases", name, NULL);
    g_autoptr(GError) alias_error = NULL;
    g_autoptr(json_t) alias = ferry_client_get(client, alias_path, NULL, &alias_error);
    if (alias != NULL && ferry_json_get_string(alias, "target") != NULL)
        return g_strdup(ferry_json_get_string(alias, "target"));
    g_autofree char *path = ferry_api_path("images", name, NULL);
    g_autoptr(GError) image_error = NULL;
    g_autoptr(json_t) image = ferry_client_get(client, path, NULL, &image_error);
    if (image == NULL) {
        /* Name the image the user gave; other 404s (an unknown project) keep the server's message. */
        if (image_error->code == FERRY_ERROR_NOT_FOUND && g_str_has_prefix(image_error->message, "Image"))
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "Image \"%s\" not found", name);
        else
            g_propagate_error(error, g_steal_pointer(&image_error));
        return NULL;
    }
    return g_strdup(ferry_json_get_string(image, "fingerprint"));
}

static json_t *get_image(Cli *cli, const char *raw, FerryClient **client_out, GError **error)
{
    g_autofree char *name = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, raw, &name, error);
    if (client == NULL)
        return NULL;
    g_autofree char *fingerprint = resolve_image(client, name, error);
    if (fingerprint == NULL)
        return NULL;
    g_autofree char *path = ferry_api_path("images", fingerprint, NULL);
    json_t *image = ferry_client_get(client, path, NULL, error);
    if (image != NULL && client_out != NULL)
        *client_out = g_steal_pointer(&client);
    return image;
}

static int cmd_import(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) aliases = NULL;
    gboolean public = FALSE;
    const CliOption options[] = {
        {"alias", 0, CLI_OPT_STRV, &aliases, "ALIAS", "New aliases to add to the image"},
        {"public", 0, CLI_OPT_BOOL, &public, NULL, "Make image public"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 2, error))
        return -1;
    const char *tarball = g_ptr_array_index(args, 0);
    g_autofree char *remote = NULL, *rest = NULL;
    if (args->len == 2) {
        const char *target = g_ptr_array_index(args, 1);
        if (!g_str_has_suffix(target, ":")) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_IMPLEMENTED,
                        "Split images (metadata and rootfs tarballs) aren't supported yet: give one unified "
                        "tarball and an optional <remote>:");
            return -1;
        }
        if (!cli_config_parse_remote(cli->config, target, &remote, &rest, error))
            return -1;
    }
    if (!g_file_test(tarball, G_FILE_TEST_IS_REGULAR)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "No such file: %s", tarball);
        return -1;
    }
    g_autoptr(FerryClient) client = cli_connect(cli, remote, error);
    if (client == NULL)
        return -1;

    g_autofree char *filename = g_path_get_basename(tarball);
    const char *headers[] = {"X-Incus-filename", filename, public ? "X-Incus-public" : NULL, "true", NULL};
    g_autoptr(json_t) op = NULL;
    {
        g_autoptr(CliProgress) progress = cli_progress_new(cli, "Transferring image");
        g_autoptr(FerryResponse) response = ferry_client_upload_file(
            client, "POST", "/1.0/images", tarball, headers, cli_progress_update, progress, error);
        if (response == NULL)
            return -1;
        const char *operation = response->operation ?: ferry_json_get_string(response->metadata, "id");
        if (operation == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL,
                        "The server answered the upload without an operation");
            return -1;
        }
        op = ferry_client_wait_operation(client, operation, cli_progress_update, progress, error);
        if (op == NULL)
            return -1;
    }
    const char *fingerprint = ferry_json_get_string(json_object_get(op, "metadata"), "fingerprint");
    if (fingerprint == NULL) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "The import operation carries no fingerprint");
        return -1;
    }
    for (guint i = 0; aliases != NULL && i < aliases->len; i++) {
        g_autoptr(json_t) body = json_pack("{s:s, s:s, s:s}", "name", (char *)g_ptr_array_index(aliases, i),
                                           "target", fingerprint, "description", "");
        g_autoptr(json_t) result =
            ferry_client_run(client, "POST", "/1.0/images/aliases", body, NULL, NULL, error);
        if (result == NULL)
            return -1;
    }
    if (!cli->quiet)
        printf("Image imported with fingerprint: %s\n", fingerprint);
    return 0;
}

static const char *shortest_alias(json_t *aliases)
{
    const char *best = NULL;
    gsize i;
    json_t *alias;
    json_array_foreach(aliases, i, alias)
    {
        const char *name = ferry_json_get_string(alias, "name");
        if (name != NULL && (best == NULL || strlen(name) < strlen(best)))
            best = name;
    }
    return best;
}

static int cmd_list(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *format = NULL;
    const CliOption options[] = {
        {"format", 'f', CLI_OPT_STRING, &format, "FORMAT", "Format (csv|json|table|yaml|compact)"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error))
        return -1;
    if (format != NULL && !cli_format_check(format, error))
        return -1;
    g_autofree char *remote = NULL, *rest = NULL;
    guint first_filter = 0;
    if (args->len > 0 && g_str_has_suffix(g_ptr_array_index(args, 0), ":")) {
        if (!cli_config_parse_remote(cli->config, g_ptr_array_index(args, 0), &remote, &rest, error))
            return -1;
        first_filter = 1;
    }
    g_autoptr(FerryClient) client = cli_connect(cli, remote, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) images = ferry_client_get(client, "/1.0/images?recursion=1", NULL, error);
    if (images == NULL)
        return -1;
    g_autoptr(GPtrArray) rows = cli_rows_new();
    g_autoptr(json_t) shown = json_array();
    gsize i;
    json_t *image;
    json_array_foreach(images, i, image)
    {
        const char *fingerprint = ferry_json_get_string(image, "fingerprint") ?: "";
        json_t *aliases = json_object_get(image, "aliases");
        gboolean keep = first_filter >= args->len;
        for (guint f = first_filter; f < args->len; f++) {
            const char *filter = g_ptr_array_index(args, f);
            gsize a;
            json_t *alias;
            if (g_str_has_prefix(fingerprint, filter))
                keep = TRUE;
            json_array_foreach(
                aliases, a, alias) if (g_str_has_prefix(ferry_json_get_string(alias, "name") ?: "", filter))
                keep = TRUE;
        }
        if (!keep)
            continue;
        json_array_append(shown, image);
        const char *alias = shortest_alias(aliases);
        g_autofree char *alias_text =
            alias == NULL ? g_strdup("")
            : json_array_size(aliases) > 1
                ? g_strdup_printf("%s (%zu more)", alias, json_array_size(aliases) - 1)
                : g_strdup(alias);
        g_autofree char *short_fp = g_strndup(fingerprint, 12);
        g_autofree char *type = g_ascii_strup(ferry_json_get_string(image, "type") ?: "container", -1);
        g_autofree char *size = g_strdup_printf(
            "%.2fMiB", (double)json_integer_value(json_object_get(image, "size")) / 1024.0 / 1024.0);
        g_autofree char *uploaded = cli_format_date(ferry_json_get_string(image, "uploaded_at"));
        cli_rows_add(rows, alias_text, short_fp, ferry_json_get_bool(image, "public", FALSE) ? "yes" : "no",
                     ferry_json_get_string(json_object_get(image, "properties"), "description") ?: "",
                     ferry_json_get_string(image, "architecture") ?: "", type, size, uploaded, NULL);
    }
    cli_rows_sort(rows);
    static const char *const headers[] = {
        "ALIAS", "FINGERPRINT", "PUBLIC", "DESCRIPTION", "ARCHITECTURE", "TYPE", "SIZE", "UPLOAD DATE", NULL};
    return cli_print_list(format, headers, rows, shown, error) ? 0 : -1;
}

static int cmd_show(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autoptr(json_t) image = get_image(cli, g_ptr_array_index(args, 0), NULL, error);
    if (image == NULL)
        return -1;
    static const char *const shown[] = {"auto_update", "properties", "public",
                                        "expires_at",  "profiles",   NULL};
    g_autoptr(json_t) view = cli_writable(image, shown);
    return cli_print_yaml(view, error) ? 0 : -1;
}

static int compare_keys(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char **)a, *(const char **)b);
}

static void print_date(const char *label, json_t *image, const char *key, const char *zero)
{
    g_autofree char *date = cli_format_date(ferry_json_get_string(image, key));
    printf("    %s: %s\n", label, *date ? date : zero);
}

static int cmd_info(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autoptr(json_t) image = get_image(cli, g_ptr_array_index(args, 0), NULL, error);
    if (image == NULL)
        return -1;
    printf("Fingerprint: %s\n", ferry_json_get_string(image, "fingerprint") ?: "");
    printf("Size: %.2fMiB\n", (double)json_integer_value(json_object_get(image, "size")) / 1024.0 / 1024.0);
    printf("Architecture: %s\n", ferry_json_get_string(image, "architecture") ?: "");
    printf("Type: %s\n", ferry_json_get_string(image, "type") ?: "container");
    printf("Public: %s\n", ferry_json_get_bool(image, "public", FALSE) ? "yes" : "no");
    printf("Timestamps:\n");
    print_date("Created", image, "created_at", "");
    print_date("Uploaded", image, "uploaded_at", "");
    print_date("Expires", image, "expires_at", "never");
    print_date("Last used", image, "last_used_at", "never");
    json_t *properties = json_object_get(image, "properties");
    if (json_is_object(properties) && json_object_size(properties) > 0) {
        printf("Properties:\n");
        g_autoptr(GPtrArray) keys = g_ptr_array_new();
        const char *key;
        json_t *value;
        json_object_foreach(properties, key, value) g_ptr_array_add(keys, (gpointer)key);
        g_ptr_array_sort(keys, compare_keys);
        for (guint i = 0; i < keys->len; i++)
            printf("    %s: %s\n", (char *)g_ptr_array_index(keys, i),
                   ferry_json_get_string(properties, g_ptr_array_index(keys, i)) ?: "");
    }
    printf("Aliases:\n");
    gsize i;
    json_t *alias;
    json_array_foreach(json_object_get(image, "aliases"), i, alias)
    {
        const char *description = ferry_json_get_string(alias, "description");
        if (description != NULL && *description)
            printf("    - %s (%s)\n", ferry_json_get_string(alias, "name"), description);
        else
            printf("    - %s\n", ferry_json_get_string(alias, "name"));
    }
    printf("Cached: %s\n", ferry_json_get_bool(image, "cached", FALSE) ? "yes" : "no");
    printf("Auto update: %s\n", ferry_json_get_bool(image, "auto_update", FALSE) ? "enabled" : "disabled");
    json_t *profiles = json_object_get(image, "profiles");
    if (json_is_array(profiles)) {
        if (json_array_size(profiles) == 0) {
            printf("Profiles: []\n");
        } else {
            printf("Profiles:\n");
            json_t *profile;
            json_array_foreach(profiles, i, profile) printf("    - %s\n", json_string_value(profile));
        }
    }
    return 0;
}

static int cmd_delete(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, -1, error))
        return -1;
    for (guint i = 0; i < args->len; i++) {
        g_autofree char *name = NULL;
        g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, i), &name, error);
        if (client == NULL)
            return -1;
        g_autofree char *fingerprint = resolve_image(client, name, error);
        if (fingerprint == NULL)
            return -1;
        g_autofree char *path = ferry_api_path("images", fingerprint, NULL);
        g_autoptr(json_t) result = ferry_client_run(client, "DELETE", path, NULL, NULL, NULL, error);
        if (result == NULL)
            return -1;
    }
    return 0;
}

static int cmd_alias_create(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *description = NULL;
    const CliOption options[] = {
        {"description", 0, CLI_OPT_STRING, &description, "TEXT", "Image alias description"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    g_autofree char *alias = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &alias, error);
    if (client == NULL)
        return -1;
    g_autofree char *fingerprint = resolve_image(client, g_ptr_array_index(args, 1), error);
    if (fingerprint == NULL)
        return -1;
    g_autoptr(json_t) body = json_pack("{s:s, s:s, s:s}", "name", alias, "target", fingerprint, "description",
                                       description != NULL ? description : "");
    g_autoptr(json_t) result =
        ferry_client_run(client, "POST", "/1.0/images/aliases", body, NULL, NULL, error);
    return result != NULL ? 0 : -1;
}

static int cmd_alias_delete(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 1, 1, error))
        return -1;
    g_autofree char *alias = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &alias, error);
    if (client == NULL)
        return -1;
    g_autofree char *path = ferry_api_path("images", "aliases", alias, NULL);
    g_autoptr(json_t) result = ferry_client_run(client, "DELETE", path, NULL, NULL, NULL, error);
    return result != NULL ? 0 : -1;
}

static int cmd_alias_rename(Cli *cli, int argc, char **argv, GError **error)
{
    g_autoptr(GPtrArray) args = NULL;
    const CliOption options[] = {{NULL}};
    if (!cli_parse(cli, argc, argv, options, &args, error) || !cli_check_args(cli, args, 2, 2, error))
        return -1;
    g_autofree char *alias = NULL;
    g_autoptr(FerryClient) client = cli_connect_name(cli, g_ptr_array_index(args, 0), &alias, error);
    if (client == NULL)
        return -1;
    g_autofree char *path = ferry_api_path("images", "aliases", alias, NULL);
    g_autoptr(json_t) body = json_pack("{s:s}", "name", (char *)g_ptr_array_index(args, 1));
    g_autoptr(json_t) result = ferry_client_run(client, "POST", path, body, NULL, NULL, error);
    return result != NULL ? 0 : -1;
}

static int cmd_alias_list(Cli *cli, int argc, char **argv, GError **error)
{
    g_autofree char *format = NULL;
    const CliOption options[] = {
        {"format", 'f', CLI_OPT_STRING, &format, "FORMAT", "Format (csv|json|table|yaml|compact)"},
        {NULL},
    };
    g_autoptr(GPtrArray) args = NULL;
    if (!cli_parse(cli, argc, argv, options, &args, error))
        return -1;
    if (format != NULL && !cli_format_check(format, error))
        return -1;
    g_autofree char *remote = NULL, *rest = NULL;
    guint first_filter = 0;
    if (args->len > 0 && g_str_has_suffix(g_ptr_array_index(args, 0), ":")) {
        if (!cli_config_parse_remote(cli->config, g_ptr_array_index(args, 0), &remote, &rest, error))
            return -1;
        first_filter = 1;
    }
    g_autoptr(FerryClient) client = cli_connect(cli, remote, error);
    if (client == NULL)
        return -1;
    g_autoptr(json_t) aliases = ferry_client_get(client, "/1.0/images/aliases?recursion=1", NULL, error);
    if (aliases == NULL)
        return -1;
    g_autoptr(GPtrArray) rows = cli_rows_new();
    gsize i;
    json_t *alias;
    json_array_foreach(aliases, i, alias)
    {
        const char *name = ferry_json_get_string(alias, "name") ?: "";
        gboolean keep = first_filter >= args->len;
        for (guint f = first_filter; f < args->len; f++)
            keep = keep || g_str_has_prefix(name, g_ptr_array_index(args, f));
        if (!keep)
            continue;
        g_autofree char *short_fp = g_strndup(ferry_json_get_string(alias, "target") ?: "", 12);
        g_autofree char *type = g_ascii_strup(ferry_json_get_string(alias, "type") ?: "container", -1);
        cli_rows_add(rows, name, short_fp, type, ferry_json_get_string(alias, "description") ?: "", NULL);
    }
    cli_rows_sort(rows);
    static const char *const headers[] = {"ALIAS", "FINGERPRINT", "TYPE", "DESCRIPTION", NULL};
    return cli_print_list(format, headers, rows, aliases, error) ? 0 : -1;
}

const CliCommand cli_image_alias_commands[] = {
    {"create", NULL, "[<remote>:]<alias> <fingerprint>", "Create aliases for existing images", NULL,
     cmd_alias_create, NULL},
    {"delete", "rm", "[<remote>:]<alias>", "Delete image aliases", NULL, cmd_alias_delete, NULL},
    {"list", "ls", "[<remote>:] [<filters>...]", "List image aliases", NULL, cmd_alias_list, NULL},
    {"rename", "mv", "[<remote>:]<alias> <new-name>", "Rename aliases", NULL, cmd_alias_rename, NULL},
    {NULL},
};

const CliCommand cli_image_commands[] = {
    {"alias", NULL, NULL, "Manage image aliases", NULL, NULL, cli_image_alias_commands},
    {"delete", "rm", "[<remote>:]<image> [[<remote>:]<image>...]", "Delete images", NULL, cmd_delete, NULL},
    {"import", NULL, "<tarball> [<remote>:] [--alias ALIAS]", "Import images into the image store",
     "The tarball holds metadata.yaml and rootfs/ (a unified image).", cmd_import, NULL},
    {"info", NULL, "[<remote>:]<image>", "Show useful information about images", NULL, cmd_info, NULL},
    {"list", "ls", "[<remote>:] [<filter>...]", "List images", NULL, cmd_list, NULL},
    {"show", NULL, "[<remote>:]<image>", "Show image properties", NULL, cmd_show, NULL},
    {NULL},
};
