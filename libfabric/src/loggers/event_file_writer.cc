#include "loggers/event_file_writer.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <ctime>

#include "fabric/loggers.h"
#include "log/log.h"
#include "loggers/crc32c.h"
#include "loggers/files.h"
#include "loggers/tensorboard_events.h"

namespace fabric::loggers {
namespace {

void put_little_endian(std::string& out, std::uint64_t value, int size) {
  for (int i = 0; i < size; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

std::string host_name() {
  std::array<char, HOST_NAME_MAX + 1> buffer{};
  if (::gethostname(buffer.data(), buffer.size() - 1) != 0) return "localhost";
  return buffer.data();
}

// The <n> in event file names: distinguishes files one process opens within one second, as
// SummaryWriter's global counter does.
int next_event_file_number() {
  static std::atomic<int> counter{0};
  return counter.fetch_add(1);
}

std::string event_file_name(const EventFileOptions& options) {
  std::array<char, 16> seconds{};
  std::snprintf(seconds.data(), seconds.size(), "%010lld", static_cast<long long>(std::time(nullptr)));
  return "events.out.tfevents." + std::string(seconds.data()) + "." + host_name() + "." + std::to_string(::getpid()) +
         "." + std::to_string(next_event_file_number()) + options.filename_suffix;
}

}  // namespace

std::string tfrecord(std::string_view data) {
  std::string length;
  put_little_endian(length, data.size(), 8);
  std::string record = length;
  record.reserve(8 + 4 + data.size() + 4);
  put_little_endian(record, masked_crc32c(length), 4);
  record.append(data);
  put_little_endian(record, masked_crc32c(data), 4);
  return record;
}

double wall_time_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

EventFileWriter::EventFileWriter(const std::string& log_dir, EventFileOptions options)
    : path_(files::join(log_dir, event_file_name(options))),
      options_(std::move(options)),
      file_(nullptr, &std::fclose),
      last_flush_(std::chrono::steady_clock::now()) {
  // "x": never clobber an existing file.
  file_.reset(std::fopen(path_.c_str(), "wbx"));
  if (!file_) files::throw_io_error("Creating the TensorBoard event file", path_, errno);
  write(tfrecord(events::file_version(wall_time_now())));
  flush();
}

EventFileWriter::~EventFileWriter() {
  if (!file_) return;
  try {
    close();
  } catch (const std::exception& error) {
    log::warn(std::string("TensorBoard logger: ") + error.what());
  }
}

void EventFileWriter::add_event(std::string_view serialized_event) {
  write(tfrecord(serialized_event));
  ++pending_;
  if (pending_ >= options_.max_queue || std::chrono::steady_clock::now() - last_flush_ >= options_.flush_secs) flush();
}

void EventFileWriter::flush() {
  if (!file_) return;
  if (std::fflush(file_.get()) != 0) files::throw_io_error("Writing the TensorBoard event file", path_, errno);
  pending_ = 0;
  last_flush_ = std::chrono::steady_clock::now();
}

void EventFileWriter::close() {
  if (!file_) return;
  flush();
  std::FILE* file = file_.release();
  if (std::fclose(file) != 0) files::throw_io_error("Closing the TensorBoard event file", path_, errno);
}

void EventFileWriter::write(std::string_view bytes) {
  if (!file_) {
    throw UsageError("The TensorBoard event file '" + path_ +
                     "' was closed; events can only be added before close(). Create a new writer to keep logging.");
  }
  if (std::fwrite(bytes.data(), 1, bytes.size(), file_.get()) != bytes.size()) {
    files::throw_io_error("Writing the TensorBoard event file", path_, errno);
  }
}

}  // namespace fabric::loggers
