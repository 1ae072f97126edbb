// bulk::TransferEndpoint across processes: byte-exact pulls and pushes between forked children,
// several producer processes to several consumer processes (each transfer completed exactly
// once), and the permission-denied path (a reader that dropped to another uid).

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <deque>
#include <thread>
#include <vector>

#include "child_process.h"
#include "shared_object.h"
#include "transfer_test_support.h"
#include "xproc/bulk/transfer.h"
#include "xproc/sys/error.h"
#include "xproc/sys/file.h"
#include "xproc/sys/memory.h"

namespace xproc::bulk {
namespace {

using namespace std::chrono_literals;
using test::make_segment;
using test::open_endpoint;
using test::pattern;

// Descriptors posted by index, in MAP_SHARED memory.
struct Mailbox {
  static constexpr std::size_t kCapacity = 1024;
  std::atomic<std::uint32_t> ready[kCapacity];
  TransferDescriptor descriptors[kCapacity];
  std::atomic<std::uint32_t> pulled[kCapacity];  // successful pulls per descriptor
  std::atomic<std::uint32_t> bad;                // corrupt bytes or unexpected errors seen
  std::atomic<std::uint32_t> done;               // descriptors pulled so far
  std::atomic<std::uint32_t> stale;              // pulls of a descriptor whose slot was reused

  void post(std::size_t index, const TransferDescriptor& descriptor) {
    descriptors[index] = descriptor;
    ready[index].store(1, std::memory_order_release);
  }
  // Waits (bounded) for descriptor `index`.
  bool take(std::size_t index, TransferDescriptor& out, sync::Deadline deadline) {
    if (!test::await_flag(ready[index], deadline)) return false;
    out = descriptors[index];
    return true;
  }
};

using Shared = xproc::test::SharedObject<Mailbox>;

TEST(TransferProcess, ChildSourcesArePulledByteExactFrom1BTo64MiBOr256MiBAtScale4) {
  shm::Segment segment = make_segment(16);
  TransferEndpoint endpoint = open_endpoint(segment);
  Shared shared;
  std::vector<std::size_t> sizes = {
      1, 100, 4096, 65536, std::size_t{1} << 20, std::size_t{16} << 20, std::size_t{64} << 20};
  if (xproc::test::test_scale() >= 4) sizes.push_back(std::size_t{256} << 20);
  xproc::test::Child sender = xproc::test::Child::start([&] {
    test::Joined own(segment);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      std::vector<std::byte> source = pattern(sizes[i], i);
      Result<Transfer> transfer = own->register_source(source);
      if (!transfer) return 10;
      shared->post(i, transfer->descriptor());
      if (transfer->wait_for(60s)) return 20 + static_cast<int>(i);
      if (transfer->transferred() != sizes[i]) return 40;
    }
    return 0;
  });
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    TransferDescriptor descriptor;
    ASSERT_TRUE(shared->take(i, descriptor, sync::Clock::now() + 60s));
    EXPECT_TRUE(endpoint.permitted(sync::ParticipantId::unpack(descriptor.owner)));
    std::vector<std::byte> target(sizes[i]);
    // Every other size through a pull split across three threads (64 KiB shares at least).
    Result<std::size_t> pulled = i % 2 == 1 ? endpoint.pull(descriptor, target, PullSplit{3, 65536})
                                            : endpoint.pull(descriptor, target);
    ASSERT_TRUE(pulled) << pulled.error().message();
    ASSERT_EQ(*pulled, sizes[i]);
    EXPECT_TRUE(target == pattern(sizes[i], i)) << sizes[i];
  }
  EXPECT_TRUE(sender.wait(60s).ok());
}

TEST(TransferProcess, PushFillsAChildsRegisteredDestination) {
  shm::Segment segment = make_segment(16);
  TransferEndpoint endpoint = open_endpoint(segment);
  Shared shared;
  constexpr std::size_t kSize = std::size_t{3} << 20;
  xproc::test::Child receiver = xproc::test::Child::start([&] {
    test::Joined own(segment);
    std::vector<std::byte> destination(kSize);
    Result<Transfer> transfer = own->register_destination(destination);
    if (!transfer) return 10;
    shared->post(0, transfer->descriptor());
    if (transfer->wait_for(60s)) return 11;
    if (transfer->transferred() != kSize - 5) return 12;
    return std::memcmp(destination.data(), pattern(kSize - 5, 77).data(), kSize - 5) == 0 ? 0 : 13;
  });
  TransferDescriptor descriptor;
  ASSERT_TRUE(shared->take(0, descriptor, sync::Clock::now() + 60s));
  std::vector<std::byte> source = pattern(kSize - 5, 77);
  EXPECT_EQ(endpoint.push(descriptor, source).value(), kSize - 5);
  EXPECT_EQ(endpoint.push(descriptor, source).error(), errc::already_returned);
  EXPECT_TRUE(receiver.wait(60s).ok());
}

TEST(TransferProcess, ProducersToConsumersCompleteEachTransferExactlyOnce) {
  constexpr int kProducers = 3;
  constexpr int kConsumers = 3;
  constexpr std::size_t kInFlight = 8;
  const auto per_producer = static_cast<std::size_t>(std::min<long>(xproc::test::scaled(60), 300));
  const std::size_t total = kProducers * per_producer;
  shm::Segment segment = make_segment(64);
  Shared shared;
  std::vector<xproc::test::Child> children;
  for (int p = 0; p < kProducers; ++p) {
    children.push_back(xproc::test::Child::start([&, p] {
      test::Joined own(segment);
      std::deque<std::pair<std::vector<std::byte>, Transfer>> flying;
      for (std::size_t k = 0; k < per_producer; ++k) {
        const std::size_t index = static_cast<std::size_t>(p) * per_producer + k;
        std::vector<std::byte> source = pattern(1 + (index * 7919) % (256 * 1024), index);
        // Scattered: the source as up to 5 ranges.
        std::vector<iovec> ranges;
        for (std::size_t at = 0; at < source.size();) {
          std::size_t length = std::max<std::size_t>(1, source.size() / 5);
          length = std::min(length, source.size() - at);
          ranges.push_back(iovec{source.data() + at, length});
          at += length;
        }
        Result<Transfer> transfer = own->register_source(ranges);
        if (!transfer) return 10;
        shared->post(index, transfer->descriptor());
        flying.emplace_back(std::move(source), std::move(*transfer));
        if (flying.size() >= kInFlight) {
          if (flying.front().second.wait_for(60s)) return 11;
          flying.pop_front();
        }
      }
      for (auto& entry : flying) {
        if (entry.second.wait_for(60s)) return 12;
      }
      return 0;
    }));
  }
  for (int c = 0; c < kConsumers; ++c) {
    children.push_back(xproc::test::Child::start([&, c] {
      test::Joined own(segment);
      std::vector<std::byte> target(256 * 1024);
      const sync::Deadline deadline = sync::Clock::now() + 120s;
      // Each consumer walks the descriptors from its own offset and tries every one it finds
      // unpulled: consumers race for the same transfers all the time.
      std::size_t cursor = static_cast<std::size_t>(c) * 17;
      while (shared->done.load(std::memory_order_acquire) < total) {
        if (sync::Clock::now() > deadline) return 20;
        cursor = (cursor + 1) % total;
        if (shared->ready[cursor].load(std::memory_order_acquire) == 0 ||
            shared->pulled[cursor].load(std::memory_order_relaxed) != 0) {
          continue;
        }
        const TransferDescriptor descriptor = shared->descriptors[cursor];
        Result<std::size_t> result = own->pull(descriptor, target);
        if (result) {
          const std::size_t expected_size = 1 + (cursor * 7919) % (256 * 1024);
          if (*result != expected_size ||
              std::memcmp(target.data(), pattern(expected_size, cursor).data(), expected_size) !=
                  0) {
            shared->bad.fetch_add(1);
          }
          shared->pulled[cursor].fetch_add(1, std::memory_order_relaxed);
          shared->done.fetch_add(1, std::memory_order_release);
        } else if (result.error() == errc::bad_descriptor) {
          // Pulled by another consumer, retired by its producer, and the slot registered again
          // since we read the descriptor: it names a registration that is gone.
          shared->stale.fetch_add(1, std::memory_order_relaxed);
        } else if (result.error() != errc::already_returned) {
          shared->bad.fetch_add(1);
        }
      }
      return 0;
    }));
  }
  for (xproc::test::Child& child : children) {
    xproc::test::ChildStatus status = child.wait(180s);
    EXPECT_TRUE(status.ok()) << status.exit_code << " signal " << status.term_signal;
  }
  EXPECT_EQ(shared->bad.load(), 0u);
  EXPECT_EQ(shared->done.load(), total);
  std::printf("%zu transfers, %u pulls of reused slots refused\n", total, shared->stale.load());
  for (std::size_t i = 0; i < total; ++i) ASSERT_EQ(shared->pulled[i].load(), 1u) << i;
}

TEST(TransferProcess, ForkChildsCopiesOfEndpointAndHandleDoNothing) {
  shm::Segment segment = make_segment(16);
  TransferEndpoint endpoint = open_endpoint(segment);
  std::vector<std::byte> source = pattern(5000, 9);
  Transfer transfer = endpoint.register_source(source).value();
  xproc::test::Child child = xproc::test::Child::start([&] {
    std::vector<std::byte> target(5000);
    // Not a participant here: the inherited endpoint refuses to act.
    if (endpoint.pull(transfer.descriptor(), target).error() != errc::invalid_argument) return 1;
    if (endpoint.register_source(source).error() != errc::invalid_argument) return 2;
    if (transfer.poll() != errc::invalid_argument) return 3;
    { Transfer dropped = std::move(transfer); }  // must not withdraw the parent's transfer
    return 0;
  });
  EXPECT_TRUE(child.wait(30s).ok());
  std::vector<std::byte> target(5000);
  EXPECT_EQ(endpoint.pull(transfer.descriptor(), target).value(), 5000u);
  EXPECT_FALSE(transfer.wait_for(5s));
  EXPECT_TRUE(target == source);
}

TEST(TransferProcess, ReaderOfAnotherUidIsDeniedWithAReasonAndTheOwnerLearnsWhy) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to start a reader with another uid";
  shm::Segment segment = make_segment(16);
  TransferEndpoint endpoint = open_endpoint(segment);
  Shared shared;
  std::vector<std::byte> source = pattern(100000, 5);
  Transfer transfer = endpoint.register_source(source).value();
  shared->post(0, transfer.descriptor());
  xproc::test::Child reader = xproc::test::Child::start([&] {
    // Attach first (as root: reopening our memfd needs it), then drop to nobody.
    test::Joined own(segment);
    if (setgid(65534) != 0 || setuid(65534) != 0) return 2;
    TransferDescriptor descriptor;
    if (!shared->take(0, descriptor, sync::Clock::now() + 30s)) return 3;
    ProbeResult probe = own->probe(sync::ParticipantId::unpack(descriptor.owner));
    if (probe.error != errc::permission_denied) return 4;
    if (probe.reason.find("euid") == std::string::npos) return 5;
    std::vector<std::byte> target(100000);
    Result<std::size_t> pulled = own->pull(descriptor, target);
    return !pulled && pulled.error() == errc::permission_denied ? 0 : 6;
  });
  xproc::test::ChildStatus status = reader.wait(30s);
  EXPECT_TRUE(status.ok()) << status.exit_code;
  // The owner's handle reports why, so a front end can fall back to another path.
  EXPECT_EQ(transfer.wait_for(5s), errc::permission_denied);
}

TEST(TransferProcess, NonDumpableOwnerIsNotPermittedToAnUnprivilegedPeer) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop both sides to another uid";
  shm::Segment segment = make_segment(16);
  Shared shared;
  xproc::test::Child owner = xproc::test::Child::start([&] {
    test::Joined own(segment);
    if (setgid(65534) != 0 || setuid(65534) != 0) return 2;
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return 3;
    std::vector<std::byte> source = pattern(4096, 6);
    Result<Transfer> transfer = own->register_source(source);
    if (!transfer) return 4;
    shared->post(0, transfer->descriptor());
    return transfer->wait_for(30s) == errc::permission_denied ? 0 : 5;
  });
  xproc::test::Child reader = xproc::test::Child::start([&] {
    test::Joined own(segment);
    if (setgid(65534) != 0 || setuid(65534) != 0) return 2;
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0) return 3;
    TransferDescriptor descriptor;
    if (!shared->take(0, descriptor, sync::Clock::now() + 30s)) return 4;
    if (own->permitted(sync::ParticipantId::unpack(descriptor.owner))) return 5;
    std::vector<std::byte> target(4096);
    Result<std::size_t> pulled = own->pull(descriptor, target);
    return !pulled && pulled.error() == errc::permission_denied ? 0 : 6;
  });
  xproc::test::ChildStatus reader_status = reader.wait(30s);
  EXPECT_TRUE(reader_status.ok()) << reader_status.exit_code;
  xproc::test::ChildStatus owner_status = owner.wait(30s);
  EXPECT_TRUE(owner_status.ok()) << owner_status.exit_code;
}

}  // namespace
}  // namespace xproc::bulk
