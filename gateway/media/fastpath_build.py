"""cffi (API mode) builder of ``gateway.media._fastpath``, the relay's native per-packet loop.

Run by setuptools at ``pip install`` (``cffi_modules`` in setup.py); needs a C compiler. The C
source is ``fastpath.c`` next to this file. libsrtp is not linked: the loop calls the
srtp_protect/srtp_unprotect of the libsrtp inside pylibsrtp through pointers handed in at run
time, so both paths share one libsrtp and the same srtp_t contexts.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef("""
typedef int (*fp_srtp_fn)(void *ctx, void *hdr, int *len);
typedef int... socklen_t;
struct sockaddr_storage { ...; };

typedef struct {
    void *rx;
    void *tx;
    int32_t peer;
    int32_t fd;
    uint8_t used, secure, strict, punt_all, has_latched, has_dst, has_tx_ssrc, dirty;
    uint8_t has_failed;
    uint8_t tx_ssrc[4];
    socklen_t latched_len, dst_len, failed_len;
    struct sockaddr_storage latched, dst, failed;
    uint64_t packets_in, bytes_in, packets_out, bytes_out;
    uint64_t drop_source, drop_auth, drop_replay, drop_no_keys, drop_no_remote, drop_malformed;
    uint64_t drop_send_error, drop_repeat_index;
} fp_slot;

typedef struct {
    int32_t slot;
    uint8_t rtcp_port;
    uint8_t authenticated;
    int32_t len;
    socklen_t addr_len;
    struct sockaddr_storage addr;
    unsigned char data[...];
    ...;
} fp_punt;

typedef struct {
    fp_srtp_fn protect, unprotect;
    fp_slot *slots;
    int32_t nslots;
    int32_t *fd_slot;
    uint8_t *fd_rtcp;
    int32_t nfds;
    int32_t *dirty;
    int32_t ndirty;
    fp_punt *punts;
    int32_t npunts, max_punts;
    ...;
} fp_engine;

int fp_poll(fp_engine *e, int epfd, int rounds, int again);
""")
ffibuilder.set_source(
    "gateway.media._fastpath",
    (Path(__file__).with_name("fastpath.c")).read_text(),
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
