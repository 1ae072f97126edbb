// ParticipantTable and Participant inside one process: header validation, slot allocation with
// generations, liveness through distinct descriptions, enumeration, the owner record.
#include "xproc/sync/participant_table.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "xproc/sync/detail/liveness.h"
#include "xproc/sys/error.h"
#include "xproc/sys/file.h"
#include "xproc/sys/memory.h"
#include "xproc/sys/ofd_lock.h"

namespace xproc::sync {
namespace detail {
bool operator==(OwnerRecord a, OwnerRecord b) {
  return a.table_tag == b.table_tag && a.participant == b.participant;
}
}  // namespace detail
namespace {

using detail::OwnerRecord;

// A table of `capacity` slots in a memfd, mapped MAP_SHARED.
struct TableFile {
  explicit TableFile(std::uint32_t capacity, std::size_t extra = 0)
      : file(sys::create_memory_file("participant_table_test",
                                     ParticipantTable::size_for(capacity) + extra)
                 .value()),
        mapping(
            sys::SharedMapping::of_file(file.get(), ParticipantTable::size_for(capacity) + extra)
                .value()),
        table(ParticipantTable::create(mapping.data(), mapping.size(), capacity).value()) {}

  // The slot words, by the documented layout (offset 16, one 32-bit word per slot).
  std::atomic<std::uint32_t>& slot_word(std::uint32_t slot) {
    return *reinterpret_cast<std::atomic<std::uint32_t>*>(
        static_cast<unsigned char*>(mapping.data()) + 16 + 4 * std::size_t{slot});
  }
  std::uint32_t header_word(std::size_t index) {
    std::uint32_t value = 0;
    std::memcpy(&value, static_cast<unsigned char*>(mapping.data()) + 4 * index, 4);
    return value;
  }
  void set_header_word(std::size_t index, std::uint32_t value) {
    std::memcpy(static_cast<unsigned char*>(mapping.data()) + 4 * index, &value, 4);
  }

  Participant attach(off_t lock_base = 0) {
    return Participant::attach(*table, file.get(), lock_base).value();
  }

  sys::FileDescriptor file;
  sys::SharedMapping mapping;
  ParticipantTable* table;
};

TEST(ParticipantId, PackPutsSlotInLowTwelveBitsAndGenerationAbove) {
  ParticipantId id{4095, 1};
  EXPECT_EQ(id.pack(), (1u << 12) | 4095u);
  EXPECT_EQ(ParticipantId::unpack(id.pack()), id);
  ParticipantId top{7, ParticipantId::kMaxGeneration};
  EXPECT_EQ(ParticipantId::unpack(top.pack()), top);
  EXPECT_TRUE(top.valid());
  EXPECT_NE(ParticipantId({0, 1}).pack(), 0u);
  EXPECT_FALSE(ParticipantId::unpack(0).valid());
  EXPECT_FALSE(ParticipantId::unpack(4095).valid());  // generation 0
}

TEST(ParticipantTable, CreateRejectsBadArguments) {
  alignas(4) unsigned char memory[ParticipantTable::size_for(8) + 4] = {};
  EXPECT_EQ(ParticipantTable::create(nullptr, sizeof(memory), 8).error(), errc::invalid_argument);
  EXPECT_EQ(ParticipantTable::create(memory, sizeof(memory), 0).error(), errc::invalid_argument);
  EXPECT_EQ(ParticipantTable::create(memory, sizeof(memory), 4097).error(), errc::invalid_argument);
  EXPECT_EQ(ParticipantTable::create(memory, ParticipantTable::size_for(8) - 1, 8).error(),
            errc::invalid_argument);
  EXPECT_EQ(ParticipantTable::create(memory + 1, sizeof(memory) - 1, 8).error(),
            errc::invalid_argument);
  EXPECT_TRUE(ParticipantTable::create(memory, sizeof(memory), 8).has_value());
}

TEST(ParticipantTable, OpenAcceptsACreatedTableWithItsTagAndCapacity) {
  TableFile t(16);
  EXPECT_EQ(t.table->capacity(), 16u);
  EXPECT_NE(t.table->tag(), 0u);
  Result<ParticipantTable*> opened = ParticipantTable::open(t.mapping.data(), t.mapping.size());
  ASSERT_TRUE(opened.has_value());
  EXPECT_EQ(*opened, t.table);
  EXPECT_EQ((*opened)->tag(), t.table->tag());
  EXPECT_EQ(t.header_word(0), ParticipantTable::kMagic);
  EXPECT_EQ(t.header_word(1), ParticipantTable::kLayoutVersion);
  EXPECT_EQ(t.header_word(2), 16u);
}

TEST(ParticipantTable, TwoTablesGetDifferentTags) {
  TableFile a(4);
  TableFile b(4);
  EXPECT_NE(a.table->tag(), b.table->tag());  // 32 random bits: a collision is 2^-32
}

TEST(ParticipantTable, OpenRejectsCorruptHeaders) {
  TableFile t(16);
  void* memory = t.mapping.data();
  std::size_t size = t.mapping.size();

  t.set_header_word(0, 0xdeadbeef);
  EXPECT_EQ(ParticipantTable::open(memory, size).error(), errc::corrupt_state);
  t.set_header_word(0, 0);  // zero-filled memory: never initialized
  EXPECT_EQ(ParticipantTable::open(memory, size).error(), errc::corrupt_state);
  t.set_header_word(0, ParticipantTable::kMagic);

  t.set_header_word(1, ParticipantTable::kLayoutVersion + 1);
  EXPECT_EQ(ParticipantTable::open(memory, size).error(), errc::corrupt_state);
  t.set_header_word(1, ParticipantTable::kLayoutVersion);

  t.set_header_word(2, 17);  // more slots than the memory holds
  EXPECT_EQ(ParticipantTable::open(memory, size).error(), errc::corrupt_state);
  t.set_header_word(2, 0);
  EXPECT_EQ(ParticipantTable::open(memory, size).error(), errc::corrupt_state);
  t.set_header_word(2, 0xffffffff);
  EXPECT_EQ(ParticipantTable::open(memory, size).error(), errc::corrupt_state);
  t.set_header_word(2, 16);

  EXPECT_EQ(ParticipantTable::open(memory, ParticipantTable::size_for(16) - 1).error(),
            errc::corrupt_state);
  EXPECT_EQ(ParticipantTable::open(memory, 15).error(), errc::invalid_argument);
  EXPECT_EQ(ParticipantTable::open(nullptr, size).error(), errc::invalid_argument);
  EXPECT_EQ(ParticipantTable::open(static_cast<unsigned char*>(memory) + 2, size - 2).error(),
            errc::invalid_argument);
  EXPECT_TRUE(ParticipantTable::open(memory, size).has_value());
}

TEST(Participant, AttachTakesDistinctSlotsWithGenerationOne) {
  TableFile t(4);
  Participant a = t.attach();
  Participant b = t.attach();
  EXPECT_TRUE(a.attached());
  EXPECT_EQ(a.id(), (ParticipantId{0, 1}));
  EXPECT_EQ(b.id(), (ParticipantId{1, 1}));
  EXPECT_EQ(a.table_tag(), t.table->tag());
  EXPECT_EQ(t.slot_word(0).load(), 1u);
  EXPECT_EQ(t.slot_word(2).load(), 0u);
}

TEST(Participant, AttachmentsOfOneProcessSeeEachOtherAlive) {
  TableFile t(4);
  Participant a = t.attach();
  Participant b = t.attach();
  EXPECT_TRUE(a.is_alive(b.id()).value());
  EXPECT_TRUE(b.is_alive(a.id()).value());
  EXPECT_TRUE(a.is_alive(a.id()).value());  // its own id, although its lock is invisible to it
}

TEST(Participant, DetachedIdReadsDeadAndTheSlotIsReusedWithTheNextGeneration) {
  TableFile t(4);
  Participant observer = t.attach();
  Participant first = t.attach();
  ParticipantId old_id = first.id();
  EXPECT_FALSE(first.detach());
  EXPECT_FALSE(first.attached());
  EXPECT_EQ(first.id(), ParticipantId{});
  EXPECT_FALSE(observer.is_alive(old_id).value());

  Participant second = t.attach();
  EXPECT_EQ(second.id(), (ParticipantId{old_id.slot, old_id.generation + 1}));
  EXPECT_FALSE(observer.is_alive(old_id).value());  // the slot is held, by someone else
  EXPECT_TRUE(observer.is_alive(second.id()).value());
  EXPECT_FALSE(first.detach());  // idempotent
}

TEST(Participant, ExhaustedTableReturnsLimitReachedAndAFreedSlotCanBeTakenAgain) {
  TableFile t(3);
  std::vector<Participant> held;
  for (int i = 0; i < 3; ++i) held.push_back(t.attach());
  Result<Participant> refused = Participant::attach(*t.table, t.file.get());
  EXPECT_EQ(refused.error(), errc::limit_reached);
  EXPECT_FALSE(held[1].detach());
  Result<Participant> again = Participant::attach(*t.table, t.file.get());
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->id(), (ParticipantId{1, 2}));
}

TEST(Participant, GenerationWrapsToOneSkippingZero) {
  TableFile t(2);
  t.slot_word(0).store(ParticipantId::kMaxGeneration);
  Participant observer_first = t.attach();  // takes slot 0: max -> 1
  EXPECT_EQ(observer_first.id(), (ParticipantId{0, 1}));
  EXPECT_NE(observer_first.id().pack(), 0u);
  Participant other = t.attach();
  // The previous id of slot 0 (generation max) lies behind generation 1 on the ring: dead.
  EXPECT_FALSE(other.is_alive(ParticipantId{0, ParticipantId::kMaxGeneration}).value());
}

TEST(Participant, IdAheadOfAHeldSlotsGenerationReadsAliveAndFarBehindReadsDead) {
  TableFile t(2);
  Participant a = t.attach();
  Participant b = t.attach();
  // An id ahead of the word (as a stale read would show it): conservative, alive.
  EXPECT_TRUE(b.is_alive(ParticipantId{0, 2}).value());
  // The word moved past the id: a later attach took the slot, so the id's owner let go.
  t.slot_word(0).store(10);
  EXPECT_FALSE(b.is_alive(ParticipantId{0, 9}).value());
  EXPECT_FALSE(b.is_alive(ParticipantId{0, 1}).value());
}

TEST(Participant, CorruptSlotWordIsReportedNotTrusted) {
  TableFile t(2);
  Participant a = t.attach();
  Participant b = t.attach();
  t.slot_word(0).store(0xffffffff);
  EXPECT_EQ(b.is_alive(ParticipantId{0, 1}).error(), errc::corrupt_state);
  EXPECT_EQ(b.for_each_participant([](ParticipantId, bool) {}), errc::corrupt_state);
  EXPECT_FALSE(a.detach());
  EXPECT_EQ(Participant::attach(*t.table, t.file.get()).error(), errc::corrupt_state);
}

TEST(Participant, InvalidArgumentsAreRefused) {
  TableFile t(2);
  EXPECT_EQ(Participant::attach(*t.table, -1).error(), errc::invalid_argument);
  EXPECT_EQ(Participant::attach(*t.table, t.file.get(), -1).error(), errc::invalid_argument);
  Participant a = t.attach();
  EXPECT_EQ(a.is_alive(ParticipantId{2, 1}).error(), errc::invalid_argument);  // slot >= capacity
  EXPECT_EQ(a.is_alive(ParticipantId{1, 0}).error(), errc::invalid_argument);  // generation 0
  Participant detached;
  EXPECT_EQ(detached.is_alive(a.id()).error(), errc::invalid_argument);
  EXPECT_EQ(detached.for_each_participant([](ParticipantId, bool) {}), errc::invalid_argument);
}

TEST(Participant, LockBaseMovesTheLockBytes) {
  TableFile t(2);
  Participant a = t.attach(4096);
  EXPECT_EQ(a.id().slot, 0u);
  // Seen through the table file's own descriptor (another description): byte 4096 is held.
  EXPECT_TRUE(sys::ofd_locked_by_other(t.file.get(), 4096, 1).value());
  EXPECT_FALSE(sys::ofd_locked_by_other(t.file.get(), 0, 1).value());
  EXPECT_FALSE(sys::ofd_locked_by_other(t.file.get(), 4097, 1).value());
}

TEST(Participant, MoveTransfersTheAttachmentAndDestructionDetaches) {
  TableFile t(2);
  Participant observer = t.attach();
  ParticipantId id;
  {
    Participant a = t.attach();
    id = a.id();
    Participant b = std::move(a);
    EXPECT_FALSE(a.attached());  // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(b.id(), id);
    EXPECT_TRUE(observer.is_alive(id).value());
    Participant c;
    c = std::move(b);
    EXPECT_TRUE(observer.is_alive(id).value());
  }
  EXPECT_FALSE(observer.is_alive(id).value());
}

TEST(Participant, EnumerationVisitsEveryUsedSlotWithItsLiveness) {
  TableFile t(8);
  Participant a = t.attach();
  Participant b = t.attach();
  Participant c = t.attach();
  ParticipantId b_id = b.id();
  EXPECT_FALSE(b.detach());
  std::vector<std::pair<ParticipantId, bool>> seen;
  EXPECT_FALSE(
      a.for_each_participant([&](ParticipantId id, bool alive) { seen.emplace_back(id, alive); }));
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0], std::make_pair(a.id(), true));
  EXPECT_EQ(seen[1], std::make_pair(b_id, false));
  EXPECT_EQ(seen[2], std::make_pair(c.id(), true));
}

TEST(Liveness, OwnerRecordIsTheFirstLiveAttachment) {
  EXPECT_EQ(detail::this_process_owner_record(), (OwnerRecord{0, 0}));
  TableFile t(4);
  TableFile other_table(4);
  {
    Participant first = t.attach();
    Participant second = other_table.attach();
    EXPECT_EQ(detail::this_process_owner_record(),
              (OwnerRecord{t.table->tag(), first.id().pack()}));
    EXPECT_FALSE(first.detach());
    EXPECT_EQ(detail::this_process_owner_record(),
              (OwnerRecord{other_table.table->tag(), second.id().pack()}));
  }
  EXPECT_EQ(detail::this_process_owner_record(), (OwnerRecord{0, 0}));
}

TEST(Liveness, OwnerKnownDeadOnlyForADeadParticipantOfAnAttachedTable) {
  TableFile t(4);
  TableFile unattached(4);
  EXPECT_FALSE(detail::owner_known_dead(OwnerRecord{0, 0}));
  Participant me = t.attach();
  Participant peer = t.attach();
  OwnerRecord mine = detail::this_process_owner_record();
  OwnerRecord peers{t.table->tag(), peer.id().pack()};
  EXPECT_FALSE(detail::owner_known_dead(mine));
  EXPECT_FALSE(detail::owner_known_dead(peers));
  EXPECT_FALSE(peer.detach());
  EXPECT_TRUE(detail::owner_known_dead(peers));
  EXPECT_FALSE(detail::owner_known_dead(OwnerRecord{unattached.table->tag(), peers.participant}));
  EXPECT_FALSE(detail::owner_known_dead(OwnerRecord{t.table->tag(), 0}));
  EXPECT_FALSE(detail::owner_known_dead(OwnerRecord{t.table->tag(), (1u << 12) | 4u}));  // slot 4
  EXPECT_FALSE(me.detach());
  EXPECT_FALSE(detail::owner_known_dead(peers));  // no longer attached: unknown
}

TEST(Participant, ConcurrentAttachersNeverShareASlot) {
  constexpr std::uint32_t kCapacity = 4;
  constexpr int kThreads = 6;
  TableFile t(kCapacity);
  std::atomic<int> holders[kCapacity] = {};
  std::atomic<int> violations{0};
  std::atomic<int> attaches{0};
  std::atomic<int> unexpected_errors{0};
  const int rounds = 200;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      for (int round = 0; round < rounds; ++round) {
        Result<Participant> attached = Participant::attach(*t.table, t.file.get());
        if (!attached) {
          if (attached.error() != errc::limit_reached) unexpected_errors.fetch_add(1);
          continue;
        }
        std::uint32_t slot = attached->id().slot;
        if (holders[slot].fetch_add(1) != 0) violations.fetch_add(1);
        if (!attached->is_alive(attached->id()).value()) violations.fetch_add(1);
        (void)detail::owner_known_dead(detail::this_process_owner_record());
        holders[slot].fetch_sub(1);
        if (attached->detach()) unexpected_errors.fetch_add(1);
        attaches.fetch_add(1);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(violations.load(), 0);
  EXPECT_EQ(unexpected_errors.load(), 0);
  EXPECT_GT(attaches.load(), 0);
  Participant last = t.attach();
  std::uint32_t total = 0;
  for (std::uint32_t slot = 0; slot < kCapacity; ++slot) total += t.slot_word(slot).load();
  EXPECT_EQ(total, static_cast<std::uint32_t>(attaches.load()) + 1);  // one bump per attach
}

}  // namespace
}  // namespace xproc::sync
