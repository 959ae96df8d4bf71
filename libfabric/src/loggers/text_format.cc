#include "loggers/text_format.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <type_traits>

namespace fabric::loggers {
namespace {

std::string to_chars_string(double value, std::chars_format format) {
  std::array<char, 64> buffer{};
  const auto result = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value, format);
  return std::string(buffer.data(), result.ptr);
}

// PyYAML's represent_float: repr() lowercased, ".0" before a bare exponent, .nan/.inf.
std::string yaml_float(double value) {
  if (std::isnan(value)) return ".nan";
  if (std::isinf(value)) return value > 0 ? ".inf" : "-.inf";
  std::string text = python_float_repr(value);
  if (text.find('.') == std::string::npos) {
    if (const auto e = text.find('e'); e != std::string::npos) text.insert(e, ".0");
  }
  return text;
}

bool is_plain_safe_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '/' || c == '-';
}

// Words YAML 1.1 (PyYAML's resolver) reads as bools or null.
bool is_reserved_word(std::string_view text) {
  static constexpr std::array<std::string_view, 22> kWords = {
      "yes",   "Yes", "YES", "no", "No",  "NO",  "true", "True", "TRUE", "false", "False",
      "FALSE", "on",  "On",  "ON", "off", "Off", "OFF",  "null", "Null", "NULL",  "~"};
  for (std::string_view word : kWords) {
    if (text == word) return true;
  }
  return false;
}

// A plain scalar when it is unambiguously a string; otherwise single-quoted, or
// double-quoted with escapes when it holds control characters.
std::string yaml_string(std::string_view text) {
  bool plain = !text.empty() && !is_reserved_word(text);
  if (plain) {
    const char first = text.front();
    // Digits, signs and dots may start a number (1e3, .5, -1, 0x1f, 1_000, .inf).
    plain = !(first >= '0' && first <= '9') && first != '-' && first != '+' && first != '.';
  }
  bool has_control = false;
  for (const char c : text) {
    plain = plain && is_plain_safe_char(c);
    has_control = has_control || static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  }
  if (plain) return std::string(text);
  std::string quoted;
  if (!has_control) {
    quoted.push_back('\'');
    for (const char c : text) {
      if (c == '\'') quoted.push_back('\'');
      quoted.push_back(c);
    }
    quoted.push_back('\'');
    return quoted;
  }
  quoted.push_back('"');
  for (const char c : text) {
    switch (c) {
      case '"':
        quoted += "\\\"";
        break;
      case '\\':
        quoted += "\\\\";
        break;
      case '\n':
        quoted += "\\n";
        break;
      case '\t':
        quoted += "\\t";
        break;
      case '\r':
        quoted += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          std::array<char, 8> escape{};
          std::snprintf(escape.data(), escape.size(), "\\x%02X", static_cast<unsigned>(static_cast<unsigned char>(c)));
          quoted += escape.data();
        } else {
          quoted.push_back(c);
        }
    }
  }
  quoted.push_back('"');
  return quoted;
}

std::string yaml_value(const HyperparameterValue& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          return std::to_string(v);
        } else if constexpr (std::is_same_v<T, double>) {
          return yaml_float(v);
        } else {
          return yaml_string(v);
        }
      },
      value);
}

}  // namespace

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == 0.0) return std::signbit(value) ? "-0.0" : "0.0";
  // The shortest round-trip digits; Python prints them in fixed notation when the decimal
  // exponent is in [-4, 16).
  std::string scientific = to_chars_string(value, std::chars_format::scientific);
  const int exponent = std::stoi(scientific.substr(scientific.find('e') + 1));
  if (exponent < -4 || exponent >= 16) return scientific;
  std::string fixed = to_chars_string(value, std::chars_format::fixed);
  if (fixed.find('.') == std::string::npos) fixed += ".0";
  return fixed;
}

std::string hparams_yaml(const std::map<std::string, HyperparameterValue>& params) {
  if (params.empty()) return "{}\n";
  std::string text;
  for (const auto& [key, value] : params) text += yaml_string(key) + ": " + yaml_value(value) + "\n";
  return text;
}

}  // namespace fabric::loggers
