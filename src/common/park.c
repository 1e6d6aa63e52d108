/* park: see park.h. The set is small (the group's live dead letters: a
 * handful, rarely hundreds), so it is an array scanned in full. */
#include "park.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PARK_RETRY_S 5 /* a dead-letter topic that could not be read is tried again this much later */
#define PARK_GONE 64   /* letters whose redriven records were applied, remembered (the newest) */

#include "dlq.h"
#include "kafkax.h"
#include "todo/v1/events.pb-c.h"

typedef struct entry {
    char id[PARK_ID_MAX], root[PARK_ID_MAX];
    char aggregate[PARK_KEY_MAX], event_id[PARK_KEY_MAX];
} entry;

struct park {
    char group[256];
    char brokers[512];  /* for loading again when the topic could not be read */
    entry *v;
    int n, cap;
    rd_kafka_t *reader; /* follows system.dlq.v1; NULL: not loaded */
    time_t retry_at;    /* when to try loading again (reader NULL) */
    /* Letters park_remove forgot: the follower may read such a letter
     * after its record was redriven and applied (the tombstone comes
     * later), and must not park the aggregate behind it again. */
    char gone[PARK_GONE][PARK_ID_MAX];
    int gone_next;
};

park *park_new(const char *group)
{
    park *p = calloc(1, sizeof *p);
    if (p != NULL) snprintf(p->group, sizeof p->group, "%s", group);
    return p;
}

void park_free(park *p)
{
    if (p == NULL) return;
    if (p->reader != NULL) {
        rd_kafka_consumer_close(p->reader);
        rd_kafka_destroy(p->reader);
    }
    free(p->v);
    free(p);
}

int park_count(const park *p) { return p->n; }

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? src : "");
}

void park_add(park *p, const char *letter_id, const char *aggregate, const char *event_id, const char *root)
{
    entry *e = NULL;
    for (int i = 0; i < p->n && e == NULL; i++)
        if (strcmp(p->v[i].id, letter_id) == 0) e = &p->v[i];
    if (e == NULL) {
        if (p->n == p->cap) {
            int cap = p->cap ? p->cap * 2 : 16;
            entry *v = realloc(p->v, (size_t)cap * sizeof *v);
            if (v == NULL) return; /* out of memory: that letter parks nothing more */
            p->v = v;
            p->cap = cap;
        }
        e = &p->v[p->n++];
    }
    copy(e->id, sizeof e->id, letter_id);
    copy(e->aggregate, sizeof e->aggregate, aggregate);
    copy(e->event_id, sizeof e->event_id, event_id);
    copy(e->root, sizeof e->root, root != NULL && root[0] != '\0' ? root : letter_id);
}

/* Drops the letter from the set. */
static void forget(park *p, const char *letter_id)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->v[i].id, letter_id) == 0) {
            p->v[i] = p->v[--p->n];
            return;
        }
}

void park_remove(park *p, const char *letter_id)
{
    forget(p, letter_id);
    copy(p->gone[p->gone_next], PARK_ID_MAX, letter_id);
    p->gone_next = (p->gone_next + 1) % PARK_GONE;
}

static bool is_gone(const park *p, const char *letter_id)
{
    for (int i = 0; i < PARK_GONE; i++)
        if (strcmp(p->gone[i], letter_id) == 0) return true;
    return false;
}

bool park_blocks(const park *p, const char *aggregate, const char *causation, const char *except_root,
                 char root[PARK_ID_MAX])
{
    bool agg = aggregate != NULL && aggregate[0] != '\0', cause = causation != NULL && causation[0] != '\0';
    for (int i = p->n - 1; i >= 0; i--) { /* the newest first: a head that failed again */
        const entry *e = &p->v[i];
        if (except_root != NULL && except_root[0] != '\0' && strcmp(e->root, except_root) == 0) continue;
        if ((agg && strcmp(e->aggregate, aggregate) == 0) || (cause && strcmp(e->event_id, causation) == 0)) {
            if (root != NULL) snprintf(root, PARK_ID_MAX, "%s", e->root);
            return true;
        }
    }
    return false;
}

static void header(const rd_kafka_message_t *m, const char *name, char *out, size_t cap)
{
    if (kafkax_header(m, name, out, cap) == NULL) out[0] = '\0';
}

void park_record_of(const rd_kafka_message_t *m, park_record *out)
{
    header(m, "ce_subject", out->aggregate, sizeof out->aggregate);
    header(m, "ce_id", out->event_id, sizeof out->event_id);
    header(m, "causation_id", out->causation, sizeof out->causation);
    header(m, DLQ_HEADER_REDRIVE_OF, out->redrive_of, sizeof out->redrive_of);
    header(m, DLQ_HEADER_REDRIVE_ROOT, out->redrive_root, sizeof out->redrive_root);
}

void park_take(park *p, const rd_kafka_message_t *m)
{
    char id[PARK_ID_MAX];
    if (m->key == NULL || m->key_len == 0 || m->key_len >= sizeof id) return;
    memcpy(id, m->key, m->key_len);
    id[m->key_len] = '\0';
    if (m->payload == NULL) {
        forget(p, id);
        return;
    }
    if (is_gone(p, id)) return;
    Todo__V1__DeadLetter *dl = todo__v1__dead_letter__unpack(NULL, m->len, m->payload);
    if (dl == NULL) return;
    if (strcmp(dl->consumer_group, p->group) == 0) {
        /* Letters written before aggregate_id and event_id were recorded:
         * the record's own headers say them. */
        const char *agg = dl->aggregate_id, *ev = dl->event_id;
        char buf[2][PARK_KEY_MAX]; /* per call: every consume loop of the process loads its park at once */
        for (size_t i = 0; i < dl->n_original_headers; i++) {
            const Todo__V1__DeadLetter__OriginalHeadersEntry *h = dl->original_headers[i];
            int which = strcmp(h->key, "ce_subject") == 0 ? 0 : strcmp(h->key, "ce_id") == 0 ? 1 : -1;
            if (which < 0 || (which == 0 ? agg[0] : ev[0]) != '\0' || h->value.len >= PARK_KEY_MAX) continue;
            memcpy(buf[which], h->value.data, h->value.len);
            buf[which][h->value.len] = '\0';
            if (which == 0) agg = buf[0];
            else ev = buf[1];
        }
        park_add(p, id, agg, ev, dl->parked_behind);
    }
    todo__v1__dead_letter__free_unpacked(dl, NULL);
}

int park_load(park *p, const char *brokers, todo_err *err)
{
    int parts = 0;
    if (brokers != p->brokers) snprintf(p->brokers, sizeof p->brokers, "%s", brokers);
    p->reader = kafkax_topic_reader(brokers, DLQ_TOPIC, "todo-park", &parts);
    if (p->reader == NULL) {
        p->retry_at = time(NULL) + PARK_RETRY_S;
        return todo_err_set(err, TODO_EUNAVAIL, "kafka: cannot read %s", DLQ_TOPIC);
    }
    /* To the end each partition had when we started; later records come
     * through park_follow. */
    int64_t *end = calloc((size_t)parts, sizeof *end), *next = calloc((size_t)parts, sizeof *next);
    int left = 0, rc = TODO_OK;
    for (int i = 0; end != NULL && next != NULL && i < parts; i++) {
        int64_t lo = 0, hi = 0;
        if (rd_kafka_query_watermark_offsets(p->reader, DLQ_TOPIC, i, &lo, &hi, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            rc = todo_err_set(err, TODO_EUNAVAIL, "kafka: no offsets for %s/%d", DLQ_TOPIC, i);
            break;
        }
        end[i] = hi;
        next[i] = lo;
        left += hi > lo;
    }
    for (int idle = 0; rc == TODO_OK && left > 0 && idle < 100;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(p->reader, 100);
        if (m == NULL) {
            idle++;
            continue;
        }
        idle = 0;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            park_take(p, m);
            int i = m->partition;
            if (i >= 0 && i < parts && next[i] < end[i] && (next[i] = m->offset + 1) >= end[i]) left--;
        }
        rd_kafka_message_destroy(m);
    }
    if (rc == TODO_OK && left > 0) rc = todo_err_set(err, TODO_EUNAVAIL, "kafka: reading %s timed out", DLQ_TOPIC);
    free(end);
    free(next);
    return rc;
}

void park_follow(park *p)
{
    if (p->reader == NULL) { /* the topic was not there: load it when it is */
        todo_err err;
        if (p->brokers[0] == '\0' || time(NULL) < p->retry_at) return;
        if (park_load(p, p->brokers, &err) != TODO_OK) return;
    }
    for (int i = 0; i < 1000; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(p->reader, 0);
        if (m == NULL) return;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) park_take(p, m);
        rd_kafka_message_destroy(m);
    }
}

void park_followers(rd_kafka_message_t *const *msgs, size_t n, const char **dead, size_t from)
{
    if (from >= n) return;
    /* The chain grows as it goes: a record parked here parks what it caused. */
    park chain = {0};
    park_record r;
    park_record_of(msgs[from], &r);
    park_add(&chain, "0", r.aggregate, r.event_id, "0");
    for (size_t j = from + 1; j < n; j++) {
        if (dead[j] != NULL) continue;
        park_record_of(msgs[j], &r);
        if (!park_blocks(&chain, r.aggregate, r.causation, NULL, NULL)) continue;
        dead[j] = PARK_REASON_IN_BATCH;
        char id[24];
        snprintf(id, sizeof id, "%zu", j);
        park_add(&chain, id, r.aggregate, r.event_id, "0");
    }
    free(chain.v);
}
