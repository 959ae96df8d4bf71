// Secrets: random values a launcher hands out (per-job secrets, bearer tokens) and the one
// way they are compared. Random bytes come from OpenSSL's CSPRNG, never a seeded PRNG;
// comparisons take the same time wherever the first differing byte is, so a caller who
// times the answers learns nothing about the secret.
#pragma once

#include <string>
#include <string_view>

namespace fabric::launcher {

// The gRPC metadata key that carries a rank's per-job secret on every RendezvousService
// call (lower case: gRPC metadata keys are).
inline constexpr const char* kJobSecretMetadata = "fabricd-job-secret";
// The environment variable fabricd passes the secret to ranks in.
inline constexpr const char* kJobSecretVariable = "FABRICD_JOB_SECRET";

// `bytes` random bytes as 2*bytes lower-case hex digits. Throws std::runtime_error when the
// CSPRNG fails (it never falls back to anything weaker).
std::string random_secret(int bytes = 32);

// Whether a and b are equal, in time that depends on neither's content. The inputs are
// hashed (SHA-256) first, so that not even their lengths show.
bool secrets_equal(std::string_view a, std::string_view b);

}  // namespace fabric::launcher
