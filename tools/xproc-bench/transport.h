#pragma once
// The seam of xproc-bench: a Transport creates one-way Links; each process of a run opens its
// end of a Link (a Sender or a Receiver) after fork() and moves whole messages through it.
//
// Contract every transport keeps (the runner verifies it, so a fast but wrong row cannot win):
// - send() copies `size` bytes from the caller's private buffer into the transport and returns
//   once they are queued (it blocks while the queue is full); receive() copies one whole message
//   into the caller's private buffer and returns its size (it blocks while the queue is empty).
// - Message boundaries are preserved; with several senders and receivers (MPMC) every message is
//   delivered to exactly one receiver, whole, and messages of one sender arrive in order.
// - Errors throw (std::system_error or std::runtime_error); the runner reports them in the row.
// Threads: a Link's ends are used by one thread each. Processes: create_link() runs in the
// parent before fork(); open_sender()/open_receiver() run in the child that uses the end; the
// Link's destructor runs in the parent after every child has ended (it unlinks names).
// A transport that blocks forever (a dead peer) is handled by the runner: it kills the children
// of a run that outlives its timeout and reports the row as timed out.
//
// Adding a transport (the xproc Channel, for example) is one file in this folder: implement
// Transport, Link, Sender and Receiver and register the factory with a static
// TransportRegistration (the build globs tools/xproc-bench/*.cc). See pipe_transport.cc.

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace xproc::bench {

// What one Link must carry.
struct LinkShape {
  std::size_t message_size = 0;  // every message of the run has exactly this size
  int senders = 1;               // processes that will call open_sender(0..senders-1)
  int receivers = 1;             // processes that will call open_receiver(0..receivers-1)
  int id = 0;                    // unique per Link within the bench process (for names)
};

class Sender {
 public:
  virtual ~Sender() = default;
  virtual void send(const std::byte* data, std::size_t size) = 0;
};

class Receiver {
 public:
  virtual ~Receiver() = default;
  // Returns the size of the message written to `data` (at most `capacity`).
  virtual std::size_t receive(std::byte* data, std::size_t capacity) = 0;
};

class Link {
 public:
  virtual ~Link() = default;
  virtual std::unique_ptr<Sender> open_sender(int index) = 0;
  virtual std::unique_ptr<Receiver> open_receiver(int index) = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string name() const = 0;         // short, used in --transports and tables
  virtual std::string description() const = 0;  // one line for --list
  // Empty when the transport can carry `shape`; otherwise why not (shown in the table).
  virtual std::string unsupported(const LinkShape& shape) const = 0;
  virtual std::unique_ptr<Link> create_link(const LinkShape& shape) = 0;
  // Called once before the first and after the last run of this transport (daemons).
  // start() returns an empty string on success, otherwise why the transport cannot run.
  virtual std::string start() { return {}; }
  virtual void stop() {}
  // True when a child must leave through exit() (static destructors) instead of _exit().
  virtual bool needs_clean_exit() const { return false; }
};

// Registration: rank orders the rows (lower first); the factory runs once per bench process.
struct TransportRegistration {
  TransportRegistration(int rank, std::function<std::unique_ptr<Transport>()> factory);
};
std::vector<std::unique_ptr<Transport>> make_registered_transports();

// Helpers shared by the transports (transport.cc).
[[noreturn]] void throw_errno(const std::string& what);
void write_all(int fd, const std::byte* data, std::size_t size);  // loops over short writes
void read_all(int fd, std::byte* data, std::size_t size);         // loops; EOF throws
// Anonymous MAP_SHARED memory, inherited across fork(); zero-filled. Throws on failure.
class SharedMapping {
 public:
  explicit SharedMapping(std::size_t size);
  ~SharedMapping();
  SharedMapping(const SharedMapping&) = delete;
  SharedMapping& operator=(const SharedMapping&) = delete;
  void* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace xproc::bench
