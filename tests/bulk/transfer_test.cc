// bulk::TransferEndpoint within one process (the owner and the claimer are this process, which
// may read and write itself with process_vm_*): validation, exactly-once, completion, withdrawal.

#include "xproc/bulk/transfer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "child_process.h"
#include "transfer_test_support.h"
#include "xproc/bulk/transfer_layout.h"
#include "xproc/sys/error.h"

namespace xproc::bulk {
namespace {

using namespace std::chrono_literals;
using test::make_segment;
using test::pattern;
using test::slot_of;

class TransferTest : public ::testing::Test {
 protected:
  shm::Segment segment_ = make_segment(16, 8);
  TransferEndpoint endpoint_ = TransferEndpoint::open(segment_).value();
};

TEST_F(TransferTest, PullCopiesEveryByteAndCompletesTheHandle) {
  std::vector<std::size_t> sizes = {
      1, 7, 4096, 65536 + 3, std::size_t{1} << 20, std::size_t{64} << 20};
  if (xproc::test::test_scale() >= 4) sizes.push_back(std::size_t{256} << 20);
  std::uint32_t seed = 1;
  for (std::size_t size : sizes) {
    std::vector<std::byte> source = pattern(size, seed++);
    Result<Transfer> transfer = endpoint_.register_source(source);
    ASSERT_TRUE(transfer) << transfer.error().message();
    EXPECT_EQ(transfer->poll(), errc::would_block);
    std::vector<std::byte> target(size);
    Result<std::size_t> pulled = endpoint_.pull(transfer->descriptor(), target);
    ASSERT_TRUE(pulled) << pulled.error().message();
    EXPECT_EQ(*pulled, size);
    EXPECT_EQ(transfer->wait_for(5s), std::error_code());
    EXPECT_EQ(transfer->transferred(), size);
    EXPECT_TRUE(source == target) << size;
  }
}

TEST_F(TransferTest, ScatteredRangesArriveInOrderIntoScatteredBuffers) {
  std::vector<std::byte> source = pattern(1 << 16, 9);
  std::vector<iovec> ranges;
  std::vector<std::byte> expected;
  for (std::size_t i = 0; i < kMaxTransferRanges; ++i) {
    std::size_t offset = i * 1000 + (i % 7);
    std::size_t length = 1 + (i * 37) % 900;
    ranges.push_back(iovec{source.data() + offset, length});
    expected.insert(expected.end(), source.begin() + static_cast<long>(offset),
                    source.begin() + static_cast<long>(offset + length));
  }
  Transfer transfer = endpoint_.register_source(ranges).value();
  EXPECT_EQ(transfer.descriptor().total_length, expected.size());
  std::vector<std::byte> target(expected.size() + 10);
  std::vector<iovec> into;
  for (std::size_t at = 0; at < target.size(); at += 333) {
    into.push_back(iovec{target.data() + at, std::min<std::size_t>(333, target.size() - at)});
  }
  ASSERT_EQ(endpoint_.pull(transfer.descriptor(), into).value(), expected.size());
  EXPECT_EQ(0, std::memcmp(target.data(), expected.data(), expected.size()));
  EXPECT_FALSE(transfer.wait_for(5s));
}

TEST_F(TransferTest, SplitPullCopiesEveryByteOfScatteredRangesWithAnyShareCount) {
  // Shares cut inside ranges on both sides (odd lengths, small min_share), 1..5 threads, and
  // transfers too small for more than one share.
  std::vector<std::byte> source = pattern((std::size_t{1} << 20) + 12345, 21);
  std::vector<iovec> ranges;
  std::vector<std::byte> expected;
  for (std::size_t offset = 0; ranges.size() < kMaxTransferRanges && offset < source.size();) {
    const std::size_t length =
        std::min<std::size_t>(1 + (offset * 7919) % 40000, source.size() - offset);
    ranges.push_back(iovec{source.data() + offset, length});
    expected.insert(expected.end(), source.begin() + static_cast<long>(offset),
                    source.begin() + static_cast<long>(offset + length));
    offset += length + 17;
  }
  for (std::uint32_t threads = 1; threads <= 5; ++threads) {
    for (std::size_t min_share :
         {std::size_t{1}, std::size_t{4096}, std::size_t{300000}, std::size_t{64} << 20}) {
      Transfer transfer = endpoint_.register_source(ranges).value();
      std::vector<std::byte> target(expected.size() + 3);
      std::vector<iovec> into;
      for (std::size_t at = 0; at < target.size(); at += 77777) {
        into.push_back(iovec{target.data() + at, std::min<std::size_t>(77777, target.size() - at)});
      }
      Result<std::size_t> pulled =
          endpoint_.pull(transfer.descriptor(), into, PullSplit{threads, min_share});
      ASSERT_TRUE(pulled) << pulled.error().message() << " threads " << threads;
      EXPECT_EQ(*pulled, expected.size());
      EXPECT_EQ(0, std::memcmp(target.data(), expected.data(), expected.size()))
          << "threads " << threads << " min_share " << min_share;
      EXPECT_EQ(transfer.wait_for(5s), std::error_code());
      EXPECT_EQ(transfer.transferred(), expected.size());
      // Claimed once: a second pull, split or not, is refused.
      EXPECT_EQ(endpoint_.pull(transfer.descriptor(), target, PullSplit{threads, 1}).error(),
                errc::already_returned);
    }
  }
  // One contiguous buffer, the default split (two shares of 4 MiB and more).
  std::vector<std::byte> big = pattern(std::size_t{9} << 20, 22);
  Transfer transfer = endpoint_.register_source(big).value();
  std::vector<std::byte> target(big.size());
  EXPECT_EQ(endpoint_.pull(transfer.descriptor(), target, PullSplit{}).value(), big.size());
  EXPECT_TRUE(big == target);
  EXPECT_FALSE(transfer.wait_for(5s));
}

TEST_F(TransferTest, SplitPullRefusesBadOptionsWithoutClaiming) {
  std::vector<std::byte> source = pattern(100000, 23);
  Transfer transfer = endpoint_.register_source(source).value();
  std::vector<std::byte> target(source.size());
  EXPECT_EQ(endpoint_.pull(transfer.descriptor(), target, PullSplit{0, 4096}).error(),
            errc::invalid_argument);
  EXPECT_EQ(
      endpoint_.pull(transfer.descriptor(), target, PullSplit{kMaxPullThreads + 1, 4096}).error(),
      errc::invalid_argument);
  EXPECT_EQ(endpoint_.pull(transfer.descriptor(), target, PullSplit{2, 0}).error(),
            errc::invalid_argument);
  EXPECT_EQ(transfer.poll(), errc::would_block);  // still open
  EXPECT_EQ(endpoint_.pull(transfer.descriptor(), target, PullSplit{kMaxPullThreads, 1}).value(),
            source.size());
  EXPECT_TRUE(source == target);
  EXPECT_FALSE(transfer.wait_for(5s));
}

TEST_F(TransferTest, PushWritesIntoTheRegisteredDestination) {
  std::vector<std::byte> destination(100000);
  Transfer transfer = endpoint_.register_destination(destination).value();
  std::vector<std::byte> source = pattern(90000, 3);
  ASSERT_EQ(endpoint_.push(transfer.descriptor(), source).value(), source.size());
  ASSERT_FALSE(transfer.wait_for(5s));
  EXPECT_EQ(transfer.transferred(), source.size());
  EXPECT_EQ(0, std::memcmp(destination.data(), source.data(), source.size()));
  // A push larger than the destination is refused before anything is claimed.
  Transfer small = endpoint_.register_destination(std::span(destination).first(10)).value();
  EXPECT_EQ(endpoint_.push(small.descriptor(), source).error(), errc::invalid_argument);
  EXPECT_EQ(small.poll(), errc::would_block);
  // A pull of a destination is the wrong direction.
  std::vector<std::byte> target(10);
  EXPECT_EQ(endpoint_.pull(small.descriptor(), target).error(), errc::bad_descriptor);
}

TEST_F(TransferTest, SecondPullIsAlreadyReturnedBeforeAndAfterTheOwnerLetsGo) {
  std::vector<std::byte> source = pattern(1000, 4);
  std::vector<std::byte> target(1000);
  Transfer transfer = endpoint_.register_source(source).value();
  const TransferDescriptor descriptor = transfer.descriptor();
  ASSERT_TRUE(endpoint_.pull(descriptor, target));
  EXPECT_EQ(endpoint_.pull(descriptor, target).error(), errc::already_returned);
  ASSERT_FALSE(transfer.wait_for(5s));  // retires the slot
  EXPECT_EQ(endpoint_.pull(descriptor, target).error(), errc::already_returned);
}

TEST_F(TransferTest, DroppedHandleWithdrawsTheTransfer) {
  std::vector<std::byte> target(64);
  TransferDescriptor descriptor;
  {
    std::vector<std::byte> source = pattern(64, 5);
    Transfer transfer = endpoint_.register_source(source).value();
    descriptor = transfer.descriptor();
  }  // withdrawn here, then the memory is freed
  EXPECT_EQ(endpoint_.pull(descriptor, target).error(), errc::not_found);
}

TEST_F(TransferTest, TooSmallBufferIsRefusedWithoutConsumingTheTransfer) {
  std::vector<std::byte> source = pattern(1000, 6);
  Transfer transfer = endpoint_.register_source(source).value();
  std::vector<std::byte> target(999);
  EXPECT_EQ(endpoint_.pull(transfer.descriptor(), target).error(), errc::invalid_argument);
  target.resize(1000);
  EXPECT_EQ(endpoint_.pull(transfer.descriptor(), target).value(), 1000u);
  EXPECT_FALSE(transfer.wait_for(5s));
}

TEST_F(TransferTest, ForgedDescriptorsAreRefused) {
  std::vector<std::byte> source = pattern(4096, 7);
  Transfer transfer = endpoint_.register_source(source).value();
  const TransferDescriptor good = transfer.descriptor();
  std::vector<std::byte> target(1 << 16);
  auto refused = [&](TransferDescriptor forged) {
    Result<std::size_t> result = endpoint_.pull(forged, target);
    return !result && result.error() == errc::bad_descriptor;
  };
  TransferDescriptor forged = good;
  forged.table_tag ^= 1;
  EXPECT_TRUE(refused(forged));
  forged = good;
  forged.slot = endpoint_.slot_count();
  EXPECT_TRUE(refused(forged));
  forged = good;
  forged.slot = ~0u;
  EXPECT_TRUE(refused(forged));
  forged = good;
  forged.generation += 1;
  EXPECT_TRUE(refused(forged));
  forged = good;
  forged.generation = 0;
  EXPECT_TRUE(refused(forged));
  forged = good;
  forged.owner = sync::ParticipantId{1, 1}.pack() == good.owner ? sync::ParticipantId{2, 1}.pack()
                                                                : sync::ParticipantId{1, 1}.pack();
  EXPECT_TRUE(refused(forged));
  forged = good;
  forged.total_length = 100;  // a shorter read of a real transfer is not allowed either
  EXPECT_TRUE(refused(forged));
  forged = good;
  forged.reserved = 1;
  EXPECT_TRUE(refused(forged));
  forged = good;
  forged.direction = 2;
  EXPECT_TRUE(refused(forged));
  // Random bytes, and random bytes that keep the tag (so they reach the slot checks).
  std::mt19937 random(12345);
  for (int i = 0; i < 2000; ++i) {
    TransferDescriptor noise;
    auto* bytes = reinterpret_cast<unsigned char*>(&noise);
    for (std::size_t b = 0; b < sizeof(noise); ++b) bytes[b] = static_cast<unsigned char>(random());
    if (i % 2 == 1) {
      noise.table_tag = good.table_tag;
      noise.slot %= endpoint_.slot_count();
      noise.total_length %= target.size() + 1;
    }
    Result<std::size_t> result = endpoint_.pull(noise, target);
    ASSERT_FALSE(result);
    ASSERT_TRUE(result.error() == errc::bad_descriptor || result.error() == errc::invalid_argument)
        << result.error().message();
  }
  // The real transfer is untouched by all of that.
  EXPECT_EQ(endpoint_.pull(good, target).value(), source.size());
  EXPECT_FALSE(transfer.wait_for(5s));
}

TEST_F(TransferTest, RegistrationLimits) {
  std::vector<std::byte> source(1000);
  std::vector<iovec> ranges(kMaxTransferRanges + 1, iovec{source.data(), 1});
  EXPECT_EQ(endpoint_.register_source(ranges).error(), errc::limit_reached);
  EXPECT_EQ(endpoint_.register_source(std::span<const iovec>()).error(), errc::invalid_argument);
  EXPECT_EQ(endpoint_.register_source(std::span<const std::byte>()).error(),
            errc::invalid_argument);
  const iovec wraps[] = {iovec{reinterpret_cast<void*>(~std::uintptr_t{0} - 4), 100}};
  EXPECT_EQ(endpoint_.register_source(wraps).error(), errc::invalid_argument);
  // Every slot busy with a live transfer: limit_reached; one finished frees a slot.
  std::vector<Transfer> open;
  for (std::uint32_t i = 0; i < endpoint_.slot_count(); ++i) {
    open.push_back(endpoint_.register_source(source).value());
  }
  EXPECT_EQ(endpoint_.register_source(source).error(), errc::limit_reached);
  open.pop_back();
  EXPECT_TRUE(endpoint_.register_source(source));
}

TEST_F(TransferTest, WaitTimesOutWhileNobodyPulls) {
  std::vector<std::byte> source(10);
  Transfer transfer = endpoint_.register_source(source).value();
  auto start = sync::Clock::now();
  EXPECT_EQ(transfer.wait_for(30ms), errc::timed_out);
  EXPECT_GE(sync::Clock::now() - start, 30ms);
  EXPECT_EQ(transfer.wait_until(sync::Clock::now() - 1s), errc::timed_out);
}

TEST_F(TransferTest, WaiterIsWokenByACompletionInAnotherThread) {
  std::vector<std::byte> source = pattern(1 << 20, 8);
  Transfer transfer = endpoint_.register_source(source).value();
  std::vector<std::byte> target(source.size());
  std::thread puller([&] { EXPECT_TRUE(endpoint_.pull(transfer.descriptor(), target)); });
  EXPECT_FALSE(transfer.wait_for(10s));
  puller.join();
  EXPECT_TRUE(source == target);
}

TEST_F(TransferTest, ConcurrentPullersCompleteEachTransferExactlyOnce) {
  constexpr int kThreads = 4;
  const int transfers = static_cast<int>(xproc::test::scaled(200));
  std::vector<std::vector<std::byte>> sources;
  for (int i = 0; i < transfers; ++i) {
    sources.push_back(
        pattern(static_cast<std::size_t>(1 + (i * 977) % 20000), static_cast<std::uint32_t>(i)));
  }
  std::atomic<int> next_descriptor{0};
  std::vector<TransferDescriptor> descriptors(static_cast<std::size_t>(transfers));
  std::atomic<int> published{0};
  std::atomic<int> pulled{0};
  std::atomic<int> refused{0};
  std::atomic<int> corrupt{0};
  std::vector<std::atomic<int>> successes(static_cast<std::size_t>(transfers));
  std::vector<std::thread> pullers;
  for (int t = 0; t < kThreads; ++t) {
    pullers.emplace_back([&] {
      std::vector<std::byte> target(20000);
      for (;;) {
        int i = next_descriptor.load(std::memory_order_acquire);
        if (i >= transfers) return;
        if (i >= published.load(std::memory_order_acquire)) {
          std::this_thread::yield();
          continue;
        }
        // Every puller tries every descriptor it sees; exactly one may succeed.
        const TransferDescriptor descriptor = descriptors[static_cast<std::size_t>(i)];
        Result<std::size_t> result = endpoint_.pull(descriptor, target);
        if (result) {
          const auto& expected = sources[static_cast<std::size_t>(i)];
          if (*result != expected.size() ||
              std::memcmp(target.data(), expected.data(), expected.size()) != 0) {
            corrupt.fetch_add(1);
          }
          pulled.fetch_add(1);
          successes[static_cast<std::size_t>(i)].fetch_add(1);
          next_descriptor.compare_exchange_strong(i, i + 1);
        } else if (result.error() == errc::already_returned ||
                   result.error() == errc::bad_descriptor) {
          // Pulled by another thread: still claimed/complete (already_returned), or already
          // retired by the owner and its slot registered again (the descriptor names a
          // registration that is gone: bad_descriptor).
          refused.fetch_add(1);
          next_descriptor.compare_exchange_strong(i, i + 1);
        } else {
          corrupt.fetch_add(1);
          return;
        }
      }
    });
  }
  std::vector<Transfer> handles;
  for (int i = 0; i < transfers; ++i) {
    handles.push_back(endpoint_.register_source(sources[static_cast<std::size_t>(i)]).value());
    descriptors[static_cast<std::size_t>(i)] = handles.back().descriptor();
    published.store(i + 1, std::memory_order_release);
    if (handles.size() >= endpoint_.slot_count() - 1) {
      EXPECT_FALSE(handles.front().wait_for(10s));
      handles.erase(handles.begin());
    }
  }
  for (Transfer& handle : handles) EXPECT_FALSE(handle.wait_for(10s));
  for (auto& puller : pullers) puller.join();
  EXPECT_EQ(pulled.load(), transfers);
  EXPECT_EQ(corrupt.load(), 0);
  for (const auto& count : successes) ASSERT_EQ(count.load(), 1);
}

TEST_F(TransferTest, ProbeOfSelfIsPermittedAndOfAStrangerIsNotFound) {
  ProbeResult self = endpoint_.probe(endpoint_.self());
  EXPECT_TRUE(self) << self.reason;
  EXPECT_TRUE(endpoint_.permitted(endpoint_.self()));
  sync::ParticipantId stranger{endpoint_.self().slot == 0 ? 1u : 0u, 1};
  EXPECT_EQ(endpoint_.probe(stranger).error, errc::not_found);
  EXPECT_EQ(endpoint_.probe(sync::ParticipantId{}).error, errc::invalid_argument);
  EXPECT_EQ(endpoint_.probe(sync::ParticipantId{4000, 1}).error, errc::invalid_argument);
}

TEST_F(TransferTest, MovedEndpointKeepsItsTransfersWorking) {
  std::vector<std::byte> source = pattern(5000, 10);
  Transfer transfer = endpoint_.register_source(source).value();
  TransferEndpoint moved = std::move(endpoint_);
  std::vector<std::byte> target(5000);
  EXPECT_EQ(moved.pull(transfer.descriptor(), target).value(), 5000u);
  EXPECT_FALSE(transfer.wait_for(5s));
  Transfer other = std::move(transfer);
  EXPECT_FALSE(other.poll());
}

TEST_F(TransferTest, CorruptSlotsAreReportedNeverFollowed) {
  std::vector<std::byte> source = pattern(4096, 11);
  std::vector<std::byte> target(4096);
  {
    // A range count past the inline maximum: the claimer fails the transfer, reads nothing.
    Transfer transfer = endpoint_.register_source(source).value();
    slot_of(segment_, transfer.descriptor().slot).range_count.store(kMaxTransferRanges + 1);
    EXPECT_EQ(endpoint_.pull(transfer.descriptor(), target).error(), errc::corrupt_segment);
    EXPECT_EQ(transfer.wait_for(5s), errc::corrupt_segment);
  }
  {
    // Ranges that do not add up to the registered total.
    Transfer transfer = endpoint_.register_source(source).value();
    slot_of(segment_, transfer.descriptor().slot).ranges[0].length.store(~std::uint64_t{0});
    EXPECT_EQ(endpoint_.pull(transfer.descriptor(), target).error(), errc::corrupt_segment);
    EXPECT_EQ(transfer.wait_for(5s), errc::corrupt_segment);
  }
  {
    // A range the owner never mapped (a lying owner): bad_descriptor, reported to both sides.
    Transfer transfer = endpoint_.register_source(source).value();
    slot_of(segment_, transfer.descriptor().slot).ranges[0].address.store(8);
    EXPECT_EQ(endpoint_.pull(transfer.descriptor(), target).error(), errc::bad_descriptor);
    EXPECT_EQ(transfer.wait_for(5s), errc::bad_descriptor);
  }
  {
    // An impossible state: refused by the claimer and reported by the owner's handle.
    Transfer transfer = endpoint_.register_source(source).value();
    detail::TransferSlot& slot = slot_of(segment_, transfer.descriptor().slot);
    const std::uint64_t open = slot.state.load();
    slot.state.store(open | std::uint64_t{0xf} << 32);
    EXPECT_EQ(endpoint_.pull(transfer.descriptor(), target).error(), errc::corrupt_segment);
    EXPECT_EQ(transfer.poll(), errc::corrupt_segment);
    slot.state.store(open);  // repaired, so the slot can be used again
  }
}

TEST(TransferTable, OpenRefusesAnotherLayoutVersionOrSignature) {
  shm::SegmentOptions options;
  options.participant_capacity = 8;
  TransferTableOptions table{4};
  for (int field = 0; field < 3; ++field) {
    shm::Segment segment =
        shm::Segment::create_anonymous(shm::SegmentKind::raw, transfer_table_size(table, 8),
                                       options, transfer_table_init(table, 8))
            .value();
    auto* header = reinterpret_cast<detail::TableHeader*>(segment.body().data());
    if (field == 0) header->layout_version += 1;
    if (field == 1) header->signature ^= 1;
    if (field == 2) header->slot_count = 1000;  // more slots than the body holds
    EXPECT_EQ(TransferEndpoint::open(segment).error(),
              field == 2 ? errc::corrupt_segment : errc::layout_mismatch)
        << field;
  }
}

TEST(TransferTable, OpenRefusesASegmentWithoutATable) {
  shm::Segment raw = shm::Segment::create_anonymous(shm::SegmentKind::raw, 1 << 16).value();
  EXPECT_EQ(TransferEndpoint::open(raw).error(), errc::wrong_kind);
  shm::Segment tiny = shm::Segment::create_anonymous(shm::SegmentKind::raw, 8).value();
  EXPECT_EQ(TransferEndpoint::open(tiny).error(), errc::wrong_kind);
  EXPECT_EQ(TransferEndpoint::open(shm::Segment()).error(), errc::invalid_argument);
}

TEST(TransferTable, InitRefusesBadOptionsAndSmallBodies) {
  shm::SegmentOptions options;
  options.participant_capacity = 8;
  TransferTableOptions zero{0};
  EXPECT_EQ(shm::Segment::create_anonymous(shm::SegmentKind::raw, 1 << 20, options,
                                           transfer_table_init(zero, 8))
                .error(),
            errc::invalid_argument);
  TransferTableOptions table{16};
  EXPECT_EQ(shm::Segment::create_anonymous(shm::SegmentKind::raw, transfer_table_size(table, 8) - 1,
                                           options, transfer_table_init(table, 8))
                .error(),
            errc::invalid_argument);
  // A table formatted for another participant capacity is refused at open.
  shm::Segment mismatched =
      shm::Segment::create_anonymous(shm::SegmentKind::raw, transfer_table_size(table, 16), options,
                                     transfer_table_init(table, 16))
          .value();
  EXPECT_EQ(TransferEndpoint::open(mismatched).error(), errc::corrupt_segment);
}

}  // namespace
}  // namespace xproc::bulk
