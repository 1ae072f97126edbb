// Row "pipe": an anonymous pipe(2), default capacity (64 KiB), blocking read/write.
// Several senders/receivers only for messages up to PIPE_BUF (4096 B): the kernel writes those
// atomically, so a reader of exactly one message size never sees a torn or interleaved record.
#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include "transport.h"

namespace xproc::bench {
namespace {

class PipeSender final : public Sender {
 public:
  explicit PipeSender(int fd) : fd_(fd) {}
  void send(const std::byte* data, std::size_t size) override { write_all(fd_, data, size); }

 private:
  int fd_;
};

class PipeReceiver final : public Receiver {
 public:
  PipeReceiver(int fd, std::size_t size) : fd_(fd), size_(size) {}
  std::size_t receive(std::byte* data, std::size_t capacity) override {
    if (capacity < size_) throw std::runtime_error("pipe: receive buffer too small");
    read_all(fd_, data, size_);
    return size_;
  }

 private:
  int fd_;
  std::size_t size_;
};

class PipeLink final : public Link {
 public:
  explicit PipeLink(const LinkShape& shape) : size_(shape.message_size) {
    if (pipe2(fds_, O_CLOEXEC) != 0) throw_errno("pipe2");
  }
  ~PipeLink() override {
    close(fds_[0]);
    close(fds_[1]);
  }
  std::unique_ptr<Sender> open_sender(int) override {
    return std::make_unique<PipeSender>(fds_[1]);
  }
  std::unique_ptr<Receiver> open_receiver(int) override {
    return std::make_unique<PipeReceiver>(fds_[0], size_);
  }

 private:
  int fds_[2] = {-1, -1};
  std::size_t size_;
};

class PipeTransport final : public Transport {
 public:
  std::string name() const override { return "pipe"; }
  std::string description() const override { return "anonymous pipe, default capacity"; }
  std::string unsupported(const LinkShape& shape) const override {
    if ((shape.senders > 1 || shape.receivers > 1) && shape.message_size > PIPE_BUF)
      return "several senders/receivers need messages <= PIPE_BUF (atomic writes)";
    return {};
  }
  std::unique_ptr<Link> create_link(const LinkShape& shape) override {
    return std::make_unique<PipeLink>(shape);
  }
};

const TransportRegistration registration{30, [] { return std::make_unique<PipeTransport>(); }};

}  // namespace
}  // namespace xproc::bench
