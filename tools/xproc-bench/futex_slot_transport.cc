// Row "futex-slot": the blocking hand-off floor. One message slot in MAP_SHARED memory guarded
// by one futex word; a sender fills the slot and wakes the sleeping receivers, a receiver empties
// it and wakes the sleeping senders (all of them: the woken re-check and re-announce, simple and
// correct, the naive floor). No spinning at all: every hand-off between two processes that
// wait costs a futex wake-up, which is what any blocking transport pays at least.
// Several senders and receivers are fine: each claims the slot with a CAS.
//
// Shared layout (offsets from the mapping start):
//   0   std::atomic<uint32_t> state   (bit table below)
//   4   uint32_t size                 (written while the writer holds the slot)
//   64  message bytes
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "transport.h"
#include "xproc/sys/futex.h"

namespace xproc::bench {
namespace {

// state bits 0..1: the phase; 2: a sender sleeps; 3: a receiver sleeps.
constexpr std::uint32_t kPhaseMask = 0x3;
constexpr std::uint32_t kEmpty = 0;    // a sender may claim it
constexpr std::uint32_t kWriting = 1;  // a sender copies in
constexpr std::uint32_t kFull = 2;     // a receiver may claim it
constexpr std::uint32_t kReading = 3;  // a receiver copies out
constexpr std::uint32_t kSendersWaiting = 0x4;
constexpr std::uint32_t kReceiversWaiting = 0x8;
// futex bitsets, so that a wake reaches only the side that can proceed.
constexpr std::uint32_t kSenderBitset = 1;
constexpr std::uint32_t kReceiverBitset = 2;
constexpr std::size_t kDataOffset = 64;

struct SlotHeader {
  std::atomic<std::uint32_t> state;
  std::uint32_t size;
};
static_assert(sizeof(SlotHeader) == 8 && std::atomic<std::uint32_t>::is_always_lock_free);

constexpr auto kShared = sys::FutexScope::process_shared;

// Moves the slot from phase `from` to `to`, sleeping (announced by `waiting_bit`) while it is in
// another phase. acquire on success: pairs with the release that put the slot in `from`, so
// the other side's copy (in or out) happened before ours.
void claim(std::atomic<std::uint32_t>& state, std::uint32_t from, std::uint32_t to,
           std::uint32_t waiting_bit, std::uint32_t bitset) {
  // relaxed: only a starting guess for the CAS below.
  std::uint32_t s = state.load(std::memory_order_relaxed);
  for (;;) {
    if ((s & kPhaseMask) == from) {
      // acquire: see above; relaxed on failure: we only retry with the fresh value.
      if (state.compare_exchange_weak(s, (s & ~kPhaseMask) | to, std::memory_order_acquire,
                                      std::memory_order_relaxed))
        return;
      continue;
    }
    if ((s & waiting_bit) == 0) {
      // relaxed: the bit orders nothing; the futex word compare in the kernel closes the race.
      if (!state.compare_exchange_weak(s, s | waiting_bit, std::memory_order_relaxed,
                                       std::memory_order_relaxed))
        continue;
      s |= waiting_bit;
    }
    (void)sys::futex_wait(state, s, kShared, std::nullopt, bitset);
    // relaxed: re-read after a wake-up (or a changed word); the CAS above orders the data.
    s = state.load(std::memory_order_relaxed);
  }
}

// Puts the slot in phase `to`, clears the other side's waiting bit and wakes that side if set.
void publish(std::atomic<std::uint32_t>& state, std::uint32_t to, std::uint32_t other_bit,
             std::uint32_t other_bitset) {
  std::uint32_t s = state.load(std::memory_order_relaxed);  // relaxed: CAS guess
  // release: publishes our copy (in or out); pairs with the acquire CAS in claim().
  while (!state.compare_exchange_weak(s, (s & ~(kPhaseMask | other_bit)) | to,
                                      std::memory_order_release, std::memory_order_relaxed)) {
  }
  if ((s & other_bit) != 0) (void)sys::futex_wake(state, INT_MAX, kShared, other_bitset);
}

class SlotSender final : public Sender {
 public:
  SlotSender(SlotHeader* header, std::byte* data) : header_(header), data_(data) {}
  void send(const std::byte* data, std::size_t size) override {
    claim(header_->state, kEmpty, kWriting, kSendersWaiting, kSenderBitset);
    std::memcpy(data_, data, size);
    header_->size = static_cast<std::uint32_t>(size);
    publish(header_->state, kFull, kReceiversWaiting, kReceiverBitset);
  }

 private:
  SlotHeader* header_;
  std::byte* data_;
};

class SlotReceiver final : public Receiver {
 public:
  SlotReceiver(SlotHeader* header, std::byte* data, std::size_t capacity)
      : header_(header), data_(data), slot_capacity_(capacity) {}
  std::size_t receive(std::byte* data, std::size_t capacity) override {
    claim(header_->state, kFull, kReading, kReceiversWaiting, kReceiverBitset);
    std::size_t size = header_->size;
    if (size > slot_capacity_ || size > capacity) throw std::runtime_error("futex-slot: bad size");
    std::memcpy(data, data_, size);
    publish(header_->state, kEmpty, kSendersWaiting, kSenderBitset);
    return size;
  }

 private:
  SlotHeader* header_;
  std::byte* data_;
  std::size_t slot_capacity_;
};

class SlotLink final : public Link {
 public:
  explicit SlotLink(const LinkShape& shape)
      : capacity_(shape.message_size), memory_(kDataOffset + shape.message_size) {
    header_ = new (memory_.data()) SlotHeader{};  // zero-filled: kEmpty, nobody waiting
  }
  std::unique_ptr<Sender> open_sender(int) override {
    return std::make_unique<SlotSender>(header_, data());
  }
  std::unique_ptr<Receiver> open_receiver(int) override {
    return std::make_unique<SlotReceiver>(header_, data(), capacity_);
  }

 private:
  std::byte* data() { return static_cast<std::byte*>(memory_.data()) + kDataOffset; }
  std::size_t capacity_;
  SharedMapping memory_;
  SlotHeader* header_;
};

class SlotTransport final : public Transport {
 public:
  std::string name() const override { return "futex-slot"; }
  std::string description() const override {
    return "one shared-memory slot + futex, no spinning (blocking hand-off floor)";
  }
  std::string unsupported(const LinkShape&) const override { return {}; }
  std::unique_ptr<Link> create_link(const LinkShape& shape) override {
    return std::make_unique<SlotLink>(shape);
  }
};

const TransportRegistration registration{20, [] { return std::make_unique<SlotTransport>(); }};

}  // namespace
}  // namespace xproc::bench
