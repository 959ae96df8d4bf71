// The exceptions libfabric throws. Every message says what was wrong, the offending
// value, and what to do instead. Catch fabric::Error to handle all of them.
#pragma once

#include <stdexcept>
#include <string>

namespace fabric {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An invalid option or combination of options given to Fabric (Lightning's ValueError /
// MisconfigurationException at construction time).
class ConfigurationError : public Error {
 public:
  using Error::Error;
};

// The API was used in an order or way it does not support: an object set up twice,
// loss.backward() where fabric.backward(loss) is required, bad clip arguments.
class UsageError : public Error {
 public:
  using Error::Error;
};

// A checkpoint could not be written or read: a truncated, corrupt or foreign file, a key
// the caller asked for that the file lacks, or a state dict that does not fit the module.
// Loading never leaves the caller's objects half-updated when this is thrown.
class CheckpointError : public Error {
 public:
  using Error::Error;
};

// A collective operation failed: a peer rank exited, hung past the timeout, or the
// rendezvous never completed. The message names the operation, this rank and the world.
class CollectiveError : public Error {
 public:
  using Error::Error;
};

}  // namespace fabric
