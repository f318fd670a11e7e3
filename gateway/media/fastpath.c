/* The relay's native per-packet loop: epoll -> recvmmsg -> libsrtp in place -> sendmmsg.
 *
 * It runs the steady state of gateway/media/stream.py (LegStream.rtp_in) for RTP on the sockets
 * of one relay, with the same SRTP contexts (srtp_t handles made by the libsrtp inside
 * pylibsrtp, whose srtp_protect/srtp_unprotect are handed in as function pointers: one libsrtp,
 * one crypto kernel, one ROC and replay state whichever path touches a stream). Everything that
 * is not the steady state is "punted" to Python unchanged, in arrival order: RTCP, DTLS, STUN,
 * a plain packet from a source that is not latched (unless the leg is strict, then it is a
 * source drop here), a new outbound SSRC, any leg in a re-key window, and an SRTP packet that
 * authenticated from a new source (then already unprotected: Python latches and forwards it).
 * Once a socket's batch has punted a packet, the rest of that batch is punted too, so Python
 * sees and sends them after everything this loop sent before them: same order, same libsrtp
 * call sequence as the Python path. Counters are deltas since Python last collected them.
 * No allocation, no locks, no logging on this path. */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>

#define FP_MAX_PACKET 1500
#define FP_BUFFER (FP_MAX_PACKET + 4 + 16 + 128)
#define FP_BATCH 32
#define FP_EVENTS 256

typedef int (*fp_srtp_fn)(void *ctx, void *hdr, int *len);

typedef struct {
    void *rx;                 /* inbound srtp_t, NULL for plain (or while punting) */
    void *tx;                 /* outbound srtp_t for packets this leg sends, NULL: plain */
    int32_t peer;             /* slot of the other leg */
    int32_t fd;               /* this leg's RTP socket: what its peer's packets leave from */
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
    uint8_t rtcp_port;        /* arrived on a leg's separate RTCP socket */
    uint8_t authenticated;    /* SRTP already unprotected here, from a source not latched */
    int32_t len;
    socklen_t addr_len;
    struct sockaddr_storage addr;
    unsigned char data[FP_BUFFER];
} fp_punt;

typedef struct {
    fp_srtp_fn protect, unprotect;
    fp_slot *slots;
    int32_t nslots;
    int32_t *fd_slot;         /* fd -> slot, -1 none */
    uint8_t *fd_rtcp;         /* fd -> 1 when it is a separate RTCP socket */
    int32_t nfds;
    int32_t *dirty;           /* slots whose counters moved since the last collect */
    int32_t ndirty;
    fp_punt *punts;
    int32_t npunts, max_punts;
    unsigned char bufs[FP_BATCH][FP_BUFFER];
    struct mmsghdr in[FP_BATCH], out[FP_BATCH];
    struct iovec iov_in[FP_BATCH], iov_out[FP_BATCH];
    struct sockaddr_storage from[FP_BATCH];
} fp_engine;

enum { OK = 0, AUTH_FAIL = 7, REPLAY_FAIL = 9, REPLAY_OLD = 10 };

static void touch(fp_engine *e, fp_slot *s, int32_t idx) {
    if (!s->dirty) {
        s->dirty = 1;
        e->dirty[e->ndirty++] = idx;
    }
}

static int same_addr(const struct sockaddr_storage *a, socklen_t alen,
                     const struct sockaddr_storage *b, socklen_t blen) {
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {  /* Python compares (host, port, flowinfo, scope_id) */
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && x->sin6_flowinfo == y->sin6_flowinfo &&
               x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return alen == blen && memcmp(a, b, alen) == 0;
}

static void punt(fp_engine *e, int32_t slot, uint8_t rtcp_port, uint8_t authenticated,
                const unsigned char *data, int32_t len, const struct sockaddr_storage *addr,
                socklen_t addr_len) {
    fp_punt *p = &e->punts[e->npunts++];
    p->slot = slot;
    p->rtcp_port = rtcp_port;
    p->authenticated = authenticated;
    p->len = len;
    p->addr_len = addr_len;
    memcpy(&p->addr, addr, addr_len);
    memcpy(p->data, data, (size_t)len);
}

/* One RTP packet in place; returns bytes to send (>0), 0 = dropped and counted, -1 = punt raw,
 * -2 = punt as authenticated (the buffer now holds the unprotected packet). */
static int rtp_packet(fp_engine *e, int32_t idx, fp_slot *s, unsigned char *buf, int n,
                      const struct sockaddr_storage *addr, socklen_t addr_len, int *auth_len) {
    fp_slot *peer = &e->slots[s->peer];
    int len = n;
    if (s->punt_all)
        return -1;
    if (s->rx != NULL) {
        int status = e->unprotect(s->rx, buf, &len);
        if (status != OK) {
            touch(e, s, idx);
            if (status == AUTH_FAIL || status == REPLAY_FAIL || status == REPLAY_OLD) {
                if (status == AUTH_FAIL)
                    s->drop_auth++;
                else
                    s->drop_replay++;
                s->has_failed = 1;
                s->failed_len = addr_len;
                memcpy(&s->failed, addr, addr_len);
            } else {
                s->drop_malformed++;
            }
            return 0;
        }
        if (!s->has_latched || !same_addr(addr, addr_len, &s->latched, s->latched_len)) {
            *auth_len = len;
            return -2;
        }
    } else if (s->secure) {
        touch(e, s, idx);
        s->drop_no_keys++;
        return 0;
    } else {
        if (!s->has_latched || !same_addr(addr, addr_len, &s->latched, s->latched_len)) {
            if (!s->strict)
                return -1;
            touch(e, s, idx);
            s->drop_source++;
            return 0;
        }
        if (peer->tx != NULL && (!peer->has_tx_ssrc || memcmp(buf + 8, peer->tx_ssrc, 4) != 0))
            return -1;  /* a new outbound SSRC: Python bounds and tracks it */
    }
    touch(e, s, idx);
    s->packets_in++;
    if (peer->tx != NULL) {
        s->bytes_in += (uint64_t)len;
        if (!peer->has_dst) {
            s->drop_no_remote++;
            return 0;
        }
        int status = e->protect(peer->tx, buf, &len);
        if (status != OK) {
            if (status == REPLAY_FAIL || status == REPLAY_OLD)
                s->drop_repeat_index++;  /* never the same index twice (RFC 3711 §9.1) */
            else
                s->drop_malformed++;
            return 0;
        }
    } else {
        s->bytes_in += (uint64_t)len;
        if (!peer->has_dst) {
            s->drop_no_remote++;
            return 0;
        }
        if (peer->secure) {
            s->drop_no_keys++;
            return 0;
        }
    }
    touch(e, peer, s->peer);
    peer->packets_out++;
    peer->bytes_out += (uint64_t)len;
    return len;
}

static void send_batch(fp_engine *e, int32_t from_idx, fp_slot *s, int count) {
    fp_slot *peer = &e->slots[s->peer];
    int off = 0;
    while (off < count) {
        int r = sendmmsg(peer->fd, &e->out[off], (unsigned)(count - off), MSG_DONTWAIT);
        if (r > 0) {
            off += r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        peer->packets_out--;   /* as the Python path: the send failed, the packet is lost */
        s->drop_send_error++;
        touch(e, s, from_idx);
        off++;
    }
}

/* Drain ready sockets for up to `rounds` epoll rounds; returns the number of punts left in
 * e->punts for Python (the loop stops early when the punt area could fill up). */
int fp_poll(fp_engine *e, int epfd, int rounds, int again) {
    struct epoll_event evs[FP_EVENTS];
    e->npunts = 0;
    for (int round = 0; round < rounds; round++) {
        int nev = epoll_wait(epfd, evs, FP_EVENTS, 0);
        if (nev <= 0)
            break;
        for (int k = 0; k < nev; k++) {
            int fd = evs[k].data.fd;
            if (fd < 0 || fd >= e->nfds || e->fd_slot[fd] < 0)
                continue;
            if (e->npunts + FP_BATCH > e->max_punts)
                return e->npunts;  /* level-triggered: the rest is reported again */
            int32_t idx = e->fd_slot[fd];
            fp_slot *s = &e->slots[idx];
            uint8_t rtcp_port = e->fd_rtcp[fd];
            for (int i = 0; i < FP_BATCH; i++) {
                e->iov_in[i].iov_base = e->bufs[i];
                e->iov_in[i].iov_len = FP_MAX_PACKET + 1;  /* one more byte: oversize shows */
                memset(&e->in[i].msg_hdr, 0, sizeof e->in[i].msg_hdr);
                e->in[i].msg_hdr.msg_name = &e->from[i];
                e->in[i].msg_hdr.msg_namelen = sizeof e->from[i];
                e->in[i].msg_hdr.msg_iov = &e->iov_in[i];
                e->in[i].msg_hdr.msg_iovlen = 1;
            }
            int got = recvmmsg(fd, e->in, FP_BATCH, MSG_DONTWAIT, NULL);
            if (got < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    s->drop_malformed++;
                    touch(e, s, idx);
                }
                continue;
            }
            int nout = 0, punting = 0, auth_len = 0;
            for (int i = 0; i < got; i++) {
                unsigned char *buf = e->bufs[i];
                int n = (int)e->in[i].msg_len;
                socklen_t alen = e->in[i].msg_hdr.msg_namelen;
                int first = n > 0 ? buf[0] : 0;
                if (punting) {
                    punt(e, idx, rtcp_port, 0, buf, n, &e->from[i], alen);
                    continue;
                }
                int m;
                if (n > 0 && first > 127 && first < 192 && n >= 8 && n <= FP_MAX_PACKET) {
                    if (rtcp_port || (buf[1] > 191 && buf[1] < 224))
                        m = -1;
                    else if (n >= 12)
                        m = rtp_packet(e, idx, s, buf, n, &e->from[i], alen, &auth_len);
                    else {
                        s->drop_malformed++;
                        touch(e, s, idx);
                        m = 0;
                    }
                } else if (n > 0 && first > 19 && first < 64) {
                    m = -1;  /* DTLS: Python's handler for this port, if any */
                } else {
                    s->drop_malformed++;
                    touch(e, s, idx);
                    m = 0;
                }
                if (m > 0) {
                    fp_slot *peer = &e->slots[s->peer];
                    e->iov_out[nout].iov_base = buf;
                    e->iov_out[nout].iov_len = (size_t)m;
                    memset(&e->out[nout].msg_hdr, 0, sizeof e->out[nout].msg_hdr);
                    e->out[nout].msg_hdr.msg_name = &peer->dst;
                    e->out[nout].msg_hdr.msg_namelen = peer->dst_len;
                    e->out[nout].msg_hdr.msg_iov = &e->iov_out[nout];
                    e->out[nout].msg_hdr.msg_iovlen = 1;
                    nout++;
                } else if (m < 0) {
                    punting = 1;
                    punt(e, idx, rtcp_port, m == -2, buf, m == -2 ? auth_len : n, &e->from[i],
                         alen);
                }
            }
            if (nout)
                send_batch(e, idx, s, nout);
        }
        if (nev < again)
            break;
    }
    return e->npunts;
}
