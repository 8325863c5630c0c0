/*
 * kprobegen._logscan: the first stage of the report parser in C.
 *
 * scan(text, other_version, kmsg_rest) does what kprobegen/report.py's _scan_py does and
 * returns the same value: ({module: [(seq, type, fields, lineno), ...]}, {name: count},
 * prefixed lines, lines). Python spends about 1 us per protocol line on this (finding the
 * line, partition, split, int(), the tuple, the module's list); here it is the tuple and its
 * strings, ~0.15 us. Everything after this stage (instances, frames, Results) stays in
 * report.py, so there is one place where the protocol's meaning lives.
 *
 * Rules kept from _scan_py, each checked by tests/test_logscan.py against it:
 * - the caller has removed every '\r' (CRLF logs), lines end at '\n', numbered from 1;
 * - a protocol line holds "kprobegen/1 " anywhere (after a timestamp, a syslog header, a
 *   /dev/kmsg "PRI,SEQ,TS,FLAGS;" header ...); the first occurrence counts;
 * - a line that holds "kprobegen/" but not "kprobegen/1 " goes to other_version(line,
 *   unrecognised) (another protocol version is counted there);
 * - a line whose text before the prefix starts with a space or tab is a /dev/kmsg
 *   continuation line: skipped;
 * - text before the prefix ending in ';' in a line holding '\\' goes through kmsg_rest(line,
 *   rest), which undoes /dev/kmsg's \xHH escaping when the line has a /dev/kmsg header;
 * - the rest splits like rest.split(" ", 3): MODULE SEQ TYPE [FIELDS]; fewer parts count as
 *   "(no module, SEQ or type)"; a MODULE not matching [A-Za-z_][A-Za-z0-9_]* or a SEQ that
 *   is not ASCII digits counts as "(bad module name or SEQ)".
 *
 * Only text stored one byte per character (ASCII or Latin-1: what bytes decoded as Latin-1
 * give, and what almost every str log is) is scanned here; scan() returns None for wider
 * strings and the caller uses _scan_py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define PREFIX "kprobegen/"
#define PREFIX_LEN 10
#define PREFIX1 "kprobegen/1 "
#define PREFIX1_LEN 12

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
    PyObject *other_version;    /* callables from report.py */
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

/* SEQ: ASCII digits only (str.isdigit() also takes e.g. '²', which int() then refuses). */
static PyObject *seq_int(const char *s, Py_ssize_t n)
{
    if (n == 0)
        return Py_None;
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return Py_None;
    if (n <= 18) {
        long long v = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            v = v * 10 + (s[i] - '0');
        return PyLong_FromLongLong(v);
    }
    /* 19 digits or more may not fit a long long: Python's int takes any length, as int(seq) */
    char *copy = PyMem_Malloc(n + 1);
    if (copy == NULL)
        return PyErr_NoMemory();
    memcpy(copy, s, n);
    copy[n] = '\0';
    PyObject *v = PyLong_FromString(copy, NULL, 10);
    PyMem_Free(copy);
    return v;
}

/* One protocol record from REST (the text after "kprobegen/1 "). 0 or -1 on error. */
static int record(struct scan *sc, const char *rest, Py_ssize_t n, Py_ssize_t lineno)
{
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
    while (p && (eol - p < PREFIX1_LEN || memcmp(p, PREFIX1, PREFIX1_LEN) != 0))
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
    if (p > start) {
        if (*start == ' ' || *start == '\t')
            return 0;               /* a /dev/kmsg continuation (dictionary) line */
        if (p[-1] == ';' && memchr(start, '\\', eol - start)) {
            /* maybe /dev/kmsg's \xHH escaping: report.py decides and undoes it */
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
            int rc = record(sc, PyUnicode_DATA(r), PyUnicode_GET_LENGTH(r), lineno);
            sc->ascii = ascii;
            Py_DECREF(r);
            return rc;
        }
    }
    return record(sc, p + PREFIX1_LEN, eol - p - PREFIX1_LEN, lineno);
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
    if (!sc.per_module || !sc.bad_modules || !sc.unrecognised
            || scan_lines(&sc, buf, buf + PyUnicode_GET_LENGTH(text), &nlines) < 0)
        goto done;

    /* every prefixed line is a record or counted as unrecognised */
    Py_ssize_t prefixed = sc.records;
    PyObject *key, *value;
    Py_ssize_t i = 0;
    while (PyDict_Next(sc.unrecognised, &i, &key, &value)) {
        Py_ssize_t v = PyLong_AsSsize_t(value);
        if (v == -1 && PyErr_Occurred())
            goto done;
        prefixed += v;
    }
    out = Py_BuildValue("(OOnn)", sc.per_module, sc.unrecognised, prefixed, nlines);
done:
    for (int j = 0; j < sc.ncache; j++)
        Py_DECREF(sc.cache[j].name);
    Py_XDECREF(sc.per_module);
    Py_XDECREF(sc.bad_modules);
    Py_XDECREF(sc.unrecognised);
    return out;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(text, other_version, kmsg_rest) -> (per_module, unrecognised, prefixed, lines), "
     "or None when text is not stored one byte per character."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kprobegen._logscan",
    "The report parser's line scanner in C (see kprobegen/report.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__logscan(void)
{
    for (size_t i = 0; i < NTYPES; i++) {
        if (type_strs[i] == NULL) {
            type_strs[i] = PyUnicode_InternFromString(known_types[i]);
            if (type_strs[i] == NULL)
                return NULL;
        }
    }
    return PyModule_Create(&module);
}
