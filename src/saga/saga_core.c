/* saga_core: see saga_core.h. */
#include "saga_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_PENDING 4

struct saga_exec {
    const saga_engine *e;
    const saga_def *def;
    saga_record *r;
    bool undo;
    /* The events of the transition being saved: stored with the record. */
    saga_event pending[MAX_PENDING];
    char pending_error[MAX_PENDING][SAGA_ERROR_MAX];
    int n_pending;
};

static const char *const STATE_NAMES[] = {"", "RUNNING", "COMPENSATING", "COMPLETED", "FAILED", "COMPENSATED"};

const char *saga_state_name(saga_state s)
{
    return s >= SAGA_RUNNING && s <= SAGA_COMPENSATED ? STATE_NAMES[s] : "UNKNOWN";
}

int saga_state_parse(const char *name, saga_state *out)
{
    for (int s = SAGA_RUNNING; s <= SAGA_COMPENSATED; s++)
        if (strcmp(name, STATE_NAMES[s]) == 0) {
            *out = (saga_state)s;
            return TODO_OK;
        }
    return TODO_EINVAL;
}

int64_t saga_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *saga_record_get(const saga_record *r, const char *key)
{
    for (int i = 0; i < r->n_ctx; i++)
        if (strcmp(r->keys[i], key) == 0) return r->values[i];
    return NULL;
}

int saga_record_set(saga_record *r, const char *key, const char *value)
{
    if (strlen(key) >= SAGA_KEY_MAX || strlen(value) >= SAGA_VALUE_MAX) return TODO_ETOOBIG;
    int i = 0;
    while (i < r->n_ctx && strcmp(r->keys[i], key) != 0) i++;
    if (i == r->n_ctx) {
        if (r->n_ctx == SAGA_MAX_CTX) return TODO_ETOOBIG;
        r->n_ctx++;
        snprintf(r->keys[i], SAGA_KEY_MAX, "%s", key);
    }
    snprintf(r->values[i], SAGA_VALUE_MAX, "%s", value);
    return TODO_OK;
}

const saga_record *saga_exec_record(const saga_exec *x) { return x->r; }
void *saga_app(const saga_exec *x) { return x->e->app; }
const char *saga_ctx_get(const saga_exec *x, const char *key) { return saga_record_get(x->r, key); }
int saga_ctx_set(saga_exec *x, const char *key, const char *value) { return saga_record_set(x->r, key, value); }

void saga_idempotency_key(const saga_exec *x, char *out, size_t cap)
{
    snprintf(out, cap, "%s:%s%s", x->r->id, x->def->steps[x->r->step].name, x->undo ? ":undo" : "");
}

/* Queues an event of the transition about to be saved. */
static void note(saga_exec *x, const char *what, const char *step, int attempt, const char *error)
{
    if (x->n_pending == MAX_PENDING) return;
    int i = x->n_pending++;
    snprintf(x->pending_error[i], SAGA_ERROR_MAX, "%s", error != NULL ? error : "");
    x->pending[i] = (saga_event){.what = what, .step = step, .attempt = attempt,
                                 .error = error != NULL ? x->pending_error[i] : NULL};
}

/* Saves the record with the queued events (one atomic write in the store),
 * then tells on_event of them. */
static int commit(saga_exec *x, todo_err *err)
{
    const saga_engine *e = x->e;
    int n = x->n_pending, rc = e->store.save(e->store.ctx, x->r, x->pending, n, err);
    x->n_pending = 0;
    if (rc != 0 || e->on_event == NULL) return rc;
    for (int i = 0; i < n; i++)
        e->on_event(x->r, x->pending[i].what, x->pending[i].step, x->pending[i].attempt, x->pending[i].error, e->ctx);
    return TODO_OK;
}

static void pause_ms(const saga_engine *e, int ms)
{
    if (e->sleep_ms != NULL) {
        e->sleep_ms(ms, e->ctx);
        return;
    }
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* The pause before attempt number `attempt` (2, 3, ...): base * 2^(n-2),
 * +-25% jitter, at most 30 s. */
static int backoff(const saga_step_def *s, int attempt)
{
    double ms = s->backoff_ms;
    for (int i = 2; i < attempt && ms < 30000; i++) ms *= 2;
    if (ms > 30000) ms = 30000;
    ms *= 0.75 + 0.5 * ((double)rand() / RAND_MAX);
    return (int)ms;
}

int saga_init(const saga_def *def, saga_record *r, todo_err *err)
{
    if (def->n_steps < 1 || def->n_steps > SAGA_MAX_STEPS)
        return todo_err_set(err, TODO_EINTERNAL, "saga %s has %d steps (1..%d)", def->type, def->n_steps,
                            SAGA_MAX_STEPS);
    snprintf(r->type, sizeof r->type, "%s", def->type);
    r->state = SAGA_RUNNING;
    r->step = 0;
    r->error[0] = '\0';
    for (int i = 0; i < SAGA_MAX_STEPS; i++) {
        r->steps[i] = SAGA_STEP_PENDING;
        r->attempts[i] = 0;
        r->errors[i][0] = '\0';
    }
    return TODO_OK;
}

int saga_start(const saga_engine *e, const saga_def *def, saga_record *r, todo_err *err)
{
    saga_exec x = {.e = e, .def = def, .r = r};
    int rc = saga_init(def, r, err);
    if (rc != 0) return rc;
    note(&x, "started", NULL, 0, NULL);
    return commit(&x, err);
}

/* Runs one attempt of the current step's action (or compensation, undo).
 * The attempt count is saved first. */
static int attempt(const saga_engine *e, saga_exec *x, bool undo, saga_result *res, char why[SAGA_ERROR_MAX],
                   todo_err *err)
{
    saga_record *r = x->r;
    const saga_step_def *s = &x->def->steps[r->step];
    int rc;
    if (e->step_delay_ms > 0) pause_ms(e, e->step_delay_ms);
    r->attempts[r->step]++;
    if ((rc = commit(x, err)) != 0) return rc;
    x->undo = undo;
    why[0] = '\0';
    int64_t started = saga_now_ms(), deadline = started + s->timeout_ms;
    *res = (undo ? s->compensate : s->action)(x, deadline, why);
    int64_t ended = saga_now_ms();
    if (ended > deadline) {
        snprintf(why, SAGA_ERROR_MAX, "timed out after %d ms", s->timeout_ms);
        *res = SAGA_RETRY;
    } else if (*res != SAGA_OK && why[0] == '\0') {
        snprintf(why, SAGA_ERROR_MAX, "%s", *res == SAGA_RETRY ? "failed (transient)" : "failed");
    }
    if (e->on_attempt != NULL) e->on_attempt(r, s->name, undo, *res, (double)(ended - started) / 1000.0, e->ctx);
    return TODO_OK;
}

/* True for a step whose effects may exist: done, or failed (it may have
 * acted before it timed out or answered an error). */
static bool acted(saga_step_state s)
{
    return s == SAGA_STEP_DONE || s == SAGA_STEP_FAILED;
}

/* Moves the compensation to the step before `from` that may have acted and
 * has something to undo; none left: the saga is COMPENSATED. */
static void next_to_compensate(const saga_def *def, saga_record *r, int from)
{
    int i = from - 1;
    while (i >= 0 && !(acted(r->steps[i]) && def->steps[i].compensate != NULL)) {
        if (r->steps[i] == SAGA_STEP_DONE) r->steps[i] = SAGA_STEP_COMPENSATED; /* nothing to undo */
        i--;
    }
    if (i < 0) {
        r->state = SAGA_COMPENSATED;
        return;
    }
    r->step = i;
    r->attempts[i] = 0;
}

static int run_forward(const saga_engine *e, saga_exec *x, todo_err *err)
{
    saga_record *r = x->r;
    const saga_step_def *s = &x->def->steps[r->step];
    saga_result res;
    char why[SAGA_ERROR_MAX];
    int rc;
    if (r->attempts[r->step] > 0 && r->attempts[r->step] < s->max_attempts)
        pause_ms(e, backoff(s, r->attempts[r->step] + 1));
    if ((rc = attempt(e, x, false, &res, why, err)) != 0) return rc;
    if (res == SAGA_OK) {
        r->steps[r->step] = SAGA_STEP_DONE;
        r->errors[r->step][0] = '\0';
        const char *name = s->name;
        int n = r->attempts[r->step];
        if (r->step + 1 == x->def->n_steps) r->state = SAGA_COMPLETED;
        else r->step++;
        note(x, "step.completed", name, n, NULL);
        if (r->state == SAGA_COMPLETED) note(x, "completed", NULL, 0, NULL);
        return commit(x, err);
    }
    snprintf(r->errors[r->step], SAGA_ERROR_MAX, "%s", why);
    if (res == SAGA_RETRY && r->attempts[r->step] < s->max_attempts) {
        note(x, "step.failed", s->name, r->attempts[r->step], why);
        return commit(x, err);
    }
    /* Given up: undo what was done. */
    int failed = r->step, tries = r->attempts[failed];
    r->steps[failed] = SAGA_STEP_FAILED;
    snprintf(r->error, sizeof r->error, "step %s failed after %d attempt(s): %.200s", s->name, r->attempts[failed],
             why);
    r->state = SAGA_COMPENSATING;
    next_to_compensate(x->def, r, failed + 1); /* the failed step too */
    note(x, "step.failed", s->name, tries, why);
    note(x, "compensating", NULL, 0, r->error);
    if (r->state == SAGA_COMPENSATED) note(x, "compensated", NULL, 0, r->error);
    return commit(x, err);
}

static int run_compensation(const saga_engine *e, saga_exec *x, todo_err *err)
{
    saga_record *r = x->r;
    const saga_step_def *s = &x->def->steps[r->step];
    saga_result res;
    char why[SAGA_ERROR_MAX];
    int rc;
    if (!acted(r->steps[r->step]) || s->compensate == NULL) { /* resumed between two saves */
        next_to_compensate(x->def, r, r->step);
        if (r->state == SAGA_COMPENSATED) note(x, "compensated", NULL, 0, r->error);
        return commit(x, err);
    }
    if (r->attempts[r->step] > 0 && r->attempts[r->step] < s->max_attempts)
        pause_ms(e, backoff(s, r->attempts[r->step] + 1));
    if ((rc = attempt(e, x, true, &res, why, err)) != 0) return rc;
    if (res == SAGA_OK) {
        int done = r->step;
        r->steps[done] = SAGA_STEP_COMPENSATED;
        next_to_compensate(x->def, r, done);
        note(x, "step.compensated", s->name, r->attempts[done], NULL);
        if (r->state == SAGA_COMPENSATED) note(x, "compensated", NULL, 0, r->error);
        return commit(x, err);
    }
    snprintf(r->errors[r->step], SAGA_ERROR_MAX, "undo: %.280s", why);
    if (res == SAGA_RETRY && r->attempts[r->step] < s->max_attempts) {
        note(x, "step.compensation_failed", s->name, r->attempts[r->step], why);
        return commit(x, err);
    }
    r->steps[r->step] = SAGA_STEP_COMP_FAILED;
    char cause[SAGA_ERROR_MAX];
    snprintf(cause, sizeof cause, "%s", r->error);
    snprintf(r->error, sizeof r->error, "compensating step %s failed after %d attempt(s): %.120s (after: %.100s)",
             s->name, r->attempts[r->step], why, cause);
    r->state = SAGA_FAILED;
    note(x, "step.compensation_failed", s->name, r->attempts[r->step], why);
    note(x, "failed", NULL, 0, r->error);
    return commit(x, err);
}

int saga_run(const saga_engine *e, const saga_def *def, saga_record *r, todo_err *err)
{
    saga_exec x = {.e = e, .def = def, .r = r};
    int rc;
    if (r->step < 0 || r->step >= def->n_steps || def->n_steps > SAGA_MAX_STEPS)
        return todo_err_set(err, TODO_EINTERNAL, "saga %s: step %d of %d", r->id, r->step, def->n_steps);
    while (r->state == SAGA_RUNNING || r->state == SAGA_COMPENSATING) {
        if (e->should_stop != NULL && e->should_stop(e->ctx))
            return todo_err_set(err, TODO_EUNAVAIL, "stopping; saga %s resumes later", r->id);
        rc = r->state == SAGA_RUNNING ? run_forward(e, &x, err) : run_compensation(e, &x, err);
        if (rc != 0) return rc;
    }
    return TODO_OK;
}
