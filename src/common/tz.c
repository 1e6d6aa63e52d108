/* tz: see tz.h. Calendar algorithms after Howard Hinnant's "chrono-compatible
 * low-level date algorithms". */
#include "tz.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TYPES 256

typedef struct rule_date {
    int month, week, wday;   /* Mm.w.d */
    int time;                /* seconds after local midnight */
} rule_date;

struct tz_zone {
    int64_t *times;          /* transition instants, ascending */
    unsigned char *idx;      /* type index of each transition */
    int n;
    int offsets[MAX_TYPES];  /* utoff of each type */
    int ntypes;
    int first_offset;        /* before the first transition */
    /* The footer rule, for instants after the last transition. */
    bool has_rule, has_dst;
    int std_off, dst_off;    /* seconds east of UTC */
    rule_date start, end;
};

/* ---- calendar ---- */

int64_t tz_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void tz_civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

int tz_weekday(int64_t days)
{
    int64_t w = (days + 3) % 7; /* 1970-01-01 was a Thursday */
    if (w < 0) w += 7;
    return (int)w + 1;
}

int tz_days_in_month(int64_t y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

static int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

/* ---- the POSIX TZ footer ---- */

/* Skips a zone abbreviation: letters, or <...>. */
static const char *skip_name(const char *p)
{
    if (*p == '<') {
        const char *e = strchr(p, '>');
        return e != NULL ? e + 1 : NULL;
    }
    const char *s = p;
    while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) p++;
    return p - s >= 3 ? p : NULL;
}

/* [+-]hh[:mm[:ss]] as seconds. */
static const char *parse_hms(const char *p, int *out)
{
    int sign = 1, h = 0, m = 0, s = 0;
    if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
    if (*p < '0' || *p > '9') return NULL;
    h = (int)strtol(p, (char **)&p, 10);
    if (*p == ':') m = (int)strtol(p + 1, (char **)&p, 10);
    if (*p == ':') s = (int)strtol(p + 1, (char **)&p, 10);
    *out = sign * (h * 3600 + m * 60 + s);
    return p;
}

static const char *parse_date(const char *p, rule_date *r)
{
    if (*p != 'M') return NULL; /* only the Mm.w.d form, which current tzdata uses */
    r->month = (int)strtol(p + 1, (char **)&p, 10);
    if (*p++ != '.') return NULL;
    r->week = (int)strtol(p, (char **)&p, 10);
    if (*p++ != '.') return NULL;
    r->wday = (int)strtol(p, (char **)&p, 10);
    r->time = 7200;
    if (*p == '/' && (p = parse_hms(p + 1, &r->time)) == NULL) return NULL;
    if (r->month < 1 || r->month > 12 || r->week < 1 || r->week > 5 || r->wday < 0 || r->wday > 6) return NULL;
    return p;
}

static bool parse_footer(tz_zone *z, const char *s)
{
    const char *p = skip_name(s);
    int off;
    if (p == NULL || (p = parse_hms(p, &off)) == NULL) return false;
    z->std_off = -off; /* POSIX offsets count west */
    if (*p == '\0') {
        z->has_rule = true;
        return true;
    }
    if ((p = skip_name(p)) == NULL) return false;
    z->dst_off = z->std_off + 3600;
    if (*p != ',' && *p != '\0') {
        if ((p = parse_hms(p, &off)) == NULL) return false;
        z->dst_off = -off;
    }
    if (*p++ != ',' || (p = parse_date(p, &z->start)) == NULL || *p++ != ',' || (p = parse_date(p, &z->end)) == NULL)
        return false;
    z->has_rule = z->has_dst = *p == '\0';
    return z->has_rule;
}

/* The day (since the epoch) of rule date r in year y. */
static int64_t rule_day(int64_t y, const rule_date *r)
{
    int64_t first = tz_days_from_civil(y, r->month, 1);
    int wd = tz_weekday(first) % 7; /* 0 = Sunday, as in POSIX */
    int64_t day = first + (r->wday - wd + 7) % 7 + 7 * (r->week - 1);
    int64_t last = first + tz_days_in_month(y, r->month) - 1;
    while (day > last) day -= 7; /* week 5 means the last such day */
    return day;
}

static int rule_offset(const tz_zone *z, int64_t t)
{
    if (!z->has_dst) return z->std_off;
    int64_t y;
    int m, d;
    tz_civil_from_days(floor_div(t + z->std_off, 86400), &y, &m, &d);
    /* The start is given in standard time, the end in daylight time. */
    int64_t start = rule_day(y, &z->start) * 86400 + z->start.time - z->std_off;
    int64_t end = rule_day(y, &z->end) * 86400 + z->end.time - z->dst_off;
    bool dst = start < end ? (t >= start && t < end) : (t >= start || t < end);
    return dst ? z->dst_off : z->std_off;
}

/* ---- TZif ---- */

static int64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    if (n == 4) return (int32_t)(uint32_t)v;
    return (int64_t)v;
}

void tz_free(tz_zone *z)
{
    if (z == NULL) return;
    free(z->times);
    free(z->idx);
    free(z);
}

tz_zone *tz_load(const char *dir, const char *name, todo_err *err)
{
    char path[600];
    unsigned char *buf = NULL;
    tz_zone *z = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = strstr(name, "..") == NULL ? fopen(path, "rb") : NULL;
    if (f == NULL) {
        todo_err_set(err, TODO_EINVAL, "unknown time zone \"%s\"", name);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    if (size < 44 || size > (1 << 20) || (buf = malloc((size_t)size + 1)) == NULL ||
        fread(buf, 1, (size_t)size, f) != (size_t)size)
        goto bad;
    buf[size] = '\0';
    if (memcmp(buf, "TZif", 4) != 0 || buf[4] < '2') goto bad; /* version 2+: 64-bit data */
    /* Skip the version-1 block to the 64-bit one. */
    const unsigned char *h = buf + 20;
    int64_t isut = be(h, 4), isstd = be(h + 4, 4), leap = be(h + 8, 4), timecnt = be(h + 12, 4),
            typecnt = be(h + 16, 4), charcnt = be(h + 20, 4);
    int64_t off = 44 + timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isut;
    if (off + 44 > size) goto bad;
    h = buf + off + 20;
    isut = be(h, 4), isstd = be(h + 4, 4), leap = be(h + 8, 4), timecnt = be(h + 12, 4), typecnt = be(h + 16, 4),
    charcnt = be(h + 20, 4);
    if (typecnt < 1 || typecnt > MAX_TYPES || timecnt < 0 || timecnt > 100000) goto bad;
    const unsigned char *p = buf + off + 44;
    int64_t need = timecnt * 9 + typecnt * 6 + charcnt + leap * 12 + isstd + isut;
    if (p + need > buf + size) goto bad;
    z = calloc(1, sizeof *z);
    if (z == NULL) goto bad;
    z->n = (int)timecnt;
    z->times = malloc(sizeof *z->times * (size_t)(timecnt + 1));
    z->idx = malloc((size_t)timecnt + 1);
    if (z->times == NULL || z->idx == NULL) goto bad;
    for (int i = 0; i < z->n; i++) z->times[i] = be(p + 8 * i, 8);
    p += 8 * timecnt;
    for (int i = 0; i < z->n; i++) {
        z->idx[i] = p[i];
        if (p[i] >= typecnt) goto bad;
    }
    p += timecnt;
    z->ntypes = (int)typecnt;
    for (int i = 0; i < z->ntypes; i++) z->offsets[i] = (int)be(p + 6 * i, 4);
    z->first_offset = z->offsets[0];
    p += 6 * typecnt + charcnt + leap * 12 + isstd + isut;
    /* The footer: "\n<TZ string>\n". */
    if (p < buf + size && *p == '\n') {
        char footer[128];
        const unsigned char *e = memchr(p + 1, '\n', (size_t)(buf + size - p - 1));
        size_t len = e != NULL ? (size_t)(e - p - 1) : 0;
        if (len > 0 && len < sizeof footer) {
            memcpy(footer, p + 1, len);
            footer[len] = '\0';
            parse_footer(z, footer);
        }
    }
    free(buf);
    fclose(f);
    return z;
bad:
    tz_free(z);
    free(buf);
    fclose(f);
    todo_err_set(err, TODO_EINVAL, "time zone \"%s\" is not a TZif file this program reads", name);
    return NULL;
}

int tz_offset(const tz_zone *z, int64_t t)
{
    if (z->n == 0) return z->has_rule ? rule_offset(z, t) : z->first_offset;
    if (t < z->times[0]) return z->first_offset;
    if (t >= z->times[z->n - 1] && z->has_rule) return rule_offset(z, t);
    int lo = 0, hi = z->n - 1; /* the last transition at or before t */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (z->times[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    return z->offsets[z->idx[lo]];
}

int64_t tz_to_utc(const tz_zone *z, int64_t local)
{
    /* The offsets in effect around that wall-clock time: at most two. */
    int before = tz_offset(z, local - 86400), after = tz_offset(z, local + 86400);
    int64_t t1 = local - before, t2 = local - after;
    bool ok1 = tz_offset(z, t1) == before, ok2 = tz_offset(z, t2) == after;
    if (ok1 && ok2) return t1 < t2 ? t1 : t2; /* repeated hour: the first */
    if (ok1) return t1;
    if (ok2) return t2;
    return t1; /* skipped hour: the offset before the gap lands after it */
}
