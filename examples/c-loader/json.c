/* A small JSON reader and writer (see json.h). Public domain (CC0). */
#include "json.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

struct parser {
	const char *p;
	const char *error;
	int depth;
};

static void skip_space(struct parser *ps)
{
	while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')
		ps->p++;
}

static struct json *fail(struct parser *ps, const char *message)
{
	if (!ps->error)
		ps->error = message;
	return NULL;
}

static struct json *new_value(enum json_type type)
{
	struct json *v = calloc(1, sizeof(*v));
	if (v)
		v->type = type;
	return v;
}

/* Append one item (and its key, for objects) to an array or object. */
static int push(struct json *v, char *key, struct json *item)
{
	if ((v->count & (v->count - 1)) == 0) {          /* 0, 1, 2, 4, ...: grow */
		size_t cap = v->count ? v->count * 2 : 1;
		struct json **items = realloc(v->items, cap * sizeof(*items));
		if (!items)
			return -1;
		v->items = items;
		if (v->type == JSON_OBJECT) {
			char **keys = realloc(v->keys, cap * sizeof(*keys));
			if (!keys)
				return -1;
			v->keys = keys;
		}
	}
	if (v->type == JSON_OBJECT)
		v->keys[v->count] = key;
	v->items[v->count++] = item;
	return 0;
}

static int hex4(const char *s, unsigned *out)
{
	unsigned x = 0;
	for (int i = 0; i < 4; i++) {
		char c = s[i];
		x <<= 4;
		if (c >= '0' && c <= '9')
			x |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			x |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			x |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = x;
	return 0;
}

static size_t put_utf8(char *d, unsigned cp)
{
	if (cp < 0x80) {
		d[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		d[0] = (char)(0xc0 | cp >> 6);
		d[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		d[0] = (char)(0xe0 | cp >> 12);
		d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		d[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	d[0] = (char)(0xf0 | cp >> 18);
	d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	d[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	d[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* A string literal at ps->p (on its opening quote): its unescaped bytes, NUL-terminated. */
static char *parse_string(struct parser *ps, size_t *len)
{
	const char *s = ps->p + 1, *end = s;
	while (*end && *end != '"')                      /* find the closing quote */
		end += (*end == '\\' && end[1]) ? 2 : 1;
	if (*end != '"')
		return (char *)fail(ps, "unterminated string");
	char *out = malloc((size_t)(end - s) + 1), *d = out;
	if (!out)
		return (char *)fail(ps, "out of memory");
	while (s < end) {
		if ((unsigned char)*s < 0x20) {
			free(out);
			return (char *)fail(ps, "control character in string");
		}
		if (*s != '\\') {
			*d++ = *s++;
			continue;
		}
		s++;
		switch (*s++) {
		case '"': *d++ = '"'; break;
		case '\\': *d++ = '\\'; break;
		case '/': *d++ = '/'; break;
		case 'b': *d++ = '\b'; break;
		case 'f': *d++ = '\f'; break;
		case 'n': *d++ = '\n'; break;
		case 'r': *d++ = '\r'; break;
		case 't': *d++ = '\t'; break;
		case 'u': {
			unsigned cp, lo;
			if (s + 4 > end || hex4(s, &cp)) {
				free(out);
				return (char *)fail(ps, "bad \\u escape");
			}
			s += 4;
			if (cp >= 0xd800 && cp < 0xdc00 && s + 6 <= end && s[0] == '\\' && s[1] == 'u' &&
			    !hex4(s + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				s += 6;
			}
			d += put_utf8(d, cp);   /* never longer than the 6 or 12 escape characters */
			break;
		}
		default:
			free(out);
			return (char *)fail(ps, "bad escape in string");
		}
	}
	*d = '\0';
	*len = (size_t)(d - out);
	ps->p = end + 1;
	return out;
}

static struct json *parse_value(struct parser *ps);

static struct json *parse_container(struct parser *ps, enum json_type type, char close)
{
	struct json *v = new_value(type);
	if (!v)
		return fail(ps, "out of memory");
	if (++ps->depth > MAX_DEPTH) {
		json_free(v);
		return fail(ps, "nested too deeply");
	}
	ps->p++;
	skip_space(ps);
	if (*ps->p == close) {
		ps->p++;
		ps->depth--;
		return v;
	}
	for (;;) {
		char *key = NULL;
		size_t klen;
		skip_space(ps);
		if (type == JSON_OBJECT) {
			if (*ps->p != '"' || !(key = parse_string(ps, &klen)))
				goto bad;
			skip_space(ps);
			if (*ps->p++ != ':') {
				free(key);
				goto bad;
			}
		}
		struct json *item = parse_value(ps);
		if (!item || push(v, key, item)) {
			free(key);
			json_free(item);
			goto bad;
		}
		skip_space(ps);
		if (*ps->p == ',') {
			ps->p++;
			continue;
		}
		if (*ps->p == close) {
			ps->p++;
			ps->depth--;
			return v;
		}
		goto bad;
	}
bad:
	json_free(v);
	return fail(ps, type == JSON_OBJECT ? "bad object" : "bad array");
}

static struct json *parse_literal(struct parser *ps, const char *word, enum json_type type)
{
	size_t n = strlen(word);
	if (strncmp(ps->p, word, n))
		return fail(ps, "unexpected character");
	ps->p += n;
	return new_value(type);
}

static struct json *parse_value(struct parser *ps)
{
	skip_space(ps);
	switch (*ps->p) {
	case '{': return parse_container(ps, JSON_OBJECT, '}');
	case '[': return parse_container(ps, JSON_ARRAY, ']');
	case 'n': return parse_literal(ps, "null", JSON_NULL);
	case 't': return parse_literal(ps, "true", JSON_TRUE);
	case 'f': return parse_literal(ps, "false", JSON_FALSE);
	case '"': {
		struct json *v = new_value(JSON_STRING);
		if (!v || !(v->text = parse_string(ps, &v->len))) {
			free(v);
			return fail(ps, "bad string");
		}
		return v;
	}
	default: {
		const char *s = ps->p;
		if (*s == '-')
			s++;
		if (*s < '0' || *s > '9')
			return fail(ps, "unexpected character");
		while ((*s >= '0' && *s <= '9') || *s == '.' || *s == 'e' || *s == 'E' || *s == '+' || *s == '-')
			s++;
		struct json *v = new_value(JSON_NUMBER);
		if (!v || !(v->text = strndup(ps->p, (size_t)(s - ps->p)))) {
			free(v);
			return fail(ps, "out of memory");
		}
		ps->p = s;
		return v;
	}
	}
}

struct json *json_parse(const char *text, const char **error)
{
	struct parser ps = { text, NULL, 0 };
	struct json *v = parse_value(&ps);
	if (v) {
		skip_space(&ps);
		if (*ps.p) {
			json_free(v);
			v = fail(&ps, "text after the value");
		}
	}
	if (error)
		*error = ps.error;
	return v;
}

void json_free(struct json *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->count; i++) {
		if (v->keys)
			free(v->keys[i]);
		json_free(v->items[i]);
	}
	free(v->keys);
	free(v->items);
	free(v->text);
	free(v);
}

struct json *json_get(const struct json *o, const char *key)
{
	if (!o || o->type != JSON_OBJECT)
		return NULL;
	for (size_t i = 0; i < o->count; i++)
		if (!strcmp(o->keys[i], key))
			return o->items[i];
	return NULL;
}

const char *json_string(const struct json *v)
{
	return v && v->type == JSON_STRING ? v->text : NULL;
}

int json_u64(const struct json *v, unsigned long long *out)
{
	char *end;
	if (!v || (v->type != JSON_NUMBER && v->type != JSON_STRING) || !v->text[0] || v->text[0] == '-')
		return -1;
	*out = strtoull(v->text, &end, 0);
	return *end ? -1 : 0;
}

/* Write a JSON string; bytes from 0x80 up are UTF-8 text (latin1 = 0) or single bytes (latin1 = 1). */
static void write_string(FILE *out, const char *bytes, size_t len, int latin1)
{
	fputc('"', out);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)bytes[i];
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20 || c == 0x7f || (latin1 && c >= 0x80))
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

void json_write_bytes(FILE *out, const char *bytes, size_t len)
{
	write_string(out, bytes, len, 1);
}

void json_write_string(FILE *out, const char *s)
{
	write_string(out, s, strlen(s), 0);
}
