/*
 * trace: W3C Trace Context (https://www.w3.org/TR/trace-context/) for one
 * user action followed through every process.
 *
 * A `traceparent` is "00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags:
 * 2 hex>". It comes in as gRPC metadata (or a new trace starts), goes into
 * each event's envelope (metadata["traceparent"]) and its Kafka headers,
 * and from there into the projector's and todo-saga's work and todo-saga's
 * calls back to todo-command. While a thread works for a trace, log.h adds
 * trace_id=... span_id=... to its lines (trace_enter/trace_leave).
 */
#ifndef TODO_TRACE_H
#define TODO_TRACE_H

#include <stdbool.h>

typedef struct trace_ctx {
    char trace_id[33];
    char span_id[17];
    char flags[3];
} trace_ctx;

/* Parses a traceparent (version 00; all-zero ids refused). */
bool trace_parse(const char *traceparent, trace_ctx *out);

/* A new trace with a new span (sampled). */
void trace_new(trace_ctx *out);

/* A child of parent (NULL: a new trace): same trace, new span id. */
void trace_child(const trace_ctx *parent, trace_ctx *out);

/* "00-<trace>-<span>-<flags>" into out (at least 56 bytes). */
void trace_format(const trace_ctx *t, char out[56]);

/* The calling thread's log lines carry t's ids until trace_leave. */
void trace_enter(const trace_ctx *t);
void trace_leave(void);

/* The calling thread's current trace context, or NULL. */
const trace_ctx *trace_current(void);

#endif
