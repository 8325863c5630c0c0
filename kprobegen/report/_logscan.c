/*
 * kprobegen.report._logscan: the first stage of the report parser in C.
 *
 * scan(text, other_version, kmsg_rest) does what kprobegen/report/scan.py's scan_py does and
 * returns the same value: ({module: [(seq, type, fields, lineno), ...]}, {name: count},
 * prefixed lines, lines, [(lineno, why refused), ...], lines from a form that cannot tell
 * who wrote them, lines told by their syslog tag alone). In Python this per-line work
 * (finding the line, partition, split, int(), the tuple, the module's list) is most of a
 * parse's time; here it is little more than making the tuple and its strings (figures:
 * bench/README.md, parse_bench.py).
 *
 * layout(recs, lookback) (at the end of this file) takes one module's records on: grouped
 * into instances (loads) and cut into frames, as kprobegen/report/frames.py's layout_py
 * does. What the records mean (Instances, Frames, their problems, Results) stays in Python
 * in kprobegen/report/, so there is one place where the protocol's meaning lives; these two
 * do the per-line and per-record work that made the parser slow, each held to its Python
 * reference by tests/test_logscan.py.
 *
 * Rules kept from scan_py, each checked by tests/test_logscan.py against it:
 * - the caller has removed every '\r' (CRLF logs), lines end at '\n', numbered from 1;
 * - a protocol line holds "kprobegen/1 " or "kprobegen/2 " anywhere (after a timestamp, a
 *   syslog header, a /dev/kmsg "PRI,SEQ,TS,FLAGS;" header ...); the first occurrence counts;
 * - a line that holds "kprobegen/" but neither goes to other_version(line, unrecognised)
 *   (another protocol version is counted there);
 * - a line whose text before the prefix starts with a space or tab is a /dev/kmsg
 *   continuation line: skipped;
 * - the text before the prefix says who wrote the line (origin(), scan.py's _origin):
 *   where it shows a syslog facility or tag, a line not from the kernel, or not at the start
 *   of the kernel's record, is refused; where it cannot tell, the line counts as untold;
 * - text before the prefix ending in ';' in a line holding '\\' goes through kmsg_rest(line,
 *   rest), which undoes /dev/kmsg's \xHH escaping when the line has a /dev/kmsg header;
 * - version 2: the rest (trailing blanks dropped) ends in " chk=" and 8 lowercase hex digits,
 *   the CRC-32 of "kprobegen/2 " and the text before " chk=", or the line is refused;
 *   version 1: a rest that ends so is refused (a version-2 line whose version changed);
 * - the rest splits like rest.split(" ", 3): MODULE SEQ TYPE [FIELDS]; fewer parts count as
 *   "(no module, SEQ or type)"; a MODULE not matching [A-Za-z_][A-Za-z0-9_]* or a SEQ that
 *   is not ASCII digits or above a u64 counts as "(bad module name or SEQ)".
 *
 * Only text stored one byte per character (ASCII or Latin-1: what bytes decoded as Latin-1
 * give, and what almost every str log is) is scanned here; scan() returns None for wider
 * strings and the caller uses scan_py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PREFIX "kprobegen/"
#define PREFIX_LEN 10
#define PREFIX1_LEN 12          /* "kprobegen/1 " and "kprobegen/2 " */
#define PREFIX2 "kprobegen/2 "
#define CHK " chk="
#define CHK_LEN 13              /* " chk=" and 8 hex digits */

/* Why a line is refused: the same text as scan.py's R_* constants. */
#define R_USER "not written by the kernel (a user-space facility or syslog tag)"
#define R_PLACE "not at the start of a kernel log record"
#define R_CHECK "line check does not match (a changed or cut line)"
#define R_NOCHECK "no line check (a cut line)"
#define R_V1CHK "a version-1 line that carries a line check (a changed version)"

#define NO_PARTS "(no module, SEQ or type)"
#define BAD_NAME "(bad module name or SEQ)"

/* Record types of protocol 1: one shared str each, so the parser's set lookups hit the
 * cached hash (split() would make a new string per line). */
static const char *const known_types[] = {
    "hook", "key", "hist", "bucket", "begin", "end", "event", "load", "error",
};
#define NTYPES (sizeof(known_types) / sizeof(known_types[0]))
static PyObject *type_strs[NTYPES];

/* The last few modules seen: most logs have one or two, and comparing bytes is cheaper than
 * making a str to look one up. An entry owns its name; the list is per_module's. */
#define MODULE_CACHE 8
struct module_entry {
    PyObject *name;     /* str, 1-byte kind */
    PyObject *list;     /* its records, or NULL: a bad module name */
};

struct scan {
    PyObject *per_module;       /* module -> list of records */
    PyObject *bad_modules;      /* set of names already counted as bad */
    PyObject *unrecognised;     /* name -> count */
    PyObject *rejected;         /* [(lineno, why)] */
    Py_ssize_t untold;          /* lines from a form that does not show who wrote them */
    Py_ssize_t tagged;          /* lines told by their syslog tag "kernel:" alone */
    PyObject *other_version;    /* callables from scan.py */
    PyObject *kmsg_rest;
    Py_ssize_t records;
    int ascii;                  /* the text being read is ASCII: its pieces are made without
                                   looking for a character above 127 in each */
    struct module_entry cache[MODULE_CACHE];
    int ncache;
    int next_slot;
};

static PyObject *latin1(struct scan *sc, const char *s, Py_ssize_t n)
{
    if (!sc->ascii)
        return PyUnicode_DecodeLatin1(s, n, NULL);
    PyObject *str = PyUnicode_New(n, 127);
    if (str != NULL)
        memcpy(PyUnicode_DATA(str), s, n);
    return str;
}

static int count(struct scan *sc, const char *name)
{
    PyObject *key = PyUnicode_FromString(name);
    if (key == NULL)
        return -1;
    PyObject *old = PyDict_GetItemWithError(sc->unrecognised, key);
    long n = 0;
    if (old != NULL)
        n = PyLong_AsLong(old);
    else if (PyErr_Occurred())
        goto fail;
    PyObject *val = PyLong_FromLong(n + 1);
    if (val == NULL)
        goto fail;
    int rc = PyDict_SetItem(sc->unrecognised, key, val);
    Py_DECREF(val);
    Py_DECREF(key);
    return rc;
fail:
    Py_DECREF(key);
    return -1;
}

static int valid_module(const char *s, Py_ssize_t n)
{
    if (n == 0 || !(s[0] == '_' || (s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z')))
        return 0;
    for (Py_ssize_t i = 1; i < n; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

/* The module's record list (borrowed), Py_None (borrowed) for a bad name, NULL on error. */
static PyObject *module_list(struct scan *sc, const char *s, Py_ssize_t n)
{
    for (int i = 0; i < sc->ncache; i++) {
        PyObject *name = sc->cache[i].name;
        if (PyUnicode_GET_LENGTH(name) == n && memcmp(PyUnicode_DATA(name), s, n) == 0)
            return sc->cache[i].list ? sc->cache[i].list : Py_None;
    }
    PyObject *name = latin1(sc, s, n);
    if (name == NULL)
        return NULL;
    PyObject *list = PyDict_GetItemWithError(sc->per_module, name);      /* borrowed */
    if (list == NULL && PyErr_Occurred())
        goto fail;
    if (list == NULL) {
        int bad = PySet_Contains(sc->bad_modules, name);
        if (bad < 0)
            goto fail;
        if (!bad && !valid_module(s, n)) {
            if (PySet_Add(sc->bad_modules, name) < 0)
                goto fail;
            bad = 1;
        }
        if (!bad) {
            list = PyList_New(0);
            if (list == NULL)
                goto fail;
            int rc = PyDict_SetItem(sc->per_module, name, list);
            Py_DECREF(list);        /* the dict holds it */
            if (rc < 0)
                goto fail;
        }
    }
    /* remember it (the entry takes over our reference to the name) */
    int slot = sc->ncache < MODULE_CACHE ? sc->ncache++ : (sc->next_slot++ % MODULE_CACHE);
    Py_XSETREF(sc->cache[slot].name, name);
    sc->cache[slot].list = list;
    return list ? list : Py_None;
fail:
    Py_DECREF(name);
    return NULL;
}

static PyObject *type_str(struct scan *sc, const char *s, Py_ssize_t n)
{
    for (size_t i = 0; i < NTYPES; i++) {
        if ((Py_ssize_t)strlen(known_types[i]) == n && memcmp(known_types[i], s, n) == 0) {
            Py_INCREF(type_strs[i]);
            return type_strs[i];
        }
    }
    return latin1(sc, s, n);
}


/* ---------------------------------------------------------------- who wrote a line */

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_lower(char c) { return c >= 'a' && c <= 'z'; }

/* [s, e) is empty, or "[...]" with an optional space after it (a log timestamp). */
static int ts_only(const char *s, const char *e)
{
    if (s == e)
        return 1;
    if (*s != '[')
        return 0;
    const char *c = memchr(s, ']', e - s);
    if (c == NULL)
        return 0;
    c++;
    if (c < e && *c == ' ')
        c++;
    return c == e;
}

/* "digits" at s: their end, or NULL; *pri: the value, or 8 (not the kernel) past 9 digits. */
static const char *pri_digits(const char *s, const char *e, unsigned long *pri)
{
    const char *c = s;
    unsigned long v = 0;
    while (c < e && is_digit(*c)) {
        if (c - s < 9)
            v = v * 10 + (*c - '0');
        c++;
    }
    if (c == s)
        return NULL;
    *pri = c - s > 9 ? 8 : v;
    return c;
}

static const char *pri_origin(unsigned long pri, const char *after, const char *e)
{
    if (pri >= 8)
        return R_USER;
    return ts_only(after, e) ? NULL : R_PLACE;
}

/* "/dev/kmsg" header "PRI,SEQ,TS,FLAGS;" at s: the end of it, or NULL. */
static const char *kmsg_header(const char *s, const char *e, unsigned long *pri)
{
    const char *c = pri_digits(s, e, pri);
    for (int field = 0; field < 2; field++) {
        if (c == NULL || c >= e || *c != ',')
            return NULL;
        const char *d = c + 1;
        while (d < e && is_digit(*d))
            d++;
        if (d == c + 1)
            return NULL;
        c = d;
    }
    if (c >= e || *c != ',')
        return NULL;
    c = memchr(c, ';', e - c);
    return c ? c + 1 : NULL;
}

/* dmesg -x "fac   :level : " at s: the end of it, or NULL; *kern: fac is "kern". */
static const char *dmesg_x(const char *s, const char *e, int *kern)
{
    const char *c = s;
    while (c < e && is_lower(*c))
        c++;
    if (c == s)
        return NULL;
    *kern = c - s == 4 && memcmp(s, "kern", 4) == 0;
    if (c < e && is_digit(*c)) {
        c++;
        *kern = 0;
    }
    while (c < e && *c == ' ')
        c++;
    if (c >= e || *c != ':')
        return NULL;
    const char *l = ++c;
    while (c < e && is_lower(*c))
        c++;
    if (c == l)
        return NULL;
    while (c < e && *c == ' ')
        c++;
    if (e - c < 2 || c[0] != ':' || c[1] != ' ')
        return NULL;
    return c + 2;
}

static const char *const levels[] = {
    "emerg", "alert", "crit", "err", "warn", "warning", "notice", "info", "debug",
};

/* [s, e) is "fac.level" with a syslog level: 1 if fac is "kern", 0 if another, -1 if not. */
static int fac_level(const char *s, const char *e)
{
    const char *dot = memchr(s, '.', e - s);
    if (dot == NULL || dot == s)
        return -1;
    for (const char *c = s; c < dot; c++)
        if (!is_lower(*c) && !is_digit(*c))
            return -1;
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        size_t n = strlen(levels[i]);
        if ((size_t)(e - dot - 1) == n && memcmp(dot + 1, levels[i], n) == 0)
            return dot - s == 4 && memcmp(s, "kern", 4) == 0;
    }
    return -1;
}

static const char *rfind_space(const char *s, const char *e)
{
    while (e > s)
        if (*--e == ' ')
            return e;
    return NULL;
}

/* Who wrote a line whose text before the prefix is [s, e) (not empty, not starting with a
 * space or tab): NULL to take it (sc->untold counts those from a form that cannot tell,
 * sc->tagged those told by a syslog tag alone), else why it is refused. scan.py's
 * _origin and _told, rule for rule. */
static const char *origin(struct scan *sc, const char *s, const char *e)
{
    unsigned long pri;
    const char *c;
    int kern;
    if (is_digit(*s) && (c = kmsg_header(s, e, &pri)) != NULL)
        return pri_origin(pri, c, e);                       /* /dev/kmsg */
    if (*s == '<' && (c = pri_digits(s + 1, e, &pri)) != NULL && c < e && *c == '>')
        return pri_origin(pri, c + 1, e);                   /* dmesg -r */
    if (is_lower(*s) && (c = dmesg_x(s, e, &kern)) != NULL) {  /* dmesg -x */
        if (!kern)
            return R_USER;
        return ts_only(c, e) ? NULL : R_PLACE;
    }
    if (ts_only(s, e)) {                                    /* dmesg, dmesg -T */
        sc->untold++;
        return NULL;
    }
    const char *colon = NULL;
    for (c = s; c + 1 < e; c++) {
        if (c[0] == ':' && c[1] == ' ') {
            colon = c;
            break;
        }
    }
    if (colon == NULL) {                                    /* some other prefix */
        sc->untold++;
        return NULL;
    }
    const char *sp = rfind_space(s, colon);                 /* syslog "... TAG: [ts] " */
    const char *tag = sp ? sp + 1 : s;
    if (colon - tag != 6 || memcmp(tag, "kernel", 6) != 0)
        return R_USER;
    if (!ts_only(colon + 2, e))
        return R_PLACE;
    int fac = -1;
    if (tag - s >= 2) {                                     /* busybox "kern.info kernel:" */
        const char *p = rfind_space(s, tag - 1);
        fac = fac_level(p ? p + 1 : s, tag - 1);
        if (fac == 0)
            return R_USER;
    }
    if (fac != 1)
        sc->tagged++;                                       /* the tag alone */
    return NULL;
}

static int refuse(struct scan *sc, Py_ssize_t lineno, const char *why)
{
    PyObject *t = Py_BuildValue("(ns)", lineno, why);
    if (t == NULL)
        return -1;
    int rc = PyList_Append(sc->rejected, t);
    Py_DECREF(t);
    return rc;
}

/* ---------------------------------------------------------------- the line check */

/* CRC-32 as zlib computes it (IEEE polynomial, reflected, ~0 in and out): the kernel's
 * ~crc32_le(~0, ...) in the generated module. Eight bytes a step ("slicing by 8": table k
 * holds the CRC of a byte followed by k zero bytes), since every protocol-2 line is checked. */
static uint32_t crc_table[8][256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int k = 1; k < 8; k++)
        for (int i = 0; i < 256; i++)
            crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^ crc_table[0][crc_table[k - 1][i] & 0xff];
}

static uint32_t crc_prefix2;       /* the CRC state after "kprobegen/2 " */

static uint32_t le32(const unsigned char *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t crc_update(uint32_t crc, const char *s, Py_ssize_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (; n >= 8; p += 8, n -= 8) {
        uint32_t lo = crc ^ le32(p), hi = le32(p + 4);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff]
            ^ crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24]
            ^ crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff]
            ^ crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
    }
    for (; n > 0; p++, n--)
        crc = crc_table[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
    return crc;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Does [s, s+n) end in " chk=XXXXXXXX"? Its value in *chk. */
static int has_chk(const char *s, Py_ssize_t n, uint32_t *chk)
{
    if (n < CHK_LEN || memcmp(s + n - CHK_LEN, CHK, 5) != 0)
        return 0;
    uint32_t v = 0;
    for (const char *c = s + n - 8; c < s + n; c++) {
        int h = hexval(*c);
        if (h < 0)
            return 0;
        v = v << 4 | h;
    }
    *chk = v;
    return 1;
}

/* The record's text without its check in *n, or why the line is refused. */
static const char *checked(char version, const char *rest, Py_ssize_t *n)
{
    Py_ssize_t len = *n;
    uint32_t chk;
    while (len > 0 && (rest[len - 1] == ' ' || rest[len - 1] == '\t'))
        len--;
    int has = has_chk(rest, len, &chk);
    if (version == '1') {
        if (has)
            return R_V1CHK;
        *n = len;
        return NULL;
    }
    if (!has)
        return R_NOCHECK;
    len -= CHK_LEN;
    uint32_t crc = crc_update(crc_prefix2, rest, len);
    if ((crc ^ 0xFFFFFFFFu) != chk)
        return R_CHECK;
    *n = len;
    return NULL;
}

/* ---------------------------------------------------------------- records */

/* SEQ: ASCII digits only (str.isdigit() also takes e.g. '²', which int() then refuses), at
 * most a u64 (20 digits and no more than 18446744073709551615). */
static PyObject *seq_int(const char *s, Py_ssize_t n)
{
    if (n == 0 || n > 20)
        return Py_None;
    unsigned long long v = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return Py_None;
        unsigned d = s[i] - '0';
        if (v > (~0ULL - d) / 10)
            return Py_None;             /* above a u64 */
        v = v * 10 + d;
    }
    return PyLong_FromUnsignedLongLong(v);
}

/* One protocol record from REST (the text after "kprobegen/N "). 0 or -1 on error. */
static int record(struct scan *sc, const char *rest, Py_ssize_t n, Py_ssize_t lineno,
                  char version)
{
    const char *why = checked(version, rest, &n);
    if (why != NULL)
        return refuse(sc, lineno, why);
    const char *end = rest + n;
    const char *sp1 = memchr(rest, ' ', n);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', end - sp1 - 1) : NULL;
    if (sp2 == NULL)
        return count(sc, NO_PARTS);
    const char *sp3 = memchr(sp2 + 1, ' ', end - sp2 - 1);
    const char *type_end = sp3 ? sp3 : end;
    const char *fields = sp3 ? sp3 + 1 : end;

    PyObject *list = module_list(sc, rest, sp1 - rest);
    if (list == NULL)
        return -1;
    if (list == Py_None)
        return count(sc, BAD_NAME);
    PyObject *seq = seq_int(sp1 + 1, sp2 - sp1 - 1);
    if (seq == NULL)
        return -1;
    if (seq == Py_None)
        return count(sc, BAD_NAME);
    PyObject *tuple = PyTuple_New(4);
    if (tuple == NULL) {
        Py_DECREF(seq);
        return -1;
    }
    PyTuple_SET_ITEM(tuple, 0, seq);
    PyObject *typ = type_str(sc, sp2 + 1, type_end - sp2 - 1);
    PyObject *text = typ ? latin1(sc, fields, end - fields) : NULL;
    PyObject *line = text ? PyLong_FromSsize_t(lineno) : NULL;
    if (line == NULL) {
        Py_XDECREF(typ);
        Py_XDECREF(text);
        Py_DECREF(tuple);
        return -1;
    }
    PyTuple_SET_ITEM(tuple, 1, typ);
    PyTuple_SET_ITEM(tuple, 2, text);
    PyTuple_SET_ITEM(tuple, 3, line);
    int rc = PyList_Append(list, tuple);
    Py_DECREF(tuple);
    sc->records += rc == 0;
    return rc;
}

/* One line holding "kprobegen/" at HIT. 0 or -1 on error. */
static int line(struct scan *sc, const char *start, const char *hit, const char *eol,
                Py_ssize_t lineno)
{
    const char *p = hit;
    while (p && (eol - p < PREFIX1_LEN || (p[PREFIX_LEN] != '1' && p[PREFIX_LEN] != '2')
                 || p[PREFIX_LEN + 1] != ' '))
        p = memmem(p + 1, eol - p - 1, PREFIX, PREFIX_LEN);
    if (p == NULL) {
        PyObject *text = latin1(sc, start, eol - start);
        if (text == NULL)
            return -1;
        PyObject *r = PyObject_CallFunctionObjArgs(sc->other_version, text, sc->unrecognised, NULL);
        Py_DECREF(text);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    char version = p[PREFIX_LEN];
    if (p == start)
        sc->untold++;               /* nothing before the prefix: who wrote it is unknown */
    else {
        if (*start == ' ' || *start == '\t')
            return 0;               /* a /dev/kmsg continuation (dictionary) line */
        const char *why = origin(sc, start, p);
        if (why != NULL)
            return refuse(sc, lineno, why);
        if (p[-1] == ';' && memchr(start, '\\', eol - start)) {
            /* maybe /dev/kmsg's \xHH escaping: scan.py decides and undoes it */
            PyObject *text = latin1(sc, start, eol - start);
            PyObject *rest = text ? latin1(sc, p + PREFIX1_LEN, eol - p - PREFIX1_LEN) : NULL;
            PyObject *r = rest ? PyObject_CallFunctionObjArgs(sc->kmsg_rest, text, rest, NULL) : NULL;
            Py_XDECREF(text);
            Py_XDECREF(rest);
            if (r == NULL)
                return -1;
            if (!PyUnicode_Check(r) || PyUnicode_KIND(r) != PyUnicode_1BYTE_KIND) {
                Py_DECREF(r);
                PyErr_SetString(PyExc_TypeError, "kmsg_rest must return Latin-1 text");
                return -1;
            }
            int ascii = sc->ascii;
            sc->ascii = PyUnicode_IS_ASCII(r);      /* \xHH may have made bytes above 127 */
            int rc = record(sc, PyUnicode_DATA(r), PyUnicode_GET_LENGTH(r), lineno, version);
            sc->ascii = ascii;
            Py_DECREF(r);
            return rc;
        }
    }
    return record(sc, p + PREFIX1_LEN, eol - p - PREFIX1_LEN, lineno, version);
}

static Py_ssize_t newlines(const char *s, const char *end)
{
    Py_ssize_t n = 0;
    while ((s = memchr(s, '\n', end - s)) != NULL) {
        n++;
        s++;
    }
    return n;
}

/* Every line of [buf, end) that holds the prefix; *nlines: the lines in the text. */
static int scan_lines(struct scan *sc, const char *buf, const char *end, Py_ssize_t *nlines)
{
    /* pos is always the start of a line; nl = newlines before pos */
    const char *pos = buf;
    Py_ssize_t nl = 0;
    const char *hit;
    while (pos < end && (hit = memmem(pos, end - pos, PREFIX, PREFIX_LEN)) != NULL) {
        const char *start = hit;
        while (start > pos && start[-1] != '\n')
            start--;
        nl += newlines(pos, start);
        const char *eol = memchr(hit, '\n', end - hit);
        if (eol == NULL)
            eol = end;
        if (line(sc, start, hit, eol, nl + 1) < 0)
            return -1;
        if (eol == end) {
            pos = end;
            break;
        }
        nl++;
        pos = eol + 1;
    }
    nl += newlines(pos, end);
    /* as len(text.split("\n")), less a last empty piece */
    *nlines = buf == end ? 0 : nl + 1 - (end[-1] == '\n');
    return 0;
}

static PyObject *scan(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *text;
    struct scan sc = {0};
    if (!PyArg_ParseTuple(args, "UOO:scan", &text, &sc.other_version, &sc.kmsg_rest))
        return NULL;
    if (PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND)
        Py_RETURN_NONE;
    const char *buf = PyUnicode_DATA(text);
    sc.ascii = PyUnicode_IS_ASCII(text);

    PyObject *out = NULL;
    Py_ssize_t nlines;
    sc.per_module = PyDict_New();
    sc.bad_modules = PySet_New(NULL);
    sc.unrecognised = PyDict_New();
    sc.rejected = PyList_New(0);
    if (!sc.per_module || !sc.bad_modules || !sc.unrecognised || !sc.rejected
            || scan_lines(&sc, buf, buf + PyUnicode_GET_LENGTH(text), &nlines) < 0)
        goto done;

    /* every prefixed line is a record, counted as unrecognised, or refused */
    Py_ssize_t prefixed = sc.records + PyList_GET_SIZE(sc.rejected);
    PyObject *key, *value;
    Py_ssize_t i = 0;
    while (PyDict_Next(sc.unrecognised, &i, &key, &value)) {
        Py_ssize_t v = PyLong_AsSsize_t(value);
        if (v == -1 && PyErr_Occurred())
            goto done;
        prefixed += v;
    }
    out = Py_BuildValue("(OOnnOnn)", sc.per_module, sc.unrecognised, prefixed, nlines,
                        sc.rejected, sc.untold, sc.tagged);
done:
    for (int j = 0; j < sc.ncache; j++)
        Py_DECREF(sc.cache[j].name);
    Py_XDECREF(sc.per_module);
    Py_XDECREF(sc.bad_modules);
    Py_XDECREF(sc.unrecognised);
    Py_XDECREF(sc.rejected);
    return out;
}

/* ---------------------------------------------------------------- instances and frames */

/*
 * layout(recs, lookback) does what kprobegen/report/frames.py's layout_py does (the
 * reference, tests/test_logscan.py checks the two agree) and returns the same value:
 * ([(records, first_line, last_line, missing, cuts, others), ...], duplicates), one entry
 * per instance (load) of the module whose records (in log order, as scan() gives them)
 * are recs:
 * - instances.group_py: recs cut into runs of rising SEQ (SEQ 0 starts one), each run
 *   joined to an earlier instance it agrees with or made a new one, duplicates dropped;
 *   records: the instance's records in SEQ order; first_line: the log line of the run that
 *   started it; last_line: its greatest log line;
 * - frames.cut_py: missing, the SEQ gaps [(lo, hi), ...]; cuts, the frames as (begin or
 *   None, end or None, body, records in the frame's SEQ span, the values of the begin and
 *   the end record when they read as the C template prints them, else None); others, the
 *   records outside the frames (events, load and error records, unknown types).
 * In Python this per-record and per-run work made a log of many tiny loads or frames (the
 * adversarial logs of bench/parse_bench.py) several times slower per line than a normal
 * log; what the records mean (Frames, their problems, Results) stays in Python.
 *
 * A record is what the scanners make: (SEQ, an int up to a u64; type, a str; fields, a str;
 * log line, an int); anything else is a TypeError or OverflowError. A single run (the usual
 * log: one load, seen once) is returned as recs itself, and needs no hash table; more runs
 * are grouped with two open-addressing tables (the records of each load by SEQ, the latest
 * load holding each line) and the same bound on the loads a run is tried against as
 * group_py's (lookback), so the work grows with the records as group_py's does.
 */

enum { T_HOOK, T_KEY, T_HIST, T_BUCKET, T_BEGIN, T_END, T_EVENT, T_LOAD, T_ERROR, T_OTHER };
#define FRAME_TYPE(t) ((t) <= T_BUCKET)     /* a frame's body: hook, key, hist, bucket */

struct rec {
    uint64_t seq;
    Py_ssize_t line;
    PyObject *obj;              /* the record tuple (borrowed from recs) */
    int type;                   /* T_* */
};

/* The T_* of a record type (known_types' order), -1 with an exception if not a str. */
static int type_code(PyObject *t)
{
    for (int i = 0; i < (int)NTYPES; i++)
        if (t == type_strs[i])
            return i;
    if (!PyUnicode_Check(t)) {
        PyErr_SetString(PyExc_TypeError, "layout: a record's type must be a str");
        return -1;
    }
    if (PyUnicode_IS_ASCII(t)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(t);
        for (int i = 0; i < (int)NTYPES; i++)
            if ((Py_ssize_t)strlen(known_types[i]) == n && memcmp(known_types[i], PyUnicode_DATA(t), n) == 0)
                return i;
    }
    return T_OTHER;
}

/* str equality (the strings are canonical: equal text has the same kind and length) */
static int str_eq(PyObject *a, PyObject *b)
{
    if (a == b)
        return 1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    return n == PyUnicode_GET_LENGTH(b) && PyUnicode_KIND(a) == PyUnicode_KIND(b)
        && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), n * PyUnicode_KIND(a)) == 0;
}

/* len(s.rstrip()): Python's whitespace */
static Py_ssize_t rstripped_len(PyObject *s)
{
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    while (n > 0 && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, n - 1)))
        n--;
    return n;
}

/* s[:n] == t[:n] (the same text, whatever the kinds) */
static int prefix_eq(PyObject *s, PyObject *t, Py_ssize_t n)
{
    int ks = PyUnicode_KIND(s), kt = PyUnicode_KIND(t);
    const void *ds = PyUnicode_DATA(s), *dt = PyUnicode_DATA(t);
    if (ks == kt)
        return memcmp(ds, dt, n * ks) == 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyUnicode_READ(ks, ds, i) != PyUnicode_READ(kt, dt, i))
            return 0;
    return 1;
}

static uint64_t mix64(uint64_t x)           /* splitmix64's finaliser */
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* The hash of (SEQ, type, fields.rstrip()) of record i, the key under which instances.py's
 * group_py holds a record; its rstripped length in *slen. */
static uint64_t held_hash(const struct rec *r, Py_ssize_t *slen)
{
    PyObject *fields = PyTuple_GET_ITEM(r->obj, 2);
    Py_ssize_t n = rstripped_len(fields);
    int kind = PyUnicode_KIND(fields);
    const void *data = PyUnicode_DATA(fields);
    uint64_t h = 0xcbf29ce484222325ULL;     /* FNV-1a over the characters */
    if (kind == PyUnicode_1BYTE_KIND)
        for (Py_ssize_t i = 0; i < n; i++)
            h = (h ^ ((const Py_UCS1 *)data)[i]) * 0x100000001b3ULL;
    else
        for (Py_ssize_t i = 0; i < n; i++)
            h = (h ^ PyUnicode_READ(kind, data, i)) * 0x100000001b3ULL;
    Py_hash_t th = PyObject_Hash(PyTuple_GET_ITEM(r->obj, 1));  /* a str: never fails */
    *slen = n;
    return mix64(h ^ mix64(r->seq + 0x9e3779b97f4a7c15ULL) ^ (uint64_t)th * 0x9e3779b97f4a7c15ULL);
}

/* Records i and j hold the same text (type equal, fields equal but for trailing blanks). */
static int same_text(const struct rec *r, const Py_ssize_t *slen, Py_ssize_t i, Py_ssize_t j)
{
    if (r[i].type != r[j].type
            || (r[i].type == T_OTHER && !str_eq(PyTuple_GET_ITEM(r[i].obj, 1), PyTuple_GET_ITEM(r[j].obj, 1))))
        return 0;
    PyObject *a = PyTuple_GET_ITEM(r[i].obj, 2), *b = PyTuple_GET_ITEM(r[j].obj, 2);
    return a == b || (slen[i] == slen[j] && prefix_eq(a, b, slen[i]));
}

/* The records of every instance by (instance, SEQ), and the latest instance holding each
 * (SEQ, type, text): open addressing, at most half full. */
struct slot {
    Py_ssize_t rec;             /* -1: empty */
    Py_ssize_t inst;
    uint64_t hash;
};

struct seq_slot {
    Py_ssize_t rec;             /* -1: empty */
    Py_ssize_t inst;
};

struct grouping {
    const struct rec *r;
    Py_ssize_t *slen;           /* rstripped length of each record's fields */
    uint64_t *hash;             /* held_hash of each record */
    struct seq_slot *by_seq;
    struct slot *held;
    size_t mask;
};

static struct seq_slot *seq_slot(struct grouping *g, Py_ssize_t inst, uint64_t seq)
{
    size_t i = mix64(seq ^ mix64((uint64_t)inst)) & g->mask;
    for (;; i = (i + 1) & g->mask) {
        struct seq_slot *s = &g->by_seq[i];
        if (s->rec < 0 || (s->inst == inst && g->r[s->rec].seq == seq))
            return s;
    }
}

static struct slot *held_slot(struct grouping *g, Py_ssize_t rec)
{
    uint64_t h = g->hash[rec];
    for (size_t i = h & g->mask;; i = (i + 1) & g->mask) {
        struct slot *s = &g->held[i];
        if (s->rec < 0 || (s->hash == h && g->r[s->rec].seq == g->r[rec].seq
                           && same_text(g->r, g->slen, s->rec, rec)))
            return s;
    }
}

static void hold(struct grouping *g, Py_ssize_t inst, Py_ssize_t a, Py_ssize_t b)
{
    for (Py_ssize_t i = a; i < b; i++) {
        struct slot *s = held_slot(g, i);
        if (s->rec < 0) {
            s->rec = i;
            s->hash = g->hash[i];
        }
        s->inst = inst;
    }
}

static int cmp_desc(const void *x, const void *y)
{
    Py_ssize_t a = *(const Py_ssize_t *)x, b = *(const Py_ssize_t *)y;
    return (a < b) - (a > b);
}

struct by_seq { uint64_t seq; Py_ssize_t rec; };

static int cmp_seq(const void *x, const void *y)
{
    uint64_t a = ((const struct by_seq *)x)->seq, b = ((const struct by_seq *)y)->seq;
    return (a > b) - (a < b);
}

/* instances.py's group_py for more than one run (runs: their starts, and n at the end):
 * owner[i] is the instance of record i (-1: a duplicate, dropped); *ninst, *dups. */
static int group_runs(const struct rec *r, Py_ssize_t n, const Py_ssize_t *runs, Py_ssize_t nruns,
                      Py_ssize_t lookback, Py_ssize_t *owner, Py_ssize_t *ninst_out,
                      Py_ssize_t *dups_out)
{
    struct grouping g = {r, NULL, NULL, NULL, NULL, 0};
    if (lookback > n)
        lookback = n;                   /* as many as there can be instances: the same */
    size_t cap = 16;
    while (cap < 2 * (size_t)n)
        cap <<= 1;
    g.mask = cap - 1;
    Py_ssize_t *cand = NULL, *mark = NULL, *len = NULL;
    int rc = -1;
    g.slen = PyMem_Malloc(n * sizeof(*g.slen));
    g.hash = PyMem_Malloc(n * sizeof(*g.hash));
    g.by_seq = PyMem_Malloc(cap * sizeof(*g.by_seq));
    g.held = PyMem_Malloc(cap * sizeof(*g.held));
    cand = PyMem_Malloc((n + lookback + 1) * sizeof(*cand));
    mark = PyMem_Malloc(n * sizeof(*mark));     /* the last run that made each a candidate */
    len = PyMem_Malloc(n * sizeof(*len));       /* records of each instance */
    if (!g.slen || !g.hash || !g.by_seq || !g.held || !cand || !mark || !len) {
        PyErr_NoMemory();
        goto done;
    }
    for (size_t i = 0; i < cap; i++)
        g.by_seq[i].rec = g.held[i].rec = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        g.hash[i] = held_hash(&r[i], &g.slen[i]);
        mark[i] = -1;
    }
    Py_ssize_t ninst = 0, dups = 0;
    for (Py_ssize_t k = 0; k < nruns; k++) {
        Py_ssize_t a = runs[k], b = runs[k + 1], target = -1;
        int from_zero = r[a].seq == 0;
        if (ninst > 0) {
            /* the candidates: instances holding one of the run's lines, and for a run not
             * from SEQ 0 the latest lookback ones; newest first, at most 2 * lookback */
            Py_ssize_t ncand = 0;
            for (Py_ssize_t i = a; i < b; i++) {
                struct slot *s = held_slot(&g, i);
                if (s->rec >= 0 && mark[s->inst] != k) {
                    mark[s->inst] = k;
                    cand[ncand++] = s->inst;
                }
            }
            if (!from_zero)
                for (Py_ssize_t idx = ninst > lookback ? ninst - lookback : 0; idx < ninst; idx++)
                    if (mark[idx] != k) {
                        mark[idx] = k;
                        cand[ncand++] = idx;
                    }
            if (ncand > 1)
                qsort(cand, ncand, sizeof(*cand), cmp_desc);
            if (ncand > 2 * lookback)
                ncand = 2 * lookback;
            for (Py_ssize_t c = 0; c < ncand && target < 0; c++) {
                Py_ssize_t idx = cand[c], shared = 0;
                int ok = 1;
                for (Py_ssize_t i = a; i < b; i++) {
                    struct seq_slot *s = seq_slot(&g, idx, r[i].seq);
                    if (s->rec >= 0) {
                        if (!same_text(r, g.slen, s->rec, i)) {
                            ok = 0;
                            break;
                        }
                        shared++;
                    }
                }
                if (!ok)
                    continue;
                if (from_zero && !(shared == b - a || shared == len[idx] || shared > 1
                                   || (shared == 1 && seq_slot(&g, idx, 0)->rec < 0)))
                    continue;
                target = idx;
            }
        }
        if (target < 0) {
            target = ninst++;
            len[target] = 0;
        }
        for (Py_ssize_t i = a; i < b; i++) {
            struct seq_slot *s = seq_slot(&g, target, r[i].seq);
            if (s->rec >= 0) {
                dups++;
                owner[i] = -1;
            } else {
                s->rec = i;
                s->inst = target;
                owner[i] = target;
                len[target]++;
            }
        }
        hold(&g, target, a, b);
    }
    *ninst_out = ninst;
    *dups_out = dups;
    rc = 0;
done:
    PyMem_Free(g.slen);
    PyMem_Free(g.hash);
    PyMem_Free(g.by_seq);
    PyMem_Free(g.held);
    PyMem_Free(cand);
    PyMem_Free(mark);
    PyMem_Free(len);
    return rc;
}

/* The reasons the template prints (begin's reason=): one shared str each. */
static const char *const reasons[] = {"interval", "unload"};
#define NREASONS 2
static PyObject *reason_strs[NREASONS];

/* Reading "NAME=" at *i of the str s (kind, data, length n): advances *i past it. */
static int lit(int kind, const void *data, Py_ssize_t n, Py_ssize_t *i, const char *name)
{
    Py_ssize_t len = strlen(name);
    if (n - *i < len)
        return 0;
    for (Py_ssize_t k = 0; k < len; k++)
        if (PyUnicode_READ(kind, data, *i + k) != (Py_UCS4)(unsigned char)name[k])
            return 0;
    *i += len;
    return 1;
}

/* 1 to 19 ASCII digits at *i (a u64, as the regex [0-9]{1,19} and int() read them). */
static int digits(int kind, const void *data, Py_ssize_t n, Py_ssize_t *i, uint64_t *v)
{
    Py_ssize_t k = *i;
    uint64_t x = 0;
    while (k < n && k - *i < 20) {
        Py_UCS4 c = PyUnicode_READ(kind, data, k);
        if (c < '0' || c > '9')
            break;
        x = x * 10 + (c - '0');
        k++;
    }
    if (k == *i || k - *i > 19)
        return 0;
    *i = k;
    *v = x;
    return 1;
}

/* A begin record's fields as the C template prints them (frames.py's _BEGIN_RE): (report,
 * reason, ts_ns, lines); an end record's (_END_RE): (report, lines); else None. New
 * reference, NULL on error. */
static PyObject *template_values(PyObject *rec, int begin)
{
    PyObject *text = PyTuple_GET_ITEM(rec, 2);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), i = 0, r0 = 0, r1 = 0;
    uint64_t report, ts = 0, lines;
    if (!lit(kind, data, n, &i, "report=") || !digits(kind, data, n, &i, &report))
        Py_RETURN_NONE;
    if (begin) {
        if (!lit(kind, data, n, &i, " reason="))
            Py_RETURN_NONE;
        r0 = r1 = i;
        while (r1 < n && PyUnicode_READ(kind, data, r1) != ' ') {
            if (PyUnicode_READ(kind, data, r1) == '=')
                Py_RETURN_NONE;
            r1++;
        }
        i = r1;
        if (!lit(kind, data, n, &i, " ts_ns=") || !digits(kind, data, n, &i, &ts))
            Py_RETURN_NONE;
    }
    if (!lit(kind, data, n, &i, " lines=") || !digits(kind, data, n, &i, &lines) || i != n)
        Py_RETURN_NONE;
    PyObject *out = PyTuple_New(begin ? 4 : 2), *v;
    if (out == NULL)
        return NULL;
    if ((v = PyLong_FromUnsignedLongLong(report)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(out, 0, v);
    if ((v = PyLong_FromUnsignedLongLong(lines)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(out, begin ? 3 : 1, v);
    if (!begin)
        return out;
    v = NULL;
    for (int k = 0; k < NREASONS; k++)      /* most reasons are one of the template's */
        if (r1 - r0 == (Py_ssize_t)strlen(reasons[k]) && kind == PyUnicode_1BYTE_KIND
                && memcmp((const char *)data + r0, reasons[k], r1 - r0) == 0) {
            v = reason_strs[k];
            Py_INCREF(v);
        }
    if (v == NULL && (v = PyUnicode_Substring(text, r0, r1)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(out, 1, v);
    if ((v = PyLong_FromUnsignedLongLong(ts)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(out, 2, v);
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* A frame (cut_py's tuple): begin and end at positions bk, ek of the instance's records
 * (-1: none), its body from [a, b) (only frame types and unknown types when dirty),
 * present: records in its SEQ span; the values of its begin and end records when they read
 * as the template prints them. */
static PyObject *frame_cut(PyObject *records, const struct rec *r, const Py_ssize_t *ord,
                           Py_ssize_t bk, Py_ssize_t ek, Py_ssize_t a, Py_ssize_t b, int dirty)
{
    PyObject *body;
    Py_ssize_t last = b - 1;        /* the position of the body's last record */
    if (!dirty)
        body = PyList_GetSlice(records, a, b);
    else {
        body = PyList_New(0);
        last = -1;
        for (Py_ssize_t k = a; body != NULL && k < b; k++) {
            int t = r[ord ? ord[k] : k].type;
            if (FRAME_TYPE(t) || t == T_OTHER) {
                if (PyList_Append(body, PyList_GET_ITEM(records, k)) < 0)
                    Py_CLEAR(body);
                last = k;
            }
        }
    }
    if (body == NULL)
        return NULL;
    Py_ssize_t present;
    if (ek >= 0)
        present = ek - a + 1 + (bk >= 0);
    else {
        if (a >= b || last < a)
            last = bk;                  /* no body: the frame is its begin */
        present = last + 1 - a + (bk >= 0);
    }
    PyObject *bv = Py_None, *ev = Py_None;
    Py_INCREF(Py_None);
    Py_INCREF(Py_None);
    if (bk >= 0) {
        Py_DECREF(bv);
        bv = template_values(PyList_GET_ITEM(records, bk), 1);
    }
    if (ek >= 0 && bv != NULL) {
        Py_DECREF(ev);
        ev = template_values(PyList_GET_ITEM(records, ek), 0);
    }
    if (bv == NULL || ev == NULL) {
        Py_DECREF(body);
        Py_XDECREF(bv);
        Py_XDECREF(ev);
        return NULL;
    }
    PyObject *out = PyTuple_New(6), *n = PyLong_FromSsize_t(present);
    if (out == NULL || n == NULL) {
        Py_XDECREF(out);
        Py_XDECREF(n);
        Py_DECREF(body);
        Py_DECREF(bv);
        Py_DECREF(ev);
        return NULL;
    }
    PyObject *bo = bk >= 0 ? PyList_GET_ITEM(records, bk) : Py_None;
    PyObject *eo = ek >= 0 ? PyList_GET_ITEM(records, ek) : Py_None;
    Py_INCREF(bo);
    Py_INCREF(eo);
    PyTuple_SET_ITEM(out, 0, bo);
    PyTuple_SET_ITEM(out, 1, eo);
    PyTuple_SET_ITEM(out, 2, body);
    PyTuple_SET_ITEM(out, 3, n);
    PyTuple_SET_ITEM(out, 4, bv);
    PyTuple_SET_ITEM(out, 5, ev);
    return out;
}

/* frames.py's cut_py on an instance's records (in SEQ order; record k is r[ord[k]], or r[k]
 * without ord): (missing, cuts, others), new references in *missing, *cuts, *others. */
static int cut(PyObject *records, const struct rec *r, const Py_ssize_t *ord, Py_ssize_t m,
               PyObject **missing, PyObject **cuts, PyObject **others)
{
    *missing = PyList_New(0);
    *cuts = PyList_New(0);
    *others = PyList_New(0);
    if (!*missing || !*cuts || !*others)
        goto fail;
    uint64_t expect = 0;                /* SEQ gaps: the start counts (SEQ 0 is the first line) */
    for (Py_ssize_t k = 0; k < m; k++) {
        uint64_t s = r[ord ? ord[k] : k].seq;
        if (s != expect) {
            PyObject *gap = Py_BuildValue("(KK)", (unsigned long long)expect, (unsigned long long)(s - 1));
            if (gap == NULL || PyList_Append(*missing, gap) < 0) {
                Py_XDECREF(gap);
                goto fail;
            }
            Py_DECREF(gap);
        }
        expect = s + 1;
    }
    int in_frame = 0, dirty = 0;
    Py_ssize_t bk = -1, a = 0;
    for (Py_ssize_t k = 0; k < m; k++) {
        int t = r[ord ? ord[k] : k].type;
        PyObject *f = NULL;
        if (FRAME_TYPE(t)) {
            if (!in_frame) {            /* a frame whose begin is gone */
                in_frame = 1;
                bk = -1;
                a = k;
                dirty = 0;
            }
            continue;
        }
        if (t == T_BEGIN) {
            if (in_frame && (f = frame_cut(records, r, ord, bk, -1, a, k, dirty)) == NULL)
                goto fail;
            in_frame = 1;
            bk = k;
            a = k + 1;
            dirty = 0;
        } else if (t == T_END) {
            if (!in_frame) {
                bk = -1;
                a = k;
                dirty = 0;
            }
            if ((f = frame_cut(records, r, ord, bk, k, a, k, dirty)) == NULL)
                goto fail;
            in_frame = 0;
        } else {
            if (in_frame)
                dirty = 1;
            if (PyList_Append(*others, PyList_GET_ITEM(records, k)) < 0)
                goto fail;
        }
        if (f != NULL) {
            int rc = PyList_Append(*cuts, f);
            Py_DECREF(f);
            if (rc < 0)
                goto fail;
        }
    }
    if (in_frame) {
        PyObject *f = frame_cut(records, r, ord, bk, -1, a, m, dirty);
        int rc = f ? PyList_Append(*cuts, f) : -1;
        Py_XDECREF(f);
        if (rc < 0)
            goto fail;
    }
    return 0;
fail:
    Py_CLEAR(*missing);
    Py_CLEAR(*cuts);
    Py_CLEAR(*others);
    return -1;
}

/* One instance's entry of layout()'s list; ord as in cut(). */
static PyObject *instance_entry(PyObject *records, const struct rec *r, const Py_ssize_t *ord,
                                Py_ssize_t m, Py_ssize_t first)
{
    PyObject *missing, *cuts, *others;
    Py_ssize_t last = ord ? ord[0] : 0;
    for (Py_ssize_t k = 1; k < m; k++) {
        Py_ssize_t i = ord ? ord[k] : k;
        if (r[i].line > r[last].line)
            last = i;
    }
    if (cut(records, r, ord, m, &missing, &cuts, &others) < 0)
        return NULL;
    PyObject *out = PyTuple_New(6);
    if (out == NULL) {
        Py_DECREF(missing);
        Py_DECREF(cuts);
        Py_DECREF(others);
        return NULL;
    }
    PyObject *items[3] = {records, PyTuple_GET_ITEM(r[first].obj, 3), PyTuple_GET_ITEM(r[last].obj, 3)};
    for (int k = 0; k < 3; k++) {
        Py_INCREF(items[k]);
        PyTuple_SET_ITEM(out, k, items[k]);
    }
    PyTuple_SET_ITEM(out, 3, missing);
    PyTuple_SET_ITEM(out, 4, cuts);
    PyTuple_SET_ITEM(out, 5, others);
    return out;
}

static PyObject *layout(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *recs;
    Py_ssize_t lookback;
    if (!PyArg_ParseTuple(args, "O!n:layout", &PyList_Type, &recs, &lookback))
        return NULL;
    if (lookback < 1) {
        PyErr_SetString(PyExc_ValueError, "layout: lookback must be at least 1");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(recs);
    PyObject *out = PyList_New(0);
    if (out == NULL || n == 0)
        return out ? Py_BuildValue("(Nn)", out, (Py_ssize_t)0) : NULL;
    struct rec *r = PyMem_Malloc(n * sizeof(*r));
    Py_ssize_t *runs = NULL, *owner = NULL, *ord = NULL, *start = NULL;
    struct by_seq *tmp = NULL;
    Py_ssize_t nruns = 0, ninst = 0, dups = 0;
    if (r == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(recs, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 4 || !PyUnicode_Check(PyTuple_GET_ITEM(t, 2))) {
            PyErr_SetString(PyExc_TypeError, "layout: a record is a tuple (seq, type, fields, line)");
            goto fail;
        }
        r[i].obj = t;
        r[i].seq = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(t, 0));
        if (r[i].seq == (uint64_t)-1 && PyErr_Occurred())
            goto fail;
        r[i].line = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 3));
        if (r[i].line == -1 && PyErr_Occurred())
            goto fail;
        if ((r[i].type = type_code(PyTuple_GET_ITEM(t, 1))) < 0)
            goto fail;
        nruns += i == 0 || r[i].seq <= r[i - 1].seq;    /* SEQ 0 or one not rising: a run */
    }
    if (nruns == 1) {               /* the usual case: one load, seen once */
        PyObject *e = instance_entry(recs, r, NULL, n, 0);
        if (e == NULL || PyList_Append(out, e) < 0) {
            Py_XDECREF(e);
            goto fail;
        }
        Py_DECREF(e);
        goto done;
    }
    runs = PyMem_Malloc((nruns + 1) * sizeof(*runs));
    owner = PyMem_Malloc(n * sizeof(*owner));
    if (runs == NULL || owner == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0, k = 0; i < n; i++)
        if (i == 0 || r[i].seq <= r[i - 1].seq)
            runs[k++] = i;
    runs[nruns] = n;
    if (group_runs(r, n, runs, nruns, lookback, owner, &ninst, &dups) < 0)
        goto fail;
    /* each instance's records: in log order (a counting sort by owner), then by SEQ */
    start = PyMem_Calloc(ninst + 1, sizeof(*start));
    ord = PyMem_Malloc(n * sizeof(*ord));
    tmp = PyMem_Malloc(n * sizeof(*tmp));
    if (start == NULL || ord == NULL || tmp == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (owner[i] >= 0)
            start[owner[i] + 1]++;
    for (Py_ssize_t j = 0; j < ninst; j++)
        start[j + 1] += start[j];
    for (Py_ssize_t i = 0; i < n; i++)      /* start[j] runs to the end of instance j */
        if (owner[i] >= 0)
            ord[start[owner[i]]++] = i;
    for (Py_ssize_t j = ninst; j > 0; j--)  /* start[] back to the starts */
        start[j] = start[j - 1];
    start[0] = 0;
    for (Py_ssize_t j = 0; j < ninst; j++) {
        Py_ssize_t *o = ord + start[j], m = start[j + 1] - start[j], first = o[0];
        int sorted = 1;
        for (Py_ssize_t k = 1; k < m && sorted; k++)
            sorted = r[o[k]].seq > r[o[k - 1]].seq;
        if (!sorted) {
            for (Py_ssize_t k = 0; k < m; k++) {
                tmp[k].seq = r[o[k]].seq;
                tmp[k].rec = o[k];
            }
            qsort(tmp, m, sizeof(*tmp), cmp_seq);
            for (Py_ssize_t k = 0; k < m; k++)
                o[k] = tmp[k].rec;
        }
        PyObject *records = PyList_New(m);
        if (records == NULL)
            goto fail;
        for (Py_ssize_t k = 0; k < m; k++) {
            Py_INCREF(r[o[k]].obj);
            PyList_SET_ITEM(records, k, r[o[k]].obj);
        }
        PyObject *e = instance_entry(records, r, o, m, first);
        Py_DECREF(records);
        if (e == NULL || PyList_Append(out, e) < 0) {
            Py_XDECREF(e);
            goto fail;
        }
        Py_DECREF(e);
    }
done:
    PyMem_Free(r);
    PyMem_Free(runs);
    PyMem_Free(owner);
    PyMem_Free(ord);
    PyMem_Free(start);
    PyMem_Free(tmp);
    return out == NULL ? NULL : Py_BuildValue("(Nn)", out, dups);
fail:
    Py_CLEAR(out);      /* one cleanup path: the buffers are freed at done */
    goto done;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(text, other_version, kmsg_rest) -> (per_module, unrecognised, prefixed, lines, "
     "rejected, untold, tagged), "
     "or None when text is not stored one byte per character."},
    {"layout", layout, METH_VARARGS,
     "layout(recs, lookback) -> ([(records, first_line, last_line, missing, cuts, others), ...], "
     "duplicates): a module's records grouped into instances and cut into frames, as "
     "kprobegen.report.frames.layout_py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kprobegen.report._logscan",
    "The report parser's line scanner in C (see kprobegen/report/scan.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__logscan(void)
{
    crc_init();
    crc_prefix2 = crc_update(0xFFFFFFFFu, PREFIX2, PREFIX1_LEN);
    for (size_t i = 0; i < NTYPES; i++) {
        if (type_strs[i] == NULL) {
            type_strs[i] = PyUnicode_InternFromString(known_types[i]);
            if (type_strs[i] == NULL)
                return NULL;
        }
    }
    for (int i = 0; i < NREASONS; i++) {
        if (reason_strs[i] == NULL) {
            reason_strs[i] = PyUnicode_InternFromString(reasons[i]);
            if (reason_strs[i] == NULL)
                return NULL;
        }
    }
    return PyModule_Create(&module);
}
