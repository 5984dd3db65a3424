/* edge.tls_edge._edgehttp: the HTTP/1.1 proxy path's fast lane, one C call per message head.

   parse_request(data, pos, max_line, max_head) and parse_response(data, pos, max_head[, date, keep_alive]) read ONE
   complete message head starting at data[pos] and, when it is of the plain kind this lane takes, return it already
   rewritten for the other side (the headers the proxy forwards, in their order, as "Name: value\r\n" lines; for a
   response given ``date``, the whole downstream head and the body bytes that came with it; response_fields(data,
   pos, max_head, date) gives the same response as the field list of an HTTP/2 HEADERS frame, for a stream of
   edge/tls_edge/h2.py). For anything else they return None and the caller feeds the same bytes to httptools
   (llhttp) exactly as before: this lane never decides an error or a limit. It is deliberately narrower than
   llhttp (a strict subset; tests/test_edgehttp.py checks it against httptools, on a corpus and on mutations):

   request:  "GET" | "HEAD", SP, origin-form target of visible ASCII (no '#', no '\\', no quotes or brackets),
             SP "HTTP/1.1" CRLF; header lines  token ":" OWS value CRLF  with value bytes of visible ASCII, SP or
             HTAB, no trailing OWS; exactly one Host; no Content-Length, Transfer-Encoding, Upgrade, Expect,
             Proxy-Connection; at most one Connection, only "keep-alive" or "close" (returned as the keep-alive
             flag); no obs-fold; CRLF only (a bare CR or LF: None);
             every line at most max_line - 4 bytes and the head at most max_head bytes, all of it in data.
   response: "HTTP/1.1" SP 3DIGIT SP reason CRLF, status 200-599 but 204 and 304; the same header rules; exactly
             one Content-Length of 1-15 digits without a leading zero; no Transfer-Encoding, Upgrade, Proxy-Connection; Connection only
             as "keep-alive".

   No state, no allocation but the returned objects. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* tchar (RFC 9110 5.6.2) */
static unsigned char TCHAR[256];
/* value bytes this lane takes: visible ASCII, SP, HTAB */
static unsigned char VCHAR[256];
/* origin-form target bytes this lane takes */
static unsigned char TARGET[256];

static PyObject *S_GET, *S_HEAD;

static void init_tables(void)
{
    const char *extra = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++) {
        TCHAR[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   (c && strchr(extra, c) != NULL);
        VCHAR[c] = (c >= 0x20 && c <= 0x7e) || c == '\t';
        TARGET[c] = (c >= 0x21 && c <= 0x7e) && strchr("#\\\"<>^`{|}", c) == NULL;
    }
}

/* a[0:n] == lower[0:n], ASCII case-insensitively (lower: lower case, at least n bytes) */
static int ieqn(const char *a, Py_ssize_t n, const char *lower)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != (unsigned char)lower[i])
            return 0;
    }
    return 1;
}

static int ieq(const char *a, Py_ssize_t n, const char *lower)
{
    if ((Py_ssize_t)strlen(lower) != n)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != (unsigned char)lower[i])
            return 0;
    }
    return 1;
}

static int iprefix(const char *a, Py_ssize_t n, const char *lower)
{
    Py_ssize_t m = (Py_ssize_t)strlen(lower);
    if (n < m)
        return 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != (unsigned char)lower[i])
            return 0;
    }
    return 1;
}

/* what a header name means to this lane */
enum { H_KEEP, H_DROP, H_HOST, H_CONN, H_CL, H_DATE, H_REFUSE };

/* Names the lane looks at, with what they mean on a request and on a response: hop-by-hop (upstream.HOP_BY_HOP) and
   the forwarding headers a client may send (upstream.FORWARDING) are dropped; framing and upgrades are refused. */
typedef struct {
    const char *name;
    Py_ssize_t len;
    unsigned char req, resp;
} Name;

static Name NAMES[] = {
    {"transfer-encoding", 0, H_REFUSE, H_REFUSE}, {"upgrade", 0, H_REFUSE, H_REFUSE},
    {"proxy-connection", 0, H_REFUSE, H_REFUSE}, {"content-length", 0, H_REFUSE, H_CL},
    {"connection", 0, H_CONN, H_CONN}, {"host", 0, H_HOST, H_DROP}, {"date", 0, H_KEEP, H_DATE},
    {"expect", 0, H_REFUSE, H_KEEP},
    {"keep-alive", 0, H_DROP, H_DROP}, {"proxy-authenticate", 0, H_DROP, H_DROP},
    {"proxy-authorization", 0, H_DROP, H_DROP}, {"te", 0, H_DROP, H_DROP}, {"trailer", 0, H_DROP, H_DROP},
    {"trailers", 0, H_DROP, H_DROP},
    {"forwarded", 0, H_DROP, H_KEEP}, {"x-real-ip", 0, H_DROP, H_KEEP}, {"x-original-host", 0, H_DROP, H_KEEP},
    {"x-host", 0, H_DROP, H_KEEP}, {"x-original-url", 0, H_DROP, H_KEEP}, {"x-rewrite-url", 0, H_DROP, H_KEEP},
    {"x-client-ip", 0, H_DROP, H_KEEP}, {"true-client-ip", 0, H_DROP, H_KEEP},
    {"cf-connecting-ip", 0, H_DROP, H_KEEP}, {"client-ip", 0, H_DROP, H_KEEP},
    {"x-cluster-client-ip", 0, H_DROP, H_KEEP}, {"fastly-client-ip", 0, H_DROP, H_KEEP},
    {"x-original-forwarded-for", 0, H_DROP, H_KEEP}, {"x-proxyuser-ip", 0, H_DROP, H_KEEP},
    {NULL, 0, 0, 0}};

#define MAX_NAME 32
/* NAMES entries by name length (indexes into NAMES, -1 terminated) */
static signed char BY_LEN[MAX_NAME][8];

static void init_names(void)
{
    int fill[MAX_NAME] = {0};
    memset(BY_LEN, -1, sizeof BY_LEN);
    for (int i = 0; NAMES[i].name; i++) {
        Py_ssize_t n = (Py_ssize_t)strlen(NAMES[i].name);
        NAMES[i].len = n;
        BY_LEN[n][fill[n]++] = (signed char)i;
    }
}

static int classify(const char *n, Py_ssize_t len, int request)
{
    if (request && len >= 12 && iprefix(n, len, "x-forwarded-"))
        return H_DROP;
    if (len >= MAX_NAME)
        return H_KEEP;
    for (const signed char *i = BY_LEN[len]; *i >= 0; i++) {
        if (ieqn(n, len, NAMES[(int)*i].name))
            return request ? NAMES[(int)*i].req : NAMES[(int)*i].resp;
    }
    return H_KEEP;
}

/* One header line at p (end e): its name [*n, *nl), value [*v, *vl). Returns the position after its CRLF, or
   NULL when the line is not one this lane takes (or the data ends first). */
static const char *header_line(const char *p, const char *e, Py_ssize_t max_line, const char **n, Py_ssize_t *nl,
                               const char **v, Py_ssize_t *vl)
{
    const char *s = p;
    while (p < e && TCHAR[(unsigned char)*p])
        p++;
    if (p == s || p >= e || *p != ':')
        return NULL;
    *n = s;
    *nl = p - s;
    p++;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    const char *vs = p;
    while (p < e && VCHAR[(unsigned char)*p])
        p++;
    if (p + 1 >= e || p[0] != '\r' || p[1] != '\n')
        return NULL;
    if (p > vs && (p[-1] == ' ' || p[-1] == '\t'))
        return NULL;  /* trailing OWS */
    if (p - s > max_line)
        return NULL;
    *v = vs;
    *vl = p - vs;
    return p + 2;
}

/* the rewritten head: in a buffer on the stack, on the heap once it outgrows it */
typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    char stack[2048];
} Out;

static void out_init(Out *o)
{
    o->buf = o->stack;
    o->len = 0;
    o->cap = sizeof o->stack;
}

static void out_free(Out *o)
{
    if (o->buf != o->stack)
        PyMem_Free(o->buf);
}

static int out_put(Out *o, const char *s, Py_ssize_t n)
{
    if (o->len + n > o->cap) {
        Py_ssize_t cap = o->cap * 2 + n;
        char *b = o->buf == o->stack ? PyMem_Malloc(cap) : PyMem_Realloc(o->buf, cap);
        if (b == NULL)
            return -1;
        if (o->buf == o->stack)
            memcpy(b, o->stack, o->len);
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return 0;
}

static int out_header(Out *o, const char *n, Py_ssize_t nl, const char *v, Py_ssize_t vl)
{
    if (v == n + nl + 2 && n[nl + 1] == ' ')  /* already "Name: value\r\n": the line as it came */
        return out_put(o, n, nl + 2 + vl + 2);
    return out_put(o, n, nl) || out_put(o, ": ", 2) || out_put(o, v, vl) || out_put(o, "\r\n", 2);
}

static int get_args(PyObject *args, const char **data, Py_ssize_t *size, Py_ssize_t *pos, Py_ssize_t *max_line,
                    Py_ssize_t *max_head, int request)
{
    PyObject *b;
    if (request) {
        if (!PyArg_ParseTuple(args, "Onnn", &b, pos, max_line, max_head))
            return -1;
    } else {
        if (!PyArg_ParseTuple(args, "Onn", &b, pos, max_head))
            return -1;
        *max_line = *max_head;
    }
    if (!PyBytes_Check(b)) {
        PyErr_SetString(PyExc_TypeError, "data must be bytes");
        return -1;
    }
    *data = PyBytes_AS_STRING(b);
    *size = PyBytes_GET_SIZE(b);
    if (*pos < 0 || *pos > *size) {
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        return -1;
    }
    return 0;
}

static PyObject *parse_request(PyObject *self, PyObject *args)
{
    const char *data;
    Py_ssize_t size, pos, max_line, max_head;
    if (get_args(args, &data, &size, &pos, &max_line, &max_head, 1) < 0)
        return NULL;
    const char *b = data + pos, *e = data + size;
    if (e - b > max_head)
        e = b + max_head;  /* the whole head must fit in max_head */
    max_line -= 4;
    const char *p = b;
    PyObject *method;
    if (e - p >= 4 && memcmp(p, "GET ", 4) == 0) {
        method = S_GET;
        p += 4;
    } else if (e - p >= 5 && memcmp(p, "HEAD ", 5) == 0) {
        method = S_HEAD;
        p += 5;
    } else {
        Py_RETURN_NONE;
    }
    const char *u = p;
    if (p >= e || *p != '/')
        Py_RETURN_NONE;
    while (p < e && TARGET[(unsigned char)*p])
        p++;
    const char *ue = p;
    if (e - p < 11 || memcmp(p, " HTTP/1.1\r\n", 11) != 0 || p + 9 - b > max_line)
        Py_RETURN_NONE;
    p += 11;
    const char *host = NULL;
    Py_ssize_t host_len = 0;
    int hosts = 0, conns = 0, keep_alive = 1;
    Out o;
    out_init(&o);
    for (;;) {
        if (e - p >= 2 && p[0] == '\r' && p[1] == '\n') {
            p += 2;
            break;
        }
        const char *n, *v;
        Py_ssize_t nl, vl;
        p = header_line(p, e, max_line, &n, &nl, &v, &vl);
        if (p == NULL)
            goto none;
        switch (classify(n, nl, 1)) {
        case H_KEEP:
            if (out_header(&o, n, nl, v, vl) < 0) {
                out_free(&o);
                return PyErr_NoMemory();
            }
            break;
        case H_HOST:
            host = v;
            host_len = vl;
            hosts++;
            break;
        case H_CONN:
            if (++conns > 1)
                goto none;
            if (ieq(v, vl, "close"))
                keep_alive = 0;
            else if (!ieq(v, vl, "keep-alive"))
                goto none;
            break;
        case H_DROP:
            break;
        default:
            goto none;
        }
    }
    if (hosts != 1)
        goto none;
    PyObject *r = PyTuple_New(6);
    if (r != NULL) {
        Py_INCREF(method);
        PyTuple_SET_ITEM(r, 0, PyLong_FromSsize_t(p - data));
        PyTuple_SET_ITEM(r, 1, method);
        PyTuple_SET_ITEM(r, 2, PyBytes_FromStringAndSize(u, ue - u));
        PyTuple_SET_ITEM(r, 3, PyBytes_FromStringAndSize(host, host_len));
        PyTuple_SET_ITEM(r, 4, PyBytes_FromStringAndSize(o.buf, o.len));
        PyTuple_SET_ITEM(r, 5, PyBool_FromLong(keep_alive));
        if (!PyTuple_GET_ITEM(r, 0) || !PyTuple_GET_ITEM(r, 2) || !PyTuple_GET_ITEM(r, 3) || !PyTuple_GET_ITEM(r, 4))
            Py_CLEAR(r);
    }
    out_free(&o);
    return r;
none:
    out_free(&o);
    Py_RETURN_NONE;
}

/* What scan_response found in a response head it takes. */
typedef struct {
    const char *end;      /* after the head's empty line */
    int status;
    long long length;     /* Content-Length */
    const char *cl;       /* its digits, as sent */
    Py_ssize_t cl_len;
    int has_date;
} Resp;

/* A name lower-cased (HTTP/2 field names are lower case, RFC 9113 8.2.1). */
static PyObject *lower_name(const char *n, Py_ssize_t nl)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, nl);
    if (b == NULL)
        return NULL;
    char *d = PyBytes_AS_STRING(b);
    for (Py_ssize_t i = 0; i < nl; i++) {
        char c = n[i];
        d[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    return b;
}

/* Append (name, value) to list (a new tuple; name lower-cased when lower). */
static int add_field(PyObject *list, const char *n, Py_ssize_t nl, const char *v, Py_ssize_t vl, int lower)
{
    PyObject *name = lower ? lower_name(n, nl) : PyBytes_FromStringAndSize(n, nl);
    PyObject *value = name != NULL ? PyBytes_FromStringAndSize(v, vl) : NULL;
    PyObject *t = value != NULL ? PyTuple_Pack(2, name, value) : NULL;
    Py_XDECREF(name);
    Py_XDECREF(value);
    if (t == NULL)
        return -1;
    int rc = PyList_Append(list, t);
    Py_DECREF(t);
    return rc;
}

/* The one response-head parser of this lane: the head at data[pos] (at most max_head bytes) when it is of the plain
   kind (see the top of this file). The header lines it forwards go to ``o`` as "Name: value\r\n" (the status line
   first, as it came) or, when ``o`` is NULL, to ``fields`` as (lower-case name, value) after a (":status", code).
   Content-Length is left out of both (res->cl). Returns 1 (taken), 0 (not this lane's: nothing decided) or -1 (no
   memory). */
static int scan_response(const char *data, Py_ssize_t size, Py_ssize_t pos, Py_ssize_t max_head, Out *o,
                         PyObject *fields, Resp *res)
{
    const char *b = data + pos, *e = data + size;
    if (e - b > max_head)
        e = b + max_head;
    Py_ssize_t max_line = max_head;
    const char *p = b;
    if (e - p < 13 || memcmp(p, "HTTP/1.1 ", 9) != 0)
        return 0;
    p += 9;
    if (!(p[0] >= '2' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9' && p[3] == ' '))
        return 0;
    int status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    if (status == 204 || status == 304)
        return 0;
    const char *code = p;
    p += 4;
    const char *rs = p;
    while (p < e && VCHAR[(unsigned char)*p])
        p++;
    if (p == rs || e - p < 2 || p[0] != '\r' || p[1] != '\n')
        return 0;
    p += 2;
    if (o != NULL ? out_put(o, b, p - b) < 0 : add_field(fields, ":status", 7, code, 3, 0) < 0)
        return -1;
    res->length = -1;
    res->has_date = 0;
    res->cl = NULL;
    res->cl_len = 0;
    for (;;) {
        if (e - p >= 2 && p[0] == '\r' && p[1] == '\n') {
            p += 2;
            break;
        }
        const char *n, *v;
        Py_ssize_t nl, vl;
        p = header_line(p, e, max_line, &n, &nl, &v, &vl);
        if (p == NULL)
            return 0;
        switch (classify(n, nl, 0)) {
        case H_DATE:
            res->has_date = 1;
            /* fall through */
        case H_KEEP:
            if (o != NULL ? out_header(o, n, nl, v, vl) < 0 : add_field(fields, n, nl, v, vl, 1) < 0)
                return -1;
            break;
        case H_CL:
            if (res->cl != NULL || vl < 1 || vl > 15 || (vl > 1 && v[0] == '0'))
                return 0; /* a leading zero ("00", "05"): httptools' path writes the number back normalised */
            res->length = 0;
            for (Py_ssize_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return 0;
                res->length = res->length * 10 + (v[i] - '0');
            }
            res->cl = v;
            res->cl_len = vl;
            break;
        case H_CONN:
            if (!ieq(v, vl, "keep-alive"))
                return 0;
            break;
        case H_DROP:
            break;
        default:
            return 0;
        }
    }
    if (res->cl == NULL)
        return 0;
    res->end = p;
    res->status = status;
    return 1;
}

static int response_args(PyObject *bytes, Py_ssize_t pos, PyObject *date)
{
    if (date != Py_None && !PyBytes_Check(date)) {
        PyErr_SetString(PyExc_TypeError, "date must be bytes or None");
        return -1;
    }
    if (pos < 0 || pos > PyBytes_GET_SIZE(bytes)) {
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        return -1;
    }
    return 0;
}

static PyObject *parse_response(PyObject *self, PyObject *args)
{
    Py_ssize_t pos, max_head;
    PyObject *bytes, *date = Py_None;
    int keep_alive = 1;
    if (!PyArg_ParseTuple(args, "Snn|Op", &bytes, &pos, &max_head, &date, &keep_alive))
        return NULL;
    if (response_args(bytes, pos, date) < 0)
        return NULL;
    const char *data = PyBytes_AS_STRING(bytes);
    Py_ssize_t size = PyBytes_GET_SIZE(bytes);
    Out o;
    out_init(&o);
    Resp res;
    int rc = scan_response(data, size, pos, max_head, &o, NULL, &res);
    if (rc <= 0)
        goto done;
    const char *p = res.end;
    if (out_put(&o, "Content-Length: ", 16) || out_put(&o, res.cl, res.cl_len) || out_put(&o, "\r\n", 2))
        goto nomem;
    Py_ssize_t took = 0;  /* body bytes of data in the result (with date) */
    PyObject *out;
    if (date != Py_None) {
        /* the whole downstream head, then the body bytes of this read */
        if ((!res.has_date && (out_put(&o, "Date: ", 6) ||
                               out_put(&o, PyBytes_AS_STRING(date), PyBytes_GET_SIZE(date)) ||
                               out_put(&o, "\r\n", 2))) ||
            (!keep_alive && out_put(&o, "Connection: close\r\n", 19)) || out_put(&o, "\r\n", 2))
            goto nomem;
        took = (data + size) - p;
        if (took > res.length)
            took = (Py_ssize_t)res.length;
        out = PyBytes_FromStringAndSize(NULL, o.len + took);
        if (out != NULL) {
            memcpy(PyBytes_AS_STRING(out), o.buf, o.len);
            memcpy(PyBytes_AS_STRING(out) + o.len, p, took);
        }
    } else {
        out = PyBytes_FromStringAndSize(o.buf, o.len);
    }
    if (out == NULL) {
        out_free(&o);
        return NULL;
    }
    PyObject *r = PyTuple_New(date != Py_None ? 6 : 5);
    if (r != NULL) {
        PyObject *flag = res.has_date ? Py_True : Py_False;
        Py_INCREF(flag);
        PyTuple_SET_ITEM(r, 0, PyLong_FromSsize_t(p - data));
        PyTuple_SET_ITEM(r, 1, PyLong_FromLong(res.status));
        PyTuple_SET_ITEM(r, 2, out);
        PyTuple_SET_ITEM(r, 3, PyLong_FromLongLong(res.length));
        PyTuple_SET_ITEM(r, 4, flag);
        if (date != Py_None)
            PyTuple_SET_ITEM(r, 5, PyLong_FromSsize_t(took));
        if (!PyTuple_GET_ITEM(r, 0) || !PyTuple_GET_ITEM(r, 1) || !PyTuple_GET_ITEM(r, 3) ||
            (date != Py_None && !PyTuple_GET_ITEM(r, 5)))
            Py_CLEAR(r);
    } else {
        Py_DECREF(out);
    }
    out_free(&o);
    return r;
done:
    out_free(&o);
    if (rc < 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
nomem:
    out_free(&o);
    return PyErr_NoMemory();
}

/* The same lane for an HTTP/2 client: the response head as the field list of its HEADERS frame. */
static PyObject *response_fields(PyObject *self, PyObject *args)
{
    Py_ssize_t pos, max_head;
    PyObject *bytes, *date;
    if (!PyArg_ParseTuple(args, "SnnO", &bytes, &pos, &max_head, &date))
        return NULL;
    if (response_args(bytes, pos, date) < 0)
        return NULL;
    const char *data = PyBytes_AS_STRING(bytes);
    Py_ssize_t size = PyBytes_GET_SIZE(bytes);
    PyObject *fields = PyList_New(0);
    if (fields == NULL)
        return NULL;
    Resp res;
    int rc = scan_response(data, size, pos, max_head, NULL, fields, &res);
    if (rc <= 0) {
        Py_DECREF(fields);
        if (rc < 0)
            return PyErr_Occurred() ? NULL : PyErr_NoMemory();
        Py_RETURN_NONE;
    }
    if (add_field(fields, "content-length", 14, res.cl, res.cl_len, 0) < 0 ||
        (!res.has_date && date != Py_None &&
         add_field(fields, "date", 4, PyBytes_AS_STRING(date), PyBytes_GET_SIZE(date), 0) < 0)) {
        Py_DECREF(fields);
        return NULL;
    }
    Py_ssize_t end = res.end - data;
    Py_ssize_t took = size - end;
    if (took > res.length)
        took = (Py_ssize_t)res.length;
    return Py_BuildValue("(niNLn)", end, res.status, fields, res.length, took);
}

/* The request of an HTTP/2 stream (the field list nghttp2 decoded and checked: lower-case names, pseudo-header
   fields first and valid, no connection-specific fields) as the proxy forwards it over HTTP/1.1: the pseudo-header
   fields, ``host``, ``content-length``, and the header lines the origin gets (content-length among them), in their
   order, with ``host``, the hop-by-hop, Expect and forwarding ones dropped as on HTTP/1.1 and the ``cookie``
   crumbs joined into one line with "; ", last (RFC 9113 8.2.3). ``too_long``: a field longer than max_line as a header line ("name: value\r\n"). */
static PyObject *request_fields(PyObject *self, PyObject *args)
{
    PyObject *fields;
    Py_ssize_t max_line;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &fields, &max_line))
        return NULL;
    PyObject *method = Py_None, *path = Py_None, *authority = Py_None, *host = Py_None, *cl = Py_None;
    int too_long = 0, cookies = 0;
    Out o, ck;
    out_init(&o);
    out_init(&ck);
    Py_ssize_t n = PyList_GET_SIZE(fields);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(fields, i);
        PyObject *nb, *vb;
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2 || !PyBytes_Check(nb = PyTuple_GET_ITEM(t, 0)) ||
            !PyBytes_Check(vb = PyTuple_GET_ITEM(t, 1))) {
            PyErr_SetString(PyExc_TypeError, "fields must be (bytes, bytes) pairs");
            goto fail;
        }
        const char *nm = PyBytes_AS_STRING(nb), *v = PyBytes_AS_STRING(vb);
        Py_ssize_t nl = PyBytes_GET_SIZE(nb), vl = PyBytes_GET_SIZE(vb);
        if (nl + vl + 4 > max_line)
            too_long = 1;
        if (nl > 0 && nm[0] == ':') {
            if (nl == 7 && memcmp(nm, ":method", 7) == 0)
                method = vb;
            else if (nl == 5 && memcmp(nm, ":path", 5) == 0)
                path = vb;
            else if (nl == 10 && memcmp(nm, ":authority", 10) == 0)
                authority = vb;
            continue; /* :scheme, :protocol (extended CONNECT: not enabled) */
        }
        if (nl == 6 && memcmp(nm, "cookie", 6) == 0) {
            if ((cookies++ && out_put(&ck, "; ", 2) < 0) || out_put(&ck, v, vl) < 0)
                goto nomem;
            continue;
        }
        switch (classify(nm, nl, 1)) {
        case H_HOST:
            host = vb;
            break;
        case H_KEEP:
            if (out_header(&o, nm, nl, v, vl) < 0)
                goto nomem;
            break;
        default:
            if (nl == 14 && memcmp(nm, "content-length", 14) == 0) { /* nghttp2 holds the DATA frames to it */
                cl = vb;
                if (out_header(&o, nm, nl, v, vl) < 0)
                    goto nomem;
            }
            break; /* hop-by-hop, forwarding, Expect */
        }
    }
    if (cookies && (out_put(&o, "cookie: ", 8) < 0 || out_put(&o, ck.buf, ck.len) < 0 || out_put(&o, "\r\n", 2) < 0))
        goto nomem;
    PyObject *r = Py_BuildValue("(OOOOy#OO)", method, path, authority, host, o.buf, o.len, cl,
                                too_long ? Py_True : Py_False);
    out_free(&o);
    out_free(&ck);
    return r;
nomem:
    PyErr_NoMemory();
fail:
    out_free(&o);
    out_free(&ck);
    return NULL;
}

static PyMethodDef methods[] = {
    {"request_fields", request_fields, METH_VARARGS,
     "request_fields(fields, max_line) -> (method, path, authority, host, forwarded_headers, content_length, "
     "too_long): an HTTP/2 stream's request (nghttp2's field list) as the proxy forwards it (None: absent)"},
    {"parse_request", parse_request, METH_VARARGS,
     "parse_request(data, pos, max_line, max_head) -> (end, method, target, host, forwarded_headers, keep_alive) | None"},
    {"parse_response", parse_response, METH_VARARGS,
     "parse_response(data, pos, max_head[, date, keep_alive]) -> (end, status, head_without_date_and_end, "
     "content_length, has_date) | None; with date (the Date value to add when the origin sent none): (end, status, "
     "the whole downstream head and the body bytes of data, content_length, has_date, body bytes taken) | None"},
    {"response_fields", response_fields, METH_VARARGS,
     "response_fields(data, pos, max_head, date) -> (end, status, fields, content_length, took) | None: the same "
     "lane for an HTTP/2 client: fields are (lower-case name, value) pairs, (':status', code) first, then the "
     "forwarded headers, content-length and (unless the origin sent one) date; took: body bytes in data[end:]"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_edgehttp", "The HTTP/1.1 proxy path's fast lane.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__edgehttp(void)
{
    init_tables();
    init_names();
    S_GET = PyBytes_FromString("GET");
    S_HEAD = PyBytes_FromString("HEAD");
    if (S_GET == NULL || S_HEAD == NULL)
        return NULL;
    return PyModule_Create(&module);
}
