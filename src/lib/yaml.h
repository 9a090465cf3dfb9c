/* YAML <-> jansson, for `config show/edit` style documents and image metadata.yaml.
 *
 * Typing of plain (unquoted, untagged) scalars is deliberately narrow so that turning a typed value back
 * into a string never changes its text (Incus's config values are strings, and go-yaml keeps the text of
 * `release: 20.10` as "20.10"):
 *   null, Null, NULL, ~ and the empty scalar        -> null
 *   true, false (lower case only)                   -> boolean
 *   canonical decimal integers (-?(0|[1-9][0-9]*)) that fit in 64 bits -> integer
 *   reals written exactly as ferry_yaml_emit writes them (1.5, 22.04, 1e+100) -> real
 *   anything else (yes, 0755, 0x10, 20.10, 1e5, True...) -> string
 * Quoted and block scalars are always strings. Tags !!str, !!int, !!float, !!bool and !!null are honoured;
 * other tags are rejected. */
#ifdef FERRY_YAML_WANT_LIBYAML
/* This header shadows libyaml's <yaml.h> on libferry's include path; yaml.c asks for the real one. */
#include_next <yaml.h>
#else
#ifndef FERRY_YAML_H
#define FERRY_YAML_H

#include <glib.h>

#include "json.h"

G_BEGIN_DECLS

#define FERRY_YAML_MAX_DEPTH 64

/* Parse a single YAML document into jansson: mappings become objects (keys in document order, duplicate
 * keys rejected), sequences arrays, scalars as described above. Aliases and anchors are rejected (billion
 * laughs), and so are documents nested deeper than FERRY_YAML_MAX_DEPTH collections, complex keys and
 * multi-document streams. An empty document (or one that is only comments or a null) is an empty object.
 * Errors are FERRY_ERROR_INVALID and say "Invalid YAML at line L, column C: ...". */
json_t *ferry_yaml_parse(const char *text, gsize length, GError **error);

/* ferry_yaml_parse on a file's contents; a missing file is FERRY_ERROR_NOT_FOUND. */
json_t *ferry_yaml_parse_file(const char *path, GError **error);

/* Emit YAML the way Incus's CLI shows objects (`incus config show`): block style, keys in the object's
 * order, empty objects and arrays as {} and [], strings plain when that re-reads as the same string
 * (otherwise double-quoted if they would read as another type, e.g. "true", "123", "22.04", "", or
 * single-quoted if they contain YAML syntax, e.g. 'a: b'), multi-line strings as literal blocks, no line
 * folding. ferry_yaml_parse(ferry_yaml_emit(v)) is equal to v. Fails (FERRY_ERROR_INVALID) only for
 * values nested deeper than FERRY_YAML_MAX_DEPTH. Returns a newly allocated string ending in a newline. */
char *ferry_yaml_emit(json_t *value, GError **error);

/* The text a scalar stands for in a string-valued field (an Incus config or image property): strings
 * as they are, integers, reals and booleans as ferry_yaml_emit writes them, null as "". By the typing
 * rules above this is the scalar's original YAML text. NULL for objects and arrays. */
char *ferry_yaml_scalar_text(json_t *value);

G_END_DECLS

#endif /* FERRY_YAML_H */
#endif /* FERRY_YAML_WANT_LIBYAML */
