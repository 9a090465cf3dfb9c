/* Stand-in for libFuzzer's main() when the compiler has no -fsanitize=fuzzer: run a target once over
 * each input file, or each file of each directory, given on the command line (options are ignored). */
#include <glib.h>
#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void run_file(const char *path, guint *count)
{
    g_autofree char *contents = NULL;
    gsize length;
    g_autoptr(GError) error = NULL;
    if (!g_file_get_contents(path, &contents, &length, &error))
        g_error("%s", error->message);
    LLVMFuzzerTestOneInput((const uint8_t *)contents, length);
    (*count)++;
}

static int compare_names(gconstpointer a, gconstpointer b)
{
    return g_strcmp0(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    guint count = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-')
            continue;
        if (!g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
            run_file(argv[i], &count);
            continue;
        }
        g_autoptr(GError) error = NULL;
        g_autoptr(GDir) dir = g_dir_open(argv[i], 0, &error);
        if (dir == NULL)
            g_error("%s", error->message);
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
        const char *name;
        while ((name = g_dir_read_name(dir)) != NULL)
            g_ptr_array_add(names, g_build_filename(argv[i], name, NULL));
        g_ptr_array_sort(names, compare_names);
        for (guint j = 0; j < names->len; j++)
            run_file(g_ptr_array_index(names, j), &count);
    }
    printf("replayed %u inputs\n", count);
    return count > 0 ? 0 : 1;
}
