/* harness: see harness.h. */
#include "harness.h"
#include "kafkax.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "grpc/health/v1/health.pb-c.h"
#include "text.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/events.pb-c.h"

extern char **environ;

bool harness_stack_available(void) { return getenv("TODO_STACK") != NULL; }

int harness_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

long long harness_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void harness_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

void harness_log_reset(const char *log)
{
    char logpath[1024];
    snprintf(logpath, sizeof logpath, "%s/../tests/logs/%s.log", TODO_BIN_DIR, log);
    unlink(logpath);
}

bool harness_log_contains(const char *log, const char *needle)
{
    char logpath[1024], line[4096];
    snprintf(logpath, sizeof logpath, "%s/../tests/logs/%s.log", TODO_BIN_DIR, log);
    FILE *f = fopen(logpath, "r");
    bool found = false;
    while (f != NULL && !found && fgets(line, sizeof line, f) != NULL) found = strstr(line, needle) != NULL;
    if (f != NULL) fclose(f);
    return found;
}

pid_t harness_spawn(const char *rel, const char *log, const char *const *extra)
{
    char path[1024], logpath[1024];
    snprintf(path, sizeof path, "%s/%s", TODO_BIN_DIR, rel);
    snprintf(logpath, sizeof logpath, "%s/../tests/logs", TODO_BIN_DIR);
    mkdir(logpath, 0755);
    snprintf(logpath, sizeof logpath, "%s/../tests/logs/%s.log", TODO_BIN_DIR, log);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* Dies with the test: a test that fails half-way (cmocka goes on
         * with the next one) leaves no service of its own running past the
         * binary's end, consuming from the stack the next tests use. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        for (const char *const *e = extra; e != NULL && *e != NULL; e++) putenv((char *)*e);
        execl(path, path, (char *)NULL);
        fprintf(stderr, "cannot run %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    return pid;
}

int harness_stop(pid_t pid, int sig, int timeout_ms)
{
    int status;
    kill(pid, sig);
    long long until = harness_now_ms() + timeout_ms;
    while (harness_now_ms() < until) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        harness_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

grpcx_channel *harness_channel(const char *addr)
{
    grpcx_tls_client tls = {getenv("TODO_GRPC_TLS_CA"), getenv("TODO_GRPC_TLS_CLIENT_CERT"),
                            getenv("TODO_GRPC_TLS_CLIENT_KEY"), getenv("TODO_GRPC_TLS_SERVER_NAME")};
    todo_err err;
    grpcx_channel *ch = grpcx_channel_open(addr, &tls, &err);
    if (ch == NULL) {
        fprintf(stderr, "harness: %s\n", err.msg);
        abort();
    }
    return ch;
}

bool harness_wait_serving(const char *addr, int timeout_ms)
{
    grpcx_channel *ch = harness_channel(addr);
    long long until = harness_now_ms() + timeout_ms;
    bool ok = false;
    while (!ok && harness_now_ms() < until) {
        Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        Grpc__Health__V1__HealthCheckResponse *rs = NULL;
        grpcx_result res;
        if (grpcx_unary(ch, "/grpc.health.v1.Health/Check", &rq.base, &grpc__health__v1__health_check_response__descriptor,
                        NULL, 1000, (ProtobufCMessage **)&rs, &res) == GRPC_STATUS_OK) {
            ok = rs->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
            protobuf_c_message_free_unpacked(&rs->base, NULL);
        }
        if (!ok) harness_sleep_ms(50);
    }
    grpcx_channel_free(ch);
    return ok;
}

/* "Bearer <tok>" (malloc'd; tok freed), or NULL for a NULL tok. */
static char *bearer_of(char *tok)
{
    if (tok == NULL) return NULL;
    size_t n = strlen(tok) + 8;
    char *out = malloc(n);
    snprintf(out, n, "Bearer %s", tok);
    free(tok);
    return out;
}

char *harness_bearer(const char *user, long ttl, const char *secret)
{
    todo_config cfg;
    todo_err err;
    if (config_load(&cfg, CONFIG_CLI, NULL, NULL, &err) != 0) return NULL;
    if (secret == NULL) secret = cfg.jwt_secret;
    auth_rules rules = AUTH_RULES_OF(&cfg);
    return bearer_of(
        auth_issue_for(secret, user, ttl > 0 ? ttl : 1, (long)time(NULL) - (ttl > 0 ? 0 : 120), &rules, &err));
}

char *harness_scoped_bearer(const char *service, const char *scope, const char *user)
{
    todo_config cfg;
    todo_err err;
    if (config_load(&cfg, CONFIG_CLI, NULL, NULL, &err) != 0) return NULL;
    return bearer_of(auth_issue_service(cfg.service_secret, service, scope, user, 600, (long)time(NULL), &err));
}

char *harness_service_bearer(const char *user) { return harness_scoped_bearer("todo-saga", AUTH_SCOPE_INTERNAL, user); }

void harness_user(char out[64], const char *prefix)
{
    char id[37];
    text_uuid_v4(id);
    snprintf(out, 64, "%s-%.12s", prefix, id + 24);
}

PGconn *harness_admin(void)
{
    PGconn *c = PQconnectdb(getenv("TODO_PG_URL"));
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "harness: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

long long harness_scalar(PGconn *c, const char *sql, const char *param)
{
    const char *p[1] = {param};
    PGresult *r = PQexecParams(c, sql, param != NULL ? 1 : 0, NULL, p, NULL, NULL, 0);
    long long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else fprintf(stderr, "harness: %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return v;
}

int harness_services_start(harness_services *s)
{
    s->command = harness_spawn("command/todo-command", "command", NULL);
    s->query = harness_spawn("query/todo-query", "query", NULL);
    s->projector = harness_spawn("projection/todo-projector", "projector", NULL);
    if (!harness_wait_serving(getenv("TODO_COMMAND_ADDR"), 20000) ||
        !harness_wait_serving(getenv("TODO_QUERY_ADDR"), 20000)) {
        fprintf(stderr, "services did not start; see build/tests/logs/\n");
        return -1;
    }
    s->cmd = harness_channel(getenv("TODO_COMMAND_ADDR"));
    s->qry = harness_channel(getenv("TODO_QUERY_ADDR"));
    return 0;
}

int harness_services_stop(harness_services *s)
{
    grpcx_channel_free(s->cmd);
    grpcx_channel_free(s->qry);
    int c = harness_stop(s->command, SIGTERM, 20000);
    int q = harness_stop(s->query, SIGTERM, 20000);
    int p = harness_stop(s->projector, SIGTERM, 20000);
    if (c != 0 || q != 0 || p != 0) {
        fprintf(stderr, "exit codes: command=%d query=%d projector=%d (see build/tests/logs/)\n", c, q, p);
        return -1;
    }
    return 0;
}

/* The stack's TODO_KAFKA_CONFIG (SASL_SSL on the secure stack) for every
 * Kafka client of the test process, kafkax's included. */
static void kafka_security(void)
{
    static int security_set;
    todo_err err;
    if (security_set) return;
    if (kafkax_set_security(getenv("TODO_KAFKA_CONFIG"), &err) != TODO_OK) fail_msg("%s", err.msg);
    security_set = 1;
}

void harness_pg_url_with_db(char *out, size_t cap, const char *prefix, const char *url, const char *db)
{
    const char *q = strchr(url, '?'), *end = q != NULL ? q : url + strlen(url), *slash = end;
    while (slash > url && *(slash - 1) != '/') slash--;
    snprintf(out, cap, "%s%.*s%s%s", prefix, (int)(slash - url), url, db, q != NULL ? q : "");
}

/* "<verb> database <db><tail>" as the superuser; true when it succeeded. */
static bool database_command(const char *verb, const char *db, const char *tail)
{
    char sql[160];
    snprintf(sql, sizeof sql, "%s database %s%s", verb, db, tail);
    PGconn *admin = harness_admin();
    PGresult *r = PQexec(admin, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    PQfinish(admin);
    return ok;
}

bool harness_scratch_db(const char *prefix, char db[64], char *url, size_t cap)
{
    harness_user(db, prefix);
    for (char *c = db; *c; c++)
        if (*c == '-') *c = '_';
    harness_pg_url_with_db(url, cap, "", getenv("TODO_PG_URL"), db);
    return database_command("create", db, "");
}

bool harness_drop_db(const char *db) { return database_command("drop", db, " with (force)"); }

rd_kafka_conf_t *harness_kafka_conf(void)
{
    todo_err err;
    kafka_security();
    rd_kafka_conf_t *conf = kafkax_conf_new(getenv("TODO_KAFKA_BROKERS"), &err);
    if (conf == NULL) fail_msg("%s", err.msg);
    return conf;
}

int harness_consume(const char *topic, bool (*match)(const rd_kafka_message_t *m, void *ctx), void *ctx, int want,
                    int timeout_ms)
{
    char errstr[256], group[64];
    harness_user(group, "harness-reader");
    rd_kafka_conf_t *conf = harness_kafka_conf();
    rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    int n = 0;
    long long until = harness_now_ms() + timeout_ms;
    while (n < want && harness_now_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (m == NULL) continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && match(m, ctx)) n++;
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

int harness_count(const char *topic, bool (*match)(const rd_kafka_message_t *m, void *ctx), void *ctx, int expect,
                  int timeout_ms)
{
    char errstr[256], group[64];
    harness_user(group, "harness-counter"); /* assigned, never joined: nothing waits for a rebalance */
    rd_kafka_conf_t *conf = harness_kafka_conf();
    rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.partition.eof", "false", errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    rd_kafka_poll_set_consumer(rk);
    /* Every partition, from its start. */
    enum { MAX_PARTS = 64 };
    int64_t next[MAX_PARTS], end[MAX_PARTS];
    int n_parts = 0;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const rd_kafka_metadata_t *md = NULL;
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1)
        n_parts = md->topics[0].partition_cnt < MAX_PARTS ? md->topics[0].partition_cnt : MAX_PARTS;
    if (md != NULL) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n_parts);
    for (int p = 0; p < n_parts; p++) {
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        next[p] = 0;
        end[p] = -1;
    }
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    int n = 0;
    bool draining = false; /* expect reached: reading on to the end as it was then */
    long long until = harness_now_ms() + timeout_ms;
    for (;;) {
        if (!draining && (n >= expect || harness_now_ms() >= until)) {
            draining = true;
            for (int p = 0; p < n_parts; p++) {
                int64_t lo = 0, hi = 0;
                if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
                    fail_msg("harness_count: the end of %s [%d] is unknown", topic, p);
                end[p] = hi;
                /* A partition whose records were deleted starts where they
                 * ended: nothing before lo is ever delivered. */
                if (next[p] < lo) next[p] = lo;
            }
        }
        if (draining) {
            bool done = true;
            for (int p = 0; p < n_parts; p++) done = done && next[p] >= end[p];
            if (done) break;
            /* A count short of the end would pass for a complete one. */
            for (int p = 0; p < n_parts && harness_now_ms() >= until + 10000; p++)
                if (next[p] < end[p])
                    fail_msg("harness_count: %s [%d] read to offset %lld of %lld", topic, p, (long long)next[p],
                             (long long)end[p]);
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m == NULL) continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (m->partition >= 0 && m->partition < n_parts) next[m->partition] = m->offset + 1;
            if (match(m, ctx)) n++;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

int harness_stack(const char *what, const char *more)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash '%s/scripts/stack.sh' %s '%s' %s >/dev/null 2>&1", TODO_SOURCE_DIR, what,
             getenv("TODO_STACK"), more != NULL ? more : "");
    return system(cmd);
}

long long harness_unpublished(const char *prefix)
{
    char like[80];
    snprintf(like, sizeof like, "%s%%", prefix);
    return harness_scalar(harness_db, "select count(*) from write.events where published_at is null and user_id like $1",
                          like);
}

long long harness_wait_published(const char *prefix, int timeout_ms)
{
    long long t0 = harness_now_ms();
    while (harness_now_ms() - t0 < timeout_ms) {
        if (harness_unpublished(prefix) == 0) return harness_now_ms() - t0;
        harness_sleep_ms(20);
    }
    return -1;
}

long long harness_wait_projected(const char *prefix, long long total, int timeout_ms)
{
    char like[80];
    snprintf(like, sizeof like, "%s%%", prefix);
    long long until = harness_now_ms() + timeout_ms, n = 0;
    while ((n = harness_scalar(harness_db, "select count(*) from read.tasks where user_id like $1", like)) < total &&
           harness_now_ms() < until)
        harness_sleep_ms(100);
    return n;
}

/* One record of tasks.events.v1 as harness_check_published sees it. */
typedef struct seen_record {
    char key[64];
    char event_id[40];
    long long position;
} seen_record;

typedef struct seen_log {
    const char *prefix;
    seen_record *out;
    int cap, n;
} seen_log;

static bool keep_ours(const rd_kafka_message_t *m, void *ctx)
{
    seen_log *c = ctx;
    size_t plen = strlen(c->prefix);
    if (m->key_len >= 64 || m->key_len < plen || memcmp(m->key, c->prefix, plen) != 0) return false;
    if (c->n == c->cap) return true; /* counted; the caller sees more than it wanted */
    seen_record *s = &c->out[c->n++];
    char pos[24];
    memset(s, 0, sizeof *s);
    memcpy(s->key, m->key, m->key_len);
    kafkax_header(m, "ce_id", s->event_id, sizeof s->event_id);
    s->position = strtoll(kafkax_header(m, "todo_position", pos, sizeof pos) != NULL ? pos : "0", NULL, 10);
    return true;
}

static int by_key_then_position(const void *a, const void *b)
{
    const seen_record *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c != 0 ? c : (x->position > y->position) - (x->position < y->position);
}

static int by_event_id(const void *a, const void *b)
{
    return strcmp(((const seen_record *)a)->event_id, ((const seen_record *)b)->event_id);
}

int harness_check_published(const char *prefix, int total, int *resent)
{
    int cap = total * 3 + 16;
    seen_record *got = calloc((size_t)cap, sizeof *got), *sorted = calloc((size_t)cap, sizeof *got);
    assert_non_null(got);
    assert_non_null(sorted);
    seen_log c = {prefix, got, cap, 0};
    harness_count("tasks.events.v1", keep_ours, &c, total, 60000);
    /* Copies after the first of an event: an error, or (resent != NULL)
     * counted and dropped, the first arrival keeping its place. */
    memcpy(sorted, got, (size_t)c.n * sizeof *got);
    qsort(sorted, (size_t)c.n, sizeof *sorted, by_event_id);
    int copies = 0;
    for (int i = 1; i < c.n; i++)
        if (strcmp(sorted[i].event_id, sorted[i - 1].event_id) == 0) {
            if (resent == NULL) fail_msg("event %s arrived twice", sorted[i].event_id);
            copies++;
        }
    if (resent != NULL) {
        *resent = copies;
        int kept = 0;
        for (int i = 0; i < c.n; i++) {
            bool again = false;
            for (int k = 0; k < kept && !again; k++) again = strcmp(got[k].event_id, got[i].event_id) == 0;
            if (!again) got[kept++] = got[i];
        }
        c.n = kept;
    }
    /* Per user, the records arrived in the order of their positions: each
     * user's records in arrival order against the same records sorted. */
    memcpy(sorted, got, (size_t)c.n * sizeof *got);
    qsort(sorted, (size_t)c.n, sizeof *sorted, by_key_then_position);
    for (int i = 0; i < c.n; i++) {
        if (i > 0 && strcmp(sorted[i].key, sorted[i - 1].key) == 0) continue;
        int k = i;
        for (int j = 0; j < c.n; j++) {
            if (strcmp(got[j].key, sorted[i].key) != 0) continue;
            if (got[j].position != sorted[k].position)
                fail_msg("%s: position %lld arrived where %lld was due", got[j].key, got[j].position,
                         sorted[k].position);
            k++;
        }
    }
    int n = c.n;
    free(got);
    free(sorted);
    return n;
}

harness_services harness_svc;
PGconn *harness_db;

int harness_group_setup(void **state)
{
    (void)state;
    if (!harness_stack_available()) return 0;
    kafka_security();
    if (harness_services_start(&harness_svc) != 0) return -1;
    harness_db = harness_admin();
    return harness_db != NULL ? 0 : -1;
}

/* Graceful shutdown: every service exits 0 on SIGTERM (and, in the
 * sanitizer build, without a leak report). */
int harness_group_teardown(void **state)
{
    (void)state;
    if (!harness_stack_available()) return 0;
    PQfinish(harness_db);
    return harness_services_stop(&harness_svc);
}

grpc_status_code harness_command(const char *rpc, const ProtobufCMessage *req, const char *auth,
                                 Todo__V1__CommandReply **out, grpcx_result *res)
{
    char path[96];
    Todo__V1__CommandReply *rp = NULL;
    snprintf(path, sizeof path, "/todo.v1.TaskCommandService/%s", rpc);
    grpc_status_code code = grpcx_unary(harness_svc.cmd, path, req, &todo__v1__command_reply__descriptor, auth, 15000,
                                        (ProtobufCMessage **)&rp, res);
    if (out != NULL) *out = rp;
    else if (rp != NULL) protobuf_c_message_free_unpacked(&rp->base, NULL);
    return code;
}

bool harness_holds_text(const rd_kafka_message_t *m, void *ctx)
{
    const harness_needle *n = ctx;
    return m->key_len == strlen(n->user) && memcmp(m->key, n->user, m->key_len) == 0 && m->payload != NULL &&
           memmem(m->payload, m->len, n->text, strlen(n->text)) != NULL;
}

int harness_todoctl(const char *args, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "timeout -k 10 %d '%s/cli/todoctl' %s 2>&1", HARNESS_TODOCTL_LIMIT_S, TODO_BIN_DIR, args);
    FILE *p = popen(cmd, "r");
    if (p == NULL) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    char rest[4096]; /* read what did not fit: todoctl must not die of SIGPIPE */
    while (fread(rest, 1, sizeof rest, p) > 0) {
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void harness_produce(const char *topic, const char *key, const void *value, size_t len)
{
    char errstr[256];
    rd_kafka_conf_t *conf = harness_kafka_conf();
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (rk == NULL) fail_msg("no producer: %s", errstr);
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    if (rd_kafka_produce(t, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, (void *)value, len, key, strlen(key), NULL) != 0 ||
        rd_kafka_flush(rk, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail_msg("producing to %s failed", topic);
    rd_kafka_topic_destroy(t);
    rd_kafka_destroy(rk);
}

typedef struct dlq_want {
    const char *topic, *group;
    const void *value;
    size_t len;
    const char *reason_part;
} dlq_want;

static bool is_the_dead_letter(const rd_kafka_message_t *m, void *ctx)
{
    const dlq_want *w = ctx;
    Todo__V1__DeadLetter *dl = todo__v1__dead_letter__unpack(NULL, m->len, m->payload);
    bool yes = dl != NULL && dl->original_value.len == w->len && memcmp(dl->original_value.data, w->value, w->len) == 0 &&
               strstr(dl->reason, w->reason_part) != NULL && strcmp(dl->original_topic, w->topic) == 0 &&
               strcmp(dl->consumer_group, w->group) == 0;
    if (dl != NULL) todo__v1__dead_letter__free_unpacked(dl, NULL);
    return yes;
}

bool harness_dlq_holds(const char *topic, const char *group, const void *value, size_t len, const char *reason_part)
{
    dlq_want w = {topic, group, value, len, reason_part};
    return harness_consume("system.dlq.v1", is_the_dead_letter, &w, 1, 15000) == 1;
}

char *harness_create(const char *auth, const char *title)
{
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Todo__V1__CommandReply *r = NULL;
    grpcx_result res;
    rq.title = (char *)title;
    assert_int_equal(harness_command("CreateTask", &rq.base, auth, &r, &res), GRPC_STATUS_OK);
    char *id = strdup(r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return id;
}

char *harness_complete(const char *auth, const char *task_id)
{
    Todo__V1__CompleteTaskRequest rq = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    Todo__V1__CommandReply *r = NULL;
    grpcx_result res;
    rq.task_id = (char *)task_id;
    assert_int_equal(harness_command("CompleteTask", &rq.base, auth, &r, &res), GRPC_STATUS_OK);
    char *id = strdup(r->event_id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return id;
}
