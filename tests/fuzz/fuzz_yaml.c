/* libFuzzer target: ferry_yaml_parse on arbitrary bytes. Whatever parses must emit and parse back to an
 * equal value (the round-trip promise of yaml.h), and so must the input itself taken as a string, as a
 * value and as a key, so emitter quoting bugs crash too. */
#include "yaml.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_round_trip(json_t *value)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *text = ferry_yaml_emit(value, &error);
    if (text == NULL)
        g_error("emit of a parsed value failed: %s", error->message);
    g_autoptr(json_t) again = ferry_yaml_parse(text, strlen(text), &error);
    if (again == NULL)
        g_error("re-parse failed: %s\n%s", error->message, text);
    if (!json_equal(value, again))
        g_error("round trip changed the value:\n%s", text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_t) value = ferry_yaml_parse((const char *)data, size, &error);
    if (value != NULL)
        check_round_trip(value);
    else
        g_assert(error != NULL);

    g_autoptr(json_t) string = json_stringn((const char *)data, size);
    if (string != NULL) {
        g_autoptr(json_t) as_value = json_pack("{s:O,s:[O]}", "k", string, "l", string);
        check_round_trip(as_value);
        if (memchr(data, '\0', size) == NULL) {
            g_autoptr(json_t) as_key = json_object();
            json_object_set(as_key, json_string_value(string), string);
            check_round_trip(as_key);
        }
    }
    return 0;
}
