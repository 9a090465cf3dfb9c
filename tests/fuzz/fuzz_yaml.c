/* libFuzzer target: ferry_yaml_parse on arbitrary bytes. Whatever parses must emit and parse back to an
 * equal value (the round-trip promise of yaml.h), so emitter quoting bugs crash too. */
#include "yaml.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_t) value = ferry_yaml_parse((const char *)data, size, &error);
    if (value == NULL) {
        g_assert(error != NULL);
        return 0;
    }
    g_autofree char *text = ferry_yaml_emit(value, &error);
    if (text == NULL)
        g_error("emit of a parsed value failed: %s", error->message);
    g_autoptr(json_t) again = ferry_yaml_parse(text, strlen(text), &error);
    if (again == NULL)
        g_error("re-parse failed: %s\n%s", error->message, text);
    if (!json_equal(value, again))
        g_error("round trip changed the value:\n%s", text);
    return 0;
}
