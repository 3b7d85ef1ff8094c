/*
 * Parser for the rows of a CICIoMT2024 feature CSV: every field a number, no quotes.
 *
 * Built by mcu_ids/data/fastcsv.py into a shared library and called through ctypes. The body of
 * a file (everything after its header line) is split at line starts into chunks; each chunk is
 * counted and then parsed by its own thread straight into the caller's row-major float32 array.
 * Anything this parser does not accept (text, quotes, spaces, a wrong field count, a lone CR)
 * stops it with a status and the line; the caller then reads the file with its general reader,
 * which knows every rule and writes the precise error messages.
 *
 * Values are rounded to float32 exactly as a correctly rounding decimal-to-float32 conversion
 * would (the general reader's): see to_float(). Per row it also notes a NaN, and per column it
 * counts +inf and -inf, so the caller needs no second pass over the rows.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum fastcsv_status {
    FASTCSV_OK = 0,
    FASTCSV_BAD_VALUE = 1,   /* a field that is not a plain number, inf or a NaN token */
    FASTCSV_FIELD_COUNT = 2, /* a line with fewer or more fields than the header */
    FASTCSV_LINE_END = 3,    /* a carriage return not followed by a line feed */
    FASTCSV_ROW_COUNT = 4,   /* the parse found more rows than the count did */
    FASTCSV_NO_MEMORY = 5,   /* no memory for the copy of a chunk's last lines */
};

/* Decimal digits an unsigned 64-bit mantissa always holds. */
#define MAX_MANTISSA_DIGITS 19
/* The powers of ten in the table, as correctly rounded doubles (exact from 1e0 to 1e22). */
#define MAX_POW10 22
/* Double mantissa bits below float32 precision, and the pattern of a float32 midpoint. */
#define DROPPED_BITS 29
#define MIDPOINT_BITS (1ULL << (DROPPED_BITS - 1))
/* Units in the last place of a double kept clear of a float32 midpoint (the error is <= 3). */
#define MIDPOINT_MARGIN 8
/* Bytes at a chunk's end parsed from a copy (at least the longest read past a field). */
#define TAIL_BYTES 64
/* Fields handed to strtof are copied here, or to the heap when longer. */
#define SLOW_FIELD_BYTES 128
/* Larger exponents saturate: the value is 0 or inf either way. */
#define MAX_EXPONENT 100000
/* Float32 exponent bits: all set for inf and NaN. */
#define FLOAT_EXPONENT_BITS 0x7f800000u

static const double POW10[2 * MAX_POW10 + 1] = {
    1e-22, 1e-21, 1e-20, 1e-19, 1e-18, 1e-17, 1e-16, 1e-15, 1e-14, 1e-13, 1e-12,
    1e-11, 1e-10, 1e-9,  1e-8,  1e-7,  1e-6,  1e-5,  1e-4,  1e-3,  1e-2,  1e-1,
    1e0,   1e1,   1e2,   1e3,   1e4,   1e5,   1e6,   1e7,   1e8,   1e9,   1e10,
    1e11,  1e12,  1e13,  1e14,  1e15,  1e16,  1e17,  1e18,  1e19,  1e20,  1e21, 1e22,
};

/* Tokens the general reader reads as missing values (reader.NULL_TOKENS); they become NaN. */
static const char *const NULL_TOKENS[] = {"", "NaN", "nan", "-NaN", "-nan", "NA", "N/A",
                                          "n/a", "NULL", "null"};

static int is_field_end(char c)
{
    return c == ',' || c == '\n' || c == '\r';
}

static int is_digit(char c)
{
    return (unsigned char)(c - '0') < 10;
}

static const char *field_end(const char *p)
{
    while (!is_field_end(*p)) {
        p++;
    }
    return p;
}

static int equals_ignoring_case(const char *p, size_t n, const char *word)
{
    size_t i;

    if (strlen(word) != n) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z') {
            c = (char)(c - 'A' + 'a');
        }
        if (c != word[i]) {
            return 0;
        }
    }
    return 1;
}

/* Read a field that holds no digits: a NaN token or an infinity. Returns its end or NULL. */
static const char *parse_word(const char *field, float *value)
{
    const char *stop = field_end(field);
    const char *word = field;
    size_t n = (size_t)(stop - field);
    size_t i;

    for (i = 0; i < sizeof NULL_TOKENS / sizeof NULL_TOKENS[0]; i++) {
        if (strlen(NULL_TOKENS[i]) == n && memcmp(NULL_TOKENS[i], field, n) == 0) {
            *value = NAN;
            return stop;
        }
    }
    if (n && (*word == '-' || *word == '+')) {
        word++;
        n--;
    }
    if (equals_ignoring_case(word, n, "inf") || equals_ignoring_case(word, n, "infinity")) {
        *value = *field == '-' ? -INFINITY : INFINITY;
        return stop;
    }
    if (equals_ignoring_case(word, n, "nan")) {
        *value = NAN;
        return stop;
    }
    return NULL;
}

/* Correctly rounded conversion of the field [begin, stop) by the C library. */
static int slow_float(const char *begin, const char *stop, float *value)
{
    char local[SLOW_FIELD_BYTES];
    size_t n = (size_t)(stop - begin);
    char *text = n < sizeof local ? local : malloc(n + 1);
    char *after;
    int ok;

    if (!text) {
        return 0;
    }
    memcpy(text, begin, n);
    text[n] = '\0';
    *value = strtof(text, &after);
    ok = after == text + n;
    if (text != local) {
        free(text);
    }
    return ok;
}

/*
 * Round m * 10^exp10 to float32, as a correctly rounding conversion of the text would.
 *
 * For |exp10| <= 22, d = (double)m * 10^exp10, with the power of ten a correctly rounded double
 * constant, takes three roundings, so it is within 3 units in the last place of the exact
 * value. Rounding d to float32 gives the correctly rounded float unless the exact value and d
 * can lie on different sides of a float32 midpoint, that is unless d's 29 bits below float
 * precision are within MIDPOINT_MARGIN of the midpoint pattern. Those values (about 3 in 10^8)
 * and every other case go to strtof, which rounds correctly. Returns 0 when strtof does not
 * accept the text.
 */
static int to_float(uint64_t m, int exp10, int negative, const char *begin, const char *stop,
                    float *value)
{
    double d;
    uint64_t bits, low;
    float f;

    if (exp10 >= -MAX_POW10 && exp10 <= MAX_POW10) {
        d = (double)m * POW10[exp10 + MAX_POW10];
        memcpy(&bits, &d, sizeof bits);
        low = bits & ((1ULL << DROPPED_BITS) - 1);
        /* m >= 1 and exp10 >= -22 keep d above float32's smallest normal, so the bits below
         * float precision are the low 29 of the double's mantissa (past FLT_MAX too, where the
         * midpoint is the overflow threshold). */
        if (low + MIDPOINT_MARGIN < MIDPOINT_BITS || low > MIDPOINT_BITS + MIDPOINT_MARGIN) {
            f = (float)d;
            *value = negative ? -f : f;
            return 1;
        }
    }
    return slow_float(begin, stop, value);
}

/*
 * Parse one field starting at p; the line's '\n' stops every scan, so no bound is checked.
 * Returns the first byte after the number, or NULL.
 */
static const char *parse_value(const char *p, float *value)
{
    const char *begin = p, *digits, *first;
    uint64_t m = 0;
    int exp10 = 0, significant, any, negative = 0;

    if (*p == '-' || *p == '+') {
        negative = *p == '-';
        p++;
    }
    digits = p;
    while (*p == '0') {
        p++;
    }
    /* m may wrap past 19 digits; such numbers are converted from their text below. */
    for (first = p; is_digit(*p); p++) {
        m = m * 10 + (uint64_t)(*p - '0');
    }
    significant = (int)(p - first);
    any = p > digits;
    if (*p == '.') {
        const char *fraction = ++p;
        if (m == 0) {
            while (*p == '0') {
                p++;
            }
        }
        for (first = p; is_digit(*p); p++) {
            m = m * 10 + (uint64_t)(*p - '0');
        }
        significant += (int)(p - first);
        exp10 = -(int)(p - fraction);
        any |= p > fraction;
    }
    if (!any) {
        return parse_word(begin, value);
    }
    if (*p == 'e' || *p == 'E') {
        int sign = 1, e = 0;
        p++;
        if (*p == '-' || *p == '+') {
            sign = *p == '-' ? -1 : 1;
            p++;
        }
        if (!is_digit(*p)) {
            return NULL;
        }
        for (; is_digit(*p); p++) {
            if (e < MAX_EXPONENT) {
                e = e * 10 + (*p - '0');
            }
        }
        exp10 += sign * e;
    }
    if (!is_field_end(*p)) {
        return NULL;
    }
    if (significant > MAX_MANTISSA_DIGITS) {
        return slow_float(begin, p, value) ? p : NULL;
    }
    if (m == 0) {
        *value = negative ? -0.0f : 0.0f;
        return p;
    }
    return to_float(m, exp10, negative, begin, p, value) ? p : NULL;
}

struct job {
    const char *begin;
    const char *end;
    /* the parse's inputs */
    int n_fields;
    const int32_t *column_of_field;
    int n_columns;
    float *out;
    uint8_t *nan_rows;
    int64_t *positive_inf;
    int64_t *negative_inf;
    int64_t rows_expected;
    /* results */
    int64_t rows;
    int64_t lines;
    int status;
    int64_t bad_line;
    int bad_field;
};

/* A line holding nothing (or only a CR) is skipped, as the general reader skips it. */
static int is_empty_line(const char *p, const char *end)
{
    return *p == '\n' || (*p == '\r' && (p + 1 == end || p[1] == '\n'));
}

static void *count_rows(void *arg)
{
    struct job *job = arg;
    const char *p = job->begin;

    job->rows = 0;
    job->lines = 0;
    while (p < job->end) {
        const char *newline = memchr(p, '\n', (size_t)(job->end - p));
        if (!is_empty_line(p, job->end)) {
            job->rows++;
        }
        job->lines++;
        p = newline ? newline + 1 : job->end;
    }
    return NULL;
}

static int fail(struct job *job, int status, int field)
{
    job->status = status;
    job->bad_line = job->lines;
    job->bad_field = field;
    return 0;
}

/* Parse one non-empty line into the next row; returns the next line's start, or NULL. */
static const char *parse_line(struct job *job, const char *p)
{
    float *row = job->out + job->rows * job->n_columns;
    int field, has_nan = 0;

    for (field = 0; field < job->n_fields; field++) {
        int column = job->column_of_field[field];
        const char *q;
        float value;
        uint32_t bits;
        if (column < 0) {
            q = field_end(p);
        } else {
            q = parse_value(p, &value);
            if (!q) {
                fail(job, FASTCSV_BAD_VALUE, field);
                return NULL;
            }
            row[column] = value;
            memcpy(&bits, &value, sizeof bits);
            if ((bits & FLOAT_EXPONENT_BITS) == FLOAT_EXPONENT_BITS) {
                if (value != value) {
                    has_nan = 1;
                } else if (value > 0) {
                    job->positive_inf[column]++;
                } else {
                    job->negative_inf[column]++;
                }
            }
        }
        if (*q == ',' && field + 1 < job->n_fields) {
            p = q + 1;
        } else if (*q == ',' || field + 1 < job->n_fields) {
            fail(job, FASTCSV_FIELD_COUNT, field);
            return NULL;
        } else if (*q == '\n') {
            p = q + 1;
        } else if (q[1] == '\n') {
            p = q + 2; /* q is at a CR: the only other byte that ends a field */
        } else {
            fail(job, FASTCSV_LINE_END, field);
            return NULL;
        }
    }
    job->nan_rows[job->rows] = (uint8_t)has_nan;
    job->rows++;
    return p;
}

/* Parse the lines of [p, stop), which ends just after a '\n'; returns 0 on a failure. */
static int parse_lines(struct job *job, const char *p, const char *stop)
{
    while (p < stop) {
        job->lines++;
        if (is_empty_line(p, stop)) {
            p += *p == '\r' ? 2 : 1;
            continue;
        }
        if (job->rows == job->rows_expected) {
            return fail(job, FASTCSV_ROW_COUNT, 0);
        }
        p = parse_line(job, p);
        if (!p) {
            return 0;
        }
    }
    return 1;
}

/*
 * Parse a chunk's lines. All but the last few are parsed where they are; the last
 * TAIL_BYTES or so are copied with a '\n' after them, so a file that does not end with a line
 * end still gives every scan a '\n' to stop at, and reads ahead stay inside the buffer.
 */
static void *parse_rows(void *arg)
{
    struct job *job = arg;
    const char *tail = job->begin;
    char *copy;
    size_t n;

    job->rows = 0;
    job->lines = 0;
    job->status = FASTCSV_OK;
    if (job->end - job->begin > TAIL_BYTES) {
        tail = job->end - TAIL_BYTES;
        while (tail > job->begin && tail[-1] != '\n') {
            tail--;
        }
    }
    if (!parse_lines(job, job->begin, tail)) {
        return NULL;
    }
    n = (size_t)(job->end - tail);
    if (n) {
        size_t size = n + 1 + TAIL_BYTES; /* the lines, a '\n' if they lack one, padding */
        copy = malloc(size);
        if (!copy) {
            fail(job, FASTCSV_NO_MEMORY, 0);
            return NULL;
        }
        memcpy(copy, tail, n);
        if (copy[n - 1] != '\n') {
            copy[n++] = '\n';
        }
        memset(copy + n, 0, size - n);
        n = (size_t)parse_lines(job, copy, copy + n);
        free(copy);
        if (!n) {
            return NULL;
        }
    }
    if (job->rows != job->rows_expected) {
        fail(job, FASTCSV_ROW_COUNT, 0);
    }
    return NULL;
}

/* Run work on every job, one thread each (the last on the calling thread). */
static void run_jobs(struct job *jobs, int n_jobs, void *(*work)(void *))
{
    pthread_t threads[n_jobs > 0 ? n_jobs : 1];
    int started[n_jobs > 0 ? n_jobs : 1];
    int i;

    for (i = 0; i < n_jobs - 1; i++) {
        /* A thread that cannot start costs speed only: its job runs here instead. */
        started[i] = pthread_create(&threads[i], NULL, work, &jobs[i]) == 0;
        if (!started[i]) {
            work(&jobs[i]);
        }
    }
    if (n_jobs > 0) {
        work(&jobs[n_jobs - 1]);
    }
    for (i = 0; i < n_jobs - 1; i++) {
        if (started[i]) {
            pthread_join(threads[i], NULL);
        }
    }
}

/*
 * Split data[start:size) at line starts into n_chunks pieces and count each one's rows.
 *
 * Writes bounds[0..n_chunks] (byte offsets), rows[i] and lines[i] per chunk. Chunks may be empty.
 */
int fastcsv_count(const char *data, int64_t start, int64_t size, int n_chunks, int64_t *bounds,
                  int64_t *rows, int64_t *lines)
{
    struct job *jobs;
    int i;

    if (n_chunks < 1) {
        return -1;
    }
    jobs = calloc((size_t)n_chunks, sizeof *jobs);
    if (!jobs) {
        return -1;
    }
    bounds[0] = start;
    for (i = 1; i < n_chunks; i++) {
        int64_t at = start + (size - start) * i / n_chunks;
        const char *newline;
        if (at < bounds[i - 1]) {
            at = bounds[i - 1];
        }
        newline = at < size ? memchr(data + at, '\n', (size_t)(size - at)) : NULL;
        bounds[i] = newline ? newline - data + 1 : size;
    }
    bounds[n_chunks] = size;
    for (i = 0; i < n_chunks; i++) {
        jobs[i].begin = data + bounds[i];
        jobs[i].end = data + bounds[i + 1];
    }
    run_jobs(jobs, n_chunks, count_rows);
    for (i = 0; i < n_chunks; i++) {
        rows[i] = jobs[i].rows;
        lines[i] = jobs[i].lines;
    }
    free(jobs);
    return 0;
}

/*
 * Parse the chunks fastcsv_count made into out (rows x n_columns, row-major).
 *
 * column_of_field[f] is the output column of the file's field f, or -1 to skip it. first_row[i]
 * is the first output row of chunk i (first_row[n_chunks] is the total). Per row, nan_rows is 1
 * when a value is NaN; inf_counts holds n_chunks x 2 x n_columns counts (+inf, then -inf).
 * Returns FASTCSV_OK, or the status of the first chunk that failed with its chunk index, line
 * within the chunk and field in failure[0..2].
 */
int fastcsv_parse(const char *data, int n_chunks, const int64_t *bounds, const int64_t *first_row,
                  int n_fields, const int32_t *column_of_field, int n_columns, float *out,
                  uint8_t *nan_rows, int64_t *inf_counts, int64_t *failure)
{
    struct job *jobs;
    int i, status = FASTCSV_OK;

    if (n_chunks < 1) {
        return -1;
    }
    jobs = calloc((size_t)n_chunks, sizeof *jobs);
    if (!jobs) {
        return -1;
    }
    for (i = 0; i < n_chunks; i++) {
        struct job *job = &jobs[i];
        job->begin = data + bounds[i];
        job->end = data + bounds[i + 1];
        job->n_fields = n_fields;
        job->column_of_field = column_of_field;
        job->n_columns = n_columns;
        job->out = out + first_row[i] * n_columns;
        job->nan_rows = nan_rows + first_row[i];
        job->positive_inf = inf_counts + (int64_t)i * 2 * n_columns;
        job->negative_inf = job->positive_inf + n_columns;
        job->rows_expected = first_row[i + 1] - first_row[i];
    }
    run_jobs(jobs, n_chunks, parse_rows);
    for (i = 0; i < n_chunks; i++) {
        if (jobs[i].status != FASTCSV_OK) {
            status = jobs[i].status;
            failure[0] = i;
            failure[1] = jobs[i].bad_line;
            failure[2] = jobs[i].bad_field;
            break;
        }
    }
    free(jobs);
    return status;
}
