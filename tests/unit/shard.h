/* Runs one shard of a cmocka group: with argument "K/N" only the cases
 * whose index i has i % N == K, so that ctest can run the shards of a slow,
 * waiting-bound group side by side (tests/CMakeLists.txt,
 * todo_unit_test_sharded). Without an argument every case runs, which is how
 * valgrind runs the binary. */
#ifndef TODO_TEST_SHARD_H
#define TODO_TEST_SHARD_H

#include <stdio.h>
#include <stdlib.h>

#define run_shard(tests, argc, argv) \
    run_shard_((tests), sizeof(tests) / sizeof((tests)[0]), (argc), (argv))

static inline int run_shard_(const struct CMUnitTest *tests, size_t n, int argc, char **argv)
{
    size_t k = 0, of = 1;
    if (argc > 1 && (sscanf(argv[1], "%zu/%zu", &k, &of) != 2 || of == 0 || k >= of)) {
        fprintf(stderr, "usage: %s [K/N] (run the cases i with i %% N == K)\n", argv[0]);
        return 2;
    }
    struct CMUnitTest *mine = calloc(n, sizeof *mine);
    if (mine == NULL) return 2;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (i % of == k) mine[m++] = tests[i];
    int rc = m == 0 ? 0 : _cmocka_run_group_tests("shard", mine, m, NULL, NULL);
    free(mine);
    return rc;
}

#endif
