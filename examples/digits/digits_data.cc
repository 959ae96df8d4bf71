#include "digits_data.h"

#include <zlib.h>

#include <memory>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace digits {

DigitsData load_digits(const std::string& path) {
  std::unique_ptr<gzFile_s, decltype(&gzclose)> file(gzopen(path.c_str(), "rb"), &gzclose);
  if (!file) throw std::runtime_error("cannot open digits data " + path + "; pass --data PATH/digits.csv.gz");
  std::vector<float> pixels;
  std::vector<int64_t> labels;
  char line[1024];
  for (int number = 1; gzgets(file.get(), line, sizeof(line)) != nullptr; ++number) {
    std::istringstream fields(line);
    std::vector<float> values;
    for (std::string field; std::getline(fields, field, ',');) values.push_back(std::stof(field));
    if (values.size() != 65) {
      throw std::runtime_error(path + ":" + std::to_string(number) + ": expected 65 comma-separated values, got " +
                               std::to_string(values.size()));
    }
    for (int i = 0; i < 64; ++i) pixels.push_back(values[i] / 16.0f);
    labels.push_back(static_cast<int64_t>(values[64]));
  }
  const int64_t n = static_cast<int64_t>(labels.size());
  if (n == 0) throw std::runtime_error(path + " holds no rows");
  return {torch::from_blob(pixels.data(), {n, 64}, torch::kFloat32).clone(),
          torch::from_blob(labels.data(), {n}, torch::kInt64).clone()};
}

}  // namespace digits
