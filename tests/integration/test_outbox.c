/*
 * Integration tests of the outbox relay on the real stack: a Kafka outage
 * (commands keep succeeding; the backlog drains in order once the broker is
 * back, each event once) and the takeover of a killed relay leader by
 * another todo-command instance.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_outbox.h"
#include "harness.h"
#include "todo/v1/command.pb-c.h"


static void create(grpcx_channel *ch, const char *auth, const char *title)
{
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Todo__V1__CommandReply *rp = NULL;
    grpcx_result res;
    rq.title = (char *)title;
    if (grpcx_unary(ch, "/todo.v1.TaskCommandService/CreateTask", &rq.base, &todo__v1__command_reply__descriptor, auth,
                    15000, (ProtobufCMessage **)&rp, &res) != GRPC_STATUS_OK)
        fail_msg("CreateTask: %s", res.message);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
}

static void a_kafka_outage_loses_nothing_and_keeps_per_user_order(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    enum { USERS = 4, PER_USER = 250, TOTAL = USERS * PER_USER };
    char prefix[64], users[USERS][80], *auth[USERS];
    harness_user(prefix, "outage");
    for (int u = 0; u < USERS; u++) {
        snprintf(users[u], sizeof users[u], "%.40s-u%d", prefix, u);
        auth[u] = harness_bearer(users[u], 600, NULL);
    }
    assert_int_equal(harness_stack("kafka-stop", NULL), 0);
    long long t_down = harness_now_ms();
    for (int i = 0; i < PER_USER; i++)
        for (int u = 0; u < USERS; u++) {
            char title[32];
            snprintf(title, sizeof title, "offline %d", i);
            create(harness_svc.cmd, auth[u], title); /* commands keep succeeding */
        }
    long long accepted_ms = harness_now_ms() - t_down;
    assert_int_equal(harness_unpublished(prefix), TOTAL + USERS); /* and each user's user.registered */
    assert_int_equal(harness_stack("kafka-start", NULL), 0);
    long long drain_ms = harness_wait_published(prefix, 120000);
    assert_true(drain_ms >= 0);
    /* The drain itself: from the first to the last acknowledged row. */
    char like[80];
    snprintf(like, sizeof like, "%s%%", prefix);
    long long span_us = harness_scalar(harness_db,
                                       "select (extract(epoch from max(published_at) - min(published_at)) * 1000000)::bigint"
                                       " from write.events where user_id like $1", like);
    printf("outage: %d commands accepted in %lld ms with Kafka down; all published %lld ms after Kafka answered; "
           "the drain itself took %.1f ms (%.0f events/s)\n", TOTAL, accepted_ms, drain_ms, span_us / 1000.0,
           span_us > 0 ? TOTAL * 1e6 / (double)span_us : 0.0);

    assert_int_equal(harness_check_published(prefix, TOTAL, NULL), TOTAL);
    assert_int_equal(harness_wait_projected(prefix, TOTAL, 60000), TOTAL);
    for (int u = 0; u < USERS; u++) free(auth[u]);
}

/* The pid in "todo-command-relay-<pid> (backend ...)", or 0. */
static pid_t active_relay(void)
{
    cmd_outbox_status st;
    todo_err err;
    if (cmd_outbox_status_read(harness_db, &st, &err) != 0) return 0;
    const char *p = strstr(st.active, "todo-command-relay-");
    return p != NULL ? (pid_t)atoi(p + strlen("todo-command-relay-")) : 0;
}

static void a_killed_relay_leader_is_replaced_within_seconds(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char port_env[64], addr[40], user[64];
    int port = harness_free_port();
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    snprintf(port_env, sizeof port_env, "TODO_COMMAND_ADDR=%s", addr);
    const char *extra[] = {port_env, NULL};
    pid_t second = harness_spawn("command/todo-command", "command-2", extra);
    assert_true(harness_wait_serving(addr, 20000));
    grpcx_channel *ch2 = harness_channel(addr);

    /* Exactly one of the two is active. */
    pid_t leader = 0;
    long long until = harness_now_ms() + 10000;
    while ((leader = active_relay()) == 0 && harness_now_ms() < until) harness_sleep_ms(50);
    assert_true(leader == harness_svc.command || leader == second);
    pid_t survivor = leader == harness_svc.command ? second : harness_svc.command;
    grpcx_channel *survivor_ch = leader == harness_svc.command ? ch2 : harness_svc.cmd;

    harness_user(user, "takeover");
    char *auth = harness_bearer(user, 600, NULL);
    assert_true(harness_stop(leader, SIGKILL, 5000) == 128 + SIGKILL);
    long long t_kill = harness_now_ms();
    for (int i = 0; i < 10; i++) create(survivor_ch, auth, "after the leader died");
    long long waited = harness_wait_published(user, 30000);
    assert_true(waited >= 0);
    long long takeover_ms = harness_now_ms() - t_kill;
    until = harness_now_ms() + 10000;
    pid_t new_leader = 0;
    while ((new_leader = active_relay()) != survivor && harness_now_ms() < until) harness_sleep_ms(50);
    assert_int_equal(new_leader, survivor);
    printf("takeover: events of the survivor published %lld ms after the leader was killed\n", takeover_ms);
    assert_true(takeover_ms < 10000);

    /* Read side: each event applied once. */
    until = harness_now_ms() + 30000;
    while (harness_scalar(harness_db, "select count(*) from read.tasks where user_id = $1", user) < 10 &&
           harness_now_ms() < until)
        harness_sleep_ms(50);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from read.tasks where user_id = $1", user), 10);

    /* The survivor stands in for the group's todo-command at teardown. */
    grpcx_channel_free(ch2);
    if (leader == harness_svc.command) harness_svc.command = second;
    free(auth);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_kafka_outage_loses_nothing_and_keeps_per_user_order),
        cmocka_unit_test(a_killed_relay_leader_is_replaced_within_seconds),
    };
    return cmocka_run_group_tests(tests, harness_group_setup, harness_group_teardown);
}
