/* ferry CLI: command table, option parsing and the context every verb runs with. */
#pragma once

#include "client.h"
#include "conf.h"
#include "json.h"

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
    CLI_OPT_BOOL,   /* gboolean * */
    CLI_OPT_STRING, /* char ** (g_free'd by the caller; the last one given wins) */
    CLI_OPT_INT,    /* int * */
    CLI_OPT_STRV,   /* GPtrArray ** of char * (repeatable; created on first use, free func g_free) */
} CliOptKind;

typedef struct {
    const char *long_name;
    char short_name; /* 0: none */
    CliOptKind kind;
    gpointer target;
    const char *arg_name; /* placeholder in help ("KEY=VALUE") */
    const char *help;
} CliOption;

typedef struct _Cli Cli;

/* Runs a verb with its arguments (argv[0] is the verb's name). Returns the exit status, or -1 with error set.
 */
typedef int (*CliRunFunc)(Cli *cli, int argc, char **argv, GError **error);

typedef struct _CliCommand CliCommand;
struct _CliCommand {
    const char *name;
    const char *aliases; /* space-separated, or NULL */
    const char *usage;   /* arguments after the command path */
    const char *summary;
    const char *description;       /* extra help text, or NULL */
    CliRunFunc run;                /* NULL for a group */
    const CliCommand *subcommands; /* terminated by an entry with name NULL */
};

struct _Cli {
    CliConfig *config;
    char *project;  /* --project */
    gboolean quiet; /* -q */
    GString *path;  /* "ferry config trust" for help and errors */
    const CliCommand *command;
};

/* Parse argv[1..] against options (terminated by a NULL long_name) plus the global options.
 * Positional arguments go to args_out (borrowed strings); "--" ends option parsing.
 * --help prints the command's help and exits 0. */
gboolean cli_parse(Cli *cli, int argc, char **argv, const CliOption *options, GPtrArray **args_out,
                   GError **error);
/* Check the number of positional arguments (max -1: unlimited). */
gboolean cli_check_args(Cli *cli, GPtrArray *args, guint min, int max, GError **error);
/* Run a group's subcommand (argv[0] is the group's name). */
int cli_dispatch(Cli *cli, const CliCommand *group, int argc, char **argv, GError **error);
void cli_print_help(Cli *cli, const CliCommand *command, const CliOption *options, FILE *out);

/* A client for a remote (NULL: the default one) with the project from --project or the remote's config. */
FerryClient *cli_connect(Cli *cli, const char *remote, GError **error);
/* Parse "[<remote>:]<name>" and connect; name_out may be NULL. */
FerryClient *cli_connect_name(Cli *cli, const char *raw, char **name_out, GError **error);

/* A progress callback for long operations; prints nothing unless stdout is a terminal and -q is off. */
typedef struct _CliProgress CliProgress;
CliProgress *cli_progress_new(Cli *cli, const char *prefix);
void cli_progress_update(const FerryProgress *progress, gpointer user_data); /* user_data: CliProgress */
void cli_progress_free(CliProgress *progress);                               /* clears the line */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CliProgress, cli_progress_free)
/* One line of progress text: "Unpack: 45% (1.23GB/2.73GB, 12.30MB/s, ETA 12s)". */
char *cli_progress_format(const char *prefix, const FerryProgress *progress);

/* "key=value" pairs into a JSON object of strings; FALSE with an error on a missing '='. */
gboolean cli_parse_key_values(GPtrArray *pairs, guint first, json_t *object, GError **error);
/* Read all of stdin (for "edit" from a pipe). */
char *cli_read_stdin(GError **error);
gboolean cli_stdin_is_terminal(void);
gboolean cli_stdout_is_terminal(void);
/* Print a JSON value as YAML on stdout; configs, devices and properties with their keys sorted, as Incus's
 * Go maps come out. */
gboolean cli_print_yaml(json_t *value, GError **error);
/* Print a devices map as YAML, device names and each device's keys sorted. */
gboolean cli_print_yaml_devices(json_t *devices, GError **error);
/* A new object with the members of object named in keys (the writable part of a resource for a PUT). */
json_t *cli_writable(json_t *object, const char *const *keys);
/* The YAML a user edits: read from stdin when it is not a terminal, else through $EDITOR on current. */
json_t *cli_edit_yaml(json_t *current, const char *header, GError **error);
/* Device subcommands shared by "config device" (instances) and "profile device" (profiles): action is
 * add/remove/list/show/get/set/unset/override; path is the resource; args[first] is the first word after
 * the resource name. */
int cli_device_action(Cli *cli, FerryClient *client, const char *action, const char *path, gboolean profile,
                      GPtrArray *args, guint first, GError **error);

/* Writable members of the resources. */
extern const char *const cli_instance_writable[];
extern const char *const cli_profile_writable[];

/* Ask a yes/no question on the terminal. */
gboolean cli_ask_bool(const char *question, gboolean fallback);

/* Verb groups, one file each. */
int cli_cmd_remote(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_config(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_init(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_launch(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_start(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_stop(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_restart(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_delete(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_rename(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_list(Cli *cli, int argc, char **argv, GError **error);
/* copy.c */
int cli_cmd_copy(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_move(Cli *cli, int argc, char **argv, GError **error);
extern const char cli_transfer_modes_help[];
int cli_cmd_info(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_exec(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_export(Cli *cli, int argc, char **argv, GError **error); /* export.c */
int cli_cmd_import(Cli *cli, int argc, char **argv, GError **error); /* import.c */
int cli_cmd_snapshot(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_restore(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_profile(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_project(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_storage(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_image(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_operation(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_admin(Cli *cli, int argc, char **argv, GError **error);
int cli_cmd_query(Cli *cli, int argc, char **argv, GError **error);

extern const CliCommand cli_commands[];
/* Command entries for the groups (defined next to their code). */
extern const CliCommand cli_remote_commands[];
extern const CliCommand cli_config_commands[];
extern const CliCommand cli_config_trust_commands[];
extern const CliCommand cli_config_device_commands[];
extern const CliCommand cli_snapshot_commands[];
extern const CliCommand cli_profile_commands[];
extern const CliCommand cli_profile_device_commands[];
extern const CliCommand cli_project_commands[];
extern const CliCommand cli_storage_commands[];
extern const CliCommand cli_storage_volume_commands[];
extern const CliCommand cli_image_commands[];
extern const CliCommand cli_image_alias_commands[];
extern const CliCommand cli_operation_commands[];
extern const CliCommand cli_admin_commands[];

G_END_DECLS
