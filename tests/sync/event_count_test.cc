// Thread-level tests of xproc::sync::EventCount: no lost wake-up (ping-pong, many rounds),
// notify_all reaches every waiter, timed waits, notify without waiters.
#include "xproc/sync/event_count.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "child_process.h"

namespace xproc::sync {
namespace {

using namespace std::chrono_literals;

TEST(EventCount, ZeroFilledIsThreadScope) {
  alignas(EventCount) unsigned char bytes[sizeof(EventCount)] = {};
  auto* ec = reinterpret_cast<EventCount*>(bytes);
  EXPECT_EQ(ec->scope(), Scope::thread);
  const EventCount::Key key = ec->prepare_wait();
  ec->notify_one();
  EXPECT_FALSE(ec->wait_until(key, Clock::now() + 1s));
}

TEST(EventCount, WaitReturnsAtOnceWhenNotifiedAfterPrepare) {
  EventCount ec;
  const EventCount::Key key = ec.prepare_wait();
  ec.notify_one();
  EXPECT_FALSE(ec.wait_until(key, Clock::now() + 10s));
}

TEST(EventCount, NotifyBeforePrepareDoesNotSatisfyALaterWait) {
  EventCount ec;
  ec.notify_all();
  const EventCount::Key key = ec.prepare_wait();
  EXPECT_EQ(ec.wait_until(key, Clock::now() + 20ms), errc::timed_out);
}

TEST(EventCount, TimedWaitReturnsTimedOutAtAPastDeadline) {
  EventCount ec;
  const EventCount::Key key = ec.prepare_wait();
  EXPECT_EQ(ec.wait_until(key, Clock::now() - 1s), errc::timed_out);
}

TEST(EventCount, TimedWaitReturnsTimedOutNoEarlierThanANearDeadline) {
  EventCount ec;
  const EventCount::Key key = ec.prepare_wait();
  const auto start = Clock::now();
  EXPECT_EQ(ec.wait_for(key, 30ms), errc::timed_out);
  EXPECT_GE(Clock::now() - start, 30ms);
}

TEST(EventCount, FarDeadlineWaitIsWokenByNotify) {
  EventCount ec;
  std::atomic<bool> flag{false};
  std::atomic<bool> announced{false};
  std::thread waiter([&] {
    const EventCount::Key key = ec.prepare_wait();
    announced.store(true);
    if (!flag.load()) {
      EXPECT_FALSE(ec.wait_until(key, Clock::now() + 3600s));
    } else {
      ec.cancel_wait();
    }
    EXPECT_TRUE(flag.load());
  });
  while (!announced.load()) std::this_thread::yield();
  flag.store(true);
  ec.notify_one();
  waiter.join();
}

TEST(EventCount, PingPongBetweenThreadsLosesNoWakeUp) {
  EventCount ec{Scope::thread, 0};  // no spinning: every wait parks, the race is exercised
  std::atomic<std::uint32_t> turn{0};
  const auto rounds = static_cast<std::uint32_t>(test::scaled(20000));
  auto player = [&](std::uint32_t parity) {
    for (std::uint32_t i = 0; i < rounds; ++i) {
      ec.await([&] { return turn.load(std::memory_order_acquire) % 2 == parity; });
      turn.fetch_add(1, std::memory_order_release);
      ec.notify_one();
    }
  };
  std::thread other(player, 1u);
  player(0);
  other.join();
  EXPECT_EQ(turn.load(), 2 * rounds);
}

TEST(EventCount, RelaxedFlagChangeIsSeenAfterNotify) {
  // The condition is written relaxed: the event count alone must carry the ordering.
  EventCount ec{Scope::thread, 0};
  std::atomic<std::uint32_t> posted{0};
  std::uint32_t payload = 0;  // plain data, published through the event count
  const auto rounds = static_cast<std::uint32_t>(test::scaled(5000));
  std::atomic<std::uint32_t> seen{0};
  std::thread consumer([&] {
    for (std::uint32_t i = 1; i <= rounds; ++i) {
      ec.await([&] { return posted.load(std::memory_order_acquire) >= i; });
      EXPECT_EQ(payload, i);
      seen.store(i, std::memory_order_release);
      ec.notify_all();
    }
  });
  for (std::uint32_t i = 1; i <= rounds; ++i) {
    payload = i;
    posted.store(i, std::memory_order_release);
    ec.notify_all();
    ec.await([&] { return seen.load(std::memory_order_acquire) >= i; });
  }
  consumer.join();
  EXPECT_EQ(seen.load(), rounds);
}

TEST(EventCount, NotifyAllWakesEveryWaiter) {
  EventCount ec{Scope::thread, 0};
  constexpr int kWaiters = 4;
  std::atomic<int> generation{0};
  std::atomic<int> done{0};
  const int rounds = static_cast<int>(test::scaled(200));
  std::vector<std::thread> waiters;
  for (int w = 0; w < kWaiters; ++w) {
    waiters.emplace_back([&] {
      for (int r = 1; r <= rounds; ++r) {
        ec.await([&] { return generation.load() >= r; });
        done.fetch_add(1);
        ec.notify_all();
      }
    });
  }
  for (int r = 1; r <= rounds; ++r) {
    generation.store(r);
    ec.notify_all();
    ec.await([&] { return done.load() == r * kWaiters; });
  }
  for (auto& t : waiters) t.join();
  EXPECT_EQ(done.load(), rounds * kWaiters);
}

TEST(EventCount, ManyProducersManyConsumersCountExactly) {
  EventCount ec{Scope::thread, 0};
  std::atomic<long> items{0};
  std::atomic<long> consumed{0};
  const long per_producer = test::scaled(5000);
  constexpr int kProducers = 2;
  constexpr int kConsumers = 2;
  const long total = per_producer * kProducers;
  std::vector<std::thread> threads;
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&] {
      for (;;) {
        long have = items.load();
        bool got = false;
        while (have > 0 && !(got = items.compare_exchange_weak(have, have - 1))) {
        }
        if (got) {
          consumed.fetch_add(1);
          continue;
        }
        if (consumed.load() >= total) return;
        ec.await([&] { return items.load() > 0 || consumed.load() >= total; });
      }
    });
  }
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&] {
      for (long i = 0; i < per_producer; ++i) {
        items.fetch_add(1);
        ec.notify_one();
      }
    });
  }
  while (consumed.load() < total) std::this_thread::yield();
  ec.notify_all();
  for (auto& t : threads) t.join();
  EXPECT_EQ(consumed.load(), total);
  EXPECT_EQ(items.load(), 0);
}

TEST(EventCount, AwaitUntilReturnsTimedOutAtThePastDeadlineWhileNotReady) {
  EventCount ec;
  EXPECT_EQ(ec.await_until([] { return false; }, Clock::now() - 1s), errc::timed_out);
  EXPECT_EQ(ec.waiters(), 0u);
}

TEST(EventCount, AwaitUntilReturnsAtOnceWhenAlreadyReady) {
  EventCount ec;
  EXPECT_FALSE(ec.await_until([] { return true; }, Clock::now() - 1s));
}

TEST(EventCount, AwaitUntilReturnsWhenANotifierMakesTheConditionTrue) {
  EventCount ec;
  std::atomic<bool> flag{false};
  std::thread notifier([&] {
    while (ec.waiters() == 0) std::this_thread::yield();  // the waiter has announced itself
    flag.store(true, std::memory_order_release);
    ec.notify_all();
  });
  EXPECT_FALSE(
      ec.await_until([&] { return flag.load(std::memory_order_acquire); }, Clock::now() + 20s));
  notifier.join();
  EXPECT_EQ(ec.waiters(), 0u);
}

}  // namespace
}  // namespace xproc::sync
