/*
 * Unit tests of metrics: the exposition format (types, labels and their
 * escaping, cumulative histogram buckets, process metrics), exact counts
 * under concurrent updates, the series cap, and the HTTP endpoint; the
 * rendered text passes `promtool check metrics` (Debian's prometheus
 * package, installed by scripts/install-deps.sh).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

static void families_render_with_their_type_labels_and_values(void **state)
{
    (void)state;
    metric *c = metric_counter("test_requests_total", "Requests handled.", "method,code");
    metric_add(metric_with(c, "GetTask", "OK"), 3);
    metric_add(metric_with(c, "GetTask", "OK"), 1);
    metric_add(metric_with(c, "CreateTask", "INVALID_ARGUMENT"), 1);
    metric *g = metric_gauge("test_backlog_rows", "Rows waiting.\nSecond line with a \\ backslash.", NULL);
    metric_set(metric_only(g), 42);
    metric_set(metric_only(g), 7.5);
    metric *odd = metric_gauge("test_odd_labels", "Label values escaped.", "v");
    metric_set(metric_with(odd, "a\"quote\\ and\nnewline"), 1);
    assert_ptr_equal(metric_counter("test_requests_total", "again", "method,code"), c); /* declared once */

    size_t len = 0;
    char *text = metrics_render(&len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    assert_non_null(strstr(text, "# HELP test_requests_total Requests handled.\n# TYPE test_requests_total counter\n"));
    assert_non_null(strstr(text, "test_requests_total{method=\"GetTask\",code=\"OK\"} 4\n"));
    assert_non_null(strstr(text, "test_requests_total{method=\"CreateTask\",code=\"INVALID_ARGUMENT\"} 1\n"));
    assert_non_null(strstr(text, "# HELP test_backlog_rows Rows waiting.\\nSecond line with a \\\\ backslash.\n"));
    assert_non_null(strstr(text, "# TYPE test_backlog_rows gauge\ntest_backlog_rows 7.5\n"));
    assert_non_null(strstr(text, "test_odd_labels{v=\"a\\\"quote\\\\ and\\nnewline\"} 1\n"));
    assert_non_null(strstr(text, "# TYPE process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(text, "process_resident_memory_bytes "));
    assert_non_null(strstr(text, "process_open_fds "));
    assert_non_null(strstr(text, "todo_build_info{service=\"todo\",version=\"unknown\"} 1\n"));
    free(text);
}

static void histograms_are_cumulative_with_sum_and_count(void **state)
{
    (void)state;
    const double b[] = {0.01, 0.1, 1};
    metric *h = metric_histogram("test_call_seconds", "Call latency.", "method", b, 3);
    metric_series *s = metric_with(h, "GetTask");
    metric_observe(s, 0.005);
    metric_observe(s, 0.01);  /* on a bound: counted in it (le) */
    metric_observe(s, 0.5);
    metric_observe(s, 3);
    char *text = metrics_render(NULL);
    assert_non_null(strstr(text, "# TYPE test_call_seconds histogram\n"
                                 "test_call_seconds_bucket{method=\"GetTask\",le=\"0.01\"} 2\n"
                                 "test_call_seconds_bucket{method=\"GetTask\",le=\"0.1\"} 2\n"
                                 "test_call_seconds_bucket{method=\"GetTask\",le=\"1\"} 3\n"
                                 "test_call_seconds_bucket{method=\"GetTask\",le=\"+Inf\"} 4\n"
                                 "test_call_seconds_sum{method=\"GetTask\"} 3.5150000000000001\n"
                                 "test_call_seconds_count{method=\"GetTask\"} 4\n"));
    free(text);
}

static metric *contended;

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100000; i++) {
        metric_add(metric_with(contended, i % 2 ? "odd" : "even"), 1);
        metric_add(metric_with(contended, "all"), 0.5);
    }
    return NULL;
}

static void concurrent_updates_are_all_counted(void **state)
{
    (void)state;
    contended = metric_counter("test_contended_total", "Updated from four threads.", "which");
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, hammer, NULL);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    char *text = metrics_render(NULL);
    assert_non_null(strstr(text, "test_contended_total{which=\"even\"} 200000\n"));
    assert_non_null(strstr(text, "test_contended_total{which=\"odd\"} 200000\n"));
    assert_non_null(strstr(text, "test_contended_total{which=\"all\"} 200000\n"));
    free(text);
}

static void unbounded_label_values_are_capped(void **state)
{
    (void)state;
    metric *m = metric_counter("test_capped_total", "Too many series.", "id");
    char id[32];
    int made = 0;
    for (int i = 0; i < 2100; i++) {
        snprintf(id, sizeof id, "id-%d", i);
        metric_series *s = metric_with(m, id);
        made += s != NULL;
        metric_add(s, 1); /* NULL: ignored */
    }
    assert_int_equal(made, 2000);
    metric_add(metric_with(NULL, "x"), 1); /* a family that could not be declared */
}

/* GET path on the server at port; the status line and body into out. */
static int http_get(int port, const char *path, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fd, out + got, cap - 1 - got)) > 0) got += (size_t)r;
    out[got] = '\0';
    close(fd);
    return (int)got;
}

static void the_endpoint_serves_metrics_and_only_them(void **state)
{
    (void)state;
    todo_err err;
    metrics_set_build_info("test-service", "1.2.3");
    metrics_server *s = metrics_serve("127.0.0.1:0", &err);
    assert_non_null(s);
    int port = metrics_server_port(s);
    assert_true(port > 0);
    static char out[1 << 20];
    assert_true(http_get(port, "/metrics", out, sizeof out) > 0);
    assert_non_null(strstr(out, "HTTP/1.0 200") != NULL ? out : strstr(out, "HTTP/1.1 200"));
    assert_non_null(strstr(out, "Content-Type: text/plain; version=0.0.4"));
    assert_non_null(strstr(out, "todo_build_info{service=\"test-service\",version=\"1.2.3\"} 1\n"));
    assert_true(http_get(port, "/", out, sizeof out) > 0);
    assert_non_null(strstr(out, " 404 "));
    metrics_server_stop(s);
    assert_null(metrics_serve("127.0.0.1:99999", &err));
    assert_null(metrics_serve("nonsense", &err));
}

static void the_exposition_passes_promtool(void **state)
{
    (void)state;
    if (system("command -v promtool >/dev/null 2>&1") != 0) fail_msg("promtool not installed (scripts/install-deps.sh)");
    char *text = metrics_render(NULL);
    char path[] = "/tmp/test_metrics_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    free(text);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    int rc = system(cmd);
    unlink(path);
    assert_int_equal(rc, 0);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(families_render_with_their_type_labels_and_values),
        cmocka_unit_test(histograms_are_cumulative_with_sum_and_count),
        cmocka_unit_test(concurrent_updates_are_all_counted),
        cmocka_unit_test(unbounded_label_values_are_capped),
        cmocka_unit_test(the_endpoint_serves_metrics_and_only_them),
        cmocka_unit_test(the_exposition_passes_promtool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
