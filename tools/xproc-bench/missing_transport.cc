// Rows for transports whose library was missing at configure time: they stay in the table,
// marked unsupported with the reason, instead of silently disappearing.
#include "transport.h"

namespace xproc::bench {
namespace {

class MissingTransport final : public Transport {
 public:
  MissingTransport(std::string name, std::string reason)
      : name_(std::move(name)), reason_(std::move(reason)) {}
  std::string name() const override { return name_; }
  std::string description() const override { return "not built: " + reason_; }
  std::string unsupported(const LinkShape&) const override { return "not built: " + reason_; }
  std::unique_ptr<Link> create_link(const LinkShape&) override { return nullptr; }

 private:
  std::string name_;
  std::string reason_;
};

#ifdef XPROC_BENCH_NO_ICEORYX
const TransportRegistration iceoryx{
    70, [] { return std::make_unique<MissingTransport>("iceoryx", XPROC_BENCH_NO_ICEORYX); }};
#endif
#ifdef XPROC_BENCH_NO_BOOST
const TransportRegistration boost{
    60, [] { return std::make_unique<MissingTransport>("boost-mq", XPROC_BENCH_NO_BOOST); }};
#endif

}  // namespace
}  // namespace xproc::bench
