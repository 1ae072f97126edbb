#include "xproc/sys/error.h"

namespace xproc {
namespace {

class ErrorCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "xproc"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::ok:
        return "success";
      case errc::owner_died:
        return "the previous owner died holding the lock";
      case errc::not_recoverable:
        return "the lock is not recoverable: an owner died and the state was never repaired";
      case errc::timed_out:
        return "the deadline passed";
      case errc::would_block:
        return "the operation would block";
      case errc::deadlock:
        return "the calling thread already holds the lock";
      case errc::not_owner:
        return "the calling thread does not hold the lock";
      case errc::peer_dead:
        return "the peer process has died";
      case errc::invalid_argument:
        return "invalid argument";
      case errc::limit_reached:
        return "a fixed capacity is exhausted";
      case errc::corrupt_state:
        return "a shared word holds a value no correct participant writes";
      case errc::permission_denied:
        return "permission denied";
      case errc::not_supported:
        return "not supported by this kernel";
      case errc::message_too_large:
        return "message larger than the channel's maximum";
      case errc::layout_mismatch:
        return "shared layout from an incompatible xproc build";
      case errc::corrupt_segment:
        return "corrupt shared-memory segment";
      case errc::not_found:
        return "no such object";
      case errc::already_exists:
        return "an object of that name exists already";
      case errc::wrong_kind:
        return "the object is not of the kind asked for";
      case errc::bad_descriptor:
        return "a bulk descriptor its issuer never issued (forged, foreign or out of range)";
      case errc::already_returned:
        return "a loan or transfer completed a second time";
      case errc::cancelled:
        return "the operation was cancelled";
    }
    return "unknown xproc error " + std::to_string(value);
  }

  std::error_condition default_error_condition(int value) const noexcept override {
    switch (static_cast<errc>(value)) {
      case errc::timed_out:
        return std::errc::timed_out;
      case errc::would_block:
        return std::errc::resource_unavailable_try_again;
      case errc::deadlock:
        return std::errc::resource_deadlock_would_occur;
      case errc::not_owner:
        return std::errc::operation_not_permitted;
      case errc::owner_died:
        return std::errc::owner_dead;
      case errc::not_recoverable:
        return std::errc::state_not_recoverable;
      case errc::invalid_argument:
        return std::errc::invalid_argument;
      case errc::permission_denied:
        return std::errc::permission_denied;
      case errc::not_supported:
        return std::errc::function_not_supported;
      case errc::message_too_large:
        return std::errc::message_size;
      case errc::not_found:
        return std::errc::no_such_file_or_directory;
      case errc::already_exists:
        return std::errc::file_exists;
      case errc::cancelled:
        return std::errc::operation_canceled;
      default:
        return {value, *this};
    }
  }
};

}  // namespace

const char* errc_name(errc e) noexcept {
  switch (e) {
    case errc::ok:
      return "ok";
    case errc::owner_died:
      return "owner_died";
    case errc::not_recoverable:
      return "not_recoverable";
    case errc::timed_out:
      return "timed_out";
    case errc::would_block:
      return "would_block";
    case errc::deadlock:
      return "deadlock";
    case errc::not_owner:
      return "not_owner";
    case errc::peer_dead:
      return "peer_dead";
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::limit_reached:
      return "limit_reached";
    case errc::corrupt_state:
      return "corrupt_state";
    case errc::permission_denied:
      return "permission_denied";
    case errc::not_supported:
      return "not_supported";
    case errc::message_too_large:
      return "message_too_large";
    case errc::layout_mismatch:
      return "layout_mismatch";
    case errc::corrupt_segment:
      return "corrupt_segment";
    case errc::not_found:
      return "not_found";
    case errc::already_exists:
      return "already_exists";
    case errc::wrong_kind:
      return "wrong_kind";
    case errc::bad_descriptor:
      return "bad_descriptor";
    case errc::already_returned:
      return "already_returned";
    case errc::cancelled:
      return "cancelled";
  }
  return nullptr;
}

const std::error_category& error_category() noexcept {
  static const ErrorCategory category;
  return category;
}

}  // namespace xproc
