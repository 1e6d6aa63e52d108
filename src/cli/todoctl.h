/* todoctl's parts in other files (todoctl.c has the command table). */
#ifndef TODO_TODOCTL_H
#define TODO_TODOCTL_H

#include "config.h"

/* todoctl saga ...: 0 ok, 1 failed, 2 bad usage (the caller prints it). */
int todoctl_saga(const todo_config *cfg, int argc, char **argv);

/* todoctl registry ...: likewise. */
int todoctl_registry(const todo_config *cfg, int argc, char **argv);

/* todoctl dlq ...: likewise. */
int todoctl_dlq(const todo_config *cfg, int argc, char **argv);

/* todoctl outbox ...: likewise. */
int todoctl_outbox(const todo_config *cfg, int argc, char **argv);

#endif
