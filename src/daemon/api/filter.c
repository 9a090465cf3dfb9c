#include "filter.h"

#include "error.h"

#include <string.h>

typedef struct {
    char *field;
    gboolean negate; /* "ne" */
    char *value;
} Clause;

/* Disjunction of conjunctions: alternatives[i] is a GPtrArray of Clause*. */
struct _FerryFilter {
    GPtrArray *alternatives;
};

static void clause_free(gpointer data)
{
    Clause *clause = data;
    g_free(clause->field);
    g_free(clause->value);
    g_free(clause);
}

void ferry_filter_free(FerryFilter *filter)
{
    if (filter == NULL)
        return;
    g_ptr_array_unref(filter->alternatives);
    g_free(filter);
}

/* Split on spaces, keeping "quoted strings" whole. */
static GPtrArray *tokenize(const char *text, GError **error)
{
    GPtrArray *tokens = g_ptr_array_new_with_free_func(g_free);
    const char *p = text;
    while (*p != '\0') {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        GString *token = g_string_new(NULL);
        if (*p == '"' || *p == '\'') {
            char quote = *p++;
            while (*p != '\0' && *p != quote)
                g_string_append_c(token, *p++);
            if (*p != quote) {
                g_string_free(token, TRUE);
                g_ptr_array_unref(tokens);
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid filter: unterminated quote");
                return NULL;
            }
            p++;
        } else {
            while (*p != '\0' && *p != ' ')
                g_string_append_c(token, *p++);
        }
        g_ptr_array_add(tokens, g_string_free(token, FALSE));
    }
    return tokens;
}

FerryFilter *ferry_filter_parse(const char *text, GError **error)
{
    FerryFilter *filter = g_new0(FerryFilter, 1);
    filter->alternatives = g_ptr_array_new_with_free_func((GDestroyNotify)g_ptr_array_unref);
    if (text == NULL || *text == '\0')
        return filter;
    g_autoptr(GPtrArray) tokens = tokenize(text, error);
    if (tokens == NULL) {
        ferry_filter_free(filter);
        return NULL;
    }
    GPtrArray *current = g_ptr_array_new_with_free_func(clause_free);
    g_ptr_array_add(filter->alternatives, current);
    guint i = 0;
    while (i < tokens->len) {
        if (i + 3 > tokens->len) {
            ferry_filter_free(filter);
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid filter \"%s\": expected <field> eq|ne <value>",
                        text);
            return NULL;
        }
        const char *op = tokens->pdata[i + 1];
        if (!g_str_equal(op, "eq") && !g_str_equal(op, "ne")) {
            ferry_filter_free(filter);
            g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid filter operator \"%s\" (eq, ne)", op);
            return NULL;
        }
        Clause *clause = g_new0(Clause, 1);
        clause->field = g_strdup(tokens->pdata[i]);
        clause->negate = g_str_equal(op, "ne");
        clause->value = g_strdup(tokens->pdata[i + 2]);
        g_ptr_array_add(current, clause);
        i += 3;
        if (i < tokens->len) {
            const char *joiner = tokens->pdata[i];
            if (g_str_equal(joiner, "or")) {
                current = g_ptr_array_new_with_free_func(clause_free);
                g_ptr_array_add(filter->alternatives, current);
            } else if (!g_str_equal(joiner, "and")) {
                ferry_filter_free(filter);
                g_set_error(error, FERRY_ERROR, FERRY_ERROR_INVALID, "Invalid filter: expected and/or, got \"%s\"",
                            joiner);
                return NULL;
            }
            i++;
        }
    }
    return filter;
}

/* Field paths are dotted; config keys contain dots themselves, so try the longest key at each level. */
static json_t *lookup(json_t *object, const char *path)
{
    if (!json_is_object(object))
        return NULL;
    json_t *whole = json_object_get(object, path);
    if (whole != NULL)
        return whole;
    for (const char *dot = strchr(path, '.'); dot != NULL; dot = strchr(dot + 1, '.')) {
        g_autofree char *head = g_strndup(path, dot - path);
        json_t *child = json_object_get(object, head);
        if (child != NULL) {
            json_t *found = lookup(child, dot + 1);
            if (found != NULL)
                return found;
        }
    }
    return NULL;
}

static gboolean clause_matches(const Clause *clause, json_t *object)
{
    json_t *value = lookup(object, clause->field);
    g_autofree char *text = NULL;
    if (json_is_string(value))
        text = g_strdup(json_string_value(value));
    else if (json_is_integer(value))
        text = g_strdup_printf("%" JSON_INTEGER_FORMAT, json_integer_value(value));
    else if (json_is_boolean(value))
        text = g_strdup(json_is_true(value) ? "true" : "false");
    gboolean equal = text != NULL && g_ascii_strcasecmp(text, clause->value) == 0;
    return clause->negate ? !equal : equal;
}

gboolean ferry_filter_match(const FerryFilter *filter, json_t *object)
{
    if (filter->alternatives->len == 0)
        return TRUE;
    for (guint i = 0; i < filter->alternatives->len; i++) {
        GPtrArray *clauses = filter->alternatives->pdata[i];
        gboolean all = TRUE;
        for (guint j = 0; j < clauses->len && all; j++)
            all = clause_matches(clauses->pdata[j], object);
        if (all)
            return TRUE;
    }
    return FALSE;
}
