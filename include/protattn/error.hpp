// protattn: errors raised by the library (programs turn them into messages and exit codes).
#pragma once
#include <stdexcept>
#include <string>

namespace protattn {

// Every failure the library reports: bad input (file, line, what was expected), unsupported
// parameters, engine failures. The message is complete and meant for a user.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace protattn
