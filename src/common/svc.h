/*
 * svc: what every long-running process of ours does at start and stop.
 * Signals: SIGINT and SIGTERM are blocked in every thread (call
 * svc_signals_block before starting any) and taken synchronously by the main
 * thread with svc_signals_wait, so no work happens in a signal handler.
 */
#ifndef TODO_SVC_H
#define TODO_SVC_H

#include <signal.h>

/* Blocks SIGINT and SIGTERM for this thread and those it starts later; fills
 * set for svc_signals_wait. SIGPIPE is ignored. */
void svc_signals_block(sigset_t *set);

/* Waits for SIGINT or SIGTERM; returns the signal. */
int svc_signals_wait(const sigset_t *set);

/* Returns SIGINT or SIGTERM when one is pending (taking it), else 0; never
 * blocks. For loops that cannot sit in svc_signals_wait. */
int svc_signals_pending(const sigset_t *set);

#endif
