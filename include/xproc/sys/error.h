#pragma once
// xproc's error codes: one enumeration for every layer, as a std::error_code category.
//
// Every fallible xproc call reports one of these (or a std::errc from the operating system) in a
// std::error_code. Each value names a cause, never a mechanism: a caller that sees `owner_died`
// knows what happened without knowing how xproc detects it.
// Thread- and process-safety: the category is a constant object; everything here is reentrant.

#include <string>
#include <system_error>

namespace xproc {

enum class errc : int {
  ok = 0,
  owner_died,         // got a lock whose previous owner died holding it: repair, then consistent()
  not_recoverable,    // a lock left inconsistent by an owner that died: unusable for good
  timed_out,          // the deadline passed before the operation could complete
  would_block,        // a try-operation could not complete without waiting
  deadlock,           // the calling thread already holds this lock (error-checking kinds)
  not_owner,          // unlocking or repairing a lock the calling thread does not hold
  peer_dead,          // the process on the other side of a wait has died
  invalid_argument,   // a parameter out of range or a call not allowed in this state
  limit_reached,      // a fixed capacity is exhausted (recursion depth, table slots, counters)
  corrupt_state,      // a shared word holds a value no correct participant writes
  permission_denied,  // the operating system refused the operation
  not_supported,      // the kernel lacks a feature this operation needs
  message_too_large,  // a message larger than the channel's maximum: refused, never truncated
  layout_mismatch,    // a shared layout (segment, channel) written by an incompatible xproc build
  corrupt_segment,    // a segment whose header or body no correct xproc writer produces
  not_found,          // no object (segment, endpoint) of that name exists
  already_exists,     // an object of that name exists already
  wrong_kind,         // an object of that name exists, but it is not of the kind asked for
  bad_descriptor,     // a bulk descriptor (loan, transfer) its issuer never issued: forged, foreign
                      // or out of range (descriptors are untrusted input)
  already_returned,   // a loan returned, or a transfer completed, a second time
  cancelled,          // the operation was cancelled by its caller before it completed (rpc calls)
};

const std::error_category& error_category() noexcept;

// The enumerator's own name ("peer_dead"), for machine-readable output; nullptr for a value
// that is no enumerator.
const char* errc_name(errc e) noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace xproc

template <>
struct std::is_error_code_enum<xproc::errc> : std::true_type {};
