/*
 * metrics: Prometheus metrics of a process, served in the text exposition
 * format (version 0.0.4) on an HTTP port of its own (libmicrohttpd).
 *
 * A metric family is declared once (a name, a help text, its label names)
 * and is process-wide; its series (one per combination of label values) are
 * made on first use and live as long as the process. Updating a series is
 * lock-free (atomics); finding one by its label values takes no lock either
 * once it exists. Label values must come from a bounded set (a method, a
 * status code, a consumer group, a partition number): never a user or task
 * id. Names follow Prometheus' conventions: base units (`_seconds`,
 * `_bytes`), `_total` for counters.
 *
 * Every registry also exposes the process metrics Prometheus' client
 * libraries export (process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds,
 * process_start_time_seconds, read from /proc at scrape time) and
 * todo_build_info{service, version}.
 */
#ifndef TODO_METRICS_H
#define TODO_METRICS_H

#include <stddef.h>

#include "todo_err.h"

typedef struct metric metric;          /* a family */
typedef struct metric_series metric_series;

/* Families. labels: the label names separated by commas ("method,code"),
 * or NULL/"" for none. Declaring a name twice returns the first family
 * (the same type and labels are expected). NULL when the registry is full
 * (256 families): updates of a NULL family or series are ignored. */
metric *metric_counter(const char *name, const char *help, const char *labels);
metric *metric_gauge(const char *name, const char *help, const char *labels);
/* buckets: n upper bounds in increasing order (+Inf is added). */
metric *metric_histogram(const char *name, const char *help, const char *labels, const double *buckets, int n);

/* Buckets for call and batch durations in seconds: 0.5 ms .. 10 s. */
extern const double METRIC_LATENCY_BUCKETS[];
extern const int METRIC_N_LATENCY_BUCKETS;

/* The series of m for its label values (as many as it has labels, in
 * order); made on first use. A family has at most 2,000 series: past that,
 * NULL (and the update is lost, with one warning logged). */
metric_series *metric_with(metric *m, ...);
/* The series of a family without labels. */
metric_series *metric_only(metric *m);

void metric_add(metric_series *s, double v);    /* counters (v >= 0) and gauges */
void metric_set(metric_series *s, double v);    /* gauges */
void metric_observe(metric_series *s, double v); /* histograms */

/* Called at the start of every scrape (from the HTTP server's thread):
 * refreshes gauges that are read rather than updated (up to 16 hooks). */
void metrics_on_scrape(void (*fn)(void *ctx), void *ctx);

/* The service name and version todo_build_info reports. */
void metrics_set_build_info(const char *service, const char *version);

/* The exposition of every family, as a NUL-terminated malloc'd string
 * (*len its length), or NULL when out of memory. */
char *metrics_render(size_t *len);

/* The HTTP endpoint: GET /metrics on addr ("host:port"; port 0 picks a
 * free one). */
typedef struct metrics_server metrics_server;
metrics_server *metrics_serve(const char *addr, todo_err *err);
/* The port it listens on. */
int metrics_server_port(const metrics_server *s);
void metrics_server_stop(metrics_server *s);

/* What a process does at start: records service and this build's version
 * for todo_build_info, then serves addr unless it is "" (NULL then). A
 * port that cannot be bound is logged as an error and the process runs on
 * without its endpoint (NULL): metrics never stop a service. */
metrics_server *metrics_start(const char *service, const char *addr);

#endif
