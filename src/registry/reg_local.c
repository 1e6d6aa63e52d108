/* reg_local: see reg_local.h. */
#include "reg_local.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "log.h"
#include "pgx.h"
#include "reg_store.h"

extern const unsigned char todo_descriptor_set[];
extern const size_t todo_descriptor_set_len;

int reg_compiled_schema(const char *message, uint8_t **out, size_t *out_len, todo_err *err)
{
    return reg_prune(todo_descriptor_set, todo_descriptor_set_len, message, out, out_len, err);
}

int reg_register_produced(PGconn *pg, const char *const *types, size_t n, todo_err *err)
{
    const event_schema *all;
    size_t n_all = event_schemas(&all);
    for (size_t t = 0; t < n; t++) {
        bool any = false;
        for (size_t i = 0; i < n_all; i++) {
            if (strcmp(all[i].type, types[t]) != 0) continue;
            any = true;
            uint8_t *bytes;
            size_t len;
            int id, version, rc;
            reg_report report;
            if ((rc = reg_compiled_schema(all[i].message, &bytes, &len, err)) != 0) return rc;
            rc = reg_store_register(pg, all[i].type, all[i].message, bytes, len, true, &id, &version, &report, err);
            free(bytes);
            if (rc == TODO_EPRECOND) {
                for (int k = 0; k < report.n && k < REG_MAX_VIOLATIONS; k++)
                    log_error("registry", "schema refused", "subject=%s message=%s violation=\"%s\"", all[i].type,
                              all[i].message, report.violations[k]);
                return todo_err_set(err, TODO_EPRECOND,
                                    "the registry refuses %s version %d (%s): %.400s", all[i].type,
                                    all[i].version, all[i].message, report.n > 0 ? report.violations[0] : err->msg);
            }
            if (rc != 0) return rc;
            event_schema_id_set(all[i].type, all[i].version, id);
            log_debug("registry", "schema registered", "subject=%s message=%s id=%d version=%d", all[i].type,
                      all[i].message, id, version);
        }
        if (!any) return todo_err_set(err, TODO_EINVAL, "no schema is known for event type %s", types[t]);
    }
    return TODO_OK;
}

int reg_register_at_startup(const char *pg_url, const char *app, const char *const *types, size_t n, todo_err *err)
{
    PGconn *pg = pgx_connect(pg_url, app, err);
    if (pg == NULL) return err->code;
    int rc = reg_register_produced(pg, types, n, err);
    pgx_close(pg);
    if (rc == 0) log_info("registry", "schemas registered", "app=%s subjects=%zu", app, n);
    return rc;
}

/* ---- resolving ---- */

#define CACHE_SLOTS 512        /* (id, subject) pairs; a full cache asks the database */
#define UNKNOWN_RETRY_S 10     /* an unknown id is asked again after this long */

typedef struct entry {
    int32_t id;
    char subject[104];
    bool found;                /* registered under subject */
    int version;               /* in the subject */
    char message[256];
    time_t asked;
} entry;

struct reg_resolver {
    pthread_mutex_t mu;
    entry slots[CACHE_SLOTS];
    size_t n;
};

reg_resolver *reg_resolver_new(void)
{
    reg_resolver *r = calloc(1, sizeof *r);
    if (r != NULL) pthread_mutex_init(&r->mu, NULL);
    return r;
}

void reg_resolver_free(reg_resolver *r)
{
    if (r == NULL) return;
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static bool cached(reg_resolver *r, int32_t id, const char *subject, entry *out)
{
    bool hit = false;
    time_t now = time(NULL);
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n && !hit; i++) {
        const entry *e = &r->slots[i];
        if (e->id == id && strcmp(e->subject, subject) == 0 && (e->found || now - e->asked < UNKNOWN_RETRY_S)) {
            *out = *e;
            hit = true;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return hit;
}

static void remember(reg_resolver *r, const entry *e)
{
    pthread_mutex_lock(&r->mu);
    size_t i = 0;
    while (i < r->n && !(r->slots[i].id == e->id && strcmp(r->slots[i].subject, e->subject) == 0)) i++;
    if (i < CACHE_SLOTS) {
        r->slots[i] = *e;
        if (i == r->n) r->n++;
    }
    pthread_mutex_unlock(&r->mu);
}

static int lookup(PGconn *pg, int32_t id, const char *subject, entry *e, todo_err *err)
{
    char idt[16];
    snprintf(idt, sizeof idt, "%d", (int)id);
    const char *p[2] = {idt, subject};
    PGresult *res = pgx_exec(pg,
                             "select s.message, coalesce(v.version, 0) from registry.schemas s"
                             " left join registry.versions v on v.schema_id = s.id and v.subject = $2"
                             " where s.id = $1::int",
                             2, p, err);
    if (res == NULL) return err->code;
    memset(e, 0, sizeof *e);
    e->id = id;
    snprintf(e->subject, sizeof e->subject, "%s", subject);
    e->asked = time(NULL);
    if (PQntuples(res) == 1) {
        snprintf(e->message, sizeof e->message, "%s", PQgetvalue(res, 0, 0));
        e->version = atoi(PQgetvalue(res, 0, 1));
        e->found = e->version > 0;
    }
    PQclear(res);
    return TODO_OK;
}

int reg_resolve_envelope(reg_resolver *r, PGconn *pg, Todo__V1__EventEnvelope *env, todo_err *err)
{
    if (env->schema_id == 0) return TODO_OK; /* written before the registry */
    if (env->schema_id < 0) return todo_err_set(err, TODO_EINVAL, "schema id %d is not a registry id", env->schema_id);
    if (strlen(env->event_type) > 100)
        return todo_err_set(err, TODO_EINVAL, "event type is longer than any subject");
    entry e;
    if (!cached(r, env->schema_id, env->event_type, &e)) {
        int rc = lookup(pg, env->schema_id, env->event_type, &e, err);
        if (rc != 0) return rc;
        remember(r, &e);
    }
    if (e.message[0] == '\0')
        return todo_err_set(err, TODO_EINVAL, "schema id %d is not registered", env->schema_id);
    if (!e.found)
        return todo_err_set(err, TODO_EINVAL, "schema id %d (%s) is not registered for %s", env->schema_id, e.message,
                            env->event_type);
    const event_schema *all;
    size_t n_all = event_schemas(&all);
    const char *newest = NULL;
    for (size_t i = 0; i < n_all; i++) {
        if (strcmp(all[i].type, env->event_type) != 0) continue;
        newest = all[i].message;
        if (strcmp(all[i].message, e.message) == 0) {
            env->schema_version = all[i].version;
            return TODO_OK;
        }
    }
    return todo_err_set(err, TODO_EINVAL,
                        "schema id %d (%s version %d, %s) is not a version this consumer reads (newest it reads: %s)",
                        env->schema_id, env->event_type, e.version, e.message, newest ? newest : "none");
}
