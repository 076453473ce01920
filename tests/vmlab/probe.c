/* vmprobe: the VM lab's packet tool (built static when the image is built; see tests/vmlab/README.md).
 *
 *   vmprobe serve PORT...            TCP and UDP servers on 0.0.0.0:PORT; each answers one line,
 *                                    "<local ip:port> <peer ip:port>": which backend address was
 *                                    reached and which source it saw (the client's, or a masquerade).
 *   vmprobe tcp SRC DST PORT N       N TCP connections, one after another, from SRC (port chosen by the
 *                                    kernel) to DST:PORT; prints one line per distinct outcome:
 *                                    "<count> ok <reply>" | "<count> refused" | "<count> unreach" |
 *                                    "<count> timeout" | "<count> error <errno text>".
 *                                    UDP also "eperm" (dropped on this host's output path) or "eperm refused"
 *                                    (and an ICMP error came back).
 *   vmprobe udp SRC DST PORT N       the same with one UDP datagram per socket (answer or ICMP error).
 *   vmprobe ping SRC DST             one ICMP echo: "reply" | "unreach <code>" | "timeout".
 *   vmprobe batch FILE               runs the probes of FILE, one a line: "ID NETNS tcp|udp SRC DST PORT N" or
 *                                    "ID NETNS ping SRC DST"; before each it prints "P ID SRC".
 *   -n NETNS (first)                 run in the network namespace /run/netns/NETNS (`ip netns add` made it).
 *
 * Timeouts are 1 s (a dropped packet); the VM runs under TCG, so everything else is much faster.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <linux/errqueue.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <sched.h>
#include <unistd.h>

#define TIMEOUT_MS 1000
#define MAXOUT 64

static struct { char text[160]; int n; } outs[MAXOUT];
static int nouts;

static void tally(const char *text) {
    for (int i = 0; i < nouts; i++)
        if (strcmp(outs[i].text, text) == 0) { outs[i].n++; return; }
    if (nouts < MAXOUT) { snprintf(outs[nouts].text, sizeof outs[nouts].text, "%s", text); outs[nouts++].n = 1; }
}

static void flush_tally(void) {
    for (int i = 0; i < nouts; i++) printf("%d %s\n", outs[i].n, outs[i].text);
    fflush(stdout);
}

static void addr_text(const struct sockaddr_in *a, char *buf, size_t n) {
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    snprintf(buf, n, "%s:%u", ip, ntohs(a->sin_port));
}

static struct sockaddr_in sa(const char *ip, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) { fprintf(stderr, "bad address %s\n", ip); exit(2); }
    return a;
}

static int serve(int argc, char **argv) {
    struct pollfd fds[128];
    int kinds[128], n = 0, one = 1;
    for (int i = 0; i < argc && n < 126; i++) {
        struct sockaddr_in a = sa("0.0.0.0", atoi(argv[i]));
        int t = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(t, (struct sockaddr *)&a, sizeof a) || listen(t, 128)) { perror("tcp bind"); return 1; }
        fds[n].fd = t; fds[n].events = POLLIN; kinds[n++] = SOCK_STREAM;
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        setsockopt(u, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
        if (bind(u, (struct sockaddr *)&a, sizeof a)) { perror("udp bind"); return 1; }
        fds[n].fd = u; fds[n].events = POLLIN; kinds[n++] = SOCK_DGRAM;
    }
    printf("serving\n");
    fflush(stdout);
    for (;;) {
        if (poll(fds, n, -1) < 0) continue;
        for (int i = 0; i < n; i++) {
            if (!(fds[i].revents & POLLIN)) continue;
            char l[64], p[64], line[160];
            struct sockaddr_in peer, local;
            socklen_t pl = sizeof peer, ll = sizeof local;
            if (kinds[i] == SOCK_STREAM) {
                int c = accept(fds[i].fd, (struct sockaddr *)&peer, &pl);
                if (c < 0) continue;
                getsockname(c, (struct sockaddr *)&local, &ll);
                addr_text(&local, l, sizeof l);
                addr_text(&peer, p, sizeof p);
                int m = snprintf(line, sizeof line, "%s %s\n", l, p);
                if (write(c, line, m) < 0) perror("write");
                close(c);
            } else {
                char buf[512], cbuf[256];
                struct iovec iov = {buf, sizeof buf};
                struct msghdr mh = {&peer, sizeof peer, &iov, 1, cbuf, sizeof cbuf, 0};
                if (recvmsg(fds[i].fd, &mh, 0) < 0) continue;
                struct sockaddr_in from = {0};
                from.sin_family = AF_INET;
                struct in_pktinfo *pi = NULL;
                for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
                    if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO)
                        pi = (struct in_pktinfo *)CMSG_DATA(cm);
                getsockname(fds[i].fd, (struct sockaddr *)&local, &ll);
                if (pi) local.sin_addr = pi->ipi_addr;
                addr_text(&local, l, sizeof l);
                addr_text(&peer, p, sizeof p);
                int m = snprintf(line, sizeof line, "%s %s\n", l, p);
                /* answer from the address the datagram was sent to */
                char obuf[CMSG_SPACE(sizeof(struct in_pktinfo))] = {0};
                struct iovec oiov = {line, (size_t)m};
                struct msghdr om = {&peer, sizeof peer, &oiov, 1, NULL, 0, 0};
                if (pi) {
                    om.msg_control = obuf; om.msg_controllen = sizeof obuf;
                    struct cmsghdr *cm = CMSG_FIRSTHDR(&om);
                    cm->cmsg_level = IPPROTO_IP; cm->cmsg_type = IP_PKTINFO;
                    cm->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
                    struct in_pktinfo opi = {0};
                    opi.ipi_spec_dst = pi->ipi_addr;
                    memcpy(CMSG_DATA(cm), &opi, sizeof opi);
                }
                (void)from;
                if (sendmsg(fds[i].fd, &om, 0) < 0) perror("sendmsg");
            }
        }
    }
}

static int wait_fd(int fd, short ev) {
    struct pollfd p = {fd, ev, 0};
    return poll(&p, 1, TIMEOUT_MS);
}

static void one_conn(int type, const char *src, const char *dst, int port) {
    struct sockaddr_in s = sa(src, 0), d = sa(dst, port);
    int fd = socket(AF_INET, type | SOCK_NONBLOCK, 0), one = 1;
    char buf[240];
    if (bind(fd, (struct sockaddr *)&s, sizeof s)) { snprintf(buf, sizeof buf, "error bind %s", strerror(errno)); tally(buf); close(fd); return; }
    if (type == SOCK_DGRAM) setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof one);
    int r = connect(fd, (struct sockaddr *)&d, sizeof d);
    if (r && errno != EINPROGRESS) { snprintf(buf, sizeof buf, "error connect %s", strerror(errno)); tally(buf); close(fd); return; }
    if (type == SOCK_STREAM) {
        if (wait_fd(fd, POLLOUT) <= 0) { tally("timeout"); close(fd); return; }
        int err = 0; socklen_t el = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err == ECONNREFUSED) { tally("refused"); close(fd); return; }
        if (err == EHOSTUNREACH || err == ENETUNREACH) { tally("unreach"); close(fd); return; }
        if (err) { snprintf(buf, sizeof buf, "error %s", strerror(err)); tally(buf); close(fd); return; }
    } else if (send(fd, "?", 1, 0) < 0) {
        /* EPERM: a netfilter hook dropped it on this host's output path (IPVS's ip_vs_leave at LOCAL_OUT, a DROP
         * in OUTPUT); an ICMP error it also sent comes back to the socket ("eperm refused"). */
        if (errno == EPERM) {
            if (wait_fd(fd, POLLIN) > 0 && recv(fd, buf, sizeof buf, 0) < 0 && errno == ECONNREFUSED)
                tally("eperm refused");
            else
                tally("eperm");
            close(fd);
            return;
        }
        snprintf(buf, sizeof buf, "error send %s", strerror(errno)); tally(buf); close(fd); return;
    }
    char line[200]; int got = 0;
    while (got < (int)sizeof line - 1) {
        if (wait_fd(fd, POLLIN) <= 0) { if (!got) { tally("timeout"); close(fd); return; } break; }
        int m = recv(fd, line + got, sizeof line - 1 - got, 0);
        if (m < 0) {
            if (errno == ECONNREFUSED) tally("refused");
            else if (errno == EHOSTUNREACH || errno == ENETUNREACH) tally("unreach");
            else { snprintf(buf, sizeof buf, "error recv %s", strerror(errno)); tally(buf); }
            close(fd); return;
        }
        if (m == 0) break;
        got += m;
        if (type == SOCK_DGRAM || memchr(line, '\n', got)) break;
    }
    line[got] = 0;
    char *nl = strchr(line, '\n');
    if (nl) *nl = 0;
    snprintf(buf, sizeof buf, "ok %s", line);
    tally(buf);
    close(fd);
}

static unsigned short csum(void *b, int len) {
    unsigned short *p = b; unsigned sum = 0;
    for (; len > 1; len -= 2) sum += *p++;
    if (len) sum += *(unsigned char *)p;
    sum = (sum >> 16) + (sum & 0xffff);
    sum += sum >> 16;
    return ~sum;
}

static int ping(const char *src, const char *dst) {
    struct sockaddr_in s = sa(src, 0), d = sa(dst, 0);
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (fd < 0 || bind(fd, (struct sockaddr *)&s, sizeof s)) { printf("error %s\n", strerror(errno)); return 1; }
    struct icmphdr h = {0};
    h.type = ICMP_ECHO; h.un.echo.id = htons(getpid() & 0xffff); h.un.echo.sequence = htons(1);
    h.checksum = csum(&h, sizeof h);
    if (sendto(fd, &h, sizeof h, 0, (struct sockaddr *)&d, sizeof d) < 0) { printf("error %s\n", strerror(errno)); return 1; }
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = TIMEOUT_MS - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd p = {fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, left) <= 0) { printf("timeout\n"); return 0; }
        unsigned char buf[1500];
        int m = recv(fd, buf, sizeof buf, 0);
        if (m < (int)sizeof(struct iphdr)) continue;
        struct iphdr *ip = (struct iphdr *)buf;
        struct icmphdr *ic = (struct icmphdr *)(buf + ip->ihl * 4);
        if (ic->type == ICMP_ECHOREPLY && ic->un.echo.id == h.un.echo.id) { printf("reply\n"); return 0; }
        if (ic->type == ICMP_DEST_UNREACH) {
            struct iphdr *in = (struct iphdr *)(ic + 1);
            struct icmphdr *ih = (struct icmphdr *)((unsigned char *)in + in->ihl * 4);
            if (ih->un.echo.id == h.un.echo.id) { printf("unreach %d\n", ic->code); return 0; }
        }
    }
}

static int enter(const char *ns) {
    char path[256];
    snprintf(path, sizeof path, "/run/netns/%s", ns);
    int fd = open(path, O_RDONLY);
    if (fd < 0 || setns(fd, CLONE_NEWNET)) { fprintf(stderr, "setns %s: %s\n", ns, strerror(errno)); return -1; }
    close(fd);
    return 0;
}

static int batch(const char *file) {
    FILE *f = fopen(file, "r");
    char line[512];
    if (!f) { perror(file); return 1; }
    int self = open("/proc/self/ns/net", O_RDONLY);
    while (fgets(line, sizeof line, f)) {
        char id[128], ns[128], kind[16], src[64], dst[64];
        int port = 0, n = 0;
        int k = sscanf(line, "%127s %127s %15s %63s %63s %d %d", id, ns, kind, src, dst, &port, &n);
        if (k < 5) continue;
        if (setns(self, CLONE_NEWNET) || enter(ns)) continue;
        printf("P %s %s\n", id, src);
        fflush(stdout);
        if (strcmp(kind, "ping") == 0) { ping(src, dst); fflush(stdout); continue; }
        nouts = 0;
        for (int i = 0; i < n; i++) one_conn(kind[0] == 't' ? SOCK_STREAM : SOCK_DGRAM, src, dst, port);
        flush_tally();
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "-n") == 0) {
        if (enter(argv[2])) return 1;
        argv += 2; argc -= 2;
    }
    if (argc == 3 && strcmp(argv[1], "batch") == 0) return batch(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "serve") == 0) return serve(argc - 2, argv + 2);
    if (argc == 4 && strcmp(argv[1], "ping") == 0) return ping(argv[2], argv[3]);
    if (argc == 6 && (strcmp(argv[1], "tcp") == 0 || strcmp(argv[1], "udp") == 0)) {
        int type = argv[1][0] == 't' ? SOCK_STREAM : SOCK_DGRAM, n = atoi(argv[5]);
        for (int i = 0; i < n; i++) one_conn(type, argv[2], argv[3], atoi(argv[4]));
        flush_tally();
        return 0;
    }
    fprintf(stderr, "usage: vmprobe [-n NETNS] serve PORT... | tcp|udp SRC DST PORT N | ping SRC DST | batch FILE\n");
    return 2;
}
