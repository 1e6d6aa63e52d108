/* Unit tests of todo_err: codes and messages, including a message that
 * wraps the one the error already holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "todo_err.h"

static void a_message_can_wrap_the_one_it_holds(void **state)
{
    (void)state;
    todo_err err;
    todo_err_clear(&err);
    assert_int_equal(err.code, TODO_OK);
    assert_int_equal(todo_err_set(&err, TODO_EINVAL, "bad %s", "value"), TODO_EINVAL);
    assert_string_equal(err.msg, "bad value");
    /* What kafkax and the commands do: "<context>: <what it said>". */
    assert_int_equal(todo_err_set(&err, TODO_EINTERNAL, "setting x: %s", err.msg), TODO_EINTERNAL);
    assert_string_equal(err.msg, "setting x: bad value");
    assert_int_equal(err.code, TODO_EINTERNAL);
    /* Too long: cut, still terminated. */
    char big[2 * TODO_ERR_MSG_MAX];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    todo_err_set(&err, TODO_EINVAL, "%s", big);
    assert_int_equal(strlen(err.msg), TODO_ERR_MSG_MAX - 1);
    assert_int_equal(todo_err_set(NULL, TODO_EUNAVAIL, "nobody listens"), TODO_EUNAVAIL);
    assert_string_equal(todo_status_name(TODO_EDENIED), "permission denied");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_message_can_wrap_the_one_it_holds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
