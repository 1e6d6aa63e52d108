/*
 * A libFuzzer target for the event envelope (event.h): the Kafka record
 * values that the projector, todo-saga and the outbox relay decode with
 * event_decode.
 *
 * The input is a record value. When it decodes, the target does what the
 * relay and the consumers do next: builds the record's Kafka headers
 * (event_kafka_headers) and destroys them, looks up the payload's message,
 * topic and current version, and decodes the payload as the message its
 * type and schema version name, with pbx_decode (a payload that decodes must
 * also pack and decode again: fuzz_check_repack). The envelope itself,
 * packed again, must decode again with event_decode.
 *
 * Any crash, sanitizer report, leak or abort() is a finding. Built and
 * run by scripts/fuzz.sh; seeds (one real envelope per event schema, made
 * with event_encode) come from make_seeds.c.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "event.h"
#include "fuzz_common.h"
#include "pbx.h"

static arena *scratch;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    scratch = arena_new();
    if (scratch == NULL) fuzz_fail("fuzz_envelope", "no arena");
    return 0;
}

/* The headers name the event the envelope holds. */
static void check_headers(const Todo__V1__EventEnvelope *env)
{
    rd_kafka_headers_t *h = event_kafka_headers(env);
    const void *v;
    size_t n;
    if (h == NULL) fuzz_fail("event_kafka_headers", "no headers");
    if (rd_kafka_header_get_last(h, "ce_id", &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR || n != strlen(env->event_id) ||
        memcmp(v, env->event_id, n) != 0)
        fuzz_fail("event_kafka_headers", "ce_id is not the envelope's event_id");
    rd_kafka_headers_destroy(h);
}

static void check_payload(const Todo__V1__EventEnvelope *env)
{
    const pbx_limits lim = {.max_depth = PBX_MAX_DEPTH, .max_bytes = 4u << 20};
    const char *name = event_message_name(env->event_type, env->schema_version);
    const ProtobufCMessageDescriptor *d = fuzz_event_payload(name);
    ProtobufCMessage *payload;
    todo_err err;

    (void)event_topic(env->event_type);
    (void)event_current_version(env->event_type);
    (void)event_schema_id(env->event_type, env->schema_version);
    if (name != NULL && d == NULL) fuzz_fail("fuzz_envelope", "event.h names a payload message fuzz_common.c lacks");
    if (d != NULL && pbx_decode(d, env->data.data, env->data.len, scratch, &lim, &payload, &err) == TODO_OK)
        fuzz_check_repack(payload, scratch, &lim, name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Todo__V1__EventEnvelope *env, *again;
    todo_err err;

    arena_reset(scratch);
    if (event_decode(data, size, scratch, &env, &err) != TODO_OK) return 0;
    check_headers(env);
    check_payload(env);

    size_t n = todo__v1__event_envelope__get_packed_size(env);
    uint8_t *buf = arena_alloc(scratch, n + 1);
    todo__v1__event_envelope__pack(env, buf);
    if (event_decode(buf, n, scratch, &again, &err) != TODO_OK) {
        char detail[sizeof err.msg + 32];
        snprintf(detail, sizeof detail, "the repacked envelope does not decode: %s", err.msg);
        fuzz_fail("fuzz_envelope", detail);
    }
    return 0;
}
