/*
 * saga_core: the saga orchestrator.
 *
 * A saga is an ordered list of steps (a saga_def). Each step has an action,
 * an optional compensation, a timeout and a retry policy (attempts,
 * exponential backoff with jitter). saga_run drives one saga from whatever
 * state it was persisted in:
 *
 *   RUNNING       run the current step's action; on success persist the step
 *                 DONE (with what it added to the context) and go on; on a
 *                 transient failure or a timeout retry it after a backoff;
 *                 when its attempts are used up, or on a permanent failure,
 *                 the saga turns COMPENSATING;
 *   COMPENSATING  compensate, in reverse order, the step that failed (it may
 *                 have acted before it timed out or answered an error) and
 *                 the DONE steps before it (those without a compensation are
 *                 skipped), each with its own retries; when
 *                 all are compensated the saga ends COMPENSATED; a
 *                 compensation that still fails ends it FAILED (reported,
 *                 never dropped);
 *   COMPLETED, COMPENSATED, FAILED   final: nothing to do.
 *
 * The saga record (state, current step, per step its state, attempts and
 * last error, and the context) is saved through the store BEFORE every
 * attempt (attempts + 1) and AFTER every outcome. So after a crash at any
 * point saga_run resumes from the last record: a step recorded DONE is never
 * run again; a step that was in flight is run again, which is why every
 * action and compensation must be idempotent (saga_idempotency_key gives
 * each a stable key to hand to the system it calls), and a compensation
 * must accept that there is nothing to undo.
 *
 * Timeouts: an action receives its deadline and must honour it (a gRPC call
 * with that deadline, say); an attempt that returns after its deadline
 * counts as timed out whatever it answered, and is retried like a transient
 * failure.
 *
 * The context is a small text map (saga_ctx_get/saga_ctx_set) holding the
 * saga's input and what its steps found out (ids of what they created...).
 */
#ifndef TODO_SAGA_CORE_H
#define TODO_SAGA_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "todo_err.h"

#define SAGA_MAX_STEPS 8
#define SAGA_MAX_CTX 24
#define SAGA_KEY_MAX 48
#define SAGA_VALUE_MAX 512
#define SAGA_ERROR_MAX 300

typedef enum saga_state {
    SAGA_RUNNING = 1,
    SAGA_COMPENSATING = 2,
    SAGA_COMPLETED = 3,
    SAGA_FAILED = 4,
    SAGA_COMPENSATED = 5
} saga_state;

typedef enum saga_step_state {
    SAGA_STEP_PENDING = 0,
    SAGA_STEP_DONE = 1,
    SAGA_STEP_FAILED = 2,        /* its action failed for good: compensation began */
    SAGA_STEP_COMPENSATED = 3,
    SAGA_STEP_COMP_FAILED = 4    /* its compensation failed for good: the saga FAILED */
} saga_step_state;

/* What an action or a compensation answers. */
typedef enum saga_result {
    SAGA_OK = 0,
    SAGA_RETRY = 1,   /* transient: try again after a backoff */
    SAGA_ABORT = 2    /* permanent: do not retry */
} saga_result;

typedef struct saga_record {
    char id[37];
    char type[32];
    saga_state state;
    int step;                          /* the step running (or, compensating, being compensated) */
    saga_step_state steps[SAGA_MAX_STEPS];
    int attempts[SAGA_MAX_STEPS];      /* of the step's action, or of its compensation once compensating */
    char errors[SAGA_MAX_STEPS][SAGA_ERROR_MAX];
    char error[SAGA_ERROR_MAX];        /* why the saga compensated or failed */
    int n_ctx;
    char keys[SAGA_MAX_CTX][SAGA_KEY_MAX];
    char values[SAGA_MAX_CTX][SAGA_VALUE_MAX];
} saga_record;

typedef struct saga_exec saga_exec;

/* An action or compensation: do the step for x's saga before deadline_ms
 * (a CLOCK_MONOTONIC time, saga_now_ms); on failure write why into err. */
typedef saga_result (*saga_step_fn)(saga_exec *x, int64_t deadline_ms, char err[SAGA_ERROR_MAX]);

typedef struct saga_step_def {
    const char *name;
    saga_step_fn action;
    saga_step_fn compensate;   /* NULL: nothing to undo */
    int timeout_ms;
    int max_attempts;          /* for the action and for the compensation */
    int backoff_ms;            /* before the 2nd attempt; doubles each time, +-25% jitter, at most 30 s */
} saga_step_def;

typedef struct saga_def {
    const char *type;          /* "task_completion" */
    const saga_step_def *steps;
    int n_steps;
} saga_def;

/* An event of a transition: what ("started", "completed", "compensating",
 * "compensated", "failed" for the saga; "step.completed", "step.failed" (an
 * attempt), "step.compensated", "step.compensation_failed" for a step),
 * the step (NULL for the saga's own), the attempt, the error (or NULL). */
typedef struct saga_event {
    const char *what;
    const char *step;
    int attempt;
    const char *error;
} saga_event;

/* Where sagas are kept. save persists the whole record (insert or replace)
 * together with the events of the transition, atomically (the store's
 * outbox: they are published at least once); a failure stops saga_run (the
 * saga resumes from the last saved record, the events are not lost: the
 * transition is made again). */
typedef struct saga_store {
    int (*save)(void *store, const saga_record *r, const saga_event *events, int n_events, todo_err *err);
    void *ctx;
} saga_store;

/* Told of every event after it was saved (logging). May be NULL. */
typedef void (*saga_event_fn)(const saga_record *r, const char *what, const char *step, int attempt,
                              const char *error, void *ctx);

typedef struct saga_engine {
    saga_store store;
    saga_event_fn on_event;
    void *ctx;                 /* handed to on_event, sleep_ms and should_stop */
    void *app;                 /* handed to the steps (saga_app) */
    /* Sleeps ms (tests pass a fake); NULL: nanosleep. */
    void (*sleep_ms)(int ms, void *ctx);
    /* Nonzero stops saga_run between attempts (shutdown); may be NULL. */
    int (*should_stop)(void *ctx);
    int step_delay_ms;         /* a pause before every attempt (tests, demos); 0: none */
    /* Told of every attempt of a step's action (undo: its compensation)
     * once it returned: its result and how long it took (metrics). May be
     * NULL. */
    void (*on_attempt)(const saga_record *r, const char *step, bool undo, saga_result res, double seconds,
                       void *ctx);
} saga_engine;

/* Makes r a new saga of def (RUNNING at step 0), keeping its id and
 * context; saves nothing. TODO_EINTERNAL when def has too many steps. */
int saga_init(const saga_def *def, saga_record *r, todo_err *err);

/* saga_init, then saves r and tells "started". */
int saga_start(const saga_engine *e, const saga_def *def, saga_record *r, todo_err *err);

/* Drives r until it is final, a save fails (TODO_EUNAVAIL or the store's
 * status; resume later), or should_stop says so (TODO_EUNAVAIL). Returns
 * TODO_OK when r is final. */
int saga_run(const saga_engine *e, const saga_def *def, saga_record *r, todo_err *err);

/* For steps: the saga, the engine's app pointer, the context. */
const saga_record *saga_exec_record(const saga_exec *x);
void *saga_app(const saga_exec *x);
const char *saga_ctx_get(const saga_exec *x, const char *key);          /* NULL when unset */
int saga_ctx_set(saga_exec *x, const char *key, const char *value);   /* TODO_ETOOBIG when full or too long */

/* The context of a record outside a step (when starting a saga). */
const char *saga_record_get(const saga_record *r, const char *key);
int saga_record_set(saga_record *r, const char *key, const char *value);

/* A stable idempotency key for the current step of x ("<saga id>:<step>"
 * or "<saga id>:<step>:undo" while compensating), in out (at least 80
 * bytes). */
void saga_idempotency_key(const saga_exec *x, char *out, size_t cap);

const char *saga_state_name(saga_state s);            /* "RUNNING"... */
int saga_state_parse(const char *name, saga_state *out);

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t saga_now_ms(void);

#endif
