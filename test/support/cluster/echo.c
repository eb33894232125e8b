/* A pod's server: answers "IDENTITY TOKEN" on each tcp:PORT (TOKEN: the connection's first line; one line back,
 * then close) and udp:PORT (TOKEN: the datagram; one datagram back), IPv4 and IPv6, as test/support/echo-net.mjs's
 * server does for `ask`. PID 1 of its container. */
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_PORTS 16
/* A token is one line of at most this many characters (echo-net.mjs's MAX_TOKEN). */
#define MAX_TOKEN 128

/* The token in buf[0..len): up to its first newline, at most MAX_TOKEN characters. */
static int token_length(const char *buf, int len) {
  int n = 0;
  while (n < len && n < MAX_TOKEN && buf[n] != '\n' && buf[n] != '\r') n++;
  return n;
}

static void quit(int sig) {
  (void)sig;
  _exit(0);
}

int main(int argc, char **argv) {
  if (argc < 3 || argc - 2 > MAX_PORTS) {
    fprintf(stderr, "usage: echo IDENTITY tcp:PORT|udp:PORT...\n");
    return 2;
  }
  signal(SIGTERM, quit);
  signal(SIGINT, quit);
  char reply[512];
  struct pollfd fds[MAX_PORTS];
  int tcp[MAX_PORTS];
  int n = 0;
  for (int i = 2; i < argc; i++, n++) {
    tcp[n] = strncmp(argv[i], "tcp:", 4) == 0;
    if (!tcp[n] && strncmp(argv[i], "udp:", 4) != 0) {
      fprintf(stderr, "bad port %s\n", argv[i]);
      return 2;
    }
    int fd = socket(AF_INET6, tcp[n] ? SOCK_STREAM : SOCK_DGRAM, 0);
    int off = 0, on = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in6 addr = {.sin6_family = AF_INET6, .sin6_port = htons(atoi(argv[i] + 4))};
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || (tcp[n] && listen(fd, 64) != 0)) {
      perror(argv[i]);
      return 1;
    }
    fds[n] = (struct pollfd){.fd = fd, .events = POLLIN};
  }
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    if (poll(fds, n, -1) < 0) continue;
    for (int i = 0; i < n; i++) {
      if (!(fds[i].revents & POLLIN)) continue;
      if (tcp[i]) {
        int c = accept(fds[i].fd, 0, 0);
        if (c < 0) continue;
        /* A client that never sends its line is dropped, not waited for (one thread serves every port). */
        struct timeval wait = {.tv_sec = 2};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
        char line[MAX_TOKEN + 2];
        int got = 0;
        while (got < (int)sizeof line && !memchr(line, '\n', got)) {
          ssize_t r = read(c, line + got, sizeof line - got);
          if (r <= 0) break;
          got += r;
        }
        int n = snprintf(reply, sizeof reply, "%s %.*s\n", argv[1], token_length(line, got), line);
        if (write(c, reply, n) < 0) perror("write");
        close(c);
      } else {
        char buf[512];
        struct sockaddr_storage from;
        socklen_t len = sizeof from;
        ssize_t got = recvfrom(fds[i].fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (got < 0) continue;
        int n = snprintf(reply, sizeof reply, "%s %.*s\n", argv[1], token_length(buf, got), buf);
        sendto(fds[i].fd, reply, n, 0, (struct sockaddr *)&from, len);
      }
    }
  }
}
