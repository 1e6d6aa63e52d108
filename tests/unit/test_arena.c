/* Unit tests of arena: alignment, growth, reset, protobuf-c allocator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "arena.h"
#include "google/protobuf/timestamp.pb-c.h"

static void allocations_are_aligned_and_distinct(void **state)
{
    (void)state;
    arena *a = arena_new();
    char *prev = NULL;
    for (int i = 1; i < 200; i++) {
        char *p = arena_alloc(a, (size_t)i);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xAB, (size_t)i);
        assert_ptr_not_equal(p, prev);
        prev = p;
    }
    arena_free(a);
}

static void large_allocations_get_their_own_block(void **state)
{
    (void)state;
    arena *a = arena_new();
    char *big = arena_alloc(a, 100000);
    memset(big, 1, 100000);
    char *small = arena_alloc(a, 10);
    memset(small, 2, 10);
    assert_int_equal(big[99999], 1);
    assert_true(arena_used(a) >= 100010);
    arena_free(a);
}

static void reset_releases_everything(void **state)
{
    (void)state;
    arena *a = arena_new();
    for (int i = 0; i < 100; i++) arena_alloc(a, 1000);
    assert_true(arena_used(a) >= 100000);
    arena_reset(a);
    assert_int_equal(arena_used(a), 0);
    assert_non_null(arena_alloc(a, 16));
    arena_free(a);
    arena_free(NULL);
}

static void strings_and_printf_are_copied(void **state)
{
    (void)state;
    arena *a = arena_new();
    char src[] = "hello";
    char *d = arena_strdup(a, src);
    src[0] = 'j';
    assert_string_equal(d, "hello");
    assert_string_equal(arena_strndup(a, "abcdef", 3), "abc");
    assert_string_equal(arena_printf(a, "%d-%s", 42, "x"), "42-x");
    char *z = arena_calloc(a, 64);
    for (int i = 0; i < 64; i++) assert_int_equal(z[i], 0);
    arena_free(a);
}

static void protobuf_messages_unpack_into_the_arena(void **state)
{
    (void)state;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    uint8_t buf[32];
    ProtobufCAllocator alloc;
    ts.seconds = 1234567890;
    ts.nanos = 5;
    size_t n = google__protobuf__timestamp__pack(&ts, buf);
    arena *a = arena_new();
    arena_pbc_allocator(a, &alloc);
    Google__Protobuf__Timestamp *back = google__protobuf__timestamp__unpack(&alloc, n, buf);
    assert_non_null(back);
    assert_int_equal(back->seconds, 1234567890);
    assert_int_equal(back->nanos, 5);
    assert_true(arena_used(a) > 0);
    arena_free(a); /* no free_unpacked: the arena owns it */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(allocations_are_aligned_and_distinct),
        cmocka_unit_test(large_allocations_get_their_own_block),
        cmocka_unit_test(reset_releases_everything),
        cmocka_unit_test(strings_and_printf_are_copied),
        cmocka_unit_test(protobuf_messages_unpack_into_the_arena),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
