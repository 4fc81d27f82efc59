/* A small JSON reader and writer, enough for the koconform protocol (conformance/PROTOCOL.md).
 *
 * The reader builds a tree of json values from one line of text; numbers keep their text
 * (the protocol's numbers are integers), strings are unescaped to UTF-8.
 * Written for the koconform example loader; public domain (CC0). libc only.
 */
#ifndef KOC_JSON_H
#define KOC_JSON_H

#include <stddef.h>
#include <stdio.h>

enum json_type { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
	enum json_type type;
	char *text;             /* JSON_STRING: the unescaped string; JSON_NUMBER: its literal */
	size_t len;             /* JSON_STRING: its length in bytes */
	size_t count;           /* JSON_ARRAY, JSON_OBJECT: number of items */
	char **keys;            /* JSON_OBJECT: item names */
	struct json **items;    /* JSON_ARRAY, JSON_OBJECT: the items */
};

/* Parse one JSON text. NULL on error, with a message in *error (static storage). */
struct json *json_parse(const char *text, const char **error);
void json_free(struct json *value);

/* The item named key of an object (NULL: absent or not an object). */
struct json *json_get(const struct json *object, const char *key);
/* The string of a JSON string (NULL: not a string). */
const char *json_string(const struct json *value);
/* A JSON integer, or a string holding a C integer ("0x1f"); returns 0 on success. */
int json_u64(const struct json *value, unsigned long long *out);

/* Write bytes as a JSON string, each byte one code point (Latin-1: 0x80-0xff become
 * \u0080-\u00ff), so ELF names of any bytes stay valid JSON, read as the reference reads them. */
void json_write_bytes(FILE *out, const char *bytes, size_t len);
/* Write UTF-8 text (a string that came in as JSON: an id) as a JSON string. */
void json_write_string(FILE *out, const char *s);

#endif
