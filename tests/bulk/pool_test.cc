// Pool loans between threads of one process: class choice, exhaustion (try / timed / blocking),
// handles, descriptor validation (forged, foreign, out of range, random bytes, bit flips),
// double return, layout validation, and a multi-thread hand-off stress checking every payload.
#include "xproc/bulk/pool.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "pool_test_support.h"
#include "xproc/sys/error.h"

namespace xproc::bulk {
namespace {

using namespace std::chrono_literals;
using test::SharedRegion;
using test::small_pool;

// One class of one 64-byte buffer: the smallest pool, exhausted by a single loan.
PoolConfig one_buffer_pool() {
  PoolConfig config;
  config.classes = {{64, 1}};
  return config;
}

std::error_code code(errc e) {
  return make_error_code(e);
}

TEST(PoolFormat, RejectsConfigsOutOfRange) {
  PoolConfig empty;
  EXPECT_EQ(region_size_for(empty), 0u);
  PoolConfig descending;
  descending.classes = {{4096, 1}, {256, 1}};
  EXPECT_EQ(region_size_for(descending), 0u);
  PoolConfig zero_count;
  zero_count.classes = {{256, 0}};
  EXPECT_EQ(region_size_for(zero_count), 0u);
  PoolConfig too_large;
  too_large.classes = {{kMaxBufferSize + 1, 1}};
  EXPECT_EQ(region_size_for(too_large), 0u);
  SharedRegion pool(small_pool());
  EXPECT_EQ(format(pool.bytes().first(100), small_pool()), code(errc::invalid_argument));
  EXPECT_EQ(format(pool.bytes(), descending), code(errc::invalid_argument));
}

TEST(PoolOpen, RefusesForeignAndCorruptRegions) {
  sys::SharedMapping zero = sys::SharedMapping::anonymous(8192).value();
  std::span<std::byte> bytes{static_cast<std::byte*>(zero.data()), zero.size()};
  EXPECT_EQ(PoolView::open(bytes).error(), code(errc::layout_mismatch));
  EXPECT_EQ(PoolView::open(bytes.first(16)).error(), code(errc::invalid_argument));
  {
    SharedRegion pool(small_pool());
    ASSERT_TRUE(PoolView::open(pool.bytes()));
    EXPECT_EQ(PoolView::open(pool.bytes().first(pool.bytes().size() / 2)).error(),
              code(errc::corrupt_segment));
    std::uint32_t count = 5000;  // class 0's count: the stored offsets no longer match it
    std::memcpy(pool.bytes().data() + 128 + 4, &count, 4);
    EXPECT_EQ(PoolView::open(pool.bytes()).error(), code(errc::corrupt_segment));
  }
  {
    SharedRegion pool(small_pool());
    std::uint32_t version = 2;
    std::memcpy(pool.bytes().data() + 4, &version, 4);
    EXPECT_EQ(PoolView::open(pool.bytes()).error(), code(errc::layout_mismatch));
  }
}

// Random bytes written over the header (a hostile or broken peer): open either refuses the
// region or returns a view whose every buffer lies inside it.
TEST(PoolOpen, MutatedHeadersAreRefusedOrStayInsideTheRegion) {
  SharedRegion pool(small_pool());
  std::vector<std::byte> pristine(pool.bytes().begin(), pool.bytes().begin() + 1024);
  std::mt19937_64 random(99);
  const long rounds = xproc::test::scaled(20000);
  long opened = 0;
  for (long round = 0; round < rounds; ++round) {
    std::memcpy(pool.bytes().data(), pristine.data(), pristine.size());
    const int flips = 1 + static_cast<int>(random() % 4);
    for (int i = 0; i < flips; ++i) {
      const std::size_t at = 4 + random() % (1024 - 4);  // keep the magic: reach the checks
      pool.bytes()[at] = static_cast<std::byte>(random());
    }
    Result<PoolView> view = PoolView::open(pool.bytes());
    if (!view) {
      ASSERT_TRUE(view.error() == code(errc::layout_mismatch) ||
                  view.error() == code(errc::corrupt_segment))
          << view.error().message();
      continue;
    }
    ++opened;
    for (std::uint32_t c = 0; c < view->class_count(); ++c) {
      Result<Loan> loan = view->try_loan(view->size_class(c).buffer_size);
      if (!loan) continue;
      ASSERT_GE(loan->data().data(), pool.bytes().data());
      ASSERT_LE(loan->data().data() + loan->capacity(), pool.bytes().data() + pool.bytes().size());
    }
  }
  EXPECT_GT(opened, 0);  // flips in padding and hints keep the pool valid
}

TEST(PoolLoan, TakesTheSmallestFittingClassThenLargerOnesWhenItIsEmpty) {
  SharedRegion region(small_pool(2));
  PoolView pool = PoolView::open(region.bytes()).value();
  ASSERT_EQ(pool.class_count(), 3u);
  EXPECT_EQ(pool.max_loan(), 65536u);
  Loan a = pool.try_loan(1).value();
  Loan b = pool.try_loan(256).value();
  EXPECT_EQ(a.size_class(), 0u);
  EXPECT_EQ(b.size_class(), 0u);
  EXPECT_EQ(a.capacity(), 256u);
  EXPECT_EQ(b.size(), 256u);
  Loan c = pool.try_loan(100).value();  // class 0 empty: class 1
  EXPECT_EQ(c.size_class(), 1u);
  Loan d = pool.try_loan(257).value();
  EXPECT_EQ(d.size_class(), 1u);
  Loan e = pool.try_loan(0).value();  // class 1 empty too: class 2
  EXPECT_EQ(e.size_class(), 2u);
  EXPECT_EQ(pool.try_loan(65537).error(), code(errc::message_too_large));
  Loan f = pool.try_loan(65536).value();
  EXPECT_EQ(pool.try_loan(1).error(), code(errc::would_block));
  EXPECT_EQ(pool.statistics().loaned, 6u);
  EXPECT_EQ(pool.statistics().loans_total, 6u);
}

TEST(PoolLoan, BuffersAre64ByteAlignedAndPageAlignedFrom4KiB) {
  SharedRegion region(small_pool(3));
  PoolView pool = PoolView::open(region.bytes()).value();
  std::vector<Loan> loans;
  for (std::size_t size : {1u, 1u, 1u, 300u, 300u, 300u, 5000u, 5000u, 5000u}) {
    loans.push_back(pool.try_loan(size).value());
  }
  for (const Loan& loan : loans) {
    const auto address = reinterpret_cast<std::uintptr_t>(loan.data().data());
    EXPECT_EQ(address % 64, 0u);
    if (loan.capacity() >= 4096) {
      EXPECT_EQ(address % 4096, 0u);
    }
    EXPECT_GE(loan.data().data(), region.bytes().data());
    EXPECT_LE(loan.data().data() + loan.capacity(), region.bytes().data() + region.bytes().size());
  }
}

TEST(PoolLoan, ExhaustedPoolTryReturnsWouldBlockAndTimedReturnsTimedOut) {
  SharedRegion region(one_buffer_pool());
  PoolView pool = PoolView::open(region.bytes()).value();
  Loan only = pool.try_loan(10).value();
  EXPECT_EQ(pool.try_loan(10).error(), code(errc::would_block));
  EXPECT_EQ(pool.loan_until(10, sync::Clock::now() - 1s).error(), code(errc::timed_out));
  const auto start = sync::Clock::now();
  EXPECT_EQ(pool.loan_for(10, 20ms).error(), code(errc::timed_out));
  EXPECT_GE(sync::Clock::now() - start, 20ms);
  EXPECT_EQ(pool.statistics().waiters, 0u);
}

TEST(PoolLoan, BlockedLoanWakesWhenABufferIsGivenBack) {
  SharedRegion region(one_buffer_pool());
  PoolView pool = PoolView::open(region.bytes()).value();
  Loan only = pool.try_loan(10).value();
  std::atomic<bool> started{false};
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    started.store(true);
    Result<Loan> loan = pool.loan(64);
    got.store(loan.has_value());
  });
  while (!started.load()) std::this_thread::yield();
  EXPECT_FALSE(got.load());
  ASSERT_FALSE(only.give_back());
  waiter.join();
  EXPECT_TRUE(got.load());
  EXPECT_EQ(pool.statistics().free, 1u);  // the waiter's loan was destroyed in its thread
}

TEST(PoolLoan, DestroyedUnpostedLoanGoesBackAndMoveKeepsOneOwner) {
  SharedRegion region(small_pool(1));
  PoolView pool = PoolView::open(region.bytes()).value();
  {
    Loan loan = pool.try_loan(10).value();
    Loan moved = std::move(loan);
    EXPECT_FALSE(loan.active());  // NOLINT(bugprone-use-after-move): the moved-from state
    EXPECT_TRUE(moved.active());
    EXPECT_EQ(pool.statistics().loaned, 1u);
  }
  EXPECT_EQ(pool.statistics().free, 3u);
  Loan again = pool.try_loan(10).value();
  EXPECT_EQ(again.size_class(), 0u);
  EXPECT_EQ(again.resize(300), code(errc::invalid_argument));
  ASSERT_FALSE(again.resize(200));
  EXPECT_EQ(again.data().size(), 200u);
  ASSERT_FALSE(again.give_back());
  EXPECT_EQ(again.give_back(), code(errc::invalid_argument));
}

TEST(PoolHandOff, PostedPayloadIsReadInPlaceAndHeldGoesBackWhenDestroyed) {
  SharedRegion region(small_pool());
  PoolView pool = PoolView::open(region.bytes()).value();
  Loan loan = pool.try_loan(4000).value();
  test::write_payload(loan.data(), 7, 9);
  const std::byte* where = loan.data().data();
  Descriptor descriptor = pool.post(std::move(loan)).value();
  EXPECT_EQ(descriptor.length, 4000u);
  EXPECT_EQ(descriptor.size_class, 1u);
  EXPECT_EQ(pool.statistics().posted, 1u);
  {
    Held held = pool.accept(descriptor).value();
    EXPECT_EQ(held.data().data(), where);  // zero copies
    EXPECT_TRUE(test::payload_is(held.data(), 7, 9));
    EXPECT_EQ(pool.statistics().held, 1u);
  }
  PoolStatistics stats = pool.statistics();
  EXPECT_EQ(stats.free, stats.total);
}

TEST(PoolHandOff, SecondAcceptAndStaleGenerationsAreAlreadyReturned) {
  SharedRegion region(one_buffer_pool());
  PoolView pool = PoolView::open(region.bytes()).value();
  Descriptor first = pool.post(pool.try_loan(8).value()).value();
  Held held = pool.accept(first).value();
  EXPECT_EQ(pool.accept(first).error(), code(errc::already_returned));  // held already
  ASSERT_FALSE(held.give_back());
  EXPECT_EQ(held.give_back(), code(errc::invalid_argument));
  EXPECT_EQ(pool.accept(first).error(), code(errc::already_returned));  // free now
  Descriptor second = pool.post(pool.try_loan(8).value()).value();      // same buffer, g + 1
  EXPECT_EQ(second.generation, first.generation + 1);
  EXPECT_EQ(pool.accept(first).error(), code(errc::already_returned));  // stale generation
  Held again = pool.accept(second).value();
  EXPECT_EQ(again.size(), 8u);
}

TEST(PoolHandOff, PostOfAnInactiveOrForeignLoanIsInvalid) {
  SharedRegion region_a(small_pool());
  SharedRegion region_b(small_pool());
  PoolView a = PoolView::open(region_a.bytes()).value();
  PoolView b = PoolView::open(region_b.bytes()).value();
  EXPECT_NE(a.tag(), b.tag());
  Loan empty;
  EXPECT_EQ(a.post(std::move(empty)).error(), code(errc::invalid_argument));
  Loan loan = a.try_loan(1).value();
  EXPECT_EQ(b.post(std::move(loan)).error(), code(errc::invalid_argument));
  EXPECT_TRUE(loan.active());  // NOLINT(bugprone-use-after-move): refused, still the caller's
  Descriptor descriptor = a.post(std::move(loan)).value();
  EXPECT_EQ(b.accept(descriptor).error(), code(errc::bad_descriptor));  // foreign pool
  EXPECT_TRUE(a.accept(descriptor));
}

TEST(PoolDescriptor, ForgedAndOutOfRangeFieldsAreBadDescriptors) {
  SharedRegion region(small_pool(2));
  PoolView pool = PoolView::open(region.bytes()).value();
  Loan loan = pool.try_loan(100).value();
  const Descriptor valid = pool.post(std::move(loan)).value();
  auto expect_bad = [&](const Descriptor& d) {
    EXPECT_EQ(pool.accept(d).error(), code(errc::bad_descriptor));
  };
  Descriptor d = valid;
  d.check ^= 1;
  expect_bad(d);
  d = valid;
  d.pool_tag ^= 1;
  expect_bad(d);
  d = valid;
  d.size_class = 3;
  expect_bad(d);
  d = valid;
  d.index = 2;
  expect_bad(d);
  d = valid;
  d.length = 257;
  expect_bad(d);
  d = valid;
  d.generation = valid.generation + 1;  // never issued
  expect_bad(d);
  d = valid;
  d.reserved = 1;
  expect_bad(d);
  std::byte short_bytes[16] = {};
  EXPECT_EQ(pool.accept(std::span<const std::byte>(short_bytes)).error(),
            code(errc::bad_descriptor));
  // The valid one still works after every refusal.
  EXPECT_TRUE(pool.accept(std::as_bytes(std::span(&valid, 1))));
}

TEST(PoolDescriptor, RandomBytesAndBitFlipsAreNeverAccepted) {
  SharedRegion region(small_pool(4));
  PoolView pool = PoolView::open(region.bytes()).value();
  std::vector<Descriptor> issued;
  for (int i = 0; i < 6; ++i) {
    Loan loan = pool.try_loan(static_cast<std::size_t>(i) * 3000).value();
    issued.push_back(pool.post(std::move(loan)).value());
  }
  std::mt19937_64 random(12345);
  const long rounds = xproc::test::scaled(200000);
  for (long round = 0; round < rounds; ++round) {
    Descriptor d;
    if (round % 2 == 0) {
      std::uint64_t words[4] = {random(), random(), random(), random()};
      if (round % 4 == 0) words[0] = (words[0] & ~0xffffffffull) | pool.tag();  // right tag
      std::memcpy(&d, words, sizeof d);
    } else {
      d = issued[static_cast<std::size_t>(round) % issued.size()];
      auto* bytes = reinterpret_cast<unsigned char*>(&d);
      const std::uint64_t bit = random() % (sizeof d * 8);
      bytes[bit / 8] = static_cast<unsigned char>(bytes[bit / 8] ^ (1u << (bit % 8)));
    }
    Result<Held> held = pool.accept(d);
    ASSERT_FALSE(held.has_value()) << "round " << round;
    EXPECT_TRUE(held.error() == code(errc::bad_descriptor) ||
                held.error() == code(errc::already_returned));
  }
  PoolStatistics stats = pool.statistics();
  EXPECT_EQ(stats.posted, 6u);
  EXPECT_EQ(stats.held, 0u);
  for (const Descriptor& d : issued) EXPECT_TRUE(pool.accept(d));
}

TEST(PoolRecover, NothingIsReclaimedWithoutLivenessAndCorruptWordsAreReported) {
  SharedRegion region(small_pool(1));
  PoolView pool = PoolView::open(region.bytes()).value();
  Loan loan = pool.try_loan(1).value();
  EXPECT_EQ(pool.recover().value(), 0u);  // no Participant: nobody is ever dead
  EXPECT_TRUE(loan.active());
  std::uint64_t impossible = std::uint64_t{9} << 56;
  std::memcpy(region.bytes().data() + 1024 + 8 * 2, &impossible, 8);  // buffer 2's word
  EXPECT_EQ(pool.recover().error(), code(errc::corrupt_segment));
  EXPECT_EQ(pool.statistics().corrupt, 1u);
  EXPECT_EQ(pool.statistics().free, 1u);
}

TEST(PoolSegment, NamedAndAnonymousPoolsShareBuffersWithTheirOpeners) {
  Pool anonymous = Pool::create_anonymous(small_pool()).value();
  Pool adopted = Pool::adopt(sys::reopen(anonymous.segment().fd()).value()).value();
  Loan loan = anonymous->try_loan(100).value();
  test::write_payload(loan.data(), 1, 1);
  Descriptor descriptor = anonymous->post(std::move(loan)).value();
  Held held = adopted->accept(descriptor).value();
  EXPECT_TRUE(test::payload_is(held.data(), 1, 1));
  const std::string name = "pool_test." + std::to_string(::getpid());
  Pool created = Pool::create(name, small_pool()).value();
  Pool opened = Pool::open(name).value();
  ASSERT_FALSE(created.segment().unlink());
  EXPECT_EQ(opened->tag(), created->tag());
  EXPECT_EQ(Pool::open(name).error(), code(errc::not_found));
  EXPECT_EQ(Pool::create_anonymous(PoolConfig{}).error(), code(errc::invalid_argument));
}

// Producers loan, fill and post; consumers accept, check and give back; descriptors travel
// through a locked deque. Every payload arrives once and intact; every buffer comes back.
TEST(PoolStress, ThreadsHandOverEveryPayloadExactlyOnce) {
  PoolConfig config;
  config.classes = {{64, 4}, {1024, 4}, {16384, 2}};
  SharedRegion region(config);
  PoolView pool = PoolView::open(region.bytes()).value();
  constexpr std::uint32_t kProducers = 3;
  constexpr std::uint32_t kConsumers = 2;
  const auto per_producer = static_cast<std::uint32_t>(xproc::test::scaled(3000));
  std::mutex mutex;
  std::deque<Descriptor> queue;
  std::atomic<std::uint32_t> remaining{kProducers * per_producer};
  std::vector<std::atomic<std::uint32_t>> seen(kProducers * per_producer);
  std::atomic<std::uint32_t> bad{0};
  std::vector<std::thread> threads;
  for (std::uint32_t p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (std::uint32_t s = 0; s < per_producer; ++s) {
        const std::size_t size = 12 + (s * 7919u + p * 31u) % (16384u - 11u);
        Loan loan = pool.loan(size).value();
        test::write_payload(loan.data(), p, s);
        Descriptor d = pool.post(std::move(loan)).value();
        std::lock_guard lock(mutex);
        queue.push_back(d);
      }
    });
  }
  for (std::uint32_t c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&] {
      while (remaining.load() != 0) {
        Descriptor d;
        {
          std::lock_guard lock(mutex);
          if (queue.empty()) {
            d.pool_tag = 0;
          } else {
            d = queue.front();
            queue.pop_front();
          }
        }
        if (d.pool_tag == 0) {
          std::this_thread::yield();
          continue;
        }
        Held held = pool.accept(d).value();
        test::count_delivery(held.data(), kProducers, per_producer, seen, bad);
        remaining.fetch_sub(1);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(bad.load(), 0u);
  for (std::uint32_t i = 0; i < kProducers * per_producer; ++i) ASSERT_EQ(seen[i].load(), 1u) << i;
  PoolStatistics stats = pool.statistics();
  EXPECT_EQ(stats.free, stats.total);
  EXPECT_EQ(stats.loans_total, kProducers * per_producer);
}

}  // namespace
}  // namespace xproc::bulk
