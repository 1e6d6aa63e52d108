/*
 * Scale-out tests on the three-node Kafka cluster (scripts/stack.sh's
 * "cluster" stack: replication 3, min.insync.replicas 2, acks=all), under a
 * steady write load from several users:
 *   - kill -9 of the broker leading most partitions of tasks.events.v1;
 *   - a rolling restart of all three brokers;
 *   - two brokers down: commands still succeed, nothing is published until
 *     a second broker is back, then everything drains in order.
 * Each ends with the same checks: no command failed, every event is
 * published once and in each user's order, and the read model holds each
 * acknowledged task once, all from the services that ran through it (no
 * restart). Without the cluster stack (TODO_STACK_KAFKA_NODES=3) they skip.
 *
 * And a measurement: with two projectors in the group, kill -9 of one and a
 * restart at once, how long the slowest user's next event waits to be
 * projected, with dynamic and with static membership (TODO_INSTANCE).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "text.h"
#include "todo/v1/command.pb-c.h"

static bool cluster_stack(void)
{
    const char *n = getenv("TODO_STACK_KAFKA_NODES");
    return harness_stack_available() && n != NULL && atoi(n) >= 3;
}

#define NEED_CLUSTER()                                                                                       \
    do {                                                                                                     \
        if (!cluster_stack()) skip();                                                                      \
    } while (0)

enum { WRITERS = 4 };

typedef struct writer {
    char user[80];
    char *auth;
    atomic_bool *stop;
    int acked;    /* commands acknowledged */
    int attempts; /* calls that failed and were sent again */
    char last_error[512];
} writer;

/* CreateTask after CreateTask, about 50 a second, until told to stop. A
 * call that fails is sent again with its request id (at most 20 times), as
 * a client should. */
static void *write_tasks(void *arg)
{
    writer *w = arg;
    while (!atomic_load(w->stop)) {
        Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
        char request_id[37], title[48];
        text_uuid_v4(request_id);
        snprintf(title, sizeof title, "under load %d", w->acked);
        rq.request_id = request_id;
        rq.title = title;
        for (int attempt = 0; attempt < 20; attempt++) {
            Todo__V1__CommandReply *rp = NULL;
            grpcx_result res;
            if (harness_command("CreateTask", &rq.base, w->auth, &rp, &res) == GRPC_STATUS_OK) {
                protobuf_c_message_free_unpacked(&rp->base, NULL);
                w->acked++;
                harness_sleep_ms(20);
                break;
            }
            w->attempts++;
            snprintf(w->last_error, sizeof w->last_error, "%s", res.message);
            harness_sleep_ms(100);
        }
    }
    return NULL;
}

typedef struct load {
    char prefix[64];
    writer w[WRITERS];
    pthread_t th[WRITERS];
    atomic_bool stop;
} load;

static void load_start(load *l, const char *name)
{
    harness_user(l->prefix, name);
    atomic_store(&l->stop, false);
    for (int i = 0; i < WRITERS; i++) {
        writer *w = &l->w[i];
        memset(w, 0, sizeof *w);
        snprintf(w->user, sizeof w->user, "%.60s-u%d", l->prefix, i);
        w->auth = harness_bearer(w->user, 3600, NULL);
        w->stop = &l->stop;
        pthread_create(&l->th[i], NULL, write_tasks, w);
    }
}

/* Stops the writers; the commands acknowledged. Fails when a command failed
 * for good; reports (and allows) calls sent again. */
static int load_stop(load *l)
{
    int acked = 0, attempts = 0;
    atomic_store(&l->stop, true);
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(l->th[i], NULL);
        acked += l->w[i].acked;
        attempts += l->w[i].attempts;
        if (l->w[i].attempts > 0) printf("writer %d: %d calls sent again (last: %s)\n", i, l->w[i].attempts,
                                         l->w[i].last_error);
        free(l->w[i].auth);
    }
    /* The command side never waits on Kafka: nothing had to be retried. */
    assert_int_equal(attempts, 0);
    return acked;
}

/* Every acknowledged command of the load: published once, in order, and
 * projected once. Prints how long the publishing took after the event. */
static void check_nothing_lost(const load *l, int acked, long long since_ms, const char *what)
{
    long long published_ms = harness_wait_published(l->prefix, 120000);
    assert_true(published_ms >= 0);
    assert_int_equal(harness_check_published(l->prefix, acked), acked);
    assert_int_equal(harness_wait_projected(l->prefix, acked, 60000), acked);
    printf("%s: %d commands acknowledged, all published once and in order (%lld ms after the load), "
           "all projected once, %lld ms after the %s began\n",
           what, acked, published_ms, harness_now_ms() - since_ms, what);
}

/* The node leading most partitions of topic (stack.sh kafka-leader). */
static int leader_of(const char *topic)
{
    char cmd[1024], out[32] = "";
    snprintf(cmd, sizeof cmd, "bash '%s/scripts/stack.sh' kafka-leader '%s' %s 2>/dev/null", TODO_SOURCE_DIR,
             getenv("TODO_STACK"), topic);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    if (fgets(out, sizeof out, p) == NULL) out[0] = '\0';
    pclose(p);
    int node = atoi(out);
    assert_true(node >= 1 && node <= 3);
    return node;
}

static void node_cmd(const char *what, int node)
{
    char n[8];
    snprintf(n, sizeof n, "%d", node);
    assert_int_equal(harness_stack(what, n), 0);
}

static void a_killed_broker_loses_nothing(void **state)
{
    (void)state;
    NEED_CLUSTER();
    load l;
    int victim = leader_of("tasks.events.v1");
    load_start(&l, "broker-kill");
    harness_sleep_ms(2000);
    long long t_kill = harness_now_ms();
    node_cmd("kafka-kill", victim);
    harness_sleep_ms(8000); /* the load goes on with two brokers */
    int acked = load_stop(&l);
    assert_true(acked > 0);
    /* Published and projected with the broker still down. */
    check_nothing_lost(&l, acked, t_kill, "broker kill");
    node_cmd("kafka-start", victim); /* back, and in sync, for the next test */
}

static void a_rolling_restart_loses_nothing(void **state)
{
    (void)state;
    NEED_CLUSTER();
    load l;
    load_start(&l, "rolling");
    harness_sleep_ms(1000);
    long long t0 = harness_now_ms();
    for (int node = 1; node <= 3; node++) {
        node_cmd("kafka-stop", node);  /* a clean shutdown: leadership moves first */
        harness_sleep_ms(1000);
        node_cmd("kafka-start", node); /* returns once every replica is back in sync */
    }
    harness_sleep_ms(1000);
    int acked = load_stop(&l);
    check_nothing_lost(&l, acked, t0, "rolling restart");
}

static void two_brokers_down_hold_events_until_one_is_back(void **state)
{
    (void)state;
    NEED_CLUSTER();
    load l;
    load_start(&l, "two-down");
    harness_sleep_ms(1000);
    node_cmd("kafka-kill", 2);
    node_cmd("kafka-kill", 3);
    long long t_down = harness_now_ms();
    /* Whatever was in flight settles; from then on nothing new is published. */
    harness_sleep_ms(2000);
    char like[80];
    snprintf(like, sizeof like, "%s%%", l.prefix);
    const char *published_sql = "select count(*) from write.events where published_at is not null and user_id like $1";
    long long published_before = harness_scalar(harness_db, published_sql, like);
    harness_sleep_ms(6000);
    int acked = load_stop(&l);
    long long published_after = harness_scalar(harness_db, published_sql, like);
    printf("two brokers down: %d commands acknowledged, %lld published before the brokers went down and %lld "
           "after\n", acked, published_before, published_after - published_before);
    assert_int_equal(published_after, published_before);
    assert_true(harness_unpublished(l.prefix) > 0);
    node_cmd("kafka-start", 2);
    check_nothing_lost(&l, acked, t_down, "two-broker outage");
    node_cmd("kafka-start", 3);
}

/* Creates one task for each of n users of prefix; returns when all are
 * projected: the milliseconds it took (-1 after 60 s). */
static long long project_one_each(const char *prefix, int n)
{
    long long t0 = harness_now_ms();
    for (int i = 0; i < n; i++) {
        char user[96];
        snprintf(user, sizeof user, "%.60s-u%d", prefix, i);
        char *auth = harness_bearer(user, 600, NULL);
        free(harness_create(auth, "after the restart"));
        free(auth);
    }
    return harness_wait_projected(prefix, n, 60000) == n ? harness_now_ms() - t0 : -1;
}

/* Two projectors in the group; one is killed (-9) and started again at
 * once; then one task for each of 24 users (all partitions): how long the
 * slowest waited to be projected. */
static long long worst_wait_after_a_restart(const char *instance_a, const char *instance_b)
{
    char env_a[80], env_b[80], prefix[64];
    snprintf(env_a, sizeof env_a, "TODO_INSTANCE=%s", instance_a);
    snprintf(env_b, sizeof env_b, "TODO_INSTANCE=%s", instance_b);
    const char *extra_a[] = {env_a, "TODO_PROJECTOR_METRICS_ADDR=127.0.0.1:0", NULL};
    const char *extra_b[] = {env_b, "TODO_PROJECTOR_METRICS_ADDR=127.0.0.1:0", NULL};
    const char *const *xa = instance_a[0] != '\0' ? extra_a : extra_a + 1;
    const char *const *xb = instance_b[0] != '\0' ? extra_b : extra_b + 1;
    pid_t a = harness_spawn("projection/todo-projector", "projector-a", xa);
    pid_t b = harness_spawn("projection/todo-projector", "projector-b", xb);
    harness_user(prefix, "settle");
    assert_true(project_one_each(prefix, 24) >= 0); /* both in the group, every partition served */
    harness_sleep_ms(3000);
    assert_int_equal(harness_stop(a, SIGKILL, 5000), 128 + SIGKILL);
    a = harness_spawn("projection/todo-projector", "projector-a", xa);
    harness_user(prefix, "restart");
    long long worst = project_one_each(prefix, 24);
    assert_true(worst >= 0);
    assert_int_equal(harness_stop(a, SIGTERM, 20000), 0);
    assert_int_equal(harness_stop(b, SIGTERM, 20000), 0);
    return worst;
}

static void a_restarted_static_member_takes_its_partitions_back_at_once(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    /* The group's own projector steps aside for the two of the test. */
    assert_int_equal(harness_stop(harness_svc.projector, SIGTERM, 20000), 0);
    long long dynamic_ms = worst_wait_after_a_restart("", "");
    long long static_ms = worst_wait_after_a_restart("cluster-test-a", "cluster-test-b");
    printf("kill -9 of one of two projectors and a restart: the slowest of 24 users' next events waited "
           "%lld ms with dynamic membership, %lld ms with static membership (TODO_INSTANCE)\n",
           dynamic_ms, static_ms);
    harness_svc.projector = harness_spawn("projection/todo-projector", "projector", NULL);
}

/* Each test starts from the whole cluster, in sync, whatever the one before
 * left behind. */
static int whole_cluster(void **state)
{
    (void)state;
    return cluster_stack() ? harness_stack("kafka-start", NULL) : 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(a_killed_broker_loses_nothing, whole_cluster),
        cmocka_unit_test_setup(a_rolling_restart_loses_nothing, whole_cluster),
        cmocka_unit_test_setup(two_brokers_down_hold_events_until_one_is_back, whole_cluster),
        cmocka_unit_test_setup(a_restarted_static_member_takes_its_partitions_back_at_once, whole_cluster),
    };
    return cmocka_run_group_tests(tests, harness_group_setup, harness_group_teardown);
}
