// Channel crash injection: a producer or consumer process SIGKILLed at chosen protocol steps
// (between reserve and commit, between peek and release, holding the reserve or claim lock) and
// at random instants of a 2-producer 2-consumer run. Survivors finish; nothing torn or
// duplicated is delivered; the reclaimed-record counters match what the dead left behind.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../channel/channel_test_support.h"
#include "child_process.h"
#include "eventually.h"
#include "shared_object.h"
#include "xproc/channel/endpoint.h"
#include "xproc/sys/error.h"

namespace xproc::channel {
namespace {

using namespace std::chrono_literals;
using test::as_bytes;
using test::Registry;
using test::SharedRegion;
using test::small_config;

std::error_code code(errc e) {
  return make_error_code(e);
}

[[noreturn]] void die() {
  raise(SIGKILL);
  for (;;) pause();
}

std::string text_of(const std::vector<std::byte>& bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

TEST(ChannelCrash, ProducerKilledBetweenReserveAndCommitIsNeverDeliveredAndCounted) {
  Registry registry;
  SharedRegion region(small_config());
  sync::Participant me = registry.attach().value();
  Endpoint channel = Endpoint::open(region.bytes(), &me).value();
  xproc::test::Child producer = xproc::test::Child::start([&]() -> int {
    sync::Participant self = registry.attach().value();
    Endpoint endpoint = Endpoint::open(region.bytes(), &self).value();
    if (endpoint.send(as_bytes("one")) || endpoint.send(as_bytes("two"))) return 1;
    Reservation torn = endpoint.reserve(10).value();
    std::memcpy(torn.data().data(), "torn", 4);  // half written
    die();
  });
  EXPECT_TRUE(producer.wait(10s).signaled);
  std::vector<std::byte> out;
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 5s));
  EXPECT_EQ(text_of(out), "one");
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 5s));
  EXPECT_EQ(text_of(out), "two");
  // The dead producer's record blocks the head until the consumer sees it dead, then is skipped.
  EXPECT_EQ(channel.receive_until(out, sync::Clock::now() + 100ms), code(errc::timed_out));
  EXPECT_EQ(channel.statistics().producer_died, 1u);
  ASSERT_FALSE(channel.send(as_bytes("three")));
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 5s));
  EXPECT_EQ(text_of(out), "three");
  EXPECT_EQ(channel.statistics().depth_messages, 0u);
}

TEST(ChannelCrash, ConsumerKilledBetweenPeekAndReleaseIsReclaimedWhenSpaceIsNeeded) {
  Registry registry;
  SharedRegion region(small_config(1024, 100));
  sync::Participant me = registry.attach().value();
  Endpoint channel = Endpoint::open(region.bytes(), &me).value();
  ASSERT_FALSE(channel.send(std::vector<std::byte>(100)));  // the record the consumer will hold
  xproc::test::Child consumer = xproc::test::Child::start([&]() -> int {
    sync::Participant self = registry.attach().value();
    Endpoint endpoint = Endpoint::open(region.bytes(), &self).value();
    Message message = endpoint.peek().value();
    (void)message;
    die();
  });
  EXPECT_TRUE(consumer.wait(10s).signaled);
  // Fill the ring: the dead consumer's record is the oldest; a blocked sender reclaims it.
  std::vector<std::byte> message(100);
  int sent = 0;
  while (!channel.try_send(message)) ++sent;
  EXPECT_EQ(sent, 6);
  ASSERT_FALSE(channel.send_for(message, 5s));
  Statistics stats = channel.statistics();
  EXPECT_EQ(stats.consumer_died, 1u);
  EXPECT_EQ(stats.redelivered, 0u);
  std::vector<std::byte> out;
  for (int i = 0; i < sent + 1; ++i) ASSERT_FALSE(channel.try_receive(out));
  EXPECT_EQ(channel.try_receive(out), code(errc::would_block));
}

TEST(ChannelCrash, WithRedeliveryADeadConsumersMessageGoesToTheNextConsumer) {
  Registry registry;
  ChannelConfig config = small_config();
  config.redelivery = true;
  SharedRegion region(config);
  sync::Participant me = registry.attach().value();
  Endpoint channel = Endpoint::open(region.bytes(), &me).value();
  ASSERT_FALSE(channel.send(as_bytes("again")));
  ASSERT_FALSE(channel.send(as_bytes("after")));
  xproc::test::Child consumer = xproc::test::Child::start([&]() -> int {
    sync::Participant self = registry.attach().value();
    Endpoint endpoint = Endpoint::open(region.bytes(), &self).value();
    Message message = endpoint.peek().value();
    (void)message;
    die();
  });
  EXPECT_TRUE(consumer.wait(10s).signaled);
  std::vector<std::byte> out;
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 5s));
  EXPECT_EQ(text_of(out), "after");
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 5s));  // idle sweep redelivers
  EXPECT_EQ(text_of(out), "again");
  Statistics stats = channel.statistics();
  EXPECT_EQ(stats.consumer_died, 1u);
  EXPECT_EQ(stats.redelivered, 1u);
  EXPECT_EQ(channel.try_receive(out), code(errc::would_block));
}

// Recovery time at the worst step for a consumer: it waits (parked) on a record whose producer
// dies before committing. Measured from the producer's death (reaped) to the consumer receiving
// the next message, which another producer sends right after the death.
TEST(ChannelCrash, ConsumerParkedOnADeadProducersRecordRecoversWithinMilliseconds) {
  const long trials = xproc::test::scaled(200);
  std::vector<double> recovery_us;
  for (long trial = 0; trial < trials; ++trial) {
    Registry registry;
    SharedRegion region(small_config());
    sync::Participant me = registry.attach().value();
    Endpoint channel = Endpoint::open(region.bytes(), &me).value();
    std::atomic<std::int64_t> received_ns{0};
    std::thread consumer([&] {
      std::vector<std::byte> out;
      EXPECT_FALSE(channel.receive_until(out, sync::Clock::now() + 10s));
      received_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        sync::Clock::now().time_since_epoch())
                        .count();
      EXPECT_EQ(text_of(out), "after");
    });
    xproc::test::Child producer = xproc::test::Child::start([&]() -> int {
      sync::Participant self = registry.attach().value();
      Endpoint endpoint = Endpoint::open(region.bytes(), &self).value();
      Reservation torn = endpoint.reserve(10).value();
      // Die once the consumer has parked on this record.
      (void)xproc::test::eventually([&] { return endpoint.statistics().receivers_waiting > 0; });
      die();
    });
    EXPECT_TRUE(producer.wait(10s).signaled);
    const std::int64_t dead_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(sync::Clock::now().time_since_epoch())
            .count();
    ASSERT_FALSE(channel.send(as_bytes("after")));
    consumer.join();
    recovery_us.push_back(static_cast<double>(received_ns.load() - dead_ns) / 1e3);
    EXPECT_EQ(channel.statistics().producer_died, 1u);
  }
  std::sort(recovery_us.begin(), recovery_us.end());
  const auto at = [&](double q) {
    return recovery_us[std::min(
        recovery_us.size() - 1,
        static_cast<std::size_t>(q * static_cast<double>(recovery_us.size())))];
  };
  std::printf(
      "channel crash: consumer parked on a dead producer's record: %zu trials, recovery "
      "(death -> next receive) p50 %.1f us p99 %.1f us max %.1f us\n",
      recovery_us.size(), at(0.5), at(0.99), recovery_us.back());
  EXPECT_LT(at(0.5), 1e6);  // bounded (a hang would fail the receive's 10 s deadline first)
}

// A process that dies holding a lock (reserve or claim) stands for one killed inside R2-R7 or
// K2-K4: the lock word names it, the next user takes the lock over.
void lock_holder_dies(bool reserve_lock) {
  Registry registry;
  SharedRegion region(small_config());
  sync::Participant me = registry.attach().value();
  Endpoint channel = Endpoint::open(region.bytes(), &me).value();
  auto* header = reinterpret_cast<detail::ChannelHeader*>(region.bytes().data());
  ASSERT_FALSE(channel.send(as_bytes("queued")));
  xproc::test::Child holder = xproc::test::Child::start([&]() -> int {
    sync::Participant self = registry.attach().value();
    std::atomic<std::uint32_t>& word = reserve_lock ? header->producer.lock : header->consumer.lock;
    std::uint32_t expected = 0;
    if (!word.compare_exchange_strong(expected, self.id().pack())) return 1;
    die();
  });
  EXPECT_TRUE(holder.wait(10s).signaled);
  ASSERT_FALSE(channel.send_for(as_bytes("next"), 5s));
  std::vector<std::byte> out;
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 5s));
  EXPECT_EQ(text_of(out), "queued");
  ASSERT_FALSE(channel.receive_until(out, sync::Clock::now() + 5s));
  EXPECT_EQ(text_of(out), "next");
  EXPECT_EQ(channel.statistics().lock_takeovers, 1u);
}

TEST(ChannelCrash, ProducerKilledHoldingTheReserveLockIsTakenOver) {
  lock_holder_dies(true);
}
TEST(ChannelCrash, ConsumerKilledHoldingTheClaimLockIsTakenOver) {
  lock_holder_dies(false);
}

// Random instants: 2 producer and 2 consumer processes; one of them is SIGKILLed after a random
// delay. Consumers record a message (exchange on a per-message flag) before they release it.
// The channel has a role table: no survivor may be told peer_dead while a peer on the other
// side lives (consumers see end of stream only once both producers are finished or killed).
constexpr std::uint32_t kProducers = 2;
constexpr std::uint32_t kConsumers = 2;
constexpr std::uint32_t kPerProducer = 3000;

struct TrialState {
  std::array<std::array<std::atomic<std::uint8_t>, kPerProducer>, kProducers> seen;
  std::atomic<std::uint32_t> duplicates;
  std::atomic<std::uint32_t> torn;
  std::atomic<std::uint32_t> reordered;
  std::atomic<std::uint32_t> errors;
  std::atomic<std::uint32_t> ready;
  std::atomic<std::uint32_t> stop;
  std::atomic<std::int64_t> last_progress_ns;  // steady clock of the latest receive
  std::atomic<std::uint64_t> received;
  std::array<std::atomic<std::uint8_t>, kProducers> producer_gone;  // finished, or killed
  std::atomic<std::uint32_t> early_end;  // peer_dead seen while a producer could still send
};

std::string describe(const Statistics& s) {
  char text[512];
  std::snprintf(text, sizeof text,
                "depth %llu messages %llu bytes, claimed %llu bytes, reserved %llu, claimed %llu, "
                "abandoned %llu, producer_died %llu, consumer_died %llu, takeovers %llu, "
                "senders waiting %u, receivers waiting %u",
                static_cast<unsigned long long>(s.depth_messages),
                static_cast<unsigned long long>(s.depth_bytes),
                static_cast<unsigned long long>(s.claimed_bytes),
                static_cast<unsigned long long>(s.reserved_total),
                static_cast<unsigned long long>(s.claimed_total),
                static_cast<unsigned long long>(s.abandoned),
                static_cast<unsigned long long>(s.producer_died),
                static_cast<unsigned long long>(s.consumer_died),
                static_cast<unsigned long long>(s.lock_takeovers), s.senders_waiting,
                s.receivers_waiting);
  return text;
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(sync::Clock::now().time_since_epoch())
      .count();
}

int run_producer(const Registry& registry, const SharedRegion& region, TrialState& state,
                 std::uint32_t producer) {
  sync::Participant self = registry.attach().value();
  Endpoint endpoint = Endpoint::open(region.bytes(), &self).value();
  endpoint.declare_producer();  // a producer from the start, not from its first send
  state.ready.fetch_add(1);
  for (std::uint32_t s = 0; s < kPerProducer; ++s) {
    std::vector<std::byte> m =
        test::make_message(producer, s, test::message_size(producer, s, 120));
    if (s % 3 == 0) {  // zero-copy path too
      Result<Reservation> r = endpoint.reserve_until(m.size(), sync::Clock::now() + 20s);
      if (!r) return 2;
      std::memcpy(r->data().data(), m.data(), m.size());
      if (endpoint.commit(*r)) return 3;
    } else if (endpoint.send_for(m, 20s)) {
      return 4;
    }
  }
  state.producer_gone[producer].store(1);
  return 0;
}

int run_consumer(const Registry& registry, const SharedRegion& region, TrialState& state) {
  sync::Participant self = registry.attach().value();
  Endpoint endpoint = Endpoint::open(region.bytes(), &self).value();
  std::array<std::uint32_t, kProducers> next{};
  endpoint.declare_consumer();  // a consumer from the start: a kill of the other one is no end
  state.ready.fetch_add(1);
  // Every producer has declared itself once everyone is ready: a producer that finishes before
  // the other one started must not look like the end of the stream.
  while (state.ready.load() < kProducers + kConsumers) std::this_thread::yield();
  while (state.stop.load() == 0) {
    Result<Message> message = endpoint.peek_until(sync::Clock::now() + 10ms);
    if (!message) {
      if (message.error() == code(errc::peer_dead)) {
        // End of stream: right only once no producer can send any more.
        for (const std::atomic<std::uint8_t>& gone : state.producer_gone) {
          if (gone.load() == 0) state.early_end.fetch_add(1);
        }
      } else if (message.error() != code(errc::timed_out)) {
        state.errors.fetch_add(1);
      }
      continue;
    }
    test::Decoded d = test::check_message(message->data());
    if (!d.ok || d.producer >= kProducers || d.sequence >= kPerProducer) {
      state.torn.fetch_add(1);
    } else {
      if (state.seen[d.producer][d.sequence].exchange(1) != 0) state.duplicates.fetch_add(1);
      if (d.sequence < next[d.producer]) state.reordered.fetch_add(1);
      next[d.producer] = d.sequence + 1;
    }
    state.last_progress_ns.store(now_ns());
    state.received.fetch_add(1);
    if (endpoint.release(*message)) state.errors.fetch_add(1);
  }
  return 0;
}

TEST(ChannelCrash, RandomKillsOfProducersAndConsumersLoseNothingTheyDidNotHold) {
  const long trials = xproc::test::scaled(300);
  std::mt19937 random(12345);
  std::vector<double> recovery_us;
  std::uint64_t producer_died = 0, consumer_died = 0, takeovers = 0;
  for (long trial = 0; trial < trials; ++trial) {
    Registry registry;
    ChannelConfig config = small_config(8192, 128);
    config.role_slots = registry.table->capacity();
    SharedRegion region(config);
    xproc::test::SharedObject<TrialState> state;
    sync::Participant me = registry.attach().value();
    Endpoint channel = Endpoint::open(region.bytes(), &me).value();
    std::vector<xproc::test::Child> children;
    for (std::uint32_t p = 0; p < kProducers; ++p) {
      children.push_back(
          xproc::test::Child::start([&, p] { return run_producer(registry, region, *state, p); }));
    }
    for (std::uint32_t c = 0; c < kConsumers; ++c) {
      children.push_back(
          xproc::test::Child::start([&] { return run_consumer(registry, region, *state); }));
    }
    ASSERT_TRUE(xproc::test::eventually([&] { return state->ready.load() == 4; }));
    const std::uint32_t victim = random() % 4;  // 0,1 producers; 2,3 consumers
    const auto delay = std::chrono::microseconds(random() % 4000);
    const auto kill_at = sync::Clock::now() + delay;
    while (sync::Clock::now() < kill_at) {
    }
    if (victim < kProducers) state->producer_gone[victim].store(1);  // before its death
    children[victim].kill(SIGKILL);
    const std::int64_t killed_ns = now_ns();
    const xproc::test::ChildStatus victim_status = children[victim].wait(10s);
    EXPECT_TRUE(victim_status.signaled || victim_status.ok());
    // Survivors' next progress after the kill (a receive completing).
    if (xproc::test::eventually([&] { return state->last_progress_ns.load() > killed_ns; }, 1s)) {
      recovery_us.push_back(static_cast<double>(state->last_progress_ns.load() - killed_ns) / 1e3);
    }
    for (std::uint32_t p = 0; p < kProducers; ++p) {
      if (p != victim) {
        EXPECT_TRUE(children[p].wait(30s).ok()) << "trial " << trial;
      }
    }
    // Drained: every record reserved so far was claimed or skipped, and reclaimed (a dead
    // consumer's record by the survivors' idle sweep).
    EXPECT_TRUE(xproc::test::eventually(
        [&] {
          Statistics s = channel.statistics();
          return s.depth_messages == 0 && s.depth_bytes == 0 && s.claimed_bytes == 0;
        },
        10s))
        << "trial " << trial << " victim " << victim << ": " << describe(channel.statistics());
    state->stop.store(1);
    for (std::uint32_t c = kProducers; c < kProducers + kConsumers; ++c) {
      if (c != victim) {
        EXPECT_TRUE(children[c].wait(30s).ok()) << "trial " << trial;
      }
    }
    Statistics stats = channel.statistics();
    EXPECT_EQ(state->torn.load(), 0u) << "trial " << trial;
    EXPECT_EQ(state->duplicates.load(), 0u) << "trial " << trial;
    EXPECT_EQ(state->reordered.load(), 0u) << "trial " << trial;
    EXPECT_EQ(state->errors.load(), 0u) << "trial " << trial;
    EXPECT_EQ(state->early_end.load(), 0u) << "trial " << trial;
    for (std::uint32_t p = 0; p < kProducers; ++p) {
      std::uint32_t delivered = 0;
      std::uint32_t prefix = 0;
      for (std::uint32_t s = 0; s < kPerProducer; ++s) {
        if (state->seen[p][s].load() != 0) {
          ++delivered;
          if (prefix == s) ++prefix;
        }
      }
      if (p == victim) {
        EXPECT_EQ(delivered, prefix) << "a dead producer's messages form a prefix";
        EXPECT_LE(stats.producer_died, 1u);
      } else {
        // Lost only what a dead consumer held when it died (claimed, not recorded).
        const std::uint32_t missing = kPerProducer - delivered;
        if (victim < kProducers) {
          EXPECT_EQ(missing, 0u) << "trial " << trial;
        }
        (void)missing;
      }
    }
    if (victim >= kProducers) {
      std::uint32_t missing = 0;
      for (std::uint32_t p = 0; p < kProducers; ++p) {
        for (std::uint32_t s = 0; s < kPerProducer; ++s) missing += state->seen[p][s].load() == 0;
      }
      EXPECT_LE(missing, stats.consumer_died) << "trial " << trial;
      EXPECT_LE(stats.consumer_died, 1u) << "trial " << trial;
      EXPECT_EQ(stats.producer_died, 0u) << "trial " << trial;
    }
    producer_died += stats.producer_died;
    consumer_died += stats.consumer_died;
    takeovers += stats.lock_takeovers;
  }
  std::sort(recovery_us.begin(), recovery_us.end());
  if (!recovery_us.empty()) {
    const auto at = [&](double q) {
      return recovery_us[std::min(
          recovery_us.size() - 1,
          static_cast<std::size_t>(q * static_cast<double>(recovery_us.size())))];
    };
    std::printf(
        "channel crash: %ld trials, reclaimed: %llu dead-producer records, %llu "
        "dead-consumer records, %llu lock takeovers; recovery (kill -> next receive) "
        "p50 %.1f us p99 %.1f us max %.1f us\n",
        trials, static_cast<unsigned long long>(producer_died),
        static_cast<unsigned long long>(consumer_died), static_cast<unsigned long long>(takeovers),
        at(0.5), at(0.99), recovery_us.back());
  }
}

}  // namespace
}  // namespace xproc::channel
