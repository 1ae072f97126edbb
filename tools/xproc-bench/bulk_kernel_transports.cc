// Bulk rows through the kernel's byte streams, 1 producer -> 1 consumer:
//
//   pipe           pipe2, capacity raised to 1 MiB (F_SETPIPE_SZ, up to pipe-max-size); the
//                  producer write()s its private buffer, the consumer read()s into its own: 2
//                  copies
//   pipe-vmsplice  the same pipe, but the producer vmsplice()s its pages (the pipe references
//                  them; no copy in) and the consumer read()s them out: 1 copy. Pages may not be
//                  rewritten while the pipe still references them: the producer rotates over
//                  R = ceil(slots / pages per payload) + 2 page-aligned buffers (slots = capacity
//                  / page; a spliced buffer takes at least one slot per page it spans). When
//                  buffer j is reused, the R-1 payloads spliced after it (more slots than the
//                  pipe has) were all accepted by the pipe, so every page of j had left it
//                  (FIFO): the reader had copied it out.
//   unix-stream    socketpair(AF_UNIX, SOCK_STREAM), SO_SNDBUF/SO_RCVBUF asked for 4 MiB (the
//                  kernel caps them at wmem_max/rmem_max): 2 copies
// A byte stream keeps no payload boundaries between several readers: 1 -> 1 only.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "bulk_transport.h"
#include "transport.h"

namespace xproc::bench {
namespace {

enum class Kind { pipe, vmsplice, socket };

constexpr int kPipeBytes = 1 << 20;
constexpr int kSocketBytes = 4 << 20;

class StreamLink final : public BulkLink {
 public:
  StreamLink(Kind kind, std::size_t payload) : kind_(kind), payload_(payload) {
    int fds[2];
    if (kind == Kind::socket) {
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("socketpair");
      for (int fd : fds) {
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kSocketBytes, sizeof kSocketBytes);
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kSocketBytes, sizeof kSocketBytes);
      }
    } else {
      if (pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
      (void)fcntl(fds[1], F_SETPIPE_SZ, kPipeBytes);  // best effort: the capacity is read back
      int capacity = fcntl(fds[1], F_GETPIPE_SZ);
      if (capacity <= 0) throw_errno("F_GETPIPE_SZ");
      capacity_ = static_cast<std::size_t>(capacity);
    }
    read_fd_ = fds[0];
    write_fd_ = fds[1];
  }
  ~StreamLink() override {
    close(read_fd_);
    close(write_fd_);
  }

  int warmup_messages() const override { return static_cast<int>(rotation()); }

  std::unique_ptr<BulkSender> open_sender() override;
  std::unique_ptr<BulkReceiver> open_receiver(int) override;

  // vmsplice: the pipe holds at most capacity / page slots, and a page-aligned buffer takes at
  // least ceil(payload / page) of them, so after R - 1 = ceil(slots / that) + 1 later buffers
  // were spliced, none of buffer j's pages can still be in the pipe.
  std::size_t rotation() const {
    if (kind_ != Kind::vmsplice) return 1;
    const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    const std::size_t slots = capacity_ / page;
    const std::size_t per_payload = (payload_ + page - 1) / page;
    return (slots + per_payload - 1) / per_payload + 2;
  }
  Kind kind() const { return kind_; }
  std::size_t payload() const { return payload_; }
  int read_fd() const { return read_fd_; }
  int write_fd() const { return write_fd_; }

 private:
  Kind kind_;
  std::size_t payload_;
  std::size_t capacity_ = 0;
  int read_fd_ = -1;
  int write_fd_ = -1;
};

class StreamSender final : public BulkSender {
 public:
  explicit StreamSender(const StreamLink& link) : link_(link) {
    for (std::size_t i = 0; i < link.rotation(); ++i) buffers_.emplace_back(link.payload());
  }
  std::span<std::byte> prepare() override { return buffers_[next_].span(); }
  void commit() override {
    const PrivateBuffer& buffer = buffers_[next_];
    next_ = (next_ + 1) % buffers_.size();
    if (link_.kind() != Kind::vmsplice) {
      write_all(link_.write_fd(), buffer.data(), buffer.size());
      return;
    }
    iovec range{buffer.data(), buffer.size()};
    while (range.iov_len > 0) {
      ssize_t spliced = vmsplice(link_.write_fd(), &range, 1, 0);
      if (spliced < 0) {
        if (errno == EINTR) continue;
        throw_errno("vmsplice");
      }
      range.iov_base = static_cast<std::byte*>(range.iov_base) + spliced;
      range.iov_len -= static_cast<std::size_t>(spliced);
    }
  }

 private:
  const StreamLink& link_;
  std::vector<PrivateBuffer> buffers_;
  std::size_t next_ = 0;
};

class StreamReceiver final : public BulkReceiver {
 public:
  explicit StreamReceiver(const StreamLink& link) : link_(link), buffer_(link.payload()) {}
  std::span<const std::byte> receive() override {
    read_all(link_.read_fd(), buffer_.data(), buffer_.size());
    return buffer_.span();
  }
  void release() override {}

 private:
  const StreamLink& link_;
  PrivateBuffer buffer_;
};

std::unique_ptr<BulkSender> StreamLink::open_sender() {
  return std::make_unique<StreamSender>(*this);
}
std::unique_ptr<BulkReceiver> StreamLink::open_receiver(int) {
  return std::make_unique<StreamReceiver>(*this);
}

class StreamTransport final : public BulkTransport {
 public:
  explicit StreamTransport(Kind kind) : kind_(kind) {}
  std::string name() const override {
    return kind_ == Kind::pipe ? "pipe" : kind_ == Kind::vmsplice ? "pipe-vmsplice" : "unix-stream";
  }
  std::string description() const override {
    switch (kind_) {
      case Kind::pipe:
        return "pipe (1 MiB capacity): write() in, read() out (2 copies)";
      case Kind::vmsplice:
        return "pipe (1 MiB): producer vmsplice()s rotating page-aligned buffers, read() out (1 "
               "copy)";
      case Kind::socket:
        return "socketpair(AF_UNIX, SOCK_STREAM), 4 MiB buffers asked (2 copies)";
    }
    return {};
  }
  std::string unsupported(const BulkShape& shape) const override {
    if (shape.consumers != 1) return "a byte stream: 1 consumer only";
    return {};
  }
  std::unique_ptr<BulkLink> create_link(const BulkShape& shape) override {
    return std::make_unique<StreamLink>(kind_, shape.payload);
  }

 private:
  Kind kind_;
};

const BulkTransportRegistration pipe_registration{
    40, [] { return std::make_unique<StreamTransport>(Kind::pipe); }};
const BulkTransportRegistration vmsplice_registration{
    41, [] { return std::make_unique<StreamTransport>(Kind::vmsplice); }};
const BulkTransportRegistration socket_registration{
    50, [] { return std::make_unique<StreamTransport>(Kind::socket); }};

}  // namespace
}  // namespace xproc::bench
