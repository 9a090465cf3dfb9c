/* Option parsing, command dispatch and help, in the manner of Incus's cobra commands: flags may come
 * anywhere among the arguments, "--" ends them, every command takes --help. */
#include "cli.h"

#include "error.h"
#include "yaml.h"

#include <errno.h>
#include <glib/gstdio.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static gboolean global_help;

/* Options every command accepts. Targets are bound to the Cli at parse time. */
static void global_options(Cli *cli, CliOption out[4])
{
    out[0] =
        (CliOption){"project", 0, CLI_OPT_STRING, &cli->project, "PROJECT", "Override the source project"};
    out[1] = (CliOption){"quiet", 'q', CLI_OPT_BOOL, &cli->quiet, NULL, "Don't show progress information"};
    out[2] = (CliOption){"help", 'h', CLI_OPT_BOOL, &global_help, NULL, "Print help"};
    out[3] = (CliOption){NULL, 0, 0, NULL, NULL, NULL};
}

static const CliOption *find_option(const CliOption *options, const CliOption *globals, const char *long_name,
                                    char short_name)
{
    const CliOption *lists[] = {options, globals};
    for (gsize l = 0; l < G_N_ELEMENTS(lists); l++) {
        for (const CliOption *o = lists[l]; o != NULL && o->long_name != NULL; o++) {
            if (long_name != NULL && strcmp(o->long_name, long_name) == 0)
                return o;
            if (long_name == NULL && short_name != 0 && o->short_name == short_name)
                return o;
        }
    }
    return NULL;
}

static gboolean set_option(const CliOption *option, const char *value, const char *shown, GError **error)
{
    switch (option->kind) {
    case CLI_OPT_BOOL:
        if (value == NULL || g_ascii_strcasecmp(value, "true") == 0 || strcmp(value, "1") == 0) {
            *(gboolean *)option->target = TRUE;
        } else if (g_ascii_strcasecmp(value, "false") == 0 || strcmp(value, "0") == 0) {
            *(gboolean *)option->target = FALSE;
        } else {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid value \"%s\" for flag %s", value,
                        shown);
            return FALSE;
        }
        return TRUE;
    case CLI_OPT_STRING: {
        char **target = option->target;
        g_free(*target);
        *target = g_strdup(value);
        return TRUE;
    }
    case CLI_OPT_INT: {
        gint64 number;
        if (!g_ascii_string_to_signed(value, 10, G_MININT, G_MAXINT, &number, NULL)) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid value \"%s\" for flag %s", value,
                        shown);
            return FALSE;
        }
        *(int *)option->target = (int)number;
        return TRUE;
    }
    case CLI_OPT_STRV: {
        GPtrArray **target = option->target;
        if (*target == NULL)
            *target = g_ptr_array_new_with_free_func(g_free);
        g_ptr_array_add(*target, g_strdup(value));
        return TRUE;
    }
    }
    return FALSE;
}

gboolean cli_parse(Cli *cli, int argc, char **argv, const CliOption *options, GPtrArray **args_out,
                   GError **error)
{
    CliOption globals[4];
    global_options(cli, globals);
    g_autoptr(GPtrArray) args = g_ptr_array_new();

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--") == 0) {
            for (i++; i < argc; i++)
                g_ptr_array_add(args, argv[i]);
            break;
        }
        if (arg[0] != '-' || arg[1] == '\0') {
            g_ptr_array_add(args, argv[i]);
            continue;
        }
        if (arg[1] == '-') {
            g_autofree char *name = g_strdup(arg + 2);
            char *equals = strchr(name, '=');
            const char *value = NULL;
            if (equals != NULL) {
                *equals = '\0';
                value = equals + 1;
            }
            const CliOption *option = find_option(options, globals, name, 0);
            if (option == NULL) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "unknown flag: --%s", name);
                return FALSE;
            }
            if (option->kind != CLI_OPT_BOOL && value == NULL) {
                if (i + 1 >= argc) {
                    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "flag needs an argument: --%s",
                                name);
                    return FALSE;
                }
                value = argv[++i];
            }
            g_autofree char *shown = g_strdup_printf("--%s", name);
            if (!set_option(option, value, shown, error))
                return FALSE;
            continue;
        }
        /* One or more short flags: "-q", "-fc", "-cvalue", "-c value". */
        for (const char *c = arg + 1; *c != '\0'; c++) {
            const CliOption *option = find_option(options, globals, NULL, *c);
            g_autofree char *shown = g_strdup_printf("-%c", *c);
            if (option == NULL) {
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "unknown shorthand flag: '%c' in %s", *c,
                            arg);
                return FALSE;
            }
            if (option->kind == CLI_OPT_BOOL) {
                if (c[1] == '=') {
                    if (!set_option(option, c + 2, shown, error))
                        return FALSE;
                    break;
                }
                set_option(option, NULL, shown, error);
                continue;
            }
            const char *value = c[1] == '=' ? c + 2 : c + 1;
            if (*value == '\0') {
                if (i + 1 >= argc) {
                    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "flag needs an argument: '%c' in %s",
                                *c, arg);
                    return FALSE;
                }
                value = argv[++i];
            }
            if (!set_option(option, value, shown, error))
                return FALSE;
            break;
        }
    }

    if (global_help) {
        cli_print_help(cli, cli->command, options, stdout);
        exit(0);
    }
    if (args_out != NULL)
        *args_out = g_steal_pointer(&args);
    return TRUE;
}

gboolean cli_check_args(Cli *cli, GPtrArray *args, guint min, int max, GError **error)
{
    if (args->len < min || (max >= 0 && args->len > (guint)max)) {
        const CliCommand *command = cli->command;
        fprintf(stderr, "Usage: %s%s%s\n\n", cli->path->str, command != NULL && command->usage ? " " : "",
                command != NULL && command->usage ? command->usage : "");
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid number of arguments");
        return FALSE;
    }
    return TRUE;
}

static void print_options(const CliOption *options, FILE *out)
{
    for (const CliOption *o = options; o != NULL && o->long_name != NULL; o++) {
        g_autofree char *flag = o->short_name ? g_strdup_printf("-%c, --%s", o->short_name, o->long_name)
                                              : g_strdup_printf("    --%s", o->long_name);
        g_autofree char *left = o->arg_name ? g_strdup_printf("%s %s", flag, o->arg_name) : g_strdup(flag);
        fprintf(out, "  %-32s %s\n", left, o->help != NULL ? o->help : "");
    }
}

void cli_print_help(Cli *cli, const CliCommand *command, const CliOption *options, FILE *out)
{
    if (command == NULL)
        return;
    fprintf(out, "Description:\n  %s\n", command->summary);
    if (command->description != NULL) {
        g_auto(GStrv) lines = g_strsplit(command->description, "\n", -1);
        fputc('\n', out);
        for (char **line = lines; *line != NULL; line++)
            fprintf(out, "%s%s\n", **line ? "  " : "", *line);
    }
    fprintf(out, "\nUsage:\n  %s", cli->path->str);
    if (command->subcommands != NULL)
        fprintf(out, " [command]");
    else if (command->usage != NULL && *command->usage)
        fprintf(out, " %s", command->usage);
    fputc('\n', out);
    if (command->aliases != NULL)
        fprintf(out, "\nAliases:\n  %s\n", command->aliases);
    if (command->subcommands != NULL) {
        fprintf(out, "\nAvailable Commands:\n");
        for (const CliCommand *sub = command->subcommands; sub->name != NULL; sub++)
            fprintf(out, "  %-14s %s\n", sub->name, sub->summary);
    }
    if (options != NULL && options->long_name != NULL) {
        fprintf(out, "\nFlags:\n");
        print_options(options, out);
    }
    CliOption globals[4];
    global_options(cli, globals);
    fprintf(out, "\nGlobal Flags:\n");
    print_options(globals, out);
    fprintf(out, "      --version                    Print version number\n");
}

static const CliCommand *find_command(const CliCommand *commands, const char *name)
{
    for (const CliCommand *c = commands; c->name != NULL; c++) {
        if (strcmp(c->name, name) == 0)
            return c;
        if (c->aliases != NULL) {
            g_auto(GStrv) aliases = g_strsplit(c->aliases, " ", -1);
            if (g_strv_contains((const char *const *)aliases, name))
                return c;
        }
    }
    return NULL;
}

int cli_dispatch(Cli *cli, const CliCommand *group, int argc, char **argv, GError **error)
{
    /* Global flags may stand before the subcommand ("ferry config -q show"): skip them. */
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cli_print_help(cli, group, NULL, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--project") == 0 && i + 1 < argc) {
            g_free(cli->project);
            cli->project = g_strdup(argv[i + 1]);
            i += 2;
        } else if (g_str_has_prefix(argv[i], "--project=")) {
            g_free(cli->project);
            cli->project = g_strdup(argv[i] + strlen("--project="));
            i++;
        } else if (strcmp(argv[i], "-q") == 0 || strcmp(argv[i], "--quiet") == 0) {
            cli->quiet = TRUE;
            i++;
        } else {
            break;
        }
    }
    if (i >= argc) {
        cli_print_help(cli, group, NULL, stdout);
        return 0;
    }
    const CliCommand *sub = find_command(group->subcommands, argv[i]);
    if (sub == NULL) {
        /* Incus runs a group's own action for unknown words only when it has one (e.g. "snapshot"). */
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "unknown command \"%s\" for \"%s\"", argv[i],
                    cli->path->str);
        return -1;
    }
    g_string_append_printf(cli->path, " %s", sub->name);
    cli->command = sub;
    if (sub->run == NULL)
        return cli_dispatch(cli, sub, argc - i, argv + i, error);
    return sub->run(cli, argc - i, argv + i, error);
}

FerryClient *cli_connect(Cli *cli, const char *remote, GError **error)
{
    if (remote == NULL)
        remote = cli_config_default_remote(cli->config);
    FerryClient *client = cli_config_connect(cli->config, remote, error);
    if (client == NULL)
        return NULL;
    const char *project = cli->project;
    if (project == NULL)
        project = ferry_json_get_string(cli_config_remote(cli->config, remote), "project");
    if (project != NULL && *project != '\0')
        ferry_client_set_project(client, project);
    return client;
}

FerryClient *cli_connect_name(Cli *cli, const char *raw, char **name_out, GError **error)
{
    g_autofree char *remote = NULL;
    g_autofree char *name = NULL;
    if (!cli_config_parse_remote(cli->config, raw, &remote, &name, error))
        return NULL;
    FerryClient *client = cli_connect(cli, remote, error);
    if (client != NULL && name_out != NULL)
        *name_out = g_steal_pointer(&name);
    return client;
}

gboolean cli_parse_key_values(GPtrArray *pairs, guint first, json_t *object, GError **error)
{
    for (guint i = first; pairs != NULL && i < pairs->len; i++) {
        const char *pair = g_ptr_array_index(pairs, i);
        const char *equals = strchr(pair, '=');
        if (equals == NULL) {
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Bad key=value pair: %s", pair);
            return FALSE;
        }
        g_autofree char *key = g_strndup(pair, equals - pair);
        json_object_set_new(object, key, json_string(equals + 1));
    }
    return TRUE;
}

char *cli_read_stdin(GError **error)
{
    GString *text = g_string_new(NULL);
    char buffer[65536];
    ssize_t n;
    while ((n = read(STDIN_FILENO, buffer, sizeof buffer)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ferry_set_error_errno(error, errno, "Failed to read standard input");
            g_string_free(text, TRUE);
            return NULL;
        }
        g_string_append_len(text, buffer, n);
    }
    return g_string_free(text, FALSE);
}

gboolean cli_stdin_is_terminal(void)
{
    return isatty(STDIN_FILENO);
}

gboolean cli_stdout_is_terminal(void)
{
    return isatty(STDOUT_FILENO);
}

gboolean cli_ask_bool(const char *question, gboolean fallback)
{
    char answer[64];
    for (;;) {
        fputs(question, stdout);
        fflush(stdout);
        if (fgets(answer, sizeof answer, stdin) == NULL)
            return fallback;
        g_strstrip(answer);
        if (*answer == '\0')
            return fallback;
        if (g_ascii_strcasecmp(answer, "y") == 0 || g_ascii_strcasecmp(answer, "yes") == 0)
            return TRUE;
        if (g_ascii_strcasecmp(answer, "n") == 0 || g_ascii_strcasecmp(answer, "no") == 0)
            return FALSE;
        fputs("Invalid input, try again.\n\n", stderr);
    }
}

static int compare_key_pointers(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char **)a, *(const char **)b);
}

/* A copy of object with its members in key order (a new reference). */
static json_t *sorted_object(json_t *object, gboolean values_too)
{
    g_autoptr(GPtrArray) keys = g_ptr_array_new();
    const char *key;
    json_t *value;
    json_object_foreach(object, key, value) g_ptr_array_add(keys, (gpointer)key);
    g_ptr_array_sort(keys, compare_key_pointers);
    json_t *sorted = json_object();
    for (guint i = 0; i < keys->len; i++) {
        value = json_object_get(object, g_ptr_array_index(keys, i));
        json_object_set_new(sorted, g_ptr_array_index(keys, i),
                            values_too && json_is_object(value) ? sorted_object(value, FALSE)
                                                                : json_incref(value));
    }
    return sorted;
}

/* Incus's YAML comes from Go maps for configs, devices and properties, whose keys come out sorted; the
 * server's JSON keeps them in the order they were set. Sort those maps, wherever they are (a new
 * reference). */
static json_t *with_sorted_maps(json_t *value)
{
    if (json_is_array(value)) {
        json_t *copy = json_array();
        gsize i;
        json_t *item;
        json_array_foreach(value, i, item) json_array_append_new(copy, with_sorted_maps(item));
        return copy;
    }
    if (!json_is_object(value))
        return json_incref(value);
    static const char *const maps[] = {"config", "expanded_config", "properties", NULL};
    static const char *const device_maps[] = {"devices", "expanded_devices", NULL};
    json_t *copy = json_object();
    const char *key;
    json_t *member;
    json_object_foreach(value, key, member)
    {
        json_t *shown;
        if (json_is_object(member) && g_strv_contains(maps, key))
            shown = sorted_object(member, FALSE);
        else if (json_is_object(member) && g_strv_contains(device_maps, key))
            shown = sorted_object(member, TRUE);
        else
            shown = with_sorted_maps(member);
        json_object_set_new(copy, key, shown);
    }
    return copy;
}

gboolean cli_print_yaml(json_t *value, GError **error)
{
    g_autoptr(json_t) shown = with_sorted_maps(value);
    g_autofree char *text = ferry_yaml_emit(shown, error);
    if (text == NULL)
        return FALSE;
    fputs(text, stdout);
    return TRUE;
}

gboolean cli_print_yaml_devices(json_t *devices, GError **error)
{
    g_autoptr(json_t) shown = sorted_object(devices, TRUE);
    g_autofree char *text = ferry_yaml_emit(shown, error);
    if (text == NULL)
        return FALSE;
    fputs(text, stdout);
    return TRUE;
}

json_t *cli_writable(json_t *object, const char *const *keys)
{
    json_t *copy = json_object();
    for (const char *const *key = keys; *key != NULL; key++) {
        json_t *value = json_object_get(object, *key);
        if (value != NULL)
            json_object_set(copy, *key, value);
    }
    return copy;
}

/* Run $VISUAL/$EDITOR (else vi) on a temporary file holding text; the edited text. */
static char *run_editor(const char *text, GError **error)
{
    g_autofree char *path = NULL;
    int fd = g_file_open_tmp("ferry_editor_XXXXXX.yaml", &path, error);
    if (fd < 0)
        return NULL;
    close(fd);
    if (!g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_NONE, 0600, error))
        return NULL;
    const char *editor = g_getenv("VISUAL");
    if (editor == NULL || *editor == '\0')
        editor = g_getenv("EDITOR");
    if (editor == NULL || *editor == '\0')
        editor = "vi";
    /* $EDITOR may carry arguments ("code --wait"): split it as a shell would, but run no shell. */
    g_auto(GStrv) words = NULL;
    if (!g_shell_parse_argv(editor, NULL, &words, error))
        return NULL;
    g_autoptr(GStrvBuilder) builder = g_strv_builder_new();
    g_strv_builder_addv(builder, (const char **)words);
    g_strv_builder_add(builder, path);
    g_auto(GStrv) argv = g_strv_builder_end(builder);
    int status = 0;
    gboolean ran = g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_CHILD_INHERITS_STDIN, NULL,
                                NULL, NULL, NULL, &status, error);
    char *edited = NULL;
    if (ran && g_spawn_check_wait_status(status, error))
        g_file_get_contents(path, &edited, NULL, error);
    g_unlink(path);
    return edited;
}

json_t *cli_edit_yaml(json_t *current, const char *header, GError **error)
{
    if (!cli_stdin_is_terminal()) {
        g_autofree char *text = cli_read_stdin(error);
        if (text == NULL)
            return NULL;
        return ferry_yaml_parse(text, strlen(text), error);
    }
    g_autoptr(json_t) shown = with_sorted_maps(current);
    g_autofree char *yaml = ferry_yaml_emit(shown, error);
    if (yaml == NULL)
        return NULL;
    g_autofree char *text = g_strdup_printf("%s\n\n%s", header, yaml);
    for (;;) {
        g_autofree char *edited = run_editor(text, error);
        if (edited == NULL)
            return NULL;
        g_autoptr(GError) parse_error = NULL;
        json_t *parsed = ferry_yaml_parse(edited, strlen(edited), &parse_error);
        if (parsed != NULL)
            return parsed;
        fprintf(stderr, "Config parsing error: %s\n", parse_error->message);
        if (!cli_ask_bool("Press enter to open the editor again or ctrl+c to abort change ", TRUE)) {
            g_propagate_error(error, g_steal_pointer(&parse_error));
            return NULL;
        }
        g_free(text);
        text = g_steal_pointer(&edited);
    }
}
