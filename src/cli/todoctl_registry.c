/*
 * todoctl registry: the schema registry from the command line.
 *
 *   todoctl registry list                                   subjects, latest versions, modes
 *   todoctl registry show SUBJECT [VERSION]                 a version's message and fields, and all versions
 *   todoctl registry check SUBJECT FILE [--message M] [-I DIR]...     would FILE be accepted as the next version?
 *   todoctl registry register SUBJECT FILE [--message M] [-I DIR]...  add it (idempotent)
 *   todoctl registry set-mode SUBJECT|--global MODE         NONE, BACKWARD, FORWARD, FULL, *_TRANSITIVE
 *
 * FILE is a descriptor set (protoc --include_imports --descriptor_set_out)
 * or a .proto file, compiled with protoc; its imports are looked up in the
 * -I folders, then TODO_PROTO_PATH (folders separated by ':'; default: the
 * repository's proto/, where `import "todo/v1/task.proto"` resolves), then
 * the file's own folder.
 * M defaults to the message of the subject's latest version. Uses
 * TODO_PG_URL. Exit status: 0 ok (compatible), 1 refused or failed, 2 usage.
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgx.h"
#include "reg_store.h"
#include "todoctl.h"

/* Appends " -I 'dir'" to cmd (a folder with a quote is refused). */
static int add_include(char *cmd, size_t cap, const char *dir)
{
    if (dir[0] == '\0') return 0;
    if (strchr(dir, '\'') != NULL) {
        fprintf(stderr, "todoctl: include folder %s has a quote in its name\n", dir);
        return -1;
    }
    size_t n = strlen(cmd);
    return snprintf(cmd + n, cap - n, " -I '%s'", dir) < (int)(cap - n) ? 0 : -1;
}

/* Reads FILE (compiling a .proto with the include folders) into *bytes
 * (malloc'ed). */
static int read_schema(const char *file, const char *const *includes, int n_includes, uint8_t **bytes, size_t *len)
{
    char tmp[] = "/tmp/todoctl-schema-XXXXXX", cmd[4096];
    const char *path = file;
    size_t n = strlen(file);
    int fd = -1;
    if (n > 6 && strcmp(file + n - 6, ".proto") == 0) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", file);
        if ((fd = mkstemp(tmp)) < 0) return -1;
        close(fd);
        snprintf(cmd, sizeof cmd, "protoc");
        int bad = 0;
        for (int i = 0; i < n_includes; i++) bad |= add_include(cmd, sizeof cmd, includes[i]);
        const char *path_env = getenv("TODO_PROTO_PATH");
        char paths[2048];
        snprintf(paths, sizeof paths, "%s", path_env != NULL ? path_env : TODO_PROTO_DIR);
        for (char *save = NULL, *d = strtok_r(paths, ":", &save); d != NULL; d = strtok_r(NULL, ":", &save))
            if (access(d, R_OK) == 0) bad |= add_include(cmd, sizeof cmd, d);
        bad |= add_include(cmd, sizeof cmd, dirname(dir));
        size_t n0 = strlen(cmd);
        if (bad || strchr(file, '\'') != NULL ||
            snprintf(cmd + n0, sizeof cmd - n0, " --include_imports --descriptor_set_out='%s' '%s'", tmp, file) >=
                (int)(sizeof cmd - n0)) {
            unlink(tmp);
            return -1;
        }
        if (system(cmd) != 0) {
            fprintf(stderr, "todoctl: protoc could not compile %s\n", file);
            unlink(tmp);
            return -1;
        }
        path = tmp;
    }
    FILE *f = fopen(path, "rb");
    int rc = -1;
    if (f != NULL && fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        rewind(f);
        *bytes = size > 0 && size < (64 << 20) ? malloc((size_t)size) : NULL;
        if (*bytes != NULL && fread(*bytes, 1, (size_t)size, f) == (size_t)size) {
            *len = (size_t)size;
            rc = 0;
        }
    }
    if (f != NULL) fclose(f);
    if (rc != 0) fprintf(stderr, "todoctl: cannot read %s\n", file);
    if (path == tmp) unlink(tmp);
    return rc;
}

static int list(PGconn *pg)
{
    todo_err err;
    reg_subject_info *subjects;
    size_t n;
    if (reg_store_list(pg, &subjects, &n, &err) != 0) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    printf("%-32s %7s %6s  %-36s %s\n", "subject", "version", "id", "message", "mode");
    for (size_t i = 0; i < n; i++)
        printf("%-32s %7d %6d  %-36s %s%s\n", subjects[i].subject, subjects[i].latest_version, subjects[i].latest_id,
               subjects[i].message, subjects[i].mode, subjects[i].mode_is_default ? " (global)" : "");
    if (n == 0) printf("no subjects\n");
    free(subjects);
    return 0;
}

static int show(PGconn *pg, const char *subject, int version)
{
    todo_err err;
    reg_schema_row row;
    if (reg_store_get(pg, subject, version, &row, &err) != 0) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    printf("subject %s version %d: schema id %d, message %s (%zu bytes)\n", subject, row.version, row.id, row.message,
           row.len);
    Google__Protobuf__FileDescriptorSet *set = NULL;
    todo_err derr;
    (void)reg_set_decode(row.bytes, row.len, &set, &derr); /* NULL: nothing to list */
    const char *dot = strrchr(row.message, '.');
    for (size_t f = 0; set != NULL && f < set->n_file; f++)
        for (size_t m = 0; m < set->file[f]->n_message_type; m++) {
            const Google__Protobuf__DescriptorProto *d = set->file[f]->message_type[m];
            if (strcmp(d->name, dot != NULL ? dot + 1 : row.message) != 0) continue;
            for (size_t i = 0; i < d->n_field; i++)
                printf("  %3d  %s\n", d->field[i]->number, d->field[i]->name);
        }
    if (set != NULL) google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
    reg_schema_row_cleanup(&row);
    const char *p[1] = {subject};
    PGresult *r = pgx_exec(pg,
                           "select v.version, v.schema_id, to_char(v.created_at, 'YYYY-MM-DD HH24:MI:SS')"
                           " from registry.versions v where v.subject = $1 order by v.version",
                           1, p, &err);
    if (r == NULL) return 1;
    printf("versions:\n");
    for (int i = 0; i < PQntuples(r); i++)
        printf("  %s  id %s  %s UTC\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
    PQclear(r);
    return 0;
}

static int check_or_register(PGconn *pg, int argc, char **argv, bool do_register)
{
    todo_err err;
    const char *subject = argv[3], *file = argv[4], *message = NULL, *includes[16];
    int n_includes = 0;
    for (int i = 5; i < argc; i++) {
        if (strcmp(argv[i], "--message") == 0 && i + 1 < argc) message = argv[++i];
        else if (strcmp(argv[i], "-I") == 0 && i + 1 < argc && n_includes < 16) includes[n_includes++] = argv[++i];
        else return 2;
    }
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (read_schema(file, includes, n_includes, &bytes, &len) != 0) return 1;
    int id, version;
    reg_report report;
    int rc = reg_store_register(pg, subject, message, bytes, len, do_register, &id, &version, &report, &err);
    free(bytes);
    if (rc == TODO_ENOTFOUND) {
        fprintf(stderr, "todoctl: %s with --message\n", err.msg);
        return 2;
    }
    if (rc == TODO_EPRECOND) {
        fprintf(stderr, "todoctl: refused: %s is not compatible with %s (%d violation(s)):\n", file, subject, report.n);
        for (int i = 0; i < report.n && i < REG_MAX_VIOLATIONS; i++) fprintf(stderr, "  %s\n", report.violations[i]);
        return 1;
    }
    if (rc != 0) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    if (do_register) printf("registered %s version %d (schema id %d)\n", subject, version, id);
    else if (version > 0) printf("compatible: %s already holds this schema as version %d (id %d)\n", subject, version, id);
    else printf("compatible: %s would accept it as its next version\n", subject);
    return 0;
}

int todoctl_registry(const todo_config *cfg, int argc, char **argv)
{
    todo_err err;
    if (argc < 3) return 2;
    const char *op = argv[2];
    bool known = strcmp(op, "list") == 0 || (strcmp(op, "show") == 0 && (argc == 4 || argc == 5)) ||
                 ((strcmp(op, "check") == 0 || strcmp(op, "register") == 0) && argc >= 5) ||
                 (strcmp(op, "set-mode") == 0 && argc == 5);
    if (!known) return 2;
    PGconn *pg = pgx_connect(cfg->admin_pg_url, "todoctl", &err);
    if (pg == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    int rc;
    if (strcmp(op, "list") == 0) {
        rc = list(pg);
    } else if (strcmp(op, "show") == 0) {
        rc = show(pg, argv[3], argc == 5 ? atoi(argv[4]) : 0);
    } else if (strcmp(op, "set-mode") == 0) {
        reg_mode m;
        const char *subject = strcmp(argv[3], "--global") == 0 ? "*" : argv[3];
        if (reg_mode_parse(argv[4], &m) != 0 || (strcmp(subject, "*") != 0 && !reg_subject_valid(subject))) {
            fprintf(stderr, "todoctl: set-mode SUBJECT|--global NONE|BACKWARD|FORWARD|FULL[_TRANSITIVE]\n");
            rc = 2;
        } else if (reg_store_set_mode(pg, subject, m, &err) != 0) {
            fprintf(stderr, "todoctl: %s\n", err.msg);
            rc = 1;
        } else {
            printf("%s: %s\n", subject[0] == '*' ? "global default" : subject, reg_mode_name(m));
            rc = 0;
        }
    } else {
        rc = check_or_register(pg, argc, argv, strcmp(op, "register") == 0);
    }
    pgx_close(pg);
    return rc;
}
