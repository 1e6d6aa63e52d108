/* reg_service: see reg_service.h. */
#include "reg_service.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "reg_store.h"
#include "todo/v1/registry.pb-c.h"

static const reg_service_opts *opts;

/* Authenticates the caller (and checks it may write), then the database. */
static int begin(grpcx_call *c, bool write, PGconn **pg, todo_err *err)
{
    const char *user = grpcx_call_user(c); /* the hosting server's authenticate hook named the caller */
    if (user == NULL) return todo_err_set(err, TODO_EUNAUTH, "the caller is not authenticated");
    /* Writers hold a token of the scope, signed with the service secret:
     * no user token (whoever can sign those) can claim it. */
    if (write && !grpcx_call_has_scope(c, AUTH_SCOPE_REGISTRY_WRITE))
        return todo_err_set(err, TODO_EDENIED,
                            "%s may not change the schema registry: that needs a token with scope %s "
                            "(todoctl token --service NAME --scope %s)",
                            user, AUTH_SCOPE_REGISTRY_WRITE, AUTH_SCOPE_REGISTRY_WRITE);
    if ((*pg = opts->pg(c, err)) == NULL) return todo_err_set(err, TODO_EUNAVAIL, "the database is unreachable; retry later");
    return TODO_OK;
}

static int subject_arg(const char *subject, bool global_ok, todo_err *err)
{
    if ((global_ok && strcmp(subject, "*") == 0) || reg_subject_valid(subject)) return TODO_OK;
    return todo_err_set(err, TODO_EINVAL, "subject: 1 to 100 of a-z, 0-9, '.', '_', '-'%s; got \"%.100s\"",
                        global_ok ? " (or \"*\" for the global default)" : "", subject);
}

static int list_subjects(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    (void)req;
    PGconn *pg;
    int rc = begin(c, false, &pg, err);
    if (rc != 0) return rc;
    reg_subject_info *subjects;
    size_t n;
    if ((rc = reg_store_list(pg, &subjects, &n, err)) != 0) return rc;
    arena *a = grpcx_call_arena(c);
    Todo__V1__ListSubjectsResponse *r = arena_alloc(a, sizeof *r);
    todo__v1__list_subjects_response__init(r);
    r->n_subjects = n;
    r->subjects = arena_calloc(a, (n + 1) * sizeof *r->subjects);
    for (size_t i = 0; i < n; i++) {
        Todo__V1__SubjectInfo *s = arena_alloc(a, sizeof *s);
        todo__v1__subject_info__init(s);
        s->subject = arena_strdup(a, subjects[i].subject);
        s->latest_version = subjects[i].latest_version;
        s->latest_schema_id = subjects[i].latest_id;
        s->message = arena_strdup(a, subjects[i].message);
        s->mode = arena_strdup(a, subjects[i].mode);
        s->mode_is_default = subjects[i].mode_is_default;
        r->subjects[i] = s;
    }
    free(subjects);
    *resp = &r->base;
    return TODO_OK;
}

static int get_schema(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__GetSchemaRequest *q = (const Todo__V1__GetSchemaRequest *)req;
    if (q->schema_id < 0) return todo_err_set(err, TODO_EINVAL, "schema_id: must be positive");
    if (q->schema_id > 0 && q->subject[0] != '\0')
        return todo_err_set(err, TODO_EINVAL, "subject and schema_id: ask by one of them");
    if (q->schema_id == 0) {
        int rc = subject_arg(q->subject, false, err);
        if (rc != 0) return rc;
        if (q->version < 0) return todo_err_set(err, TODO_EINVAL, "version: 0 (the latest) or a version number");
    }
    PGconn *pg;
    int rc = begin(c, false, &pg, err);
    if (rc != 0) return rc;
    reg_schema_row row;
    rc = q->schema_id > 0 ? reg_store_by_id(pg, q->schema_id, &row, err) : reg_store_get(pg, q->subject, q->version, &row, err);
    if (rc != 0) return rc;
    arena *a = grpcx_call_arena(c);
    Todo__V1__Schema *r = arena_alloc(a, sizeof *r);
    todo__v1__schema__init(r);
    r->subject = arena_strdup(a, q->schema_id > 0 ? "" : q->subject);
    r->version = row.version;
    r->schema_id = row.id;
    r->message = arena_strdup(a, row.message);
    r->descriptor_set.len = row.len;
    r->descriptor_set.data = arena_alloc(a, row.len + 1);
    memcpy(r->descriptor_set.data, row.bytes, row.len);
    reg_schema_row_cleanup(&row);
    *resp = &r->base;
    return TODO_OK;
}

/* CheckSchema and RegisterSchema. */
static int check_or_register(grpcx_call *c, const ProtobufCMessage *req, bool do_register, reg_report *report,
                             int *id, int *version, PGconn **pg, todo_err *err)
{
    const Todo__V1__SchemaRequest *q = (const Todo__V1__SchemaRequest *)req;
    int rc = subject_arg(q->subject, false, err);
    if (rc != 0) return rc;
    /* Checking costs as much as registering: both are for writers, and the
     * caller is known before the set is looked at. */
    if ((rc = begin(c, true, pg, err)) != 0) return rc;
    if (q->descriptor_set.len == 0) return todo_err_set(err, TODO_EINVAL, "descriptor_set: a serialized FileDescriptorSet is required");
    if (q->descriptor_set.len > REG_MAX_SCHEMA_BYTES)
        return todo_err_set(err, TODO_ETOOBIG, "descriptor_set: at most %d bytes, got %zu", REG_MAX_SCHEMA_BYTES,
                            q->descriptor_set.len);
    rc = reg_store_register(*pg, q->subject, q->message, q->descriptor_set.data, q->descriptor_set.len, do_register,
                            id, version, report, err);
    if (rc != TODO_ENOTFOUND) return rc;
    char why[sizeof err->msg];
    snprintf(why, sizeof why, "%s", err->msg);
    return todo_err_set(err, TODO_EINVAL, "message: %.200s", why);
}

static int check_schema(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    reg_report report;
    int id, version;
    PGconn *pg = NULL;
    int rc = check_or_register(c, req, false, &report, &id, &version, &pg, err);
    if (rc != 0 && rc != TODO_EPRECOND) return rc;
    arena *a = grpcx_call_arena(c);
    Todo__V1__CheckSchemaResponse *r = arena_alloc(a, sizeof *r);
    todo__v1__check_schema_response__init(r);
    r->compatible = rc == 0;
    reg_mode m;
    r->mode = arena_strdup(a, reg_store_mode(pg, ((const Todo__V1__SchemaRequest *)req)->subject, &m, err) == 0
                                  ? reg_mode_name(m)
                                  : "");
    size_t n = report.n < REG_MAX_VIOLATIONS ? (size_t)report.n : REG_MAX_VIOLATIONS;
    r->violations = arena_calloc(a, (n + 1) * sizeof *r->violations);
    for (size_t i = 0; i < n; i++) r->violations[i] = arena_strdup(a, report.violations[i]);
    r->n_violations = n;
    *resp = &r->base;
    return TODO_OK;
}

static int register_schema(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    reg_report report;
    int id, version;
    PGconn *pg;
    int rc = check_or_register(c, req, true, &report, &id, &version, &pg, err);
    if (rc == TODO_EPRECOND && report.n > 1) {
        char first[sizeof err->msg];
        snprintf(first, sizeof first, "%s", err->msg);
        return todo_err_set(err, TODO_EPRECOND, "%.900s (and %d more: CheckSchema lists them)", first, report.n - 1);
    }
    if (rc != 0) return rc;
    Todo__V1__RegisterSchemaResponse *r = arena_alloc(grpcx_call_arena(c), sizeof *r);
    todo__v1__register_schema_response__init(r);
    r->schema_id = id;
    r->version = version;
    *resp = &r->base;
    return TODO_OK;
}

static int set_mode(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__SetModeRequest *q = (const Todo__V1__SetModeRequest *)req;
    int rc = subject_arg(q->subject, true, err);
    if (rc != 0) return rc;
    reg_mode m;
    if (reg_mode_parse(q->mode, &m) != 0)
        return todo_err_set(err, TODO_EINVAL, "mode: one of NONE, BACKWARD, FORWARD, FULL, BACKWARD_TRANSITIVE, "
                                              "FORWARD_TRANSITIVE, FULL_TRANSITIVE; got \"%.40s\"", q->mode);
    PGconn *pg;
    if ((rc = begin(c, true, &pg, err)) != 0) return rc;
    if ((rc = reg_store_set_mode(pg, q->subject, m, err)) != 0) return rc;
    arena *a = grpcx_call_arena(c);
    Todo__V1__SetModeResponse *r = arena_alloc(a, sizeof *r);
    todo__v1__set_mode_response__init(r);
    r->subject = arena_strdup(a, q->subject);
    r->mode = arena_strdup(a, reg_mode_name(m));
    *resp = &r->base;
    return TODO_OK;
}

int reg_service_register(grpcx_server *s, const reg_service_opts *o, todo_err *err)
{
    static const grpcx_method methods[] = {
        {"ListSubjects", list_subjects}, {"GetSchema", get_schema},   {"CheckSchema", check_schema},
        {"RegisterSchema", register_schema}, {"SetMode", set_mode},
    };
    opts = o;
    return grpcx_server_add_service(s, &todo__v1__schema_registry_service__descriptor, methods,
                                    sizeof methods / sizeof methods[0], err);
}
