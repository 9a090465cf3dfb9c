#include "yaml.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#define FERRY_YAML_WANT_LIBYAML
#include <yaml.h> /* libyaml, through include_next in our yaml.h */
#undef FERRY_YAML_WANT_LIBYAML

#define TAG_PREFIX "tag:yaml.org,2002:"

/* ---- scalar typing, shared by the parser and the emitter's quoting decision ---- */

/* Shortest text that reads back as the same double, always with a '.' or an exponent so that it is
 * never taken for an integer. */
static void format_real(double value, char *buf, gsize size)
{
    static const char *const formats[] = {"%.15g", "%.16g", "%.17g"};
    for (guint i = 0; i < G_N_ELEMENTS(formats); i++) {
        g_ascii_formatd(buf, size, formats[i], value);
        if (g_ascii_strtod(buf, NULL) == value)
            break;
    }
    if (strpbrk(buf, ".e") == NULL)
        g_strlcat(buf, ".0", size);
}

static gboolean is_null_text(const char *text, gsize length)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    for (guint i = 0; i < G_N_ELEMENTS(nulls); i++) {
        if (length == strlen(nulls[i]) && memcmp(text, nulls[i], length) == 0)
            return TRUE;
    }
    return FALSE;
}

static gboolean parse_canonical_int(const char *text, gsize length, json_int_t *out)
{
    const char *digits = text;
    gsize ndigits = length;
    if (ndigits > 0 && digits[0] == '-') {
        digits++;
        ndigits--;
    }
    if (ndigits == 0 || ndigits > 19)
        return FALSE;
    for (gsize i = 0; i < ndigits; i++) {
        if (!g_ascii_isdigit(digits[i]))
            return FALSE;
    }
    /* Leading zeros and "-0" would not survive a round trip through an integer. */
    if (digits[0] == '0' && (ndigits > 1 || digits != text))
        return FALSE;
    g_autofree char *copy = g_strndup(text, length);
    gint64 value;
    if (!g_ascii_string_to_signed(copy, 10, G_MININT64, G_MAXINT64, &value, NULL))
        return FALSE;
    *out = value;
    return TRUE;
}

static gboolean parse_real(const char *text, gsize length, gboolean canonical_only, double *out)
{
    if (length == 0 || length > 64 || memchr(text, '\0', length) != NULL)
        return FALSE;
    g_autofree char *copy = g_strndup(text, length);
    char *end = NULL;
    double value = g_ascii_strtod(copy, &end);
    if (end == copy || *end != '\0' || !isfinite(value))
        return FALSE;
    if (canonical_only) {
        char buf[G_ASCII_DTOSTR_BUF_SIZE + 4];
        format_real(value, buf, sizeof(buf));
        if (strcmp(buf, copy) != 0)
            return FALSE;
    }
    *out = value;
    return TRUE;
}

/* The typed value of a plain scalar, or NULL when it is a string. */
static json_t *resolve_plain(const char *text, gsize length)
{
    json_int_t integer;
    double real;
    if (is_null_text(text, length))
        return json_null();
    if (length == 4 && memcmp(text, "true", 4) == 0)
        return json_true();
    if (length == 5 && memcmp(text, "false", 5) == 0)
        return json_false();
    if (parse_canonical_int(text, length, &integer))
        return json_integer(integer);
    if (parse_real(text, length, TRUE, &real))
        return json_real(real);
    return NULL;
}

/* Would another YAML reader (go-yaml, YAML 1.1 or 1.2 schemas) take this plain text for a number,
 * boolean, null, timestamp or merge key? Errs on the side of quoting. */
static gboolean looks_typed_elsewhere(const char *text, gsize length)
{
    static const char *const words[] = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
                                        "<<", "="};
    for (guint i = 0; i < G_N_ELEMENTS(words); i++) {
        if (length == strlen(words[i]) && g_ascii_strncasecmp(text, words[i], length) == 0)
            return TRUE;
    }

    const char *p = text;
    const char *end = text + length;
    if (p < end && (*p == '+' || *p == '-'))
        p++;
    if (end - p == 4 && (g_ascii_strncasecmp(p, ".inf", 4) == 0 || g_ascii_strncasecmp(p, ".nan", 4) == 0))
        return TRUE;
    if (p == end || !(g_ascii_isdigit(*p) || (*p == '.' && p + 1 < end && g_ascii_isdigit(p[1]))))
        return FALSE;
    for (p = text; p < end; p++) {
        if (!g_ascii_isxdigit(*p) && strchr("xXoObB_.:+-eEtTzZ", *p) == NULL)
            return FALSE;
    }
    return TRUE;
}

char *ferry_yaml_scalar_text(json_t *value)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE + 4];
    switch (json_typeof(value)) {
    case JSON_STRING:
        return g_strndup(json_string_value(value), json_string_length(value));
    case JSON_INTEGER:
        return g_strdup_printf("%" JSON_INTEGER_FORMAT, json_integer_value(value));
    case JSON_REAL:
        format_real(json_real_value(value), buf, sizeof(buf));
        return g_strdup(buf);
    case JSON_TRUE:
        return g_strdup("true");
    case JSON_FALSE:
        return g_strdup("false");
    case JSON_NULL:
        return g_strdup("");
    default:
        return NULL;
    }
}

/* ---- parser ---- */

typedef struct {
    json_t *container;
    char *pending_key; /* mappings: key read, value not yet */
} Frame;

typedef struct {
    GArray *stack; /* of Frame */
    json_t *root;
    guint documents;
} ParseState;

static void frame_clear(gpointer data)
{
    Frame *frame = data;
    json_decref(frame->container);
    g_free(frame->pending_key);
}

static gboolean set_mark_error(GError **error, yaml_mark_t mark, const char *format, ...) G_GNUC_PRINTF(3, 4);

static gboolean set_mark_error(GError **error, yaml_mark_t mark, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    g_autofree char *message = g_strdup_vprintf(format, args);
    va_end(args);
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid YAML at line %zu, column %zu: %s",
                mark.line + 1, mark.column + 1, message);
    return FALSE;
}

/* Attach a finished value to the enclosing collection (or make it the document). Steals value. */
static void add_value(ParseState *state, json_t *value)
{
    if (state->stack->len == 0) {
        state->root = value;
        return;
    }
    Frame *top = &g_array_index(state->stack, Frame, state->stack->len - 1);
    if (json_is_array(top->container)) {
        json_array_append_new(top->container, value);
        return;
    }
    g_autofree char *key = g_steal_pointer(&top->pending_key);
    g_assert(key != NULL);
    json_object_set_new(top->container, key, value);
}

static gboolean expecting_key(ParseState *state)
{
    if (state->stack->len == 0)
        return FALSE;
    Frame *top = &g_array_index(state->stack, Frame, state->stack->len - 1);
    return json_is_object(top->container) && top->pending_key == NULL;
}

static gboolean handle_key(ParseState *state, const yaml_event_t *event, GError **error)
{
    const char *text = (const char *)event->data.scalar.value;
    gsize length = event->data.scalar.length;
    Frame *top = &g_array_index(state->stack, Frame, state->stack->len - 1);

    if (memchr(text, '\0', length) != NULL)
        return set_mark_error(error, event->start_mark, "mapping keys cannot contain NUL characters");
    if (!g_utf8_validate(text, length, NULL))
        return set_mark_error(error, event->start_mark, "invalid UTF-8 in mapping key");
    if (json_object_get(top->container, text) != NULL)
        return set_mark_error(error, event->start_mark, "duplicate mapping key \"%s\"", text);
    top->pending_key = g_strndup(text, length);
    return TRUE;
}

static json_t *scalar_value(const yaml_event_t *event, GError **error)
{
    const char *text = (const char *)event->data.scalar.value;
    gsize length = event->data.scalar.length;
    const char *tag = (const char *)event->data.scalar.tag;
    json_int_t integer;
    double real;
    json_t *value = NULL;

    if (tag == NULL && event->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
        value = resolve_plain(text, length);
    else if (tag == NULL || strcmp(tag, "!") == 0 || strcmp(tag, TAG_PREFIX "str") == 0)
        value = NULL;
    else if (strcmp(tag, TAG_PREFIX "null") == 0) {
        if (!is_null_text(text, length))
            goto bad_tagged;
        value = json_null();
    } else if (strcmp(tag, TAG_PREFIX "bool") == 0) {
        json_t *typed = resolve_plain(text, length);
        if (!json_is_boolean(typed)) {
            json_decref(typed);
            goto bad_tagged;
        }
        value = typed;
    } else if (strcmp(tag, TAG_PREFIX "int") == 0) {
        g_autofree char *copy = g_strndup(text, length);
        gint64 parsed;
        if (length == 0 || memchr(text, '\0', length) != NULL ||
            !g_ascii_string_to_signed(copy, 10, G_MININT64, G_MAXINT64, &parsed, NULL))
            goto bad_tagged;
        integer = parsed;
        value = json_integer(integer);
    } else if (strcmp(tag, TAG_PREFIX "float") == 0) {
        if (!parse_real(text, length, FALSE, &real))
            goto bad_tagged;
        value = json_real(real);
    } else {
        set_mark_error(error, event->start_mark, "unsupported tag \"%s\"", tag);
        return NULL;
    }

    if (value != NULL)
        return value;
    value = json_stringn(text, length);
    if (value == NULL)
        set_mark_error(error, event->start_mark, "invalid UTF-8 in scalar");
    return value;

bad_tagged:
    set_mark_error(error, event->start_mark, "invalid value for tag \"%s\"", tag);
    return NULL;
}

static const char *event_anchor(const yaml_event_t *event)
{
    switch (event->type) {
    case YAML_SCALAR_EVENT:
        return (const char *)event->data.scalar.anchor;
    case YAML_SEQUENCE_START_EVENT:
        return (const char *)event->data.sequence_start.anchor;
    case YAML_MAPPING_START_EVENT:
        return (const char *)event->data.mapping_start.anchor;
    default:
        return NULL;
    }
}

static const char *collection_tag(const yaml_event_t *event)
{
    if (event->type == YAML_SEQUENCE_START_EVENT)
        return (const char *)event->data.sequence_start.tag;
    return (const char *)event->data.mapping_start.tag;
}

/* One parser event; *done is set at the end of the stream. */
static gboolean handle_event(ParseState *state, const yaml_event_t *event, gboolean *done, GError **error)
{
    if (event->type == YAML_ALIAS_EVENT || event_anchor(event) != NULL)
        return set_mark_error(error, event->start_mark, "anchors and aliases are not supported");

    switch (event->type) {
    case YAML_STREAM_END_EVENT:
        *done = TRUE;
        return TRUE;
    case YAML_DOCUMENT_START_EVENT:
        if (++state->documents > 1)
            return set_mark_error(error, event->start_mark, "multiple documents are not supported");
        return TRUE;
    case YAML_SCALAR_EVENT: {
        if (expecting_key(state))
            return handle_key(state, event, error);
        json_t *value = scalar_value(event, error);
        if (value == NULL)
            return FALSE;
        add_value(state, value);
        return TRUE;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        const char *tag = collection_tag(event);
        const char *expected = event->type == YAML_SEQUENCE_START_EVENT ? TAG_PREFIX "seq" : TAG_PREFIX "map";
        if (tag != NULL && strcmp(tag, "!") != 0 && strcmp(tag, expected) != 0)
            return set_mark_error(error, event->start_mark, "unsupported tag \"%s\"", tag);
        if (expecting_key(state))
            return set_mark_error(error, event->start_mark, "complex mapping keys are not supported");
        if (state->stack->len >= FERRY_YAML_MAX_DEPTH)
            return set_mark_error(error, event->start_mark, "document is nested deeper than %d levels",
                                  FERRY_YAML_MAX_DEPTH);
        Frame frame = {
            .container = event->type == YAML_SEQUENCE_START_EVENT ? json_array() : json_object(),
        };
        g_array_append_val(state->stack, frame);
        return TRUE;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        Frame *top = &g_array_index(state->stack, Frame, state->stack->len - 1);
        json_t *value = g_steal_pointer(&top->container);
        g_array_set_size(state->stack, state->stack->len - 1);
        add_value(state, value);
        return TRUE;
    }
    default:
        return TRUE;
    }
}

json_t *ferry_yaml_parse(const char *text, gsize length, GError **error)
{
    g_return_val_if_fail(text != NULL || length == 0, NULL);

    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to initialise the YAML parser");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)(text != NULL ? text : ""), length);

    ParseState state = {.stack = g_array_new(FALSE, TRUE, sizeof(Frame))};
    g_array_set_clear_func(state.stack, frame_clear);
    gboolean ok = TRUE;
    gboolean done = FALSE;
    while (ok && !done) {
        yaml_event_t event;
        if (!yaml_parser_parse(&parser, &event)) {
            const char *problem = parser.problem != NULL ? parser.problem : "syntax error";
            if (parser.context != NULL)
                set_mark_error(error, parser.problem_mark, "%s %s", parser.context, problem);
            else
                set_mark_error(error, parser.problem_mark, "%s", problem);
            ok = FALSE;
            break;
        }
        ok = handle_event(&state, &event, &done, error);
        yaml_event_delete(&event);
    }
    yaml_parser_delete(&parser);
    g_array_unref(state.stack);

    if (!ok) {
        json_decref(state.root);
        return NULL;
    }
    if (state.root == NULL || json_is_null(state.root)) {
        json_decref(state.root);
        return json_object();
    }
    return state.root;
}

json_t *ferry_yaml_parse_file(const char *path, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_NOT_FOUND, "File \"%s\" not found", path);
        else
            ferry_set_error_errno(error, errno, "Failed to open \"%s\"", path);
        return NULL;
    }
    g_autoptr(GByteArray) contents = g_byte_array_new();
    guint8 buffer[16384];
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof(buffer));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ferry_set_error_errno(error, errno, "Failed to read \"%s\"", path);
            close(fd);
            return NULL;
        }
        if (n == 0)
            break;
        g_byte_array_append(contents, buffer, n);
    }
    close(fd);
    json_t *value = ferry_yaml_parse((const char *)contents->data, contents->len, error);
    if (value == NULL)
        g_prefix_error(error, "Failed to parse \"%s\": ", path);
    return value;
}

/* ---- emitter ---- */

static int write_to_gstring(void *data, unsigned char *buffer, size_t size)
{
    g_string_append_len(data, (const char *)buffer, size);
    return 1;
}

static gboolean emit_event(yaml_emitter_t *emitter, yaml_event_t *event, GError **error)
{
    if (yaml_emitter_emit(emitter, event))
        return TRUE;
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to emit YAML: %s",
                emitter->problem != NULL ? emitter->problem : "unknown error");
    return FALSE;
}

static gboolean emit_scalar(yaml_emitter_t *emitter, const char *text, gsize length, gboolean is_string,
                            GError **error)
{
    yaml_scalar_style_t style = YAML_PLAIN_SCALAR_STYLE;
    gboolean plain_implicit = TRUE;
    if (is_string) {
        json_t *typed = resolve_plain(text, length);
        if (typed != NULL || looks_typed_elsewhere(text, length)) {
            /* The emitter would write these plain; quote them so they stay strings. */
            style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
            plain_implicit = FALSE;
        } else if (memchr(text, '\n', length) != NULL) {
            style = YAML_LITERAL_SCALAR_STYLE; /* libyaml falls back to quoting when a block can't hold it */
        }
        json_decref(typed);
    }
    /* Plain strings that contain YAML syntax are single-quoted by libyaml itself. */
    yaml_event_t event;
    yaml_scalar_event_initialize(&event, NULL, NULL, (yaml_char_t *)text, (int)length, plain_implicit,
                                 is_string, style);
    return emit_event(emitter, &event, error);
}

static gboolean emit_value(yaml_emitter_t *emitter, json_t *value, guint depth, GError **error)
{
    yaml_event_t event;
    switch (json_typeof(value)) {
    case JSON_OBJECT: {
        if (depth >= FERRY_YAML_MAX_DEPTH)
            goto too_deep;
        yaml_mapping_start_event_initialize(&event, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
        if (!emit_event(emitter, &event, error))
            return FALSE;
        const char *key;
        json_t *member;
        json_object_foreach (value, key, member) {
            if (!emit_scalar(emitter, key, strlen(key), TRUE, error) ||
                !emit_value(emitter, member, depth + 1, error))
                return FALSE;
        }
        yaml_mapping_end_event_initialize(&event);
        return emit_event(emitter, &event, error);
    }
    case JSON_ARRAY: {
        if (depth >= FERRY_YAML_MAX_DEPTH)
            goto too_deep;
        yaml_sequence_start_event_initialize(&event, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE);
        if (!emit_event(emitter, &event, error))
            return FALSE;
        gsize index;
        json_t *member;
        json_array_foreach (value, index, member) {
            if (!emit_value(emitter, member, depth + 1, error))
                return FALSE;
        }
        yaml_sequence_end_event_initialize(&event);
        return emit_event(emitter, &event, error);
    }
    case JSON_STRING:
        return emit_scalar(emitter, json_string_value(value), json_string_length(value), TRUE, error);
    case JSON_NULL:
        return emit_scalar(emitter, "null", 4, FALSE, error);
    default: {
        g_autofree char *text = ferry_yaml_scalar_text(value);
        return emit_scalar(emitter, text, strlen(text), FALSE, error);
    }
    }

too_deep:
    g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Value is nested deeper than %d levels",
                FERRY_YAML_MAX_DEPTH);
    return FALSE;
}

char *ferry_yaml_emit(json_t *value, GError **error)
{
    g_return_val_if_fail(value != NULL, NULL);

    yaml_emitter_t emitter;
    if (!yaml_emitter_initialize(&emitter)) {
        g_set_error(error, FERRY_ERROR, FERRY_ERROR_INTERNAL, "Failed to initialise the YAML emitter");
        return NULL;
    }
    g_autoptr(GString) out = g_string_new(NULL);
    yaml_emitter_set_output(&emitter, write_to_gstring, out);
    yaml_emitter_set_unicode(&emitter, 1);
    yaml_emitter_set_width(&emitter, -1);
    yaml_emitter_set_indent(&emitter, 2);

    yaml_event_t event;
    gboolean ok;
    yaml_stream_start_event_initialize(&event, YAML_UTF8_ENCODING);
    ok = emit_event(&emitter, &event, error);
    if (ok) {
        yaml_document_start_event_initialize(&event, NULL, NULL, NULL, 1);
        ok = emit_event(&emitter, &event, error);
    }
    ok = ok && emit_value(&emitter, value, 0, error);
    if (ok) {
        yaml_document_end_event_initialize(&event, 1);
        ok = emit_event(&emitter, &event, error);
    }
    if (ok) {
        yaml_stream_end_event_initialize(&event);
        ok = emit_event(&emitter, &event, error);
    }
    yaml_emitter_delete(&emitter);
    if (!ok)
        return NULL;
    return g_string_free(g_steal_pointer(&out), FALSE);
}
