#include "security/secrets.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>
#include <stdexcept>
#include <vector>

namespace fabric::launcher {

namespace {

using Digest = std::array<unsigned char, 32>;

Digest sha256(std::string_view text) {
  Digest digest{};
  unsigned int length = 0;
  if (EVP_Digest(text.data(), text.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1 ||
      length != digest.size()) {
    throw std::runtime_error("SHA-256 failed in OpenSSL");
  }
  return digest;
}

}  // namespace

std::string random_secret(int bytes) {
  std::vector<unsigned char> raw(static_cast<std::size_t>(bytes));
  if (RAND_bytes(raw.data(), bytes) != 1) throw std::runtime_error("OpenSSL's random generator failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text;
  text.reserve(raw.size() * 2);
  for (const unsigned char byte : raw) {
    text += kHex[byte >> 4];
    text += kHex[byte & 0xf];
  }
  return text;
}

bool secrets_equal(std::string_view a, std::string_view b) {
  const Digest da = sha256(a);
  const Digest db = sha256(b);
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

}  // namespace fabric::launcher
