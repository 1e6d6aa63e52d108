/* dlq_watch: see dlq_watch.h. */
#include "dlq_watch.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dlq.h"
#include "kafkax.h"
#include "log.h"
#include "metrics.h"

#define MAX_PAIRS 256 /* (group, reason code) pairs: bounded label values */
#define ID_MAX 40

typedef struct pair {
    char group[64], code[32];
    long count;
    metric_series *series;
} pair;

typedef struct slot {
    char id[ID_MAX]; /* "" free */
    int pair;        /* -1: deleted (a tombstone in the table, not a letter) */
} slot;

struct dlq_watch {
    char brokers[512];
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t mu; /* guards pairs (read by dlq_watch_depth) */
    pair pairs[MAX_PAIRS];
    int n_pairs;
    slot *slots; /* open addressing, linear probing; power-of-two size */
    size_t cap, used; /* used: slots not free (live and deleted) */
};

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* The slot of id: its own, or the free one where it would go. */
static slot *find(dlq_watch *w, const char *id)
{
    slot *deleted = NULL;
    for (size_t i = hash(id) & (w->cap - 1);; i = (i + 1) & (w->cap - 1)) {
        slot *s = &w->slots[i];
        if (s->id[0] == '\0') return deleted != NULL ? deleted : s;
        if (s->pair < 0) {
            if (deleted == NULL && strcmp(s->id, id) != 0) deleted = s;
            if (strcmp(s->id, id) == 0) return s;
        } else if (strcmp(s->id, id) == 0) {
            return s;
        }
    }
}

/* Rehashes the live letters into a table of at least four slots per live
 * letter: tombstones are dropped, so churn (letters redriven, discarded)
 * never makes the table grow with the letters ever seen. */
static bool grow(dlq_watch *w)
{
    size_t live = 0, cap = 1024;
    for (size_t i = 0; i < w->cap; i++) live += w->slots[i].id[0] != '\0' && w->slots[i].pair >= 0;
    while (cap < live * 4) cap *= 2;
    slot *old = w->slots, *slots = calloc(cap, sizeof *slots);
    if (slots == NULL) return false;
    size_t old_cap = w->cap;
    w->slots = slots;
    w->cap = cap;
    w->used = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].id[0] != '\0' && old[i].pair >= 0) {
            *find(w, old[i].id) = old[i];
            w->used++;
        }
    free(old);
    return true;
}

static void count(dlq_watch *w, int p, long delta)
{
    pthread_mutex_lock(&w->mu);
    w->pairs[p].count += delta;
    metric_set(w->pairs[p].series, (double)w->pairs[p].count);
    pthread_mutex_unlock(&w->mu);
}

static int pair_of(dlq_watch *w, const char *group, const char *code)
{
    for (int i = 0; i < w->n_pairs; i++)
        if (strcmp(w->pairs[i].group, group) == 0 && strcmp(w->pairs[i].code, code) == 0) return i;
    if (w->n_pairs == MAX_PAIRS) return MAX_PAIRS - 1; /* beyond the bound: counted with the last pair */
    static metric *depth;
    if (depth == NULL)
        depth = metric_gauge("todo_dlq_depth",
                             "Dead letters system.dlq.v1 holds now (neither redriven nor discarded), by the consumer "
                             "group that sent them and reason code.",
                             "group,reason_code");
    pair *p = &w->pairs[w->n_pairs];
    snprintf(p->group, sizeof p->group, "%s", group);
    snprintf(p->code, sizeof p->code, "%s", code);
    p->series = metric_with(depth, p->group, p->code);
    pthread_mutex_lock(&w->mu);
    w->n_pairs++;
    pthread_mutex_unlock(&w->mu);
    return w->n_pairs - 1;
}

static const char *header(const rd_kafka_message_t *m, const char *name, char *buf, size_t cap)
{
    const char *v = kafkax_header(m, name, buf, cap);
    return v != NULL ? v : "";
}

/* One record of the topic: a letter counts, a tombstone uncounts. */
static void take(dlq_watch *w, const rd_kafka_message_t *m)
{
    char id[ID_MAX];
    if (m->key == NULL || m->key_len == 0 || m->key_len >= sizeof id) return;
    memcpy(id, m->key, m->key_len);
    id[m->key_len] = '\0';
    if ((w->used + 1) * 2 > w->cap && !grow(w)) return;
    slot *s = find(w, id);
    bool live = s->id[0] != '\0' && s->pair >= 0 && strcmp(s->id, id) == 0;
    if (m->payload == NULL) { /* a tombstone: redriven or discarded */
        if (live) {
            count(w, s->pair, -1);
            s->pair = -1;
        }
        return;
    }
    char group[64] = "", code[32], reason[256];
    const char *g = header(m, "dlq_consumer_group", group, sizeof group);
    /* A rebuild's group is named after its start ("...-rebuild-1796144357"):
     * one label value for them all keeps the label set bounded. */
    char *rebuild = g == group ? strstr(group, "-rebuild-") : NULL;
    if (rebuild != NULL && strspn(rebuild + 9, "0123456789") == strlen(rebuild + 9)) rebuild[8] = '\0';
    const char *c = header(m, "dlq_reason_code", code, sizeof code);
    if (c[0] == '\0') c = dlq_reason_code(header(m, "dlq_reason", reason, sizeof reason));
    int p = pair_of(w, g, c);
    if (live) {
        if (s->pair == p) return;
        count(w, s->pair, -1);
    } else {
        if (s->id[0] == '\0') w->used++;
        snprintf(s->id, sizeof s->id, "%s", id);
    }
    s->pair = p;
    count(w, p, 1);
}

static void *run(void *arg)
{
    dlq_watch *w = arg;
    rd_kafka_t *rk = NULL;
    while (!atomic_load(&w->stop)) {
        int parts;
        if (rk == NULL && (rk = kafkax_topic_reader(w->brokers, DLQ_TOPIC, "todo-dlq-watch", &parts)) == NULL) {
            for (int i = 0; i < 50 && !atomic_load(&w->stop); i++) usleep(100000); /* the topic is not there yet */
            continue;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (m == NULL) continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) take(w, m);
        rd_kafka_message_destroy(m);
    }
    if (rk != NULL) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    return NULL;
}

dlq_watch *dlq_watch_start(const char *brokers, todo_err *err)
{
    dlq_watch *w = calloc(1, sizeof *w);
    if (w == NULL || !grow(w)) {
        free(w);
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        return NULL;
    }
    snprintf(w->brokers, sizeof w->brokers, "%s", brokers);
    pthread_mutex_init(&w->mu, NULL);
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
        pthread_mutex_destroy(&w->mu);
        free(w->slots);
        free(w);
        todo_err_set(err, TODO_EINTERNAL, "cannot start the dead-letter watch");
        return NULL;
    }
    return w;
}

long dlq_watch_depth(dlq_watch *w, const char *group, const char *reason_code)
{
    long n = 0;
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->n_pairs; i++)
        if ((group == NULL || strcmp(w->pairs[i].group, group) == 0) &&
            (reason_code == NULL || strcmp(w->pairs[i].code, reason_code) == 0))
            n += w->pairs[i].count;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void dlq_watch_stop(dlq_watch *w)
{
    if (w == NULL) return;
    atomic_store(&w->stop, 1);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    free(w->slots);
    free(w);
}
