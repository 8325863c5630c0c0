/*
 * kprobegen.report._logscan: the first stage of the report parser in C.
 *
 * scan(text, other_version, kmsg_rest) does what kprobegen/report/scan.py's scan_py does and
 * returns the same value: ({module: [(seq, type, fields, lineno), ...]}, {name: count},
 * prefixed lines, lines, [(lineno, why refused), ...], lines from a form that cannot tell
 * who wrote them, lines told by their syslog tag alone). In Python this per-line work
 * (finding the line, partition, split, int(), the tuple, the module's list) is most of a
 * parse's time; here it is little more than making the tuple and its strings (figures:
 * bench/README.md, parse_bench.py). Everything after this stage (instances, frames, Results)
 * stays in Python in kprobegen/report/, so there is one place where the protocol's meaning
 * lives.
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

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(text, other_version, kmsg_rest) -> (per_module, unrecognised, prefixed, lines, "
     "rejected, untold, tagged), "
     "or None when text is not stored one byte per character."},
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
    return PyModule_Create(&module);
}
