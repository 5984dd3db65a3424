/*
 * edge.tls_edge._edgeh2: the server side of one HTTP/2 connection over libnghttp2, sans I/O (edge/tls_edge/h2.py).
 *
 * Why: python-hyper's pure-Python h2 cost ~200 us of CPU per request (HPACK, framing, validation); nghttp2 is the C
 * library behind curl, Apache httpd and Node. Python keeps the decisions (routing, the proxy, timeouts); this type
 * only turns bytes into a compact list of events and responses into bytes.
 *
 * Public surface:
 *   Session(max_streams, header_table, stream_window, conn_window, max_head, max_resets, max_controls,
 *           flood_window)
 *   Session.feed(data) -> list | ()    the client's bytes in; events out, each a 3-tuple (kind, stream_id, x):
 *       EV_REQUEST       x = [(name, value), ...] (bytes; pseudo-headers first), a body follows
 *       EV_REQUEST_END   the same, END_STREAM on the headers (no body)
 *       EV_DATA          x = bytes of request body (acknowledge with consume() once the origin took them)
 *       EV_END           the client's END_STREAM (after DATA, or on trailers; trailers are dropped)
 *       EV_CLOSED        x = error code; the stream is gone (0: both sides ended; else reset by either side)
 *       EV_GOAWAY        x = error code; the client said goodbye
 *       EV_CALM          x = reason (str); a flood limit: GOAWAY(ENHANCE_YOUR_CALM) is queued, close after send()
 *       EV_ERROR         x = reason (str); a protocol error: nghttp2's GOAWAY is queued, close after send()
 *     Events of send() come with the next events(): EV_CLOSED when our END_STREAM or RST_STREAM closes a stream,
 *     EV_ERROR "session over" once nothing more can be sent or received (after a GOAWAY either way).
 *   Session.events() -> list | ()      events produced by send() (and not yet taken)
 *   Session.submit_response(stream_id, headers, end_stream) -> bool   False: the stream is gone
 *   Session.submit_data(stream_id, data, end_stream[, start, stop]) -> int  bytes of the stream queued here (not
 *                                      yet framed), -1 when the stream is gone; data[start:stop] is queued (a bytes
 *                                      object is held, not copied). The queue is sent as the client's windows allow.
 *   Session.pending(stream_id) -> int  bytes of the stream still queued (what the windows did not allow yet)
 *   Session.rst_stream(stream_id, code), Session.consume(stream_id, n) (WINDOW_UPDATE: request body taken)
 *   Session.goaway(code, terminate)    terminate=False: graceful (last stream = the last one processed)
 *   Session.send() -> bytes            the frames nghttp2 has ready, one buffer of about 64 KiB at most
 *   Session.more -> bool               send() stopped there: call it again for the rest
 *   Session.want_io -> bool            False once the session is over (GOAWAY sent/received and nothing left)
 *   Session.block, Session.block_seq   bytes of a header block still incomplete (0: none), and a counter of blocks
 *
 * Limits: SETTINGS_MAX_CONCURRENT_STREAMS is enforced here per stream (RST_STREAM(REFUSED_STREAM), as nginx does;
 * nghttp2 1.52 makes one stream too many a connection error, so it is announced to the client under an id nghttp2
 * ignores and rewritten in the first SETTINGS frame sent); the decoded header list against max_head; a frame-header
 * scanner ahead of nghttp2 caps a header block's encoded size across CONTINUATION frames and counts RST_STREAM
 * (and refused streams) and control frames (SETTINGS, PING, PRIORITY, empty DATA/HEADERS/CONTINUATION) per
 * flood_window seconds. nghttp2's own limits are set too: max SETTINGS entries, outbound ACK queue, stream reset
 * rate limit, CONTINUATION count (Debian's 1.52.0-1+deb12u3 has the last two).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include <time.h>
#include <nghttp2/nghttp2.h>

enum { EV_REQUEST = 1, EV_REQUEST_END, EV_DATA, EV_END, EV_CLOSED, EV_GOAWAY, EV_CALM, EV_ERROR };

#define SETTINGS_PLACEHOLDER 0xf0e3 /* an id nghttp2 ignores; becomes MAX_CONCURRENT_STREAMS (3) on the wire */
#define PREFACE_LEN 24
/* one send() gives at most about this much (one frame more when it starts empty): its bytes object, the TLS
   records made of it and their bytes stay below malloc's mmap threshold (128 KiB), so a connection that answers
   megabytes reuses the same heap memory instead of mapping fresh pages (page faults) for every write */
#define SEND_CHUNK 65536

typedef struct {
    PyObject *b;         /* a bytes object; its bytes [off, end) are still to go */
    size_t off, end;
} Chunk;

typedef struct StreamData {
    struct StreamData *prev, *next; /* every live one, freed on dealloc (nghttp2_session_del calls no callback) */
    int32_t sid;
    int announced;       /* EV_REQUEST went to Python */
    int eof;             /* END_STREAM once the queue is out */
    int has_provider;
    size_t hsize;        /* decoded header list size (RFC 9113 6.5.2 accounting) */
    PyObject *headers;   /* list being built, until EV_REQUEST */
    /* response bytes not framed yet: the bytes objects given to submit_data, held (not copied) until their DATA
       frames are written into send()'s buffer: q[qh:qn]; pending bytes in all */
    Chunk *q;
    Py_ssize_t qh, qn, qcap;
    size_t pending;
} StreamData;

typedef struct {
    PyObject_HEAD
    nghttp2_session *s;
    PyObject *events;    /* list or NULL */
    StreamData *streams;
    Py_ssize_t nopen;
    uint32_t max_streams;
    size_t max_head;
    long max_resets, max_controls;
    double flood_window;
    const char *calm;    /* a limit tripped inside a callback */
    int settings_patched;
    int over;            /* "session over" reported */
    int in_cb_error;     /* a Python error inside a callback (memory) */
    /* frame scanner */
    int preface;
    unsigned char fhead[9];
    int fhead_len;
    size_t skip;
    Py_ssize_t block;
    Py_ssize_t block_seq;
    long resets, controls;
    double win_start;
    /* send() in progress: the bytes object being filled (NULL otherwise), up to about SEND_CHUNK bytes; more: frames
       were left for the next send() because this one was full */
    PyObject *out;
    size_t out_len, out_cap;
    char more;
    size_t pending;      /* response bytes queued in all streams (send()'s first guess at its size) */
} SessionObject;

static PyObject *Error;
static PyObject *EMPTY; /* () */


static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int push_event(SessionObject *self, int kind, int32_t sid, PyObject *x) /* steals x */
{
    if (x == NULL) {
        self->in_cb_error = 1;
        return -1;
    }
    if (self->events == NULL) {
        self->events = PyList_New(0);
        if (self->events == NULL) {
            Py_DECREF(x);
            self->in_cb_error = 1;
            return -1;
        }
    }
    PyObject *t = PyTuple_New(3);
    if (t == NULL) {
        Py_DECREF(x);
        self->in_cb_error = 1;
        return -1;
    }
    PyTuple_SET_ITEM(t, 0, PyLong_FromLong(kind)); /* small ints: cached */
    PyTuple_SET_ITEM(t, 1, PyLong_FromLong(sid));
    PyTuple_SET_ITEM(t, 2, x);
    int r = PyList_Append(self->events, t);
    Py_DECREF(t);
    if (r < 0)
        self->in_cb_error = 1;
    return r;
}

static void stream_free(SessionObject *self, StreamData *st)
{
    if (st->prev)
        st->prev->next = st->next;
    else
        self->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    Py_XDECREF(st->headers);
    for (Py_ssize_t i = st->qh; i < st->qn; i++)
        Py_DECREF(st->q[i].b);
    PyMem_Free(st->q);
    self->pending -= st->pending;
    PyMem_Free(st);
    self->nopen--;
}

/* -- flood accounting (the scanner and refused streams) ------------------------------------------------------ */
static const char *flood_check(SessionObject *self)
{
    if (self->resets <= self->max_resets && self->controls <= self->max_controls)
        return NULL;
    double now = now_mono();
    if (now - self->win_start >= self->flood_window) {
        self->win_start = now;
        self->resets = self->controls = 0;
        return NULL;
    }
    return self->resets > self->max_resets ? "too many streams reset (rapid reset)"
                                           : "too many control frames (SETTINGS/PING/PRIORITY/empty frames)";
}

/* Walk the frame headers of data (before nghttp2 buffers anything). Returns why the connection must stop, or NULL. */
static const char *scan(SessionObject *self, const unsigned char *data, size_t n)
{
    size_t pos = 0;
    if (self->preface) {
        size_t k = (size_t)self->preface < n ? (size_t)self->preface : n;
        self->preface -= (int)k;
        pos = k;
    }
    while (pos < n) {
        if (self->skip) {
            size_t k = self->skip < n - pos ? self->skip : n - pos;
            self->skip -= k;
            pos += k;
            continue;
        }
        const unsigned char *h;
        size_t need = 9 - (size_t)self->fhead_len;
        if (n - pos < need) {
            memcpy(self->fhead + self->fhead_len, data + pos, n - pos);
            self->fhead_len += (int)(n - pos);
            return NULL;
        }
        if (self->fhead_len) {
            memcpy(self->fhead + self->fhead_len, data + pos, need);
            h = self->fhead;
        } else {
            h = data + pos;
        }
        self->fhead_len = 0;
        pos += need;
        size_t length = ((size_t)h[0] << 16) | ((size_t)h[1] << 8) | h[2];
        unsigned type = h[3], flags = h[4];
        self->skip = length;
        switch (type) {
        case NGHTTP2_DATA:
            if (length == 0 && !(flags & NGHTTP2_FLAG_END_STREAM))
                self->controls++;
            break;
        case NGHTTP2_HEADERS:
        case NGHTTP2_CONTINUATION:
            if (type == NGHTTP2_HEADERS) {
                self->block = 0;
                self->block_seq++;
            }
            self->block += (Py_ssize_t)length;
            if ((size_t)self->block > self->max_head)
                return "a header block over the limit (CONTINUATION flood)";
            if (length == 0 && !(flags & (NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM)))
                self->controls++;
            if (flags & NGHTTP2_FLAG_END_HEADERS)
                self->block = 0;
            break;
        case NGHTTP2_RST_STREAM:
            self->resets++;
            break;
        case NGHTTP2_PRIORITY:
            self->controls++;
            break;
        case NGHTTP2_SETTINGS:
        case NGHTTP2_PING:
            if (!(flags & NGHTTP2_FLAG_ACK))
                self->controls++;
            break;
        default:
            continue;
        }
        const char *why = flood_check(self);
        if (why != NULL)
            return why;
    }
    return NULL;
}

/* -- nghttp2 callbacks ---------------------------------------------------------------------------------------- */
static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user_data)
{
    SessionObject *self = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    int32_t sid = frame->hd.stream_id;
    if ((uint32_t)self->nopen >= self->max_streams) {
        /* one stream too many: refuse it alone (the RST is queued now; nghttp2's INTERNAL_ERROR one is then
           skipped, the stream being CLOSING), counted as a reset */
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_REFUSED_STREAM);
        self->resets++;
        const char *why = flood_check(self);
        if (why != NULL) {
            self->calm = "too many streams refused";
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    StreamData *st = PyMem_Calloc(1, sizeof(StreamData));
    if (st == NULL) {
        self->in_cb_error = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    st->headers = PyList_New(0);
    if (st->headers == NULL) {
        PyMem_Free(st);
        self->in_cb_error = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    st->sid = sid;
    st->next = self->streams;
    if (self->streams)
        self->streams->prev = st;
    self->streams = st;
    self->nopen++;
    nghttp2_session_set_stream_user_data(s, sid, st);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    SessionObject *self = user_data;
    StreamData *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (st == NULL)
        return 0;
    st->hsize += namelen + valuelen + 32;
    if (st->hsize > self->max_head) {
        self->calm = "a header list over the limit";
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (st->headers == NULL) /* trailers: counted, dropped */
        return 0;
    PyObject *t = PyTuple_New(2);
    if (t == NULL)
        goto fail;
    PyObject *n = PyBytes_FromStringAndSize((const char *)name, (Py_ssize_t)namelen);
    PyObject *v = n ? PyBytes_FromStringAndSize((const char *)value, (Py_ssize_t)valuelen) : NULL;
    if (v == NULL) {
        Py_XDECREF(n);
        Py_DECREF(t);
        goto fail;
    }
    PyTuple_SET_ITEM(t, 0, n);
    PyTuple_SET_ITEM(t, 1, v);
    int r = PyList_Append(st->headers, t);
    Py_DECREF(t);
    if (r == 0)
        return 0;
fail:
    self->in_cb_error = 1;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user_data)
{
    SessionObject *self = user_data;
    int32_t sid = frame->hd.stream_id;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
        StreamData *st = nghttp2_session_get_stream_user_data(s, sid);
        if (st == NULL)
            return 0;
        int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST && st->headers != NULL) {
            PyObject *h = st->headers;
            st->headers = NULL;
            st->announced = 1;
            if (push_event(self, end ? EV_REQUEST_END : EV_REQUEST, sid, h) < 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        } else if (end && st->announced) {
            if (push_event(self, EV_END, sid, Py_NewRef(Py_None)) < 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }
    case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            StreamData *st = nghttp2_session_get_stream_user_data(s, sid);
            if (st != NULL && st->announced && push_event(self, EV_END, sid, Py_NewRef(Py_None)) < 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    case NGHTTP2_GOAWAY:
        if (push_event(self, EV_GOAWAY, 0, PyLong_FromUnsignedLong(frame->goaway.error_code)) < 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        return 0;
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                              void *user_data)
{
    SessionObject *self = user_data;
    StreamData *st = nghttp2_session_get_stream_user_data(s, sid);
    if (st == NULL || !st->announced) { /* not ours: give the window back at once */
        nghttp2_session_consume(s, sid, len);
        return 0;
    }
    if (push_event(self, EV_DATA, sid, PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len)) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *user_data)
{
    SessionObject *self = user_data;
    StreamData *st = nghttp2_session_get_stream_user_data(s, sid);
    if (st == NULL)
        return 0;
    int announced = st->announced;
    nghttp2_session_set_stream_user_data(s, sid, NULL);
    stream_free(self, st);
    if (announced && push_event(self, EV_CLOSED, sid, PyLong_FromUnsignedLong(code)) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static ssize_t read_data(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length, uint32_t *data_flags,
                         nghttp2_data_source *source, void *user_data)
{
    StreamData *st = nghttp2_session_get_stream_user_data(s, sid);
    if (st == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (st->pending == 0) {
        if (st->eof) {
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        return NGHTTP2_ERR_DEFERRED;
    }
    /* the bytes are copied once, straight from the queued objects into send()'s buffer (send_data) */
    size_t n = st->pending < length ? st->pending : length;
    *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == st->pending && st->eof)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* room for n more bytes in send()'s bytes object (grown by doubling; shrunk to size at the end) */
static char *out_room(SessionObject *self, size_t n)
{
    if (self->out_len + n > self->out_cap) {
        size_t cap = self->out_cap * 2;
        if (cap < self->out_len + n)
            cap = self->out_len + n;
        if (self->out == NULL) {
            self->out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
            if (self->out == NULL)
                return NULL;
        } else if (_PyBytes_Resize(&self->out, (Py_ssize_t)cap) < 0) {
            return NULL; /* self->out is NULL now */
        }
        self->out_cap = cap;
    }
    char *p = PyBytes_AS_STRING(self->out) + self->out_len;
    self->out_len += n;
    return p;
}

static ssize_t send_bytes(nghttp2_session *s, const uint8_t *data, size_t length, int flags, void *user_data)
{
    SessionObject *self = user_data;
    if (self->out_len && self->out_len + length > SEND_CHUNK) {
        self->more = 1;
        return NGHTTP2_ERR_WOULDBLOCK; /* nghttp2 gives the same bytes again on the next send() */
    }
    char *p = out_room(self, length);
    if (p == NULL) {
        self->in_cb_error = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    memcpy(p, data, length);
    return (ssize_t)length;
}

/* a DATA frame of read_data's NO_COPY: its 9-byte header, then its payload taken off the stream's queue */
static int send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                     nghttp2_data_source *source, void *user_data)
{
    SessionObject *self = user_data;
    StreamData *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    size_t padlen = frame->data.padlen;
    if (st == NULL || length > st->pending)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (self->out_len && self->out_len + 9 + padlen + length > SEND_CHUNK) {
        self->more = 1;
        return NGHTTP2_ERR_WOULDBLOCK; /* the same frame again on the next send() */
    }
    char *p = out_room(self, 9 + padlen + length);
    if (p == NULL) {
        self->in_cb_error = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    memcpy(p, framehd, 9);
    p += 9;
    if (padlen) { /* Pad Length, then the data, then the padding (none is asked for; handled all the same) */
        *p++ = (char)(padlen - 1);
    }
    size_t left = length;
    while (left) {
        Chunk *c = &st->q[st->qh];
        size_t have = c->end - c->off;
        size_t n = have < left ? have : left;
        memcpy(p, PyBytes_AS_STRING(c->b) + c->off, n);
        p += n;
        left -= n;
        c->off += n;
        if (c->off == c->end) {
            Py_DECREF(c->b);
            st->qh++;
        }
    }
    if (st->qh == st->qn)
        st->qh = st->qn = 0;
    st->pending -= length;
    self->pending -= length;
    if (padlen > 1)
        memset(p, 0, padlen - 1);
    return 0;
}

/* -- the type ------------------------------------------------------------------------------------------------- */
static int Session_init(SessionObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_streams", "header_table", "stream_window", "conn_window", "max_head",
                             "max_resets", "max_controls", "flood_window", NULL};
    unsigned int max_streams, header_table, stream_window, conn_window;
    Py_ssize_t max_head;
    long max_resets, max_controls;
    double flood_window;
    if (self->s != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Session already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "IIIInlld", kwlist, &max_streams, &header_table, &stream_window,
                                     &conn_window, &max_head, &max_resets, &max_controls, &flood_window))
        return -1;
    if (max_streams < 1 || stream_window > NGHTTP2_MAX_WINDOW_SIZE || conn_window > NGHTTP2_MAX_WINDOW_SIZE ||
        max_head < 1) {
        PyErr_SetString(PyExc_ValueError, "bad HTTP/2 limits");
        return -1;
    }
    self->max_streams = max_streams;
    self->max_head = (size_t)max_head;
    self->max_resets = max_resets;
    self->max_controls = max_controls;
    self->flood_window = flood_window;
    self->preface = PREFACE_LEN;
    self->win_start = now_mono();

    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return PyErr_NoMemory(), -1;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_send_callback(cb, send_bytes);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return PyErr_NoMemory(), -1;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1); /* request bodies acknowledged once the origin took them */
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    /* a backstop behind the edge's own reset counter (which trips first) */
    nghttp2_option_set_stream_reset_rate_limit(opt, (uint64_t)max_resets * 2,
                                               (uint64_t)(max_resets * 2 / (flood_window > 1 ? flood_window : 1)) + 1);
    nghttp2_option_set_max_continuations(opt, 64); /* the byte cap of the scanner (max_head) is the real limit */
    int rv = nghttp2_session_server_new2(&self->s, cb, self, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rv != 0) {
        self->s = NULL;
        PyErr_Format(Error, "nghttp2_session_server_new2: %s", nghttp2_strerror(rv));
        return -1;
    }
    nghttp2_settings_entry iv[] = {
        {SETTINGS_PLACEHOLDER, max_streams},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, header_table},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)(max_head > UINT32_MAX ? UINT32_MAX : max_head)},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, stream_window},
    };
    rv = nghttp2_submit_settings(self->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    if (rv == 0 && conn_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE)
        rv = nghttp2_session_set_local_window_size(self->s, NGHTTP2_FLAG_NONE, 0, (int32_t)conn_window);
    if (rv != 0) {
        PyErr_Format(Error, "HTTP/2 settings: %s", nghttp2_strerror(rv));
        return -1;
    }
    return 0;
}

static void Session_dealloc(SessionObject *self)
{
    if (self->s != NULL)
        nghttp2_session_del(self->s); /* calls no callback */
    self->s = NULL;
    while (self->streams != NULL)
        stream_free(self, self->streams);
    Py_CLEAR(self->events);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define NEED_SESSION                                                                                              \
    if (self->s == NULL) {                                                                                      \
        PyErr_SetString(PyExc_RuntimeError, "Session not initialised");                                         \
        return NULL;                                                                                            \
    }

static PyObject *take_events(SessionObject *self)
{
    PyObject *ev = self->events;
    if (ev == NULL)
        return Py_NewRef(EMPTY);
    self->events = NULL;
    return ev;
}

static PyObject *cb_failed(SessionObject *self)
{
    /* a Python error inside a callback (memory): the session cannot go on */
    self->in_cb_error = 0;
    if (!PyErr_Occurred())
        PyErr_NoMemory();
    return NULL;
}

static PyObject *Session_feed(SessionObject *self, PyObject *arg)
{
    NEED_SESSION
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *why = scan(self, b.buf, (size_t)b.len);
    if (why != NULL) {
        PyBuffer_Release(&b);
        nghttp2_session_terminate_session(self->s, NGHTTP2_ENHANCE_YOUR_CALM);
        if (push_event(self, EV_CALM, 0, PyUnicode_FromString(why)) < 0)
            return cb_failed(self);
        return take_events(self);
    }
    ssize_t rv = nghttp2_session_mem_recv(self->s, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    if (self->in_cb_error)
        return cb_failed(self);
    if (rv < 0) {
        if (self->calm != NULL || rv == NGHTTP2_ERR_FLOODED) {
            why = self->calm != NULL ? self->calm : "nghttp2: flooded";
            self->calm = NULL;
            nghttp2_session_terminate_session(self->s, NGHTTP2_ENHANCE_YOUR_CALM);
            if (push_event(self, EV_CALM, 0, PyUnicode_FromString(why)) < 0)
                return cb_failed(self);
        } else {
            nghttp2_session_terminate_session(self->s, NGHTTP2_PROTOCOL_ERROR);
            if (push_event(self, EV_ERROR, 0, PyUnicode_FromString(nghttp2_strerror((int)rv))) < 0)
                return cb_failed(self);
        }
    }
    if (self->in_cb_error)
        return cb_failed(self);
    return take_events(self);
}

static PyObject *Session_events(SessionObject *self, PyObject *unused)
{
    return take_events(self);
}

static StreamData *live_stream(SessionObject *self, int32_t sid)
{
    return sid > 0 ? nghttp2_session_get_stream_user_data(self->s, sid) : NULL;
}

static PyObject *Session_submit_response(SessionObject *self, PyObject *args)
{
    NEED_SESSION
    int sid, end;
    PyObject *headers;
    if (!PyArg_ParseTuple(args, "iOp", &sid, &headers, &end))
        return NULL;
    StreamData *st = live_stream(self, sid);
    if (st == NULL || st->has_provider)
        Py_RETURN_FALSE;
    PyObject *seq = PySequence_Fast(headers, "headers must be a sequence of (name, value)");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    nghttp2_nv stackv[24];
    nghttp2_nv *nv = n <= 24 ? stackv : PyMem_New(nghttp2_nv, (size_t)n);
    if (nv == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = items[i];
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(t, 0)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(t, 1))) {
            PyErr_SetString(PyExc_TypeError, "headers must be (bytes, bytes) tuples");
            if (nv != stackv)
                PyMem_Free(nv);
            Py_DECREF(seq);
            return NULL;
        }
        PyObject *k = PyTuple_GET_ITEM(t, 0), *v = PyTuple_GET_ITEM(t, 1);
        nv[i].name = (uint8_t *)PyBytes_AS_STRING(k);
        nv[i].namelen = (size_t)PyBytes_GET_SIZE(k);
        nv[i].value = (uint8_t *)PyBytes_AS_STRING(v);
        nv[i].valuelen = (size_t)PyBytes_GET_SIZE(v);
        nv[i].flags = NGHTTP2_NV_FLAG_NONE; /* nghttp2 copies them */
    }
    nghttp2_data_provider prd;
    prd.source.ptr = NULL;
    prd.read_callback = read_data;
    int rv = nghttp2_submit_response(self->s, sid, nv, (size_t)n, end ? NULL : &prd);
    if (nv != stackv)
        PyMem_Free(nv);
    Py_DECREF(seq);
    if (rv != 0)
        Py_RETURN_FALSE;
    st->has_provider = 1;
    st->eof = end;
    Py_RETURN_TRUE;
}

static PyObject *Session_submit_data(SessionObject *self, PyObject *args)
{
    NEED_SESSION
    int sid, end;
    PyObject *data;
    Py_ssize_t start = 0, stop = PY_SSIZE_T_MAX;
    if (!PyArg_ParseTuple(args, "iOp|nn", &sid, &data, &end, &start, &stop))
        return NULL;
    StreamData *st = live_stream(self, sid);
    if (st == NULL || !st->has_provider || st->eof)
        return PyLong_FromLong(-1);
    /* a bytes object is held as it is (immutable), its [start:stop] queued; any other buffer is copied */
    PyObject *b = PyBytes_CheckExact(data) ? Py_NewRef(data) : PyBytes_FromObject(data);
    if (b == NULL)
        return NULL;
    Py_ssize_t size = PyBytes_GET_SIZE(b);
    if (stop > size)
        stop = size;
    if (start < 0 || start > stop) {
        Py_DECREF(b);
        PyErr_SetString(PyExc_ValueError, "start/stop out of range");
        return NULL;
    }
    size_t len = (size_t)(stop - start);
    if (len) {
        if (st->qn == st->qcap) {
            if (st->qh > 0) { /* compact first */
                memmove(st->q, st->q + st->qh, (size_t)(st->qn - st->qh) * sizeof(Chunk));
                st->qn -= st->qh;
                st->qh = 0;
            } else {
                Py_ssize_t cap = st->qcap ? st->qcap * 2 : 4;
                Chunk *q = PyMem_Realloc(st->q, (size_t)cap * sizeof(Chunk));
                if (q == NULL) {
                    Py_DECREF(b);
                    return PyErr_NoMemory();
                }
                st->q = q;
                st->qcap = cap;
            }
        }
        st->q[st->qn].b = b;
        st->q[st->qn].off = (size_t)start;
        st->q[st->qn].end = (size_t)stop;
        st->qn++;
        st->pending += len;
        self->pending += len;
    } else {
        Py_DECREF(b);
    }
    if (end)
        st->eof = 1;
    nghttp2_session_resume_data(self->s, sid); /* it may be deferred (nothing was queued) */
    return PyLong_FromSize_t(st->pending);
}

static PyObject *Session_pending(SessionObject *self, PyObject *arg)
{
    NEED_SESSION
    long sid = PyLong_AsLong(arg);
    if (sid == -1 && PyErr_Occurred())
        return NULL;
    StreamData *st = sid > 0 && sid <= INT32_MAX ? live_stream(self, (int32_t)sid) : NULL;
    return PyLong_FromSize_t(st != NULL ? st->pending : 0);
}

static PyObject *Session_rst_stream(SessionObject *self, PyObject *args)
{
    NEED_SESSION
    int sid;
    unsigned int code;
    if (!PyArg_ParseTuple(args, "iI", &sid, &code))
        return NULL;
    if (sid > 0)
        nghttp2_submit_rst_stream(self->s, NGHTTP2_FLAG_NONE, sid, code);
    Py_RETURN_NONE;
}

static PyObject *Session_consume(SessionObject *self, PyObject *args)
{
    NEED_SESSION
    int sid;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "in", &sid, &n))
        return NULL;
    if (n > 0) {
        if (sid > 0)
            nghttp2_session_consume(self->s, sid, (size_t)n); /* the connection's window too; stream gone: only it */
        else
            nghttp2_session_consume_connection(self->s, (size_t)n);
    }
    Py_RETURN_NONE;
}

static PyObject *Session_goaway(SessionObject *self, PyObject *args)
{
    NEED_SESSION
    unsigned int code;
    int terminate;
    if (!PyArg_ParseTuple(args, "Ip", &code, &terminate))
        return NULL;
    if (terminate)
        nghttp2_session_terminate_session(self->s, code);
    else
        nghttp2_submit_goaway(self->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(self->s), code,
                              NULL, 0);
    Py_RETURN_NONE;
}

/* The first SETTINGS frame: the placeholder id becomes SETTINGS_MAX_CONCURRENT_STREAMS. */
static void patch_settings(char *buf, size_t len)
{
    if (len < 9 || buf[3] != NGHTTP2_SETTINGS || (buf[4] & NGHTTP2_FLAG_ACK))
        return;
    size_t flen = ((size_t)(unsigned char)buf[0] << 16) | ((size_t)(unsigned char)buf[1] << 8) |
                  (unsigned char)buf[2];
    if (9 + flen > len)
        return;
    for (size_t i = 9; i + 6 <= 9 + flen; i += 6) {
        if ((unsigned char)buf[i] == (SETTINGS_PLACEHOLDER >> 8) && (unsigned char)buf[i + 1] == (SETTINGS_PLACEHOLDER & 0xff)) {
            buf[i] = 0;
            buf[i + 1] = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
        }
    }
}

static PyObject *Session_send(SessionObject *self, PyObject *unused)
{
    NEED_SESSION
    /* nghttp2 writes every frame it has ready into one bytes object (send_bytes, send_data: the DATA payloads
       copied once, from the queued objects); first guess at its size: what the streams have queued, as far as the
       client's connection window takes it, up to SEND_CHUNK (+ frame headers) */
    self->out = NULL;
    self->out_len = 0;
    self->out_cap = 0;
    self->more = 0;
    size_t guess = self->pending;
    int32_t window = nghttp2_session_get_remote_window_size(self->s);
    if (window >= 0 && (size_t)window < guess)
        guess = (size_t)window;
    if (guess) {
        if (guess > SEND_CHUNK)
            guess = SEND_CHUNK;
        guess += guess / 1024 + 1024;
        if (out_room(self, guess) == NULL)
            return NULL;
        self->out_len = 0;
    }
    int rv = nghttp2_session_send(self->s);
    PyObject *out = self->out;
    size_t total = self->out_len;
    self->out = NULL;
    if (self->in_cb_error) {
        Py_XDECREF(out);
        return cb_failed(self);
    }
    if (rv != 0) {
        Py_XDECREF(out);
        PyErr_Format(Error, "nghttp2_session_send: %s", nghttp2_strerror(rv));
        return NULL;
    }
    if (out == NULL)
        out = PyBytes_FromStringAndSize(NULL, 0);
    else if ((size_t)PyBytes_GET_SIZE(out) != total && _PyBytes_Resize(&out, (Py_ssize_t)total) < 0)
        return NULL;
    if (out == NULL)
        return NULL;
    if (!self->settings_patched && total) {
        self->settings_patched = 1;
        patch_settings(PyBytes_AS_STRING(out), total);
    }
    if (!self->over && !nghttp2_session_want_read(self->s) && !nghttp2_session_want_write(self->s)) {
        self->over = 1; /* a GOAWAY went out (nghttp2's for a protocol error, or ours) or came in: nothing more */
        if (push_event(self, EV_ERROR, 0, PyUnicode_FromString("session over")) < 0) {
            Py_DECREF(out);
            return cb_failed(self);
        }
    }
    return out;
}

static PyObject *Session_get_want_io(SessionObject *self, void *closure)
{
    if (self->s == NULL)
        Py_RETURN_FALSE;
    return PyBool_FromLong(nghttp2_session_want_read(self->s) || nghttp2_session_want_write(self->s));
}

static PyObject *Session_get_open_streams(SessionObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->nopen);
}

static PyMethodDef Session_methods[] = {
    {"feed", (PyCFunction)Session_feed, METH_O, "the client's bytes in; a list of (kind, stream_id, x) events out"},
    {"events", (PyCFunction)Session_events, METH_NOARGS, "events produced by send() since the last feed/events"},
    {"submit_response", (PyCFunction)Session_submit_response, METH_VARARGS,
     "submit_response(stream_id, headers, end_stream) -> bool"},
    {"submit_data", (PyCFunction)Session_submit_data, METH_VARARGS,
     "submit_data(stream_id, data, end_stream[, start, stop]) -> bytes queued for the stream (-1: gone)"},
    {"pending", (PyCFunction)Session_pending, METH_O, "bytes of the stream queued and not framed yet"},
    {"rst_stream", (PyCFunction)Session_rst_stream, METH_VARARGS, "rst_stream(stream_id, code)"},
    {"consume", (PyCFunction)Session_consume, METH_VARARGS, "consume(stream_id, n): request body taken"},
    {"goaway", (PyCFunction)Session_goaway, METH_VARARGS, "goaway(code, terminate)"},
    {"send", (PyCFunction)Session_send, METH_NOARGS, "the frames ready to send, as one bytes"},
    {NULL}};

static PyMemberDef Session_members[] = {
    {"block", T_PYSSIZET, offsetof(SessionObject, block), READONLY, "bytes of an incomplete header block"},
    {"block_seq", T_PYSSIZET, offsetof(SessionObject, block_seq), READONLY, "header blocks begun"},
    {"more", T_BOOL, offsetof(SessionObject, more), READONLY, "the last send() was full: frames are left"},
    {NULL}};

static PyGetSetDef Session_getset[] = {
    {"want_io", (getter)Session_get_want_io, NULL, "False once the session is over", NULL},
    {"open_streams", (getter)Session_get_open_streams, NULL, "streams with a request (open or closing)", NULL},
    {NULL}};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "edge.tls_edge._edgeh2.Session",
    .tp_basicsize = sizeof(SessionObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The server side of one HTTP/2 connection (nghttp2), sans I/O.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Session_init,
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_methods = Session_methods,
    .tp_members = Session_members,
    .tp_getset = Session_getset,
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_edgeh2",
                                       "HTTP/2 server sessions over libnghttp2 (edge/tls_edge/h2.py)", -1, NULL};

PyMODINIT_FUNC PyInit__edgeh2(void)
{
    if (PyType_Ready(&SessionType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    EMPTY = PyTuple_New(0);
    Error = PyErr_NewException("edge.tls_edge._edgeh2.Error", NULL, NULL);
    if (EMPTY == NULL || Error == NULL || PyModule_AddObjectRef(m, "Error", Error) < 0 ||
        PyModule_AddObjectRef(m, "Session", (PyObject *)&SessionType) < 0)
        goto fail;
    nghttp2_info *info = nghttp2_version(0);
    if (PyModule_AddStringConstant(m, "NGHTTP2_VERSION", info->version_str) < 0)
        goto fail;
    struct { const char *name; long v; } consts[] = {
        {"EV_REQUEST", EV_REQUEST}, {"EV_REQUEST_END", EV_REQUEST_END}, {"EV_DATA", EV_DATA}, {"EV_END", EV_END},
        {"EV_CLOSED", EV_CLOSED}, {"EV_GOAWAY", EV_GOAWAY}, {"EV_CALM", EV_CALM}, {"EV_ERROR", EV_ERROR},
        {"NO_ERROR", NGHTTP2_NO_ERROR}, {"PROTOCOL_ERROR", NGHTTP2_PROTOCOL_ERROR},
        {"INTERNAL_ERROR", NGHTTP2_INTERNAL_ERROR}, {"REFUSED_STREAM", NGHTTP2_REFUSED_STREAM},
        {"CANCEL", NGHTTP2_CANCEL}, {"ENHANCE_YOUR_CALM", NGHTTP2_ENHANCE_YOUR_CALM},
    };
    for (size_t i = 0; i < sizeof(consts) / sizeof(consts[0]); i++)
        if (PyModule_AddIntConstant(m, consts[i].name, consts[i].v) < 0)
            goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
