#include "cfg.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "util.h"

/* ---- reading ------------------------------------------------------------- */

static int is_removed_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'; }

/* darknet's strip(): drop every space and tab anywhere in the line. */
static void strip_spaces(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++)
        if (!is_removed_space(*r)) *w++ = *r;
    *w = '\0';
}

static dn_status add_section(dn_cfg *cfg, const char *name, int line)
{
    if (cfg->n_sections == cfg->cap_sections) {
        int cap = cfg->cap_sections ? 2 * cfg->cap_sections : 64;
        dn_section *grown = realloc(cfg->sections, (size_t)cap * sizeof *grown);
        if (!grown) return DN_FAIL(DN_ERR_OOM, "out of memory reading %s", cfg->source);
        cfg->sections = grown;
        cfg->cap_sections = cap;
    }
    dn_section *s = &cfg->sections[cfg->n_sections];
    memset(s, 0, sizeof *s);
    s->name = dn_strdup(name);
    if (!s->name) return DN_ERR_OOM;
    s->line = line;
    cfg->n_sections++;
    return DN_OK;
}

static dn_status add_option(dn_cfg *cfg, dn_section *s, const char *key, const char *value,
                            int line)
{
    if (s->n_options == s->cap_options) {
        int cap = s->cap_options ? 2 * s->cap_options : 8;
        dn_option *grown = realloc(s->options, (size_t)cap * sizeof *grown);
        if (!grown) return DN_FAIL(DN_ERR_OOM, "out of memory reading %s", cfg->source);
        s->options = grown;
        s->cap_options = cap;
    }
    dn_option *o = &s->options[s->n_options];
    o->key = dn_strdup(key);
    o->value = dn_strdup(value);
    if (!o->key || !o->value) {
        free(o->key);
        free(o->value);
        return DN_ERR_OOM;
    }
    o->line = line;
    o->used = 0;
    s->n_options++;
    return DN_OK;
}

static dn_status parse_line(dn_cfg *cfg, char *line, int line_no)
{
    strip_spaces(line);
    if (line[0] == '\0' || line[0] == '#' || line[0] == ';') return DN_OK;
    if (line[0] == '[') {
        size_t len = strlen(line);
        if (len < 3 || line[len - 1] != ']')
            return DN_FAIL(DN_ERR_CFG, "%s:%d: malformed section header '%s' (expected [name])",
                           cfg->source, line_no, line);
        line[len - 1] = '\0';
        return add_section(cfg, line + 1, line_no);
    }
    char *hash = strchr(line, '#');
    if (hash) *hash = '\0';
    char *eq = strchr(line, '=');
    if (!eq)
        return DN_FAIL(DN_ERR_CFG, "%s:%d: expected key=value or [section], got '%s'",
                       cfg->source, line_no, line);
    if (eq == line)
        return DN_FAIL(DN_ERR_CFG, "%s:%d: option without a name: '%s'", cfg->source, line_no,
                       line);
    if (cfg->n_sections == 0)
        return DN_FAIL(DN_ERR_CFG, "%s:%d: option '%s' before the first [section]", cfg->source,
                       line_no, line);
    *eq = '\0';
    return add_option(cfg, &cfg->sections[cfg->n_sections - 1], line, eq + 1, line_no);
}

dn_status dn_cfg_parse(const char *text, const char *source, dn_cfg *out)
{
    memset(out, 0, sizeof *out);
    out->source = dn_strdup(source ? source : "<cfg>");
    if (!out->source) return DN_ERR_OOM;
    const char *p = text;
    if ((unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB && (unsigned char)p[2] == 0xBF)
        p += 3; /* a UTF-8 byte-order mark (Windows editors), which darknet would choke on */
    int line_no = 0;
    char *line = NULL;
    size_t line_cap = 0;
    dn_status status = DN_OK;
    while (*p && status == DN_OK) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        line_no++;
        if (len + 1 > line_cap) {
            line_cap = 2 * (len + 1);
            char *grown = realloc(line, line_cap);
            if (!grown) {
                status = DN_FAIL(DN_ERR_OOM, "out of memory reading %s", out->source);
                break;
            }
            line = grown;
        }
        memcpy(line, p, len);
        line[len] = '\0';
        status = parse_line(out, line, line_no);
        p = end ? end + 1 : p + len;
    }
    free(line);
    if (status == DN_OK && out->n_sections == 0)
        status = DN_FAIL(DN_ERR_CFG, "%s: no sections found (expected [net] and layers)",
                         out->source);
    if (status != DN_OK) dn_cfg_free(out);
    return status;
}

void dn_cfg_free(dn_cfg *cfg)
{
    if (!cfg) return;
    for (int i = 0; i < cfg->n_sections; i++) {
        dn_section *s = &cfg->sections[i];
        for (int j = 0; j < s->n_options; j++) {
            free(s->options[j].key);
            free(s->options[j].value);
        }
        free(s->options);
        free(s->name);
    }
    free(cfg->sections);
    free(cfg->source);
    memset(cfg, 0, sizeof *cfg);
}

/* ---- getters ------------------------------------------------------------- */

static dn_option *find_option(dn_section *s, const char *key)
{
    for (int i = 0; i < s->n_options; i++)
        if (strcmp(s->options[i].key, key) == 0) {
            s->options[i].used = 1;
            return &s->options[i];
        }
    return NULL;
}

const char *dn_cfg_find(dn_section *s, const char *key)
{
    dn_option *o = find_option(s, key);
    return o ? o->value : NULL;
}

dn_status dn_cfg_error(const dn_cfg *cfg, const dn_section *s, dn_status status, const char *fmt,
                       ...)
{
    char what[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(what, sizeof what, fmt, args);
    va_end(args);
    return DN_FAIL(status, "%s:%d: [%s]: %s", cfg->source, s->line, s->name, what);
}

static dn_status bad_value(const dn_cfg *cfg, const dn_section *s, const dn_option *o,
                           const char *expected)
{
    return DN_FAIL(DN_ERR_CFG, "%s:%d: [%s] (section at line %d): option '%s' expects %s, got '%s'",
                   cfg->source, o->line, s->name, s->line, o->key, expected, o->value);
}

static int parse_int(const char *text, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (end == text || *end != '\0' || errno == ERANGE || v > 2147483647L || v < -2147483647L)
        return 0;
    *out = (int)v;
    return 1;
}

static int parse_float(const char *text, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(text, &end);
    if (end == text || *end != '\0' || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

dn_status dn_cfg_int(const dn_cfg *cfg, dn_section *s, const char *key, int def, int *out)
{
    dn_option *o = find_option(s, key);
    *out = def;
    if (!o) return DN_OK;
    if (!parse_int(o->value, out)) return bad_value(cfg, s, o, "an integer");
    return DN_OK;
}

dn_status dn_cfg_float(const dn_cfg *cfg, dn_section *s, const char *key, float def, float *out)
{
    dn_option *o = find_option(s, key);
    *out = def;
    if (!o) return DN_OK;
    if (!parse_float(o->value, out)) return bad_value(cfg, s, o, "a number");
    return DN_OK;
}

dn_status dn_cfg_str(const dn_cfg *cfg, dn_section *s, const char *key, const char *def,
                     const char **out)
{
    (void)cfg;
    dn_option *o = find_option(s, key);
    *out = o ? o->value : def;
    return DN_OK;
}

/* Split on commas; empty items (a trailing comma) are skipped as darknet's
 * counting of commas would leave them at the end. */
static int count_items(const char *v)
{
    int n = 0;
    const char *p = v;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len) n++;
        if (!comma) break;
        p = comma + 1;
    }
    return n;
}

static dn_status parse_list(const dn_cfg *cfg, dn_section *s, const char *key, int as_int,
                            void **out, int *n)
{
    dn_option *o = find_option(s, key);
    *out = NULL;
    *n = 0;
    if (!o) return DN_OK;
    int count = count_items(o->value);
    if (count == 0) return bad_value(cfg, s, o, "a comma-separated list of numbers");
    void *arr = malloc((size_t)count * (as_int ? sizeof(int) : sizeof(float)));
    if (!arr) return DN_FAIL(DN_ERR_OOM, "out of memory reading option '%s'", key);
    char item[64];
    const char *p = o->value;
    int i = 0;
    while (*p && i < count) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len) {
            if (len >= sizeof item) {
                free(arr);
                return bad_value(cfg, s, o, "a comma-separated list of numbers");
            }
            memcpy(item, p, len);
            item[len] = '\0';
            int ok = as_int ? parse_int(item, (int *)arr + i) : parse_float(item, (float *)arr + i);
            if (!ok) {
                free(arr);
                return bad_value(cfg, s, o,
                                 as_int ? "a comma-separated list of integers"
                                        : "a comma-separated list of numbers");
            }
            i++;
        }
        if (!comma) break;
        p = comma + 1;
    }
    *out = arr;
    *n = count;
    return DN_OK;
}

dn_status dn_cfg_int_list(const dn_cfg *cfg, dn_section *s, const char *key, int **out, int *n)
{
    return parse_list(cfg, s, key, 1, (void **)out, n);
}

dn_status dn_cfg_float_list(const dn_cfg *cfg, dn_section *s, const char *key, float **out,
                            int *n)
{
    return parse_list(cfg, s, key, 0, (void **)out, n);
}

dn_status dn_cfg_require_int(const dn_cfg *cfg, dn_section *s, const char *key, int allowed,
                             const char *why)
{
    int v;
    DN_TRY(dn_cfg_int(cfg, s, key, allowed, &v));
    if (v != allowed)
        return dn_cfg_error(cfg, s, DN_ERR_UNSUPPORTED, "option %s=%d is not supported (%s)", key,
                            v, why);
    return DN_OK;
}
