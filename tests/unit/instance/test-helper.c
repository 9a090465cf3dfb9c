/* Stands in for ferryd's main() in the tests: dispatches the helper verbs to the runtime's entry points. */
#include "lxc_runtime.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "forkstart") == 0)
        return ferry_container_forkstart_main(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "forkexec") == 0)
        return ferry_container_forkexec_main(argc, argv);
    fprintf(stderr, "Usage: %s forkstart|forkexec ...\n", argv[0]);
    return 2;
}
