/*
 * todoctl dlq: the dead-letter topic (system.dlq.v1) for operators.
 *
 *   dlq list [FILTERS]            the dead letters still there (compaction
 *                                 keeps the last record per id; a redriven
 *                                 one is tombstoned), oldest first
 *   dlq stats [FILTERS]           counts by reason code, event type, group
 *                                 and age
 *   FILTERS: --group G --reason CODE --type T --user U --since DURATION
 *            (30m, 2h, 7d: dead-lettered that recently)
 *   dlq show ID                   one in full: reason, origin, key, headers,
 *                                 and the event it holds when it decodes
 *   dlq redrive ID | --all [FILTERS] [--force]
 *                                 puts the original record (key, value,
 *                                 headers, byte for byte) back on its topic,
 *                                 then tombstones the dead letter; the record
 *                                 carries its dead-letter count, so if it
 *                                 fails again its letter says attempt 2, 3...;
 *                                 one dead-lettered DLQ_MAX_REDRIVES+1 times
 *                                 is not redriven again without --force
 *   dlq discard ID | --all [FILTERS] --why TEXT [--by NAME]
 *                                 drops dead letters for good, recording why
 *                                 and who decided
 *   dlq decisions [--since DURATION]
 *                                 what operators decided: redriven or
 *                                 discarded, when, by whom, why
 *
 * Every redrive and discard is first recorded in todo_meta.dlq_decisions
 * (migration 0018), then carried out, then marked done: two operators never
 * both redrive one letter (the second is told who holds it), and a claim
 * left undone for a minute (a todoctl that crashed) may be taken over.
 *
 * A redriven record goes to the end of its topic (same key, so the same
 * partition); a consumer handles it like any record: the projector applies it
 * unless it already applied that version of the aggregate, or dead-letters
 * it again (under a new id) if it still cannot.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dlq.h"
#include "park.h"
#include "pgx.h"
#include "event.h"
#include "kafkax.h"
#include "todo/v1/events.pb-c.h"
#include "todoctl.h"

#define DLQ_MAX_REDRIVES 3

/* Which letters a command works on. */
typedef struct filter {
    const char *group, *reason, *type, *user;
    long long since_s;   /* 0: any age */
} filter;

static long long seconds_of(const Google__Protobuf__Timestamp *ts)
{
    return ts != NULL ? (long long)ts->seconds : 0;
}

static bool matches(const filter *f, const Todo__V1__DeadLetter *dl)
{
    if (dl == NULL) return false;
    if (f->group != NULL && strcmp(dl->consumer_group, f->group) != 0) return false;
    if (f->reason != NULL && strcmp(dl->reason_code[0] ? dl->reason_code : dlq_reason_code(dl->reason), f->reason) != 0)
        return false;
    if (f->type != NULL && strcmp(dl->event_type, f->type) != 0) return false;
    if (f->user != NULL && strcmp(dl->user_id, f->user) != 0) return false;
    if (f->since_s > 0 && seconds_of(dl->failed_at) < (long long)time(NULL) - f->since_s) return false;
    return true;
}

/* "30m", "2h", "7d", "90s" -> seconds; -1 when not a duration. */
static long long duration_s(const char *s)
{
    char *end;
    long long n = strtoll(s, &end, 10);
    if (end == s || n <= 0) return -1;
    switch (*end) {
    case 's': n *= 1; break;
    case 'm': n *= 60; break;
    case 'h': n *= 3600; break;
    case 'd': n *= 86400; break;
    default: return -1;
    }
    return end[1] == '\0' ? n : -1;
}

typedef struct letter {
    char id[40];
    Todo__V1__DeadLetter *dl;   /* NULL: tombstoned */
} letter;

typedef struct letters {
    letter *v;
    size_t n, cap;
} letters;

static int collect(const rd_kafka_message_t *m, void *ctx)
{
    letters *ls = ctx;
    char id[40];
    if (m->key == NULL || m->key_len == 0 || m->key_len >= sizeof id) return 0;
    memcpy(id, m->key, m->key_len);
    id[m->key_len] = '\0';
    Todo__V1__DeadLetter *dl =
        m->payload != NULL ? todo__v1__dead_letter__unpack(NULL, m->len, m->payload) : NULL; /* NULL: a tombstone */
    for (size_t i = 0; i < ls->n; i++)
        if (strcmp(ls->v[i].id, id) == 0) { /* a later record of the same id wins */
            if (ls->v[i].dl != NULL) todo__v1__dead_letter__free_unpacked(ls->v[i].dl, NULL);
            ls->v[i].dl = dl;
            return 0;
        }
    if (ls->n == ls->cap) {
        size_t cap = ls->cap ? ls->cap * 2 : 64;
        letter *v = realloc(ls->v, cap * sizeof *v);
        if (v == NULL) {
            if (dl != NULL) todo__v1__dead_letter__free_unpacked(dl, NULL);
            return 1;
        }
        ls->v = v;
        ls->cap = cap;
    }
    snprintf(ls->v[ls->n].id, sizeof ls->v[0].id, "%s", id);
    ls->v[ls->n++].dl = dl;
    return 0;
}

static void letters_free(letters *ls)
{
    for (size_t i = 0; i < ls->n; i++)
        if (ls->v[i].dl != NULL) todo__v1__dead_letter__free_unpacked(ls->v[i].dl, NULL);
    free(ls->v);
}

static int load(const todo_config *cfg, letters *ls)
{
    todo_err err;
    memset(ls, 0, sizeof *ls);
    if (kafkax_read_all(cfg->kafka_brokers, DLQ_TOPIC, collect, ls, &err) != 0) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        letters_free(ls);
        return 1;
    }
    return 0;
}

static void print_time(const Google__Protobuf__Timestamp *ts, char *out, size_t cap)
{
    if (ts == NULL) snprintf(out, cap, "-");
    else event_format_time(event_timestamp_us(ts), out, cap);
}

static int list(const todo_config *cfg, const filter *f)
{
    letters ls;
    if (load(cfg, &ls) != 0) return 1;
    size_t shown = 0;
    for (size_t i = 0; i < ls.n; i++) {
        const Todo__V1__DeadLetter *dl = ls.v[i].dl;
        if (!matches(f, dl)) continue;
        char when[40];
        print_time(dl->failed_at, when, sizeof when);
        if (shown++ == 0)
            printf("%-36s  %-27s  %-28s  %-20s %-8s %-26s  %s\n", "id", "failed at", "consumer group", "reason code",
                   "attempt", "from", "reason");
        char from[64];
        snprintf(from, sizeof from, "%.40s/%d@%" PRId64, dl->original_topic, dl->original_partition, dl->original_offset);
        printf("%-36s  %-27s  %-28.28s  %-20s %-8d %-26s  %.100s\n", ls.v[i].id, when, dl->consumer_group,
               dl->reason_code[0] ? dl->reason_code : dlq_reason_code(dl->reason), dl->attempts ? dl->attempts : 1,
               from, dl->reason);
    }
    if (shown == 0) printf("no dead letters\n");
    letters_free(&ls);
    return 0;
}

/* One counter of stats: a name and how many. */
typedef struct tally {
    char name[96];
    long n;
} tally;

static void count(tally *t, int cap, int *n, const char *name)
{
    for (int i = 0; i < *n; i++)
        if (strcmp(t[i].name, name) == 0) {
            t[i].n++;
            return;
        }
    if (*n == cap) return;
    snprintf(t[*n].name, sizeof t[*n].name, "%s", name);
    t[(*n)++].n = 1;
}

static void print_tally(const char *title, const tally *t, int n)
{
    printf("%s\n", title);
    for (int i = 0; i < n; i++) printf("  %-40s %ld\n", t[i].name, t[i].n);
}

static int stats(const todo_config *cfg, const filter *f)
{
    letters ls;
    if (load(cfg, &ls) != 0) return 1;
    enum { CAP = 64 };
    static tally reasons[CAP], types[CAP], groups[CAP], ages[CAP];
    int nr = 0, nt = 0, ng = 0, na = 0;
    long total = 0;
    long long now = (long long)time(NULL), oldest = 0;
    for (size_t i = 0; i < ls.n; i++) {
        const Todo__V1__DeadLetter *dl = ls.v[i].dl;
        if (!matches(f, dl)) continue;
        total++;
        count(reasons, CAP, &nr, dl->reason_code[0] ? dl->reason_code : dlq_reason_code(dl->reason));
        count(types, CAP, &nt, dl->event_type[0] ? dl->event_type : "(not an event)");
        count(groups, CAP, &ng, dl->consumer_group);
        long long age = now - seconds_of(dl->failed_at);
        if (age > oldest) oldest = age;
        count(ages, CAP, &na, age < 3600 ? "under 1 hour" : age < 86400 ? "1 hour to 1 day" : age < 7 * 86400 ? "1 to 7 days"
                                                                                                            : "over 7 days");
    }
    printf("dead letters  %ld\noldest        %lld s\n", total, total > 0 ? oldest : 0);
    if (total > 0) {
        print_tally("by reason code:", reasons, nr);
        print_tally("by event type:", types, nt);
        print_tally("by consumer group:", groups, ng);
        print_tally("by age:", ages, na);
    }
    letters_free(&ls);
    return 0;
}

static const Todo__V1__DeadLetter *find(const letters *ls, const char *id)
{
    for (size_t i = 0; i < ls->n; i++)
        if (strcmp(ls->v[i].id, id) == 0) return ls->v[i].dl;
    return NULL;
}

/* Prints bytes as text when they are printable, else their size. */
static void print_bytes(const char *label, const uint8_t *p, size_t n)
{
    bool text = true;
    for (size_t i = 0; i < n && text; i++) text = p[i] >= 0x20 && p[i] < 0x7f;
    if (text) printf("%s%.*s\n", label, (int)n, (const char *)p);
    else printf("%s(%zu bytes, binary)\n", label, n);
}

static int show(const todo_config *cfg, const char *id)
{
    letters ls;
    if (load(cfg, &ls) != 0) return 1;
    const Todo__V1__DeadLetter *dl = find(&ls, id);
    if (dl == NULL) {
        /* Gone from the topic: what was decided about it, if anything. */
        todo_err err;
        PGconn *pg = pgx_connect(cfg->admin_pg_url, "todoctl-dlq", &err);
        const char *p[1] = {id};
        PGresult *r = pg != NULL ? pgx_exec(pg,
                                            "select case when done then action else 'being ' || action end, operator,"
                                            " to_char(coalesce(decided_at, claimed_at) at time zone 'UTC',"
                                            " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), reason, consumer_group, reason_code"
                                            " from todo_meta.dlq_decisions where letter_id = $1",
                                            1, p, &err)
                                 : NULL;
        if (r != NULL && PQntuples(r) == 1)
            printf("%s was %s by %s at %s%s%s (group %s, reason code %s); it is no longer in %s\n", id,
                   PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3)[0] ? ": " : "",
                   PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4), PQgetvalue(r, 0, 5), DLQ_TOPIC);
        else
            fprintf(stderr, "todoctl: no dead letter %s (never there, or compacted away)\n", id);
        PQclear(r);
        pgx_close(pg);
        letters_free(&ls);
        return 1;
    }
    char when[40];
    print_time(dl->failed_at, when, sizeof when);
    char first[40];
    print_time(dl->first_failed_at != NULL ? dl->first_failed_at : dl->failed_at, first, sizeof first);
    printf("id:             %s\nfailed at:      %s\nfirst failed:   %s\nattempt:        %d\nconsumer group: %s\n"
           "reason code:    %s\nreason:         %s\n",
           id, when, first, dl->attempts ? dl->attempts : 1, dl->consumer_group,
           dl->reason_code[0] ? dl->reason_code : dlq_reason_code(dl->reason), dl->reason);
    if (dl->correlation_id[0] != '\0' || dl->causation_id[0] != '\0')
        printf("correlation:    %s\ncaused by:      %s\n", dl->correlation_id, dl->causation_id);
    /* The chain it belongs to (ordered parking): its head, and what waits. */
    const char *root = dl->parked_behind[0] != '\0' ? dl->parked_behind : id;
    if (dl->parked_behind[0] != '\0')
        printf("parked behind:  %s%s\n", dl->parked_behind, find(&ls, dl->parked_behind) != NULL ? "" : " (gone)");
    int waiting = 0;
    for (size_t i = 0; i < ls.n; i++) {
        const Todo__V1__DeadLetter *o = ls.v[i].dl;
        if (o == NULL || strcmp(o->parked_behind, root) != 0 || strcmp(ls.v[i].id, id) == 0) continue;
        printf("%s%s (%s %s, caused by %s)\n", waiting++ == 0 ? "chain:          " : "                ",
               ls.v[i].id, o->event_type[0] ? o->event_type : "?", o->event_id, o->causation_id[0] ? o->causation_id : "-");
    }
    if (waiting > 0)
        printf("                %d record(s) wait in this chain; todoctl dlq redrive %s sends it back in order\n", waiting,
               root);
    printf("from:           %s partition %d offset %" PRId64 "\n", dl->original_topic, dl->original_partition,
           dl->original_offset);
    print_bytes("key:            ", dl->original_key.data, dl->original_key.len);
    printf("value:          %zu bytes\n", dl->original_value.len);
    for (size_t i = 0; i < dl->n_original_headers; i++) {
        char label[80];
        snprintf(label, sizeof label, "header %-24.24s", dl->original_headers[i]->key);
        print_bytes(label, dl->original_headers[i]->value.data, dl->original_headers[i]->value.len);
    }
    Todo__V1__EventEnvelope *env =
        todo__v1__event_envelope__unpack(NULL, dl->original_value.len, dl->original_value.data);
    if (env != NULL) {
        printf("event:          %s %s (schema version %d, schema id %d), %s %s version %" PRId64 ", user %s\n",
               env->event_type, env->event_id, env->schema_version, env->schema_id, env->aggregate_type,
               env->aggregate_id, env->aggregate_version, env->user_id);
        todo__v1__event_envelope__free_unpacked(env, NULL);
    } else {
        printf("event:          (the value is no todo.v1.EventEnvelope)\n");
    }
    letters_free(&ls);
    return 0;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) *(int *)m->_private = 1;
}

/* Produces one record and waits for its delivery; 0 when delivered. */
static int produce_one(rd_kafka_t *p, const char *topic, const void *key, size_t key_len, const void *value,
                       size_t len, rd_kafka_headers_t *h)
{
    int failed = 0;
    rd_kafka_resp_err_t e = rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
                                              RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                              RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(&failed), RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (h != NULL) rd_kafka_headers_destroy(h);
        fprintf(stderr, "todoctl: producing to %s: %s\n", topic, rd_kafka_err2str(e));
        return -1;
    }
    if (rd_kafka_flush(p, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR || failed) {
        fprintf(stderr, "todoctl: %s did not acknowledge the record\n", topic);
        return -1;
    }
    return 0;
}

/* An operator's decision about dead letters. */
typedef struct decision {
    const char *action; /* "redriven" or "discarded" */
    const char *reason; /* why (required to discard) */
    const char *by;     /* who */
} decision;

/* Records d for letter l before it is carried out: 0 when this todoctl holds
 * it now; 1 when another decision holds or settled it (said on stdout); -1
 * when the database cannot be asked. */
static int claim(PGconn *pg, const letter *l, const decision *d)
{
    const Todo__V1__DeadLetter *dl = l->dl;
    todo_err err;
    const char *p[8] = {l->id, d->action, d->reason, d->by, dl->original_topic, dl->consumer_group,
                        dl->reason_code[0] ? dl->reason_code : dlq_reason_code(dl->reason), dl->event_type};
    PGresult *r = pgx_exec(pg,
                           "insert into todo_meta.dlq_decisions (letter_id, action, reason, operator, original_topic,"
                           " consumer_group, reason_code, event_type) values ($1, $2, $3, $4, $5, $6, $7, $8)"
                           " on conflict (letter_id) do update set action = excluded.action, reason = excluded.reason,"
                           " operator = excluded.operator, claimed_at = now()"
                           " where not todo_meta.dlq_decisions.done"
                           " and todo_meta.dlq_decisions.claimed_at < now() - interval '1 minute' returning 1",
                           8, p, &err);
    if (r == NULL) {
        fprintf(stderr, "todoctl: recording the decision: %s\n", err.msg);
        return -1;
    }
    int claimed = PQntuples(r);
    PQclear(r);
    if (claimed == 1) return 0;
    r = pgx_exec(pg,
                 "select action, operator, done::text, to_char(claimed_at at time zone 'UTC',"
                 " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') from todo_meta.dlq_decisions where letter_id = $1",
                 1, p, &err);
    if (r == NULL || PQntuples(r) != 1) {
        fprintf(stderr, "todoctl: reading the decision: %s\n", r == NULL ? err.msg : "gone");
        PQclear(r);
        return -1;
    }
    if (strcmp(PQgetvalue(r, 0, 2), "true") == 0)
        printf("not %s: %s was already %s by %s at %s\n", d->action, l->id, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1),
               PQgetvalue(r, 0, 3));
    else
        printf("not %s: %s is being %s by %s since %s (a claim left undone for a minute may be taken over)\n",
               d->action, l->id, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 3));
    PQclear(r);
    return 1;
}

/* Marks the decision about id carried out. */
static int settle(PGconn *pg, const char *id)
{
    todo_err err;
    const char *p[1] = {id};
    if (pgx_cmd(pg, "update todo_meta.dlq_decisions set done = true, decided_at = now() where letter_id = $1", 1, p,
                &err) != 0) {
        fprintf(stderr, "todoctl: settling the decision: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* The head of l's chain: the letter it is parked behind, or itself. */
static const char *root_of(const letter *l)
{
    return l->dl->parked_behind[0] != '\0' ? l->dl->parked_behind : l->id;
}

/* The order a chain was parked in: within a partition its offsets (a letter
 * sent again has a later failed_at), across partitions the time it failed. */
static int by_failure(const void *a, const void *b)
{
    const Todo__V1__DeadLetter *x = (*(const letter *const *)a)->dl, *y = (*(const letter *const *)b)->dl;
    if (strcmp(x->original_topic, y->original_topic) == 0 && x->original_partition == y->original_partition)
        return x->original_offset < y->original_offset ? -1 : x->original_offset > y->original_offset;
    long long tx = x->failed_at ? (long long)x->failed_at->seconds * 1000000000LL + x->failed_at->nanos : 0;
    long long ty = y->failed_at ? (long long)y->failed_at->seconds * 1000000000LL + y->failed_at->nanos : 0;
    if (tx != ty) return tx < ty ? -1 : 1;
    return x->original_offset < y->original_offset ? -1 : x->original_offset > y->original_offset;
}

/* Sends one letter's record back to its topic with its history and the
 * chain it belongs to; 0 when acknowledged. */
static int send_back(rd_kafka_t *p, const letter *l, const char *root)
{
    const Todo__V1__DeadLetter *dl = l->dl;
    rd_kafka_headers_t *h = rd_kafka_headers_new(dl->n_original_headers + 4);
    for (size_t k = 0; k < dl->n_original_headers; k++)
        rd_kafka_header_add(h, dl->original_headers[k]->key, -1, dl->original_headers[k]->value.data,
                            (ssize_t)dl->original_headers[k]->value.len);
    /* Its history, for the dead letter it gets if it fails again (waiting
     * in a chain is no failure of its own). */
    if (strcmp(dl->reason_code, DLQ_REASON_PARKED) != 0) {
        char n[24], first[24];
        snprintf(n, sizeof n, "%d", dl->attempts > 0 ? dl->attempts : 1);
        const Google__Protobuf__Timestamp *ft = dl->first_failed_at != NULL ? dl->first_failed_at : dl->failed_at;
        snprintf(first, sizeof first, "%lld", ft != NULL ? (long long)ft->seconds * 1000000 + ft->nanos / 1000 : 0);
        rd_kafka_header_add(h, DLQ_HEADER_ATTEMPTS, -1, n, -1);
        rd_kafka_header_add(h, DLQ_HEADER_FIRST_FAILED, -1, first, -1);
    }
    rd_kafka_header_add(h, DLQ_HEADER_REDRIVE_OF, -1, l->id, -1);
    rd_kafka_header_add(h, DLQ_HEADER_REDRIVE_ROOT, -1, root, -1);
    return produce_one(p, dl->original_topic, dl->original_key.data, dl->original_key.len, dl->original_value.data,
                       dl->original_value.len, h);
}

/* Redrives the chains of the letters named (id, or those f matches): each
 * chain whole, its head first, then what waited behind it in the order it
 * was parked, so that a consumer applies them in their first order. */
static int redrive_chains(letters *ls, rd_kafka_t *p, PGconn *pg, const char *id, const filter *f, bool force,
                          const decision *d, int *done)
{
    const letter **chain = calloc(ls->n + 1, sizeof *chain);
    char (*roots)[40] = calloc(ls->n + 1, sizeof *roots);
    int n_roots = 0, rc = 0;
    if (chain == NULL || roots == NULL) {
        free(chain);
        free(roots);
        fprintf(stderr, "todoctl: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < ls->n && rc == 0; i++) {
        if (ls->v[i].dl == NULL || !matches(f, ls->v[i].dl) || (id != NULL && strcmp(ls->v[i].id, id) != 0)) continue;
        const char *root = root_of(&ls->v[i]);
        bool seen = false;
        for (int r = 0; r < n_roots && !seen; r++) seen = strcmp(roots[r], root) == 0;
        if (seen) continue;
        snprintf(roots[n_roots++], sizeof roots[0], "%s", root);
        /* The chain: its head when it is still there, then the rest. */
        size_t n = 0;
        const letter *head = NULL;
        for (size_t k = 0; k < ls->n; k++) {
            if (ls->v[k].dl == NULL) continue;
            if (strcmp(ls->v[k].id, root) == 0) head = &ls->v[k];
            else if (strcmp(ls->v[k].dl->parked_behind, root) == 0) chain[n++] = &ls->v[k];
        }
        qsort(chain, n, sizeof *chain, by_failure);
        if (head != NULL) {
            memmove(chain + 1, chain, n * sizeof *chain);
            chain[0] = head;
            n++;
        }
        int attempts = chain[0]->dl->attempts > 0 ? chain[0]->dl->attempts : 1;
        if (attempts > DLQ_MAX_REDRIVES && !force) {
            printf("not redriven: %s failed %d times already (redrive it with --force once its cause is fixed)\n",
                   chain[0]->id, attempts);
            if (id != NULL) rc = 1;
            continue;
        }
        size_t claimed = 0;
        for (; claimed < n; claimed++) {
            int held = claim(pg, chain[claimed], d);
            if (held != 0) {
                if (held < 0 || id != NULL) rc = 1;
                break;
            }
        }
        if (claimed < n) {
            printf("not redriven: the chain of %s is held (a claim left undone for a minute may be taken over)\n", root);
            continue;
        }
        /* Every record back on its topic in order, then (once they are all
         * there) the tombstones: a crash in between leaves letters to
         * redrive again, never a record lost. */
        for (size_t k = 0; k < n && rc == 0; k++)
            if (send_back(p, chain[k], root) != 0) rc = 1;
        for (size_t k = 0; k < n && rc == 0; k++) {
            if (produce_one(p, DLQ_TOPIC, chain[k]->id, strlen(chain[k]->id), NULL, 0, NULL) != 0 ||
                settle(pg, chain[k]->id) != 0) {
                rc = 1;
                break;
            }
            bool waited = k > 0 || head == NULL;
            printf("redriven %s to %s%s%s%s\n", chain[k]->id, chain[k]->dl->original_topic,
                   waited ? " (it waited behind " : "", waited ? root : "", waited ? ")" : "");
            (*done)++;
        }
    }
    free(chain);
    free(roots);
    return rc;
}

static int redrive(const todo_config *cfg, const char *id, const filter *f, bool force, const decision *d)
{
    letters ls;
    todo_err err;
    if (load(cfg, &ls) != 0) return 1;
    PGconn *pg = pgx_connect(cfg->admin_pg_url, "todoctl-dlq", &err);
    rd_kafka_t *p = pg != NULL ? kafkax_producer_new(cfg->kafka_brokers, "todoctl-dlq", on_delivery, NULL, &err) : NULL;
    if (p == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        pgx_close(pg);
        letters_free(&ls);
        return 1;
    }
    int rc = 0, done = 0;
    bool discard = strcmp(d->action, "discarded") == 0;
    if (!discard) {
        rc = redrive_chains(&ls, p, pg, id, f, force, d, &done);
        goto finish;
    }
    for (size_t i = 0; i < ls.n && rc == 0; i++) {
        const Todo__V1__DeadLetter *dl = ls.v[i].dl;
        if (!matches(f, dl) || (id != NULL && strcmp(ls.v[i].id, id) != 0)) continue;
        int held = claim(pg, &ls.v[i], d);
        if (held != 0) {
            if (held < 0 || id != NULL) rc = 1;
            continue;
        }
        if (produce_one(p, DLQ_TOPIC, ls.v[i].id, strlen(ls.v[i].id), NULL, 0, NULL) != 0 ||
            settle(pg, ls.v[i].id) != 0) {
            rc = 1;
            break;
        }
        printf("discarded %s (%s)\n", ls.v[i].id, d->reason);
        done++;
    }
finish:
    if (rc == 0 && done == 0 && (id == NULL || find(&ls, id) == NULL)) {
        fprintf(stderr, "todoctl: %s\n", id != NULL ? "no such dead letter (redriven, discarded, or never there)"
                                                     : discard ? "no dead letters to discard" : "no dead letters to redrive");
        rc = id != NULL ? 1 : 0;
    }
    rd_kafka_destroy(p);
    pgx_close(pg);
    letters_free(&ls);
    return rc;
}

/* todoctl dlq decisions [--since D]: what operators decided, newest first. */
static int decisions(const todo_config *cfg, long long since_s)
{
    todo_err err;
    PGconn *pg = pgx_connect(cfg->admin_pg_url, "todoctl-dlq", &err);
    char since[24];
    snprintf(since, sizeof since, "%lld", since_s > 0 ? since_s : 100LL * 365 * 86400);
    const char *p[1] = {since};
    PGresult *r = pg != NULL ? pgx_exec(pg,
                                        "select to_char(coalesce(decided_at, claimed_at) at time zone 'UTC',"
                                        " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), case when done then action"
                                        " else 'being ' || action end, letter_id, consumer_group, reason_code, operator,"
                                        " reason from todo_meta.dlq_decisions"
                                        " where coalesce(decided_at, claimed_at) > now() - make_interval(secs => $1::bigint)"
                                        " order by coalesce(decided_at, claimed_at) desc limit 1000",
                                        1, p, &err)
                             : NULL;
    if (r == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        pgx_close(pg);
        return 1;
    }
    printf("%-20s  %-16s  %-36s  %-26s  %-18s  %-12s  %s\n", "when", "decision", "dead letter", "group", "reason code",
           "by", "why");
    for (int i = 0; i < PQntuples(r); i++)
        printf("%-20s  %-16s  %-36s  %-26s  %-18s  %-12s  %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
               PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), PQgetvalue(r, i, 6));
    PQclear(r);
    pgx_close(pg);
    return 0;
}

int todoctl_dlq(const todo_config *cfg, int argc, char **argv)
{
    if (argc < 3) return 2;
    const char *op = argv[2], *id = NULL, *reason = NULL, *by = getenv("USER");
    filter f = {0};
    bool all = false, force = false, filtered = false;
    for (int i = 3; i < argc; i++) {
        bool value = i + 1 < argc;
        if (strcmp(argv[i], "--group") == 0 && value) f.group = argv[++i];
        else if (strcmp(argv[i], "--reason") == 0 && value) f.reason = argv[++i];
        else if (strcmp(argv[i], "--type") == 0 && value) f.type = argv[++i];
        else if (strcmp(argv[i], "--user") == 0 && value) f.user = argv[++i];
        else if (strcmp(argv[i], "--since") == 0 && value) {
            if ((f.since_s = duration_s(argv[++i])) < 0) {
                fprintf(stderr, "todoctl: --since takes a duration: 90s, 30m, 2h, 7d\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--why") == 0 && value) reason = argv[++i];
        else if (strcmp(argv[i], "--by") == 0 && value) by = argv[++i];
        else if (strcmp(argv[i], "--all") == 0) all = true;
        else if (strcmp(argv[i], "--force") == 0) force = true;
        else if (argv[i][0] != '-' && id == NULL) id = argv[i];
        else return 2;
    }
    filtered = f.group != NULL || f.reason != NULL || f.type != NULL || f.user != NULL || f.since_s > 0;
    if (strcmp(op, "list") == 0 && id == NULL && !all) return list(cfg, &f);
    if (strcmp(op, "stats") == 0 && id == NULL && !all) return stats(cfg, &f);
    if (strcmp(op, "show") == 0 && id != NULL && !filtered && !all) return show(cfg, id);
    decision d = {.action = "redriven", .reason = "", .by = by != NULL && by[0] ? by : "unknown"};
    if (strcmp(op, "redrive") == 0 && (id != NULL) != all && reason == NULL) return redrive(cfg, id, &f, force, &d);
    if (strcmp(op, "discard") == 0 && (id != NULL) != all && reason != NULL && reason[0] != '\0' && !force) {
        d.action = "discarded";
        d.reason = reason;
        return redrive(cfg, id, &f, false, &d);
    }
    if (strcmp(op, "decisions") == 0 && id == NULL && !all && f.group == NULL && f.reason == NULL && f.type == NULL &&
        f.user == NULL)
        return decisions(cfg, f.since_s);
    return 2;
}
