// Segments across processes: a create race among processes, another uid, an anonymous segment
// passed to a child with its credentials, a creator that dies before ready, stale detection and
// removal after SIGKILL, unlink-when-last-detaches across processes, and fork children.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "child_process.h"
#include "eventually.h"
#include "segment_test_support.h"
#include "xproc/shm/segment.h"
#include "xproc/shm/segment_registry.h"
#include "xproc/shm/segment_transfer.h"
#include "xproc/sys/error.h"
#include "xproc/sys/file.h"
#include "xproc/sys/socket.h"

namespace xproc::shm {
namespace {

using test::UniqueName;
using namespace std::chrono_literals;

// A pipe for handshakes: the child reports a byte when it reached a point.
struct Pipe {
  Pipe() { EXPECT_EQ(pipe(fds), 0); }
  ~Pipe() {
    close(fds[0]);
    close(fds[1]);
  }
  bool put(char byte = 1) const { return write(fds[1], &byte, 1) == 1; }
  char get() const {
    char byte = 0;
    return read(fds[0], &byte, 1) == 1 ? byte : char{-1};
  }
  int fds[2] = {-1, -1};
};

TEST(SegmentProcess, ConcurrentCreatesAmongProcessesHaveExactlyOneWinner) {
  constexpr int kProcesses = 6;
  for (long round = 0; round < xproc::test::scaled(5); ++round) {
    UniqueName name("race");
    Pipe go;
    std::vector<xproc::test::Child> children;
    for (int i = 0; i < kProcesses; ++i) {
      children.push_back(xproc::test::Child::start([&] {
        if (go.get() != 1) return 3;
        auto segment = Segment::create(name, SegmentKind::raw, 4096);
        if (segment) return 0;
        return segment.error() == errc::already_exists ? 1 : 2;
      }));
    }
    for (int i = 0; i < kProcesses; ++i) ASSERT_TRUE(go.put(1));
    int winners = 0;
    int losers = 0;
    for (auto& child : children) {
      auto status = child.wait(10s);
      ASSERT_TRUE(status.exited);
      if (status.exit_code == 0) ++winners;
      if (status.exit_code == 1) ++losers;
    }
    EXPECT_EQ(winners, 1);
    EXPECT_EQ(losers, kProcesses - 1);
    EXPECT_TRUE(Segment::open(name, SegmentKind::raw));  // the winner's segment is complete
  }
}

TEST(SegmentProcess, AnotherUidCannotOpenA0600SegmentAndRootRefusesAForeignOwner) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to uid 65534";
  UniqueName mine("uid");
  auto created = Segment::create(mine, SegmentKind::raw, 64);
  ASSERT_TRUE(created);
  UniqueName theirs("uid-foreign");
  auto child = xproc::test::Child::start([&] {
    if (setgid(65534) != 0 || setuid(65534) != 0) return 10;
    auto opened = Segment::open(mine, SegmentKind::raw);
    if (opened || opened.error() != errc::permission_denied) return 1;
    // The child's own segment, readable and writable by everybody...
    SegmentOptions options;
    options.mode = 0666;
    auto own = Segment::create(theirs, SegmentKind::raw, 64, options);
    return own ? 0 : 2;
  });
  ASSERT_EQ(child.wait(10s).exit_code, 0);
  // ...is still refused by root: the owner check is not the permission bits...
  EXPECT_EQ(Segment::open(theirs, SegmentKind::raw).error(), errc::permission_denied);
  // ...unless asked for.
  SegmentOptions trusting;
  trusting.allow_other_owner = true;
  auto opened = Segment::open(theirs, SegmentKind::raw, trusting);
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_EQ(opened->info().creator_uid, 65534u);
}

TEST(SegmentProcess, AnAnonymousSegmentTravelsToAChildWhichSeesTheSenderCredentials) {
  auto created = Segment::create_anonymous(SegmentKind::channel, 4096, {}, [](auto body) {
    std::memset(body.data(), 5, body.size());
    return std::error_code();
  });
  ASSERT_TRUE(created);
  auto pair = sys::unix_socket_pair().value();
  pid_t parent = getpid();
  auto child = xproc::test::Child::start([&] {
    auto received = receive_segment(pair.second.get(), SegmentKind::channel);
    if (!received) return 1;
    if (received->peer.pid != parent || received->peer.uid != geteuid()) return 2;
    Segment& segment = received->segment;
    if (segment.body()[4095] != std::byte{5}) return 3;
    segment.body()[0] = std::byte{9};
    if (!segment.self().is_alive(segment.info().creator).value()) return 4;
    char done = 1;
    if (write(pair.second.get(), &done, 1) != 1) return 5;
    char bye = 0;
    return read(pair.second.get(), &bye, 1) == 1 ? 0 : 6;  // stay attached until told
  });
  ASSERT_FALSE(send_segment(pair.first.get(), *created));
  char done = 0;
  ASSERT_EQ(read(pair.first.get(), &done, 1), 1);
  EXPECT_EQ(created->body()[0], std::byte{9});
  int alive = 0;
  ASSERT_FALSE(created->self().for_each_participant([&](auto, bool live) { alive += live; }));
  EXPECT_EQ(alive, 2);
  char bye = 1;
  ASSERT_EQ(write(pair.first.get(), &bye, 1), 1);
  EXPECT_TRUE(child.wait(10s).ok());
  alive = 0;
  ASSERT_FALSE(created->self().for_each_participant([&](auto, bool live) { alive += live; }));
  EXPECT_EQ(alive, 1);
}

TEST(SegmentProcess, AReceiverRefusesAnotherUidUnlessAllowed) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to uid 65534";
  auto created = Segment::create_anonymous(SegmentKind::raw, 64);
  ASSERT_TRUE(created);
  // The child makes the pair as uid 65534 (SO_PEERCRED names the pair's maker) and sends.
  int channel[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, channel), 0);
  auto child = xproc::test::Child::start([&] {
    if (setgid(65534) != 0 || setuid(65534) != 0) return 10;
    auto pair = sys::unix_socket_pair();
    if (!pair) return 1;
    // Hand our end to the parent, then send the segment twice over the pair.
    if (sys::send_with_descriptor(channel[1], std::as_bytes(std::span("p", 1)),
                                  pair->second.get())) {
      return 2;
    }
    if (send_segment(pair->first.get(), *created) || send_segment(pair->first.get(), *created)) {
      return 3;
    }
    char bye = 0;
    return read(channel[1], &bye, 1) == 1 ? 0 : 4;
  });
  std::array<std::byte, 1> byte{};
  auto end = sys::receive_with_descriptor(channel[0], byte).value();
  ASSERT_TRUE(end.fd.valid());
  EXPECT_EQ(receive_segment(end.fd.get(), SegmentKind::raw).error(), errc::permission_denied);
  ReceiveOptions allow;
  allow.allow_other_uid = true;
  auto received = receive_segment(end.fd.get(), SegmentKind::raw, allow);
  ASSERT_TRUE(received) << received.error().message();
  EXPECT_EQ(received->peer.uid, 65534u);
  char bye = 1;
  ASSERT_EQ(write(channel[0], &bye, 1), 1);
  EXPECT_TRUE(child.wait(10s).ok());
  close(channel[0]);
  close(channel[1]);
}

// The descriptor of this process's segment memfd, found by its name in /proc/self/fd.
int find_segment_memfd() {
  for (int fd = 3; fd < 1024; ++fd) {
    char target[256] = {};
    std::string link = "/proc/self/fd/" + std::to_string(fd);
    ssize_t length = readlink(link.c_str(), target, sizeof(target) - 1);
    if (length > 0 && std::string_view(target).starts_with("/memfd:xproc-segment")) return fd;
  }
  return -1;
}

TEST(SegmentProcess, ACreatorThatDiesBeforeReadyGivesTimedOutThenPeerDead) {
  auto pair = sys::unix_socket_pair().value();
  auto hanging = xproc::test::Child::start([&] {
    // Leaks its descriptor from inside init, before ready, then hangs there until killed.
    auto segment = Segment::create_anonymous(SegmentKind::raw, 64, {}, [&](auto) {
      int fd = find_segment_memfd();
      if (fd < 0) return std::error_code(errc::not_found);
      if (sys::send_with_descriptor(pair.second.get(), std::as_bytes(std::span("s", 1)), fd)) {
        return std::error_code(errc::invalid_argument);
      }
      pause();
      return std::error_code();
    });
    return 1;
  });
  std::array<std::byte, 1> byte{};
  auto received = sys::receive_with_descriptor(pair.first.get(), byte);
  ASSERT_TRUE(received) << received.error().message();
  ASSERT_TRUE(received->fd.valid());
  SegmentOptions quick;
  quick.ready_timeout = 30ms;
  auto early = Segment::adopt(sys::reopen(received->fd.get()).value(), SegmentKind::raw, quick);
  EXPECT_EQ(early.error(), errc::timed_out);  // the creator is alive, still in init
  hanging.kill(SIGKILL);
  EXPECT_TRUE(hanging.wait(10s).signaled);
  auto late = Segment::adopt(std::move(received->fd), SegmentKind::raw);
  EXPECT_EQ(late.error(), errc::peer_dead);  // at once, not after ready_timeout
}

TEST(SegmentProcess, StaleOnlyOnceTheCreatorAndEveryAttacherAreKilled) {
  UniqueName name("stale");
  Pipe ready;
  auto creator = xproc::test::Child::start([&] {
    auto segment = Segment::create(name, SegmentKind::raw, 64);
    if (!segment || !ready.put()) return 1;
    pause();
    return 0;
  });
  ASSERT_EQ(ready.get(), 1);
  auto attacher = xproc::test::Child::start([&] {
    auto segment = Segment::open(name, SegmentKind::raw);
    if (!segment || !ready.put()) return 1;
    pause();
    return 0;
  });
  ASSERT_EQ(ready.get(), 1);
  EXPECT_FALSE(is_stale(name).value());
  EXPECT_FALSE(remove_stale(name).value());

  creator.kill(SIGKILL);
  EXPECT_TRUE(creator.wait(10s).signaled);
  EXPECT_FALSE(is_stale(name).value());  // the attacher lives
  EXPECT_FALSE(remove_stale(name).value());
  auto report = inspect(name);
  ASSERT_TRUE(report);
  ASSERT_EQ(report->participants.size(), 2u);
  EXPECT_FALSE(report->participants[0].alive);  // the creator
  EXPECT_TRUE(report->participants[1].alive);

  attacher.kill(SIGKILL);  // not reaped yet: a zombie holds no locks
  EXPECT_TRUE(xproc::test::eventually([&] { return is_stale(name).value(); }));
  EXPECT_TRUE(remove_stale(name).value());
  EXPECT_EQ(Segment::open(name, SegmentKind::raw).error(), errc::not_found);
  EXPECT_TRUE(attacher.wait(10s).signaled);
}

TEST(SegmentProcess, UnlinkWhenLastDetachesFollowsTheLastLiveParticipant) {
  UniqueName name("last");
  SegmentOptions options;
  options.unlink_when_last_detaches = true;
  auto created = Segment::create(name, SegmentKind::raw, 64, options);
  ASSERT_TRUE(created);
  Pipe attached;
  Pipe release;
  auto child = xproc::test::Child::start([&] {
    auto segment = Segment::open(name, SegmentKind::raw);
    if (!segment || !attached.put()) return 1;
    if (release.get() != 1) return 2;
    return 0;  // the destructor detaches; the last one unlinks
  });
  ASSERT_EQ(attached.get(), 1);
  created = Segment();  // the child lives: the name stays
  EXPECT_FALSE(is_stale(name).value());
  ASSERT_TRUE(release.put());
  EXPECT_TRUE(child.wait(10s).ok());
  EXPECT_EQ(Segment::open(name, SegmentKind::raw).error(), errc::not_found);
}

TEST(SegmentProcess, AForkChildsCopyIsDetachedAndNeverUnlinks) {
  UniqueName name("fork");
  SegmentOptions options;
  options.unlink_when_last_detaches = true;
  auto created = Segment::create(name, SegmentKind::raw, 64, options);
  ASSERT_TRUE(created);
  created->body()[0] = std::byte{4};
  auto child = xproc::test::Child::start([&] {
    if (created->self().attached()) return 1;
    if (created->body()[0] != std::byte{4}) return 2;    // the mapping is inherited
    auto again = Segment::open(name, SegmentKind::raw);  // how a child takes part
    if (!again || !again->self().attached()) return 3;
    *created = Segment();  // the copy: unmaps, never unlinks (and `again` is alive anyway)
    again = std::error_code(errc::invalid_argument);  // detaches; the parent is alive: no unlink
    return 0;
  });
  EXPECT_TRUE(child.wait(10s).ok());
  EXPECT_TRUE(Segment::open(name, SegmentKind::raw));
  EXPECT_TRUE(created->self().attached());
}

}  // namespace
}  // namespace xproc::shm
