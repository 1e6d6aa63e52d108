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

typedef Google__Protobuf__DescriptorProto msg_t;
typedef Google__Protobuf__FileDescriptorProto file_t;

/* One top-level message or enum of the set and whether the root reaches it. */
typedef struct top {
    size_t file;
    const msg_t *msg;   /* or */
    const Google__Protobuf__EnumDescriptorProto *en;
    char *full;         /* "pkg.Name" */
    bool kept;
} top;

typedef struct prune {
    const Google__Protobuf__FileDescriptorSet *set;
    top *tops;
    size_t n_tops;
    const msg_t **queue; /* messages whose fields are still to be followed */
    size_t n_queue, cap_queue;
    bool oom;
} prune;

static void push(prune *p, const msg_t *m)
{
    if (p->n_queue == p->cap_queue) {
        size_t cap = p->cap_queue ? p->cap_queue * 2 : 32;
        const msg_t **q = realloc(p->queue, cap * sizeof *q);
        if (q == NULL) {
            p->oom = true;
            return;
        }
        p->queue = q;
        p->cap_queue = cap;
    }
    p->queue[p->n_queue++] = m;
    for (size_t i = 0; i < m->n_nested_type; i++) push(p, m->nested_type[i]); /* they come along with m */
}

/* Marks the top-level declaration holding ref (".pkg.Name" or
 * ".pkg.Name.Nested") as kept. */
static void keep(prune *p, const char *ref)
{
    if (ref == NULL) return;
    if (ref[0] == '.') ref++;
    for (size_t i = 0; i < p->n_tops; i++) {
        size_t n = strlen(p->tops[i].full);
        if (strncmp(ref, p->tops[i].full, n) != 0 || (ref[n] != '\0' && ref[n] != '.')) continue;
        if (!p->tops[i].kept) {
            p->tops[i].kept = true;
            if (p->tops[i].msg != NULL) push(p, p->tops[i].msg);
        }
        return;
    }
}

static char *full_name(const char *pkg, const char *name)
{
    size_t n = strlen(pkg ? pkg : "") + strlen(name ? name : "") + 2;
    char *s = malloc(n);
    if (s != NULL) snprintf(s, n, "%s%s%s", pkg && pkg[0] ? pkg : "", pkg && pkg[0] ? "." : "", name ? name : "");
    return s;
}

static int index_tops(prune *p)
{
    size_t n = 0;
    for (size_t f = 0; f < p->set->n_file; f++) n += p->set->file[f]->n_message_type + p->set->file[f]->n_enum_type;
    p->tops = calloc(n + 1, sizeof *p->tops);
    if (p->tops == NULL) return -1;
    for (size_t f = 0; f < p->set->n_file; f++) {
        const file_t *fd = p->set->file[f];
        for (size_t i = 0; i < fd->n_message_type; i++) {
            top *t = &p->tops[p->n_tops++];
            *t = (top){.file = f, .msg = fd->message_type[i], .full = full_name(fd->package, fd->message_type[i]->name)};
            if (t->full == NULL) return -1;
        }
        for (size_t i = 0; i < fd->n_enum_type; i++) {
            top *t = &p->tops[p->n_tops++];
            *t = (top){.file = f, .en = fd->enum_type[i], .full = full_name(fd->package, fd->enum_type[i]->name)};
            if (t->full == NULL) return -1;
        }
    }
    return 0;
}

/* Packs the kept declarations: shallow copies of the files that hold any,
 * in the set's order (protoc writes dependencies first). */
static int pack_kept(const prune *p, uint8_t **out, size_t *out_len)
{
    size_t nf = p->set->n_file;
    file_t *files = calloc(nf + 1, sizeof *files);
    file_t **kept_files = calloc(nf + 1, sizeof *kept_files);
    /* One array for every kept file's messages, enums and dependencies. */
    void **slots = calloc(p->n_tops + nf * 1 + 1, sizeof(void *));
    char **deps = calloc(nf * nf + 1, sizeof *deps);
    bool *file_kept = calloc(nf + 1, sizeof *file_kept);
    int rc = -1;
    if (files == NULL || kept_files == NULL || slots == NULL || deps == NULL || file_kept == NULL) goto out;
    for (size_t i = 0; i < p->n_tops; i++)
        if (p->tops[i].kept) file_kept[p->tops[i].file] = true;
    size_t n_out = 0, used = 0, used_deps = 0;
    for (size_t f = 0; f < nf; f++) {
        if (!file_kept[f]) continue;
        const file_t *src = p->set->file[f];
        file_t *dst = &files[f];
        google__protobuf__file_descriptor_proto__init(dst);
        dst->name = src->name;
        dst->package = src->package;
        dst->syntax = src->syntax;
        dst->options = src->options;
        dst->message_type = (msg_t **)&slots[used];
        for (size_t i = 0; i < p->n_tops; i++)
            if (p->tops[i].kept && p->tops[i].file == f && p->tops[i].msg != NULL)
                slots[used++] = (void *)p->tops[i].msg, dst->n_message_type++;
        dst->enum_type = (Google__Protobuf__EnumDescriptorProto **)&slots[used];
        for (size_t i = 0; i < p->n_tops; i++)
            if (p->tops[i].kept && p->tops[i].file == f && p->tops[i].en != NULL)
                slots[used++] = (void *)p->tops[i].en, dst->n_enum_type++;
        dst->dependency = &deps[used_deps];
        for (size_t d = 0; d < src->n_dependency; d++)
            for (size_t g = 0; g < nf; g++)
                if (file_kept[g] && strcmp(p->set->file[g]->name, src->dependency[d]) == 0) {
                    deps[used_deps++] = src->dependency[d];
                    dst->n_dependency++;
                    break;
                }
        kept_files[n_out++] = dst;
    }
    Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
    set.n_file = n_out;
    set.file = kept_files;
    *out_len = google__protobuf__file_descriptor_set__get_packed_size(&set);
    *out = malloc(*out_len + 1);
    if (*out == NULL) goto out;
    google__protobuf__file_descriptor_set__pack(&set, *out);
    rc = 0;
out:
    free(files);
    free(kept_files);
    free(slots);
    free(deps);
    free(file_kept);
    return rc;
}

int reg_prune(const uint8_t *all, size_t all_len, const char *message, uint8_t **out, size_t *out_len, todo_err *err)
{
    *out = NULL;
    *out_len = 0;
    prune p = {.set = google__protobuf__file_descriptor_set__unpack(NULL, all_len, all)};
    if (p.set == NULL) return todo_err_set(err, TODO_EINVAL, "the schema is not a serialized FileDescriptorSet");
    int rc = TODO_OK;
    if (index_tops(&p) != 0) {
        rc = todo_err_set(err, TODO_EINTERNAL, "out of memory");
        goto out;
    }
    size_t before = p.n_queue;
    for (size_t i = 0; i < p.n_tops; i++)
        if (p.tops[i].msg != NULL && strcmp(p.tops[i].full, message) == 0) keep(&p, message);
    if (p.n_queue == before) {
        rc = todo_err_set(err, TODO_EINVAL, "the descriptor set has no top-level message %s", message);
        goto out;
    }
    /* Follow every field's type from the root, each declaration once. */
    for (size_t q = 0; q < p.n_queue && !p.oom; q++)
        for (size_t i = 0; i < p.queue[q]->n_field; i++) keep(&p, p.queue[q]->field[i]->type_name);
    if (p.oom || pack_kept(&p, out, out_len) != 0) rc = todo_err_set(err, TODO_EINTERNAL, "out of memory");
out:
    for (size_t i = 0; i < p.n_tops; i++) free(p.tops[i].full);
    free(p.tops);
    free(p.queue);
    google__protobuf__file_descriptor_set__free_unpacked((Google__Protobuf__FileDescriptorSet *)p.set, NULL);
    return rc;
}

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
