/* The sentence splitter's scan (summarizer/split.py) in C: the same candidates as its _BOUNDARY
 * regex, taken and rejected by the same rules, without the regex engine or a Python object per
 * candidate. split.py's own loop (`_split_paragraph`) stays the reference and the fallback where
 * this module isn't built; the tests hold the two to the same output.
 *
 * split_paragraph(part, sentences, endings, is_boundary, url_spans) appends the sentences of one
 * line of text to `sentences`: its whitespace collapsed (" ".join(part.split())), then split.
 *   endings      split.py's _ABBREVIATION_ENDINGS (a set of three-letter str);
 *   is_boundary  split.py's _is_boundary(text, mark, rest_end, end), called for the candidates the
 *                quick rules below can't settle (a period after an abbreviation, a number, an
 *                initial...): a few in a hundred;
 *   url_spans    split.py's _url_spans(paragraph): the (start, end) spans of its URLs, in order,
 *                called only when "www." or "://" is in it. Candidates inside them are skipped.
 *
 * Linear in the text, as the regex is: each character is looked at a bounded number of times, as
 * the regex engine would (a run of marks is taken whole, from its first mark only).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    int kind;
    const void *data;
    Py_ssize_t n;
} Text;

static inline Py_UCS4 at(const Text *t, Py_ssize_t i) { return PyUnicode_READ(t->kind, t->data, i); }

/* [.!?…] */
static inline int is_mark(Py_UCS4 c) { return c == '.' || c == '!' || c == '?' || c == 0x2026; }
/* ["'”’)\]] */
static inline int is_closer(Py_UCS4 c) {
    return c == '"' || c == '\'' || c == 0x201D || c == 0x2019 || c == ')' || c == ']';
}
/* [:;=8], [-'o^] and [()\[\]DPp/\\|*]: an emoticon's eyes, nose and mouth */
static inline int is_eyes(Py_UCS4 c) { return c == ':' || c == ';' || c == '=' || c == '8'; }
static inline int is_nose(Py_UCS4 c) { return c == '-' || c == '\'' || c == 'o' || c == '^'; }
static inline int is_mouth(Py_UCS4 c) {
    return c == '(' || c == ')' || c == '[' || c == ']' || c == 'D' || c == 'P' || c == 'p' || c == '/' ||
           c == '\\' || c == '|' || c == '*';
}
static inline int is_space(const Text *t, Py_ssize_t i) { return i < t->n && Py_UNICODE_ISSPACE(at(t, i)); }
static inline int is_ascii_upper(Py_UCS4 c) { return c >= 'A' && c <= 'Z'; }
static inline int is_ascii_lower(Py_UCS4 c) { return c >= 'a' && c <= 'z'; }

static Py_ssize_t skip_spaces(const Text *t, Py_ssize_t i) {
    while (is_space(t, i)) i++;
    return i;
}

/* The regex's `$` (no MULTILINE): the end, or just before a final newline. */
static inline int at_end(const Text *t, Py_ssize_t i) { return i == t->n || (i == t->n - 1 && at(t, i) == '\n'); }

/* Where an emoticon starting at `s` ends ([:;=8][-'o^]?[()\[\]DPp/\\|*]+ | <3 | \^_\^), or -1. The
 * mouth is taken whole: what follows the emoticon must be a space or the end, and a shorter mouth
 * is followed by more mouth. */
static Py_ssize_t emoticon_end(const Text *t, Py_ssize_t s) {
    if (s >= t->n) return -1;
    Py_UCS4 c = at(t, s);
    if (is_eyes(c)) {
        Py_ssize_t u = s + 1;
        if (u < t->n && is_nose(at(t, u))) u++;  /* no nose is also a mouth: dropping it can't help */
        if (u >= t->n || !is_mouth(at(t, u))) return -1;
        while (u < t->n && is_mouth(at(t, u))) u++;
        return u;
    }
    if (c == '<') return s + 1 < t->n && at(t, s + 1) == '3' ? s + 2 : -1;
    if (c == '^') return s + 2 < t->n && at(t, s + 1) == '_' && at(t, s + 2) == '^' ? s + 3 : -1;
    return -1;
}

typedef struct {
    Py_ssize_t mark;      /* the candidate's first character (group 1) */
    Py_ssize_t rest_end;  /* the end of its run of marks (group 2), or -1: an emoticon alone */
    Py_ssize_t end;       /* the match's end */
    int plain;            /* group 3: a lone period after a plain lowercase word */
} Candidate;

/* The first alternative at `i` (a mark): a run of marks, closers, maybe an emoticon, then space, a
 * capital or an opening quote, or the end. */
static int match_run(const Text *t, Py_ssize_t i, Candidate *m) {
    if (i > 0 && is_mark(at(t, i - 1))) return 0; /* only from a run's first mark */
    Py_ssize_t j = i + 1;
    while (j < t->n && is_mark(at(t, j))) j++;
    int plain = 0;
    if (j == i + 1 && at(t, i) == '.' && i >= 3 && is_ascii_lower(at(t, i - 3)) && is_ascii_lower(at(t, i - 2)) &&
        is_ascii_lower(at(t, i - 1))) {
        plain = 1; /* unless a period sits in the five characters before those letters */
        for (Py_ssize_t p = i - 8; p <= i - 4; p++)
            if (p >= 0 && at(t, p) == '.') plain = 0;
    }
    Py_ssize_t q = j;
    while (q < t->n && is_closer(at(t, q))) q++;
    Py_ssize_t end;
    Py_ssize_t e = emoticon_end(t, skip_spaces(t, q));
    if (e >= 0 && (e == t->n || is_space(t, e))) {
        end = skip_spaces(t, e);
    } else if (q == t->n || is_space(t, q)) {
        end = skip_spaces(t, q);
    } else if (is_ascii_upper(at(t, q)) || at(t, q) == 0x201C) {
        end = q;
    } else {
        /* Fewer closers, backtracking as the regex does: only a straight double quote, which is
         * both a closer and an opening quote, can end the match there (the last one in the run). */
        end = -1;
        for (Py_ssize_t p = q - 1; p >= j; p--)
            if (at(t, p) == '"') {
                end = p;
                break;
            }
        if (end < 0) return 0;
    }
    m->mark = i;
    m->rest_end = j;
    m->end = end;
    m->plain = plain;
    return 1;
}

/* The second alternative at `i`: an emoticon after a space standing in for the punctuation, before
 * a space and a capital, or the end. */
static int match_emoticon(const Text *t, Py_ssize_t i, Candidate *m) {
    if (i == 0 || !is_space(t, i - 1)) return 0;
    Py_ssize_t u = emoticon_end(t, i);
    if (u < 0) return 0;
    if (!at_end(t, u)) {
        Py_ssize_t v = skip_spaces(t, u);
        if (v == u || v >= t->n || !is_ascii_upper(at(t, v))) return 0;
    }
    m->mark = i;
    m->rest_end = -1;
    m->end = skip_spaces(t, u);
    m->plain = 0;
    return 1;
}

/* The next candidate at or after `from` (finditer's order), or 0. */
static int next_candidate(const Text *t, Py_ssize_t from, Candidate *m) {
    for (Py_ssize_t i = from; i < t->n; i++) {
        Py_UCS4 c = at(t, i);
        if (is_mark(c)) {
            if (match_run(t, i, m)) return 1;
        } else if (is_eyes(c) || c == '<' || c == '^') {
            if (match_emoticon(t, i, m)) return 1;
        }
    }
    return 0;
}

/* Appends text[start:end].strip() to `sentences` unless it is empty. */
static int append_stripped(PyObject *text, const Text *t, Py_ssize_t start, Py_ssize_t end, PyObject *sentences) {
    while (start < end && Py_UNICODE_ISSPACE(at(t, start))) start++;
    while (end > start && Py_UNICODE_ISSPACE(at(t, end - 1))) end--;
    if (start == end) return 0;
    PyObject *piece = PyUnicode_Substring(text, start, end);
    if (piece == NULL) return -1;
    int failed = PyList_Append(sentences, piece);
    Py_DECREF(piece);
    return failed;
}

/* 1 when the lowercase word before a plain period (its last three letters) ends an abbreviation. */
static int ends_abbreviation(PyObject *text, Py_ssize_t mark, PyObject *endings) {
    PyObject *letters = PyUnicode_Substring(text, mark - 3, mark);
    if (letters == NULL) return -1;
    int found = PySet_Contains(endings, letters);
    Py_DECREF(letters);
    return found;
}

/* 1 when candidate `m` ends a sentence, 0 if not, -1 on an error. */
static int ends_sentence(PyObject *text, const Text *t, const Candidate *m, PyObject *endings, PyObject *is_boundary) {
    if (m->rest_end < 0) return 1; /* an emoticon standing in for punctuation, before a capital */
    if (m->plain) {
        int abbreviation = ends_abbreviation(text, m->mark, endings);
        if (abbreviation < 0) return -1;
        /* after an ordinary word, only a comma keeps the sentence going */
        if (!abbreviation) return !(m->end < t->n && at(t, m->end) == ',');
    }
    PyObject *result = PyObject_CallFunction(is_boundary, "Onnn", text, m->mark, m->rest_end, m->end);
    if (result == NULL) return -1;
    int verdict = PyObject_IsTrue(result);
    Py_DECREF(result);
    return verdict;
}

static int read_span(PyObject *urls, Py_ssize_t index, Py_ssize_t *start, Py_ssize_t *end) {
    PyObject *span = PySequence_Fast_GET_ITEM(urls, index);
    if (!PyTuple_Check(span) || PyTuple_GET_SIZE(span) != 2) {
        PyErr_SetString(PyExc_TypeError, "urls must hold (start, end) tuples");
        return -1;
    }
    *start = PyLong_AsSsize_t(PyTuple_GET_ITEM(span, 0));
    *end = PyLong_AsSsize_t(PyTuple_GET_ITEM(span, 1));
    return PyErr_Occurred() ? -1 : 0;
}

/* " ".join(part.split()): `part` itself when that is already so (most lines). */
static PyObject *collapse_spaces(PyObject *part) {
    Text t = {PyUnicode_KIND(part), PyUnicode_DATA(part), PyUnicode_GET_LENGTH(part)};
    Py_ssize_t length = 0;
    Py_UCS4 maxchar = 0;
    int same = 1, after_word = 0, space_pending = 0;
    for (Py_ssize_t i = 0; i < t.n; i++) {
        Py_UCS4 c = at(&t, i);
        if (Py_UNICODE_ISSPACE(c)) {
            if (c != ' ' || !after_word || space_pending) same = 0; /* not one ASCII space between words */
            space_pending = after_word;
            continue;
        }
        if (space_pending) {
            length++;
            space_pending = 0;
            maxchar = maxchar < ' ' ? ' ' : maxchar;
        }
        length++;
        maxchar = c > maxchar ? c : maxchar;
        after_word = 1;
    }
    if (space_pending) same = 0; /* a trailing space */
    if (same) return Py_NewRef(part);
    PyObject *out = PyUnicode_New(length, maxchar);
    if (out == NULL) return NULL;
    int out_kind = PyUnicode_KIND(out);
    void *out_data = PyUnicode_DATA(out);
    Py_ssize_t written = 0;
    after_word = space_pending = 0;
    for (Py_ssize_t i = 0; i < t.n; i++) {
        Py_UCS4 c = at(&t, i);
        if (Py_UNICODE_ISSPACE(c)) {
            space_pending = after_word;
            continue;
        }
        if (space_pending) {
            PyUnicode_WRITE(out_kind, out_data, written++, ' ');
            space_pending = 0;
        }
        PyUnicode_WRITE(out_kind, out_data, written++, c);
        after_word = 1;
    }
    return out;
}

static PyObject *www, *scheme; /* "www." and "://": a paragraph without either has no URL */

static int has_url(PyObject *text) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), found = PyUnicode_Find(text, www, 0, n, 1);
    if (found == -1) found = PyUnicode_Find(text, scheme, 0, n, 1);
    return found == -2 ? -1 : found >= 0;
}

static int scan(PyObject *text, PyObject *sentences, PyObject *endings, PyObject *is_boundary, PyObject *url_spans) {
    Text t = {PyUnicode_KIND(text), PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text)};
    PyObject *urls = NULL;
    Py_ssize_t n_urls = 0, url = 0, url_start = 0, url_end = 0;
    int found = has_url(text);
    if (found < 0) return -1;
    if (found) {
        PyObject *spans = PyObject_CallOneArg(url_spans, text);
        if (spans == NULL) return -1;
        urls = PySequence_Fast(spans, "url_spans must return a sequence");
        Py_DECREF(spans);
        if (urls == NULL) return -1;
        n_urls = PySequence_Fast_GET_SIZE(urls);
        if (n_urls && read_span(urls, 0, &url_start, &url_end) < 0) goto error;
    }
    Py_ssize_t start = 0, from = 0;
    Candidate m;
    while (next_candidate(&t, from, &m)) {
        from = m.end;
        /* URLs and candidates both come in text order: drop the URLs that end before this one */
        while (url < n_urls && url_end <= m.mark) {
            if (++url < n_urls && read_span(urls, url, &url_start, &url_end) < 0) goto error;
        }
        if (url < n_urls && url_start <= m.mark) continue; /* inside a URL */
        int verdict = ends_sentence(text, &t, &m, endings, is_boundary);
        if (verdict < 0) goto error;
        if (!verdict) continue;
        if (append_stripped(text, &t, start, m.end, sentences) < 0) goto error;
        start = m.end;
    }
    if (append_stripped(text, &t, start, t.n, sentences) < 0) goto error;
    Py_XDECREF(urls);
    return 0;
error:
    Py_XDECREF(urls);
    return -1;
}

static PyObject *split_paragraph(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "split_paragraph(part, sentences, endings, is_boundary, url_spans)");
        return NULL;
    }
    PyObject *part = args[0], *sentences = args[1], *endings = args[2];
    if (!PyUnicode_Check(part) || !PyList_Check(sentences) || !PyAnySet_Check(endings)) {
        PyErr_SetString(PyExc_TypeError, "split_paragraph: part must be a str, sentences a list, endings a set");
        return NULL;
    }
    PyObject *text = collapse_spaces(part);
    if (text == NULL) return NULL;
    int failed = PyUnicode_GET_LENGTH(text) ? scan(text, sentences, endings, args[3], args[4]) : 0;
    Py_DECREF(text);
    if (failed) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"split_paragraph", (PyCFunction)(void (*)(void))split_paragraph, METH_FASTCALL,
     "split_paragraph(part, sentences, endings, is_boundary, url_spans): append the sentences of one line "
     "of text to `sentences`, as summarizer.split._split_paragraph does."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "summarizer._splitter", NULL, 0, methods};

PyMODINIT_FUNC PyInit__splitter(void) {
    www = PyUnicode_InternFromString("www.");
    scheme = PyUnicode_InternFromString("://");
    if (www == NULL || scheme == NULL) return NULL;
    return PyModule_Create(&module);
}
