#include "fabric/state.h"

#include <algorithm>

namespace fabric {

State::State(std::initializer_list<Entry> entries) {
  for (const auto& entry : entries) (*this)[entry.first] = entry.second;
}

StateValue& State::operator[](const std::string& key) {
  for (auto& [name, value] : entries_) {
    if (name == key) return value;
  }
  return entries_.emplace_back(key, StateValue()).second;
}

const StateValue& State::at(const std::string& key) const {
  for (const auto& [name, value] : entries_) {
    if (name == key) return value;
  }
  throw UsageError("State has no entry '" + key + "'.");
}

StateValue& State::at(const std::string& key) {
  return const_cast<StateValue&>(static_cast<const State&>(*this).at(key));
}

bool State::contains(const std::string& key) const {
  return std::any_of(entries_.begin(), entries_.end(), [&](const Entry& entry) { return entry.first == key; });
}

void State::erase(const std::string& key) {
  std::erase_if(entries_, [&](const Entry& entry) { return entry.first == key; });
}

std::vector<std::string> State::keys() const {
  std::vector<std::string> keys;
  for (const auto& entry : entries_) keys.push_back(entry.first);
  return keys;
}

const torch::IValue& StateValue::value() const {
  if (!is_value()) throw UsageError("This State entry is a module, optimizer or nested State, not a plain value.");
  return std::get<torch::IValue>(value_);
}

}  // namespace fabric
