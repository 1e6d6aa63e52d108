/*
 * Unit tests of the saga orchestrator with fake steps and an in-memory
 * store: success, a permanent failure at each step index, retries then
 * success, retries exhausted, timeouts, a compensation that fails, and a
 * crash (a failed save) at every persisted point followed by a resume.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "saga_core.h"

#define N 3
#define SCRIPT 8

/* What each fake step answers, attempt by attempt (the last entry repeats). */
typedef struct fake {
    saga_result action[N][SCRIPT];
    int n_action[N];
    saga_result undo[N][SCRIPT];
    int n_undo[N];
    int action_sleep_ms[N];
    /* observed */
    int action_calls[N], undo_calls[N], action_ok[N];
    int undo_order[N * SCRIPT], n_undo_order;
    int done_rerun;                /* an action of a step the store held DONE */
    /* the store */
    saga_record stored;
    int saves, crash_at;           /* fail the crash_at-th save (0: never) */
    int sleeps[64], n_sleeps;
    char events[64][48];      /* told (on_event) */
    char attempts[64][48];    /* told (on_attempt): "action create retry" */
    int n_attempts;
    int n_events;
    char saved[128][48];      /* saved with the records (the outbox) */
    int n_saved;
} fake;

static fake F;

static saga_result script(const saga_result *s, int n, int call)
{
    return n == 0 ? SAGA_OK : s[call < n ? call : n - 1];
}

static saga_result act(saga_exec *x, int i, int64_t deadline, char *err)
{
    (void)deadline;
    if (F.stored.steps[i] == SAGA_STEP_DONE) F.done_rerun++;
    if (F.action_sleep_ms[i] > 0) {
        struct timespec ts = {0, F.action_sleep_ms[i] * 1000000L};
        nanosleep(&ts, NULL);
    }
    saga_result r = script(F.action[i], F.n_action[i], F.action_calls[i]++);
    if (r == SAGA_OK) {
        char key[16], key2[96];
        snprintf(key, sizeof key, "made%d", i);
        saga_idempotency_key(x, key2, sizeof key2);
        assert_int_equal(saga_ctx_set(x, key, key2), TODO_OK);
        F.action_ok[i]++;
    } else {
        snprintf(err, SAGA_ERROR_MAX, "step %d says no", i);
    }
    return r;
}

static saga_result undo(saga_exec *x, int i, char *err)
{
    char key[16];
    snprintf(key, sizeof key, "made%d", i);
    if (F.action_ok[i] > 0) assert_non_null(saga_ctx_get(x, key)); /* what the action recorded survived */
    F.undo_order[F.n_undo_order++] = i;
    saga_result r = script(F.undo[i], F.n_undo[i], F.undo_calls[i]++);
    if (r != SAGA_OK) snprintf(err, SAGA_ERROR_MAX, "undo %d says no", i);
    return r;
}

static saga_result a0(saga_exec *x, int64_t d, char e[SAGA_ERROR_MAX]) { return act(x, 0, d, e); }
static saga_result a1(saga_exec *x, int64_t d, char e[SAGA_ERROR_MAX]) { return act(x, 1, d, e); }
static saga_result a2(saga_exec *x, int64_t d, char e[SAGA_ERROR_MAX]) { return act(x, 2, d, e); }
static saga_result u0(saga_exec *x, int64_t d, char e[SAGA_ERROR_MAX]) { (void)d; return undo(x, 0, e); }
static saga_result u1(saga_exec *x, int64_t d, char e[SAGA_ERROR_MAX]) { (void)d; return undo(x, 1, e); }

/* Step 2 (the notification) has nothing to undo. */
static const saga_step_def STEPS[N] = {
    {"cancel", a0, u0, 1000, 3, 10},
    {"create", a1, u1, 20, 3, 10},
    {"notify", a2, NULL, 1000, 2, 10},
};
static const saga_def DEF = {"test", STEPS, N};

static int store_save(void *ctx, const saga_record *r, const saga_event *events, int n, todo_err *err)
{
    (void)ctx;
    if (++F.saves == F.crash_at) return todo_err_set(err, TODO_EUNAVAIL, "crash at save %d", F.saves);
    F.stored = *r;
    for (int i = 0; i < n && F.n_saved < 128; i++)
        snprintf(F.saved[F.n_saved++], 48, "%s%s%s", events[i].what, events[i].step ? " " : "",
                 events[i].step ? events[i].step : "");
    return TODO_OK;
}

/* How many saved events are exactly e. */
static int saved_count(const char *e)
{
    int n = 0;
    for (int i = 0; i < F.n_saved; i++) n += strcmp(F.saved[i], e) == 0;
    return n;
}

static void on_event(const saga_record *r, const char *what, const char *step, int attempt, const char *error,
                     void *ctx)
{
    (void)r, (void)attempt, (void)error, (void)ctx;
    if (F.n_events < 64) snprintf(F.events[F.n_events++], 48, "%s%s%s", what, step ? " " : "", step ? step : "");
}

static void fake_sleep(int ms, void *ctx)
{
    (void)ctx;
    if (F.n_sleeps < 64) F.sleeps[F.n_sleeps++] = ms;
}

static void on_attempt(const saga_record *r, const char *step, bool undo, saga_result res, double seconds, void *ctx)
{
    (void)r, (void)ctx;
    static const char *const names[] = {"ok", "retry", "abort"};
    assert_true(seconds >= 0 && seconds < 60);
    if (F.n_attempts < 64)
        snprintf(F.attempts[F.n_attempts++], 48, "%s %s %s", undo ? "compensation" : "action", step, names[res]);
}

static const saga_engine ENGINE = {.store = {store_save, NULL}, .on_event = on_event, .sleep_ms = fake_sleep,
                                   .on_attempt = on_attempt};

static void reset(void)
{
    memset(&F, 0, sizeof F);
}

/* Starts and runs a saga; returns saga_run's status. */
static int start_and_run(saga_record *r)
{
    todo_err err;
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "123e4567-e89b-42d3-a456-426614174000");
    assert_int_equal(saga_record_set(r, "task_id", "t-1"), TODO_OK);
    int rc = saga_start(&ENGINE, &DEF, r, &err);
    if (rc != 0) return rc;
    return saga_run(&ENGINE, &DEF, r, &err);
}

static bool has_event(const char *e)
{
    for (int i = 0; i < F.n_events; i++)
        if (strcmp(F.events[i], e) == 0) return true;
    return false;
}

static void every_step_succeeds(void **state)
{
    (void)state;
    reset();
    saga_record r;
    assert_int_equal(start_and_run(&r), TODO_OK);
    assert_int_equal(r.state, SAGA_COMPLETED);
    assert_int_equal(F.stored.state, SAGA_COMPLETED);
    for (int i = 0; i < N; i++) {
        assert_int_equal(F.action_calls[i], 1);
        assert_int_equal(r.steps[i], SAGA_STEP_DONE);
        assert_int_equal(r.attempts[i], 1);
    }
    assert_int_equal(F.n_undo_order, 0);
    assert_string_equal(saga_record_get(&r, "made1"), "123e4567-e89b-42d3-a456-426614174000:create");
    assert_string_equal(F.events[0], "started");
    assert_string_equal(F.events[F.n_events - 1], "completed");
    /* Every event told was saved with its record first. */
    assert_int_equal(F.n_saved, F.n_events);
    for (int i = 0; i < F.n_events; i++) assert_string_equal(F.saved[i], F.events[i]);
    assert_true(has_event("step.completed notify"));
    assert_string_equal(saga_state_name(r.state), "COMPLETED");
}

static void a_permanent_failure_at_each_step_compensates_what_was_done(void **state)
{
    (void)state;
    for (int k = 0; k < N; k++) {
        reset();
        F.action[k][0] = SAGA_ABORT;
        F.n_action[k] = 1;
        saga_record r;
        assert_int_equal(start_and_run(&r), TODO_OK);
        assert_int_equal(r.state, SAGA_COMPENSATED);
        assert_int_equal(F.action_calls[k], 1); /* permanent: no retry */
        for (int i = k + 1; i < N; i++) assert_int_equal(F.action_calls[i], 0);
        /* Compensated in reverse order, each once, the failed step first
         * (when it has a compensation: it may have acted). */
        int top = STEPS[k].compensate != NULL ? k : k - 1;
        assert_int_equal(F.n_undo_order, top + 1);
        for (int j = 0; j <= top; j++) {
            assert_int_equal(F.undo_order[j], top - j);
            assert_int_equal(r.steps[top - j], SAGA_STEP_COMPENSATED);
        }
        if (top < k) assert_int_equal(r.steps[k], SAGA_STEP_FAILED);
        assert_non_null(strstr(r.error, STEPS[k].name));
        assert_non_null(strstr(r.error, "says no"));
        assert_true(has_event("compensating"));
        assert_string_equal(F.events[F.n_events - 1], "compensated");
    }
}

static void retries_then_success(void **state)
{
    (void)state;
    reset();
    F.action[1][0] = SAGA_RETRY;
    F.action[1][1] = SAGA_RETRY;
    F.action[1][2] = SAGA_OK;
    F.n_action[1] = 3;
    saga_record r;
    assert_int_equal(start_and_run(&r), TODO_OK);
    assert_int_equal(r.state, SAGA_COMPLETED);
    assert_int_equal(r.attempts[1], 3);
    assert_int_equal(F.action_ok[1], 1);
    /* Two backoffs: ~10 ms, then ~20 ms (+-25%). */
    assert_int_equal(F.n_sleeps, 2);
    assert_in_range(F.sleeps[0], 7, 13);
    assert_in_range(F.sleeps[1], 15, 25);
    assert_true(has_event("step.failed create"));
}

static void retries_exhausted_compensate(void **state)
{
    (void)state;
    reset();
    F.action[2][0] = SAGA_RETRY;
    F.n_action[2] = 1;
    saga_record r;
    assert_int_equal(start_and_run(&r), TODO_OK);
    assert_int_equal(r.state, SAGA_COMPENSATED);
    assert_int_equal(F.action_calls[2], 2); /* max_attempts of notify */
    assert_int_equal(F.n_undo_order, 2);
    assert_int_equal(F.undo_order[0], 1);
    assert_int_equal(F.undo_order[1], 0);
    /* Every attempt is told, with its kind and outcome (the step metrics). */
    static const char *const told[] = {"action cancel ok", "action create ok", "action notify retry",
                                       "action notify retry", "compensation create ok", "compensation cancel ok"};
    assert_int_equal(F.n_attempts, 6);
    for (int i = 0; i < 6; i++) assert_string_equal(F.attempts[i], told[i]);
}

static void a_step_past_its_timeout_is_retried_then_compensated(void **state)
{
    (void)state;
    reset();
    F.action_sleep_ms[1] = 40; /* timeout 20 ms: it answers OK, too late */
    saga_record r;
    assert_int_equal(start_and_run(&r), TODO_OK);
    assert_int_equal(r.state, SAGA_COMPENSATED);
    assert_int_equal(F.action_calls[1], 3);
    assert_non_null(strstr(r.error, "timed out after 20 ms"));
    /* It may have acted before its answer came too late: undone too. */
    assert_int_equal(F.n_undo_order, 2);
    assert_int_equal(F.undo_order[0], 1);
    assert_int_equal(F.undo_order[1], 0);
}

static void a_failing_compensation_ends_the_saga_failed(void **state)
{
    (void)state;
    reset();
    F.action[2][0] = SAGA_ABORT;
    F.n_action[2] = 1;
    F.undo[0][0] = SAGA_RETRY; /* step 0's compensation never works */
    F.n_undo[0] = 1;
    saga_record r;
    assert_int_equal(start_and_run(&r), TODO_OK);
    assert_int_equal(r.state, SAGA_FAILED);
    assert_int_equal(F.stored.state, SAGA_FAILED);
    assert_int_equal(r.steps[1], SAGA_STEP_COMPENSATED);
    assert_int_equal(r.steps[0], SAGA_STEP_COMP_FAILED);
    assert_int_equal(F.undo_calls[0], STEPS[0].max_attempts);
    assert_non_null(strstr(r.error, "compensating step cancel failed"));
    assert_non_null(strstr(r.error, "notify")); /* and what made it compensate */
    assert_string_equal(F.events[F.n_events - 1], "failed");
}

/* Runs the scenario set up by setup(), crashing at every save in turn and
 * resuming from what the store held; each must end as the uninterrupted run
 * did, never re-running an action the store held DONE. */
static void crash_everywhere(void (*setup)(void), saga_state want)
{
    reset();
    setup();
    saga_record r;
    assert_int_equal(start_and_run(&r), TODO_OK);
    assert_int_equal(r.state, want);
    int total = F.saves;
    for (int k = 1; k <= total; k++) {
        reset();
        setup();
        F.crash_at = k;
        saga_record r1;
        int rc = start_and_run(&r1);
        assert_int_equal(rc, TODO_EUNAVAIL);
        if (k == 1) continue; /* not even started: nothing stored, nothing to resume */
        saga_record resumed = F.stored; /* a new process loads the last saved record */
        todo_err err;
        assert_int_equal(saga_run(&ENGINE, &DEF, &resumed, &err), TODO_OK);
        assert_int_equal(resumed.state, want);
        assert_int_equal(F.done_rerun, 0);
        /* What was saved tells the whole story once: started, then one end. */
        const char *end = want == SAGA_COMPLETED ? "completed" : want == SAGA_FAILED ? "failed" : "compensated";
        assert_int_equal(saved_count("started"), 1);
        assert_int_equal(saved_count(end), 1);
        for (int i = 0; i < N; i++) assert_true(F.action_ok[i] <= 2); /* at most the in-flight one again */
    }
}

static void setup_success(void) {}
static void setup_fail_last(void)
{
    F.action[2][0] = SAGA_RETRY;
    F.action[2][1] = SAGA_ABORT;
    F.n_action[2] = 2;
    F.undo[1][0] = SAGA_RETRY;
    F.undo[1][1] = SAGA_OK;
    F.n_undo[1] = 2;
}
static void setup_comp_fails(void)
{
    F.action[1][0] = SAGA_ABORT;
    F.n_action[1] = 1;
    F.undo[0][0] = SAGA_ABORT;
    F.n_undo[0] = 1;
}

static void a_crash_at_any_save_resumes_to_the_same_end(void **state)
{
    (void)state;
    crash_everywhere(setup_success, SAGA_COMPLETED);
    crash_everywhere(setup_fail_last, SAGA_COMPENSATED);
    crash_everywhere(setup_comp_fails, SAGA_FAILED);
}

static int stop_now(void *ctx)
{
    (void)ctx;
    return F.action_calls[0] > 0;
}

static void a_stop_request_leaves_the_saga_resumable(void **state)
{
    (void)state;
    reset();
    saga_engine e = ENGINE;
    e.should_stop = stop_now;
    saga_record r;
    todo_err err;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "s-1");
    assert_int_equal(saga_start(&e, &DEF, &r, &err), TODO_OK);
    assert_int_equal(saga_run(&e, &DEF, &r, &err), TODO_EUNAVAIL);
    assert_int_equal(F.stored.state, SAGA_RUNNING);
    assert_int_equal(F.stored.step, 1);
    assert_int_equal(saga_run(&ENGINE, &DEF, &r, &err), TODO_OK);
    assert_int_equal(r.state, SAGA_COMPLETED);
    assert_int_equal(F.action_calls[0], 1);
}

static void the_context_is_bounded_and_states_parse(void **state)
{
    (void)state;
    saga_record r;
    memset(&r, 0, sizeof r);
    char key[16], big[SAGA_VALUE_MAX + 1];
    for (int i = 0; i < SAGA_MAX_CTX; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(saga_record_set(&r, key, "v"), TODO_OK);
    }
    assert_int_equal(saga_record_set(&r, "one-more", "v"), TODO_ETOOBIG);
    assert_int_equal(saga_record_set(&r, "k3", "changed"), TODO_OK);
    assert_string_equal(saga_record_get(&r, "k3"), "changed");
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(saga_record_set(&r, "k4", big), TODO_ETOOBIG);
    assert_null(saga_record_get(&r, "nope"));
    saga_state s;
    for (int i = SAGA_RUNNING; i <= SAGA_COMPENSATED; i++) {
        assert_int_equal(saga_state_parse(saga_state_name((saga_state)i), &s), TODO_OK);
        assert_int_equal(s, i);
    }
    assert_int_equal(saga_state_parse("DONE", &s), TODO_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_step_succeeds),
        cmocka_unit_test(a_permanent_failure_at_each_step_compensates_what_was_done),
        cmocka_unit_test(retries_then_success),
        cmocka_unit_test(retries_exhausted_compensate),
        cmocka_unit_test(a_step_past_its_timeout_is_retried_then_compensated),
        cmocka_unit_test(a_failing_compensation_ends_the_saga_failed),
        cmocka_unit_test(a_crash_at_any_save_resumes_to_the_same_end),
        cmocka_unit_test(a_stop_request_leaves_the_saga_resumable),
        cmocka_unit_test(the_context_is_bounded_and_states_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
