/*
 * edge.tls_edge._edgetls: the TLS edge's server side of TLS, driven in C over memory BIOs.
 *
 * Why: with Python's ssl module every tenant needs its own SSLContext (an SSL_CTX: ~25 KiB and ~0.7 ms of CPU to
 * build with OpenSSL 3.0), the handshake switches the connection to it from Python (sni_callback), and every
 * read/write of a handshake is a Python call through SSLObject + MemoryBIO. Here there is ONE SSL_CTX for the whole
 * edge; the certificate callback (SSL_CTX_set_cert_cb) hands each connection its tenant's certificate, chain and key
 * (SSL_use_cert_and_key: reference counts, no copy), picked by a Python callable from the in-memory SNI index, and a
 * connection's handshake and records are driven by one C call per chunk of bytes from the socket.
 *
 * Public surface (see edge/tls_edge/engine.py for the Python side):
 *   Chain(ders)                      an intermediate chain, decoded once and shared by every certificate it signs
 *   CertKey(leaf_der, key_der, chain=None, *, legacy_spki=None)
 *                                    a leaf and its private key (PKCS#8, SEC1 or PKCS#1 DER), proven to match;
 *                                    raises ValueError otherwise; legacy_spki: the leaf's key decoded without
 *                                    OSSL_DECODER (d2i_leaf), None = the module's set_legacy_spki() setting
 *   Engine(select, default, *, ciphers, tickets, release_buffers, challenges, min_versions)
 *                                    select(server_name: str | None) -> CertKey | None is called once per handshake,
 *                                    in the handshake, with the GIL held; None (or an exception) -> ``default``
 *                                    challenges: dict name -> CertKey, the TLS-ALPN-01 (RFC 8737) answers: a
 *                                    ClientHello offering only ALPN acme-tls/1 for such a name gets acme-tls/1 and
 *                                    that certificate (offering only acme-tls/1 for another name: alert 120)
 *                                    min_versions: dict name (or "*.parent") -> TLS1_2_VERSION / TLS1_3_VERSION, the
 *                                    lowest version a name accepts (SSL_set_min_proto_version before the version is
 *                                    chosen: a lower-only client gets alert 70). Both dicts are read in the
 *                                    ClientHello callback (memory only) and changed from Python (GIL held).
 *   Engine.conn() -> Conn            one server-side connection
 *   Conn.feed(data) -> (out, plain)  bytes from the peer in; TLS records to send and decrypted data out (None when
 *                                    there is none); raises Error(reason, out) when the connection fails (``out``
 *                                    holds the alert to send); ``Conn.eof`` is set by the peer's close_notify
 *   Conn.write(data) -> bytes        encrypt application data
 *   Conn.shutdown(last=b"") -> bytes (``last`` data, then) close_notify
 *   Conn.established, .session_reused, .server_name, .sni (normalised), .version(), .cipher(),
 *   .selected_alpn_protocol()
 *   When the client's Finished and its first data arrive in one feed, the records the handshake still sends (TLS 1.3
 *   tickets) are returned by the next write()/shutdown()/feed() with the answer: one write to the socket.
 *
 * Nothing here does I/O: the memory BIOs are filled and drained by the caller (asyncio transports).
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <Python.h>
#include <limits.h>
#include <string.h>
#include <strings.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/evp.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>
#include <openssl/bio.h>
#include <openssl/objects.h>
#ifndef OPENSSL_NO_ENGINE
#include <openssl/engine.h>
#endif

static PyObject *EdgeTlsError;

/* ------------------------------------------------------------------------------------------------ helpers */

static void set_openssl_error(PyObject *exc, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    PyErr_Format(exc, "%s: %s", what, reason ? reason : "unknown OpenSSL error");
    ERR_clear_error();
}

/* The leaf's public key without OpenSSL 3.0's OSSL_DECODER.
 *
 * d2i_X509 decodes the certificate's SubjectPublicKeyInfo at once. OpenSSL 3.0 tries the legacy decoder (the
 * EVP_PKEY_ASN1_METHOD's pub_decode) only when an ENGINE provides a pkey method for the key's type, and otherwise builds
 * an OSSL_DECODER context per call: ~0.87 M of the ~1.46 M instructions a CertKey cost (callgrind; OpenSSL >= 3.2
 * caches those contexts). So while d2i_X509 runs, an ENGINE whose pkey methods are OpenSSL's own built-in EC and RSA
 * methods is registered (the GIL serialises this): the key is decoded by the legacy pub_decode into a legacy EVP_PKEY,
 * the same key as the private one (EC_KEY / RSA), so X509_check_private_key and SSL_use_cert_and_key compare two
 * legacy keys directly instead of exporting one to the provider. The engine is unregistered right after. Another
 * thread inside this same libcrypto at that moment (Python's ssl releases the GIL) may be handed a pkey method through
 * it: OpenSSL's own built-in one, unchanged, which it would otherwise reach through the provider. Off by default
 * (CertKey(legacy_spki=True) or set_legacy_spki(True) ask for it).
 * The price (callgrind, per warm handshake): once registered, OpenSSL keeps its ENGINE table, which every later
 * EVP_PKEY_CTX looks up (~4 k instructions a handshake), and a legacy public key costs ~3 k more in the handshake's
 * own checks: ~0.3 % of a handshake, against 0.93 M saved per decode. So the SNI index asks for it only when its
 * names do not all stay decoded (edge/tls_edge/index.py: more names than the LRU holds). */
#ifndef OPENSSL_NO_ENGINE
static ENGINE *spki_engine;
static int spki_engine_failed;
static int legacy_spki = 0; /* the default of CertKey(legacy_spki=None) */
static const int spki_nids[] = {EVP_PKEY_EC, EVP_PKEY_RSA};

static int spki_pkey_meths(ENGINE *e, EVP_PKEY_METHOD **pmeth, const int **nids, int nid)
{
    (void)e;
    if (pmeth == NULL) {
        *nids = spki_nids;
        return (int)(sizeof spki_nids / sizeof spki_nids[0]);
    }
    *pmeth = (EVP_PKEY_METHOD *)EVP_PKEY_meth_find(nid); /* OpenSSL's built-in method, unchanged */
    return *pmeth != NULL;
}

static ENGINE *get_spki_engine(void)
{
    if (spki_engine == NULL && !spki_engine_failed) {
        ENGINE *e = ENGINE_new();
        if (e == NULL || !ENGINE_set_id(e, "edgecert-spki") || !ENGINE_set_name(e, "edgecert: legacy SPKI decode")
                || !ENGINE_set_pkey_meths(e, spki_pkey_meths)) {
            ENGINE_free(e);
            spki_engine_failed = 1;
            ERR_clear_error();
            return NULL;
        }
        spki_engine = e; /* kept for the process's life */
    }
    return spki_engine;
}
#endif

static X509 *d2i_leaf(const unsigned char **p, long len, int legacy)
{
    (void)legacy;
#ifndef OPENSSL_NO_ENGINE
    ENGINE *e = legacy ? get_spki_engine() : NULL;
    if (e != NULL && ENGINE_register_pkey_meths(e)) {
        X509 *x = d2i_X509(NULL, p, len);
        ENGINE_unregister_pkey_meths(e);
        return x;
    }
    ERR_clear_error();
#endif
    return d2i_X509(NULL, p, len);
}

/* ``legacy``: -1 = the module's setting (set_legacy_spki), 0 = OSSL_DECODER, 1 = the legacy decoder. */
static X509 *der_to_x509_ex(PyObject *obj, int legacy)
{
    Py_buffer b;
    if (PyObject_GetBuffer(obj, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = b.buf;
#ifndef OPENSSL_NO_ENGINE
    if (legacy < 0)
        legacy = legacy_spki;
#endif
    X509 *x = d2i_leaf(&p, (long)b.len, legacy > 0);
    int trailing = x != NULL && p != (const unsigned char *)b.buf + b.len;
    PyBuffer_Release(&b);
    if (x == NULL) {
        set_openssl_error(PyExc_ValueError, "not a DER certificate");
        return NULL;
    }
    if (trailing) {
        X509_free(x);
        PyErr_SetString(PyExc_ValueError, "trailing data after the DER certificate");
        return NULL;
    }
    return x;
}

static X509 *der_to_x509(PyObject *obj)
{
    return der_to_x509_ex(obj, -1);
}

/* An EVP_PKEY owning ``ec`` / ``rsa`` (freed on failure). */
static EVP_PKEY *wrap_ec(EC_KEY *ec)
{
    EVP_PKEY *pkey = EVP_PKEY_new();
    if (pkey == NULL || !EVP_PKEY_assign_EC_KEY(pkey, ec)) {
        EVP_PKEY_free(pkey);
        EC_KEY_free(ec);
        return NULL;
    }
    return pkey;
}

static EVP_PKEY *wrap_rsa(RSA *rsa)
{
    EVP_PKEY *pkey = EVP_PKEY_new();
    if (pkey == NULL || !EVP_PKEY_assign_RSA(pkey, rsa)) {
        EVP_PKEY_free(pkey);
        RSA_free(rsa);
        return NULL;
    }
    return pkey;
}

/* An empty EC_KEY on the named curve. The group is built once per curve and copied (EC_GROUP_new_by_curve_name
 * recomputes the curve's Montgomery constants every time: ~40 us for P-256; a copy is a few). */
static EC_KEY *ec_key_for_curve(int nid)
{
    static EC_GROUP *groups[4];
    static int nids[4];
    EC_GROUP *g = NULL;
    for (int i = 0; i < 4 && nids[i] != 0; i++)
        if (nids[i] == nid)
            g = groups[i];
    if (g == NULL) {
        g = EC_GROUP_new_by_curve_name(nid);
        if (g == NULL)
            return NULL;
        for (int i = 0; i < 4; i++) {
            if (nids[i] == 0) {  /* the GIL serialises callers */
                groups[i] = g;
                nids[i] = nid;
                break;
            }
            if (i == 3) {  /* table full: a fifth curve is simply not cached */
                EC_KEY *ec = EC_KEY_new();
                if (ec == NULL || !EC_KEY_set_group(ec, g)) {
                    EC_KEY_free(ec);
                    ec = NULL;
                }
                EC_GROUP_free(g);
                return ec;
            }
        }
    }
    EC_KEY *ec = EC_KEY_new();
    if (ec == NULL || !EC_KEY_set_group(ec, g)) {
        EC_KEY_free(ec);
        return NULL;
    }
    return ec;
}

/* A private key from DER without OpenSSL 3.0's OSSL_DECODER chains (which cost ~0.5 ms per key): PKCS#8 is
 * unwrapped with the ASN.1 codec, then the SEC1 / PKCS#1 body decoded directly. */
static EVP_PKEY *der_to_pkey(const unsigned char *der, long len)
{
    const unsigned char *p = der;
    EVP_PKEY *pkey = NULL;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, len);
    if (p8 != NULL) {
        const ASN1_OBJECT *algoid;
        const unsigned char *pk;
        int pklen;
        const X509_ALGOR *alg;
        if (PKCS8_pkey_get0(&algoid, &pk, &pklen, &alg, p8)) {
            int nid = OBJ_obj2nid(algoid);
            if (nid == NID_X9_62_id_ecPublicKey) {
                int ptype;
                const void *pval;
                X509_ALGOR_get0(NULL, &ptype, &pval, alg);
                if (ptype == V_ASN1_OBJECT) {
                    EC_KEY *ec = ec_key_for_curve(OBJ_obj2nid((const ASN1_OBJECT *)pval));
                    if (ec != NULL && d2i_ECPrivateKey(&ec, &pk, pklen) != NULL)
                        pkey = wrap_ec(ec);
                    else
                        EC_KEY_free(ec);
                }
            } else if (nid == NID_rsaEncryption) {
                RSA *rsa = d2i_RSAPrivateKey(NULL, &pk, pklen);
                if (rsa != NULL)
                    pkey = wrap_rsa(rsa);
            }
        }
        PKCS8_PRIV_KEY_INFO_free(p8);
        return pkey;
    }
    ERR_clear_error();
    p = der;
    EC_KEY *ec = d2i_ECPrivateKey(NULL, &p, len);
    if (ec != NULL)
        return wrap_ec(ec);
    ERR_clear_error();
    p = der;
    RSA *rsa = d2i_RSAPrivateKey(NULL, &p, len);
    if (rsa != NULL)
        return wrap_rsa(rsa);
    ERR_clear_error();
    return NULL;
}

/* One server-side connection (defined here: the engine's callbacks reach it through SSL_get_app_data). */
typedef struct {
    PyObject_HEAD
    SSL *ssl;
    BIO *rbio, *wbio;   /* owned by ssl */
    PyObject *engine;
    char established;
    char eof;
    char failed;
    char hello_sni[256]; /* the SNI of the ClientHello ("" when none), read before any extension is processed */
    char acme_only;      /* TLS-ALPN-01: the ClientHello offers exactly one ALPN protocol, acme-tls/1 */
    PyObject *acme;      /* TLS-ALPN-01: the challenge CertKey chosen for this handshake (strong), or NULL */
} ConnObject;

/* ------------------------------------------------------------------------------------------------ Chain */

typedef struct {
    PyObject_HEAD
    STACK_OF(X509) *sk;
} ChainObject;

static PyTypeObject ChainType;

static int Chain_init(ChainObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ders", NULL};
    PyObject *ders;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Chain", kwlist, &ders))
        return -1;
    PyObject *seq = PySequence_Fast(ders, "Chain() takes a sequence of DER certificates");
    if (seq == NULL)
        return -1;
    STACK_OF(X509) *sk = sk_X509_new_null();
    if (sk == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        X509 *x = der_to_x509(PySequence_Fast_GET_ITEM(seq, i));
        if (x == NULL || !sk_X509_push(sk, x)) {
            X509_free(x);
            sk_X509_pop_free(sk, X509_free);
            Py_DECREF(seq);
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            return -1;
        }
    }
    Py_DECREF(seq);
    if (self->sk != NULL)
        sk_X509_pop_free(self->sk, X509_free);
    self->sk = sk;
    return 0;
}

static void Chain_dealloc(ChainObject *self)
{
    if (self->sk != NULL)
        sk_X509_pop_free(self->sk, X509_free);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t Chain_len(ChainObject *self)
{
    return self->sk ? sk_X509_num(self->sk) : 0;
}

static PySequenceMethods Chain_as_sequence = {.sq_length = (lenfunc)Chain_len};

static PyTypeObject ChainType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edge.tls_edge._edgetls.Chain",
    .tp_basicsize = sizeof(ChainObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Chain(ders): intermediate certificates (DER), decoded once and shared.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Chain_init,
    .tp_dealloc = (destructor)Chain_dealloc,
    .tp_as_sequence = &Chain_as_sequence,
};

/* ------------------------------------------------------------------------------------------------ CertKey */

typedef struct {
    PyObject_HEAD
    X509 *x;
    EVP_PKEY *pkey;
    ChainObject *chain; /* strong reference or NULL */
} CertKeyObject;

static PyTypeObject CertKeyType;

static int CertKey_init(CertKeyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"leaf_der", "key_der", "chain", "legacy_spki", NULL};
    PyObject *leaf;
    Py_buffer key;
    PyObject *chain = Py_None;
    PyObject *legacy_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oy*|O$O:CertKey", kwlist, &leaf, &key, &chain, &legacy_obj))
        return -1;
    int legacy = legacy_obj == Py_None ? -1 : PyObject_IsTrue(legacy_obj);
    if (legacy_obj != Py_None && legacy < 0) {
        PyBuffer_Release(&key);
        return -1;
    }
    if (chain != Py_None && !PyObject_TypeCheck(chain, &ChainType)) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_TypeError, "chain must be a Chain or None");
        return -1;
    }
    X509 *x = der_to_x509_ex(leaf, legacy);
    if (x == NULL) {
        PyBuffer_Release(&key);
        return -1;
    }
    EVP_PKEY *pkey = der_to_pkey(key.buf, (long)key.len);
    PyBuffer_Release(&key);
    if (pkey == NULL) {
        X509_free(x);
        PyErr_SetString(PyExc_ValueError, "the private key is not an EC or RSA key in PKCS#8, SEC1 or PKCS#1 DER");
        return -1;
    }
    if (X509_check_private_key(x, pkey) != 1) {
        ERR_clear_error();
        X509_free(x);
        EVP_PKEY_free(pkey);
        PyErr_SetString(PyExc_ValueError, "the private key does not match the certificate");
        return -1;
    }
    /* The key is a legacy EC_KEY / RSA; OpenSSL 3.0 signs with a provider's copy of it, made and cached in the key
     * on its first use (~0.19 M instructions for P-256, most of it rebuilding the curve's group). Made here, so a
     * CertKey built ahead of time (prewarm, put) costs a handshake nothing more than a warm one. */
    EVP_PKEY_CTX *sctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (sctx == NULL || EVP_PKEY_sign_init(sctx) != 1)
        ERR_clear_error(); /* not fatal: the first handshake makes it */
    EVP_PKEY_CTX_free(sctx);
    X509_free(self->x);
    EVP_PKEY_free(self->pkey);
    Py_CLEAR(self->chain);
    self->x = x;
    self->pkey = pkey;
    if (chain != Py_None) {
        Py_INCREF(chain);
        self->chain = (ChainObject *)chain;
    }
    return 0;
}

static void CertKey_dealloc(CertKeyObject *self)
{
    X509_free(self->x);
    EVP_PKEY_free(self->pkey);
    Py_XDECREF(self->chain);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject CertKeyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edge.tls_edge._edgetls.CertKey",
    .tp_basicsize = sizeof(CertKeyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "CertKey(leaf_der, key_der, chain=None): a certificate and its private key, proven to match.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)CertKey_init,
    .tp_dealloc = (destructor)CertKey_dealloc,
};

/* ------------------------------------------------------------------------------------------------ Engine */

typedef struct {
    PyObject_HEAD
    SSL_CTX *ctx;
    PyObject *select;         /* callable(server_name) -> CertKey | None */
    CertKeyObject *deflt;     /* served without SNI, for unknown names, or when select fails */
    PyObject *challenges;     /* dict: name -> CertKey, TLS-ALPN-01 answers (RFC 8737) */
    PyObject *min_versions;   /* dict: name or "*.parent" -> lowest TLS version accepted (int) */
    unsigned long long select_errors;
    PyObject *h2;             /* HTTP/2 (h2 helper): None -> ALPN http/1.1 only; True -> h2 too; callable(name) -> bool */
} EngineObject;

static PyTypeObject EngineType;

static int cert_cb(SSL *ssl, void *arg)
{
    EngineObject *eng = (EngineObject *)arg;
    ConnObject *conn = (ConnObject *)SSL_get_app_data(ssl);
    if (conn != NULL && conn->acme != NULL) { /* TLS-ALPN-01: chosen in client_hello_cb, no select() */
        CertKeyObject *ack = (CertKeyObject *)conn->acme;
        return SSL_use_cert_and_key(ssl, ack->x, ack->pkey, NULL, 1) == 1;
    }
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    PyObject *pyname;
    if (name != NULL)
        pyname = PyUnicode_DecodeLatin1(name, (Py_ssize_t)strlen(name), NULL);
    else
        pyname = Py_NewRef(Py_None);
    PyObject *r = pyname ? PyObject_CallOneArg(eng->select, pyname) : NULL;
    Py_XDECREF(pyname);
    CertKeyObject *ck = eng->deflt;
    if (r == NULL) {
        eng->select_errors++;
        PyErr_WriteUnraisable(eng->select);
    } else if (Py_TYPE(r) == &CertKeyType) {
        ck = (CertKeyObject *)r;
    }
    int ok = SSL_use_cert_and_key(ssl, ck->x, ck->pkey, ck->chain ? ck->chain->sk : NULL, 1);
    Py_XDECREF(r);
    return ok == 1 ? 1 : 0;
}

static int servername_cb(SSL *ssl, int *al, void *arg)
{
    (void)ssl; (void)al; (void)arg;
    return SSL_TLSEXT_ERR_OK; /* acknowledge SNI; the certificate is chosen in cert_cb */
}

/* ---- HTTP/2 through ALPN (edge/tls_edge/h2.py) ----------------------------------------------------------------
 * h2 is chosen when the client offers it and the engine's `h2` says so for this connection's SNI: None (default)
 * -> never; True -> always; a callable(server_name or None) -> its truth (the per-hostname switch; memory only).
 * The SNI callback has run when OpenSSL asks for ALPN, so SSL_get_servername is the name of the ClientHello. */
static int alpn_h2_allowed(SSL *ssl, EngineObject *eng)
{
    PyObject *h2 = eng != NULL ? eng->h2 : NULL;
    if (h2 == NULL || h2 == Py_None || h2 == Py_False)
        return 0;
    if (h2 == Py_True)
        return 1;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    PyObject *pyname = name != NULL ? PyUnicode_DecodeLatin1(name, (Py_ssize_t)strlen(name), NULL)
                                    : Py_NewRef(Py_None);
    PyObject *r = pyname != NULL ? PyObject_CallOneArg(h2, pyname) : NULL;
    Py_XDECREF(pyname);
    int ok = 0;
    if (r == NULL)
        PyErr_WriteUnraisable(h2); /* a failing switch offers http/1.1 only */
    else {
        ok = PyObject_IsTrue(r) == 1;
        if (PyErr_Occurred())
            PyErr_WriteUnraisable(h2);
        Py_DECREF(r);
    }
    return ok;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    static const unsigned char protos[] = "\x08http/1.1";
    /* TLS-ALPN-01 (RFC 8737), decided in client_hello_cb: acme-tls/1 with the challenge certificate; offered alone
     * for a name without a pending answer: no_application_protocol (alert 120). Then the edge's own list. */
    ConnObject *ac = (ConnObject *)SSL_get_app_data(ssl);
    if (ac != NULL && ac->acme_only) {
        if (ac->acme == NULL)
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        *out = in + 1; /* the one protocol offered: acme-tls/1 */
        *outlen = in[0];
        return SSL_TLSEXT_ERR_OK;
    }
    static const unsigned char protos_h2[] = "\x02h2\x08http/1.1"; /* HTTP/2 (h2 helper): our preference order */
    const unsigned char *ours = protos;
    unsigned int ours_len = sizeof(protos) - 1;
    int offers_h2 = 0;
    for (unsigned int i = 0; i < inlen; i += 1u + in[i]) /* the client's list: length-prefixed names */
        if (in[i] == 2 && i + 3 <= inlen && in[i + 1] == 'h' && in[i + 2] == '2')
            offers_h2 = 1;
    if (offers_h2 && alpn_h2_allowed(ssl, (EngineObject *)arg)) {
        ours = protos_h2;
        ours_len = sizeof(protos_h2) - 1;
    }
    if (SSL_select_next_proto((unsigned char **)out, outlen, ours, ours_len, in, inlen)
            == OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_NOACK;
}

static int ticket_gen_cb(SSL *s, void *arg)
{
    (void)s; (void)arg;
    return 1;
}

/* TLS-ALPN-01 (RFC 8737): the ClientHello offers exactly one ALPN protocol, acme-tls/1 (what an ACME validator
 * sends; CertMagic tests the same). Browsers and other clients never do. */
static int hello_offers_acme_only(SSL *s)
{
    const unsigned char *p;
    size_t len;
    if (!SSL_client_hello_get0_ext(s, TLSEXT_TYPE_application_layer_protocol_negotiation, &p, &len) || len != 13)
        return 0;
    return p[0] == 0 && p[1] == 11 && p[2] == 10 && memcmp(p + 3, "acme-tls/1", 10) == 0;
}

/* ``name`` lower-cased (ASCII) without one trailing dot, as the SNI index keys its names, as a str (Latin-1: bytes
 * that are not ASCII never match a key). */
static PyObject *index_key(const char *name, int wildcard)
{
    char buf[258];
    size_t n = strlen(name);
    if (n > 0 && name[n - 1] == '.')
        n--;
    const char *from = name;
    size_t at = 0;
    if (wildcard) { /* "*" + the name from its first dot: the wildcard one label up */
        const char *dot = memchr(name, '.', n);
        if (dot == NULL || dot == name)
            return Py_NewRef(Py_None);
        buf[at++] = '*';
        n -= (size_t)(dot - name);
        from = dot;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = from[i];
        buf[at++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
    }
    return PyUnicode_DecodeLatin1(buf, (Py_ssize_t)at, NULL);
}

/* The value of ``d`` for the SNI (exact name, then the wildcard one label up when ``wildcard``), borrowed, or NULL
 * (a Python error is reported as unraisable: the handshake goes on without it). */
static PyObject *lookup_name(PyObject *d, const char *sni, int wildcard)
{
    for (int w = 0; w <= wildcard; w++) {
        PyObject *key = index_key(sni, w);
        if (key == NULL)
            break;
        if (key == Py_None) {
            Py_DECREF(key);
            return NULL;
        }
        PyObject *v = PyDict_GetItemWithError(d, key);
        Py_DECREF(key);
        if (v != NULL)
            return v;
        if (PyErr_Occurred())
            break;
    }
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(d);
    return NULL;
}

/* The ClientHello callback runs first, before the TLS version is chosen and before SNI, tickets, the certificate
 * and ALPN are processed. Memory only. It keeps:
 * - the SNI on the connection, for ticket_dec_cb (SSL_get_servername is not set yet when a TLS 1.3 ticket is
 *   decrypted);
 * - TLS-ALPN-01: whether only acme-tls/1 is offered, and the name's challenge CertKey (cert_cb and alpn_cb use them;
 *   no resumption, no tickets for such a handshake);
 * - the name's minimum TLS version (per-hostname min_tls_version), applied with SSL_set_min_proto_version. */
static int client_hello_cb(SSL *s, int *al, void *arg)
{
    (void)al;
    EngineObject *eng = (EngineObject *)arg;
    ConnObject *c = (ConnObject *)SSL_get_app_data(s);
    const unsigned char *p;
    size_t len;
    if (c == NULL)
        return SSL_CLIENT_HELLO_SUCCESS;
    c->hello_sni[0] = 0;
    /* server_name: list length (2), then entries of type (1) + name length (2) + name; the first host_name wins */
    if (SSL_client_hello_get0_ext(s, TLSEXT_TYPE_server_name, &p, &len) && len >= 5) {
        size_t list = ((size_t)p[0] << 8) | p[1];
        if (list + 2 <= len && p[2] == TLSEXT_NAMETYPE_host_name) {
            size_t n = ((size_t)p[3] << 8) | p[4];
            if (n > 0 && n < sizeof c->hello_sni && 5 + n <= len && memchr(p + 5, 0, n) == NULL) {
                memcpy(c->hello_sni, p + 5, n);
                c->hello_sni[n] = 0;
            }
        }
    }
    Py_CLEAR(c->acme); /* (called again for the second ClientHello after a HelloRetryRequest) */
    c->acme_only = (char)hello_offers_acme_only(s);
    if (eng == NULL || eng->challenges == NULL || eng->min_versions == NULL || c->hello_sni[0] == 0)
        return SSL_CLIENT_HELLO_SUCCESS;
    if (c->acme_only && PyDict_GET_SIZE(eng->challenges) > 0) {
        PyObject *ck = lookup_name(eng->challenges, c->hello_sni, 0);
        if (ck != NULL && Py_TYPE(ck) == &CertKeyType) {
            c->acme = Py_NewRef(ck);
            SSL_set_options(s, SSL_OP_NO_TICKET);
            SSL_set_num_tickets(s, 0);
            return SSL_CLIENT_HELLO_SUCCESS; /* a validation: no per-name version floor */
        }
    }
    if (PyDict_GET_SIZE(eng->min_versions) > 0) {
        PyObject *v = lookup_name(eng->min_versions, c->hello_sni, 1);
        if (v != NULL) {
            long ver = PyLong_AsLong(v);
            if (ver == -1 && PyErr_Occurred())
                PyErr_WriteUnraisable(eng->min_versions);
            else if (ver == TLS1_2_VERSION || ver == TLS1_3_VERSION)
                SSL_set_min_proto_version(s, (int)ver);
        }
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* One ticket key for every tenant: a ticket resumes only for the name it was issued to. */
static SSL_TICKET_RETURN ticket_dec_cb(SSL *s, SSL_SESSION *ss, const unsigned char *keyname, size_t keyname_length,
                                       SSL_TICKET_STATUS status, void *arg)
{
    (void)keyname; (void)keyname_length; (void)arg;
    if (status != SSL_TICKET_SUCCESS && status != SSL_TICKET_SUCCESS_RENEW)
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    const char *was = SSL_SESSION_get0_hostname(ss);
    ConnObject *c = (ConnObject *)SSL_get_app_data(s);
    if (was == NULL || c == NULL || c->hello_sni[0] == 0 || c->acme_only || strcasecmp(was, c->hello_sni) != 0)
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    return status == SSL_TICKET_SUCCESS ? SSL_TICKET_RETURN_USE : SSL_TICKET_RETURN_USE_RENEW;
}

static int Engine_init(EngineObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"select", "default", "ciphers", "tickets", "release_buffers", "challenges",
                             "min_versions", NULL};
    PyObject *select, *deflt, *challenges = NULL, *min_versions = NULL;
    const char *ciphers = NULL;
    int tickets = 1, release_buffers = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!|$zppO!O!:Engine", kwlist, &select, &CertKeyType, &deflt,
                                     &ciphers, &tickets, &release_buffers, &PyDict_Type, &challenges,
                                     &PyDict_Type, &min_versions))
        return -1;
    if (!PyCallable_Check(select)) {
        PyErr_SetString(PyExc_TypeError, "select must be callable");
        return -1;
    }
    if (self->ctx != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Engine already initialised");
        return -1;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        set_openssl_error(EdgeTlsError, "SSL_CTX_new");
        return -1;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) || !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)
            || (ciphers != NULL && !SSL_CTX_set_cipher_list(ctx, ciphers))) {
        SSL_CTX_free(ctx);
        set_openssl_error(PyExc_ValueError, "TLS settings");
        return -1;
    }
    /* Mozilla's "intermediate" configuration: every suite offered is a strong AEAD one, so the client's order
       decides (no SSL_OP_CIPHER_SERVER_PREFERENCE): AES-GCM where it has AES instructions, ChaCha20 where it has
       none (phones); TLS 1.3 in Mozilla's order, AES-128 first. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_SINGLE_ECDH_USE
                             | SSL_OP_SINGLE_DH_USE);
    if (!SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")) {
        SSL_CTX_free(ctx);
        set_openssl_error(PyExc_ValueError, "TLS 1.3 ciphersuites");
        return -1;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* resumption only by tickets (stateless) */
    if (tickets) {
        SSL_CTX_set_session_ticket_cb(ctx, ticket_gen_cb, ticket_dec_cb, NULL);
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, self);
    if (release_buffers)
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_cert_cb(ctx, cert_cb, self);
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, self);
    self->ctx = ctx;
    Py_INCREF(select);
    self->select = select;
    Py_INCREF(deflt);
    self->deflt = (CertKeyObject *)deflt;
    self->challenges = challenges != NULL ? Py_NewRef(challenges) : PyDict_New();
    self->min_versions = min_versions != NULL ? Py_NewRef(min_versions) : PyDict_New();
    if (self->challenges == NULL || self->min_versions == NULL)
        return -1;
    self->h2 = Py_NewRef(Py_None);
    return 0;
}

static int Engine_traverse(EngineObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->select);
    Py_VISIT(self->deflt);
    Py_VISIT(self->challenges);
    Py_VISIT(self->min_versions);
    Py_VISIT(self->h2);
    return 0;
}

static int Engine_clear(EngineObject *self)
{
    Py_CLEAR(self->select);
    Py_CLEAR(self->deflt);
    Py_CLEAR(self->challenges);
    Py_CLEAR(self->min_versions);
    Py_CLEAR(self->h2);
    return 0;
}

static void Engine_dealloc(EngineObject *self)
{
    PyObject_GC_UnTrack(self);
    Engine_clear(self);
    if (self->ctx != NULL)
        SSL_CTX_free(self->ctx);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Engine_set_default(EngineObject *self, PyObject *ck)
{
    if (!PyObject_TypeCheck(ck, &CertKeyType)) {
        PyErr_SetString(PyExc_TypeError, "a CertKey is needed");
        return NULL;
    }
    Py_INCREF(ck);
    Py_XSETREF(self->deflt, (CertKeyObject *)ck);
    Py_RETURN_NONE;
}

static PyObject *Engine_conn(EngineObject *self, PyObject *unused);

static PyObject *Engine_get_select_errors(EngineObject *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->select_errors);
}

static PyMethodDef Engine_methods[] = {
    {"conn", (PyCFunction)Engine_conn, METH_NOARGS, "A new server-side connection."},
    {"set_default", (PyCFunction)Engine_set_default, METH_O, "Replace the default certificate."},
    {NULL}
};

static PyObject *Engine_get_challenges(EngineObject *self, void *closure)
{
    return Py_NewRef(self->challenges ? self->challenges : Py_None);
}

static PyObject *Engine_get_min_versions(EngineObject *self, void *closure)
{
    return Py_NewRef(self->min_versions ? self->min_versions : Py_None);
}

static PyObject *Engine_get_h2(EngineObject *self, void *closure)
{
    return Py_NewRef(self->h2 != NULL ? self->h2 : Py_None);
}

static int Engine_set_h2(EngineObject *self, PyObject *value, void *closure)
{
    if (value == NULL)
        value = Py_None;
    if (value != Py_None && value != Py_True && value != Py_False && !PyCallable_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "h2 must be None, a bool or a callable(server_name) -> bool");
        return -1;
    }
    Py_XSETREF(self->h2, Py_NewRef(value));
    return 0;
}

static PyGetSetDef Engine_getset[] = {
    {"select_errors", (getter)Engine_get_select_errors, NULL, "select() calls that raised", NULL},
    {"challenges", (getter)Engine_get_challenges, NULL, "the TLS-ALPN-01 answers: name -> CertKey", NULL},
    {"min_versions", (getter)Engine_get_min_versions, NULL, "name -> lowest TLS version accepted", NULL},
    {"h2", (getter)Engine_get_h2, (setter)Engine_set_h2,
     "HTTP/2 by ALPN: None (http/1.1 only), True, or callable(server_name) -> bool (per hostname)", NULL},
    {NULL}
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edge.tls_edge._edgetls.Engine",
    .tp_basicsize = sizeof(EngineObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Engine(select, default, *, ciphers=None, tickets=True, release_buffers=True): one SSL_CTX for "
              "every tenant; select(server_name) picks the CertKey per handshake.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_traverse = (traverseproc)Engine_traverse,
    .tp_clear = (inquiry)Engine_clear,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

/* ------------------------------------------------------------------------------------------------ Conn */



static PyTypeObject ConnType;

static PyObject *Engine_conn(EngineObject *self, PyObject *unused)
{
    (void)unused;
    if (self->ctx == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Engine not initialised");
        return NULL;
    }
    ConnObject *c = PyObject_New(ConnObject, &ConnType);
    if (c == NULL)
        return NULL;
    c->ssl = NULL;
    c->engine = NULL;
    c->established = c->eof = c->failed = 0;
    c->hello_sni[0] = 0;
    c->acme_only = 0;
    c->acme = NULL;
    SSL *ssl = SSL_new(self->ctx);
    BIO *rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(BIO_s_mem());
    if (ssl == NULL || rbio == NULL || wbio == NULL) {
        SSL_free(ssl);
        BIO_free(rbio);
        BIO_free(wbio);
        Py_DECREF(c);
        set_openssl_error(EdgeTlsError, "SSL_new");
        return NULL;
    }
    BIO_set_mem_eof_return(rbio, -1); /* empty = "want more", not end of stream */
    BIO_set_mem_eof_return(wbio, -1);
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_accept_state(ssl);
    SSL_set_app_data(ssl, c); /* borrowed: the Conn owns the SSL */
    c->ssl = ssl;
    c->rbio = rbio;
    c->wbio = wbio;
    Py_INCREF(self);
    c->engine = (PyObject *)self;
    return (PyObject *)c;
}

static void Conn_dealloc(ConnObject *self)
{
    if (self->ssl != NULL)
        SSL_free(self->ssl);
    Py_XDECREF(self->acme);
    Py_XDECREF(self->engine);
    PyObject_Free(self);
}

/* What OpenSSL wrote to the network side, as bytes (None when nothing). */
static PyObject *drain(ConnObject *self)
{
    size_t n = BIO_ctrl_pending(self->wbio);
    if (n == 0)
        Py_RETURN_NONE;
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (b == NULL)
        return NULL;
    int got = BIO_read(self->wbio, PyBytes_AS_STRING(b), (int)n);
    if (got != (int)n) {
        Py_DECREF(b);
        PyErr_SetString(EdgeTlsError, "short read from the write BIO");
        return NULL;
    }
    return b;
}

static PyObject *fail(ConnObject *self, int sslerr)
{
    self->failed = 1;
    unsigned long e = ERR_peek_last_error();
    const char *reason = NULL;
    char buf[128];
    if (e) {
        reason = ERR_reason_error_string(e);
        if (reason == NULL) {
            ERR_error_string_n(e, buf, sizeof buf);
            reason = buf;
        }
    } else if (sslerr == SSL_ERROR_ZERO_RETURN) {
        reason = "close_notify during the handshake";
    } else {
        reason = "TLS failure";
    }
    PyObject *out = drain(self);
    ERR_clear_error();
    if (out == NULL)
        return NULL;
    PyObject *exc = PyObject_CallFunction(EdgeTlsError, "sO", reason, out);
    Py_DECREF(out);
    if (exc != NULL) {
        PyErr_SetObject(EdgeTlsError, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static int write_in(ConnObject *self, PyObject *data)
{
    Py_buffer b;
    if (PyObject_GetBuffer(data, &b, PyBUF_SIMPLE) < 0)
        return -1;
    if (b.len > INT_MAX) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "chunk too large");
        return -1;
    }
    if (b.len > 0 && BIO_write(self->rbio, b.buf, (int)b.len) != (int)b.len) {
        PyBuffer_Release(&b);
        PyErr_NoMemory();
        return -1;
    }
    PyBuffer_Release(&b);
    return 0;
}

/* Decrypt everything available; None when nothing. Sets self->eof on close_notify. */
static PyObject *read_all(ConnObject *self, int *err)
{
    size_t cap = BIO_ctrl_pending(self->rbio) + (size_t)SSL_pending(self->ssl);
    *err = 0;
    if (cap == 0 && !SSL_has_pending(self->ssl))
        Py_RETURN_NONE;
    if (cap < 1024)
        cap = 1024;
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
    if (b == NULL)
        return NULL;
    size_t used = 0;
    ERR_clear_error();
    for (;;) {
        if (used == cap) {
            cap *= 2;
            if (_PyBytes_Resize(&b, (Py_ssize_t)cap) < 0)
                return NULL;
        }
        size_t got = 0;
        int r = SSL_read_ex(self->ssl, PyBytes_AS_STRING(b) + used, cap - used, &got);
        if (r == 1) {
            used += got;
            /* nothing left to decrypt: no bytes in the BIO, no record or plaintext inside OpenSSL (one SSL_read_ex
             * less per chunk, the one that could only say "want read") */
            if (BIO_ctrl_pending(self->rbio) == 0 && !SSL_has_pending(self->ssl))
                break;
            continue;
        }
        int e = SSL_get_error(self->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            self->eof = 1;
            break;
        }
        *err = e;
        break;
    }
    if (*err) {
        Py_DECREF(b);
        return NULL;
    }
    if (used == 0) {
        Py_DECREF(b);
        Py_RETURN_NONE;
    }
    if (_PyBytes_Resize(&b, (Py_ssize_t)used) < 0)
        return NULL;
    return b;
}

static PyObject *Conn_feed(ConnObject *self, PyObject *data)
{
    if (self->failed) {
        PyErr_SetString(EdgeTlsError, "the connection has failed");
        return NULL;
    }
    if (write_in(self, data) < 0)
        return NULL;
    int just_established = 0;
    if (!self->established) {
        ERR_clear_error();
        int r = SSL_do_handshake(self->ssl);
        if (r != 1) {
            int e = SSL_get_error(self->ssl, r);
            if (e != SSL_ERROR_WANT_READ)
                return fail(self, e);
            PyObject *out = drain(self);
            if (out == NULL)
                return NULL;
            PyObject *t = PyTuple_Pack(2, out, Py_None);
            Py_DECREF(out);
            return t;
        }
        self->established = 1;
        just_established = 1;
    }
    int err;
    PyObject *plain = read_all(self, &err);
    if (plain == NULL) {
        if (err)
            return fail(self, err);
        return NULL;
    }
    if (just_established && plain != Py_None) {
        /* The client's Finished came with its first request: what the handshake still has to send (TLS 1.3 session
         * tickets) stays in the write BIO and goes out with the answer, in one write (Conn.write / shutdown / the
         * next feed drain it, in order). */
        PyObject *t = PyTuple_Pack(2, Py_None, plain);
        Py_DECREF(plain);
        return t;
    }
    PyObject *out = drain(self);
    if (out == NULL) {
        Py_DECREF(plain);
        return NULL;
    }
    PyObject *t = PyTuple_Pack(2, out, plain);
    Py_DECREF(out);
    Py_DECREF(plain);
    return t;
}

static PyObject *Conn_write(ConnObject *self, PyObject *data)
{
    if (self->failed || !self->established) {
        PyErr_SetString(EdgeTlsError, "the connection is not established");
        return NULL;
    }
    Py_buffer b;
    if (PyObject_GetBuffer(data, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    if (b.len > 0) {
        size_t done = 0;
        ERR_clear_error();
        int r = SSL_write_ex(self->ssl, b.buf, (size_t)b.len, &done);
        PyBuffer_Release(&b);
        if (r != 1 || done != (size_t)b.len)
            return fail(self, SSL_get_error(self->ssl, r));
    } else {
        PyBuffer_Release(&b);
    }
    PyObject *out = drain(self);
    if (out == Py_None) {
        Py_DECREF(out);
        return PyBytes_FromStringAndSize(NULL, 0);
    }
    return out;
}

static PyObject *Conn_shutdown(ConnObject *self, PyObject *args)
{
    PyObject *last = NULL;
    if (!PyArg_ParseTuple(args, "|O:shutdown", &last))
        return NULL;
    if (self->established && !self->failed) {
        if (last != NULL && last != Py_None) {
            Py_buffer b;
            if (PyObject_GetBuffer(last, &b, PyBUF_SIMPLE) < 0)
                return NULL;
            size_t done = 0;
            if (b.len > 0)
                SSL_write_ex(self->ssl, b.buf, (size_t)b.len, &done);
            PyBuffer_Release(&b);
        }
        if (!(SSL_get_shutdown(self->ssl) & SSL_SENT_SHUTDOWN))
            SSL_shutdown(self->ssl); /* sends close_notify; the peer's is not awaited */
        ERR_clear_error();
    }
    PyObject *out = drain(self);
    if (out == Py_None) {
        Py_DECREF(out);
        return PyBytes_FromStringAndSize(NULL, 0);
    }
    return out;
}

static PyObject *Conn_version(ConnObject *self, PyObject *unused)
{
    if (!self->established)
        Py_RETURN_NONE;
    return PyUnicode_FromString(SSL_get_version(self->ssl));
}

static PyObject *Conn_cipher(ConnObject *self, PyObject *unused)
{
    const SSL_CIPHER *c = self->established ? SSL_get_current_cipher(self->ssl) : NULL;
    if (c == NULL)
        Py_RETURN_NONE;
    return Py_BuildValue("(ssi)", SSL_CIPHER_get_name(c), SSL_CIPHER_get_version(c), SSL_CIPHER_get_bits(c, NULL));
}

static PyObject *Conn_alpn(ConnObject *self, PyObject *unused)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(self->ssl, &p, &n);
    if (p == NULL || n == 0)
        Py_RETURN_NONE;
    return PyUnicode_DecodeLatin1((const char *)p, n, NULL);
}

static PyObject *Conn_getpeercert(ConnObject *self, PyObject *args)
{
    Py_RETURN_NONE; /* the edge asks for no client certificates */
}

static PyObject *Conn_certificate(ConnObject *self, PyObject *unused)
{
    X509 *x = SSL_get_certificate(self->ssl);
    if (x == NULL)
        Py_RETURN_NONE;
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    if (n < 0) {
        set_openssl_error(EdgeTlsError, "i2d_X509");
        return NULL;
    }
    PyObject *b = PyBytes_FromStringAndSize((const char *)der, n);
    OPENSSL_free(der);
    return b;
}

static PyObject *Conn_get_server_name(ConnObject *self, void *closure)
{
    const char *name = SSL_get_servername(self->ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL)
        Py_RETURN_NONE;
    return PyUnicode_DecodeLatin1(name, (Py_ssize_t)strlen(name), NULL);
}

static PyObject *Conn_get_sni(ConnObject *self, void *closure)
{
    const char *name = SSL_get_servername(self->ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL)
        Py_RETURN_NONE;
    return index_key(name, 0); /* lower-cased (ASCII), without one trailing dot: the SNI index's key */
}

static PyObject *Conn_get_established(ConnObject *self, void *closure)
{
    return PyBool_FromLong(self->established);
}

static PyObject *Conn_get_eof(ConnObject *self, void *closure)
{
    return PyBool_FromLong(self->eof);
}

static PyObject *Conn_get_session_reused(ConnObject *self, void *closure)
{
    return PyBool_FromLong(self->established && SSL_session_reused(self->ssl));
}

static PyMethodDef Conn_methods[] = {
    {"feed", (PyCFunction)Conn_feed, METH_O, "feed(data) -> (out, plain)"},
    {"write", (PyCFunction)Conn_write, METH_O, "write(data) -> ciphertext to send"},
    {"shutdown", (PyCFunction)Conn_shutdown, METH_VARARGS, "shutdown(last=b'') -> close_notify (and last) to send"},
    {"version", (PyCFunction)Conn_version, METH_NOARGS, "negotiated protocol, like SSLObject.version()"},
    {"cipher", (PyCFunction)Conn_cipher, METH_NOARGS, "(name, protocol, bits), like SSLObject.cipher()"},
    {"selected_alpn_protocol", (PyCFunction)Conn_alpn, METH_NOARGS, "the ALPN protocol chosen, or None"},
    {"getpeercert", (PyCFunction)Conn_getpeercert, METH_VARARGS, "None: no client certificates are asked for"},
    {"certificate", (PyCFunction)Conn_certificate, METH_NOARGS, "the DER leaf this connection serves"},
    {NULL}
};

static PyGetSetDef Conn_getset[] = {
    {"server_name", (getter)Conn_get_server_name, NULL, "the SNI the client sent (as sent), or None", NULL},
    {"sni", (getter)Conn_get_sni, NULL, "the SNI lower-cased without a trailing dot (the index's key), or None", NULL},
    {"established", (getter)Conn_get_established, NULL, "the handshake is complete", NULL},
    {"eof", (getter)Conn_get_eof, NULL, "the peer sent close_notify", NULL},
    {"session_reused", (getter)Conn_get_session_reused, NULL, "the handshake resumed a session", NULL},
    {NULL}
};

static PyTypeObject ConnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edge.tls_edge._edgetls.Conn",
    .tp_basicsize = sizeof(ConnObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One server-side TLS connection over memory BIOs (Engine.conn()).",
    .tp_dealloc = (destructor)Conn_dealloc,
    .tp_methods = Conn_methods,
    .tp_getset = Conn_getset,
};

/* ------------------------------------------------------------------------------------------------ module */

static PyObject *mod_set_legacy_spki(PyObject *mod, PyObject *arg)
{
    (void)mod;
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
#ifndef OPENSSL_NO_ENGINE
    int was = legacy_spki && !spki_engine_failed;
    legacy_spki = on;
    return PyBool_FromLong(was);
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef edgetls_functions[] = {
    {"set_legacy_spki", (PyCFunction)mod_set_legacy_spki, METH_O,
     "set_legacy_spki(on) -> was: CertKey decodes leaf public keys without OSSL_DECODER by default (off at start; see d2i_leaf)"},
    {NULL}
};

static struct PyModuleDef edgetls_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "edge.tls_edge._edgetls",
    .m_doc = "The TLS edge's server-side TLS in C: one SSL_CTX, per-connection certificates by SNI.",
    .m_size = -1,
    .m_methods = edgetls_functions,
};

PyMODINIT_FUNC PyInit__edgetls(void)
{
    PyObject *m = PyModule_Create(&edgetls_module);
    if (m == NULL)
        return NULL;
    EdgeTlsError = PyErr_NewExceptionWithDoc("edge.tls_edge._edgetls.Error",
                                             "A TLS failure: args = (reason, bytes to send to the peer or None).",
                                             NULL, NULL);
    if (EdgeTlsError == NULL || PyModule_AddObjectRef(m, "Error", EdgeTlsError) < 0)
        goto fail;
    PyTypeObject *types[] = {&ChainType, &CertKeyType, &EngineType, &ConnType};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (PyType_Ready(types[i]) < 0 || PyModule_AddType(m, types[i]) < 0)
            goto fail;
    }
    if (PyModule_AddStringConstant(m, "OPENSSL_VERSION", OpenSSL_version(OPENSSL_VERSION)) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
