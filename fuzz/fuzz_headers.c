/*
 * A libFuzzer target for the code that reads Kafka record headers: what a
 * producer we do not control can put on a record of our topics.
 *
 * The input is a record: byte 0 is the key's length, the key follows, then
 * headers as [name length][name][value length, 255 = no value][value] while
 * the bytes last (at most MAX_HEADERS); the whole input is also the
 * record's value. librdkafka 2.0 has no public way to make a message with
 * headers, so the target makes real ones without a broker: a producer with
 * no bootstrap servers queues the record, rd_kafka_purge fails it at once,
 * and the delivery report hands the message back, headers included. On it
 * the target reads headers with kafkax_header (several buffer sizes,
 * checked against librdkafka's own lookup) and dead-letters it with
 * dlq_send on the same producer; that dead letter is purged in turn and
 * must decode to a todo.v1.DeadLetter that keeps the topic, key, value and
 * every header byte for byte.
 *
 * Logging is off and the delivery reports run on the fuzzing thread, so no
 * instrumented code runs on librdkafka's threads. Any crash, sanitizer
 * report, leak or abort() is a finding. Built and run by scripts/fuzz.sh;
 * seeds (the headers event_kafka_headers writes, and the dead-letter
 * queue's) come from make_seeds.c.
 */
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "dlq.h"
#include "fuzz_common.h"
#include "kafkax.h"
#include "todo/v1/events.pb-c.h"

#define MAX_HEADERS 64
#define NO_VALUE 255
#define TOPIC "tasks.events.v1"
#define GROUP "fuzz-consumer"
#define REASON "fuzz: not a record this consumer reads"

/* One header as the input gives it; name is cut at its first NUL, as
 * librdkafka keeps names as C strings. */
typedef struct header {
    char name[256];
    const uint8_t *value; /* NULL: no value */
    size_t len;
} header;

/* The record being delivered, and what its delivery reports did. */
static struct record {
    const uint8_t *data, *key;
    size_t size, key_len;
    header h[MAX_HEADERS];
    size_t n;
    bool orig_done, dlq_done;
} rec;

static rd_kafka_t *producer;
static arena *scratch;

/* The value kafkax_header should give for name: that of the last header
 * so named, or NULL when there is none or it has no value. */
static const header *last_named(const char *name)
{
    for (size_t i = rec.n; i-- > 0;)
        if (strcmp(rec.h[i].name, name) == 0) return rec.h[i].value != NULL ? &rec.h[i] : NULL;
    return NULL;
}

static void check_lookup(const rd_kafka_message_t *m, const char *name)
{
    static const size_t caps[] = {1, 2, 16, 255};
    char buf[255];
    const header *want = last_named(name);
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
        const char *got = kafkax_header(m, name, buf, caps[c]);
        if ((got == NULL) != (want == NULL)) fuzz_fail("kafkax_header", "finds a header librdkafka does not, or not one it does");
        if (got == NULL) continue;
        size_t n = want->len < caps[c] - 1 ? want->len : caps[c] - 1;
        if (got != buf || memcmp(buf, want->value, n) != 0 || buf[n] != '\0')
            fuzz_fail("kafkax_header", "the copy is not the value's first bytes and a NUL");
    }
}

/* The delivered record has the headers the input gave, in order. */
static void check_record(const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hs;
    if (rd_kafka_message_headers(m, &hs) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (rec.n > 0) fuzz_fail("fuzz_headers", "the record lost its headers");
        return;
    }
    if (rd_kafka_header_cnt(hs) != rec.n) fuzz_fail("fuzz_headers", "the record has another number of headers");
    for (size_t i = 0; i < rec.n; i++) {
        const char *name;
        const void *v;
        size_t len;
        if (rd_kafka_header_get_all(hs, i, &name, &v, &len) != RD_KAFKA_RESP_ERR_NO_ERROR ||
            strcmp(name, rec.h[i].name) != 0 || (v == NULL) != (rec.h[i].value == NULL) ||
            (v != NULL && (len != rec.h[i].len || memcmp(v, rec.h[i].value, len) != 0)))
            fuzz_fail("fuzz_headers", "librdkafka changed a header");
        check_lookup(m, name);
    }
    check_lookup(m, "ce_type");
    check_lookup(m, "todo_schema_id");
}

static bool bytes_are(ProtobufCBinaryData b, const void *want, size_t len)
{
    return b.len == len && (len == 0 || memcmp(b.data, want, len) == 0);
}

/* The dead letter keeps the record byte for byte, read the way its reader
 * (todoctl dlq, which redrives it) reads it: with protobuf-c, which takes
 * header names that are not UTF-8 as they are (pbx_decode would refuse
 * them, as would proto3 decoders that check strings). */
static void check_dead_letter(const rd_kafka_message_t *m)
{
    ProtobufCAllocator alloc;
    char buf[64];
    arena_reset(scratch);
    arena_pbc_allocator(scratch, &alloc);
    const Todo__V1__DeadLetter *dl = todo__v1__dead_letter__unpack(&alloc, m->len, m->payload);
    if (dl == NULL) fuzz_fail("dlq_send", "the dead letter does not decode");
    if (strcmp(dl->original_topic, TOPIC) != 0 || strcmp(dl->consumer_group, GROUP) != 0 ||
        strcmp(dl->reason, REASON) != 0 || !bytes_are(dl->original_key, rec.key, rec.key_len) ||
        !bytes_are(dl->original_value, rec.data, rec.size) || dl->n_original_headers != rec.n)
        fuzz_fail("dlq_send", "the dead letter does not hold the record");
    for (size_t i = 0; i < rec.n; i++) {
        const Todo__V1__DeadLetter__OriginalHeadersEntry *e = dl->original_headers[i];
        if (strcmp(e->key, rec.h[i].name) != 0 || !bytes_are(e->value, rec.h[i].value, rec.h[i].len))
            fuzz_fail("dlq_send", "the dead letter changed a header");
    }
    if (kafkax_header(m, "dlq_reason", buf, sizeof buf) == NULL || strcmp(buf, REASON) != 0)
        fuzz_fail("dlq_send", "the dead letter has no dlq_reason header");
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)opaque;
    todo_err err;
    const char *topic = rd_kafka_topic_name(m->rkt);
    if (strcmp(topic, TOPIC) == 0) {
        check_record(m);
        if (dlq_send(rk, GROUP, m, REASON, &err) != TODO_OK) fuzz_fail("dlq_send", err.msg);
        rec.orig_done = true;
    } else if (strcmp(topic, DLQ_TOPIC) == 0) {
        check_dead_letter(m);
        rec.dlq_done = true;
    }
}

static void destroy(void)
{
    rd_kafka_destroy(producer);
    arena_free(scratch);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* No brokers; records up to the largest input plus the dead letter's
     * framing; no logging (it would run on librdkafka's threads). */
    if (rd_kafka_conf_set(conf, "message.max.bytes", "8388608", errstr, sizeof errstr) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "topic.metadata.refresh.interval.ms", "-1", errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        fuzz_fail("fuzz_headers", errstr);
    rd_kafka_conf_set_log_cb(conf, NULL);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    scratch = arena_new();
    if (producer == NULL || scratch == NULL) fuzz_fail("fuzz_headers", errstr);
    atexit(destroy);
    return 0;
}

/* Splits the input into rec (see the top of the file). */
static void parse(const uint8_t *data, size_t size)
{
    size_t i = 1;
    memset(&rec, 0, sizeof rec);
    rec.data = data;
    rec.size = size;
    rec.key = data + 1;
    rec.key_len = size > 0 ? (data[0] < size - 1 ? data[0] : size - 1) : 0;
    i += rec.key_len;
    while (rec.n < MAX_HEADERS && i < size) {
        size_t nlen = data[i++];
        if (nlen > size - i) break;
        header *h = &rec.h[rec.n];
        memcpy(h->name, data + i, nlen);
        h->name[nlen] = '\0';
        i += nlen;
        if (i >= size) break;
        size_t vlen = data[i++];
        if (vlen != NO_VALUE) {
            if (vlen > size - i) break;
            h->value = data + i;
            h->len = vlen;
            i += vlen;
        }
        rec.n++;
    }
}

/* Polls until done is set or about five seconds pass. How many polls that
 * takes depends on librdkafka's threads, so this loop is kept out of the
 * coverage libFuzzer steers by (a run must repeat exactly). */
__attribute__((no_sanitize("coverage"))) static bool served(rd_kafka_t *rk, const bool *done)
{
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE);
    for (int i = 0; i < 500 && !*done; i++) rd_kafka_poll(rk, i == 0 ? 0 : 10);
    return *done;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    parse(data, size);
    rd_kafka_headers_t *hs = rd_kafka_headers_new(rec.n);
    for (size_t i = 0; i < rec.n; i++)
        rd_kafka_header_add(hs, rec.h[i].name, -1, rec.h[i].value, rec.h[i].value != NULL ? (ssize_t)rec.h[i].len : 0);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_KEY(rec.key, rec.key_len),
        RD_KAFKA_V_VALUE((void *)data, size), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hs),
        RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_headers_destroy(hs);
        fuzz_fail("rd_kafka_producev", rd_kafka_err2str(e));
    }
    if (!served(producer, &rec.orig_done)) fuzz_fail("fuzz_headers", "no delivery report for the record");
    if (!served(producer, &rec.dlq_done)) fuzz_fail("fuzz_headers", "no delivery report for the dead letter");
    return 0;
}
