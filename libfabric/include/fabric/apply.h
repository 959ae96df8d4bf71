// apply_to_tensors: rebuilds a value with a function applied to every tensor inside it, the
// C++ form of Lightning's apply_to_collection. It looks through torch::data::Example,
// std::vector, std::array, std::pair, std::tuple, std::map, std::unordered_map and
// std::optional, to any depth; every other value is passed through unchanged. Batches,
// forward inputs and outputs go through it to be moved to a device or cast.
#pragma once

#include <torch/data/example.h>
#include <torch/types.h>

#include <array>
#include <map>
#include <optional>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fabric {
namespace detail {

// TensorVisitor<T>::kHasTensors says whether T can hold tensors; apply(value, fn) rebuilds it.
template <typename T, typename = void>
struct TensorVisitor {
  static constexpr bool kHasTensors = false;
  template <typename U, typename Fn>
  static T apply(U&& value, const Fn&) {
    return std::forward<U>(value);
  }
};

template <typename T, typename Fn>
std::decay_t<T> apply_any(T&& value, const Fn& fn) {
  return TensorVisitor<std::decay_t<T>>::apply(std::forward<T>(value), fn);
}

template <>
struct TensorVisitor<torch::Tensor> {
  static constexpr bool kHasTensors = true;
  template <typename Fn>
  static torch::Tensor apply(const torch::Tensor& tensor, const Fn& fn) {
    return tensor.defined() ? fn(tensor) : tensor;
  }
};

template <typename Data, typename Target>
struct TensorVisitor<torch::data::Example<Data, Target>> {
  static constexpr bool kHasTensors =
      TensorVisitor<Data>::kHasTensors || TensorVisitor<Target>::kHasTensors;
  template <typename U, typename Fn>
  static torch::data::Example<Data, Target> apply(U&& example, const Fn& fn) {
    return {apply_any(std::forward<U>(example).data, fn),
            apply_any(std::forward<U>(example).target, fn)};
  }
};

template <typename Data>
struct TensorVisitor<torch::data::Example<Data, torch::data::example::NoTarget>> {
  static constexpr bool kHasTensors = TensorVisitor<Data>::kHasTensors;
  template <typename U, typename Fn>
  static torch::data::Example<Data, torch::data::example::NoTarget> apply(U&& example, const Fn& fn) {
    return {apply_any(std::forward<U>(example).data, fn)};
  }
};

template <typename Element, typename Alloc>
struct TensorVisitor<std::vector<Element, Alloc>> {
  static constexpr bool kHasTensors = TensorVisitor<Element>::kHasTensors;
  template <typename U, typename Fn>
  static std::vector<Element, Alloc> apply(U&& values, const Fn& fn) {
    std::vector<Element, Alloc> result;
    result.reserve(values.size());
    for (auto&& value : values) result.push_back(apply_any(std::forward<decltype(value)>(value), fn));
    return result;
  }
};

template <typename Element, std::size_t N>
struct TensorVisitor<std::array<Element, N>> {
  static constexpr bool kHasTensors = TensorVisitor<Element>::kHasTensors;
  template <typename U, typename Fn>
  static std::array<Element, N> apply(U&& values, const Fn& fn) {
    std::array<Element, N> result;
    for (std::size_t i = 0; i < N; ++i) result[i] = apply_any(std::forward<U>(values)[i], fn);
    return result;
  }
};

template <typename First, typename Second>
struct TensorVisitor<std::pair<First, Second>> {
  static constexpr bool kHasTensors =
      TensorVisitor<First>::kHasTensors || TensorVisitor<Second>::kHasTensors;
  template <typename U, typename Fn>
  static std::pair<First, Second> apply(U&& pair, const Fn& fn) {
    return {apply_any(std::forward<U>(pair).first, fn), apply_any(std::forward<U>(pair).second, fn)};
  }
};

template <typename... Elements>
struct TensorVisitor<std::tuple<Elements...>> {
  static constexpr bool kHasTensors = (TensorVisitor<Elements>::kHasTensors || ...);
  template <typename U, typename Fn>
  static std::tuple<Elements...> apply(U&& tuple, const Fn& fn) {
    return std::apply(
        [&](auto&&... elements) {
          return std::tuple<Elements...>(apply_any(std::forward<decltype(elements)>(elements), fn)...);
        },
        std::forward<U>(tuple));
  }
};

template <typename Map>
struct MapVisitor {
  static constexpr bool kHasTensors = TensorVisitor<typename Map::mapped_type>::kHasTensors;
  template <typename U, typename Fn>
  static Map apply(U&& map, const Fn& fn) {
    Map result;
    for (auto&& [key, value] : map) result.emplace(key, apply_any(std::forward<decltype(value)>(value), fn));
    return result;
  }
};
template <typename K, typename V, typename C, typename A>
struct TensorVisitor<std::map<K, V, C, A>> : MapVisitor<std::map<K, V, C, A>> {};
template <typename K, typename V, typename H, typename E, typename A>
struct TensorVisitor<std::unordered_map<K, V, H, E, A>> : MapVisitor<std::unordered_map<K, V, H, E, A>> {};

template <typename T>
struct TensorVisitor<std::optional<T>> {
  static constexpr bool kHasTensors = TensorVisitor<T>::kHasTensors;
  template <typename U, typename Fn>
  static std::optional<T> apply(U&& value, const Fn& fn) {
    if (!value) return std::nullopt;
    return apply_any(*std::forward<U>(value), fn);
  }
};

}  // namespace detail

// Whether values of type T can hold tensors that apply_to_tensors would reach.
template <typename T>
inline constexpr bool holds_tensors_v = detail::TensorVisitor<std::decay_t<T>>::kHasTensors;

// Returns `value` rebuilt with `fn(tensor) -> tensor` applied to every defined tensor in it.
template <typename T, typename Fn>
std::decay_t<T> apply_to_tensors(T&& value, const Fn& fn) {
  return detail::apply_any(std::forward<T>(value), fn);
}

// Moves every tensor in `value` to `device` (non-blocking where the target is not the CPU).
template <typename T>
std::decay_t<T> move_data_to_device(T&& value, torch::Device device) {
  const bool non_blocking = device.type() != torch::kCPU;
  return apply_to_tensors(std::forward<T>(value), [&](const torch::Tensor& tensor) {
    return tensor.to(device, non_blocking);
  });
}

// Casts every floating-point tensor in `value` to `dtype`; integer and bool tensors stay.
template <typename T>
std::decay_t<T> cast_floating_tensors(T&& value, torch::ScalarType dtype) {
  return apply_to_tensors(std::forward<T>(value), [&](const torch::Tensor& tensor) {
    return tensor.is_floating_point() && tensor.scalar_type() != dtype ? tensor.to(dtype) : tensor;
  });
}

}  // namespace fabric
