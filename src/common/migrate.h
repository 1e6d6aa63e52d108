/*
 * migrate: forward-only schema migrations.
 *
 * migrations/ holds files named NNNN_description.sql (four digits, then
 * lowercase letters, digits and underscores). `todoctl migrate` applies the
 * ones not yet applied, in order, each in its own transaction, under a
 * PostgreSQL advisory lock (so two migrators never race), and records each
 * one's name and SHA-256 in todo_meta.schema_migrations. An applied file
 * whose content or name changed, or that disappeared, is an error: applied
 * migrations are never edited or re-run.
 */
#ifndef TODO_MIGRATE_H
#define TODO_MIGRATE_H

#include <stddef.h>

#include "todo_err.h"

typedef struct migrate_file {
    int version;
    char name[128];        /* the file name */
    char checksum[65];     /* SHA-256 of the content, hex */
    char *sql;             /* the content (owned) */
} migrate_file;

typedef struct migrate_applied {
    int version;
    char name[128];
    char checksum[65];
} migrate_applied;

/* Parses a migration file name: returns its version (>= 1), or -1 when the
 * name does not follow NNNN_description.sql. */
int migrate_parse_name(const char *name);

/* Hex SHA-256 of n bytes. */
void migrate_checksum(const char *data, size_t n, char out[65]);

/* Reads every migration file of dir, sorted by version. Duplicate versions
 * and unreadable files are errors; other files are ignored. The caller frees
 * *files with migrate_files_free. */
int migrate_scan(const char *dir, migrate_file **files, size_t *n, todo_err *err);
void migrate_files_free(migrate_file *files, size_t n);

/* Compares what is on disk with what was applied: TODO_EPRECOND when an
 * applied migration changed or vanished. *first_new receives the index of
 * the first file to apply (n when none). Both lists are sorted by version. */
int migrate_check(const migrate_file *files, size_t n, const migrate_applied *applied, size_t n_applied,
                  size_t *first_new, todo_err *err);

/* Applies the pending migrations of dir to the database at url. *applied_now
 * receives how many were applied. */
int migrate_run(const char *url, const char *dir, int *applied_now, todo_err *err);

#endif
