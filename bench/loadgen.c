/*
 * loadgen: a full-TLS-handshake load generator for SNI edges.
 *
 * Every connection is a NEW TCP connection with a FRESH SSL object and no session to offer
 * (sessions are never stored nor offered, SSL_OP_NO_TICKET): every handshake it counts is a full one,
 * and it checks that with SSL_session_reused() on each one (must stay 0).
 *
 * Work per connection on the client side is kept to the minimum OpenSSL allows, so that the
 * generator saturates as late as possible: one shared SSL_CTX, no certificate-chain verification
 * (a cert-verify callback that accepts, so X509_verify_cert is never even run), SNI picked as a
 * pointer into names preloaded in memory, the HTTP request pre-built per name, epoll in
 * edge-triggered mode, many connections in flight. What it cannot avoid: the key exchange
 * (X25519 keygen + derive) and checking the server's CertificateVerify signature.
 *
 * Per connection: connect, handshake (SNI = a random name, or the next unused one with
 * --unique-names), "GET / HTTP/1.1\r\nHost: <name>\r\nConnection: close\r\n\r\n", read until the
 * server closes. Latency = connect() start -> handshake done.
 *
 * It measures its own CPU time (getrusage) over the measurement window and reports it: a
 * generator above ~85% of its core measures itself, not the server.
 *
 * Output: one JSON line (--json) or a short human summary. It stops by itself after
 * warmup + duration seconds (or when --unique-names runs out of names).
 *
 * Build: make -C bench   (gcc -O2, system OpenSSL)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ options */

static const char *opt_host = "127.0.0.1";
static int opt_port = 443;
static const char *opt_names = NULL;
static double opt_duration = 10.0;
static double opt_warmup = 0.0;
static int opt_concurrency = 32;
static int opt_tls12 = 0;
static int opt_json = 0;
static int opt_unique = 0;
static int opt_markers = 0;
static int opt_check_names = 0;
static double opt_timeout = 10.0;
static uint64_t opt_seed = 0;
static long opt_max_conns = 0;
static int opt_legacy_ec = 1;
static int legacy_ec_on = 0;

/* ------------------------------------------------------------------ time */

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double rusage_cpu_s(double *user, double *sys) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    *sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    return *user + *sys;
}

/* ------------------------------------------------------------------ histogram
 * Log-linear histogram of microseconds, HDR style: exact below 256 us, then 128 sub-buckets per
 * power of two (relative error < 0.8%). */

#define HIST_SUB 128
#define HIST_BUCKETS (256 + 40 * HIST_SUB)

typedef struct {
    uint64_t b[HIST_BUCKETS];
    uint64_t count, sum_us, max_us, min_us;
} hist_t;

static inline int hist_index(uint64_t v) {
    if (v < 256) return (int)v;
    int msb = 63 - __builtin_clzll(v); /* >= 8 */
    int shift = msb - 7;
    uint64_t top = v >> shift;          /* in [128, 255] */
    int idx = 256 + (shift - 1) * HIST_SUB + (int)(top - 128);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

static inline uint64_t hist_value(int idx) { /* midpoint of the bucket */
    if (idx < 256) return (uint64_t)idx;
    int shift = (idx - 256) / HIST_SUB + 1;
    uint64_t top = (uint64_t)((idx - 256) % HIST_SUB) + 128;
    return (top << shift) + ((1ull << shift) >> 1);
}

static void hist_add(hist_t *h, uint64_t us) {
    h->b[hist_index(us)]++;
    h->count++;
    h->sum_us += us;
    if (us > h->max_us) h->max_us = us;
    if (h->count == 1 || us < h->min_us) h->min_us = us;
}

static uint64_t hist_pct(const hist_t *h, double p) {
    if (!h->count) return 0;
    uint64_t want = (uint64_t)(p / 100.0 * (double)h->count + 0.5);
    if (want < 1) want = 1;
    if (want > h->count) want = h->count;
    uint64_t acc = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        acc += h->b[i];
        if (acc >= want) {
            uint64_t v = hist_value(i);
            return v > h->max_us ? h->max_us : v;
        }
    }
    return h->max_us;
}

/* ------------------------------------------------------------------ stats */

enum {
    E_CONNECT, E_HANDSHAKE, E_WRITE, E_READ, E_STATUS, E_TIMEOUT, E_NAME_MISMATCH, E_SOCKET, E__N
};
static const char *ekind[E__N] = {
    "connect", "handshake", "write", "read", "http_status", "timeout", "name_mismatch", "socket"
};

typedef struct {
    uint64_t conns_started;
    uint64_t handshakes;
    uint64_t resumed;
    uint64_t tickets;  /* NewSessionTicket messages received: a server that sends them does extra work */
    uint64_t responses_ok;
    uint64_t bytes_read;
    uint64_t errors[E__N];
    hist_t lat;   /* connect() start -> handshake done */
    hist_t conn;  /* connect() start -> server closed after the response (successful ones) */
} stats_t;

static stats_t st;

/* Counts the server's session tickets (never stored, never offered: every handshake stays a full one). */
static int count_ticket(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl; (void)sess;
    st.tickets++;
    return 0; /* not kept */
}
static char first_err[E__N][200];
static char seen_version[32] = "";
static char seen_cipher[64] = "";
static char seen_group[32] = "";

/* ------------------------------------------------------------------ names */

static char **names;
static uint32_t *name_len;
static char **reqs;
static uint32_t *req_len;
static size_t nnames;
static size_t next_unique = 0;

static void load_names(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    struct stat sb;
    if (fstat(fileno(f), &sb) < 0) { perror("fstat"); exit(2); }
    char *buf = malloc((size_t)sb.st_size + 1);
    size_t got = fread(buf, 1, (size_t)sb.st_size, f);
    fclose(f);
    buf[got] = 0;
    size_t cap = 1024;
    names = malloc(cap * sizeof *names);
    name_len = malloc(cap * sizeof *name_len);
    size_t total_req = 0;
    char *p = buf;
    while (*p) {
        char *e = strchr(p, '\n');
        char *next = e ? e + 1 : p + strlen(p);
        if (e) *e = 0;
        size_t l = strlen(p);
        while (l && (p[l - 1] == '\r' || p[l - 1] == ' ' || p[l - 1] == '\t')) p[--l] = 0;
        while (*p == ' ' || *p == '\t') { p++; l--; }
        if (l && *p != '#') {
            if (nnames == cap) {
                cap *= 2;
                names = realloc(names, cap * sizeof *names);
                name_len = realloc(name_len, cap * sizeof *name_len);
            }
            names[nnames] = p;
            name_len[nnames] = (uint32_t)l;
            total_req += l + 64;
            nnames++;
        }
        p = next;
    }
    if (!nnames) { fprintf(stderr, "loadgen: no names in %s\n", path); exit(2); }
    /* Pre-build every request once, so the hot path only picks pointers. */
    char *arena = malloc(total_req);
    reqs = malloc(nnames * sizeof *reqs);
    req_len = malloc(nnames * sizeof *req_len);
    char *w = arena;
    for (size_t i = 0; i < nnames; i++) {
        int n = sprintf(w, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", names[i]);
        reqs[i] = w;
        req_len[i] = (uint32_t)n;
        w += n + 1;
    }
}

/* xorshift64*: cheap, good enough to spread SNI names */
static uint64_t rng_state;
static inline uint64_t rng_next(void) {
    uint64_t x = rng_state;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* ------------------------------------------------------------------ connections */

enum { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_WRITE, S_READ };

typedef struct {
    int fd;
    int state;
    uint32_t gen;
    uint32_t name;
    SSL *ssl;
    uint64_t t0;
    uint64_t retry_at;
    int got_status;
} conn_t;

static conn_t *conns;
static int epfd;
static SSL_CTX *ctx;
static struct sockaddr_in dst;
static int measuring = 0;
static int stopping = 0;
static uint64_t inflight = 0;

static void note_err(int kind, const char *msg) {
    if (measuring) st.errors[kind]++;
    if (!first_err[kind][0]) {
        unsigned long e = ERR_peek_error();
        if (e) {
            char b[160];
            ERR_error_string_n(e, b, sizeof b);
            snprintf(first_err[kind], sizeof first_err[kind], "%s: %s", msg, b);
        } else {
            snprintf(first_err[kind], sizeof first_err[kind], "%s", msg);
        }
    }
    ERR_clear_error();
}

/* ------------------------------------------------------------------ legacy EC fast path
 * OpenSSL 3.0 decodes every public key in every received certificate through the provider
 * OSSL_DECODER machinery, which builds a decoder chain per key (measured here: ~40% of the
 * generator's CPU per handshake, ~2 keys per handshake with leaf + intermediate). When an ENGINE is
 * registered for the EC pkey method, x509_pubkey_decode() takes the old direct path instead
 * (eckey_pub_decode) and CertificateVerify is checked with the built-in legacy EC method. The
 * engine below only hands back OpenSSL's OWN built-in EC method: nothing on the wire changes and
 * the same math runs; only the 3.0 dispatch overhead is skipped. Disable with --no-legacy-ec. */

static int legacy_ec_nids[] = {EVP_PKEY_EC};

static int legacy_pkey_meths(ENGINE *e, EVP_PKEY_METHOD **pmeth, const int **nids, int nid) {
    (void)e;
    if (!pmeth) {
        *nids = legacy_ec_nids;
        return 1;
    }
    if (nid == EVP_PKEY_EC) {
        *pmeth = (EVP_PKEY_METHOD *)EVP_PKEY_meth_find(EVP_PKEY_EC);
        return *pmeth != NULL;
    }
    *pmeth = NULL;
    return 0;
}

static int install_legacy_ec(void) {
    ENGINE *e = ENGINE_new();
    if (!e) return 0;
    if (!ENGINE_set_id(e, "loadgen-legacy-ec") || !ENGINE_set_name(e, "built-in EC pkey method") ||
        !ENGINE_set_pkey_meths(e, legacy_pkey_meths) || !ENGINE_add(e) || !ENGINE_init(e) ||
        !ENGINE_set_default_pkey_meths(e)) {
        ENGINE_free(e);
        return 0;
    }
    return 1;
}

static int accept_any_cert(X509_STORE_CTX *x, void *arg) {
    (void)x; (void)arg;
    return 1; /* verification off; also skips X509_verify_cert's chain building */
}

static void conn_close(conn_t *c) {
    if (c->ssl) { SSL_free(c->ssl); c->ssl = NULL; }
    if (c->fd >= 0) { close(c->fd); c->fd = -1; }
    if (c->state != S_IDLE) inflight--;
    c->state = S_IDLE;
    c->gen++;
}

static int pick_name(uint32_t *out) {
    if (opt_unique) {
        if (next_unique >= nnames) return 0;
        *out = (uint32_t)next_unique++;
        return 1;
    }
    *out = (uint32_t)(((unsigned __int128)rng_next() * nnames) >> 64);
    return 1;
}

static void drive(conn_t *c, int idx);

static void conn_start(conn_t *c, int idx) {
    uint32_t name;
    if (stopping) return;
    if (opt_max_conns && (long)st.conns_started >= opt_max_conns && measuring) { stopping = 1; return; }
    if (!pick_name(&name)) return;
    c->name = name;
    c->retry_at = 0;
    c->got_status = 0;
    c->t0 = now_ns();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { note_err(E_SOCKET, strerror(errno)); c->retry_at = now_ns() + 10000000ull; return; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = S_CONNECTING;
    inflight++;
    if (measuring) st.conns_started++;
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
    ev.data.u64 = ((uint64_t)c->gen << 32) | (uint32_t)idx;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        note_err(E_SOCKET, strerror(errno));
        conn_close(c);
        c->retry_at = now_ns() + 10000000ull;
        return;
    }
    int r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    if (r < 0 && errno != EINPROGRESS) {
        note_err(E_CONNECT, strerror(errno));
        conn_close(c);
        c->retry_at = now_ns() + 10000000ull;
        return;
    }
    if (r == 0) drive(c, idx);
}

static void conn_finish(conn_t *c, int idx, int delay_retry) {
    conn_close(c);
    if (delay_retry) {
        c->retry_at = now_ns() + 10000000ull;
        return;
    }
    conn_start(c, idx);
}

static void record_handshake(conn_t *c) {
    uint64_t t = now_ns();
    if (measuring) {
        st.handshakes++;
        hist_add(&st.lat, (t - c->t0) / 1000);
        if (SSL_session_reused(c->ssl)) st.resumed++;
    }
    if (!seen_version[0]) {
        snprintf(seen_version, sizeof seen_version, "%s", SSL_get_version(c->ssl));
        const SSL_CIPHER *ci = SSL_get_current_cipher(c->ssl);
        snprintf(seen_cipher, sizeof seen_cipher, "%s", ci ? SSL_CIPHER_get_name(ci) : "?");
        int nid = SSL_get_negotiated_group(c->ssl);
        const char *g = nid > 0 ? SSL_group_to_name(c->ssl, nid) : NULL;
        snprintf(seen_group, sizeof seen_group, "%s", g ? g : "?");
    }
}

static void drive(conn_t *c, int idx) {
    for (;;) {
        switch (c->state) {
        case S_CONNECTING: {
            int err = 0;
            socklen_t l = sizeof err;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0) err = errno;
            if (err == EINPROGRESS || err == EALREADY) return;
            if (err) {
                note_err(E_CONNECT, strerror(err));
                conn_finish(c, idx, 1);
                return;
            }
            c->ssl = SSL_new(ctx);
            SSL_set_fd(c->ssl, c->fd);
            SSL_set_tlsext_host_name(c->ssl, names[c->name]);
            SSL_set_connect_state(c->ssl);
            c->state = S_HANDSHAKE;
            break;
        }
        case S_HANDSHAKE: {
            int r = SSL_do_handshake(c->ssl);
            if (r == 1) {
                record_handshake(c);
                if (opt_check_names) {
                    X509 *peer = SSL_get0_peer_certificate(c->ssl);
                    if (!peer || X509_check_host(peer, names[c->name], name_len[c->name], 0, NULL) != 1) {
                        char m[300];
                        snprintf(m, sizeof m, "certificate does not match SNI %s", names[c->name]);
                        note_err(E_NAME_MISMATCH, m);
                    }
                }
                c->state = S_WRITE;
                break;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
            char m[300];
            snprintf(m, sizeof m, "SNI %s: SSL_get_error=%d errno=%s", names[c->name], e,
                     e == SSL_ERROR_SYSCALL ? strerror(errno) : "-");
            note_err(E_HANDSHAKE, m);
            conn_finish(c, idx, 0);
            return;
        }
        case S_WRITE: {
            int r = SSL_write(c->ssl, reqs[c->name], (int)req_len[c->name]);
            if (r > 0) { c->state = S_READ; break; }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
            note_err(E_WRITE, "SSL_write failed");
            conn_finish(c, idx, 0);
            return;
        }
        case S_READ: {
            char buf[4096];
            int r = SSL_read(c->ssl, buf, sizeof buf);
            if (r > 0) {
                if (measuring) st.bytes_read += (uint64_t)r;
                if (!c->got_status) {
                    /* "HTTP/1.x 200" must be at the start of the first record */
                    if (r >= 12 && memcmp(buf, "HTTP/1.", 7) == 0 && memcmp(buf + 9, "200", 3) == 0)
                        c->got_status = 1;
                    else
                        c->got_status = -1;
                }
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
            if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) {
                if (c->got_status == 1) {
                    if (measuring) {
                        st.responses_ok++;
                        hist_add(&st.conn, (now_ns() - c->t0) / 1000);
                    }
                } else {
                    char m[300];
                    snprintf(m, sizeof m, "SNI %s: response not 'HTTP/1.x 200' (%s)", names[c->name],
                             c->got_status == 0 ? "closed before any response" : "other status");
                    note_err(E_STATUS, m);
                }
                ERR_clear_error();
                conn_finish(c, idx, 0);
                return;
            }
            char m[300];
            snprintf(m, sizeof m, "SNI %s: SSL_read SSL_get_error=%d errno=%s", names[c->name], e,
                     strerror(errno));
            note_err(E_READ, m);
            conn_finish(c, idx, 0);
            return;
        }
        default:
            return;
        }
    }
}

/* ------------------------------------------------------------------ output */

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') { fputc('\\', f); fputc(ch, f); }
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static void usage(void) {
    fprintf(stderr,
        "usage: loadgen --names FILE [--host 127.0.0.1] [--port 443] [--duration S] [--warmup S]\n"
        "               [--concurrency C] [--tls12] [--unique-names] [--check-names]\n"
        "               [--timeout S] [--seed N] [--max-conns N] [--markers] [--json]\n"
        "  --names FILE      one SNI name per line, preloaded into memory\n"
        "  --duration S      measured seconds (after warmup); the run stops by itself\n"
        "  --warmup S        seconds of load before measuring (not counted)\n"
        "  --concurrency C   connections in flight (default 32)\n"
        "  --tls12           TLS 1.2 only (default TLS 1.3 only)\n"
        "  --unique-names    each name at most once, in file order: every handshake is a name\n"
        "                    never handshaken by this generator (stops when names run out)\n"
        "  --check-names     check the served leaf matches the SNI (X509_check_host)\n"
        "  --timeout S       per-connection timeout (default 10)\n"
        "  --max-conns N     stop starting connections after N measured ones\n"
        "  --markers         print MEASURE_START / MEASURE_END lines on stderr\n"
        "  --json            one JSON line on stdout\n"
        "  --no-legacy-ec    decode server keys through OpenSSL 3 providers (slower generator)\n");
    exit(2);
}

int main(int argc, char **argv) {
    static struct option lo[] = {
        {"host", required_argument, 0, 'h'},
        {"port", required_argument, 0, 'p'},
        {"names", required_argument, 0, 'n'},
        {"duration", required_argument, 0, 'd'},
        {"warmup", required_argument, 0, 'w'},
        {"concurrency", required_argument, 0, 'c'},
        {"tls12", no_argument, 0, '2'},
        {"unique-names", no_argument, 0, 'u'},
        {"check-names", no_argument, 0, 'k'},
        {"timeout", required_argument, 0, 't'},
        {"seed", required_argument, 0, 's'},
        {"max-conns", required_argument, 0, 'm'},
        {"markers", no_argument, 0, 'M'},
        {"json", no_argument, 0, 'j'},
        {"no-legacy-ec", no_argument, 0, 'L'},
        {"help", no_argument, 0, '?'},
        {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (o) {
        case 'h': opt_host = optarg; break;
        case 'p': opt_port = atoi(optarg); break;
        case 'n': opt_names = optarg; break;
        case 'd': opt_duration = atof(optarg); break;
        case 'w': opt_warmup = atof(optarg); break;
        case 'c': opt_concurrency = atoi(optarg); break;
        case '2': opt_tls12 = 1; break;
        case 'u': opt_unique = 1; break;
        case 'k': opt_check_names = 1; break;
        case 't': opt_timeout = atof(optarg); break;
        case 's': opt_seed = strtoull(optarg, NULL, 10); break;
        case 'm': opt_max_conns = atol(optarg); break;
        case 'M': opt_markers = 1; break;
        case 'j': opt_json = 1; break;
        case 'L': opt_legacy_ec = 0; break;
        default: usage();
        }
    }
    if (!opt_names || opt_concurrency < 1 || opt_duration <= 0 || opt_port <= 0) usage();
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt_concurrency + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    load_names(opt_names);
    rng_state = opt_seed ? opt_seed : (now_ns() ^ ((uint64_t)getpid() << 32)) | 1;

    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)opt_port);
    if (inet_pton(AF_INET, opt_host, &dst.sin_addr) != 1) {
        fprintf(stderr, "loadgen: --host must be an IPv4 address: %s\n", opt_host);
        return 2;
    }

    if (opt_legacy_ec) {
        legacy_ec_on = install_legacy_ec();
        if (!legacy_ec_on) {
            fprintf(stderr, "loadgen: could not install the legacy EC fast path; using providers\n");
            ERR_clear_error();
        }
    }
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) { ERR_print_errors_fp(stderr); return 1; }
    int v = opt_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(ctx, v);
    SSL_CTX_set_max_proto_version(ctx, v);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_cert_verify_callback(ctx, accept_any_cert, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, count_ticket);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_read_ahead(ctx, 1); /* one read() per flight instead of one per record */

    epfd = epoll_create1(EPOLL_CLOEXEC);
    conns = calloc((size_t)opt_concurrency, sizeof *conns);
    for (int i = 0; i < opt_concurrency; i++) { conns[i].fd = -1; conns[i].state = S_IDLE; }

    uint64_t t_start = now_ns();
    uint64_t t_measure = t_start + (uint64_t)(opt_warmup * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(opt_duration * 1e9);
    uint64_t timeout_ns = (uint64_t)(opt_timeout * 1e9);
    double cpu0 = 0, u0 = 0, s0 = 0, cpu1, u1, s1;
    uint64_t t_m0 = t_start, t_m1;

    if (opt_warmup <= 0) {
        measuring = 1;
        cpu0 = rusage_cpu_s(&u0, &s0);
        t_m0 = now_ns();
        if (opt_markers) { fprintf(stderr, "MEASURE_START\n"); fflush(stderr); }
    }
    for (int i = 0; i < opt_concurrency; i++) conn_start(&conns[i], i);

    struct epoll_event evs[512];
    uint64_t last_scan = t_start;
    int names_exhausted = 0;
    for (;;) {
        uint64_t t = now_ns();
        if (!measuring && t >= t_measure) {
            memset(&st, 0, sizeof st);
            measuring = 1;
            cpu0 = rusage_cpu_s(&u0, &s0);
            t_m0 = t;
            if (opt_markers) { fprintf(stderr, "MEASURE_START\n"); fflush(stderr); }
        }
        if (t >= t_end) break;
        if (inflight == 0 && (stopping || (opt_unique && next_unique >= nnames))) {
            names_exhausted = opt_unique && next_unique >= nnames;
            if (measuring) break;
            /* exhausted during warmup: nothing left to measure */
            break;
        }
        uint64_t next = measuring ? t_end : t_measure;
        int wait_ms = (int)((next - t) / 1000000ull) + 1;
        if (wait_ms > 50) wait_ms = 50;
        int n = epoll_wait(epfd, evs, 512, wait_ms);
        for (int i = 0; i < n; i++) {
            uint32_t idx = (uint32_t)evs[i].data.u64;
            uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
            conn_t *c = &conns[idx];
            if (c->gen != gen || c->state == S_IDLE) continue; /* stale event of a closed connection */
            drive(c, (int)idx);
        }
        t = now_ns();
        /* restart slots that are idle (error back-off) and expire stuck connections */
        if (t - last_scan > 20000000ull) {
            last_scan = t;
            for (int i = 0; i < opt_concurrency; i++) {
                conn_t *c = &conns[i];
                if (c->state == S_IDLE) {
                    if (!stopping && t >= c->retry_at) conn_start(c, i);
                } else if (t - c->t0 > timeout_ns) {
                    char m[300];
                    snprintf(m, sizeof m, "SNI %s: no progress for %.1f s (state %d)", names[c->name],
                             opt_timeout, c->state);
                    note_err(E_TIMEOUT, m);
                    conn_finish(c, i, 0);
                }
            }
        }
    }
    t_m1 = now_ns();
    cpu1 = rusage_cpu_s(&u1, &s1);
    if (opt_markers) { fprintf(stderr, "MEASURE_END\n"); fflush(stderr); }
    if (opt_unique && next_unique >= nnames) names_exhausted = 1;

    double wall = (double)(t_m1 - t_m0) / 1e9;
    if (!measuring) wall = 0;
    double cpu = measuring ? cpu1 - cpu0 : 0;
    uint64_t errs = 0;
    for (int k = 0; k < E__N; k++) errs += st.errors[k];
    double rate = wall > 0 ? st.handshakes / wall : 0;
    double cpu_pct = wall > 0 ? 100.0 * cpu / wall : 0;
    double mean = st.lat.count ? (double)st.lat.sum_us / st.lat.count : 0;

    if (opt_json) {
        printf("{\"tool\":\"loadgen\",\"host\":");
        json_str(stdout, opt_host);
        printf(",\"port\":%d,\"tls\":\"%s\",\"negotiated_version\":", opt_port, opt_tls12 ? "1.2" : "1.3");
        json_str(stdout, seen_version);
        printf(",\"cipher\":");
        json_str(stdout, seen_cipher);
        printf(",\"group\":");
        json_str(stdout, seen_group);
        printf(",\"openssl\":");
        json_str(stdout, OpenSSL_version(OPENSSL_VERSION));
        printf(",\"legacy_ec_fast_path\":%s", legacy_ec_on ? "true" : "false");
        printf(",\"names\":%zu,\"unique_names\":%s,\"names_used\":%zu,\"names_exhausted\":%s",
               nnames, opt_unique ? "true" : "false", opt_unique ? next_unique : (size_t)0,
               names_exhausted ? "true" : "false");
        printf(",\"concurrency\":%d,\"warmup_s\":%.3f,\"duration_s\":%.3f", opt_concurrency, opt_warmup, wall);
        printf(",\"connections_started\":%llu,\"handshakes\":%llu,\"handshakes_per_s\":%.1f",
               (unsigned long long)st.conns_started, (unsigned long long)st.handshakes, rate);
        printf(",\"responses_ok\":%llu,\"resumed\":%llu,\"tickets_received\":%llu,\"bytes_read\":%llu",
               (unsigned long long)st.responses_ok, (unsigned long long)st.resumed,
               (unsigned long long)st.tickets, (unsigned long long)st.bytes_read);
        printf(",\"errors_total\":%llu,\"errors\":{", (unsigned long long)errs);
        for (int k = 0; k < E__N; k++)
            printf("%s\"%s\":%llu", k ? "," : "", ekind[k], (unsigned long long)st.errors[k]);
        printf("},\"first_errors\":{");
        int first = 1;
        for (int k = 0; k < E__N; k++) {
            if (!first_err[k][0]) continue;
            printf("%s\"%s\":", first ? "" : ",", ekind[k]);
            json_str(stdout, first_err[k]);
            first = 0;
        }
        printf("},\"latency_us\":{\"count\":%llu,\"min\":%llu,\"mean\":%.1f,\"p50\":%llu,\"p90\":%llu,"
               "\"p99\":%llu,\"p999\":%llu,\"max\":%llu}",
               (unsigned long long)st.lat.count, (unsigned long long)st.lat.min_us, mean,
               (unsigned long long)hist_pct(&st.lat, 50), (unsigned long long)hist_pct(&st.lat, 90),
               (unsigned long long)hist_pct(&st.lat, 99), (unsigned long long)hist_pct(&st.lat, 99.9),
               (unsigned long long)st.lat.max_us);
        printf(",\"connection_us\":{\"count\":%llu,\"mean\":%.1f,\"p50\":%llu,\"p99\":%llu,\"max\":%llu}",
               (unsigned long long)st.conn.count, st.conn.count ? (double)st.conn.sum_us / st.conn.count : 0.0,
               (unsigned long long)hist_pct(&st.conn, 50), (unsigned long long)hist_pct(&st.conn, 99),
               (unsigned long long)st.conn.max_us);
        printf(",\"gen_cpu_s\":%.3f,\"gen_user_s\":%.3f,\"gen_sys_s\":%.3f,\"gen_cpu_pct\":%.1f",
               cpu, measuring ? u1 - u0 : 0, measuring ? s1 - s0 : 0, cpu_pct);
        printf(",\"gen_cpu_us_per_handshake\":%.1f}\n", st.handshakes ? cpu * 1e6 / st.handshakes : 0);
    } else {
        printf("%s %s %s | %.1f s, c=%d, %zu names%s\n", seen_version, seen_cipher, seen_group, wall,
               opt_concurrency, nnames, opt_unique ? " (unique)" : "");
        printf("handshakes %llu (%.0f/s), responses ok %llu, resumed %llu, errors %llu\n",
               (unsigned long long)st.handshakes, rate, (unsigned long long)st.responses_ok,
               (unsigned long long)st.resumed, (unsigned long long)errs);
        for (int k = 0; k < E__N; k++)
            if (st.errors[k] || first_err[k][0])
                printf("  %s: %llu  first: %s\n", ekind[k], (unsigned long long)st.errors[k], first_err[k]);
        printf("latency us: p50 %llu p90 %llu p99 %llu max %llu mean %.0f\n",
               (unsigned long long)hist_pct(&st.lat, 50), (unsigned long long)hist_pct(&st.lat, 90),
               (unsigned long long)hist_pct(&st.lat, 99), (unsigned long long)st.lat.max_us, mean);
        printf("connection (connect -> server close) us: p50 %llu p99 %llu\n",
               (unsigned long long)hist_pct(&st.conn, 50), (unsigned long long)hist_pct(&st.conn, 99));
        printf("generator cpu %.1f%% (%.0f us/handshake)%s\n", cpu_pct,
               st.handshakes ? cpu * 1e6 / st.handshakes : 0,
               cpu_pct > 85 ? "  ** GENERATOR SATURATED: this measures the generator **" : "");
    }
    fflush(stdout);
    for (int i = 0; i < opt_concurrency; i++) if (conns[i].state != S_IDLE) conn_close(&conns[i]);
    SSL_CTX_free(ctx);
    return (st.handshakes > 0 && errs == 0) ? 0 : (st.handshakes > 0 ? 3 : 1);
}
