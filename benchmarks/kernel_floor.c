/* The kernel floor for media_load.py --kernel-floor: the relay's syscalls and nothing else.
 *
 * Two UDP sockets per session on 127.0.0.1 (base + 4i and base + 4i + 2), one epoll set,
 * recvmmsg of up to 32 datagrams per ready socket and one sendmmsg of them from the session's
 * other socket to the other peer: what the native loop does, minus SRTP and bookkeeping.
 * Reads "plain_peer_port srtp_peer_port" per session on stdin, prints "ready", runs until
 * SIGTERM. Loopback only. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 32
static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: kernel_floor BASE_PORT SESSIONS < peers\n");
        return 2;
    }
    int base = atoi(argv[1]), n = atoi(argv[2]);
    if (n < 1 || n > 4000 || base < 1024 || base + 4 * n > 65535)
        return 2;
    int *fds = calloc((size_t)(2 * n), sizeof(int));
    struct sockaddr_in *dst = calloc((size_t)(2 * n), sizeof *dst);  /* where fd k's input goes */
    int maxfd = 0;
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        int plain, srtp;
        if (scanf("%d %d", &plain, &srtp) != 2)
            return 2;
        for (int j = 0; j < 2; j++) {
            int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
            struct sockaddr_in a = {.sin_family = AF_INET,
                                    .sin_port = htons((uint16_t)(base + 4 * i + 2 * j))};
            inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
            if (bind(fd, (void *)&a, sizeof a) < 0) {
                perror("bind");
                return 1;
            }
            fds[2 * i + j] = fd;
            maxfd = fd > maxfd ? fd : maxfd;
            struct sockaddr_in d = a;
            d.sin_port = htons((uint16_t)(j == 0 ? srtp : plain));
            dst[2 * i + j] = d;
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)(2 * i + j)};
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
    }
    signal(SIGTERM, on_term);
    printf("ready\n");
    fflush(stdout);
    static unsigned char bufs[BATCH][2048];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct epoll_event evs[256];
    while (!stop) {
        int nev = epoll_wait(ep, evs, 256, 100);
        for (int e = 0; e < nev; e++) {
            int k = (int)evs[e].data.u32;
            for (int i = 0; i < BATCH; i++) {
                iov[i].iov_base = bufs[i];
                iov[i].iov_len = sizeof bufs[i];
                memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
                msgs[i].msg_hdr.msg_iov = &iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int got = recvmmsg(fds[k], msgs, BATCH, MSG_DONTWAIT, NULL);
            for (int i = 0; i < got; i++) {
                iov[i].iov_len = msgs[i].msg_len;
                msgs[i].msg_hdr.msg_name = &dst[k];
                msgs[i].msg_hdr.msg_namelen = sizeof dst[k];
            }
            if (got > 0)
                sendmmsg(fds[k ^ 1], msgs, (unsigned)got, MSG_DONTWAIT);
        }
    }
    return 0;
}
