/*
 * Unit tests of pbx: hostile protobuf bytes are refused before protobuf-c
 * decodes them (deep nesting, field number 0, groups, cut lengths), a
 * decode past its memory budget fails instead of growing, and unknown
 * fields never survive a decode, at any level.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "pbx.h"
#include "todo/v1/command.pb-c.h"

/* Appends a varint to buf at *n. */
static void put_varint(uint8_t *buf, size_t *n, uint64_t v)
{
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        buf[(*n)++] = (uint8_t)(v ? b | 0x80 : b);
    } while (v);
}

/* A DescriptorProto nested `levels` deep through nested_type (field 3),
 * built from the inside out; *len receives its size. */
static uint8_t *nested_descriptor(int levels, size_t *len)
{
    size_t cap = (size_t)levels * 8 + 16, n = 0;
    uint8_t *buf = malloc(cap), *tmp = malloc(cap);
    for (int i = 0; i < levels; i++) {
        size_t m = 0;
        put_varint(tmp, &m, (3 << 3) | 2);
        put_varint(tmp, &m, n);
        memcpy(tmp + m, buf, n);
        n += m;
        memcpy(buf, tmp, n);
    }
    free(tmp);
    *len = n;
    return buf;
}

static void deep_nesting_is_refused_before_decoding(void **state)
{
    (void)state;
    todo_err err;
    size_t len;
    uint8_t *deep = nested_descriptor(10000, &len);
    assert_true(len < 64 * 1024); /* a few tens of KB are enough to kill a thread's stack */
    assert_int_equal(pbx_check(&google__protobuf__descriptor_proto__descriptor, deep, len, PBX_MAX_DEPTH, &err),
                     TODO_EINVAL);
    assert_non_null(strstr(err.msg, "nested deeper than 32"));
    arena *a = arena_new();
    ProtobufCMessage *m;
    pbx_limits lim = {.max_depth = PBX_MAX_DEPTH};
    assert_int_equal(pbx_decode(&google__protobuf__descriptor_proto__descriptor, deep, len, a, &lim, &m, &err),
                     TODO_EINVAL);
    assert_null(m);
    free(deep);
    uint8_t *ok = nested_descriptor(20, &len);
    assert_int_equal(pbx_decode(&google__protobuf__descriptor_proto__descriptor, ok, len, a, &lim, &m, &err), TODO_OK);
    assert_non_null(m);
    free(ok);
    arena_free(a);
}

/* Field number 0 in a two-byte tag: protobuf-c 1.4.1 decodes it as an
 * unknown field and re-encodes it in one byte, which it then refuses (the
 * registry fuzz finding). */
static void malformed_wire_data_is_refused(void **state)
{
    (void)state;
    todo_err err;
    static const uint8_t tag_zero[] = {0x80, 0x00, 0x0c};
    static const uint8_t group[] = {0x0b, 0x0c};          /* field 1, start group */
    static const uint8_t cut_length[] = {0x0a, 0x05, 'a'}; /* field 1, 5 bytes, 1 there */
    static const uint8_t cut_varint[] = {0x08, 0xff};
    static const uint8_t cut_fixed[] = {0x0d, 1, 2};      /* fixed32 with 2 bytes */
    static const uint8_t too_big_number[] = {0xf8, 0xff, 0xff, 0xff, 0x3f, 0x01}; /* field 2^31-1 */
    const ProtobufCMessageDescriptor *d = &google__protobuf__timestamp__descriptor;
    assert_int_equal(pbx_check(d, tag_zero, sizeof tag_zero, 8, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "google.protobuf.Timestamp"));
    assert_non_null(strstr(err.msg, "field number"));
    assert_int_equal(pbx_check(d, group, sizeof group, 8, &err), TODO_EINVAL);
    assert_int_equal(pbx_check(d, cut_length, sizeof cut_length, 8, &err), TODO_EINVAL);
    assert_int_equal(pbx_check(d, cut_varint, sizeof cut_varint, 8, &err), TODO_EINVAL);
    assert_int_equal(pbx_check(d, cut_fixed, sizeof cut_fixed, 8, &err), TODO_EINVAL);
    assert_int_equal(pbx_check(d, too_big_number, sizeof too_big_number, 8, &err), TODO_EINVAL);
    assert_int_equal(pbx_check(d, NULL, 0, 8, &err), TODO_OK);
}

/* A NUL inside a title used to be accepted and the stored title silently
 * cut; invalid UTF-8 in a filter answered UNAVAILABLE. Both are refused on
 * the raw bytes, naming the field. */
static void text_fields_must_be_utf8_without_nul(void **state)
{
    (void)state;
    todo_err err;
    static const uint8_t title_nul[] = {0x12, 3, 'a', 0, 'b'}; /* CreateTaskRequest.title = "a\0b" */
    assert_int_equal(pbx_check(&todo__v1__create_task_request__descriptor, title_nul, sizeof title_nul, 8, &err),
                     TODO_EINVAL);
    assert_string_equal(err.msg, "title: text must be UTF-8 without NUL characters");
    static const uint8_t zone_bad[] = {0x1a, 4, 0x2a, 2, 0xc3, 0x28}; /* rule { time_zone = "\xc3(" } */
    assert_int_equal(pbx_check(&todo__v1__create_recurring_pattern_request__descriptor, zone_bad, sizeof zone_bad, 8,
                               &err), TODO_EINVAL);
    assert_string_equal(err.msg, "rule.time_zone: text must be UTF-8 without NUL characters");
    static const uint8_t title_ok[] = {0x12, 4, 0xc3, 0xa9, 'a', 'b'};
    assert_int_equal(pbx_check(&todo__v1__create_task_request__descriptor, title_ok, sizeof title_ok, 8, &err),
                     TODO_OK);
}

/* A 1 MiB request of 2-byte unknown fields costs protobuf-c tens of MB:
 * past the budget the decode fails, the arena stays small. */
static void a_decode_past_its_budget_fails(void **state)
{
    (void)state;
    size_t len = 1 << 20;
    uint8_t *buf = malloc(len);
    for (size_t i = 0; i < len; i += 2) {
        buf[i] = 15 << 3; /* field 15, varint: unknown to Timestamp */
        buf[i + 1] = 1;
    }
    arena *a = arena_new();
    ProtobufCMessage *m;
    todo_err err;
    pbx_limits lim = {.max_depth = PBX_MAX_DEPTH, .max_bytes = 4 << 20};
    assert_int_equal(pbx_decode(&google__protobuf__timestamp__descriptor, buf, len, a, &lim, &m, &err), TODO_ETOOBIG);
    assert_non_null(strstr(err.msg, "more than 4194304 bytes"));
    assert_true(arena_used(a) <= (size_t)(4 << 20));
    free(buf);
    arena_free(a);
}

/* Unknown fields at any level are gone after a decode: re-encoding gives
 * the known fields only. */
static void unknown_fields_are_stripped_at_every_level(void **state)
{
    (void)state;
    Todo__V1__RecurrenceRule rule = TODO__V1__RECURRENCE_RULE__INIT;
    rule.time_zone = "Europe/Berlin";
    rule.frequency = TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_DAILY;
    Todo__V1__CreateRecurringPatternRequest rq = TODO__V1__CREATE_RECURRING_PATTERN_REQUEST__INIT;
    rq.task_id = "0b8e0a4e-6f7c-4d52-9a53-3f1e5a8b9c01";
    rq.rule = &rule;
    size_t clean_len = todo__v1__create_recurring_pattern_request__get_packed_size(&rq);
    uint8_t clean[256];
    todo__v1__create_recurring_pattern_request__pack(&rq, clean);

    /* The same request with unknown fields in the rule (field 99, 1,000
     * bytes) and at the top (field 50, a varint). */
    uint8_t rule_bytes[2048], raw[4096];
    size_t rn = todo__v1__recurrence_rule__pack(&rule, rule_bytes), n = 0;
    put_varint(rule_bytes, &rn, (99 << 3) | 2);
    put_varint(rule_bytes, &rn, 1000);
    memset(rule_bytes + rn, 'x', 1000);
    rn += 1000;
    put_varint(raw, &n, (2 << 3) | 2);
    put_varint(raw, &n, strlen(rq.task_id));
    memcpy(raw + n, rq.task_id, strlen(rq.task_id));
    n += strlen(rq.task_id);
    put_varint(raw, &n, (3 << 3) | 2);
    put_varint(raw, &n, rn);
    memcpy(raw + n, rule_bytes, rn);
    n += rn;
    put_varint(raw, &n, 50 << 3);
    put_varint(raw, &n, 7);

    arena *a = arena_new();
    ProtobufCMessage *m;
    todo_err err;
    pbx_limits lim = {.max_depth = PBX_MAX_DEPTH, .max_bytes = 1 << 20};
    assert_int_equal(pbx_decode(&todo__v1__create_recurring_pattern_request__descriptor, raw, n, a, &lim, &m, &err),
                     TODO_OK);
    uint8_t again[4096];
    assert_int_equal(protobuf_c_message_get_packed_size(m), clean_len);
    assert_int_equal(protobuf_c_message_pack(m, again), clean_len);
    assert_memory_equal(again, clean, clean_len);
    arena_free(a);

    /* The same with protobuf-c's own allocator: the unknown fields are freed. */
    ProtobufCMessage *heap = protobuf_c_message_unpack(&todo__v1__create_recurring_pattern_request__descriptor, NULL, n, raw);
    assert_non_null(heap);
    assert_true(((Todo__V1__CreateRecurringPatternRequest *)heap)->rule->base.n_unknown_fields > 0);
    pbx_strip_unknown(heap, NULL);
    assert_int_equal(protobuf_c_message_get_packed_size(heap), clean_len);
    protobuf_c_message_free_unpacked(heap, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(deep_nesting_is_refused_before_decoding),
        cmocka_unit_test(malformed_wire_data_is_refused),
        cmocka_unit_test(text_fields_must_be_utf8_without_nul),
        cmocka_unit_test(a_decode_past_its_budget_fails),
        cmocka_unit_test(unknown_fields_are_stripped_at_every_level),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
