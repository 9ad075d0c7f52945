// The command line of both binaries (qaqkv-server and qaqkv), on CLI11: the
// one convention for bad input, and what the two share.
//
// - Flags are spelled with dashes (--data-dir); underscores are taken too
//   (--data_dir), as older configs wrote them.
// - --config=FILE reads flags from a file, one --name=value per line, blank
//   lines and # comments skipped, in place of the --config argument (flags
//   after it on the command line win). A config file cannot include another.
// - A bad flag or value exits with code 2 and a message that names the flag
//   ("--store-threads: \"abc\" is not valid: want a whole number"); a config
//   error names the file and line. --help and --version exit 0.
#ifndef QAQKV_BASE_CLI_H_
#define QAQKV_BASE_CLI_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace qaqkv::base {

// argv with --config files expanded and flag names spelled with dashes.
// kInvalidArgument naming --config, or the file and line.
absl::StatusOr<std::vector<std::string>> ExpandArgs(int argc, const char* const* argv);

// "1GiB", "512MiB", "64m", "4096" -> bytes (k, m, g, t with or without
// "iB": powers of 1024). nullopt for anything else, or past 2^64.
std::optional<uint64_t> ParseByteSize(std::string_view text);

// Validators with the project's wording, for options read as strings and
// converted after parsing: "--flag: \"value\" is not valid: want ...".
CLI::Validator ByteSize();     // ParseByteSize
CLI::Validator Duration();     // absl::ParseDuration: 20s, 1m, 500ms
CLI::Validator WholeNumber();  // a whole number (for int options)
CLI::Validator TrueFalse();    // true/false, 1/0, yes/no, on/off

// Parses `args` (from ExpandArgs). nullopt: go on. Otherwise the code to
// exit with: 0 after --help or --version (printed to stdout), or 2 with the
// message to report in `*error`, an unknown flag as "--name: unknown flag or
// argument (<program> --help lists them)".
std::optional<int> ParseArgs(CLI::App& app, const std::vector<std::string>& args,
                             std::string* error);

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_CLI_H_
