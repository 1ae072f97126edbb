#pragma once
// The bulk mode's seam (`xproc-bench --mode bulk`): bandwidth of large payloads that are really
// produced and consumed. A BulkTransport makes one-way BulkLinks in the parent before fork();
// the producer process opens a BulkSender, each consumer process a BulkReceiver.
//
// Contract (the bulk runner verifies it, so a fast but wrong row cannot win):
// - The producer asks prepare() for where to write the next payload (the transport's own memory:
//   a loaned buffer, a registered private buffer, or a private staging buffer), writes every
//   byte of it, then commit() hands it over (blocking while the transport is full).
// - A consumer's receive() returns one whole payload (blocking while none is there), readable
//   in place until release(); the runner reads and checks every byte before release().
// - Every payload has exactly the run's size; each payload goes to exactly one consumer.
// - flush() (producer, after its last commit) returns once every payload it committed may be
//   reused (completions), so the producer process may exit without tearing a transfer.
// - Errors throw (std::system_error / std::runtime_error); the runner reports them in the row.
// Threads: each end is used by one thread. Processes: create_link() in the parent before fork();
// open_*() in the child that uses the end; the link's destructor in the parent at the end.
// A row that needs one process only (memcpy) says so with single_process(): the runner then
// runs the sender and the receiver alternately in one process.
//
// Adding a row is one file tools/xproc-bench/bulk_<name>.cc with a static
// BulkTransportRegistration (the build globs tools/xproc-bench/*.cc).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace xproc::bench {

struct BulkShape {
  std::size_t payload = 0;  // bytes of every payload, a multiple of 8
  int consumers = 1;        // processes that will call open_receiver(0..consumers-1)
  int id = 0;               // unique per link within the bench process
};

class BulkSender {
 public:
  virtual ~BulkSender() = default;
  virtual std::span<std::byte> prepare() = 0;  // the run's payload size
  virtual void commit() = 0;
  virtual void flush() {}
};

class BulkReceiver {
 public:
  virtual ~BulkReceiver() = default;
  virtual std::span<const std::byte> receive() = 0;
  virtual void release() = 0;
};

class BulkLink {
 public:
  virtual ~BulkLink() = default;
  virtual std::unique_ptr<BulkSender> open_sender() = 0;
  virtual std::unique_ptr<BulkReceiver> open_receiver(int index) = 0;
  // Payloads to move before the measured window, so every buffer of the link has been touched
  // once (page faults of fresh memory are set-up, not bandwidth).
  virtual int warmup_messages() const { return 2; }
};

class BulkTransport {
 public:
  virtual ~BulkTransport() = default;
  virtual std::string name() const = 0;
  virtual std::string description() const = 0;
  // Empty when the transport can carry `shape`; otherwise why not (shown in the table).
  virtual std::string unsupported(const BulkShape& shape) const = 0;
  virtual std::unique_ptr<BulkLink> create_link(const BulkShape& shape) = 0;
  virtual bool single_process() const { return false; }
};

struct BulkTransportRegistration {
  BulkTransportRegistration(int rank, std::function<std::unique_ptr<BulkTransport>()> factory);
};
std::vector<std::unique_ptr<BulkTransport>> make_registered_bulk_transports();

// A monotonically increasing 32-bit counter in MAP_SHARED memory that one process advances and
// another waits on: the hand-off of the raw rows (process_vm_readv, shm-2copy). The waiter spins
// a bounded while, then announces itself and parks on the futex; advance() makes a futex call
// only when a waiter announced itself.
struct HandoffCounter {
  std::atomic<std::uint32_t> value{0};     // futex word: items published so far (wraps)
  std::atomic<std::uint32_t> sleeping{0};  // 1 while the waiter is (about to be) parked

  void advance(std::uint32_t by = 1);
  // Returns once value has reached `target` (wrapping comparison).
  void wait_reach(std::uint32_t target);
  // One load, acquire: pairs with advance's publication.
  std::uint32_t load() const { return value.load(std::memory_order_acquire); }
};

// Maps every page of `range` into this process now, writable (MADV_POPULATE_WRITE, then one
// read and write-back of the same byte per page), so the measured window pays no page faults
// for memory whose use order the bench does not control (a pool's buffers). Contents are not
// changed; call it before the start (nobody may be writing the range).
void prefault(std::span<std::byte> range);

// Page-aligned private anonymous memory, prefaulted (not inherited by fork: allocate it in the
// child).
class PrivateBuffer {
 public:
  PrivateBuffer() = default;
  explicit PrivateBuffer(std::size_t size);
  ~PrivateBuffer();
  PrivateBuffer(PrivateBuffer&& other) noexcept;
  PrivateBuffer& operator=(PrivateBuffer&& other) noexcept;
  PrivateBuffer(const PrivateBuffer&) = delete;
  PrivateBuffer& operator=(const PrivateBuffer&) = delete;
  std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::span<std::byte> span() const { return {data_, size_}; }

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace xproc::bench
