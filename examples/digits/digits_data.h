// scikit-learn's handwritten digits (1797 8x8 images, labels 0-9), read from the gzipped
// CSV that the scikit-learn wheel ships: 64 pixel values (0-16) then the label, per line.
#pragma once

#include <torch/torch.h>

#include <string>

namespace digits {

struct DigitsData {
  torch::Tensor images;  // [N, 64] float32, scaled to [0, 1]
  torch::Tensor labels;  // [N] int64
};

// Throws std::runtime_error naming the file and line if it cannot be read or parsed.
DigitsData load_digits(const std::string& csv_gz_path);

// A LibTorch dataset over rows of DigitsData; `rows` selects the split.
class DigitsDataset : public torch::data::datasets::Dataset<DigitsDataset> {
 public:
  DigitsDataset(DigitsData data, torch::Tensor rows) : data_(std::move(data)), rows_(std::move(rows)) {}
  torch::data::Example<> get(size_t index) override {
    const int64_t row = rows_[static_cast<int64_t>(index)].item<int64_t>();
    return {data_.images[row], data_.labels[row]};
  }
  std::optional<size_t> size() const override { return static_cast<size_t>(rows_.size(0)); }

 private:
  DigitsData data_;
  torch::Tensor rows_;
};

}  // namespace digits
