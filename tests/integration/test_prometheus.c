/*
 * Integration test of the metrics with the real tools: Debian's prometheus
 * scrapes the four services of the test stack every second; every endpoint
 * passes `promtool check metrics`; after a known workload, PromQL through
 * Prometheus' HTTP API returns what the test expects (exactly N CreateTask
 * calls counted, the outbox published them, the projector's lag back to 0).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "todo/v1/command.pb-c.h"

static pid_t saga_pid, prometheus;
static char prom_addr[64], prom_dir[256];

static const char *const SERVICES[][2] = {
    {"todo-command", "TODO_COMMAND_METRICS_ADDR"},
    {"todo-query", "TODO_QUERY_METRICS_ADDR"},
    {"todo-projector", "TODO_PROJECTOR_METRICS_ADDR"},
    {"todo-saga", "TODO_SAGA_METRICS_ADDR"},
};

typedef struct body {
    char *p;
    size_t len;
} body;

static size_t collect(char *p, size_t size, size_t n, void *ctx)
{
    body *b = ctx;
    char *q = realloc(b->p, b->len + size * n + 1);
    if (q == NULL) return 0;
    memcpy(q + b->len, p, size * n);
    b->len += size * n;
    q[b->len] = '\0';
    b->p = q;
    return size * n;
}

/* GET url; the body (malloc'd) or NULL; *status the HTTP status. */
static char *http_get(const char *url, long *status)
{
    CURL *c = curl_easy_init();
    body b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    CURLcode rc = curl_easy_perform(c);
    *status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        free(b.p);
        return NULL;
    }
    return b.p != NULL ? b.p : strdup("");
}

/* The value of a PromQL query returning one sample (sum(...)), NAN when it
 * returned none. */
static double promql(const char *query)
{
    CURL *c = curl_easy_init();
    char *q = curl_easy_escape(c, query, 0), url[2048];
    snprintf(url, sizeof url, "http://%s/api/v1/query?query=%s", prom_addr, q);
    curl_free(q);
    curl_easy_cleanup(c);
    long status;
    char *text = http_get(url, &status);
    double v = NAN;
    json_t *j = text != NULL ? json_loads(text, 0, NULL) : NULL;
    json_t *result = json_object_get(json_object_get(j, "data"), "result");
    if (json_array_size(result) == 1) {
        const char *s = json_string_value(json_array_get(json_object_get(json_array_get(result, 0), "value"), 1));
        if (s != NULL) v = strtod(s, NULL);
    }
    json_decref(j);
    free(text);
    return v;
}

/* Polls query until it returns want (within 30 s: a few scrapes). */
static bool promql_reaches(const char *query, double want)
{
    long long until = harness_now_ms() + 30000;
    double v = NAN;
    while (harness_now_ms() < until) {
        v = promql(query);
        if (v == want) return true;
        harness_sleep_ms(250);
    }
    fprintf(stderr, "%s: %g, expected %g\n", query, v, want);
    return false;
}

static int setup(void **state)
{
    int rc = harness_group_setup(state);
    if (rc != 0 || !harness_stack_available()) return rc;
    saga_pid = harness_spawn("saga/todo-saga", "metrics-saga", (const char *const[]){"TODO_SAGA_INSTANCE=metrics", NULL});
    /* Prometheus, scraping the four every second, data in a fresh directory. */
    snprintf(prom_dir, sizeof prom_dir, "%s/prometheus-test", getenv("TODO_STACK_DIR"));
    char cmd[1024], path[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s/data'", prom_dir, prom_dir);
    if (system(cmd) != 0) return -1;
    snprintf(path, sizeof path, "%s/prometheus.yml", prom_dir);
    FILE *f = fopen(path, "w");
    if (f == NULL) return -1;
    fprintf(f, "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n");
    for (size_t i = 0; i < sizeof SERVICES / sizeof SERVICES[0]; i++)
        fprintf(f, "  - job_name: %s\n    static_configs:\n      - targets: ['%s']\n", SERVICES[i][0],
                getenv(SERVICES[i][1]));
    fclose(f);
    snprintf(prom_addr, sizeof prom_addr, "127.0.0.1:%d", harness_free_port());
    char a1[600], a2[600], a3[128];
    snprintf(a1, sizeof a1, "--config.file=%s", path);
    snprintf(a2, sizeof a2, "--storage.tsdb.path=%s/data", prom_dir);
    snprintf(a3, sizeof a3, "--web.listen-address=%s", prom_addr);
    prometheus = fork();
    if (prometheus == 0) {
        snprintf(path, sizeof path, "%s/prometheus.log", prom_dir);
        FILE *log = freopen(path, "w", stderr);
        (void)log;
        execlp("prometheus", "prometheus", a1, a2, a3, "--log.level=warn", (char *)NULL);
        _exit(127);
    }
    char url[128];
    snprintf(url, sizeof url, "http://%s/-/ready", prom_addr);
    long long until = harness_now_ms() + 30000;
    long status = 0;
    while (harness_now_ms() < until) {
        char *b = http_get(url, &status);
        free(b);
        if (status == 200) break;
        harness_sleep_ms(200);
    }
    if (status != 200) {
        fprintf(stderr, "prometheus did not get ready; see %s/prometheus.log\n", prom_dir);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    int bad = 0;
    if (prometheus > 0) harness_stop(prometheus, SIGTERM, 20000);
    if (saga_pid > 0 && harness_stop(saga_pid, SIGTERM, 20000) != 0) bad = 1;
    return harness_group_teardown(state) | bad;
}

static void every_endpoint_passes_promtool(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    for (size_t i = 0; i < sizeof SERVICES / sizeof SERVICES[0]; i++) {
        char url[256], path[512], cmd[1024];
        snprintf(url, sizeof url, "http://%s/metrics", getenv(SERVICES[i][1]));
        long status;
        char *text = NULL;
        long long until = harness_now_ms() + 20000; /* todo-saga may still be starting */
        while ((text = http_get(url, &status)) == NULL && harness_now_ms() < until) harness_sleep_ms(200);
        if (text == NULL) fail_msg("%s: no answer at %s", SERVICES[i][0], url);
        assert_int_equal(status, 200);
        char want[128];
        snprintf(want, sizeof want, "todo_build_info{service=\"%s\",", SERVICES[i][0]);
        assert_non_null(strstr(text, want));
        assert_non_null(strstr(text, "process_resident_memory_bytes "));
        snprintf(path, sizeof path, "%s/%s.metrics", prom_dir, SERVICES[i][0]);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
        free(text);
        snprintf(cmd, sizeof cmd, "promtool check metrics < '%s'", path);
        if (system(cmd) != 0) fail_msg("promtool check metrics refused %s's metrics (%s)", SERVICES[i][0], path);
    }
}

static void prometheus_counts_exactly_the_calls_made(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    const char *ok = "sum(grpc_server_handled_total{grpc_method=\"CreateTask\",grpc_code=\"OK\"}) or vector(0)";
    const char *refused = "sum(grpc_server_handled_total{grpc_method=\"CreateTask\",grpc_code=\"INVALID_ARGUMENT\"})"
                          " or vector(0)";
    /* Settle: the counters as they are after the group's start. */
    assert_true(promql_reaches("up{job=\"todo-command\"}", 1));
    assert_true(promql_reaches("up{job=\"todo-saga\"}", 1));
    double ok0 = promql(ok), refused0 = promql(refused);
    double published0 = promql("sum(todo_outbox_published_total{outbox=\"write.events\"}) or vector(0)");
    const char *relayed = "sum(todo_outbox_publish_delay_seconds_count{outbox=\"write.events\"}) or vector(0)";
    const char *projected = "sum(todo_projection_event_delay_seconds_count{group=\"projection-task-read-v1\"})"
                            " or vector(0)";
    double relayed0 = promql(relayed), projected0 = promql(projected);
    char user[64];
    harness_user(user, "metrics");
    char *auth = harness_bearer(user, 600, NULL);
    for (int i = 0; i < 7; i++) {
        Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
        char title[32];
        snprintf(title, sizeof title, "counted %d", i);
        rq.title = title;
        grpcx_result res;
        assert_int_equal(harness_command("CreateTask", &rq.base, auth, NULL, &res), GRPC_STATUS_OK);
    }
    Todo__V1__CreateTaskRequest bad = TODO__V1__CREATE_TASK_REQUEST__INIT; /* no title */
    grpcx_result res;
    assert_int_equal(harness_command("CreateTask", &bad.base, auth, NULL, &res), GRPC_STATUS_INVALID_ARGUMENT);

    assert_true(promql_reaches(ok, ok0 + 7));
    assert_true(promql_reaches(refused, refused0 + 1));
    char q[256];
    snprintf(q, sizeof q, "sum(todo_outbox_published_total{outbox=\"write.events\"}) - %.0f >= bool 7", published0);
    assert_true(promql_reaches(q, 1));
    assert_true(promql_reaches("sum(todo_outbox_active{outbox=\"write.events\"})", 1)); /* exactly one relay */
    assert_true(promql_reaches("sum(todo_outbox_active{outbox=\"saga.outbox\"})", 1));
    /* The projector applied them: its lag back to 0 on every partition. */
    assert_true(promql_reaches("max(todo_consumer_lag_records{group=\"projection-task-read-v1\"})", 0));
    assert_true(promql_reaches("sum(todo_consumer_records_total{group=\"projection-task-read-v1\","
                               "outcome=\"handled\"}) >= bool 7", 1));
    /* Each event's way to Kafka and to the read model was timed. */
    snprintf(q, sizeof q, "(%s) - %.0f >= bool 7", relayed, relayed0);
    assert_true(promql_reaches(q, 1));
    snprintf(q, sizeof q, "(%s) - %.0f >= bool 7", projected, projected0);
    assert_true(promql_reaches(q, 1));
    /* The latency histogram counted every CreateTask call. */
    snprintf(q, sizeof q, "sum(grpc_server_handling_seconds_count{grpc_method=\"CreateTask\"})");
    double calls = promql(q);
    assert_true(calls >= ok0 + refused0 + 8);
    free(auth);
}

static bool saga_completed(const char *saga, int timeout_ms)
{
    long long until = harness_now_ms() + timeout_ms;
    while (harness_now_ms() < until) {
        if (harness_scalar(harness_db, "select count(*) from saga.sagas where id = $1::uuid and state = 'COMPLETED'",
                           saga) == 1)
            return true;
        harness_sleep_ms(100);
    }
    return false;
}

static void sagas_reminders_and_notifications_are_counted(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "metricsaga");
    char *auth = harness_bearer(user, 600, NULL);
    /* The saga consumer of a new group starts at the end of the topic once
     * Kafka assigned it its partitions: complete tasks until one starts a
     * saga. */
    bool warm = false;
    for (int i = 0; i < 10 && !warm; i++) {
        char *t = harness_create(auth, "warm-up"), *saga = harness_complete(auth, t);
        warm = saga_completed(saga, 5000);
        free(t);
        free(saga);
    }
    assert_true(warm);
    double completed0 = promql("sum(todo_saga_transitions_total{transition=\"completed\"}) or vector(0)");
    double sent0 = promql("sum(todo_notifications_total{outcome=\"sent\"}) or vector(0)");
    double fired0 = promql("sum(todo_reminders_fired_total) or vector(0)");
    double delays0 = promql("sum(todo_reminder_firing_delay_seconds_count) or vector(0)");
    const char *steps_ok = "sum(todo_saga_step_seconds_count{saga_type=\"task_completion\",kind=\"action\","
                           "outcome=\"ok\"}) or vector(0)";
    double steps0 = promql(steps_ok);

    char *t = harness_create(auth, "counted saga"), *saga = harness_complete(auth, t);
    assert_true(saga_completed(saga, 30000));
    char q[256];
    snprintf(q, sizeof q, "sum(todo_saga_transitions_total{transition=\"completed\"}) - %.0f >= bool 1", completed0);
    assert_true(promql_reaches(q, 1));
    snprintf(q, sizeof q, "sum(todo_notifications_total{outcome=\"sent\"}) - %.0f >= bool 1", sent0);
    assert_true(promql_reaches(q, 1));
    assert_true(promql_reaches("count(todo_sagas{state=\"FAILED\"})", 1)); /* the gauge is there */
    /* Each of the completion's 4 steps timed once (no step failed here). */
    snprintf(q, sizeof q, "(%s) - %.0f >= bool 4", steps_ok, steps0);
    assert_true(promql_reaches(q, 1));
    assert_true(promql_reaches("count(todo_reminders_due)", 1));
    /* The consumers' own statistics (librdkafka's, every 5 s): every group
     * joined once at least, and its fetch queue is reported. */
    assert_true(promql_reaches("min(todo_consumer_rebalances_total) >= bool 1", 1));
    assert_true(promql_reaches("count(todo_consumer_fetch_queue_messages) >= bool 2", 1));

    /* A reminder due in a second fires, and its delay is observed. */
    char *r = harness_create(auth, "remind me");
    Todo__V1__ScheduleReminderRequest rq = TODO__V1__SCHEDULE_REMINDER_REQUEST__INIT;
    Google__Protobuf__Timestamp at = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    grpcx_result res;
    at.seconds = (int64_t)time(NULL) + 2; /* at least a second ahead (time() is rounded down) */
    rq.task_id = r;
    rq.remind_at = &at;
    rq.channel = TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_PUSH;
    assert_int_equal(harness_command("ScheduleReminder", &rq.base, auth, NULL, &res), GRPC_STATUS_OK);
    snprintf(q, sizeof q, "sum(todo_reminders_fired_total) - %.0f >= bool 1", fired0);
    assert_true(promql_reaches(q, 1));
    snprintf(q, sizeof q, "sum(todo_reminder_firing_delay_seconds_count) - %.0f >= bool 1", delays0);
    assert_true(promql_reaches(q, 1));
    free(r);
    free(t);
    free(saga);
    free(auth);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_endpoint_passes_promtool),
        cmocka_unit_test(prometheus_counts_exactly_the_calls_made),
        cmocka_unit_test(sagas_reminders_and_notifications_are_counted),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
