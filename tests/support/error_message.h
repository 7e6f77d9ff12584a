// The message of the remat::Error a test expects `fn` to throw, or
// "(no error)" (which no expectation on a message matches) when it returns.
#pragma once

#include <string>

#include "remat/core/error.h"

namespace remat::testing {

template <typename Fn>
std::string error_message(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace remat::testing
