/* trace: see trace.h. */
#include "trace.h"

#include <stdio.h>
#include <string.h>

#include "text.h"

static _Thread_local trace_ctx current;
static _Thread_local bool active;

static bool hex(const char *s, size_t n)
{
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
        nonzero |= c != '0';
    }
    return nonzero;
}

bool trace_parse(const char *tp, trace_ctx *out)
{
    if (tp == NULL || strlen(tp) != 55 || strncmp(tp, "00-", 3) != 0 || tp[35] != '-' || tp[52] != '-') return false;
    if (!hex(tp + 3, 32) || !hex(tp + 36, 16)) return false;
    char f[3] = {tp[53], tp[54], '\0'};
    if (!((f[0] >= '0' && f[0] <= '9') || (f[0] >= 'a' && f[0] <= 'f')) ||
        !((f[1] >= '0' && f[1] <= '9') || (f[1] >= 'a' && f[1] <= 'f')))
        return false;
    memcpy(out->trace_id, tp + 3, 32);
    out->trace_id[32] = '\0';
    memcpy(out->span_id, tp + 36, 16);
    out->span_id[16] = '\0';
    memcpy(out->flags, f, 3);
    return true;
}

/* n random lowercase hex digits (not all zero). */
static void random_hex(char *out, size_t n)
{
    char uuid[37];
    size_t k = 0;
    while (k < n) {
        if (text_uuid_v4(uuid) != 0) { /* no randomness: a fixed id beats none */
            memset(uuid, '0', 36);
            uuid[36] = '\0';
        }
        for (const char *p = uuid; *p != '\0' && k < n; p++)
            if (*p != '-' && p != uuid + 14 && p != uuid + 19) out[k++] = *p; /* skip the version/variant digits */
    }
    out[n] = '\0';
    if (!hex(out, n)) out[n - 1] = '1';
}

void trace_new(trace_ctx *out)
{
    random_hex(out->trace_id, 32);
    random_hex(out->span_id, 16);
    memcpy(out->flags, "01", 3);
}

void trace_child(const trace_ctx *parent, trace_ctx *out)
{
    if (parent == NULL) {
        trace_new(out);
        return;
    }
    trace_ctx t = *parent;
    random_hex(t.span_id, 16);
    *out = t;
}

void trace_format(const trace_ctx *t, char out[56])
{
    snprintf(out, 56, "00-%s-%s-%s", t->trace_id, t->span_id, t->flags);
}

void trace_enter(const trace_ctx *t)
{
    current = *t;
    active = true;
}

void trace_leave(void)
{
    active = false;
}

const trace_ctx *trace_current(void)
{
    return active ? &current : NULL;
}
