// fabricd certs init|issue and fabricd tokens add: the credentials of a test or small
// cluster (security/certificates.h, security/tokens.h). Private keys and token files are
// written readable by their owner only, and never overwritten.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "cli/commands.h"
#include "cli/job_flags.h"
#include "security/certificates.h"
#include "security/credentials.h"
#include "security/secrets.h"
#include "security/tokens.h"

namespace fabric::launcher::cli {

namespace {

struct CertFlags {
  std::string dir;
  std::string name;
  std::string role = "node";
  std::vector<std::string> hosts;
  int days = 365;
};

// Writes `text` to a new file of mode `mode`; refuses to replace one.
void write_new_file(const std::filesystem::path& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    throw std::runtime_error(path.string() + ": " + std::strerror(errno) +
                             (errno == EEXIST ? " (remove it first to make a new one)" : ""));
  }
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (!written) throw std::runtime_error(path.string() + ": cannot write");
}

int init(const CertFlags& flags) {
  std::filesystem::create_directories(flags.dir);
  const KeyPair ca = make_certificate_authority(flags.name.empty() ? "fabricd cluster CA" : flags.name,
                                                std::chrono::hours(24) * flags.days);
  write_new_file(std::filesystem::path(flags.dir) / "ca.key", ca.private_key_pem, 0600);
  write_new_file(std::filesystem::path(flags.dir) / "ca.pem", ca.certificate_pem, 0644);
  std::cout << flags.dir << "/ca.pem and ca.key: the cluster CA; give every node and client ca.pem, keep ca.key "
            << "where you issue certificates" << std::endl;
  return 0;
}

int issue(const CertFlags& flags) {
  const std::filesystem::path dir(flags.dir);
  const KeyPair ca{.certificate_pem = read_credential_file("the CA certificate", (dir / "ca.pem").string()),
                   .private_key_pem = read_credential_file("the CA key", (dir / "ca.key").string())};
  const auto role = role_from_name(flags.role);
  if (!role) throw std::runtime_error("--role " + flags.role + ": use node, user or admin");
  const auto now = std::chrono::system_clock::now();
  const KeyPair pair = issue_certificate(ca, {.common_name = flags.name,
                                              .role = *role,
                                              .hosts = flags.hosts,
                                              .not_before = now - std::chrono::minutes(5),
                                              .not_after = now + std::chrono::hours(24) * flags.days});
  write_new_file(dir / (flags.name + ".key"), pair.private_key_pem, 0600);
  write_new_file(dir / (flags.name + ".pem"), pair.certificate_pem, 0644);
  std::cout << (dir / (flags.name + ".pem")).string() << " and .key: a " << flags.role << " certificate for '"
            << flags.name << "'" << std::endl;
  return 0;
}

int add_token(const std::string& file, const std::string& user, bool admin) {
  if (user.empty() || user.find_first_of(" \t\n#") != std::string::npos) {
    throw std::runtime_error("the user name '" + user + "' must be one word");
  }
  const std::string token = random_secret();
  const std::string line = token + " " + user + (admin ? " admin" : "") + "\n";
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error(file + ": " + std::strerror(errno));
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  if (!written) throw std::runtime_error(file + ": cannot write");
  std::cout << token << std::endl;  // for the user's own --token-file
  return 0;
}

template <typename Fn>
int reporting(Fn&& fn) {
  try {
    return fn();
  } catch (const std::exception& error) {
    return fail(kUsageError, error.what());
  }
}

}  // namespace

std::vector<Registered> add_credential_commands(CLI::App& app) {
  std::vector<Registered> commands;
  auto* certs = app.add_subcommand("certs",
                                   "Make a cluster CA and the certificates it signs (for a test or small "
                                   "cluster; larger ones use their own PKI)");
  certs->require_subcommand(1);
  auto flags = std::make_shared<CertFlags>();

  auto* init_command = certs->add_subcommand("init", "Make a CA: DIR/ca.pem and DIR/ca.key");
  init_command->add_option("dir", flags->dir, "where the CA goes")->required();
  init_command->add_option("--name", flags->name, "the CA's common name");
  init_command->add_option("--days", flags->days, "days the CA is valid")
      ->default_val(3650)
      ->check(CLI::PositiveNumber);
  commands.emplace_back(init_command,
                        [flags](const std::vector<std::string>&) { return reporting([&] { return init(*flags); }); });

  auto* issue_command =
      certs->add_subcommand("issue", "Sign a certificate with DIR's CA: DIR/NAME.pem and DIR/NAME.key");
  issue_command->add_option("dir", flags->dir, "the CA's directory (from certs init)")->required();
  issue_command->add_option("name", flags->name, "the node's or user's name (its common name)")->required();
  issue_command
      ->add_option("--role", flags->role, "node (agents and the coordinator: serves TLS), user or admin (clients)")
      ->check(CLI::IsMember({"node", "user", "admin"}))
      ->capture_default_str();
  issue_command
      ->add_option("--host", flags->hosts,
                   "a DNS name or IP address the node is reached at (repeatable; localhost and 127.0.0.1 "
                   "are always included for nodes)")
      ->allow_extra_args(false);
  issue_command->add_option("--days", flags->days, "days the certificate is valid")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  commands.emplace_back(issue_command,
                        [flags](const std::vector<std::string>&) { return reporting([&] { return issue(*flags); }); });

  auto* tokens = app.add_subcommand("tokens", "Manage the bearer tokens a coordinator accepts");
  tokens->require_subcommand(1);
  auto token_file = std::make_shared<std::string>();
  auto user = std::make_shared<std::string>();
  auto admin = std::make_shared<bool>(false);
  auto* add_command = tokens->add_subcommand("add",
                                             "Add a random token for USER to FILE (the coordinator's "
                                             "--token-file) and print it, for the user's own token file");
  add_command->add_option("file", *token_file, "the coordinator's token file (created 0600)")->required();
  add_command->add_option("user", *user, "who the token authenticates")->required();
  add_command->add_flag("--admin", *admin, "the user sees and may cancel every user's jobs");
  commands.emplace_back(add_command, [token_file, user, admin](const std::vector<std::string>&) {
    return reporting([&] { return add_token(*token_file, *user, *admin); });
  });
  return commands;
}

}  // namespace fabric::launcher::cli
