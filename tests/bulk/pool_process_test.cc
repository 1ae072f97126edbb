// Pool loans across processes (fork, MAP_SHARED pool, a participant table on a memfd): a
// payload posted in one process is read in place in another; buffers loaned or held by a
// process that dies come back through recover(), and a loaner blocked on an exhausted pool
// gets the dead holder's buffer without anybody calling recover().
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "child_process.h"
#include "die.h"
#include "pool_test_support.h"
#include "shared_object.h"
#include "xproc/bulk/pool.h"
#include "xproc/sys/error.h"

namespace xproc::bulk {
namespace {

using namespace std::chrono_literals;
using test::Registry;
using test::SharedRegion;
using test::small_pool;
using xproc::test::die;

struct Shared {
  std::atomic<std::uint32_t> ready{0};
  Descriptor descriptor{};
};

TEST(PoolProcess, PayloadPostedInOneProcessIsReadInPlaceInAnother) {
  Registry registry;
  SharedRegion region(small_pool());
  xproc::test::SharedObject<Shared> shared;
  sync::Participant me = registry.attach().value();
  PoolView pool = PoolView::open(region.bytes(), &me).value();
  xproc::test::Child producer = xproc::test::Child::start([&]() -> int {
    sync::Participant self = registry.attach().value();
    PoolView view = PoolView::open(region.bytes(), &self).value();
    Loan loan = view.loan(60000).value();
    test::write_payload(loan.data(), 3, 4);
    shared->descriptor = view.post(std::move(loan)).value();
    shared->ready.store(1, std::memory_order_release);
    return 0;  // exits: the posted buffer stays posted (the descriptor is in flight)
  });
  ASSERT_TRUE(producer.wait(10s).ok());
  ASSERT_EQ(shared->ready.load(std::memory_order_acquire), 1u);
  EXPECT_EQ(pool.recover().value(), 0u);  // posted buffers are never reclaimed by a plain pool
  Held held = pool.accept(shared->descriptor).value();
  EXPECT_TRUE(test::payload_is(held.data(), 3, 4));
  EXPECT_EQ(held.size(), 60000u);
}

TEST(PoolProcess, BuffersLoanedOrHeldByADeadProcessAreReclaimed) {
  Registry registry;
  SharedRegion region(small_pool(2));
  xproc::test::SharedObject<Shared> shared;
  sync::Participant me = registry.attach().value();
  PoolView pool = PoolView::open(region.bytes(), &me).value();
  shared->descriptor = pool.post(pool.try_loan(100).value()).value();
  xproc::test::Child child = xproc::test::Child::start([&]() -> int {
    sync::Participant self = registry.attach().value();
    PoolView view = PoolView::open(region.bytes(), &self).value();
    Held held = view.accept(shared->descriptor).value();
    Loan a = view.try_loan(1).value();
    Loan b = view.try_loan(5000).value();
    (void)held;
    die();
  });
  EXPECT_TRUE(child.wait(10s).signaled);
  PoolStatistics before = pool.statistics();
  EXPECT_EQ(before.loaned, 2u);
  EXPECT_EQ(before.held, 1u);
  EXPECT_EQ(pool.recover().value(), 3u);
  PoolStatistics after = pool.statistics();
  EXPECT_EQ(after.free, after.total);
  EXPECT_EQ(after.reclaimed_dead, 3u);
  EXPECT_EQ(pool.accept(shared->descriptor).error(), make_error_code(errc::already_returned));
}

TEST(PoolProcess, BlockedLoanerGetsTheBufferOfAHolderThatDies) {
  Registry registry;
  PoolConfig config;
  config.classes = {{4096, 1}};
  SharedRegion region(config);
  xproc::test::SharedObject<Shared> shared;
  sync::Participant me = registry.attach().value();
  PoolView pool = PoolView::open(region.bytes(), &me).value();
  xproc::test::Child holder = xproc::test::Child::start([&]() -> int {
    sync::Participant self = registry.attach().value();
    PoolView view = PoolView::open(region.bytes(), &self).value();
    Loan loan = view.try_loan(1).value();
    shared->ready.store(1, std::memory_order_release);
    for (;;) pause();  // killed by the parent while it waits in loan()
  });
  while (shared->ready.load(std::memory_order_acquire) == 0) std::this_thread::yield();
  EXPECT_EQ(pool.try_loan(1).error(), make_error_code(errc::would_block));
  std::thread killer([&] {
    // Kill once the parent is parked (announced on the pool's wait word).
    while (pool.statistics().waiters == 0) std::this_thread::yield();
    holder.kill(SIGKILL);
  });
  Result<Loan> loan = pool.loan_for(1, 10s);
  killer.join();
  ASSERT_TRUE(loan.has_value()) << loan.error().message();
  EXPECT_TRUE(holder.wait(10s).signaled);
  EXPECT_EQ(pool.statistics().reclaimed_dead, 1u);
}

TEST(PoolProcess, AForkChildUsingItsParentsViewIsNeverTakenForTheParent) {
  Registry registry;
  PoolConfig config;
  config.classes = {{64, 1}};
  SharedRegion region(config);
  sync::Participant me = registry.attach().value();
  PoolView pool = PoolView::open(region.bytes(), &me).value();
  xproc::test::Child child = xproc::test::Child::start([&]() -> int {
    Result<Loan> loan = pool.try_loan(1);  // the inherited view: `me` is detached here
    if (!loan) return 1;
    std::uint64_t word = 0;
    std::memcpy(&word, region.bytes().data() + 1024, sizeof word);  // buffer 0's state word
    return (word & 0xffffffffu) == 0xfff ? 0 : 2;                   // no owner, not the parent's id
  });
  EXPECT_TRUE(child.wait(10s).ok());
}

}  // namespace
}  // namespace xproc::bulk
