// Segments inside one process: create/open round trip, names, every validation failure of open,
// the ready wait, anonymous segments, unlink and unlink-when-last-detaches, the registry
// functions, and a create race among threads.
#include "xproc/shm/segment.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <barrier>
#include <cstddef>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "child_process.h"
#include "eventually.h"
#include "segment_test_support.h"
#include "xproc/shm/segment_registry.h"
#include "xproc/sys/error.h"
#include "xproc/sys/file.h"
#include "xproc/sys/futex.h"
#include "xproc/sys/ofd_lock.h"

namespace xproc::shm {
namespace {

using test::UniqueName;
using namespace std::chrono_literals;

std::error_code fill(std::span<std::byte> body, std::byte value) {
  std::memset(body.data(), static_cast<int>(value), body.size());
  return {};
}

TEST(Segment, CreateThenOpenSharesTheBodyAndTheHeaderFacts) {
  UniqueName name("roundtrip");
  auto created = Segment::create(name, SegmentKind::raw, 1000, {}, [](std::span<std::byte> body) {
    return fill(body, std::byte{7});
  });
  ASSERT_TRUE(created) << created.error().message();
  auto opened = Segment::open(name, SegmentKind::raw);
  ASSERT_TRUE(opened) << opened.error().message();

  ASSERT_EQ(opened->body_size(), 1000u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(opened->body().data()) % kBodyAlignment, 0u);
  for (std::byte b : opened->body()) ASSERT_EQ(b, std::byte{7});
  created->body()[999] = std::byte{42};
  EXPECT_EQ(opened->body()[999], std::byte{42});

  const SegmentInfo& info = opened->info();
  EXPECT_EQ(info.kind, SegmentKind::raw);
  EXPECT_EQ(info.layout_version, SegmentHeader::kLayoutVersion);
  EXPECT_EQ(info.creator_uid, geteuid());
  EXPECT_EQ(info.creator_pid, getpid());
  EXPECT_EQ(info.creator, created->self().id());
  EXPECT_EQ(info.participant_capacity, 64u);
  EXPECT_EQ(info.total_size, info.body_offset + 1000);
  EXPECT_FALSE(info.size_sealed);
  EXPECT_EQ(opened->name(), name.str());

  // Both are participants of the embedded registry and see each other alive.
  EXPECT_TRUE(created->self().attached());
  EXPECT_TRUE(opened->self().attached());
  EXPECT_NE(created->self().id(), opened->self().id());
  EXPECT_TRUE(opened->self().is_alive(created->self().id()).value());
  EXPECT_EQ(created->participants().capacity(), 64u);

  struct stat status {};
  ASSERT_EQ(stat(name.path().c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 07777, 0600u);
}

TEST(Segment, ModeIsExactlyAsAskedWhateverTheUmask) {
  UniqueName name("mode");
  mode_t old = umask(077);
  SegmentOptions options;
  options.mode = 0640;
  auto created = Segment::create(name, SegmentKind::raw, 64, options);
  umask(old);
  ASSERT_TRUE(created);
  struct stat status {};
  ASSERT_EQ(stat(name.path().c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 07777, 0640u);
}

TEST(Segment, InitRunsBeforeTheNameAppearsAndItsErrorAbortsTheCreate) {
  UniqueName name("init");
  bool ran = false;
  auto created = Segment::create(name, SegmentKind::raw, 64, {}, [&](std::span<std::byte>) {
    ran = true;
    EXPECT_EQ(Segment::open(name, SegmentKind::raw).error(), errc::not_found);
    return std::error_code(errc::invalid_argument);
  });
  EXPECT_TRUE(ran);
  EXPECT_EQ(created.error(), errc::invalid_argument);
  EXPECT_EQ(Segment::open(name, SegmentKind::raw).error(), errc::not_found);
}

TEST(Segment, NamesAreValidated) {
  std::string longest(kMaxNameLength, 'a');
  EXPECT_TRUE(valid_segment_name(longest));
  EXPECT_TRUE(valid_segment_name("a.b_c-D9"));
  for (std::string bad :
       {std::string(), std::string(".hidden"), std::string("a/b"), std::string("a b"),
        std::string(kMaxNameLength + 1, 'a'), std::string("caf\xc3\xa9")}) {
    EXPECT_FALSE(valid_segment_name(bad)) << bad;
    EXPECT_EQ(Segment::create(bad, SegmentKind::raw, 64).error(), errc::invalid_argument);
    EXPECT_EQ(Segment::open(bad, SegmentKind::raw).error(), errc::invalid_argument);
  }
}

TEST(Segment, BadCreateArgumentsAreInvalid) {
  UniqueName name("args");
  SegmentOptions options;
  options.participant_capacity = 0;
  EXPECT_EQ(Segment::create(name, SegmentKind::raw, 64, options).error(), errc::invalid_argument);
  options.participant_capacity = sync::ParticipantTable::kMaxCapacity + 1;
  EXPECT_EQ(Segment::create(name, SegmentKind::raw, 64, options).error(), errc::invalid_argument);
  EXPECT_EQ(Segment::create(name, static_cast<SegmentKind>(9), 64).error(), errc::invalid_argument);
  EXPECT_EQ(Segment::create(name, SegmentKind::raw, kLockRegion).error(), errc::invalid_argument);
  options = {};
  options.mode = 010000;
  EXPECT_EQ(Segment::create(name, SegmentKind::raw, 64, options).error(), errc::invalid_argument);
}

TEST(Segment, ASecondCreateGetsAlreadyExistsOrOpensTheFirstByOption) {
  UniqueName name("exists");
  auto first = Segment::create(name, SegmentKind::channel, 128);
  ASSERT_TRUE(first);
  EXPECT_EQ(Segment::create(name, SegmentKind::channel, 128).error(), errc::already_exists);
  SegmentOptions options;
  options.if_exists = IfExists::open;
  bool ran = false;
  auto second =
      Segment::create(name, SegmentKind::channel, 4096, options, [&](std::span<std::byte>) {
        ran = true;
        return std::error_code();
      });
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(second->body_size(), 128u);  // the winner's segment, not a new one
  EXPECT_EQ(second->info().creator, first->self().id());
  // init ran on the loser's unpublished file only, which vanished.
  EXPECT_TRUE(ran);
  // Opening an existing name of another kind: wrong_kind.
  EXPECT_EQ(Segment::create(name, SegmentKind::pool, 128, options).error(), errc::wrong_kind);
}

TEST(Segment, OpenOfAMissingNameIsNotFoundAndOfAnotherKindIsWrongKind) {
  UniqueName name("kinds");
  EXPECT_EQ(Segment::open(name, SegmentKind::raw).error(), errc::not_found);
  auto created = Segment::create(name, SegmentKind::rpc, 64);
  ASSERT_TRUE(created);
  EXPECT_EQ(Segment::open(name, SegmentKind::channel).error(), errc::wrong_kind);
  EXPECT_TRUE(Segment::open(name, SegmentKind::rpc));
}

// Each case damages a fresh segment's file, then opens it.
struct Damage {
  const char* what;
  std::function<bool(const UniqueName&, const SegmentInfo&)> apply;
  errc expected;
};

TEST(Segment, EveryValidationFailureOfOpenIsANamedError) {
  const std::vector<Damage> cases = {
      {"empty file", [](auto& n, auto&) { return test::truncate_to(n, 0); }, errc::corrupt_segment},
      {"shorter than the header", [](auto& n, auto&) { return test::truncate_to(n, 100); },
       errc::corrupt_segment},
      {"shorter than total_size",
       [](auto& n, auto& i) { return test::truncate_to(n, static_cast<off_t>(i.total_size - 1)); },
       errc::corrupt_segment},
      {"magic", [](auto& n, auto&) { return test::poke<std::uint8_t>(n, 0, 'Y'); },
       errc::corrupt_segment},
      {"layout version", [](auto& n, auto&) { return test::poke<std::uint32_t>(n, 8, 2); },
       errc::layout_mismatch},
      {"signature", [](auto& n, auto&) { return test::poke<std::uint32_t>(n, 12, kSignature ^ 1); },
       errc::layout_mismatch},
      {"kind out of range", [](auto& n, auto&) { return test::poke<std::uint32_t>(n, 16, 9); },
       errc::corrupt_segment},
      {"unknown flag", [](auto& n, auto&) { return test::poke<std::uint32_t>(n, 20, 1u << 7); },
       errc::layout_mismatch},
      {"total_size past the file",
       [](auto& n, auto& i) { return test::poke<std::uint64_t>(n, 24, i.total_size + 4096); },
       errc::corrupt_segment},
      {"body_offset",
       [](auto& n, auto& i) { return test::poke<std::uint64_t>(n, 32, i.body_offset + 64); },
       errc::corrupt_segment},
      {"body_size",
       [](auto& n, auto& i) { return test::poke<std::uint64_t>(n, 40, i.body_size + 1); },
       errc::corrupt_segment},
      {"huge body_size", [](auto& n, auto&) { return test::poke<std::uint64_t>(n, 40, ~0ull); },
       errc::corrupt_segment},
      {"table offset", [](auto& n, auto&) { return test::poke<std::uint64_t>(n, 48, 64); },
       errc::corrupt_segment},
      {"capacity 0", [](auto& n, auto&) { return test::poke<std::uint32_t>(n, 56, 0); },
       errc::corrupt_segment},
      {"capacity differs from the table's",
       [](auto& n, auto&) { return test::poke<std::uint32_t>(n, 56, 65); }, errc::corrupt_segment},
      {"ready word impossible", [](auto& n, auto&) { return test::poke<std::uint32_t>(n, 80, 7); },
       errc::corrupt_segment},
      {"lock region", [](auto& n, auto&) { return test::poke<std::uint64_t>(n, 88, 0); },
       errc::layout_mismatch},
      {"table magic", [](auto& n, auto&) { return test::poke<std::uint32_t>(n, 128, 0); },
       errc::corrupt_segment},
      {"table capacity", [](auto& n, auto&) { return test::poke<std::uint32_t>(n, 136, 70000); },
       errc::corrupt_segment},
      {"not ready, creator gone",
       [](auto& n, auto&) { return test::poke<std::uint32_t>(n, 80, 0); }, errc::peer_dead},
      {"zeroed header, nobody creating",
       [](auto& n, auto&) { return test::truncate_to(n, 0) && test::truncate_to(n, 4096); },
       errc::corrupt_segment},
  };
  for (const Damage& damage : cases) {
    SCOPED_TRACE(damage.what);
    UniqueName name("damage");
    SegmentInfo info;
    {
      auto created = Segment::create(name, SegmentKind::raw, 256);
      ASSERT_TRUE(created);
      info = created->info();
    }
    ASSERT_TRUE(damage.apply(name, info));
    SegmentOptions options;
    options.ready_timeout = 1s;
    EXPECT_EQ(Segment::open(name, SegmentKind::raw, options).error(), damage.expected);
  }
}

TEST(Segment, RandomlyDamagedHeadersGiveASegmentOrANamedErrorNeverACrash) {
  std::mt19937 random(31);  // fixed seed: reproducible
  const long trials = xproc::test::scaled(300);
  int opened = 0;
  for (long trial = 0; trial < trials; ++trial) {
    UniqueName name("fuzz");
    SegmentOptions options;
    options.participant_capacity = 1 + static_cast<std::uint32_t>(trial % 70);
    {
      ASSERT_TRUE(Segment::create(name, SegmentKind::raw,
                                  static_cast<std::size_t>(1 + 97 * (trial % 5)), options));
    }
    // 1..4 damaged bytes among the header and the table header (where a value is checked).
    int damaged = std::uniform_int_distribution<int>(1, 4)(random);
    for (int i = 0; i < damaged; ++i) {
      auto offset = std::uniform_int_distribution<off_t>(0, 143)(random);
      auto value = static_cast<std::uint8_t>(std::uniform_int_distribution<int>(0, 255)(random));
      ASSERT_TRUE(test::poke<std::uint8_t>(name, offset, value));
    }
    SegmentOptions quick;
    quick.ready_timeout = 20ms;
    auto segment = Segment::open(name, SegmentKind::raw, quick);
    if (segment) {
      ++opened;
      // Whatever was accepted is consistent with the mapping: touch every body byte.
      for (std::byte& b : segment->body()) b = std::byte{1};
      continue;
    }
    std::error_code error = segment.error();
    EXPECT_TRUE(error == errc::corrupt_segment || error == errc::layout_mismatch ||
                error == errc::wrong_kind || error == errc::peer_dead)
        << trial << ": " << error.message();
  }
  RecordProperty("opened", opened);
}

TEST(Segment, OpenOfAFileOfAnotherOwnerIsPermissionDenied) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  UniqueName name("owner");
  auto created = Segment::create(name, SegmentKind::raw, 64);
  ASSERT_TRUE(created);
  ASSERT_EQ(chown(name.path().c_str(), 65534, 65534), 0);
  EXPECT_EQ(Segment::open(name, SegmentKind::raw).error(), errc::permission_denied);
}

TEST(Segment, OpenWaitsForReadyWhileTheCreatorLivesAndTimesOutAtTheBound) {
  UniqueName name("ready");
  auto created = Segment::create(name, SegmentKind::raw, 64);
  ASSERT_TRUE(created);
  auto& header = *static_cast<SegmentHeader*>(
      static_cast<void*>(created->body().data() - created->info().body_offset));
  // Pretend the creator is still initializing: ready 0, init byte held by another description.
  auto creator = sys::reopen(created->fd()).value();
  ASSERT_FALSE(sys::ofd_try_lock(creator.get(), static_cast<off_t>(kInitLockByte), 1));
  header.ready.store(0);

  SegmentOptions quick;
  quick.ready_timeout = 30ms;
  EXPECT_EQ(Segment::open(name, SegmentKind::raw, quick).error(), errc::timed_out);

  // An opener with a long bound announces itself (kWaiting) and sleeps; publishing wakes it.
  header.ready.store(0);
  Result<Segment> waited = std::error_code(errc::invalid_argument);
  std::thread opener([&] { waited = Segment::open(name, SegmentKind::raw); });
  bool announced = xproc::test::eventually(
      [&] { return header.ready.load() == SegmentHeader::kWaiting; }, std::chrono::seconds(1));
  EXPECT_TRUE(announced);  // (if not, the opener times out by itself after 2 s)
  EXPECT_EQ(header.ready.exchange(SegmentHeader::kReady), SegmentHeader::kWaiting);
  ASSERT_TRUE(sys::futex_wake(header.ready, 1, sys::FutexScope::process_shared));
  opener.join();
  EXPECT_TRUE(waited) << waited.error().message();
}

TEST(Segment, AnonymousSegmentsAreSizeSealedAndAdoptable) {
  auto created = Segment::create_anonymous(SegmentKind::pool, 5000, {},
                                           [](auto body) { return fill(body, std::byte{3}); });
  ASSERT_TRUE(created) << created.error().message();
  EXPECT_TRUE(created->name().empty());
  EXPECT_TRUE(created->info().size_sealed);
  EXPECT_NE(created->info().flags & kFlagAnonymous, 0u);
  EXPECT_NE(ftruncate(created->fd(), 10), 0);  // sealed: no SIGBUS by truncation

  auto adopted = Segment::adopt(sys::reopen(created->fd()).value(), SegmentKind::pool);
  ASSERT_TRUE(adopted) << adopted.error().message();
  EXPECT_EQ(adopted->body()[4999], std::byte{3});
  EXPECT_TRUE(adopted->self().is_alive(created->self().id()).value());
  EXPECT_EQ(Segment::adopt(sys::reopen(created->fd()).value(), SegmentKind::raw).error(),
            errc::wrong_kind);
  EXPECT_EQ(Segment::adopt(sys::FileDescriptor(), SegmentKind::raw).error(),
            errc::invalid_argument);
  EXPECT_EQ(created->unlink(), errc::invalid_argument);
}

TEST(Segment, AFullParticipantTableRefusesTheNextOpener) {
  UniqueName name("full");
  SegmentOptions options;
  options.participant_capacity = 2;
  auto created = Segment::create(name, SegmentKind::raw, 64, options);
  ASSERT_TRUE(created);
  auto second = Segment::open(name, SegmentKind::raw);
  ASSERT_TRUE(second);
  EXPECT_EQ(Segment::open(name, SegmentKind::raw).error(), errc::limit_reached);
  second = Segment();
  EXPECT_TRUE(Segment::open(name, SegmentKind::raw));
}

TEST(Segment, UnlinkRemovesTheNameButTheMappingKeepsWorking) {
  UniqueName name("unlink");
  auto created = Segment::create(name, SegmentKind::raw, 64);
  ASSERT_TRUE(created);
  ASSERT_FALSE(created->unlink());
  EXPECT_EQ(Segment::open(name, SegmentKind::raw).error(), errc::not_found);
  EXPECT_EQ(created->unlink(), errc::not_found);
  created->body()[0] = std::byte{1};
  EXPECT_EQ(created->body()[0], std::byte{1});
}

TEST(Segment, UnlinkWhenLastDetachesRemovesTheNameWithTheLastParticipantOnly) {
  UniqueName name("last");
  SegmentOptions options;
  options.unlink_when_last_detaches = true;
  auto created = Segment::create(name, SegmentKind::raw, 64, options);
  ASSERT_TRUE(created);
  EXPECT_NE(created->info().flags & kFlagUnlinkWhenLastDetaches, 0u);
  auto opened = Segment::open(name, SegmentKind::raw);
  ASSERT_TRUE(opened);
  created = Segment();
  EXPECT_TRUE(Segment::open(name, SegmentKind::raw));  // still named: `opened` is alive
  opened = Segment();
  EXPECT_EQ(Segment::open(name, SegmentKind::raw).error(), errc::not_found);

  UniqueName kept("kept");
  { ASSERT_TRUE(Segment::create(kept, SegmentKind::raw, 64)); }
  EXPECT_TRUE(Segment::open(kept, SegmentKind::raw));  // without the option the name stays
}

TEST(Segment, ConcurrentLastDetachesLeaveNoName) {
  constexpr int kThreads = 4;
  SegmentOptions options;
  options.unlink_when_last_detaches = true;
  for (long round = 0; round < xproc::test::scaled(20); ++round) {
    UniqueName name("detaches");
    std::vector<Segment> segments;
    segments.push_back(Segment::create(name, SegmentKind::raw, 64, options).value());
    for (int i = 1; i < kThreads; ++i) {
      segments.push_back(Segment::open(name, SegmentKind::raw).value());
    }
    std::barrier start(kThreads);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        segments[static_cast<std::size_t>(i)] = Segment();
      });
    }
    for (auto& thread : threads) thread.join();
    ASSERT_EQ(Segment::open(name, SegmentKind::raw).error(), errc::not_found) << round;
  }
}

TEST(Segment, AnOpenerRacingTheLastDetachEitherAttachesToANamedSegmentOrFindsNone) {
  SegmentOptions options;
  options.unlink_when_last_detaches = true;
  int attached = 0;
  for (long round = 0; round < xproc::test::scaled(40); ++round) {
    UniqueName name("detach-open");
    Result<Segment> last = Segment::create(name, SegmentKind::raw, 64, options);
    ASSERT_TRUE(last);
    Result<Segment> opener = std::error_code(errc::invalid_argument);
    std::barrier start(2);
    std::thread detacher([&] {
      start.arrive_and_wait();
      last = std::error_code(errc::invalid_argument);  // destroys: the last detach
    });
    start.arrive_and_wait();
    opener = Segment::open(name, SegmentKind::raw);
    detacher.join();
    if (opener) {
      ++attached;
      // Attached: the name must still lead to this very segment.
      auto again = Segment::open(name, SegmentKind::raw);
      ASSERT_TRUE(again) << round;
      EXPECT_EQ(again->info().created_at, opener->info().created_at);
      again = std::error_code(errc::invalid_argument);
      opener = std::error_code(errc::invalid_argument);  // now the last: unlinks
    } else {
      ASSERT_EQ(opener.error(), errc::not_found) << round;
    }
    ASSERT_EQ(Segment::open(name, SegmentKind::raw).error(), errc::not_found) << round;
  }
  RecordProperty("opener_attached", attached);
}

TEST(SegmentRegistry, ListInspectStaleAndRemove) {
  UniqueName name("registry");
  auto created = Segment::create(name, SegmentKind::channel, 64);
  ASSERT_TRUE(created);
  auto opened = Segment::open(name, SegmentKind::channel);
  ASSERT_TRUE(opened);

  auto names = list_segments();
  ASSERT_TRUE(names);
  EXPECT_NE(std::find(names->begin(), names->end(), name.str()), names->end());

  auto report = inspect(name);
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_EQ(report->info.kind, SegmentKind::channel);
  ASSERT_EQ(report->participants.size(), 2u);  // inspect does not attach
  EXPECT_EQ(report->participants[0].id, created->self().id());
  EXPECT_TRUE(report->participants[0].alive);
  EXPECT_EQ(report->participants[1].id, opened->self().id());
  EXPECT_TRUE(report->participants[1].alive);

  EXPECT_FALSE(is_stale(name).value());
  EXPECT_FALSE(remove_stale(name).value());
  opened = Segment();
  report = inspect(name);
  ASSERT_TRUE(report);
  ASSERT_EQ(report->participants.size(), 2u);
  EXPECT_TRUE(report->participants[0].alive);
  EXPECT_FALSE(report->participants[1].alive);
  created = Segment();
  EXPECT_TRUE(is_stale(name).value());
  EXPECT_TRUE(remove_stale(name).value());
  EXPECT_EQ(is_stale(name).error(), errc::not_found);
  EXPECT_EQ(remove_stale(name).error(), errc::not_found);
  EXPECT_EQ(inspect(name).error(), errc::not_found);
}

TEST(SegmentRegistry, InspectOfACorruptSegmentIsANamedError) {
  UniqueName name("corrupt");
  { ASSERT_TRUE(Segment::create(name, SegmentKind::raw, 64)); }
  ASSERT_TRUE(test::poke<std::uint32_t>(name, 8, 99));
  EXPECT_EQ(inspect(name).error(), errc::layout_mismatch);
  EXPECT_TRUE(is_stale(name).value());  // staleness reads no contents
}

TEST(Segment, OptionsPopulateLockAndHugePagesWorkOrSayWhy) {
  UniqueName name("options");
  SegmentOptions options;
  options.populate = true;
  options.huge_pages = true;
  options.lock_memory = geteuid() == 0;  // an unprivileged RLIMIT_MEMLOCK may be tiny
  auto created = Segment::create(name, SegmentKind::raw, 1 << 20, options);
  ASSERT_TRUE(created) << created.error().message();
  // Huge pages are best effort: either honoured or a reason is given. Never an error.
  std::string reason(created->fallback_reason());
  if (!reason.empty()) {
    EXPECT_NE(reason.find("huge pages"), std::string::npos) << reason;
  }
  auto opened = Segment::open(name, SegmentKind::raw, options);
  ASSERT_TRUE(opened) << opened.error().message();
}

TEST(Segment, ConcurrentCreatesOfOneNameHaveExactlyOneWinner) {
  constexpr int kThreads = 6;
  for (int round = 0; round < 10; ++round) {
    UniqueName name("race");
    std::barrier start(kThreads);
    std::atomic<int> winners{0};
    std::atomic<int> losers{0};
    std::atomic<int> others{0};
    std::vector<Result<Segment>> kept;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        start.arrive_and_wait();
        auto segment = Segment::create(name, SegmentKind::raw, 64);
        if (segment) {
          ++winners;
        } else if (segment.error() == errc::already_exists) {
          ++losers;
        } else {
          ++others;
        }
      });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(winners.load(), 1);
    EXPECT_EQ(losers.load(), kThreads - 1);
    EXPECT_EQ(others.load(), 0);
  }
}

}  // namespace
}  // namespace xproc::shm
