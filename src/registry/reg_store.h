/*
 * reg_store: the schema registry in PostgreSQL (schema "registry",
 * migrations/0013).
 *
 * register  adds a schema as the next version of a subject, unless the
 *           subject already has exactly that schema (then its id and version
 *           come back: registering is idempotent). The subject's mode (or the
 *           global default, BACKWARD) decides what the new version is checked
 *           against: the latest version, or every version for the TRANSITIVE
 *           modes; a violation refuses it (TODO_EPRECOND, the report names
 *           the rules). Registrations of one subject are serialized by an
 *           advisory lock.
 * check     the same test without registering.
 * get       a subject's version (0: the latest), or a schema by its id.
 * set-mode  a subject's mode, or the global default (subject "*").
 */
#ifndef TODO_REG_STORE_H
#define TODO_REG_STORE_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "reg_compat.h"

typedef struct reg_schema_row {
    int id;
    int version;                 /* in the subject asked about; 0 for by-id lookups */
    char message[256];
    uint8_t *bytes;              /* the serialized FileDescriptorSet (malloc'ed; reg_schema_row_cleanup) */
    size_t len;
} reg_schema_row;

void reg_schema_row_cleanup(reg_schema_row *row);

/* Checks (and, when do_register, registers) bytes/len holding message
 * (NULL or "": the message of the subject's latest version; TODO_ENOTFOUND
 * when it has none) as
 * the next version of subject. *id and *version receive the schema's id
 * and version (existing or new; 0 when only checked). TODO_EPRECOND with
 * report filled when incompatible, TODO_EINVAL when the bytes are no
 * descriptor set holding message. */
int reg_store_register(PGconn *pg, const char *subject, const char *message, const uint8_t *bytes, size_t len,
                       bool do_register, int *id, int *version, reg_report *report, todo_err *err);

/* Version `version` (0: the latest) of subject, or TODO_ENOTFOUND. */
int reg_store_get(PGconn *pg, const char *subject, int version, reg_schema_row *out, todo_err *err);

/* Schema `id`, or TODO_ENOTFOUND. */
int reg_store_by_id(PGconn *pg, int id, reg_schema_row *out, todo_err *err);

/* The mode of subject (its own, else the global default). */
int reg_store_mode(PGconn *pg, const char *subject, reg_mode *out, todo_err *err);

/* Sets subject's mode ("*": the global default). */
int reg_store_set_mode(PGconn *pg, const char *subject, reg_mode m, todo_err *err);

typedef struct reg_subject_info {
    char subject[104];
    int latest_version, latest_id;
    char message[256];           /* of the latest version */
    char mode[24];               /* the subject's own, or the global default */
    bool mode_is_default;
} reg_subject_info;

/* Every subject, by name; *out (n entries) is malloc'ed. */
int reg_store_list(PGconn *pg, reg_subject_info **out, size_t *n, todo_err *err);

/* True for a subject name we accept: 1..100 of [a-z0-9._-], or "*" where
 * the global default is meant. */
bool reg_subject_valid(const char *subject);

#endif
