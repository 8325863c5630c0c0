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
 * layout(recs, lookback, frame_of) (at the end of this file) takes one module's records on:
 * grouped into instances (loads), cut into frames, each frame's framing checked and the
 * frames of each load checked against each other, as kprobegen/report/frames.py's layout_py
 * does. These two do the per-line, per-record and per-frame work that made the parser slow,
 * each held to its Python reference by tests/test_logscan.py; the rest of what the records
 * mean (Instances, Frames, events, Results) is Python in kprobegen/report/.
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
 * layout(recs, lookback, frame_of) does what kprobegen/report/frames.py's layout_py does (the
 * reference, tests/test_logscan.py checks the two agree) and returns the same value:
 * (records, first_lines, last_lines, missing, rows, others, claims, outside, duplicates,
 * interleaved):
 * one list per item of an instance (load) of the module whose records (in log order, as
 * scan() gives them) are recs, one entry per instance in order of first appearance:
 * - instances.group_py: recs cut into runs of rising SEQ (SEQ 0 starts one), each run
 *   joined to an earlier instance it agrees with or made a new one, duplicates dropped;
 *   records: the instance's records in SEQ order; first_lines: the log line of the run that
 *   started it; last_lines: its greatest log line;
 * - frames.cut_py: missing, the SEQ gaps [(lo, hi), ...]; rows, the frames as
 *   frames.frame_row makes them (the frame's records, SEQs, framing problems, lost lines,
 *   and the values of its begin and end records: frame_row() here, for begin and end
 *   records as the C template prints them; any other frame goes to frame_of(begin, end,
 *   body, present), frames.py's Python); others, the records outside the frames (events,
 *   load and error records, unknown types), () when there are none; claims, the texts of
 *   report numbers claimed by more than one frame (frames.load_conflicts, which also says
 *   on the frames when the load has more load records than the one at SEQ 0); outside, its
 *   SEQ gaps outside every frame (frames.gaps_outside);
 * - interleaved: whether an instance starts before the last line of an earlier one
 *   (frames.loads_interleave).
 * In Python this per-record, per-run and per-frame work made a log of many tiny loads or
 * frames (the adversarial logs of bench/parse_bench.py) several times slower per line than
 * a normal log. The problems are made here as ASCII text (put together without printf);
 * a text with the same numbers as the last one of its kind is the same str.
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

/* frames.py's NO_BEGIN and NO_END (the same text): one shared str each. */
#define NO_BEGIN "no begin record (the frame's start is not in the log)"
#define NO_END "no end record (the frame's end is not in the log: cut, lost, or the module was " \
    "still reporting)"
static PyObject *no_begin_str, *no_end_str;

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

/* The values of a begin or an end record as the C template prints it. */
struct template {
    uint64_t report, ts, lines;
    Py_ssize_t r0, r1;          /* begin: its reason is the characters [r0, r1) of its fields */
};

/* "NAME=" at *p of [*p, e): advances *p past it. */
static int lit1(const char **p, const char *e, const char *name, size_t len)
{
    if ((size_t)(e - *p) < len || memcmp(*p, name, len) != 0)
        return 0;
    *p += len;
    return 1;
}

/* 1 to 19 ASCII digits at *p of [*p, e) (a u64, as the regex [0-9]{1,19} and int() read them). */
static int digits1(const char **p, const char *e, uint64_t *v)
{
    const char *s = *p;
    uint64_t x = 0;
    while (s < e && s - *p < 20 && *s >= '0' && *s <= '9')
        x = x * 10 + (uint64_t)(*s++ - '0');
    if (s == *p || s - *p > 19)
        return 0;
    *p = s;
    *v = x;
    return 1;
}

#define LIT1(p, e, name) lit1(p, e, name, sizeof(name) - 1)

/* 1 when the fields of record rec read as the C template prints a begin record (begin; frames.py's
 * _BEGIN_RE: report, reason, ts_ns, lines) or an end record (_END_RE: report, lines), with
 * the values in *v; else 0. */
static int read_template(PyObject *rec, int begin, struct template *v)
{
    PyObject *text = PyTuple_GET_ITEM(rec, 2);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), i = 0;
    if (kind == PyUnicode_1BYTE_KIND) {     /* every record the scanner makes */
        const char *s = data, *p = s, *e = s + n;
        if (!LIT1(&p, e, "report=") || !digits1(&p, e, &v->report))
            return 0;
        if (begin) {
            if (!LIT1(&p, e, " reason="))
                return 0;
            const char *r = p;
            while (p < e && *p != ' ') {
                if (*p == '=')
                    return 0;
                p++;
            }
            v->r0 = r - s;
            v->r1 = p - s;
            if (!LIT1(&p, e, " ts_ns=") || !digits1(&p, e, &v->ts))
                return 0;
        }
        return LIT1(&p, e, " lines=") && digits1(&p, e, &v->lines) && p == e;
    }
    if (!lit(kind, data, n, &i, "report=") || !digits(kind, data, n, &i, &v->report))
        return 0;
    if (begin) {
        if (!lit(kind, data, n, &i, " reason="))
            return 0;
        v->r0 = v->r1 = i;
        while (v->r1 < n && PyUnicode_READ(kind, data, v->r1) != ' ') {
            if (PyUnicode_READ(kind, data, v->r1) == '=')
                return 0;
            v->r1++;
        }
        i = v->r1;
        if (!lit(kind, data, n, &i, " ts_ns=") || !digits(kind, data, n, &i, &v->ts))
            return 0;
    }
    return lit(kind, data, n, &i, " lines=") && digits(kind, data, n, &i, &v->lines) && i == n;
}

/* The reason of a begin record read by read_template, a new reference: most are one of the
 * template's (shared), others a copy of the text. */
static PyObject *reason_of(PyObject *rec, const struct template *v)
{
    PyObject *text = PyTuple_GET_ITEM(rec, 2);
    Py_ssize_t len = v->r1 - v->r0;
    if (PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND)
        for (int k = 0; k < NREASONS; k++)
            if (len == (Py_ssize_t)strlen(reasons[k])
                    && memcmp((const char *)PyUnicode_DATA(text) + v->r0, reasons[k], len) == 0) {
                Py_INCREF(reason_strs[k]);
                return reason_strs[k];
            }
    return PyUnicode_Substring(text, v->r0, v->r1);
}

/* Append a new reference to a list (consumed): 0, or -1 (also when item is NULL). */
static int append_new(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* An ASCII text put together from pieces, for the problems of frames (PyUnicode_FromFormat
 * goes through printf and cost more than the rest of a frame's row). */
struct text {
    char s[512];                /* the longest text made here is about 420 characters */
    size_t n;
};

static void put_n(struct text *t, const char *s, size_t len)
{
    if (len > sizeof(t->s) - t->n)  /* never (see the size): cut rather than overrun */
        len = sizeof(t->s) - t->n;
    memcpy(t->s + t->n, s, len);
    t->n += len;
}

static void put(struct text *t, const char *s)
{
    put_n(t, s, strlen(s));
}

static void put_u64(struct text *t, uint64_t v)
{
    char d[20];
    int k = 20;
    do {
        d[--k] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put_n(t, d + k, 20 - k);
}

/* The text as a new str (NULL on error). */
static PyObject *text_str(const struct text *t)
{
    PyObject *out = PyUnicode_New((Py_ssize_t)t->n, 127);
    if (out != NULL)
        memcpy(PyUnicode_DATA(out), t->s, t->n);
    return out;
}

/* The last text of each kind made in one layout() call, with its numbers: a log of many
 * frames (an adversarial one: as many as lines) tends to say the same thing again, and one
 * str then serves every frame that says it (a str is immutable: nobody can tell). The same
 * for the tuples of a load's SEQ gap, (lo, hi), and of its one gap outside its frames, (gap,). */
enum { SAID_DISAGREE, SAID_MISSING, SAID_FEWER, SAID_MORE, SAID_CLAIM2, SAID_GAP, SAID_OUTSIDE,
       NSAID };
struct said {
    PyObject *str;              /* NULL until one is made (SAID_GAP, SAID_OUTSIDE: a tuple) */
    uint64_t nums[5];
};

/* pieces and numbers taking turns (NULL ends the pieces: one number fewer than pieces), as
 * a str, the same str as the last one of its kind when its numbers are the same: a new
 * reference, NULL on error. */
static PyObject *said_text(struct said *last, const char *const *pieces, const uint64_t *nums)
{
    int count = 0;
    while (pieces[count + 1] != NULL)
        count++;
    if (last->str == NULL || memcmp(last->nums, nums, count * sizeof(*nums)) != 0) {
        struct text t = {.n = 0};
        for (int k = 0; k <= count; k++) {
            put(&t, pieces[k]);
            if (k < count)
                put_u64(&t, nums[k]);
        }
        PyObject *str = text_str(&t);
        if (str == NULL)
            return NULL;
        Py_XSETREF(last->str, str);
        memcpy(last->nums, nums, count * sizeof(*nums));
    }
    Py_INCREF(last->str);
    return last->str;
}

/* said_text appended to list: 0, or -1 on error. */
static int append_text(PyObject *list, struct said *last, const char *const *pieces,
                       const uint64_t *nums)
{
    return append_new(list, said_text(last, pieces, nums));
}

/* A frame's row (frames.py's frame_of and frame_row; ROW_FIELDS there): begin and end at
 * positions bk, ek of the instance's records (-1: none), its body from [a, b) (only frame
 * types and unknown types when dirty). A frame whose begin and end are absent or read as
 * the template prints them is checked here, as frame_row does it; any other frame (or one
 * whose SEQ span is too wide for u64 sums) is handed to frame_of(begin, end, body, present)
 * in Python, which reads such records field by field. New reference, NULL on error. */
static PyObject *frame_row(PyObject *records, const struct rec *r, const Py_ssize_t *ord,
                           Py_ssize_t bk, Py_ssize_t ek, Py_ssize_t a, Py_ssize_t b, int dirty,
                           PyObject *frame_of, struct said *said)
{
    PyObject *body, *problems = NULL, *row = NULL;
    Py_ssize_t first = -1, last = -1;   /* positions of the body's first and last records */
    if (!dirty) {
        body = PyList_GetSlice(records, a, b);
        if (a < b) {
            first = a;
            last = b - 1;
        }
    } else {
        body = PyList_New(0);
        for (Py_ssize_t k = a; body != NULL && k < b; k++) {
            int t = r[ord ? ord[k] : k].type;
            if (FRAME_TYPE(t) || t == T_OTHER) {
                if (PyList_Append(body, PyList_GET_ITEM(records, k)) < 0)
                    Py_CLEAR(body);
                if (first < 0)
                    first = k;
                last = k;
            }
        }
    }
    if (body == NULL)
        return NULL;
    /* records of the instance in the frame's SEQ span: up to its end, else its last record */
    Py_ssize_t present = (ek >= 0 ? ek : last >= 0 ? last : bk) + 1 - a + (bk >= 0);
    PyObject *begin = bk >= 0 ? PyList_GET_ITEM(records, bk) : NULL;
    PyObject *end = ek >= 0 ? PyList_GET_ITEM(records, ek) : NULL;
    Py_ssize_t fk = bk >= 0 ? bk : first >= 0 ? first : ek;    /* its first and last records */
    Py_ssize_t lk = ek >= 0 ? ek : last >= 0 ? last : bk;
    const struct rec *fr = &r[ord ? ord[fk] : fk], *lr = &r[ord ? ord[lk] : lk];
    struct template bv, ev;
    if ((begin != NULL && !read_template(begin, 1, &bv)) || (end != NULL && !read_template(end, 0, &ev))
            || lr->seq - fr->seq >= (uint64_t)1 << 62) {
        row = PyObject_CallFunction(frame_of, "OOOn", begin ? begin : Py_None,
                                    end ? end : Py_None, body, present);
        Py_DECREF(body);
        return row;
    }
    if ((problems = PyList_New(0)) == NULL)
        goto fail;
    uint64_t report = 0, lines = 0;
    if (begin != NULL) {
        report = bv.report;
        lines = bv.lines;
    }
    if (end != NULL) {
        if (begin == NULL) {
            report = ev.report;
            lines = ev.lines;
        } else if (ev.report != report || ev.lines != lines) {
            static const char *const says[] = {"begin says report=", " lines=",
                                               " but end says report=", " lines=", "", NULL};
            if (append_text(problems, &said[SAID_DISAGREE], says,
                            (uint64_t[]){report, lines, ev.report, ev.lines}) < 0)
                goto fail;
        }
    }
    /* lost lines: SEQ gaps inside the frame, and whatever the stated line count misses (no
     * overflow: the span is below 2^62, a count below 10^19) */
    uint64_t gaps = lr->seq - fr->seq - (uint64_t)(present - 1), lost = gaps;
    static const char *const missing[] = {"", " line(s) missing between SEQ ", " and ", "", NULL};
    if (gaps && append_text(problems, &said[SAID_MISSING], missing,
                         (uint64_t[]){gaps, fr->seq, lr->seq}) < 0)
        goto fail;
    if (begin == NULL) {
        if (PyList_Append(problems, no_begin_str) < 0)
            goto fail;
        lost++;
    }
    if (end == NULL) {
        if (PyList_Append(problems, no_end_str) < 0)
            goto fail;
        lost++;
    }
    uint64_t n = (uint64_t)PyList_GET_SIZE(body);
    if ((begin != NULL || end != NULL) && lines != n) {
        if (lines > n) {
            static const char *const fewer[] = {"lines=", " but ", " record(s) in the frame", NULL};
            if (!gaps && append_text(problems, &said[SAID_FEWER], fewer, (uint64_t[]){lines, n}) < 0)
                goto fail;
            if (lines - n > gaps)
                lost += lines - n - gaps;
        } else {
            static const char *const more[] = {"lines=", " but ", " record(s) in the frame (",
                                               " more than stated)", NULL};
            if (append_text(problems, &said[SAID_MORE], more, (uint64_t[]){lines, n, n - lines}) < 0)
                goto fail;
        }
    }
    if ((row = PyTuple_New(12)) == NULL)
        goto fail;
    PyObject *line = PyTuple_GET_ITEM((lr->line < fr->line ? lr : fr)->obj, 3);
    PyObject *borrowed[6] = {begin ? begin : Py_None, end ? end : Py_None, NULL,
                             PyTuple_GET_ITEM(fr->obj, 0), PyTuple_GET_ITEM(lr->obj, 0), line};
    for (int k = 0; k < 6; k++)
        if (k != 2) {
            Py_INCREF(borrowed[k]);
            PyTuple_SET_ITEM(row, k, borrowed[k]);
        }
    PyTuple_SET_ITEM(row, 2, body);         /* the row holds them now */
    PyTuple_SET_ITEM(row, 6, problems);
    body = problems = NULL;
    PyObject *v;
    if ((v = PyLong_FromUnsignedLongLong(lost)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(row, 7, v);
    if (begin == NULL && end == NULL) {     /* a frame of body records only */
        for (int k = 8; k < 12; k++) {
            Py_INCREF(Py_None);
            PyTuple_SET_ITEM(row, k, Py_None);
        }
        return row;
    }
    if ((v = PyLong_FromUnsignedLongLong(report)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(row, 8, v);
    if ((v = PyLong_FromUnsignedLongLong(lines)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(row, 11, v);
    if (begin == NULL) {
        Py_INCREF(Py_None);
        PyTuple_SET_ITEM(row, 9, Py_None);
        Py_INCREF(Py_None);
        PyTuple_SET_ITEM(row, 10, Py_None);
        return row;
    }
    if ((v = reason_of(begin, &bv)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(row, 9, v);
    if ((v = PyLong_FromUnsignedLongLong(bv.ts)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(row, 10, v);
    return row;
fail:
    Py_XDECREF(body);
    Py_XDECREF(problems);
    Py_XDECREF(row);            /* a tuple with NULL items deallocates */
    return NULL;
}

/* What load_conflicts needs of a frame's row: its report number, first and last SEQ. */
struct claim {
    uint64_t report, first, last;
    Py_ssize_t row;             /* its position among the instance's rows */
};

/* The first and last SEQ of a row (made here or by frame_of): 0, or -1 with an exception when
 * it is not a row. */
static int row_seqs(PyObject *row, uint64_t *first, uint64_t *last)
{
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 12 || !PyList_Check(PyTuple_GET_ITEM(row, 6))) {
        PyErr_SetString(PyExc_TypeError, "layout: frame_of must give a frame's row");
        return -1;
    }
    *first = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(row, 3));
    *last = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(row, 4));
    return PyErr_Occurred() ? -1 : 0;
}

/* The values of a row in *c, whether it has a report number in *has: 0, or -1 with an
 * exception when it is not a row. */
static int row_claim(PyObject *row, Py_ssize_t k, struct claim *c, int *has)
{
    if (row_seqs(row, &c->first, &c->last) < 0)
        return -1;
    PyObject *report = PyTuple_GET_ITEM(row, 8);
    *has = report != Py_None;
    c->report = *has ? PyLong_AsUnsignedLongLong(report) : 0;
    c->row = k;
    return PyErr_Occurred() ? -1 : 0;
}

/* frames.py's gaps_outside: the instance's SEQ gaps (missing, as cut() made it) outside
 * every frame of it (rows), a tuple in *outside (one gap: the last such tuple again when it
 * holds the same gap). 0, or -1 on error. */
static int gaps_outside(PyObject *missing, PyObject *rows, struct said *said, PyObject **outside)
{
    Py_ssize_t ng = PyList_GET_SIZE(missing), nf = PyList_GET_SIZE(rows), k = -1, n = 0;
    PyObject *one = NULL, *found = NULL;    /* the first gap outside; a list of two or more */
    uint64_t first, last;
    *outside = NULL;
    for (Py_ssize_t i = 0; i < ng; i++) {
        PyObject *gap = PyList_GET_ITEM(missing, i);
        uint64_t lo = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(gap, 0));
        uint64_t hi = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(gap, 1));
        for (; k + 1 < nf; k++) {           /* k: the last frame starting before lo */
            if (row_seqs(PyList_GET_ITEM(rows, k + 1), &first, &last) < 0)
                goto fail;
            if (first >= lo)
                break;
        }
        if (k >= 0) {
            if (row_seqs(PyList_GET_ITEM(rows, k), &first, &last) < 0)
                goto fail;
            if (hi < last)
                continue;                   /* inside frame k: its own problem */
        }
        if (n++ == 0)
            one = gap;
        else if ((found == NULL && ((found = PyList_New(0)) == NULL || PyList_Append(found, one) < 0))
                 || PyList_Append(found, gap) < 0)
            goto fail;
    }
    if (n == 1) {
        struct said *said1 = &said[SAID_OUTSIDE];
        if (said1->str == NULL || PyTuple_GET_ITEM(said1->str, 0) != one) {
            PyObject *t = PyTuple_Pack(1, one);
            if (t == NULL)
                goto fail;
            Py_XSETREF(said1->str, t);
        }
        Py_INCREF(said1->str);
        *outside = said1->str;
    } else
        *outside = n ? PyList_AsTuple(found) : PyTuple_New(0);
fail:
    Py_XDECREF(found);
    return *outside == NULL ? -1 : 0;
}

/* what appended to the problems of the rows at c[0..n) (c[i].row): 0, or -1 on error. */
static int say_on(PyObject *rows, const struct claim *c, Py_ssize_t n, PyObject *what)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyList_Append(PyTuple_GET_ITEM(PyList_GET_ITEM(rows, c[i].row), 6), what) < 0)
            return -1;
    return 0;
}

static int cmp_claim(const void *x, const void *y)     /* by report number, then position */
{
    const struct claim *a = x, *b = y;
    if (a->report != b->report)
        return (a->report > b->report) - (a->report < b->report);
    return (a->row > b->row) - (a->row < b->row);
}

/* claims[start .. start + n): the frames of one report number; first: the position of the
 * first of them */
struct group { Py_ssize_t start, n, first; };

static int cmp_group(const void *x, const void *y)     /* by the position of their first frame */
{
    Py_ssize_t a = ((const struct group *)x)->first, b = ((const struct group *)y)->first;
    return (a > b) - (a < b);
}

#define CLAIM_END "): a module prints each report once, so some of these lines were not printed by it"

/* frames.py's load_conflicts on an instance's rows: the text of load records not at SEQ 0
 * (among its records, in SEQ order: record k is r[ord[k]], or r[k] without ord) appended to
 * every row's problems, then the text of each report number claimed by more than one frame
 * to the problems of those frames; those texts in a tuple, in *claims. 0, or -1 on error. */
static int load_conflicts(PyObject *rows, const struct rec *r, const Py_ssize_t *ord,
                          Py_ssize_t m, struct said *said, PyObject **claims)
{
    Py_ssize_t nrows = PyList_GET_SIZE(rows), seconds = 0;
    *claims = NULL;
    for (Py_ssize_t k = 0; k < m && nrows; k++) {
        const struct rec *x = &r[ord ? ord[k] : k];
        seconds += x->type == T_LOAD && x->seq != 0;
    }
    if (seconds) {
        struct text t = {.n = 0};
        put_u64(&t, (uint64_t)seconds);
        put(&t, " more load record(s) in one load (");
        for (Py_ssize_t k = 0, shown = 0; k < m && shown < 5; k++) {
            const struct rec *x = &r[ord ? ord[k] : k];
            if (x->type != T_LOAD || x->seq == 0)
                continue;
            put(&t, shown++ ? ", SEQ " : "SEQ ");
            put_u64(&t, x->seq);
            put(&t, " (log line ");
            put_u64(&t, (uint64_t)x->line);
            put(&t, ")");
        }
        put(&t, "): a module prints one, at SEQ 0, so some of these lines were not printed by it");
        PyObject *what = text_str(&t);
        int rc = what == NULL ? -1 : 0;
        for (Py_ssize_t k = 0; k < nrows && rc == 0; k++) {
            PyObject *row = PyList_GET_ITEM(rows, k);
            if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 12 || !PyList_Check(PyTuple_GET_ITEM(row, 6))) {
                PyErr_SetString(PyExc_TypeError, "layout: frame_of must give a frame's row");
                rc = -1;
            } else
                rc = PyList_Append(PyTuple_GET_ITEM(row, 6), what);
        }
        Py_XDECREF(what);
        if (rc < 0)
            return -1;
    }
    if (nrows == 2) {                   /* the usual case of more than one: one step */
        struct claim c[2];
        int has[2];
        if (row_claim(PyList_GET_ITEM(rows, 0), 0, &c[0], &has[0]) < 0
                || row_claim(PyList_GET_ITEM(rows, 1), 1, &c[1], &has[1]) < 0)
            return -1;
        if (has[0] && has[1] && c[0].report == c[1].report) {
            static const char *const two[] = {"2 frames of one load claim report ", " (SEQ ", "..",
                                              ", SEQ ", "..", CLAIM_END, NULL};
            PyObject *what = said_text(&said[SAID_CLAIM2], two, (uint64_t[]){c[0].report,
                                       c[0].first, c[0].last, c[1].first, c[1].last});
            if (what == NULL || say_on(rows, c, 2, what) < 0 || (*claims = PyTuple_Pack(1, what)) == NULL) {
                Py_XDECREF(what);
                return -1;
            }
            Py_DECREF(what);
            return 0;
        }
    }
    if (nrows <= 2)
        return (*claims = PyTuple_New(0)) == NULL ? -1 : 0;
    /* the frames with a report number, by number; groups of one number, in the order of
     * their first frames */
    struct claim *c = PyMem_Malloc(nrows * sizeof(*c));
    struct group *g = PyMem_Malloc(nrows * sizeof(*g));
    PyObject *found = PyList_New(0);
    Py_ssize_t n = 0, ng = 0;
    int rc = -1;
    if (c == NULL || g == NULL || found == NULL) {
        if (found != NULL)
            PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < nrows; k++) {
        int has;
        if (row_claim(PyList_GET_ITEM(rows, k), k, &c[n], &has) < 0)
            goto done;
        n += has;
    }
    qsort(c, n, sizeof(*c), cmp_claim);
    for (Py_ssize_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && c[j].report == c[i].report; j++)
            ;
        if (j - i > 1)
            g[ng++] = (struct group){i, j - i, c[i].row};
    }
    qsort(g, ng, sizeof(*g), cmp_group);
    for (Py_ssize_t k = 0; k < ng; k++) {
        const struct claim *same = c + g[k].start;
        struct text t = {.n = 0};
        put_u64(&t, (uint64_t)g[k].n);
        put(&t, " frames of one load claim report ");
        put_u64(&t, same[0].report);
        put(&t, " (");
        for (Py_ssize_t i = 0; i < g[k].n && i < 5; i++) {
            put(&t, i ? ", SEQ " : "SEQ ");
            put_u64(&t, same[i].first);
            put(&t, "..");
            put_u64(&t, same[i].last);
        }
        put(&t, CLAIM_END);
        PyObject *what = text_str(&t);
        if (what == NULL || say_on(rows, same, g[k].n, what) < 0 || PyList_Append(found, what) < 0) {
            Py_XDECREF(what);
            goto done;
        }
        Py_DECREF(what);
    }
    rc = (*claims = PyList_AsTuple(found)) == NULL ? -1 : 0;
done:
    PyMem_Free(c);
    PyMem_Free(g);
    Py_XDECREF(found);
    return rc;
}

/* frames.py's cut_py on an instance's records (in SEQ order; record k is r[ord[k]], or r[k]
 * without ord): (missing, rows, others), new references in *missing, *rows, *others. */
static int cut(PyObject *records, const struct rec *r, const Py_ssize_t *ord, Py_ssize_t m,
               PyObject *frame_of, struct said *said, PyObject **missing, PyObject **rows,
               PyObject **others, PyObject **claims, PyObject **outside)
{
    *missing = PyList_New(0);
    *rows = PyList_New(0);
    *others = NULL;                     /* made at its first record; () when there is none */
    if (!*missing || !*rows)
        goto fail;
    uint64_t expect = 0;                /* SEQ gaps: the start counts (SEQ 0 is the first line) */
    for (Py_ssize_t k = 0; k < m; k++) {
        uint64_t s = r[ord ? ord[k] : k].seq;
        if (s != expect) {             /* (lo, hi): the last one again when the same */
            struct said *last = &said[SAID_GAP];
            if (last->str == NULL || last->nums[0] != expect || last->nums[1] != s - 1) {
                PyObject *lo = PyLong_FromUnsignedLongLong(expect);
                PyObject *hi = PyLong_FromUnsignedLongLong(s - 1);
                PyObject *gap = lo && hi ? PyTuple_Pack(2, lo, hi) : NULL;
                Py_XDECREF(lo);
                Py_XDECREF(hi);
                if (gap == NULL)
                    goto fail;
                Py_XSETREF(last->str, gap);
                last->nums[0] = expect;
                last->nums[1] = s - 1;
            }
            if (PyList_Append(*missing, last->str) < 0)
                goto fail;
        }
        expect = s + 1;
    }
    int in_frame = 0, dirty = 0;
    Py_ssize_t bk = -1, a = 0;
    for (Py_ssize_t k = 0; k < m; k++) {
        int t = r[ord ? ord[k] : k].type;
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
            if (in_frame && append_new(*rows, frame_row(records, r, ord, bk, -1, a, k, dirty, frame_of, said)) < 0)
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
            if (append_new(*rows, frame_row(records, r, ord, bk, k, a, k, dirty, frame_of, said)) < 0)
                goto fail;
            in_frame = 0;
        } else {
            if (in_frame)
                dirty = 1;
            if ((*others == NULL && (*others = PyList_New(0)) == NULL)
                    || PyList_Append(*others, PyList_GET_ITEM(records, k)) < 0)
                goto fail;
        }
    }
    if (in_frame && append_new(*rows, frame_row(records, r, ord, bk, -1, a, m, dirty, frame_of, said)) < 0)
        goto fail;
    if (*others == NULL && (*others = PyTuple_New(0)) == NULL)
        goto fail;
    if (load_conflicts(*rows, r, ord, m, said, claims) < 0)
        goto fail;
    if (gaps_outside(*missing, *rows, said, outside) < 0) {
        Py_CLEAR(*claims);
        goto fail;
    }
    return 0;
fail:
    Py_CLEAR(*missing);
    Py_CLEAR(*rows);
    Py_CLEAR(*others);
    return -1;
}

/* What layout() gives back: one list per item of an instance (one entry per instance, in
 * order of first appearance), and whether the lines of two instances interleave in the log. */
enum { C_RECORDS, C_FIRST, C_LAST, C_MISSING, C_ROWS, C_OTHERS, C_CLAIMS, C_OUTSIDE, NCOLS };
struct columns {
    PyObject *col[NCOLS];
    Py_ssize_t reach;           /* the greatest last log line of the instances so far */
    int interleaved;
};

/* One instance added to the columns: its records (in SEQ order; record k is r[ord[k]], or r[k]
 * without ord), first: the record whose log line started it. 0, or -1 on error. */
static int add_instance(struct columns *c, PyObject *records, const struct rec *r,
                        const Py_ssize_t *ord, Py_ssize_t m, Py_ssize_t first, PyObject *frame_of,
                        struct said *said)
{
    PyObject *missing, *rows, *others, *claims, *outside;
    Py_ssize_t last = ord ? ord[0] : 0;
    for (Py_ssize_t k = 1; k < m; k++) {
        Py_ssize_t i = ord ? ord[k] : k;
        if (r[i].line > r[last].line)
            last = i;
    }
    /* instances come in the order of their first lines: one that starts before the last line
     * of an earlier one interleaves with it (frames.py's loads_interleave) */
    if (r[first].line < c->reach)
        c->interleaved = 1;
    if (r[last].line > c->reach)
        c->reach = r[last].line;
    if (cut(records, r, ord, m, frame_of, said, &missing, &rows, &others, &claims, &outside) < 0)
        return -1;
    PyObject *items[NCOLS] = {records, PyTuple_GET_ITEM(r[first].obj, 3),
                              PyTuple_GET_ITEM(r[last].obj, 3), missing, rows, others, claims,
                              outside};
    int rc = 0;
    for (int k = 0; k < NCOLS; k++) {
        if (k < C_MISSING)
            Py_INCREF(items[k]);        /* borrowed; the others are new references */
        if (append_new(c->col[k], items[k]) < 0)
            rc = -1;
    }
    return rc;
}

static PyObject *layout(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *recs, *frame_of;
    Py_ssize_t lookback;
    if (!PyArg_ParseTuple(args, "O!nO:layout", &PyList_Type, &recs, &lookback, &frame_of))
        return NULL;
    if (!PyCallable_Check(frame_of)) {
        PyErr_SetString(PyExc_TypeError, "layout: frame_of must be callable");
        return NULL;
    }
    if (lookback < 1) {
        PyErr_SetString(PyExc_ValueError, "layout: lookback must be at least 1");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(recs);
    struct columns c = {.reach = -1, .interleaved = 0};
    int ok = 1;
    for (int k = 0; k < NCOLS; k++)
        ok &= (c.col[k] = PyList_New(0)) != NULL;
    struct rec *r = ok && n ? PyMem_Malloc(n * sizeof(*r)) : NULL;
    Py_ssize_t *runs = NULL, *owner = NULL, *ord = NULL, *start = NULL;
    struct by_seq *tmp = NULL;
    struct said said[NSAID] = {{NULL, {0}}};
    Py_ssize_t nruns = 0, ninst = 0, dups = 0;
    if (!ok)
        goto fail;
    if (n == 0)
        goto done;
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
        if (add_instance(&c, recs, r, NULL, n, 0, frame_of, said) < 0)
            goto fail;
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
        int rc = add_instance(&c, records, r, o, m, first, frame_of, said);
        Py_DECREF(records);
        if (rc < 0)
            goto fail;
    }
done:
    PyMem_Free(r);
    PyMem_Free(runs);
    PyMem_Free(owner);
    PyMem_Free(ord);
    PyMem_Free(start);
    PyMem_Free(tmp);
    for (int k = 0; k < NSAID; k++)
        Py_XDECREF(said[k].str);
    if (!ok)
        return NULL;
    return Py_BuildValue("(NNNNNNNNnN)", c.col[0], c.col[1], c.col[2], c.col[3], c.col[4], c.col[5],
                         c.col[6], c.col[7], dups, PyBool_FromLong(c.interleaved));
fail:
    for (int k = 0; k < NCOLS; k++)     /* one cleanup path: the buffers are freed at done */
        Py_CLEAR(c.col[k]);
    ok = 0;
    goto done;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(text, other_version, kmsg_rest) -> (per_module, unrecognised, prefixed, lines, "
     "rejected, untold, tagged), "
     "or None when text is not stored one byte per character."},
    {"layout", layout, METH_VARARGS,
     "layout(recs, lookback, frame_of) -> (records, first_lines, last_lines, missing, rows, "
     "others, claims, outside, duplicates, interleaved): a module's records grouped into "
     "instances and cut into checked frames, as kprobegen.report.frames.layout_py."},
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
    if (no_begin_str == NULL && (no_begin_str = PyUnicode_InternFromString(NO_BEGIN)) == NULL)
        return NULL;
    if (no_end_str == NULL && (no_end_str = PyUnicode_InternFromString(NO_END)) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
