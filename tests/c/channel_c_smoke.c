/* Compiles the channel C API as strict C11 and calls it from C: an anonymous channel, a send
 * and receive, a reservation and a peek, the readiness descriptor, the error codes of an empty
 * channel and a small buffer. Exit 0 on success; the failing line otherwise. */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "xproc/c/channel.h"

#define CHECK(expression)                           \
  do {                                              \
    if (!(expression)) {                            \
      fprintf(stderr, "failed: %s\n", #expression); \
      return __LINE__;                              \
    }                                               \
  } while (0)

int main(void) {
  xproc_channel_t* channel = NULL;
  char buffer[64];
  size_t len = 0;
  struct timespec deadline;
  xproc_channel_reservation_t reservation;
  xproc_channel_message_t message;
  xproc_channel_stats_t stats;
  struct pollfd ready;
  int fd = -1;

  CHECK(xproc_channel_create_anonymous(4096, 256, 0, &channel) == 0);
  CHECK(xproc_channel_fd(channel) >= 0);
  CHECK(xproc_channel_try_receive(channel, buffer, sizeof buffer, &len) == EAGAIN);
  CHECK(clock_gettime(CLOCK_MONOTONIC, &deadline) == 0);
  CHECK(xproc_channel_timedreceive(channel, buffer, sizeof buffer, &len, &deadline) == ETIMEDOUT);

  CHECK(xproc_channel_readiness_fd(channel, &fd) == 0);
  ready.fd = fd;
  ready.events = POLLIN;
  ready.revents = 0;
  CHECK(poll(&ready, 1, 0) == 0);

  CHECK(xproc_channel_send(channel, "hello from C", 12) == 0);
  CHECK(poll(&ready, 1, 5000) == 1);
  CHECK(xproc_channel_receive(channel, buffer, 4, &len) == EMSGSIZE);
  CHECK(len == 12);
  CHECK(xproc_channel_receive(channel, buffer, sizeof buffer, &len) == 0);
  CHECK(len == 12 && memcmp(buffer, "hello from C", 12) == 0);
  CHECK(xproc_channel_try_receive(channel, buffer, sizeof buffer, &len) == EAGAIN);
  CHECK(xproc_channel_readiness_rearm(channel) == 0);

  CHECK(xproc_channel_reserve(channel, 5, &reservation) == 0);
  memcpy(reservation.data, "zero!", 5);
  CHECK(xproc_channel_commit(channel, &reservation) == 0);
  CHECK(xproc_channel_peek(channel, &message) == 0);
  CHECK(message.size == 5 && memcmp(message.data, "zero!", 5) == 0);
  CHECK(xproc_channel_release(channel, &message) == 0);

  CHECK(xproc_channel_stats(channel, &stats) == 0);
  CHECK(stats.reserved_total == 2 && stats.claimed_total == 2 && stats.depth_messages == 0);
  CHECK(xproc_channel_close(channel) == 0);
  puts("channel_c_smoke: ok");
  return 0;
}
