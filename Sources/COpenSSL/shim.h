// C glue for OpenSSL's libcrypto: AES-GCM and AES-CTR page calls, HKDF, scrypt, random bytes.
// Every cryptographic operation is OpenSSL's; this file only sequences its EVP calls.
#ifndef WRAPFS_COPENSSL_SHIM_H
#define WRAPFS_COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <stdlib.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>

// A cipher context keyed once: AES-256-GCM with 16-byte IVs (as gocryptfs), or AES-256-CTR.
static inline EVP_CIPHER_CTX *wrapfs_cipher_new(int gcm, int encrypt, const unsigned char *key) {
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c) return NULL;
    const EVP_CIPHER *cipher = gcm ? EVP_aes_256_gcm() : EVP_aes_256_ctr();
    int ok = EVP_CipherInit_ex(c, cipher, NULL, NULL, NULL, encrypt) == 1
        && (!gcm || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 16, NULL) == 1)
        && EVP_CipherInit_ex(c, NULL, NULL, key, NULL, encrypt) == 1;
    if (!ok) { EVP_CIPHER_CTX_free(c); return NULL; }
    return c;
}
static inline void wrapfs_cipher_free(void *c) { EVP_CIPHER_CTX_free((EVP_CIPHER_CTX *)c); }

// AES-GCM: encrypts n bytes with a 16-byte iv and additional data; writes n bytes and a 16-byte tag.
static inline int wrapfs_gcm_seal(EVP_CIPHER_CTX *c, const unsigned char *iv, const unsigned char *aad, int aadLen,
                                  const unsigned char *in, int n, unsigned char *out, unsigned char *tag) {
    int len = 0, fin = 0;
    if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv) != 1) return 0;
    if (EVP_EncryptUpdate(c, NULL, &len, aad, aadLen) != 1) return 0;
    if (EVP_EncryptUpdate(c, out, &len, in, n) != 1 || len != n) return 0;
    if (EVP_EncryptFinal_ex(c, out + len, &fin) != 1 || fin != 0) return 0;
    return EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
}

// AES-GCM: decrypts and authenticates; 1 only if the tag checks out (out is then valid).
static inline int wrapfs_gcm_open(EVP_CIPHER_CTX *c, const unsigned char *iv, const unsigned char *aad, int aadLen,
                                  const unsigned char *in, int n, const unsigned char *tag, unsigned char *out) {
    int len = 0, fin = 0;
    if (EVP_DecryptInit_ex(c, NULL, NULL, NULL, iv) != 1) return 0;
    if (EVP_DecryptUpdate(c, NULL, &len, aad, aadLen) != 1) return 0;
    if (EVP_DecryptUpdate(c, out, &len, in, n) != 1 || len != n) return 0;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag) != 1) return 0;
    return EVP_DecryptFinal_ex(c, out + len, &fin) == 1 && fin == 0;
}

// AES-CTR from a 16-byte initial counter block: the same call encrypts and decrypts.
static inline int wrapfs_ctr_xor(EVP_CIPHER_CTX *c, const unsigned char *iv, const unsigned char *in, int n, unsigned char *out) {
    int len = 0, fin = 0;
    if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv) != 1) return 0;
    if (EVP_EncryptUpdate(c, out, &len, in, n) != 1 || len != n) return 0;
    return EVP_EncryptFinal_ex(c, out + len, &fin) == 1 && fin == 0;
}

// AES-SIV (RFC 5297) over one name: deterministic, authenticated. `cipher` is "AES-256-SIV"
// (64-byte key). Encrypting writes n bytes and the 16-byte tag; decrypting checks the tag.
static inline EVP_CIPHER *wrapfs_siv_cipher(void) { return EVP_CIPHER_fetch(NULL, "AES-256-SIV", NULL); }

// One thread's AES-SIV contexts: keyed templates for each direction, copied into a working
// context per name (a copy costs a third of keying a new context; an SIV context does one operation).
typedef struct { EVP_CIPHER_CTX *encrypt, *decrypt, *work; } wrapfs_siv_contexts;

static inline void wrapfs_siv_contexts_free(void *p) {
    wrapfs_siv_contexts *s = p;
    if (!s) return;
    EVP_CIPHER_CTX_free(s->encrypt); EVP_CIPHER_CTX_free(s->decrypt); EVP_CIPHER_CTX_free(s->work);
    free(s);
}

static inline wrapfs_siv_contexts *wrapfs_siv_contexts_new(EVP_CIPHER *cipher, const unsigned char *key) {
    wrapfs_siv_contexts *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->encrypt = EVP_CIPHER_CTX_new(); s->decrypt = EVP_CIPHER_CTX_new(); s->work = EVP_CIPHER_CTX_new();
    if (!s->encrypt || !s->decrypt || !s->work
        || EVP_CipherInit_ex2(s->encrypt, cipher, key, NULL, 1, NULL) != 1
        || EVP_CipherInit_ex2(s->decrypt, cipher, key, NULL, 0, NULL) != 1) {
        wrapfs_siv_contexts_free(s);
        return NULL;
    }
    return s;
}

static inline int wrapfs_siv_with(wrapfs_siv_contexts *s, int encrypt, const unsigned char *in, int n,
                                  unsigned char *out, unsigned char *tag) {
    EVP_CIPHER_CTX *c = s->work;
    int len = 0, fin = 0;
    if (EVP_CIPHER_CTX_copy(c, encrypt ? s->encrypt : s->decrypt) != 1) return 0;
    if (!encrypt && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, 16, (void *)tag) != 1) return 0;
    int ok = EVP_CipherUpdate(c, out, &len, in, n) == 1 && len == n && EVP_CipherFinal_ex(c, out + len, &fin) == 1;
    if (ok && encrypt) ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, tag) == 1;
    return ok;
}

// SHA-256 of a long encoded name: its short stand-in in the lower directory.
static inline int wrapfs_sha256(const unsigned char *in, size_t n, unsigned char *out) {
    return EVP_Digest(in, n, out, NULL, EVP_sha256(), NULL);
}

// HKDF-SHA256 (RFC 5869) with an empty salt: a subkey for one purpose from the master key.
static inline int wrapfs_hkdf_sha256(const unsigned char *key, int keyLen, const unsigned char *info, int infoLen,
                                     unsigned char *out, size_t outLen) {
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    if (!c) return 0;
    size_t len = outLen;
    int ok = EVP_PKEY_derive_init(c) > 0
        && EVP_PKEY_CTX_set_hkdf_md(c, EVP_sha256()) > 0
        && EVP_PKEY_CTX_set1_hkdf_key(c, key, keyLen) > 0
        && EVP_PKEY_CTX_add1_hkdf_info(c, info, infoLen) > 0
        && EVP_PKEY_derive(c, out, &len) > 0 && len == outLen;
    EVP_PKEY_CTX_free(c);
    return ok;
}
#endif
