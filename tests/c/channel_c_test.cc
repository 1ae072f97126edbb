// The channel C API (include/xproc/c/channel.h) called from C++: every function, every error
// code it documents, named and anonymous channels across processes, the zero-copy records, the
// readiness descriptor.
#include "xproc/c/channel.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

#include "c_test_support.h"
#include "child_process.h"

namespace {

using namespace std::chrono_literals;
using xproc::test::Child;
using xproc::test::monotonic_in;

std::string unique_name(const char* what) {
  return std::string("capi-") + what + "-" + std::to_string(getpid());
}

struct Handle {
  Handle() = default;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { EXPECT_EQ(xproc_channel_close(channel), 0); }
  xproc_channel_t* channel = nullptr;
};

int send_text(xproc_channel_t* channel, const char* text) {
  return xproc_channel_send(channel, text, std::strlen(text));
}

std::string receive_text(xproc_channel_t* channel) {
  char buffer[256];
  std::size_t len = 0;
  const timespec deadline = monotonic_in(5s);
  if (xproc_channel_timedreceive(channel, buffer, sizeof(buffer), &len, &deadline) != 0) {
    return "<error>";
  }
  return std::string(buffer, len);
}

TEST(ChannelC, CreatedChannelIsOpenedByNameAndCarriesMessagesAcrossProcesses) {
  const std::string name = unique_name("named");
  Handle creator;
  ASSERT_EQ(xproc_channel_create(name.c_str(), 4096, 256, 0, 0600, &creator.channel), 0);
  Child child = Child::start([&]() -> int {
    xproc_channel_t* opened = nullptr;
    if (xproc_channel_open(name.c_str(), &opened) != 0) return 1;
    for (int i = 0; i < 100; ++i) {
      const std::string text = "message " + std::to_string(i);
      if (send_text(opened, text.c_str()) != 0) return 2;
    }
    return xproc_channel_close(opened) == 0 ? 0 : 3;
  });
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(receive_text(creator.channel), "message " + std::to_string(i));
  }
  EXPECT_TRUE(child.wait(10s).ok());
  xproc_channel_stats_t stats;
  ASSERT_EQ(xproc_channel_stats(creator.channel, &stats), 0);
  EXPECT_EQ(stats.capacity, 4096u);
  EXPECT_EQ(stats.max_message, 256u);
  EXPECT_EQ(stats.reserved_total, 100u);
  EXPECT_EQ(stats.claimed_total, 100u);
  EXPECT_EQ(stats.depth_messages, 0u);
  EXPECT_EQ(xproc_channel_unlink(name.c_str()), 0);
  EXPECT_EQ(xproc_channel_unlink(name.c_str()), ENOENT);
  // The handle keeps working after the unlink.
  ASSERT_EQ(send_text(creator.channel, "still"), 0);
  EXPECT_EQ(receive_text(creator.channel), "still");
}

TEST(ChannelC, CreateAndOpenErrorsAreErrnoValues) {
  const std::string name = unique_name("errors");
  Handle first;
  ASSERT_EQ(xproc_channel_create(name.c_str(), 4096, 256, 0, 0600, &first.channel), 0);
  xproc_channel_t* other = nullptr;
  EXPECT_EQ(xproc_channel_create(name.c_str(), 4096, 256, 0, 0600, &other), EEXIST);
  Handle existing;
  EXPECT_EQ(xproc_channel_create(name.c_str(), 4096, 256, XPROC_CHANNEL_OPEN_EXISTING, 0600,
                                 &existing.channel),
            0);
  ASSERT_EQ(send_text(first.channel, "shared"), 0);
  EXPECT_EQ(receive_text(existing.channel), "shared");

  EXPECT_EQ(xproc_channel_open(unique_name("missing").c_str(), &other), ENOENT);
  EXPECT_EQ(xproc_channel_unlink(unique_name("missing").c_str()), ENOENT);
  EXPECT_EQ(xproc_channel_open(nullptr, &other), EINVAL);
  EXPECT_EQ(xproc_channel_open("bad/name", &other), EINVAL);
  EXPECT_EQ(xproc_channel_open(".hidden", &other), EINVAL);
  EXPECT_EQ(xproc_channel_open(std::string(XPROC_CHANNEL_NAME_MAX + 1, 'a').c_str(), &other),
            EINVAL);
  EXPECT_EQ(xproc_channel_open(name.c_str(), nullptr), EINVAL);
  EXPECT_EQ(xproc_channel_unlink(nullptr), EINVAL);
  const char* fresh = "capi-never-created";
  EXPECT_EQ(xproc_channel_create(fresh, 1000, 256, 0, 0600, &other), EINVAL);   // not 2^n
  EXPECT_EQ(xproc_channel_create(fresh, 128, 16, 0, 0600, &other), EINVAL);     // too small
  EXPECT_EQ(xproc_channel_create(fresh, 4096, 4096, 0, 0600, &other), EINVAL);  // max too big
  EXPECT_EQ(xproc_channel_create(fresh, std::size_t{1} << 40, 256, 0, 0600, &other), EINVAL);
  EXPECT_EQ(xproc_channel_create(fresh, 4096, 256, 0x100, 0600, &other), EINVAL);  // flag
  EXPECT_EQ(xproc_channel_create(fresh, 4096, 256, 0, 0600, nullptr), EINVAL);
  EXPECT_EQ(xproc_channel_create_anonymous(4096, 256, XPROC_CHANNEL_OPEN_EXISTING, &other), EINVAL);
  EXPECT_EQ(other, nullptr);
  EXPECT_EQ(xproc_channel_unlink(name.c_str()), 0);
}

TEST(ChannelC, OpenOfAnotherUsersPrivateChannelIsAccessDenied) {
  const std::string name = unique_name("private");
  Handle creator;
  ASSERT_EQ(xproc_channel_create(name.c_str(), 4096, 256, 0, 0600, &creator.channel), 0);
  // Another user: as root, a child switches to nobody (65534); otherwise the file gets mode 0000
  // (its owner cannot open it either, and unlink opens it first).
  const bool as_root = geteuid() == 0;
  if (!as_root) {
    ASSERT_EQ(::chmod(("/dev/shm/xproc." + name).c_str(), 0000), 0);
  }
  Child child = Child::start([&]() -> int {
    if (as_root && (::setgid(65534) != 0 || ::setuid(65534) != 0)) return 10;
    xproc_channel_t* other = nullptr;
    if (xproc_channel_open(name.c_str(), &other) != EACCES) return 1;
    if (xproc_channel_unlink(name.c_str()) != EACCES) return 2;
    return 0;
  });
  const xproc::test::ChildStatus status = child.wait(10s);
  EXPECT_TRUE(status.ok()) << "exit " << status.exit_code;
  EXPECT_EQ(xproc_channel_unlink(name.c_str()), 0);
}

TEST(ChannelC, AnonymousChannelIsAdoptedThroughItsDescriptor) {
  Handle creator;
  ASSERT_EQ(xproc_channel_create_anonymous(4096, 256, XPROC_CHANNEL_SPSC, &creator.channel), 0);
  const int fd = xproc_channel_fd(creator.channel);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(xproc_channel_fd(nullptr), -1);
  Child child = Child::start([&]() -> int {
    xproc_channel_t* adopted = nullptr;
    if (xproc_channel_adopt(fd, &adopted) != 0) return 1;
    if (send_text(adopted, "from the child") != 0) return 2;
    return xproc_channel_close(adopted) == 0 ? 0 : 3;
  });
  EXPECT_EQ(receive_text(creator.channel), "from the child");
  EXPECT_TRUE(child.wait(10s).ok());
  EXPECT_GE(fcntl(fd, F_GETFD), 0) << "the handle's descriptor stays open";

  xproc_channel_t* other = nullptr;
  EXPECT_EQ(xproc_channel_adopt(-1, &other), EBADF);
  EXPECT_EQ(xproc_channel_adopt(fd, nullptr), EINVAL);
  const int not_open = ::dup(fd);
  ::close(not_open);
  EXPECT_EQ(xproc_channel_adopt(not_open, &other), EBADF);
  const int plain = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  EXPECT_NE(xproc_channel_adopt(plain, &other), 0);  // not a segment file
  ::close(plain);
  EXPECT_EQ(xproc_channel_close(nullptr), 0);
}

TEST(ChannelC, ReceiverSeesEOwnerDeadAfterTheLastSenderExitedAndDeclareChecksRoles) {
  Handle creator;
  ASSERT_EQ(xproc_channel_create_anonymous(4096, 256, 0, &creator.channel), 0);
  const int fd = xproc_channel_fd(creator.channel);
  EXPECT_EQ(xproc_channel_declare(nullptr, XPROC_CHANNEL_SENDER), EINVAL);
  EXPECT_EQ(xproc_channel_declare(creator.channel, 0), EINVAL);
  EXPECT_EQ(xproc_channel_declare(creator.channel, 0x4), EINVAL);
  EXPECT_EQ(xproc_channel_declare(creator.channel, XPROC_CHANNEL_RECEIVER), 0);
  Child child = Child::start([&]() -> int {
    xproc_channel_t* adopted = nullptr;
    if (xproc_channel_adopt(fd, &adopted) != 0) return 1;
    if (xproc_channel_declare(adopted, XPROC_CHANNEL_SENDER) != 0) return 2;
    if (send_text(adopted, "last words") != 0) return 3;
    return xproc_channel_close(adopted) == 0 ? 0 : 4;
  });
  EXPECT_TRUE(child.wait(10s).ok());
  EXPECT_EQ(receive_text(creator.channel), "last words");  // delivered before the end
  char buffer[16];
  std::size_t len = 0;
  EXPECT_EQ(xproc_channel_receive(creator.channel, buffer, sizeof(buffer), &len), EOWNERDEAD);
}

TEST(ChannelC, SendAndReceiveReportFullEmptyTimeoutsAndSizes) {
  Handle h;
  ASSERT_EQ(xproc_channel_create_anonymous(256, 64, 0, &h.channel), 0);
  char big[65] = {};
  EXPECT_EQ(xproc_channel_send(h.channel, big, sizeof(big)), EMSGSIZE);
  EXPECT_EQ(xproc_channel_try_send(h.channel, big, sizeof(big)), EMSGSIZE);
  EXPECT_EQ(xproc_channel_send(nullptr, big, 1), EINVAL);
  EXPECT_EQ(xproc_channel_send(h.channel, nullptr, 1), EINVAL);
  EXPECT_EQ(xproc_channel_send(h.channel, nullptr, 0), 0);  // an empty message

  char buffer[64];
  std::size_t len = 99;
  ASSERT_EQ(xproc_channel_try_receive(h.channel, nullptr, 0, &len), 0);
  EXPECT_EQ(len, 0u);
  EXPECT_EQ(xproc_channel_try_receive(h.channel, buffer, sizeof(buffer), &len), EAGAIN);
  timespec past = monotonic_in(-1ms);
  EXPECT_EQ(xproc_channel_timedreceive(h.channel, buffer, sizeof(buffer), &len, &past), ETIMEDOUT);
  const timespec soon = monotonic_in(20ms);
  EXPECT_EQ(xproc_channel_timedreceive(h.channel, buffer, sizeof(buffer), &len, &soon), ETIMEDOUT);
  const timespec bad = xproc::test::bad_timespec();
  EXPECT_EQ(xproc_channel_timedreceive(h.channel, buffer, sizeof(buffer), &len, &bad), EINVAL);
  EXPECT_EQ(xproc_channel_timedreceive(h.channel, buffer, sizeof(buffer), &len, nullptr), EINVAL);
  EXPECT_EQ(xproc_channel_receive(h.channel, buffer, sizeof(buffer), nullptr), EINVAL);
  EXPECT_EQ(xproc_channel_receive(h.channel, nullptr, 4, &len), EINVAL);
  EXPECT_EQ(xproc_channel_receive(nullptr, buffer, sizeof(buffer), &len), EINVAL);

  // Fill the ring: 48 payload bytes = 64-byte records, 256-byte ring (one header kept free).
  char payload[48] = {};
  int sent = 0;
  while (xproc_channel_try_send(h.channel, payload, sizeof(payload)) == 0) ++sent;
  EXPECT_GE(sent, 2);
  EXPECT_EQ(xproc_channel_try_send(h.channel, payload, sizeof(payload)), EAGAIN);
  EXPECT_EQ(xproc_channel_timedsend(h.channel, payload, sizeof(payload), &past), ETIMEDOUT);
  EXPECT_EQ(xproc_channel_timedsend(h.channel, payload, sizeof(payload), &bad), EINVAL);

  // Too small a buffer: EMSGSIZE, the size needed, the message stays queued.
  len = 0;
  EXPECT_EQ(xproc_channel_try_receive(h.channel, buffer, 10, &len), EMSGSIZE);
  EXPECT_EQ(len, sizeof(payload));
  EXPECT_EQ(xproc_channel_receive(h.channel, buffer, 10, &len), EMSGSIZE);
  EXPECT_EQ(len, sizeof(payload));
  const timespec later = monotonic_in(5s);
  ASSERT_EQ(xproc_channel_timedreceive(h.channel, buffer, sizeof(buffer), &len, &later), 0);
  EXPECT_EQ(len, sizeof(payload));
  // Space again: a timed send succeeds.
  EXPECT_EQ(xproc_channel_timedsend(h.channel, payload, sizeof(payload), &later), 0);
  for (int i = 0; i < sent; ++i) {
    ASSERT_EQ(xproc_channel_receive(h.channel, buffer, sizeof(buffer), &len), 0);
  }
  EXPECT_EQ(xproc_channel_try_receive(h.channel, buffer, sizeof(buffer), &len), EAGAIN);
}

TEST(ChannelC, ReservationIsCommittedOrAbandonedExactlyOnce) {
  Handle h;
  ASSERT_EQ(xproc_channel_create_anonymous(4096, 256, 0, &h.channel), 0);
  xproc_channel_reservation_t reservation;
  std::memset(&reservation, 0, sizeof(reservation));
  EXPECT_EQ(xproc_channel_commit(h.channel, &reservation), EINVAL);  // never reserved
  EXPECT_EQ(xproc_channel_reserve(h.channel, 257, &reservation), EMSGSIZE);
  EXPECT_EQ(xproc_channel_reserve(h.channel, 5, nullptr), EINVAL);
  EXPECT_EQ(xproc_channel_reserve(nullptr, 5, &reservation), EINVAL);

  ASSERT_EQ(xproc_channel_reserve(h.channel, 5, &reservation), 0);
  ASSERT_NE(reservation.data, nullptr);
  EXPECT_EQ(reservation.size, 5u);
  std::memcpy(reservation.data, "hello", 5);
  EXPECT_EQ(xproc_channel_commit(nullptr, &reservation), EINVAL);
  ASSERT_EQ(xproc_channel_commit(h.channel, &reservation), 0);
  EXPECT_EQ(reservation.data, nullptr);
  EXPECT_EQ(xproc_channel_commit(h.channel, &reservation), EINVAL);  // finished
  EXPECT_EQ(xproc_channel_abandon(h.channel, &reservation), EINVAL);

  ASSERT_EQ(xproc_channel_try_reserve(h.channel, 7, &reservation), 0);
  ASSERT_EQ(xproc_channel_abandon(h.channel, &reservation), 0);
  const timespec later = monotonic_in(5s);
  ASSERT_EQ(xproc_channel_timedreserve(h.channel, 5, &reservation, &later), 0);
  std::memcpy(reservation.data, "world", 5);
  ASSERT_EQ(xproc_channel_commit(h.channel, &reservation), 0);
  const timespec bad = xproc::test::bad_timespec();
  EXPECT_EQ(xproc_channel_timedreserve(h.channel, 5, &reservation, &bad), EINVAL);

  // A reservation of another channel is refused by commit and stays active.
  Handle other;
  ASSERT_EQ(xproc_channel_create_anonymous(4096, 256, 0, &other.channel), 0);
  ASSERT_EQ(xproc_channel_reserve(other.channel, 3, &reservation), 0);
  EXPECT_EQ(xproc_channel_commit(h.channel, &reservation), EINVAL);
  EXPECT_EQ(xproc_channel_commit(other.channel, &reservation), 0);

  EXPECT_EQ(receive_text(h.channel), "hello");
  EXPECT_EQ(receive_text(h.channel), "world");
  xproc_channel_stats_t stats;
  ASSERT_EQ(xproc_channel_stats(h.channel, &stats), 0);
  EXPECT_EQ(stats.abandoned, 1u);
  EXPECT_EQ(stats.reserved_total, 3u);
  EXPECT_EQ(xproc_channel_stats(nullptr, &stats), EINVAL);
  EXPECT_EQ(xproc_channel_stats(h.channel, nullptr), EINVAL);

  // Full: try_reserve EAGAIN, timedreserve ETIMEDOUT.
  Handle tiny;
  ASSERT_EQ(xproc_channel_create_anonymous(256, 64, 0, &tiny.channel), 0);
  while (xproc_channel_try_reserve(tiny.channel, 48, &reservation) == 0) {
    ASSERT_EQ(xproc_channel_commit(tiny.channel, &reservation), 0);
  }
  EXPECT_EQ(xproc_channel_try_reserve(tiny.channel, 48, &reservation), EAGAIN);
  const timespec past = monotonic_in(-1ms);
  EXPECT_EQ(xproc_channel_timedreserve(tiny.channel, 48, &reservation, &past), ETIMEDOUT);
}

TEST(ChannelC, PeekedMessageIsReadInPlaceAndReleasedOnce) {
  Handle h;
  ASSERT_EQ(xproc_channel_create_anonymous(4096, 256, 0, &h.channel), 0);
  xproc_channel_message_t message;
  std::memset(&message, 0, sizeof(message));
  EXPECT_EQ(xproc_channel_release(h.channel, &message), EINVAL);  // never peeked
  EXPECT_EQ(xproc_channel_try_peek(h.channel, &message), EAGAIN);
  const timespec past = monotonic_in(-1ms);
  EXPECT_EQ(xproc_channel_timedpeek(h.channel, &message, &past), ETIMEDOUT);
  const timespec bad = xproc::test::bad_timespec();
  EXPECT_EQ(xproc_channel_timedpeek(h.channel, &message, &bad), EINVAL);
  EXPECT_EQ(xproc_channel_peek(h.channel, nullptr), EINVAL);
  EXPECT_EQ(xproc_channel_peek(nullptr, &message), EINVAL);

  ASSERT_EQ(send_text(h.channel, "one"), 0);
  ASSERT_EQ(send_text(h.channel, "two"), 0);
  ASSERT_EQ(send_text(h.channel, "three"), 0);
  ASSERT_EQ(xproc_channel_peek(h.channel, &message), 0);
  EXPECT_EQ(std::string(static_cast<const char*>(message.data), message.size), "one");
  EXPECT_EQ(xproc_channel_release(nullptr, &message), EINVAL);
  ASSERT_EQ(xproc_channel_release(h.channel, &message), 0);
  EXPECT_EQ(message.data, nullptr);
  EXPECT_EQ(xproc_channel_release(h.channel, &message), EINVAL);  // finished
  ASSERT_EQ(xproc_channel_try_peek(h.channel, &message), 0);
  EXPECT_EQ(std::string(static_cast<const char*>(message.data), message.size), "two");
  ASSERT_EQ(xproc_channel_release(h.channel, &message), 0);
  const timespec later = monotonic_in(5s);
  ASSERT_EQ(xproc_channel_timedpeek(h.channel, &message, &later), 0);
  EXPECT_EQ(std::string(static_cast<const char*>(message.data), message.size), "three");
  ASSERT_EQ(xproc_channel_release(h.channel, &message), 0);
}

TEST(ChannelC, ReadinessDescriptorIsReadableWhileMessagesWaitAndRearms) {
  Handle h;
  ASSERT_EQ(xproc_channel_create_anonymous(4096, 256, 0, &h.channel), 0);
  EXPECT_EQ(xproc_channel_readiness_rearm(h.channel), EINVAL);  // none yet
  int fd = -1;
  ASSERT_EQ(xproc_channel_readiness_fd(h.channel, &fd), 0);
  int again = -1;
  ASSERT_EQ(xproc_channel_readiness_fd(h.channel, &again), 0);
  EXPECT_EQ(again, fd);
  EXPECT_EQ(xproc_channel_readiness_fd(nullptr, &again), EINVAL);
  EXPECT_EQ(xproc_channel_readiness_fd(h.channel, nullptr), EINVAL);
  EXPECT_EQ(xproc_channel_readiness_rearm(nullptr), EINVAL);

  pollfd p{fd, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);
  Child child = Child::start([&]() -> int {
    xproc_channel_t* adopted = nullptr;
    if (xproc_channel_adopt(xproc_channel_fd(h.channel), &adopted) != 0) return 1;
    for (int i = 0; i < 50; ++i) {
      if (send_text(adopted, "ping") != 0) return 2;
      usleep(200);
    }
    return xproc_channel_close(adopted) == 0 ? 0 : 3;
  });
  int received = 0;
  while (received < 50) {
    p.revents = 0;
    ASSERT_EQ(::poll(&p, 1, 5000), 1) << received;
    char buffer[16];
    std::size_t len = 0;
    while (xproc_channel_try_receive(h.channel, buffer, sizeof(buffer), &len) == 0) ++received;
    ASSERT_EQ(xproc_channel_readiness_rearm(h.channel), 0);
  }
  EXPECT_EQ(received, 50);
  EXPECT_TRUE(child.wait(10s).ok());
}

TEST(ChannelC, RedeliveryFlagPutsADeadReceiversMessageBack) {
  Handle h;
  ASSERT_EQ(xproc_channel_create_anonymous(4096, 256, XPROC_CHANNEL_REDELIVERY, &h.channel), 0);
  ASSERT_EQ(send_text(h.channel, "precious"), 0);
  Child child = Child::start([&]() -> int {
    xproc_channel_t* adopted = nullptr;
    if (xproc_channel_adopt(xproc_channel_fd(h.channel), &adopted) != 0) return 1;
    xproc_channel_message_t message;
    if (xproc_channel_peek(adopted, &message) != 0) return 2;
    raise(SIGKILL);
    return 3;
  });
  ASSERT_TRUE(child.wait(10s).signaled);
  EXPECT_EQ(receive_text(h.channel), "precious");
  xproc_channel_stats_t stats;
  ASSERT_EQ(xproc_channel_stats(h.channel, &stats), 0);
  EXPECT_EQ(stats.redelivered, 1u);
}

}  // namespace
