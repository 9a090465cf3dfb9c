/* ferry: the command line client. Verb table and global flags; each verb group lives in its own file. */
#include "cli.h"

#include "error.h"

#include <ferry-config.h>
#include <locale.h>
#include <stdio.h>
#include <string.h>

const CliCommand cli_commands[] = {
    {"admin", NULL, NULL, "Manage the server", NULL, NULL, cli_admin_commands},
    {"config", NULL, NULL, "Manage instance and server configuration options", NULL, NULL,
     cli_config_commands},
    {"copy", "cp", "[<remote>:]<source>[/<snapshot>] [[<remote>:]<destination>]",
     "Copy instances within or in between servers", cli_transfer_modes_help, cli_cmd_copy, NULL},
    {"delete", "rm", "[<remote>:]<instance>[/<snapshot>] [[<remote>:]<instance>[/<snapshot>]...]",
     "Delete instances and snapshots", NULL, cli_cmd_delete, NULL},
    {"exec", NULL, "[<remote>:]<instance> [flags] [--] <command line>", "Execute commands in instances",
     "The command is executed directly using exec, so there is no shell and\n"
     "shell patterns (variables, file redirects, ...) won't be understood.\n"
     "If you need a shell environment you need to execute the shell\n"
     "executable, passing the shell commands as arguments, for example:\n\n"
     "  ferry exec <instance> -- sh -c \"cd /tmp && pwd\"\n\n"
     "Mode defaults to non-interactive, interactive mode is selected if both stdin AND stdout are terminals\n"
     "(stderr is ignored).",
     cli_cmd_exec, NULL},
    {"export", NULL, "[<remote>:]<instance> [<file>|-]", "Export instance backups",
     "The tarball streams from the server into the file (or stdout with -) as it is made.", cli_cmd_export,
     NULL},
    {"image", NULL, NULL, "Manage images", NULL, NULL, cli_image_commands},
    {"import", NULL, "[<remote>:] <backup file>|- [<instance name>]", "Import instance backups", NULL,
     cli_cmd_import, NULL},
    {"info", NULL, "[<remote>:][<instance>]", "Show instance or server information", NULL, cli_cmd_info,
     NULL},
    {"init", "create", "[<remote>:]<image> [<remote>:][<name>] [flags]", "Create instances from images", NULL,
     cli_cmd_init, NULL},
    {"launch", NULL, "[<remote>:]<image> [<remote>:][<name>] [flags]",
     "Create and start instances from images", NULL, cli_cmd_launch, NULL},
    {"list", "ls", "[<remote>:] [<filter>...]", "List instances",
     "Default column layout: ns46tS\n\n"
     "Column shorthand chars:\n"
     "  4 - IPv4 address\n  6 - IPv6 address\n  a - Architecture\n  b - Storage pool\n  c - Creation date\n"
     "  d - Description\n  D - Disk usage\n  e - Project name\n  f - Base Image fingerprint (short)\n"
     "  F - Base Image fingerprint (long)\n  l - Last used date\n  L - Location of the instance\n"
     "  m - Memory usage\n  M - Memory usage (%)\n  n - Name\n  N - Number of Processes\n"
     "  p - PID of the instance's init process\n  P - Profiles\n"
     "  s - State\n  S - Number of snapshots\n  t - Type (persistent or ephemeral)\n  u - CPU usage (in "
     "seconds)",
     cli_cmd_list, NULL},
    {"move", "mv", "[<remote>:]<instance>[/<snapshot>] [<remote>:][<instance>[/<snapshot>]]",
     "Move instances within or in between servers", cli_transfer_modes_help, cli_cmd_move, NULL},
    {"operation", NULL, NULL, "List, show and delete background operations", NULL, NULL,
     cli_operation_commands},
    {"profile", NULL, NULL, "Manage profiles", NULL, NULL, cli_profile_commands},
    {"project", NULL, NULL, "Manage projects", NULL, NULL, cli_project_commands},
    {"query", NULL, "[<remote>:]<API path>", "Send a raw query to the server", NULL, cli_cmd_query, NULL},
    {"remote", NULL, NULL, "Manage the list of remote servers", NULL, NULL, cli_remote_commands},
    {"rename", NULL, "[<remote>:]<instance>[/<snapshot>] <instance>[/<snapshot>]",
     "Rename instances and snapshots", NULL, cli_cmd_rename, NULL},
    {"restart", NULL, "[<remote>:]<instance> [[<remote>:]<instance>...]", "Restart instances", NULL,
     cli_cmd_restart, NULL},
    {"restore", NULL, "[<remote>:]<instance> <snapshot>", "Restore instances from snapshots", NULL,
     cli_cmd_restore, NULL},
    {"snapshot", NULL, NULL, "Manage instance snapshots", NULL, NULL, cli_snapshot_commands},
    {"start", NULL, "[<remote>:]<instance> [[<remote>:]<instance>...]", "Start instances", NULL,
     cli_cmd_start, NULL},
    {"stop", NULL, "[<remote>:]<instance> [[<remote>:]<instance>...]", "Stop instances", NULL, cli_cmd_stop,
     NULL},
    {"storage", NULL, NULL, "Manage storage pools and volumes", NULL, NULL, cli_storage_commands},
    {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
};

static const CliCommand root_command = {
    "ferry",
    NULL,
    NULL,
    "Command line client for ferry (and Incus) servers",
    "All of ferry's features can be driven through the various commands below.\n"
    "For help with any of those, simply call them with --help.",
    NULL,
    cli_commands};

int main(int argc, char **argv)
{
    setlocale(LC_ALL, "");

    Cli cli = {0};
    cli.path = g_string_new("ferry");
    cli.command = &root_command;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("%s\n", FERRY_VERSION);
            return 0;
        }
        if (strcmp(argv[i], "--") == 0 || argv[i][0] != '-')
            break;
    }

    g_autoptr(GError) error = NULL;
    g_autofree char *dir = cli_config_default_dir();
    cli.config = cli_config_load(dir, &error);
    int status = -1;
    if (cli.config != NULL)
        status = cli_dispatch(&cli, &root_command, argc, argv, &error);

    if (status < 0) {
        fprintf(stderr, "Error: %s\n", error != NULL ? error->message : "Unknown error");
        status = 1;
    }
    fflush(stdout);
    cli_config_free(cli.config);
    g_free(cli.project);
    g_string_free(cli.path, TRUE);
    return status;
}
