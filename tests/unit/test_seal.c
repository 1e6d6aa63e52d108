/* Unit tests of seal: AES-256-GCM sealing of bytes and of events' personal
 * fields (crypto-shredding, issue 17). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "arena.h"
#include "seal.h"
#include "todo/v1/events.pb-c.h"

static seal_key key(uint8_t fill)
{
    seal_key k;
    memset(k.k, fill, sizeof k.k);
    return k;
}

static void bytes_open_only_with_their_key_and_data(void **state)
{
    (void)state;
    arena *a = arena_new();
    todo_err err;
    seal_key k = key(1), other = key(2);
    const char *msg = "Buy oat milk";
    uint8_t *ct, *pt;
    size_t n, m;
    assert_int_equal(seal_bytes(&k, (const uint8_t *)msg, strlen(msg), "alice\nT1", a, &ct, &n, &err), TODO_OK);
    assert_int_equal(n, strlen(msg) + SEAL_OVERHEAD);
    assert_null(memmem(ct, n, "oat", 3)); /* nothing readable */
    assert_int_equal(seal_open_bytes(&k, ct, n, "alice\nT1", a, &pt, &m, &err), TODO_OK);
    assert_int_equal(m, strlen(msg));
    assert_memory_equal(pt, msg, m);
    /* Another key, other additional data, a changed byte, a cut: refused. */
    assert_int_equal(seal_open_bytes(&other, ct, n, "alice\nT1", a, &pt, &m, &err), TODO_EINVAL);
    assert_int_equal(seal_open_bytes(&k, ct, n, "mallory\nT1", a, &pt, &m, &err), TODO_EINVAL);
    /* A changed byte anywhere (format, nonce, ciphertext, tag) is refused. */
    size_t at[] = {0, 1, 12, SEAL_OVERHEAD - 16 + 1, n - 16, n - 1};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        ct[at[i]] ^= 1;
        assert_int_equal(seal_open_bytes(&k, ct, n, "alice\nT1", a, &pt, &m, &err), TODO_EINVAL);
        ct[at[i]] ^= 1;
    }
    assert_int_equal(seal_open_bytes(&k, ct, n, "alice\nT1", a, &pt, &m, &err), TODO_OK);
    assert_int_equal(seal_open_bytes(&k, ct, n - 1, "alice\nT1", a, &pt, &m, &err), TODO_EINVAL); /* cut */
    assert_int_equal(seal_open_bytes(&k, ct, SEAL_OVERHEAD - 1, "alice\nT1", a, &pt, &m, &err), TODO_EINVAL);
    /* Two seals of the same text differ (a fresh nonce each). */
    uint8_t *c1, *c2;
    assert_int_equal(seal_bytes(&k, (const uint8_t *)msg, strlen(msg), "", a, &c1, &n, &err), TODO_OK);
    assert_int_equal(seal_bytes(&k, (const uint8_t *)msg, strlen(msg), "", a, &c2, &n, &err), TODO_OK);
    assert_memory_not_equal(c1, c2, n);
    arena_free(a);
}

static void keys_parse_from_hex(void **state)
{
    (void)state;
    todo_err err;
    seal_key k;
    assert_int_equal(seal_key_parse("000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F", &k, &err), 0);
    assert_int_equal(k.k[0], 0);
    assert_int_equal(k.k[31], 0x1f);
    assert_int_equal(seal_key_parse("0001", &k, &err), TODO_EINVAL);
    assert_int_equal(seal_key_parse("zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", &k, &err),
                     TODO_EINVAL);
    assert_int_equal(seal_key_parse(NULL, &k, &err), TODO_EINVAL);
    seal_key a, b;
    assert_int_equal(seal_key_new(&a, &err), 0);
    assert_int_equal(seal_key_new(&b, &err), 0);
    assert_memory_not_equal(a.k, b.k, sizeof a.k);
}

static void an_events_personal_fields_are_sealed_and_the_rest_stays_clear(void **state)
{
    (void)state;
    arena *a = arena_new();
    todo_err err;
    seal_key k = key(7);
    Todo__V1__TaskCreatedV2 ev = TODO__V1__TASK_CREATED_V2__INIT;
    Google__Protobuf__Timestamp at = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    char *tags[] = {"family", "weekly"};
    at.seconds = 1700000000;
    ev.task_id = "11111111-2222-4333-8444-555555555555";
    ev.title = "Call mom";
    ev.description = "about the holidays";
    ev.priority = TODO__V1__PRIORITY__PRIORITY_HIGH;
    ev.n_tags = 2;
    ev.tags = tags;
    ev.category = "family";
    ev.created_at = &at;
    const char *aad = seal_event_aad(a, "alice", ev.task_id, "task.created");
    assert_false(seal_event_is_sealed(&ev.base));
    assert_int_equal(seal_event(&ev.base, &k, aad, a, &err), TODO_OK);
    assert_true(seal_event_is_sealed(&ev.base));
    assert_string_equal(ev.title, "");
    assert_string_equal(ev.description, "");
    assert_string_equal(ev.category, "");
    assert_int_equal(ev.n_tags, 0);
    /* What is not personal stays as it was. */
    assert_int_equal(ev.priority, TODO__V1__PRIORITY__PRIORITY_HIGH);
    assert_string_equal(ev.task_id, "11111111-2222-4333-8444-555555555555");
    /* Packed: no personal text in the bytes. */
    size_t n = protobuf_c_message_get_packed_size(&ev.base);
    uint8_t *bytes = arena_alloc(a, n);
    protobuf_c_message_pack(&ev.base, bytes);
    assert_null(memmem(bytes, n, "Call mom", 8));
    assert_null(memmem(bytes, n, "weekly", 6));
    /* Decoded and opened by a consumer with the key. */
    ProtobufCAllocator alloc;
    arena_pbc_allocator(a, &alloc);
    Todo__V1__TaskCreatedV2 *got = todo__v1__task_created_v2__unpack(&alloc, n, bytes);
    assert_non_null(got);
    seal_key wrong = key(8);
    assert_int_equal(seal_open_event(&got->base, &wrong, aad, a, &err), TODO_EINVAL);
    assert_int_equal(seal_open_event(&got->base, &k, seal_event_aad(a, "bob", ev.task_id, "task.created"), a, &err), TODO_EINVAL);
    /* Moved to another event of the task (another type), or another task: refused. */
    assert_int_equal(seal_open_event(&got->base, &k, seal_event_aad(a, "alice", ev.task_id, "task.updated"), a, &err),
                     TODO_EINVAL);
    assert_int_equal(seal_open_event(&got->base, &k,
                                     seal_event_aad(a, "alice", "11111111-2222-4333-8444-555555555556", "task.created"),
                                     a, &err),
                     TODO_EINVAL);
    assert_int_equal(seal_open_event(&got->base, &k, aad, a, &err), TODO_OK);
    assert_false(seal_event_is_sealed(&got->base));
    assert_string_equal(got->title, "Call mom");
    assert_string_equal(got->description, "about the holidays");
    assert_string_equal(got->category, "family");
    assert_int_equal(got->n_tags, 2);
    assert_string_equal(got->tags[1], "weekly");
    assert_int_equal(got->created_at->seconds, 1700000000);
    /* Opening what is not sealed changes nothing. */
    assert_int_equal(seal_open_event(&got->base, &k, aad, a, &err), TODO_OK);
    assert_string_equal(got->title, "Call mom");
    arena_free(a);
}

static void messages_without_personal_fields_are_left_alone(void **state)
{
    (void)state;
    arena *a = arena_new();
    todo_err err;
    seal_key k = key(3);
    Todo__V1__TaskCompleted ev = TODO__V1__TASK_COMPLETED__INIT;
    ev.task_id = "11111111-2222-4333-8444-555555555555";
    assert_int_equal(seal_event(&ev.base, &k, "x", a, &err), TODO_OK);
    assert_false(seal_event_is_sealed(&ev.base));
    assert_null(seal_personal_fields("todo.v1.TaskCompleted"));
    assert_non_null(seal_personal_fields("todo.v1.TaskUpdated"));
    assert_non_null(seal_personal_fields("todo.v1.InboxEntryAdded"));
    arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bytes_open_only_with_their_key_and_data),
        cmocka_unit_test(keys_parse_from_hex),
        cmocka_unit_test(an_events_personal_fields_are_sealed_and_the_rest_stays_clear),
        cmocka_unit_test(messages_without_personal_fields_are_left_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
