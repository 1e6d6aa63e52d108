/* metrics: see metrics.h. */
#include "metrics.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define MAX_FAMILIES 256
#define MAX_LABELS 4
#define MAX_BUCKETS 32
#define MAX_SERIES 2000
#define HASH 64
#define MAX_HOOKS 16

const double METRIC_LATENCY_BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const int METRIC_N_LATENCY_BUCKETS = sizeof METRIC_LATENCY_BUCKETS / sizeof METRIC_LATENCY_BUCKETS[0];

typedef enum { COUNTER, GAUGE, HISTOGRAM } kind;

struct metric_series {
    metric_series *next;               /* in its hash bucket; set before it is published */
    metric_series *next_all;           /* in the family's creation order (rendering) */
    const struct metric *family;
    char *key;                         /* the label values joined by \x1f */
    char *split;                       /* the same, split: what values point into */
    const char *values[MAX_LABELS];
    _Atomic uint64_t value;            /* a double's bits: counters, gauges, a histogram's sum */
    _Atomic uint64_t count;            /* histograms */
    _Atomic uint64_t buckets[MAX_BUCKETS + 1];
};

struct metric {
    char name[128];
    char help[256];
    kind kind;
    int n_labels;
    char labels[MAX_LABELS][48];
    double bounds[MAX_BUCKETS];
    int n_bounds;
    _Atomic(metric_series *) heads[HASH];
    _Atomic(metric_series *) all;      /* newest first */
    atomic_int n_series;
    atomic_bool overflow_logged;
};

static metric families[MAX_FAMILIES];
static atomic_int n_families;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;  /* declarations and new series */
static struct {
    void (*fn)(void *ctx);
    void *ctx;
} hooks[MAX_HOOKS];
static int n_hooks;
static char build_service[64] = "todo", build_version[32] = "unknown";

static uint64_t bits_of(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double double_of(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* TODO_METRICS=off: nothing is declared, so nothing is counted (the
 * benchmark's baseline for what the metrics cost). */
static bool metrics_off(void)
{
    static atomic_int off = -1; /* every thread computes the same value */
    if (atomic_load(&off) < 0) {
        const char *v = getenv("TODO_METRICS");
        atomic_store(&off, v != NULL && strcmp(v, "off") == 0);
    }
    return atomic_load(&off) == 1;
}

static metric *declare(kind k, const char *name, const char *help, const char *labels, const double *bounds, int n)
{
    if (metrics_off()) return NULL;
    pthread_mutex_lock(&lock);
    int count = atomic_load(&n_families);
    for (int i = 0; i < count; i++)
        if (strcmp(families[i].name, name) == 0) {
            pthread_mutex_unlock(&lock);
            return &families[i];
        }
    if (count == MAX_FAMILIES || n > MAX_BUCKETS) {
        pthread_mutex_unlock(&lock);
        log_error("metrics", "metric not declared: registry full or too many buckets", "name=%s", name);
        return NULL;
    }
    metric *m = &families[count];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->help, sizeof m->help, "%s", help);
    m->kind = k;
    for (const char *p = labels; p != NULL && *p != '\0' && m->n_labels < MAX_LABELS;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        snprintf(m->labels[m->n_labels++], sizeof m->labels[0], "%.*s", (int)len, p);
        p = comma != NULL ? comma + 1 : NULL;
    }
    for (int i = 0; i < n; i++) m->bounds[i] = bounds[i];
    m->n_bounds = n;
    atomic_store(&n_families, count + 1); /* published once complete */
    pthread_mutex_unlock(&lock);
    return m;
}

metric *metric_counter(const char *name, const char *help, const char *labels)
{
    return declare(COUNTER, name, help, labels, NULL, 0);
}

metric *metric_gauge(const char *name, const char *help, const char *labels)
{
    return declare(GAUGE, name, help, labels, NULL, 0);
}

metric *metric_histogram(const char *name, const char *help, const char *labels, const double *buckets, int n)
{
    return declare(HISTOGRAM, name, help, labels, buckets, n);
}

static unsigned hash_of(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s != '\0'; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h % HASH;
}

static metric_series *find(metric *m, const char *key, unsigned h)
{
    for (metric_series *s = atomic_load_explicit(&m->heads[h], memory_order_acquire); s != NULL; s = s->next)
        if (strcmp(s->key, key) == 0) return s;
    return NULL;
}

static metric_series *series_of(metric *m, const char *const *values)
{
    char key[512];
    size_t off = 0;
    for (int i = 0; i < m->n_labels; i++) {
        const char *v = values[i] != NULL ? values[i] : "";
        int w = snprintf(key + off, sizeof key - off, "%s%s", i ? "\x1f" : "", v);
        if (w < 0 || (size_t)w >= sizeof key - off) return NULL; /* label values that long are a bug */
        off += (size_t)w;
    }
    key[off] = '\0';
    unsigned h = hash_of(key);
    metric_series *s = find(m, key, h);
    if (s != NULL) return s;
    pthread_mutex_lock(&lock);
    if ((s = find(m, key, h)) == NULL) {
        if (atomic_load(&m->n_series) >= MAX_SERIES) {
            pthread_mutex_unlock(&lock);
            if (!atomic_exchange(&m->overflow_logged, true))
                log_error("metrics", "too many series; new label values are not counted", "name=%s max=%d", m->name,
                          MAX_SERIES);
            return NULL;
        }
        s = calloc(1, sizeof *s);
        char *copy = s != NULL ? strdup(key) : NULL;  /* split into the values */
        s->key = copy != NULL ? strdup(key) : NULL;
        if (s == NULL || s->key == NULL) {
            if (s != NULL) free(copy);
            free(s);
            pthread_mutex_unlock(&lock);
            return NULL;
        }
        s->family = m;
        s->split = copy;
        for (int i = 0; i < m->n_labels; i++) {
            s->values[i] = copy;
            char *sep = strchr(copy, '\x1f');
            if (sep != NULL) {
                *sep = '\0';
                copy = sep + 1;
            }
        }
        s->next = atomic_load(&m->heads[h]);
        s->next_all = atomic_load(&m->all);
        atomic_store_explicit(&m->heads[h], s, memory_order_release);
        atomic_store_explicit(&m->all, s, memory_order_release);
        atomic_fetch_add(&m->n_series, 1);
    }
    pthread_mutex_unlock(&lock);
    return s;
}

metric_series *metric_with(metric *m, ...)
{
    if (m == NULL) return NULL;
    const char *values[MAX_LABELS] = {0};
    va_list ap;
    va_start(ap, m);
    for (int i = 0; i < m->n_labels; i++) values[i] = va_arg(ap, const char *);
    va_end(ap);
    return series_of(m, values);
}

metric_series *metric_only(metric *m)
{
    return m != NULL ? series_of(m, (const char *const[MAX_LABELS]){0}) : NULL;
}

static void add_double(_Atomic uint64_t *cell, double v)
{
    uint64_t old = atomic_load_explicit(cell, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(cell, &old, bits_of(double_of(old) + v), memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
}

void metric_add(metric_series *s, double v)
{
    if (s != NULL) add_double(&s->value, v);
}

void metric_set(metric_series *s, double v)
{
    if (s != NULL) atomic_store_explicit(&s->value, bits_of(v), memory_order_relaxed);
}

void metric_observe(metric_series *s, double v)
{
    if (s == NULL) return;
    const metric *m = s->family;
    int i = 0;
    while (i < m->n_bounds && v > m->bounds[i]) i++;
    atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
    add_double(&s->value, v);
}

void metrics_on_scrape(void (*fn)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&lock);
    if (n_hooks < MAX_HOOKS) {
        hooks[n_hooks].fn = fn;
        hooks[n_hooks++].ctx = ctx;
    }
    pthread_mutex_unlock(&lock);
}

void metrics_set_build_info(const char *service, const char *version)
{
    pthread_mutex_lock(&lock);
    snprintf(build_service, sizeof build_service, "%s", service);
    snprintf(build_version, sizeof build_version, "%s", version);
    pthread_mutex_unlock(&lock);
}

/* ---- rendering ---- */

typedef struct buf {
    char *p;
    size_t len, cap;
    bool failed;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...)
{
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void put_number(buf *b, double v)
{
    if (isnan(v)) put(b, "NaN");
    else if (isinf(v)) put(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15) put(b, "%.0f", v);
    else put(b, "%.17g", v);
}

/* A help text or label value, escaped the exposition format's way. */
static void put_escaped(buf *b, const char *s, bool quote)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\') put(b, "\\\\");
        else if (*s == '\n') put(b, "\\n");
        else if (*s == '"' && quote) put(b, "\\\"");
        else put(b, "%c", *s);
    }
}

static void put_labels(buf *b, const metric *m, const metric_series *s, const char *le)
{
    if (m->n_labels == 0 && le == NULL) return;
    put(b, "{");
    for (int i = 0; i < m->n_labels; i++) {
        put(b, "%s%s=\"", i ? "," : "", m->labels[i]);
        put_escaped(b, s->values[i], true);
        put(b, "\"");
    }
    if (le != NULL) put(b, "%sle=\"%s\"", m->n_labels ? "," : "", le);
    put(b, "}");
}

static void render_family(buf *b, const metric *m)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    put(b, "# HELP %s ", m->name);
    put_escaped(b, m->help, false);
    put(b, "\n# TYPE %s %s\n", m->name, types[m->kind]);
    /* Oldest first: the list is newest first, so collect and walk back. */
    metric_series *stack[MAX_SERIES];
    int n = 0;
    for (metric_series *s = atomic_load_explicit(&((metric *)m)->all, memory_order_acquire); s != NULL && n < MAX_SERIES;
         s = s->next_all)
        stack[n++] = s;
    while (n-- > 0) {
        metric_series *s = stack[n];
        if (m->kind != HISTOGRAM) {
            put(b, "%s", m->name);
            put_labels(b, m, s, NULL);
            put(b, " ");
            put_number(b, double_of(atomic_load(&s->value)));
            put(b, "\n");
            continue;
        }
        uint64_t cumulative = 0;
        for (int i = 0; i <= m->n_bounds; i++) {
            char le[32];
            if (i < m->n_bounds) snprintf(le, sizeof le, "%g", m->bounds[i]);
            else snprintf(le, sizeof le, "+Inf");
            cumulative += atomic_load(&s->buckets[i]);
            put(b, "%s_bucket", m->name);
            put_labels(b, m, s, le);
            put(b, " %llu\n", (unsigned long long)cumulative);
        }
        put(b, "%s_sum", m->name);
        put_labels(b, m, s, NULL);
        put(b, " ");
        put_number(b, double_of(atomic_load(&s->value)));
        put(b, "\n%s_count", m->name);
        put_labels(b, m, s, NULL);
        put(b, " %llu\n", (unsigned long long)cumulative);
    }
}

/* The process metrics, from /proc. */
static void render_process(buf *b)
{
    long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/stat", "r");
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
    long long rss = 0;
    if (f != NULL) {
        char line[2048];
        if (fgets(line, sizeof line, f) != NULL) {
            const char *p = strrchr(line, ')'); /* the command may hold spaces */
            if (p != NULL &&
                sscanf(p + 2,
                       "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu %llu %lld",
                       &utime, &stime, &start, &vsize, &rss) != 5)
                utime = stime = start = vsize = 0, rss = 0;
        }
        fclose(f);
    }
    double boot = 0;
    if ((f = fopen("/proc/stat", "r")) != NULL) {
        char line[256];
        while (fgets(line, sizeof line, f) != NULL)
            if (strncmp(line, "btime ", 6) == 0) boot = strtod(line + 6, NULL);
        fclose(f);
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.') fds++;
        closedir(d);
        fds--; /* the directory itself */
    }
    struct rlimit rl = {0};
    getrlimit(RLIMIT_NOFILE, &rl);
    put(b, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
           "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ");
    put_number(b, ticks > 0 ? (double)(utime + stime) / (double)ticks : 0);
    put(b, "\n# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
           "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %lld\n",
        rss * (long long)page);
    put(b, "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
           "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n",
        vsize);
    put(b, "# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\n"
           "process_open_fds %d\n",
        fds);
    put(b, "# HELP process_max_fds Maximum number of open file descriptors.\n# TYPE process_max_fds gauge\n"
           "process_max_fds ");
    put_number(b, rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur);
    put(b, "\n# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
           "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds ");
    put_number(b, ticks > 0 ? boot + (double)start / (double)ticks : 0);
    put(b, "\n");
}

char *metrics_render(size_t *len)
{
    pthread_mutex_lock(&lock);
    int nh = n_hooks;
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < nh; i++) hooks[i].fn(hooks[i].ctx);

    buf b = {.p = malloc(8192), .cap = 8192};
    if (b.p == NULL) return NULL;
    b.p[0] = '\0';
    int count = atomic_load(&n_families);
    for (int i = 0; i < count; i++) render_family(&b, &families[i]);
    render_process(&b);
    pthread_mutex_lock(&lock);
    put(&b, "# HELP todo_build_info The service and its version; always 1.\n# TYPE todo_build_info gauge\n"
            "todo_build_info{service=\"");
    put_escaped(&b, build_service, true);
    put(&b, "\",version=\"");
    put_escaped(&b, build_version, true);
    put(&b, "\"} 1\n");
    pthread_mutex_unlock(&lock);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    if (len != NULL) *len = b.len;
    return b.p;
}

/* ---- the HTTP endpoint ---- */

struct metrics_server {
    struct MHD_Daemon *d;
    int port;
};

static enum MHD_Result answer(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_len, void **state)
{
    (void)cls;
    (void)version;
    (void)upload;
    (void)upload_len;
    (void)state;
    struct MHD_Response *r;
    unsigned code = MHD_HTTP_OK;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char msg[] = "only GET\n";
        r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        code = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strcmp(url, "/metrics") != 0) {
        static const char msg[] = "not found: the metrics are at /metrics\n";
        r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        code = MHD_HTTP_NOT_FOUND;
    } else {
        size_t len = 0;
        char *text = metrics_render(&len);
        if (text == NULL) return MHD_NO;
        r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
        MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    }
    if (r == NULL) return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

metrics_server *metrics_serve(const char *addr, todo_err *err)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || (size_t)(colon - addr) >= sizeof host) {
        todo_err_set(err, TODO_EINVAL, "metrics address %s: expected host:port", addr);
        return NULL;
    }
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535) {
        todo_err_set(err, TODO_EINVAL, "metrics address %s: bad port", addr);
        return NULL;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, &sa.sin_addr) != 1) {
        todo_err_set(err, TODO_EINVAL, "metrics address %s: host must be an IPv4 address", addr);
        return NULL;
    }
    metrics_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        return NULL;
    }
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL, answer, NULL,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, 64u,
                            MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (s->d == NULL) {
        free(s);
        todo_err_set(err, TODO_EUNAVAIL, "metrics: cannot listen on %s", addr);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info != NULL ? info->port : (int)port;
    return s;
}

int metrics_server_port(const metrics_server *s)
{
    return s->port;
}

void metrics_server_stop(metrics_server *s)
{
    if (s == NULL) return;
    MHD_stop_daemon(s->d);
    free(s);
}

metrics_server *metrics_start(const char *service, const char *addr)
{
    todo_err err;
    metrics_set_build_info(service, TODO_VERSION);
    if (addr == NULL || addr[0] == '\0' || metrics_off()) return NULL;
    metrics_server *s = metrics_serve(addr, &err);
    if (s == NULL) log_error("metrics", "no metrics endpoint; the service runs without it", "addr=%s error=\"%s\"", addr,
                             err.msg);
    else log_info("metrics", "serving /metrics", "addr=%s port=%d", addr, s->port);
    return s;
}
