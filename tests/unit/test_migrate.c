/* Unit tests of migrate: file names, checksums, scanning, and the rule that
 * applied migrations never change. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migrate.h"

static void names_follow_the_numbered_pattern(void **state)
{
    (void)state;
    assert_int_equal(migrate_parse_name("0001_init.sql"), 1);
    assert_int_equal(migrate_parse_name("0042_add_tags_2.sql"), 42);
    assert_int_equal(migrate_parse_name("0000_zero.sql"), -1);
    assert_int_equal(migrate_parse_name("1_init.sql"), -1);
    assert_int_equal(migrate_parse_name("0001-init.sql"), -1);
    assert_int_equal(migrate_parse_name("0001_Init.sql"), -1);
    assert_int_equal(migrate_parse_name("0001_init.sql.bak"), -1);
    assert_int_equal(migrate_parse_name("0001_.sql"), -1);
    assert_int_equal(migrate_parse_name("README.md"), -1);
}

static void checksum_is_sha256(void **state)
{
    (void)state;
    char out[65];
    migrate_checksum("abc", 3, out);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static migrate_file file(int v, const char *name, const char *sum)
{
    migrate_file f = {.version = v, .sql = NULL};
    snprintf(f.name, sizeof f.name, "%s", name);
    snprintf(f.checksum, sizeof f.checksum, "%s", sum);
    return f;
}

static migrate_applied applied(int v, const char *name, const char *sum)
{
    migrate_applied a = {.version = v};
    snprintf(a.name, sizeof a.name, "%s", name);
    snprintf(a.checksum, sizeof a.checksum, "%s", sum);
    return a;
}

static void pending_files_follow_the_applied_ones(void **state)
{
    (void)state;
    migrate_file files[] = {file(1, "0001_a.sql", "aa"), file(2, "0002_b.sql", "bb"), file(3, "0003_c.sql", "cc")};
    migrate_applied done[] = {applied(1, "0001_a.sql", "aa")};
    size_t first;
    todo_err err;
    assert_int_equal(migrate_check(files, 3, done, 1, &first, &err), TODO_OK);
    assert_int_equal(first, 1);
    assert_int_equal(migrate_check(files, 3, NULL, 0, &first, &err), TODO_OK);
    assert_int_equal(first, 0);
}

static void a_changed_applied_file_is_an_error(void **state)
{
    (void)state;
    migrate_file files[] = {file(1, "0001_a.sql", "aa-edited"), file(2, "0002_b.sql", "bb")};
    migrate_applied done[] = {applied(1, "0001_a.sql", "aa")};
    size_t first;
    todo_err err;
    assert_int_equal(migrate_check(files, 2, done, 1, &first, &err), TODO_EPRECOND);
    assert_non_null(strstr(err.msg, "0001_a.sql changed"));
}

static void renamed_missing_or_skipped_files_are_errors(void **state)
{
    (void)state;
    size_t first;
    todo_err err;
    migrate_file renamed[] = {file(1, "0001_x.sql", "aa")};
    migrate_applied done[] = {applied(1, "0001_a.sql", "aa"), applied(2, "0002_b.sql", "bb")};
    assert_int_equal(migrate_check(renamed, 1, done, 1, &first, &err), TODO_EPRECOND);
    assert_non_null(strstr(err.msg, "renamed"));
    migrate_file only_one[] = {file(1, "0001_a.sql", "aa")};
    assert_int_equal(migrate_check(only_one, 1, done, 2, &first, &err), TODO_EPRECOND);
    assert_non_null(strstr(err.msg, "missing"));
    /* A file numbered below an applied one that was never applied. */
    migrate_file gap[] = {file(1, "0001_a.sql", "aa"), file(2, "0002_new.sql", "nn"), file(3, "0003_c.sql", "cc")};
    migrate_applied done13[] = {applied(1, "0001_a.sql", "aa"), applied(3, "0003_c.sql", "cc")};
    assert_int_equal(migrate_check(gap, 3, done13, 2, &first, &err), TODO_EPRECOND);
    assert_non_null(strstr(err.msg, "never applied"));
}

static void write_file(const char *dir, const char *name, const char *content)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static void scanning_sorts_and_refuses_duplicate_versions(void **state)
{
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/migrate-test-%d", TEST_TMP, (int)getpid());
    mkdir(dir, 0700);
    write_file(dir, "0002_second.sql", "select 2;");
    write_file(dir, "0001_first.sql", "select 1;");
    write_file(dir, "notes.txt", "ignored");
    migrate_file *files;
    size_t n;
    todo_err err;
    assert_int_equal(migrate_scan(dir, &files, &n, &err), TODO_OK);
    assert_int_equal(n, 2);
    assert_string_equal(files[0].name, "0001_first.sql");
    assert_string_equal(files[0].sql, "select 1;");
    assert_int_equal(files[1].version, 2);
    migrate_files_free(files, n);
    write_file(dir, "0002_other.sql", "select 3;");
    assert_int_equal(migrate_scan(dir, &files, &n, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "share version 0002"));
    assert_int_equal(migrate_scan("/nonexistent/dir", &files, &n, &err), TODO_EINVAL);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_follow_the_numbered_pattern),
        cmocka_unit_test(checksum_is_sha256),
        cmocka_unit_test(pending_files_follow_the_applied_ones),
        cmocka_unit_test(a_changed_applied_file_is_an_error),
        cmocka_unit_test(renamed_missing_or_skipped_files_are_errors),
        cmocka_unit_test(scanning_sorts_and_refuses_duplicate_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
