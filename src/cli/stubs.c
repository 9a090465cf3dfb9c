#include "cli.h"
#include "error.h"
#define STUB(n) int n(Cli *cli, int argc, char **argv, GError **error) { g_set_error(error, FERRY_ERROR, 501, "not yet"); return -1; }
STUB(cli_cmd_query)
const CliCommand cli_remote_commands[1], cli_config_commands[1], cli_config_trust_commands[1], cli_config_device_commands[1],
 cli_snapshot_commands[1], cli_profile_commands[1], cli_profile_device_commands[1], cli_project_commands[1], cli_storage_commands[1],
 cli_storage_volume_commands[1], cli_image_commands[1], cli_image_alias_commands[1], cli_operation_commands[1], cli_admin_commands[1];
